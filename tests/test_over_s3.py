"""The parts built over ContentStore, run over the S3 backend against the real
SeaweedFS server (tests/s3server.py): the tus uploader example (the fourth
system), the upload API example, and an encrypted store."""

from __future__ import annotations

import hashlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tusclient import client as tus_client

from s3server import IDENTITIES, S3Server
from streamstore import ContentStore, DecryptionError
from streamstore.crypto import Keyring, generate_key
from streamstore.s3 import S3Backend
from test_example_tus import Service

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def aws_env(server: S3Server) -> dict[str, str]:
    """The environment a child process needs to reach ``server`` as ``admin``."""
    key, secret, _ = IDENTITIES["admin"]
    return {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": server.endpoint}


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = aws_env(s3_server)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, env[name])
    return env


# -- the fourth system: tus uploads into an S3-backed store -------------------------------


def test_tus_uploader_over_s3(tmp_path: Path, s3_server: S3Server, s3_client: Any,
                              s3_bucket: str, s3_env: dict[str, str]) -> None:
    data = os.urandom(7 * 1024 * 1024 + 13)  # more than one 5 MiB part
    (tmp_path / "photo.jpg").write_bytes(data)
    svc = Service(tmp_path, "--store", f"s3://{s3_bucket}/uploads", "--staging",
                  str(tmp_path / "staging"), "--s3-endpoint", s3_server.endpoint)
    try:
        with open(tmp_path / "photo.jpg", "rb") as f:
            uploader = tus_client.TusClient(svc.url + "/files/").uploader(
                file_stream=f, chunk_size=2 * 1024 * 1024,
                metadata={"filename": "photo.jpg", "sha256": sha(data)})
            uploader.upload()
        got = httpx.get(f"{svc.url}/objects/{sha(data)}", timeout=30)
        assert got.status_code == 200 and got.content == data
        ranged = httpx.get(f"{svc.url}/objects/{sha(data)}",
                           headers={"Range": "bytes=6000000-6000099"}, timeout=30)
        assert (ranged.status_code, ranged.content) == (206, data[6000000:6000100])
        health = httpx.get(svc.url + "/health", timeout=10)
        assert health.status_code == 200
    finally:
        svc.close()
    assert "Traceback" not in svc.log.read_text(errors="replace")
    store = ContentStore(S3Backend(s3_client, s3_bucket, "uploads"))
    assert list(store) == [sha(data)]
    assert store.info(sha(data)).metadata.get("filename") == "photo.jpg"
    assert store.verify() == []
    # The staged bytes are gone; the completed upload's record is kept until
    # it expires (docs/tus.md), so HEAD on the upload URL still answers.
    staged = [p.name for p in (tmp_path / "staging").rglob("*") if p.is_file()]
    assert all(name.endswith(".info") for name in staged), staged


# -- the upload API over S3 ------------------------------------------------------------------


@pytest.fixture
def upload_api(s3_server: S3Server, s3_bucket: str) -> Iterator[str]:
    env = {**aws_env(s3_server), "UPLOAD_API_BACKEND": "s3", "UPLOAD_API_S3_BUCKET": s3_bucket,
           "UPLOAD_API_S3_PREFIX": "api", "UPLOAD_API_S3_ENDPOINT": s3_server.endpoint,
           "UPLOAD_API_PORT": "0", "UPLOAD_API_MAX_BYTES": str(8 * 1024 * 1024)}
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "upload_api" / "app.py")], env=env,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    log = b""
    try:
        deadline = time.monotonic() + 30
        while (match := re.search(rb"running on (http://\S+)", log)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the example did not start: {log.decode()}")
            if select.select([proc.stderr], [], [], 0.1)[0]:
                log += os.read(proc.stderr.fileno(), 4096)
        yield match.group(1).decode()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()


def test_upload_api_over_s3(upload_api: str, s3_client: Any, s3_bucket: str) -> None:
    data = os.urandom(6 * 1024 * 1024)
    with httpx.Client(base_url=upload_api, timeout=60) as client:
        r = client.post("/v1/uploads", files={"file": ("a.bin", data, "application/x-a")})
        assert r.status_code == 201, r.text
        assert r.json()["sha256"] == sha(data) and r.json()["created"] is True
        assert client.get(f"/v1/uploads/{sha(data)}").content == data
        ranged = client.get(f"/v1/uploads/{sha(data)}", headers={"Range": "bytes=5-9"})
        assert ranged.status_code == 206 and ranged.content == data[5:10]
        too_big = client.post("/v1/uploads", content=os.urandom(9 * 1024 * 1024),
                              headers={"Content-Type": "application/octet-stream"})
        assert too_big.status_code == 413
        bad = client.post("/v1/uploads", content=b"abc",
                          headers={"Content-Type": "application/octet-stream",
                                   "X-Content-SHA256": sha(b"abd")})
        assert bad.status_code == 400
    store = ContentStore(S3Backend(s3_client, s3_bucket, "api"))
    assert list(store) == [sha(data)]
    uploads = s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert uploads == []  # the rejected ones left nothing behind


# -- an encrypted store in object storage ------------------------------------------------


def test_encrypted_store_over_s3(s3_client: Any, s3_bucket: str) -> None:
    ring = Keyring({"k1": generate_key()}, active="k1")
    store = ContentStore(S3Backend(s3_client, s3_bucket, "enc"), encryption=ring)
    data = os.urandom(6 * 1024 * 1024 + 5)
    info = store.put(data, metadata={"name": "secret.bin"})
    assert info.created and info.size == len(data) and store.size(info.sha256) == len(data)
    with store.open(info.sha256) as f:
        f.seek(5_000_000)
        assert f.read(100_000) == data[5_000_000:5_100_000]
    with store.open(info.sha256, verify=True) as f:
        assert f.read() == data
    assert store.verify() == []
    key = f"enc/{info.sha256}"
    stored = s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert data[:64] not in stored and data[-64:] not in stored
    # Tamper with one byte in the middle: found by verify, and by a read.
    tampered = bytearray(stored)
    tampered[len(tampered) // 2] ^= 1
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=bytes(tampered))
    assert store.verify() == [info.sha256]
    with store.open(info.sha256) as f, pytest.raises(DecryptionError):
        f.read()
    other = ContentStore(S3Backend(s3_client, s3_bucket, "enc"),
                         encryption=Keyring({"k1": generate_key()}, active="k1"))
    with pytest.raises(DecryptionError):
        other.open(info.sha256).read()


@pytest.mark.parametrize("size", [1000, 6 * 1024 * 1024])
def test_an_encrypted_sink_over_an_s3_sink(s3_client: Any, s3_bucket: str, size: int) -> None:
    """The server checks the checksums of what it receives -- the ciphertext --
    in one PutObject and in a multipart upload alike."""
    import io

    from streamstore import store_from_reader
    from streamstore.crypto import EncryptedSink, open_decrypted
    from streamstore.s3 import S3Sink

    ring = Keyring({"k1": generate_key()}, active="k1")
    data = os.urandom(size)
    sink = S3Sink(s3_client, s3_bucket, f"backup-{size}", part_size=5 * 1024 * 1024)
    result = store_from_reader(data, EncryptedSink(sink, ring))
    assert result.sha256 == sha(data) and result.size == size
    assert result.location == f"s3://{s3_bucket}/backup-{size}"
    body = s3_client.get_object(Bucket=s3_bucket, Key=f"backup-{size}")["Body"].read()
    with open_decrypted(io.BytesIO(body), ring) as f:
        assert f.read() == data


def test_encrypted_s3_store_from_the_command_line(tmp_path: Path, s3_server: S3Server,
                                                  s3_bucket: str) -> None:
    keys = tmp_path / "keys"
    env = aws_env(s3_server)
    keygen = subprocess.run([sys.executable, "-m", "streamstore", "keygen", "k1"],
                            capture_output=True, check=True, env=env)
    keys.write_bytes(keygen.stdout)
    data = os.urandom(6 * 1024 * 1024 + 3)
    (tmp_path / "in.bin").write_bytes(data)
    store = f"s3://{s3_bucket}/enc"

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run([sys.executable, "-m", "streamstore", *args, "--key-file",
                               str(keys), "--endpoint-url", s3_server.endpoint],
                              capture_output=True, env=env, timeout=120)
        assert b"Traceback" not in proc.stderr, proc.stderr.decode()
        return proc

    put = cli("put", store, str(tmp_path / "in.bin"))
    assert put.returncode == 0, put.stderr.decode()
    assert put.stdout.split()[:2] == [sha(data).encode(), str(len(data)).encode()]
    cat = cli("cat", store, sha(data))
    assert cat.returncode == 0 and cat.stdout == data
    assert cli("verify", store).returncode == 0
    info = cli("info", store, sha(data))
    assert info.returncode == 0 and b'"size": %d' % len(data) in info.stdout

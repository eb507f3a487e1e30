"""examples/tus_uploader.py, the service this library was designed from: run
with its one command (a child process) and used with tuspy and httpx."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tusclient import client as tus_client

from tus_support import MIB, TUS, make_file

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "tus_uploader.py"


class Service:
    """The example, started the documented way, on a socket this test holds."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.log = tmp_path / "example.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(EXAMPLE), "--fd", str(self.sock.fileno()), *args],
                pass_fds=[self.sock.fileno()], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path, "--store", str(tmp_path / "store"), "--reserve", "0")
    try:
        yield svc
    finally:
        svc.close()
    assert "Traceback" not in svc.log.read_text(errors="replace")


def tus_upload(url: str, path: Path, **options: Any) -> str:
    with open(path, "rb") as f:
        uploader = tus_client.TusClient(url + "/files/").uploader(file_stream=f, **options)
        uploader.upload()
        return str(uploader.url)


def test_upload_then_download_with_ranges(service: Service, tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    digest = make_file(path, 3 * MIB + 17, seed=5)
    data = path.read_bytes()
    tus_upload(service.url, path, chunk_size=MIB,
               metadata={"filename": "photo.jpg", "filetype": "image/jpeg"})
    url = f"{service.url}/objects/{digest}"
    whole = httpx.get(url)
    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["content-type"] == "image/jpeg"
    assert whole.headers["etag"] == f'"{digest}"'
    assert 'filename="photo.jpg"' in whole.headers["content-disposition"]
    for header, expected in [("bytes=0-99", data[:100]), ("bytes=100-", data[100:]),
                             ("bytes=-50", data[-50:]),
                             (f"bytes=5-{len(data) + 100}", data[5:])]:
        part = httpx.get(url, headers={"Range": header})
        assert part.status_code == 206, header
        assert part.content == expected, header
        start = len(data) - len(expected) if header.startswith("bytes=-") else int(
            header[6:].split("-")[0])
        assert part.headers["content-range"] == (
            f"bytes {start}-{start + len(expected) - 1}/{len(data)}")
    unsatisfiable = httpx.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{len(data)}"
    ignored = httpx.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert ignored.status_code == 200 and ignored.content == data
    stale = httpx.get(url, headers={"Range": "bytes=0-1", "If-Range": '"other"'})
    assert stale.status_code == 200
    head = httpx.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
    assert httpx.get(f"{service.url}/objects/{'0' * 64}").status_code == 404
    assert httpx.get(f"{service.url}/objects/nothex").status_code == 404


def test_health_reports_uploads_and_storage(service: Service, tmp_path: Path) -> None:
    before = httpx.get(service.url + "/health").json()
    assert before["status"] == "ok"
    assert before["uploads"]["active"] == 0
    assert before["storage"]["objects"] == 0
    path = tmp_path / "a.bin"
    make_file(path, MIB, seed=1)
    tus_upload(service.url, path)
    partial = httpx.post(service.url + "/files/", headers={**TUS, "Upload-Length": "100"})
    httpx.patch(partial.headers["Location"], content=b"x" * 40, headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    after = httpx.get(service.url + "/health").json()
    assert after["uploads"]["active"] == 1
    assert after["uploads"]["bytes_received"] == 40
    assert after["uploads"]["completed_since_start"] == 1
    assert after["uploads"]["bytes_committed_since_start"] == MIB
    assert after["storage"]["objects"] == 1
    assert after["storage"]["free_bytes"] > 0
    assert after["storage"]["location"] == str(tmp_path / "store")


def test_short_of_space_is_507(tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    svc = Service(tmp_path, "--store", str(tmp_path / "store"), "--reserve", str(free * 2))
    try:
        health = httpx.get(svc.url + "/health").json()
        assert health["status"] == "degraded" and health["storage"]["low_space"]
        response = httpx.post(svc.url + "/files/", headers={**TUS, "Upload-Length": "10"})
        assert response.status_code == 507
        deferred = httpx.post(svc.url + "/files/", headers={**TUS, "Upload-Defer-Length": "1"})
        assert deferred.status_code == 507
        assert os.listdir(tmp_path / "store" / "tus") == []
    finally:
        svc.close()


def test_digest_from_the_upload_url(service: Service, tmp_path: Path) -> None:
    """The upload URL tells where the object is (Repr-Digest, RFC 9530)."""
    path = tmp_path / "b.bin"
    digest = make_file(path, 1000, seed=3)
    upload_url = tus_upload(service.url, path)
    head = httpx.head(upload_url, headers=TUS)
    import base64

    value = head.headers["repr-digest"]
    assert value.startswith("sha-256=:") and value.endswith(":")
    assert base64.b64decode(value[9:-1]).hex() == digest
    assert httpx.get(f"{service.url}/objects/{digest}").content == path.read_bytes()
    assert json.loads(httpx.get(service.url + "/health").content)["status"] == "ok"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest

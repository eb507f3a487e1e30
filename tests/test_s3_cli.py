"""The command line with s3:// locations, end to end (``python -m streamstore``)
against the session's SeaweedFS, credentials from the AWS_* environment."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from s3server import IDENTITIES, S3Server
from test_s3_sink import body, data_of, uploads


def run(server: S3Server, *args: str | Path, identity: str = "admin",
        endpoint_flag: bool = True, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    access_key, secret_key, _ = IDENTITIES[identity]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    argv = [sys.executable, "-m", "streamstore", *map(str, args)]
    if endpoint_flag:
        argv += ["--endpoint-url", server.endpoint]
    else:
        env["AWS_ENDPOINT_URL"] = server.endpoint
    proc = subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=120)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    return proc


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    small = tmp_path / "small.bin"
    small.write_bytes(data_of(1000))
    large = tmp_path / "large.bin"
    large.write_bytes(data_of(8 * 1024 * 1024 + 1))  # multipart with the default 8 MiB parts
    return {"small": small, "large": large}


def test_store_to_an_s3_key(s3_server: S3Server, s3_client: Any, s3_bucket: str,
                            inputs: dict[str, Path]) -> None:
    for name, path in inputs.items():
        proc = run(s3_server, "store", path, f"s3://{s3_bucket}/dir/{name}",
                   "--sha256", hashlib.sha256(path.read_bytes()).hexdigest())
        assert proc.returncode == 0, proc.stderr
        digest, size, where = proc.stdout.decode().split()
        assert (digest, int(size), where) == (
            hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size,
            f"s3://{s3_bucket}/dir/{name}")
        assert body(s3_client, s3_bucket, f"dir/{name}") == path.read_bytes()
    bad = run(s3_server, "store", inputs["small"], f"s3://{s3_bucket}/dir/x", "--sha256",
              "0" * 64)
    assert bad.returncode == 4
    assert "dir/x" not in [o["Key"] for o in s3_client.list_objects_v2(
        Bucket=s3_bucket)["Contents"]]
    assert run(s3_server, "store", inputs["small"], f"s3://{s3_bucket}").returncode == 2


def test_content_store_commands(s3_server: S3Server, s3_client: Any, s3_bucket: str,
                                inputs: dict[str, Path]) -> None:
    store = f"s3://{s3_bucket}/blobs"
    proc = run(s3_server, "put", store, inputs["small"], "-", "--meta", "k=v",
               stdin=b"from stdin", endpoint_flag=False)
    assert proc.returncode == 0, proc.stderr
    lines = [line.split() for line in proc.stdout.decode().splitlines()]
    small = hashlib.sha256(inputs["small"].read_bytes()).hexdigest()
    piped = hashlib.sha256(b"from stdin").hexdigest()
    assert [line[0] for line in lines] == [small, piped]

    listing = run(s3_server, "ls", store).stdout.decode().split()
    assert sorted(listing[::2]) == sorted([small, piped])
    info = json.loads(run(s3_server, "info", store, small).stdout)
    assert info == {"sha256": small, "size": 1000, "path": None,
                    "location": f"{store}/{small}", "metadata": {"k": "v"}}
    assert run(s3_server, "cat", store, piped).stdout == b"from stdin"
    assert run(s3_server, "verify", store).returncode == 0

    s3_client.put_object(Bucket=s3_bucket, Key=f"blobs/{piped}", Body=b"changed")
    bad = run(s3_server, "verify", store)
    assert bad.returncode == 1 and bad.stdout.decode().split() == [piped]

    assert run(s3_server, "rm", store, piped).returncode == 0
    assert run(s3_server, "rm", store, piped).returncode == 3
    assert run(s3_server, "cat", store, piped).returncode == 3
    s3_client.create_multipart_upload(Bucket=s3_bucket, Key=f"blobs/{'c' * 64}")
    swept = run(s3_server, "sweep", store, "--older-than", "0")
    assert swept.returncode == 0 and b"removed 1 " in swept.stdout
    assert uploads(s3_client, s3_bucket) == []


def test_errors_map_to_exit_codes(s3_server: S3Server, s3_bucket: str,
                                  inputs: dict[str, Path]) -> None:
    denied = run(s3_server, "put", f"s3://{s3_bucket}", inputs["small"], identity="ro")
    assert denied.returncode == 7
    assert b"AccessDenied" in denied.stderr and b"nothing was stored" in denied.stderr
    large = run(s3_server, "put", f"s3://{s3_bucket}", inputs["large"], "--max-size", "1M")
    assert large.returncode == 5
    assert run(s3_server, "ls", "s3://").returncode == 2

"""Example 3, the upload API, run as its README command (``python
examples/upload_api/app.py``) in a subprocess on a free port, driven by httpx."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from multipart_bodies import FormPart, encode
from streamstore import ContentStore
from streamstore.testing import assert_no_temp_files

APP = Path(__file__).parent.parent / "examples" / "upload_api" / "app.py"
DATA = os.urandom(200_000)
DIGEST = hashlib.sha256(DATA).hexdigest()


class Server:
    def __init__(self, url: str, root: Path, pid: int) -> None:
        self.url = url
        self.root = root
        self.proc_pid = pid
        self.client = httpx.Client(base_url=url, timeout=30)

    def store(self) -> ContentStore:
        return ContentStore(self.root, create=False)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []
    servers: list[Server] = []

    def launch(**env: str) -> Server:
        root = tmp_path / f"uploads{len(procs)}"
        full = {**os.environ, "UPLOAD_API_ROOT": str(root), "UPLOAD_API_PORT": "0",
                **{f"UPLOAD_API_{k.upper()}": v for k, v in env.items()}}
        proc = subprocess.Popen([sys.executable, str(APP)], env=full, stderr=subprocess.PIPE)
        procs.append(proc)
        assert proc.stderr is not None
        log = b""
        deadline = time.monotonic() + 30
        while (match := re.search(rb"running on (http://\S+)", log)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the example did not start: {log.decode()}")
            if select.select([proc.stderr], [], [], 0.1)[0]:
                log += os.read(proc.stderr.fileno(), 4096)
        server = Server(match.group(1).decode(), root, proc.pid)
        servers.append(server)
        return server

    yield launch
    for server in servers:
        server.client.close()
    for proc in procs:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def test_multipart_and_raw_uploads_and_downloads(start: Any) -> None:
    api = start(max_bytes=str(1 << 20))
    r = api.client.post("/v1/uploads", data={"title": "cat", "sha256": DIGEST},
                        files={"file": ("cat.bin", DATA, "image/jpeg")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["sha256"], body["size"], body["created"]) == (DIGEST, len(DATA), True)
    assert body["metadata"] == {"title": "cat", "filename": "cat.bin",
                                "content_type": "image/jpeg"}
    assert r.headers["location"] == f"/v1/uploads/{DIGEST}"

    raw = api.client.post("/v1/uploads", content=DATA,
                          headers={"Content-Type": "application/octet-stream",
                                   "X-Content-SHA256": DIGEST})
    assert raw.status_code == 201 and raw.json()["created"] is False

    assert api.client.get(f"/v1/uploads/{DIGEST}").content == DATA
    ranged = api.client.get(f"/v1/uploads/{DIGEST}", headers={"Range": "bytes=10-19"})
    assert (ranged.status_code, ranged.content) == (206, DATA[10:20])
    info = api.client.get(f"/v1/uploads/{DIGEST}/info").json()
    assert info["size"] == len(DATA)
    assert api.client.get(f"/v1/uploads/{'0' * 64}").status_code == 404
    assert list(api.store()) == [DIGEST]


def test_errors_map_to_400_and_413_and_nothing_is_stored(start: Any) -> None:
    api = start(max_bytes="100000")
    too_big = api.client.post("/v1/uploads", files={"file": ("a", DATA)})
    assert too_big.status_code == 413
    raw_too_big = api.client.post("/v1/uploads", content=DATA)
    assert raw_too_big.status_code == 413
    small = DATA[:1000]
    mismatch = api.client.post("/v1/uploads", content=small,
                               headers={"X-Content-SHA256": "0" * 64})
    assert mismatch.status_code == 400 and mismatch.json()["error"] == "HashMismatchError"
    assert api.client.post("/v1/uploads", content=small,
                           headers={"X-Content-SHA256": "nope"}).status_code == 400
    broken = api.client.post("/v1/uploads", content=b"--x\r\ngarbage",
                             headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert broken.status_code == 400 and broken.json()["error"] == "MultipartError"
    fields_only = encode([FormPart("only", b"fields")])
    no_file = api.client.post("/v1/uploads", content=fields_only.data,
                              headers={"Content-Type": fields_only.content_type})
    assert no_file.status_code == 400 and no_file.json()["detail"] == "the form has no file part"
    assert len(api.store()) == 0
    assert_no_temp_files(api.root)


def test_no_space_is_507_and_a_full_house_is_503(start: Any) -> None:
    full = start(reserve=str(1 << 62))
    r = full.client.post("/v1/uploads", content=DATA)
    assert r.status_code == 507 and r.json()["detail"] == "insufficient storage"
    assert full.client.post("/v1/uploads", files={"f": ("a", DATA)}).status_code == 507
    assert len(full.store()) == 0

    busy = start(max_concurrent="1")
    host, port = busy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(b"POST /v1/uploads HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                     + b"x" * 10)
        deadline = time.monotonic() + 10
        while (r := busy.client.post("/v1/uploads", content=b"y")).status_code != 503:
            assert r.status_code == 201 and time.monotonic() < deadline
            time.sleep(0.05)  # the slow upload has not taken its slot yet
        assert r.headers["retry-after"] == "1"
        slow.sendall(b"x" * 990)
        assert b"201" in slow.recv(100)
    assert busy.client.post("/v1/uploads", content=b"z").status_code == 201


def test_the_backend_is_chosen_by_configuration(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("upload_api_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    settings = module.Settings.from_env({"UPLOAD_API_ROOT": str(tmp_path / "u"),
                                         "UPLOAD_API_MAX_BYTES": "123"})
    assert (settings.backend, settings.max_bytes) == ("local", 123)
    assert module.make_store(settings).root == tmp_path / "u"
    with pytest.raises(ValueError, match="local or s3"):
        module.make_store(module.Settings(backend="ftp"))

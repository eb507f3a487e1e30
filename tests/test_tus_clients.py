"""TusApp with the official clients: tuspy (Python) and tus-js-client (npm,
under Node.js), against a real uvicorn server in a child process.

Sizes 0 B, 1 B, 5 MiB in 1 MiB chunks and 64 MiB; resuming after the client
is killed mid-upload; resuming after the server is killed with SIGKILL and
restarted; a checksum mismatch caused by a real fault on the wire (answered
460, offset unchanged); expiry.  The tus-js-client tests skip only where
node or npm is missing; the setup installs tus-js-client with npm.
"""

from __future__ import annotations

import json
import os
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
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

from tus_support import (
    HERE,
    MIB,
    TUS,
    CorruptingProxy,
    NodeUpload,
    TusServer,
    make_file,
    node_modules,
    stored_digests,
)

SIZES = [
    pytest.param(0, None, id="0B"),
    pytest.param(1, None, id="1B"),
    pytest.param(5 * MIB, MIB, id="5MiB-in-1MiB-chunks"),
    pytest.param(64 * MIB, None, id="64MiB"),
]


@pytest.fixture(scope="module")
def modules() -> Path:
    found = node_modules()
    if found is None:
        pytest.skip("tus-js-client tests need Node.js: node or npm is not on PATH")
    return found


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TusServer]:
    srv = TusServer(tmp_path, {"completions": str(tmp_path / "completions.jsonl"),
                               "checkpoint_every": 4 * MIB})
    srv.start()
    try:
        yield srv
    finally:
        srv.close()
    log = srv.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Any]:
    """Open files for tuspy's ``file_stream=`` (given a path, tuspy leaks file handles)."""
    files: list[Any] = []

    def open_file(path: Path) -> Any:
        f = open(path, "rb")
        files.append(f)
        return f

    yield open_file
    for f in files:
        f.close()


def head(url: str) -> httpx.Response:
    return httpx.head(url, headers=TUS, timeout=30)


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def completion(server: TusServer, digest: str) -> dict[str, Any]:
    found = [c for c in server.completions() if c["sha256"] == digest]
    assert len(found) == 1, server.completions()
    return found[0]


# -- tuspy --------------------------------------------------------------------------

@pytest.mark.parametrize(("size", "chunk"), SIZES)
def test_tuspy_upload(server: TusServer, tmp_path: Path, opened: Any, size: int,
                      chunk: int | None) -> None:
    path = tmp_path / "upload.bin"
    digest = make_file(path, size, seed=size)
    options: dict[str, Any] = {"metadata": {"filename": "upload.bin", "filetype": "x/y"}}
    if chunk is not None:
        options["chunk_size"] = chunk
    uploader = tus_client.TusClient(server.url + "/").uploader(file_stream=opened(path), **options)
    uploader.upload()
    assert digest in stored_digests(server.root)
    done = completion(server, digest)
    assert done["size"] == size
    assert done["metadata"] == {"filename": "upload.bin", "filetype": "x/y"}
    assert done["id"] == uploader.url.rsplit("/", 1)[1]
    response = head(uploader.url)
    assert response.headers["Upload-Offset"] == response.headers["Upload-Length"] == str(size)


def test_tuspy_resumes_after_the_client_is_killed(server: TusServer, tmp_path: Path,
                                                  opened: Any) -> None:
    path = tmp_path / "upload.bin"
    digest = make_file(path, 40 * MIB, seed=11)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "tuspy_upload.py"), server.url + "/", str(path),
         str(8 * MIB)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    url = None
    try:
        for raw in proc.stdout:
            event = json.loads(raw)
            if event["event"] == "url":
                url = event["url"]
            if event["event"] == "offset" and event["offset"] >= 16 * MIB:
                time.sleep(0.05)  # most likely in the middle of the next PATCH
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.communicate()
    assert url is not None and proc.returncode == -signal.SIGKILL
    wait_for(lambda: int(head(url).headers["Upload-Offset"]) >= 16 * MIB)
    assert digest not in stored_digests(server.root)
    # retries: the server may still be reading the dead client's request; the
    # resumed PATCH then takes it over and gets a 409 for its stale offset once
    resumed = tus_client.TusClient(server.url + "/").uploader(
        file_stream=opened(path), url=url, chunk_size=8 * MIB, retries=3, retry_delay=1)
    assert resumed.offset >= 16 * MIB
    resumed.upload()
    assert digest in stored_digests(server.root)
    assert completion(server, digest)["size"] == 40 * MIB


def test_tuspy_resumes_after_the_server_is_killed(server: TusServer, tmp_path: Path,
                                                  opened: Any) -> None:
    path = tmp_path / "upload.bin"
    digest = make_file(path, 12 * MIB, seed=12)
    uploader = tus_client.TusClient(server.url + "/").uploader(file_stream=opened(path),
                                                               chunk_size=2 * MIB)
    uploader.upload(stop_at=6 * MIB)
    assert uploader.offset == 6 * MIB
    server.kill()  # SIGKILL: no shutdown, no flush, nothing
    server.start()
    resumed = tus_client.TusClient(server.url + "/").uploader(
        file_stream=opened(path), url=uploader.url, chunk_size=2 * MIB)
    assert resumed.offset == 6 * MIB  # every acknowledged byte survived
    resumed.upload()
    assert digest in stored_digests(server.root)
    assert completion(server, digest)["pid"] == server.pid


def test_tuspy_checksum_mismatch_is_460(server: TusServer, tmp_path: Path,
                                        opened: Any) -> None:
    path = tmp_path / "upload.bin"
    digest = make_file(path, 3 * MIB, seed=13)
    direct = tus_client.TusClient(server.url + "/").uploader(
        file_stream=opened(path), chunk_size=MIB, upload_checksum=True)
    direct.upload(stop_at=MIB)
    proxy = CorruptingProxy(server.port, corrupt_at=200_000)
    try:
        # the same upload, through a wire that flips one bit of the next PATCH
        url = proxy.url + "/" + direct.url.rsplit("/", 1)[1]
        through = tus_client.TusClient(proxy.url + "/").uploader(
            file_stream=opened(path), url=url, chunk_size=MIB, upload_checksum=True)
        assert through.offset == MIB
        with pytest.raises(TusUploadFailed) as failure:
            through.upload_chunk()
        assert failure.value.status_code == 460
        assert proxy.corrupted >= 1
    finally:
        proxy.close()
    assert head(direct.url).headers["Upload-Offset"] == str(MIB)  # unchanged
    direct.upload()
    assert digest in stored_digests(server.root)


def test_tuspy_expired_upload_cannot_resume(tmp_path: Path, opened: Any) -> None:
    srv = TusServer(tmp_path, {"expire_after": 1.0, "sweep_interval": 0.2})
    srv.start()
    try:
        path = tmp_path / "upload.bin"
        make_file(path, 2 * MIB, seed=14)
        uploader = tus_client.TusClient(srv.url + "/").uploader(file_stream=opened(path),
                                                                chunk_size=MIB)
        uploader.upload(stop_at=MIB)
        upload_id = uploader.url.rsplit("/", 1)[1]
        data = tmp_path / "staging-default" / f"{upload_id}.data"
        assert data.exists()
        wait_for(lambda: head(uploader.url).status_code in (404, 410))
        with pytest.raises(TusCommunicationError) as failure:
            tus_client.TusClient(srv.url + "/").uploader(file_stream=opened(path),
                                                         url=uploader.url)
        assert failure.value.status_code in (404, 410)
        wait_for(lambda: head(srv.url + "/").status_code and not data.exists())
    finally:
        srv.close()


# -- tus-js-client --------------------------------------------------------------------

@pytest.mark.parametrize(("size", "chunk"), SIZES)
def test_tus_js_upload(server: TusServer, modules: Path, tmp_path: Path, size: int,
                       chunk: int | None) -> None:
    path = tmp_path / "upload.bin"
    digest = make_file(path, size, seed=100 + size)
    options: dict[str, Any] = {"endpoint": server.url + "/", "path": str(path),
                               "metadata": {"filename": "upload.bin"}}
    if chunk is not None:
        options["chunkSize"] = chunk
    result = NodeUpload(modules, options).run()
    assert result["event"] == "success", result
    assert digest in stored_digests(server.root)
    assert completion(server, digest)["metadata"] == {"filename": "upload.bin"}


@pytest.mark.parametrize("options", [
    pytest.param({"parallelUploads": 3}, id="parallel-uploads-concatenation"),
    pytest.param({"uploadLengthDeferred": True, "stream": True, "chunkSize": MIB},
                 id="deferred-length"),
    pytest.param({"uploadDataDuringCreation": True, "chunkSize": 2 * MIB},
                 id="data-during-creation"),
    pytest.param({"uploadDataDuringCreation": True}, id="all-data-during-creation"),
])
def test_tus_js_extensions(server: TusServer, modules: Path, tmp_path: Path,
                           options: dict[str, Any]) -> None:
    path = tmp_path / "upload.bin"
    size = 7 * MIB + 12345
    digest = make_file(path, size, seed=7)
    result = NodeUpload(modules, {"endpoint": server.url + "/", "path": str(path),
                                  **options}).run()
    assert result["event"] == "success", result
    assert digest in stored_digests(server.root)
    assert completion(server, digest)["size"] == size


def test_tus_js_resumes_after_the_client_is_killed(server: TusServer, modules: Path,
                                                    tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    digest = make_file(path, 64 * MIB, seed=21)
    # one PATCH for the whole file: killing the client cuts it off in the middle
    upload = NodeUpload(modules, {"endpoint": server.url + "/", "path": str(path)})
    url = None
    for event in upload.lines():
        if event["event"] == "url":
            url = event["url"]
        if event["event"] == "progress" and event["sent"] >= 16 * MIB:
            upload.kill()
            break
    assert url is not None
    # the server keeps every byte it received before the connection dropped
    wait_for(lambda: int(head(url).headers["Upload-Offset"]) > 0)
    kept = int(head(url).headers["Upload-Offset"])
    assert 0 < kept < 64 * MIB
    result = NodeUpload(modules, {"uploadUrl": url, "path": str(path),
                                  "retryDelays": [100, 500, 1000]}).run()
    assert result["event"] == "success", result
    assert digest in stored_digests(server.root)


def test_tus_js_rides_out_a_server_crash(server: TusServer, modules: Path,
                                         tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    digest = make_file(path, 48 * MIB, seed=22)
    upload = NodeUpload(modules, {"endpoint": server.url + "/", "path": str(path),
                                  "retryDelays": [200, 500, 1000, 2000, 4000, 8000]})
    first_pid = server.pid
    for event in upload.lines():
        if event["event"] == "progress" and event["sent"] >= 20 * MIB:
            server.kill()  # SIGKILL in the middle of the one big PATCH
            server.start()  # same listening socket: the client retries HEAD + PATCH
            break
    result = upload.run()
    assert result["event"] == "success", (result, upload.events)
    assert digest in stored_digests(server.root)
    assert completion(server, digest)["pid"] != first_pid


def test_tus_js_whole_upload_digest_mismatch_is_460(server: TusServer, modules: Path,
                                                    tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    digest = make_file(path, 3 * MIB, seed=23)
    proxy = CorruptingProxy(server.port, corrupt_at=500_000)
    try:
        upload = NodeUpload(modules, {"endpoint": proxy.url + "/", "path": str(path),
                                      "metadata": {"sha256": digest}})
        result = upload.run()
    finally:
        proxy.close()
    assert proxy.corrupted >= 1
    assert result["event"] == "error"
    assert result["status"] == 460
    assert digest not in stored_digests(server.root)
    # the corrupted bytes were discarded: a clean retry of the same upload works
    url = next(e["url"] for e in upload.events if e["event"] == "url").replace(
        proxy.url, server.url)
    assert head(url).headers["Upload-Offset"] == "0"
    result = NodeUpload(modules, {"uploadUrl": url, "path": str(path)}).run()
    assert result["event"] == "success", result
    assert digest in stored_digests(server.root)


def test_tus_js_expired_upload_is_not_resumed(modules: Path, tmp_path: Path) -> None:
    srv = TusServer(tmp_path, {"expire_after": 1.0, "sweep_interval": 0.2})
    srv.start()
    try:
        url = httpx.post(srv.url + "/", headers={**TUS, "Upload-Length": "10"}).headers[
            "Location"]
        wait_for(lambda: head(url).status_code in (404, 410))
        path = tmp_path / "upload.bin"
        make_file(path, 10)
        result = NodeUpload(modules, {"uploadUrl": url, "path": str(path)}).run()
        assert result["event"] == "error"
        assert result["status"] in (404, 410)
    finally:
        srv.close()

"""TusApp under crashes, restarts, competing server processes and corrupted
staging, with real servers in child processes killed by SIGKILL."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tus_support import MIB, TUS, TusServer, stored_digests

OCTETS = {"Content-Type": "application/offset+octet-stream"}


@pytest.fixture
def servers() -> Iterator[list[TusServer]]:
    started: list[TusServer] = []
    yield started
    for srv in started:
        srv.close()
    for srv in started:
        log = srv.log.read_text(errors="replace")
        # the only tracebacks allowed: on_complete failing on purpose, logged
        expected = log.count("RuntimeError: on_complete fails on purpose")
        assert log.count("Traceback") == expected, log[-4000:]


def start(servers: list[TusServer], root: Path, **config: Any) -> TusServer:
    srv = TusServer(root, config)
    servers.append(srv)
    return srv.start()


def create(url: str, length: int) -> str:
    response = httpx.post(url + "/", headers={**TUS, "Upload-Length": str(length)})
    assert response.status_code == 201, response.text
    return response.headers["Location"]


def head(url: str) -> httpx.Response:
    return httpx.head(url, headers=TUS, timeout=30)


def offset(url: str) -> int:
    return int(head(url).headers["Upload-Offset"])


def patch(url: str, at: int, data: bytes, timeout: float = 60) -> httpx.Response:
    return httpx.patch(url, content=data, timeout=timeout,
                       headers={**TUS, **OCTETS, "Upload-Offset": str(at)})


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def open_patch(srv: TusServer, url: str, at: int, length: int) -> socket.socket:
    """Start a PATCH of ``length`` bytes on a plain socket; the body is sent by the caller."""
    sock = socket.create_connection(("127.0.0.1", srv.port))
    head = (f"PATCH {urlsplit(url).path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Upload-Offset: {at}\r\nContent-Length: {length}\r\n\r\n")
    sock.sendall(head.encode())
    return sock


def test_sigkill_mid_patch_loses_at_most_one_checkpoint(servers: list[TusServer],
                                                        tmp_path: Path) -> None:
    srv = start(servers, tmp_path, checkpoint_every=MIB)
    data = os.urandom(10 * MIB)
    url = create(srv.url, len(data))
    upload_id = url.rsplit("/", 1)[1]
    sock = open_patch(srv, url, 0, len(data))
    sent = 0
    try:
        while sent < 5 * MIB + 123_457:  # stop mid-way, then the server dies
            piece = data[sent:sent + 64 * 1024][: 5 * MIB + 123_457 - sent]
            sock.sendall(piece)
            sent += len(piece)
        wait_for(lambda: offset(url) >= 4 * MIB)  # checkpoints reached the record
        srv.kill()
    finally:
        sock.close()
    srv.start()
    recorded = offset(url)
    assert 4 * MIB <= recorded <= sent  # nothing acknowledged or checkpointed was lost
    staged = tmp_path / "staging-default" / f"{upload_id}.data"
    assert staged.stat().st_size >= recorded  # possibly bytes past the record
    # the next request truncates the unrecorded tail, then appends
    response = patch(url, recorded, b"")
    assert response.status_code == 204
    assert staged.stat().st_size == recorded
    # the new process never saw this upload's hash: it re-hashes the prefix once
    assert patch(url, recorded, data[recorded:]).status_code == 204
    assert hashlib.sha256(data).hexdigest() in stored_digests(tmp_path)


def test_acknowledged_bytes_survive_sigkill(servers: list[TusServer], tmp_path: Path) -> None:
    srv = start(servers, tmp_path, checkpoint_every=None)
    pieces = [os.urandom(300_000) for _ in range(4)]
    url = create(srv.url, 1_200_000)
    for i, piece in enumerate(pieces[:3]):
        assert patch(url, i * 300_000, piece).status_code == 204
        srv.kill()
        srv.start()
        assert offset(url) == (i + 1) * 300_000
    assert patch(url, 900_000, pieces[3]).status_code == 204
    assert hashlib.sha256(b"".join(pieces)).hexdigest() in stored_digests(tmp_path)


def test_a_second_process_gets_423_then_takes_over_from_a_dead_one(
        servers: list[TusServer], tmp_path: Path) -> None:
    staging = str(tmp_path / "shared-staging")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start(servers, tmp_path / "a", staging=staging)
    second = start(servers, tmp_path / "b", staging=staging, lock_timeout=0.5)
    data = os.urandom(2 * MIB)
    url = create(first.url, len(data))
    upload_id = url.rsplit("/", 1)[1]
    other = f"{second.url}/{upload_id}"
    assert offset(other) == 0  # both servers see the upload
    sock = open_patch(first, url, 0, len(data))
    try:
        sock.sendall(data[: MIB + 100])  # the first server holds the upload, waiting for more
        staged = Path(staging) / f"{upload_id}.data"
        wait_for(lambda: staged.stat().st_size >= MIB)
        response = patch(other, 0, data)
        assert response.status_code == 423
        first.kill()  # the kernel drops the dead process's lock
    finally:
        sock.close()
    # a 409 first if the dead process had recorded a checkpoint: follow HEAD
    wait_for(lambda: patch(other, offset(other), data[offset(other):]).status_code == 204)
    assert offset(other) == len(data)
    assert hashlib.sha256(data).hexdigest() in stored_digests(tmp_path / "b")


def test_staged_bytes_corrupted_on_disk_are_never_committed(servers: list[TusServer],
                                                            tmp_path: Path) -> None:
    srv = start(servers, tmp_path)
    data = os.urandom(2 * MIB)
    url = create(srv.url, len(data))
    assert patch(url, 0, data[:MIB]).status_code == 204
    staged = tmp_path / "staging-default" / f"{url.rsplit('/', 1)[1]}.data"
    with open(staged, "r+b") as f:  # bit rot in the acknowledged prefix
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    response = patch(url, MIB, data[MIB:])
    assert response.status_code == 500
    assert response.headers["Upload-Offset"] == "0"
    assert offset(url) == 0  # the upload starts over
    assert hashlib.sha256(data).hexdigest() not in stored_digests(tmp_path)
    assert len(stored_digests(tmp_path)) == 0
    assert patch(url, 0, data).status_code == 204
    assert hashlib.sha256(data).hexdigest() in stored_digests(tmp_path)


def test_on_complete_failures_are_retried_until_it_returns(servers: list[TusServer],
                                                           tmp_path: Path) -> None:
    done = tmp_path / "completions.jsonl"
    srv = start(servers, tmp_path, completions=str(done), fail_completions=2,
                sweep_interval=0.2)
    url = create(srv.url, 5)
    response = patch(url, 0, b"hello")
    assert response.status_code == 204  # stored: success, whatever on_complete did
    assert offset(url) == 5
    assert srv.completions() == []
    # sweeps (started by requests) call it again: fails once more, then returns
    wait_for(lambda: head(url).status_code == 200 and len(srv.completions()) == 1)
    time.sleep(0.5)
    head(url)
    assert len(srv.completions()) == 1  # once it returned, never again
    assert srv.completions()[0]["id"] == url.rsplit("/", 1)[1]


def test_on_complete_pending_at_a_crash_runs_after_the_restart(servers: list[TusServer],
                                                               tmp_path: Path) -> None:
    done = tmp_path / "completions.jsonl"
    srv = start(servers, tmp_path, completions=str(done), fail_completions=1)
    url = create(srv.url, 5)
    assert patch(url, 0, b"world").status_code == 204
    assert srv.completions() == []
    srv.kill()
    srv.config["fail_completions"] = 0
    srv.start()  # the start-up sweep (ASGI lifespan) finds the pending call
    wait_for(lambda: len(srv.completions()) == 1)
    assert srv.completions()[0]["pid"] == srv.pid
    assert srv.completions()[0]["sha256"] == hashlib.sha256(b"world").hexdigest()


def test_start_up_sweep_removes_uploads_that_expired_while_down(servers: list[TusServer],
                                                                tmp_path: Path) -> None:
    srv = start(servers, tmp_path, expire_after=1.0)
    url = create(srv.url, 100)
    assert patch(url, 0, b"x" * 10).status_code == 204
    staging = tmp_path / "staging-default"
    upload_id = url.rsplit("/", 1)[1]
    assert (staging / f"{upload_id}.data").exists()
    srv.kill()
    time.sleep(1.2)
    srv.start()
    wait_for(lambda: not (staging / f"{upload_id}.info").exists()
             and not (staging / f"{upload_id}.data").exists())
    assert head(url).status_code == 404


def test_graceful_restart_keeps_everything(servers: list[TusServer], tmp_path: Path) -> None:
    srv = start(servers, tmp_path)
    url = create(srv.url, 6)
    assert patch(url, 0, b"abc").status_code == 204
    srv.stop()  # SIGTERM: lifespan shutdown
    srv.start()
    assert offset(url) == 3
    assert patch(url, 3, b"def").status_code == 204
    assert hashlib.sha256(b"abcdef").hexdigest() in stored_digests(tmp_path)

"""Large uploads through the upload API example (a uvicorn subprocess): the
server's memory stays flat and it writes each byte once -- no spool."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from test_example_upload_api import start  # noqa: F401 - the fixture

MiB = 1024 * 1024


def status_kib(pid: int, key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert match is not None
    return int(match.group(1))


def written(pid: int) -> int:
    match = re.search(r"^wchar: (\d+)", Path(f"/proc/{pid}/io").read_text(), re.M)
    assert match is not None
    return int(match.group(1))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["multipart", "raw"])
def test_a_1_gib_upload_keeps_server_memory_flat_and_writes_once(start: Any, kind: str) -> None:  # noqa: F811
    size = 1024 * MiB
    api = start(max_bytes=str(2 * size))
    pid = api.proc_pid
    api.client.post("/v1/uploads", content=b"warm-up")
    rss0, wchar0 = status_kib(pid, "VmRSS"), written(pid)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak to the current RSS
    block = bytes(range(256)) * 4096  # 1 MiB
    boundary = "slow-test-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big\"\r\n\r\n").encode() if kind == "multipart" else b""
    tail = f"\r\n--{boundary}--\r\n".encode() if kind == "multipart" else b""

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(size // MiB):
            yield block
        yield tail

    headers = {"Content-Length": str(len(head) + size + len(tail))}
    if kind == "multipart":
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    r = api.client.post("/v1/uploads", content=body(), headers=headers, timeout=600)
    assert r.status_code == 201, r.text
    hasher = hashlib.sha256()
    for _ in range(size // MiB):
        hasher.update(block)
    assert r.json()["sha256"] == hasher.hexdigest()
    growth = status_kib(pid, "VmHWM") - rss0
    assert growth < 64 * 1024, f"server peak RSS grew {growth} KiB for a 1 GiB upload"
    assert written(pid) - wchar0 < size * 1.05, "the server wrote more than the file"

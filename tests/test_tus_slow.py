"""Large streams and crash loops for streamstore.tus (``-m slow``): the server's
peak memory over a 1 GiB upload, a download's, and an upload that survives
repeated SIGKILLs of its server."""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from test_example_tus import Service
from tus_support import MIB, TUS, NodeUpload, TusServer, make_file, node_modules, stored_digests

pytestmark = pytest.mark.slow

GIB = 1024 * MIB


def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def reset_peak(pid: int) -> bool:
    """Reset a process's peak RSS (Linux: clear_refs 5); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def body(size: int, hasher: hashlib._Hash, seed: int) -> Iterator[bytes]:
    """``size`` pseudo-random bytes, 1 MiB at a time, hashed as they are sent."""
    rng = random.Random(seed)
    block = rng.randbytes(MIB)
    sent = 0
    while sent < size:
        piece = bytes([sent // MIB % 256]) + block[1: min(MIB, size - sent)]
        hasher.update(piece)
        sent += len(piece)
        yield piece


def test_peak_rss_growth_of_a_1_gib_upload_in_64_mib_patches(tmp_path: Path) -> None:
    srv = TusServer(tmp_path, {"max_size": 2 * GIB})
    srv.start()
    try:
        with httpx.Client(headers=TUS, timeout=300) as http:
            def upload(size: int, patch_size: int, seed: int) -> str:
                url = http.post(srv.url + "/", headers={"Upload-Length": str(size)}).headers[
                    "Location"]
                hasher = hashlib.sha256()
                for offset in range(0, size, patch_size):
                    n = min(patch_size, size - offset)
                    response = http.patch(url, content=body(n, hasher, seed + offset), headers={
                        "Content-Type": "application/offset+octet-stream",
                        "Upload-Offset": str(offset), "Content-Length": str(n)})
                    assert response.status_code == 204, response.text
                return hasher.hexdigest()

            upload(64 * MIB, 64 * MIB, seed=1)  # warm up: threads, buffers, imports
            before, peak_before = rss(srv.pid)
            baseline = before if reset_peak(srv.pid) else peak_before
            digest = upload(GIB, 64 * MIB, seed=2)
            _, peak = rss(srv.pid)
        assert digest in stored_digests(tmp_path)
        growth = peak - baseline
        print(f"server RSS {before / MIB:.1f} MiB before, peak {peak / MIB:.1f} MiB "
              f"during the 1 GiB upload: growth {growth / MIB:.1f} MiB")
        assert growth <= 32 * MIB
    finally:
        srv.close()


def test_peak_rss_of_a_ranged_download_is_flat(tmp_path: Path) -> None:
    svc = Service(tmp_path, "--store", str(tmp_path / "store"), "--reserve", "0")
    try:
        url = httpx.post(svc.url + "/files/", headers={**TUS, "Upload-Length": str(512 * MIB)}
                         ).headers["Location"]
        hasher = hashlib.sha256()
        response = httpx.patch(url, content=body(512 * MIB, hasher, 3), timeout=300, headers={
            **TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
        assert response.status_code == 204
        digest = hasher.hexdigest()
        before, peak_before = rss(svc.proc.pid)
        baseline = before if reset_peak(svc.proc.pid) else peak_before
        check = hashlib.sha256()
        with httpx.stream("GET", f"{svc.url}/objects/{digest}", timeout=300) as download:
            assert download.status_code == 200
            for chunk in download.iter_bytes():
                check.update(chunk)
        with httpx.stream("GET", f"{svc.url}/objects/{digest}", timeout=300,
                          headers={"Range": f"bytes={100 * MIB}-"}) as ranged:
            assert ranged.status_code == 206
            received = sum(len(chunk) for chunk in ranged.iter_bytes())
        _, peak = rss(svc.proc.pid)
        assert check.hexdigest() == digest
        assert received == 412 * MIB
        assert peak - baseline <= 32 * MIB
    finally:
        svc.close()


def test_an_upload_survives_repeated_server_kills(tmp_path: Path) -> None:
    modules = node_modules()
    if modules is None:
        pytest.skip("needs Node.js for tus-js-client: node or npm is not on PATH")
    srv = TusServer(tmp_path, {"checkpoint_every": 8 * MIB})
    srv.start()
    try:
        path = tmp_path / "upload.bin"
        digest = make_file(path, 256 * MIB, seed=9)
        upload = NodeUpload(modules, {
            "endpoint": srv.url + "/", "path": str(path), "chunkSize": 100 * MIB,
            "retryDelays": [100, 200, 400, 800, 1600, 3200, 6400, 12800]})
        rng = random.Random(4)
        kills = sorted(rng.sample(range(10, 250), 5))
        killed = 0
        for event in upload.lines():
            if event["event"] != "progress" or killed == len(kills):
                continue
            if event["sent"] >= kills[killed] * MIB:
                srv.kill()
                time.sleep(rng.random() / 5)
                srv.start()
                killed += 1
        result = upload.run(timeout=600)
        assert result["event"] == "success", (result, upload.events[-5:])
        assert killed == len(kills)
        assert digest in stored_digests(tmp_path)
        assert os.path.getsize(path) == 256 * MIB
    finally:
        srv.close()

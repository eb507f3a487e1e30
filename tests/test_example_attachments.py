"""Example 1, the attachment store: hash verified, typed errors, progress,
a real pipe, a real full disk -- and 2 GB in under 100 MB of RAM (slow)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exsupport import EXAMPLES, load_example
from streamstore import DiskFullError, HashMismatchError, PartialWriteError, Progress
from streamstore.testing import FailingReader, temp_files

ex = load_example("attachment_store")
SCRIPT = str(EXAMPLES / "attachment_store.py")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> object:
    return ex.AttachmentStore(tmp_path / "attachments", max_size=8 * 2**20, durable=False)


def nothing_stored(store: object) -> bool:
    return len(store.store) == 0 and temp_files(store.store.location) == []  # type: ignore[attr-defined]


def test_an_attachment_is_stored_by_its_verified_hash(store: object) -> None:
    data = os.urandom(3 * 2**20 + 5)
    att = store.store_from_reader(sha(data), iter([data[:100], data[100:]]),  # type: ignore[attr-defined]
                                  {"filename": "q3.pdf"}, size=len(data))
    assert (att.sha256, att.size, att.created) == (sha(data), len(data), True)
    assert att.metadata == {"filename": "q3.pdf"}
    assert att.path.read_bytes() == data
    again = store.store_from_reader(sha(data).upper(), data, {"filename": "other"})  # type: ignore[attr-defined]
    assert again.created is False and again.metadata == {"filename": "q3.pdf"}
    with store.open(att.sha256) as f:  # type: ignore[attr-defined]
        assert f.read() == data
    assert store.get(att.sha256).size == len(data)  # type: ignore[attr-defined]
    assert att.sha256 in store


def test_a_hash_mismatch_is_typed_and_stores_nothing(store: object) -> None:
    data = b"the real bytes" * 1000
    with pytest.raises(ex.AttachmentHashMismatch) as info:
        store.store_from_reader(sha(b"other bytes"), data)  # type: ignore[attr-defined]
    assert info.value.expected == sha(b"other bytes") and info.value.actual == sha(data)
    assert isinstance(info.value.__cause__, HashMismatchError)
    assert isinstance(info.value, ex.AttachmentError)
    assert nothing_stored(store)


def test_a_partial_write_is_typed_and_stores_nothing(store: object) -> None:
    data = b"x" * 5000
    with pytest.raises(ex.AttachmentIncomplete) as info:
        store.store_from_reader(sha(data), data, size=6000)  # type: ignore[attr-defined]
    assert (info.value.expected_size, info.value.actual_size) == (6000, 5000)
    assert isinstance(info.value.__cause__, PartialWriteError)
    assert nothing_stored(store)


def test_too_large_stops_at_the_limit(store: object) -> None:
    endless = iter(lambda: bytes(2**20), b"")
    with pytest.raises(ex.AttachmentTooLarge) as info:
        store.store_from_reader("0" * 64, endless)  # type: ignore[attr-defined]
    assert info.value.limit == 8 * 2**20
    with pytest.raises(ex.AttachmentTooLarge):
        store.store_from_reader(sha(b"abc"), b"abcd", size=3)  # type: ignore[attr-defined]
    assert nothing_stored(store)


def test_a_failing_source_is_typed_and_stores_nothing(store: object) -> None:
    reader = FailingReader(b"y" * 10_000, fail_after=4000, exc=ConnectionResetError("peer gone"))
    with pytest.raises(ex.AttachmentSourceFailed) as info:
        store.store_from_reader(sha(b"y" * 10_000), reader)  # type: ignore[attr-defined]
    assert isinstance(info.value.__cause__.__cause__, ConnectionResetError)
    assert nothing_stored(store)


def test_progress_is_reported_every_step(store: object) -> None:
    data = os.urandom(5 * 2**20)
    seen: list[Progress] = []
    store.store_from_reader(sha(data), data, size=len(data), progress=seen.append,  # type: ignore[attr-defined]
                            progress_step=2**20)
    done = [p.bytes_done for p in seen]
    assert done == sorted(set(done))
    assert done[0] == 0 and done[-1] == len(data) and len(done) == 6
    assert all(p.total == len(data) for p in seen)


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real filesystem of ``size`` (tmpfs); skip where this machine can't mount one."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    where.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_is_typed_and_stores_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "2m") as mnt:
        store = ex.AttachmentStore(mnt / "attachments")
        data = os.urandom(3 * 2**20)
        with pytest.raises(ex.AttachmentStorageFull) as info:
            store.store_from_reader(sha(data), data)
        assert isinstance(info.value.__cause__, DiskFullError)
        assert nothing_stored(store)
        small = b"still room for this"
        assert store.store_from_reader(sha(small), small).size == len(small)


def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, SCRIPT, *args], input=stdin, capture_output=True,
                          check=False, timeout=120)


def test_the_command_line_stores_from_a_pipe_and_reads_back(tmp_path: Path) -> None:
    root = str(tmp_path / "cli")
    data = os.urandom(3 * 2**20)
    producer = subprocess.Popen([sys.executable, "-c", (
        "import sys; data = sys.stdin.buffer.read(); out = sys.stdout.buffer\n"
        "for i in range(0, len(data), 4096): out.write(data[i:i + 4096])")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert producer.stdin is not None
    producer.stdin.write(data)
    producer.stdin.close()
    put = subprocess.run([sys.executable, SCRIPT, "--root", root, "put", sha(data), "--size",
                          str(len(data)), "--meta", "filename=a.bin"], stdin=producer.stdout,
                         capture_output=True, check=False, timeout=120)
    assert producer.stdout is not None
    producer.stdout.close()
    producer.wait(30)
    assert put.returncode == 0, put.stderr
    result = json.loads(put.stdout)
    assert result["sha256"] == sha(data) and result["metadata"] == {"filename": "a.bin"}
    assert b"MiB" in put.stderr  # progress
    got = run_cli("--root", root, "get", sha(data))
    assert got.returncode == 0 and got.stdout == data
    bad = run_cli("--root", root, "put", "0" * 64, stdin=b"not it")
    assert bad.returncode == 1 and b"AttachmentHashMismatch" in bad.stderr


def test_the_demo_runs(tmp_path: Path) -> None:
    demo = run_cli("--root", str(tmp_path / "demo"), "demo")
    assert demo.returncode == 0, demo.stderr
    out = demo.stdout.decode()
    for name in ("AttachmentHashMismatch", "AttachmentIncomplete", "AttachmentTooLarge"):
        assert name in out
    assert "attachments stored: 1" in out


# -- 2 GB from a pipe in under 100 MB ---------------------------------------------------------

GENERATOR = """
import random, sys
block = random.Random({seed}).randbytes(1 << 20)
out = sys.stdout.buffer
for i in range({blocks}):
    out.write(block[i % 256:] + block[:i % 256])
"""


def generated_digest(seed: int, blocks: int) -> str:
    block = random.Random(seed).randbytes(1 << 20)
    hasher = hashlib.sha256()
    for i in range(blocks):
        hasher.update(block[i % 256:] + block[:i % 256])
    return hasher.hexdigest()


PEAK = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    # VmHWM belongs to this process image (ru_maxrss would include the RSS of
    # the parent that forked it, a big pytest process).
    with open("/proc/self/status") as f:
        peak = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    print(f"PEAK_RSS_KIB={peak}", file=sys.stderr)
"""


@pytest.mark.slow
def test_2_gb_from_a_pipe_in_under_100_mb_of_ram(tmp_path: Path) -> None:
    blocks = 2048  # 2 GiB
    digest = generated_digest(7, blocks)
    root = tmp_path / "big"
    producer = subprocess.Popen([sys.executable, "-c", GENERATOR.format(seed=7, blocks=blocks)],
                                stdout=subprocess.PIPE)
    assert producer.stdout is not None
    consumer = subprocess.run(
        [sys.executable, "-c", PEAK, SCRIPT, "--root", str(root), "put", digest, "--size",
         str(blocks << 20)], stdin=producer.stdout, capture_output=True, check=False,
        timeout=600)
    producer.stdout.close()
    assert producer.wait(60) == 0
    assert consumer.returncode == 0, consumer.stderr[-2000:]
    assert json.loads(consumer.stdout)["size"] == blocks << 20
    peak = int(re.findall(rb"PEAK_RSS_KIB=(\d+)", consumer.stderr)[-1]) * 1024
    print(f"2 GiB from a pipe: peak RSS {peak / 2**20:.1f} MiB")
    assert peak < 100 * 10**6
    assert (root / "objects" / digest[:2] / digest[2:4] / digest).stat().st_size == blocks << 20

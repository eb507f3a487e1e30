"""Resource bounds: memory stays flat for a multi-GiB stream (measured as peak
RSS growth in a child process) and no file descriptor leaks across thousands of
failed stores."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import streamstore
from streamstore import (
    DestinationExistsError,
    DiskFullError,
    HashMismatchError,
    PartialWriteError,
    SourceError,
    StoragePermissionError,
    TooLargeError,
    TooSmallError,
    astore_from_reader,
    store_from_reader,
)
from streamstore.testing import (
    AsyncFailingReader,
    FailingReader,
    TruncatedReader,
    assert_no_temp_files,
    fail_storage,
)

MiB = 1024 * 1024
RSS_BUDGET = 16 * MiB

RSS_CHILD = textwrap.dedent(
    """
    import asyncio, json, os, resource, sys
    import streamstore

    front, dest, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    block = os.urandom(1024 * 1024)

    class Endless:  # readinto source: `size` bytes of a repeated random MiB
        def __init__(self, size):
            self.left = size
        def readinto(self, buffer):
            n = min(len(buffer), self.left, len(block))
            buffer[:n] = block[:n]
            self.left -= n
            return n

    class AsyncEndless(Endless):
        async def read(self, n):
            n = min(n, self.left, len(block))
            self.left -= n
            return block[:n]

    def reset_peak():
        # ru_maxrss survives exec (a vfork'ed child inherits the parent's high-water
        # mark), so reset the kernel's peak to the current RSS first.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    def peaks():
        with open("/proc/self/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        return {"vmhwm": hwm * 1024,
                "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}

    def run(size):
        if front == "sync":
            return streamstore.store_from_reader(Endless(size), dest, durable=False)
        return asyncio.run(streamstore.astore_from_reader(AsyncEndless(size), dest, durable=False))

    run(8 * 1024 * 1024)  # warm up: every code path and buffer has been used once
    reset_peak()  # control: the measurement does see a 32 MiB allocation
    before = peaks()
    ballast = bytearray(32 * 1024 * 1024)
    control = peaks()["vmhwm"] - before["vmhwm"]
    del ballast
    reset_peak()
    before = peaks()
    result = run(size)
    after = peaks()
    os.unlink(dest)
    print(json.dumps({"growth": after["vmhwm"] - before["vmhwm"], "control": control,
                      "maxrss_growth": after["maxrss"] - before["maxrss"],
                      "before": before["vmhwm"], "maxrss_before": before["maxrss"],
                      "size": result.size}))
    """
)


def rss_growth(front: str, dest: Path, size: int) -> dict[str, int]:
    # Through a shell that forks (not execs) the child: a process inherits the
    # ru_maxrss of the process image it exec'ed from, and pytest's may be large.
    proc = subprocess.run(
        ["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-c", RSS_CHILD, front,
         str(dest), str(size)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, int] = json.loads(proc.stdout)
    print(f"{front} {size / MiB:.0f} MiB: peak RSS growth {report['growth'] / MiB:.2f} MiB "
          f"(ru_maxrss growth {report['maxrss_growth'] / MiB:.2f} MiB from "
          f"{report['maxrss_before'] / MiB:.1f} MiB; control 32 MiB seen as "
          f"{report['control'] / MiB:.1f} MiB)")
    return report


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
@pytest.mark.parametrize("front", ["sync", "async"])
@pytest.mark.parametrize(
    "size", [pytest.param(128 * MiB, id="128MiB"),
             pytest.param(2048 * MiB, id="2GiB", marks=pytest.mark.slow)]
)
def test_peak_rss_is_flat_for_a_large_stream(tmp_path: Path, front: str, size: int) -> None:
    report = rss_growth(front, tmp_path / "big.bin", size)
    assert report["control"] >= 30 * MiB  # the probe is not blind
    assert report["size"] == size
    assert report["growth"] < RSS_BUDGET
    assert report["maxrss_growth"] < RSS_BUDGET
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ file descriptors


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


class Veto(streamstore.Hook):
    def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
        raise RuntimeError("vetoed")


DATA = b"x" * 10_000


def failures(d: Path) -> Iterator[tuple[type[BaseException], Callable[[], object]]]:
    """One failing store of each kind, all in directory ``d``."""
    dest = d / "dest"
    yield SourceError, lambda: store_from_reader(FailingReader(DATA, 5000), dest)
    yield RuntimeError, lambda: store_from_reader(DATA, dest, hooks=[Veto()])
    yield TooLargeError, lambda: store_from_reader(DATA, dest, limit=100)
    yield TooSmallError, lambda: store_from_reader(
        DATA, dest, limit=streamstore.SizeLimit(min_bytes=20_000))
    yield PartialWriteError, lambda: store_from_reader(
        TruncatedReader(DATA, 20_000), dest, expected_size=20_000)
    yield HashMismatchError, lambda: store_from_reader(DATA, dest, expected_sha256="0" * 64)
    yield DestinationExistsError, lambda: store_from_reader(DATA, d / "existing", overwrite=False)
    yield KeyboardInterrupt, lambda: store_from_reader(
        FailingReader(DATA, 100, KeyboardInterrupt), dest)

    def disk_full() -> None:
        with fail_storage(d, after_bytes=1000):
            store_from_reader(DATA, dest)

    def denied() -> None:
        with fail_storage(d, errno=errno.EACCES, at="create"):
            store_from_reader(DATA, dest)

    def rename_fails() -> None:
        with fail_storage(d, errno=errno.EIO, at="rename"):
            store_from_reader(DATA, dest)

    yield DiskFullError, disk_full
    yield StoragePermissionError, denied
    yield streamstore.StorageError, rename_fails
    yield streamstore.StorageError, lambda: store_from_reader(DATA, d / "missing" / "f")


def fail_many(d: Path, n: int) -> None:
    (d / "existing").write_bytes(b"keep")
    kinds = list(failures(d))
    for i in range(n):
        expected, store = kinds[i % len(kinds)]
        with pytest.raises(expected):
            store()
    assert sorted(os.listdir(d)) == ["existing"]


@pytest.mark.parametrize(
    "n", [pytest.param(1200, id="1200"), pytest.param(10_000, id="10000", marks=pytest.mark.slow)]
)
def test_no_fd_leak_across_failed_stores(tmp_path: Path, n: int) -> None:
    fail_many(tmp_path, 50)  # warm up lazily opened descriptors
    before = open_fds()
    fail_many(tmp_path, n)
    after = open_fds()
    print(f"{n} failed stores: open fds {len(before)} -> {len(after)}")
    assert after == before


@pytest.mark.parametrize(
    "n", [pytest.param(300, id="300"), pytest.param(3000, id="3000", marks=pytest.mark.slow)]
)
def test_no_fd_leak_across_failed_async_stores(tmp_path: Path, n: int) -> None:
    dest = tmp_path / "dest"

    async def many() -> None:
        for i in range(n):
            if i % 3 == 0:
                with pytest.raises(SourceError):
                    await astore_from_reader(AsyncFailingReader(DATA, 5000), dest)
            elif i % 3 == 1:
                with pytest.raises(TooLargeError):
                    await astore_from_reader(DATA, dest, limit=10)
            else:
                task = asyncio.ensure_future(astore_from_reader(DATA * 10, dest))
                await asyncio.sleep(0)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

    asyncio.run(many())  # warm up the loop machinery (executor threads, selector)
    before = open_fds()
    asyncio.run(many())
    after = open_fds()
    print(f"{2 * n} failed async stores: open fds {len(before)} -> {len(after)}")
    assert after == before
    assert os.listdir(tmp_path) == []


def test_no_fd_leak_across_failed_content_store_puts(tmp_path: Path) -> None:
    store = streamstore.ContentStore(tmp_path / "store")
    good = store.put(DATA)

    def fail(n: int) -> None:
        for i in range(n):
            if i % 3 == 0:
                with pytest.raises(SourceError):
                    store.put(FailingReader(DATA, 5000))
            elif i % 3 == 1:
                with pytest.raises(HashMismatchError):
                    store.put(DATA, expected_sha256="0" * 64)
            else:
                with pytest.raises(streamstore.ObjectNotFoundError):
                    store.open("0" * 64)

    fail(30)
    before = open_fds()
    fail(600)
    assert open_fds() == before
    assert list(store) == [good.sha256]
    assert_no_temp_files(store.root)

"""Crash safety: a writer SIGKILLed at a random point never leaves a partial
destination, and the sweepers remove a dead writer's temp but never a live one's.

Each iteration runs a real child process that stores a large stream with
``durable=True`` and is killed after a random delay drawn over the whole store
(reading, writing, fsync, rename), so kills land in every phase.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import streamstore
from streamstore import sweep_temp
from streamstore.testing import assert_no_temp_files, temp_files

SIZE = 24 * 1024 * 1024
BLOCK = 64 * 1024

CHILD = textwrap.dedent(
    """
    import hashlib, os, sys
    from pathlib import Path
    import streamstore

    mode, target, size, seed = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest() * 2048

    class Source:  # a readinto source producing `size` bytes of the seed's pattern
        left = size
        def readinto(self, buffer):
            n = min(len(buffer), self.left, len(block))
            buffer[:n] = block[:n]
            self.left -= n
            return n

    class Started(streamstore.Hook):
        def on_start(self, expected_size):
            os.write(1, b"S")

    class PauseBeforeRename(streamstore.Hook):
        def on_finish(self, result):  # every byte written and fsynced, not yet renamed
            os.write(1, b"F")
            import time
            time.sleep(60)

    if mode == "stdin":  # a live writer that blocks on its source
        source, hooks = sys.stdin.buffer, [Started()]
    else:
        source, hooks = Source(), [Started()]
    if mode.startswith("pause-"):
        hooks.append(PauseBeforeRename())
        mode = mode[len("pause-"):]
    if mode == "store" or mode == "stdin":
        streamstore.store_from_reader(source, target, hooks=hooks, chunk_size=64 * 1024)
    else:
        streamstore.ContentStore(target).put(source, hooks=hooks)
    os.write(1, b"D")
    """
)


def content(size: int, seed: int) -> bytes:
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest() * 2048
    return (block * (size // BLOCK + 1))[:size]


def spawn(mode: str, target: Path, size: int, seed: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(target), str(size), str(seed)],
        stdin=subprocess.PIPE if mode == "stdin" else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )


def wait_started(child: subprocess.Popen[bytes]) -> float:
    assert child.stdout is not None
    assert child.stdout.read(1) == b"S", "child failed before starting the store"
    return time.monotonic()


def run_to_completion(mode: str, target: Path, seed: int) -> float:
    """Store once without a kill; return how long the store itself took."""
    with spawn(mode, target, SIZE, seed) as child:
        started = wait_started(child)
        assert child.stdout is not None
        assert child.stdout.read(1) == b"D"
        elapsed = time.monotonic() - started
    assert child.returncode == 0
    return elapsed


def kill_at_random(mode: str, target: Path, seed: int, window: float, rng: random.Random) -> bool:
    """Start a store and SIGKILL it after a random delay; True if it finished first."""
    with spawn(mode, target, SIZE, seed) as child:
        wait_started(child)
        time.sleep(rng.uniform(0, window))
        child.send_signal(signal.SIGKILL)
        assert child.stdout is not None
        return child.stdout.read(1) == b"D"


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    seed = int(os.environ.get("STREAMSTORE_CRASH_SEED", random.randrange(1 << 32)))
    print(f"crash loop seed: {seed} (set STREAMSTORE_CRASH_SEED to replay)")
    return random.Random(seed)


def crash_loop_store(directory: Path, iterations: int, rng: random.Random) -> dict[str, int]:
    dest = directory / "dest.bin"
    old, new = content(SIZE // 2, 1), content(SIZE, 2)
    digests = {hashlib.sha256(old).hexdigest(): "old", hashlib.sha256(new).hexdigest(): "new"}
    window = 1.3 * run_to_completion("store", directory / "calibrate", 2)
    (directory / "calibrate").unlink()
    counts = {"old": 0, "new": 0, "orphans": 0}
    for _ in range(iterations):
        dest.write_bytes(old)
        kill_at_random("store", dest, 2, window, rng)
        data = dest.read_bytes()
        outcome = digests.get(hashlib.sha256(data).hexdigest())
        assert outcome is not None, f"partial destination: {len(data)} bytes"
        counts[outcome] += 1
        orphans = temp_files(directory)
        assert len(orphans) <= 1
        counts["orphans"] += len(orphans)
        # The writer is dead: its temp goes, whatever its age (older_than=0).
        assert sweep_temp(directory, older_than=0) == len(orphans)
        assert_no_temp_files(directory)
        assert sorted(os.listdir(directory)) == ["dest.bin"]
    return counts


@pytest.mark.parametrize(
    "iterations", [pytest.param(4, id="4"), pytest.param(150, id="150", marks=pytest.mark.slow)]
)
def test_sigkill_store_from_reader_never_leaves_a_prefix(
    tmp_path: Path, iterations: int, rng: random.Random
) -> None:
    counts = crash_loop_store(tmp_path, iterations, rng)
    print(f"store_from_reader crash loop: {counts}")
    assert counts["old"] + counts["new"] == iterations


def crash_loop_content_store(root: Path, iterations: int, rng: random.Random) -> dict[str, int]:
    store = streamstore.ContentStore(root)
    old = store.put(content(SIZE // 8, 1))
    new_digest = hashlib.sha256(content(SIZE, 2)).hexdigest()
    window = 1.3 * run_to_completion("put", root, 3)  # calibrate with other content
    store.delete(hashlib.sha256(content(SIZE, 3)).hexdigest())
    counts = {"absent": 0, "present": 0, "orphans": 0}
    for _ in range(iterations):
        kill_at_random("put", root, 2, window, rng)
        present = set(store)
        assert present <= {old.sha256, new_digest}
        assert old.sha256 in present
        assert store.verify() == []  # nothing visible is partial or corrupt
        if new_digest in present:
            assert store.info(new_digest).size == SIZE
            counts["present"] += 1
            store.delete(new_digest)  # so that the next put writes it again
        else:
            counts["absent"] += 1
        orphans = len(temp_files(root))
        counts["orphans"] += orphans
        assert store.sweep(older_than=0) == orphans
        assert_no_temp_files(root)
    assert store.info(old.sha256).size == SIZE // 8
    return counts


@pytest.mark.parametrize(
    "iterations", [pytest.param(3, id="3"), pytest.param(100, id="100", marks=pytest.mark.slow)]
)
def test_sigkill_content_store_put_never_leaves_a_partial_object(
    tmp_path: Path, iterations: int, rng: random.Random
) -> None:
    counts = crash_loop_content_store(tmp_path / "store", iterations, rng)
    print(f"ContentStore.put crash loop: {counts}")
    assert counts["absent"] + counts["present"] == iterations


@pytest.mark.parametrize("mode", ["store", "put"])
def test_sigkill_after_fsync_before_rename(tmp_path: Path, mode: str) -> None:
    """A deterministic kill at the most delicate point: the temp is complete and
    fsynced, the rename has not happened."""
    if mode == "store":
        target = tmp_path / "dest.bin"
        target.write_bytes(b"old")
    else:
        target = tmp_path / "store"
        streamstore.ContentStore(target)
    with spawn(f"pause-{mode}", target, 4 * 1024 * 1024, 7) as child:
        wait_started(child)
        assert child.stdout is not None
        assert child.stdout.read(1) == b"F"
        (temp,) = temp_files(tmp_path)
        assert temp.stat().st_size == 4 * 1024 * 1024  # complete, only not visible
        child.send_signal(signal.SIGKILL)
    if mode == "store":
        assert target.read_bytes() == b"old"
        assert sweep_temp(tmp_path, older_than=0) == 1
        assert sorted(os.listdir(tmp_path)) == ["dest.bin"]
    else:
        store = streamstore.ContentStore(target)
        assert len(store) == 0
        assert store.sweep(older_than=0) == 1
    assert_no_temp_files(tmp_path)


@pytest.fixture
def live_writer(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A child blocked in store_from_reader(stdin, ...) with its temp file on disk."""
    dest = tmp_path / "live.bin"
    child = spawn("stdin", dest, 0, 0)
    try:
        assert child.stdin is not None
        child.stdin.write(b"first half;")
        child.stdin.flush()
        wait_started(child)
        deadline = time.monotonic() + 10
        while not temp_files(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.01)
        (temp,) = temp_files(tmp_path)
        past = time.time() - 86400
        os.utime(temp, (past, past))  # a day old: only the live lock protects it
        yield child, temp
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()


def test_sweep_never_removes_a_live_writers_temp(
    tmp_path: Path, live_writer: tuple[subprocess.Popen[bytes], Path]
) -> None:
    child, temp = live_writer
    assert sweep_temp(tmp_path, older_than=0) == 0
    assert temp.exists()
    # The writer finishes normally after the sweep: nothing was taken from under it.
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(b"second half")
    child.stdin.close()
    assert child.stdout.read(1) == b"D"
    assert child.wait() == 0
    assert (tmp_path / "live.bin").read_bytes() == b"first half;second half"
    assert_no_temp_files(tmp_path)


def test_sweep_removes_the_temp_once_the_writer_is_killed(
    tmp_path: Path, live_writer: tuple[subprocess.Popen[bytes], Path]
) -> None:
    child, temp = live_writer
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert temp.exists()
    assert sweep_temp(tmp_path, older_than=3600) == 1  # a day old
    assert not temp.exists()
    assert not (tmp_path / "live.bin").exists()


def test_sweep_honours_older_than_for_dead_writers(tmp_path: Path) -> None:
    # An orphan whose name carries a pid that is alive (ours: pid reuse) but whose
    # lock is free is still an orphan -- once it is old enough.
    orphan = tmp_path / f".streamstore-tmp.{os.getpid()}.0123456789abcdef.x"
    orphan.write_bytes(b"partial")
    assert sweep_temp(tmp_path, older_than=3600) == 0
    assert orphan.exists()
    assert sweep_temp(tmp_path, older_than=0) == 1
    assert not orphan.exists()


def test_content_store_sweep_never_removes_a_live_put(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = streamstore.ContentStore(root)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.replace("Source()", "sys.stdin.buffer"), "put", str(root),
         "0", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(b"live put, ")
        child.stdin.flush()
        wait_started(child)
        deadline = time.monotonic() + 10
        while not temp_files(root) and time.monotonic() < deadline:
            time.sleep(0.01)
        (temp,) = temp_files(root)
        past = time.time() - 86400
        os.utime(temp, (past, past))
        assert store.sweep(older_than=0) == 0
        assert temp.exists()
        child.stdin.write(b"completed")
        child.stdin.close()
        assert child.stdout.read(1) == b"D"
        assert child.wait() == 0
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    digest = hashlib.sha256(b"live put, completed").hexdigest()
    assert list(store) == [digest]
    assert store.verify() == []
    assert_no_temp_files(root)

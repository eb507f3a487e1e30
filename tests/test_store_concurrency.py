"""ContentStore under concurrent writers (threads and processes), delete/put
races and writers killed with SIGKILL mid-put."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from streamstore import ContentStore, ObjectNotFoundError
from streamstore._pending import is_temp_name


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def temps(root: Path) -> list[str]:
    return [name for _, _, files in os.walk(root) for name in files if is_temp_name(name)]


def payload(seed: int, size: int) -> bytes:
    """Deterministic bytes, the same in every process."""
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest() * 64  # 2 KiB
    return (block * (size // len(block) + 1))[:size]


def assert_consistent(store: ContentStore) -> None:
    assert store.verify() == []
    assert temps(store.root) == []
    for digest in store:
        with store.open(digest) as f:
            assert sha(f.read()) == digest


# -- threads --------------------------------------------------------------------------


def test_threads_putting_the_same_content(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "s")
    data = payload(1, 3 * 1024 * 1024 + 17)

    def put(i: int) -> str:
        # Small chunks via an iterator so the writers overlap in time.
        chunks = (data[j : j + 65536] for j in range(0, len(data), 65536))
        return store.put(chunks, metadata={"writer": i}).sha256

    with ThreadPoolExecutor(8) as pool:
        digests = list(pool.map(put, range(8)))
    assert digests == [sha(data)] * 8
    assert list(store) == [sha(data)]
    assert store.info(sha(data)).metadata["writer"] in range(8)
    assert_consistent(store)


def test_threads_putting_different_content(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "s")
    blobs = [payload(i, 200_000 + i) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        infos = list(pool.map(store.put, blobs + blobs))
    assert [i.sha256 for i in infos] == [sha(b) for b in blobs + blobs]
    assert sorted(store) == sorted({sha(b) for b in blobs})
    assert_consistent(store)


# -- processes ------------------------------------------------------------------------


def _process_put(root: str, seed: int, size: int) -> str:
    return ContentStore(root).put(payload(seed, size), metadata={"pid": os.getpid()}).sha256


def test_processes_putting_same_and_different_content(tmp_path: Path) -> None:
    root = tmp_path / "s"
    ContentStore(root)
    jobs = [(str(root), 7, 2 * 1024 * 1024)] * 4 + [(str(root), s, 300_000) for s in range(4)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        digests = pool.starmap(_process_put, jobs)
    expected = [sha(payload(seed, size)) for _, seed, size in jobs]
    assert digests == expected
    store = ContentStore(root)
    assert sorted(store) == sorted(set(expected))
    assert_consistent(store)


# -- delete / put races ---------------------------------------------------------------


def race(store: ContentStore, data: bytes, seconds: float, *, metadata: bool) -> None:
    digest = sha(data)
    stop = time.monotonic() + seconds
    failures: list[BaseException] = []
    partial_reads: list[int] = []
    counts = {"deleted": 0, "read": 0}

    def putter() -> None:
        while time.monotonic() < stop:
            store.put(data, metadata={"t": time.time()} if metadata else None)

    def deleter() -> None:
        while time.monotonic() < stop:
            counts["deleted"] += store.delete(digest)

    def reader() -> None:
        while time.monotonic() < stop:
            try:
                with store.open(digest) as f:
                    got = f.read()
            except ObjectNotFoundError:
                continue
            if got != data:
                partial_reads.append(len(got))
            counts["read"] += 1

    def guarded(fn: object) -> None:
        try:
            fn()  # type: ignore[operator]
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(fn,))
               for fn in (putter, putter, deleter, reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert partial_reads == []  # open() never returned a partial object
    assert counts["deleted"] > 3 and counts["read"] > 3, counts  # the race really happened
    # Either the complete object or none; metadata never outlives its object.
    meta = store.root / "objects" / digest[:2] / digest[2:4] / f"{digest}.json"
    if digest in store:
        assert store.info(digest).size == len(data)
    else:
        assert not meta.exists()
    assert_consistent(store)


def test_delete_put_race(tmp_path: Path) -> None:
    race(ContentStore(tmp_path / "s", durable=False), payload(3, 256 * 1024), 1.5,
         metadata=False)


def test_delete_put_race_with_metadata(tmp_path: Path) -> None:
    race(ContentStore(tmp_path / "s", durable=False), payload(4, 64 * 1024), 1.5,
         metadata=True)


@pytest.mark.slow
def test_delete_put_race_long_and_durable(tmp_path: Path) -> None:
    race(ContentStore(tmp_path / "s"), payload(5, 1024 * 1024), 15, metadata=True)


# -- crashes --------------------------------------------------------------------------

SLOW_WRITER = textwrap.dedent(
    """
    import hashlib, sys, time
    from streamstore import ContentStore

    store = ContentStore(sys.argv[1])
    chunks, pause = int(sys.argv[2]), float(sys.argv[3])
    block = hashlib.sha256(b"crash").digest() * 2048  # 64 KiB

    def slow():
        for i in range(chunks):
            if i == 4:
                print("writing", flush=True)  # the temp file exists now
            time.sleep(pause)
            yield block

    info = store.put(slow(), metadata={"crash": "test"})
    print(info.sha256, flush=True)
    time.sleep(60)
    """
)


def crash_once(root: Path, delay: float, chunks: int = 400, pause: float = 0.002) -> bool:
    """Start a slow put, SIGKILL it ``delay`` s after it began writing; True if it finished."""
    with subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(root), str(chunks), str(pause)],
        stdout=subprocess.PIPE, text=True,
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "writing"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
        child.wait()
    return bool(rest.strip())


def check_after_crash(root: Path, finished: bool) -> None:
    store = ContentStore(root)
    assert store.verify() == []  # no partial or corrupt object, ever
    block = hashlib.sha256(b"crash").digest() * 2048
    objects = list(store)
    if finished:
        assert len(objects) == 1
    for digest in objects:
        with store.open(digest) as f:
            data = f.read()
        assert data == block * (len(data) // len(block)) and sha(data) == digest
    leftovers = len(temps(root))
    assert store.sweep(older_than=0) == leftovers  # every leftover belongs to the dead
    assert temps(root) == []


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
def test_sigkill_mid_put_leaves_no_partial_object(tmp_path: Path, delay: float) -> None:
    root = tmp_path / "s"
    finished = crash_once(root, delay)
    assert not finished
    assert temps(root)  # the dead writer's temp is still there ...
    store = ContentStore(root)
    assert len(store) == 0
    check_after_crash(root, finished)  # ... until sweep removes it


def test_sigkill_after_put_keeps_the_complete_object(tmp_path: Path) -> None:
    root = tmp_path / "s"
    assert crash_once(root, 1.5, chunks=10, pause=0.001)
    check_after_crash(root, True)
    store = ContentStore(root)
    (digest,) = list(store)
    assert store.info(digest).metadata == {"crash": "test"}


@pytest.mark.slow
@pytest.mark.parametrize("delay", [i * 0.037 for i in range(25)])
def test_sigkill_at_many_points(tmp_path: Path, delay: float) -> None:
    root = tmp_path / "s"
    finished = crash_once(root, delay, chunks=60, pause=0.01)
    check_after_crash(root, finished)

"""The hashing thread (streamstore._pipeline) is an optimisation of the one core:
with it, every store must give the same bytes, digest, errors and hook calls as
on one thread, keep its guarantees on failure, and never leave the thread
running.  The switch-over threshold is lowered so small streams exercise it.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamstore
import streamstore as ss
from helpers import ShortReads, temp_files
from streamstore import Hook, StoreResult, astore_from_reader, store_from_reader
from streamstore._core import Ingest
from streamstore._pending import TempSink
from streamstore._pipeline import MAX_IN_FLIGHT, RING_SLOTS, HashThread, running_threads
from streamstore.testing import fail_storage

CHUNK = 4096  # the smallest chunk size that uses the hashing thread
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def hash_threads() -> int:
    return running_threads()


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    yield
    assert hash_threads() == 0, "a hashing thread outlived its store"


@pytest.fixture
def threaded(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Start the hashing thread after 8 KiB instead of 2 MiB."""
    monkeypatch.setattr(Ingest, "hash_thread_after", 8 * 1024)
    yield


class Recorder(Hook):
    """Records every hook call, with a copy of each chunk, and whether the
    hashing thread was running at that moment."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.threaded_chunks = 0

    def on_start(self, expected_size: int | None) -> None:
        self.calls.append(("start", expected_size))

    def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
        self.calls.append(("chunk", bytes(chunk), bytes_so_far))
        self.threaded_chunks += bool(hash_threads())

    def on_finish(self, result: StoreResult) -> None:
        self.calls.append(("finish", result.size, result.sha256))


class Boom(Exception):
    pass


class RaiseAt(Hook):
    def __init__(self, at: int, exc: BaseException) -> None:
        self.at = at
        self.exc = exc

    def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
        if bytes_so_far >= self.at:
            assert hash_threads(), "the test meant to fail while the thread runs"
            raise self.exc


def reused_buffer_chunks(data: bytes, size: int) -> Iterator[bytearray]:
    """An iterable that refills one bytearray in place: a chunk is only valid
    until the next is requested, so a hashing thread must not keep a view."""
    buf = bytearray(size)
    for start in range(0, len(data) - size + 1, size):
        buf[:] = data[start : start + size]
        yield buf
    rest = len(data) % size
    if rest:
        yield bytearray(data[-rest:])


def make_source(kind: str, data: bytes, pattern: list[int]) -> Any:
    if kind == "bytes":
        return data
    if kind == "readinto":
        return ShortReads(data, pattern)
    if kind == "reused":
        return reused_buffer_chunks(data, pattern[0])
    return [data[i : i + pattern[0]] for i in range(0, len(data), pattern[0])]


def store(kind: str, data: bytes, pattern: list[int], dest: Path, threshold: int | None,
          **kwargs: Any) -> tuple[StoreResult, list[tuple[Any, ...]], int]:
    recorder = Recorder()
    saved = Ingest.hash_thread_after
    Ingest.hash_thread_after = threshold
    try:
        result = store_from_reader(make_source(kind, data, pattern), dest, hooks=[recorder],
                                   chunk_size=CHUNK, **kwargs)
    finally:
        Ingest.hash_thread_after = saved
    return result, recorder.calls, recorder.threaded_chunks


@SETTINGS
@given(
    data=st.binary(min_size=0, max_size=40_000)
    .map(lambda b: b * 3),  # up to 120 KB: dozens of chunks past the threshold
    kind=st.sampled_from(["bytes", "readinto", "reused", "list"]),
    pattern=st.lists(st.integers(1, 3 * CHUNK), min_size=1, max_size=6),
    threshold=st.sampled_from([0, 1, CHUNK, 10_000]),
    durable=st.booleans(),
)
def test_same_result_and_hook_calls_as_one_thread(
    tmp_path: Path, data: bytes, kind: str, pattern: list[int], threshold: int, durable: bool
) -> None:
    one, one_calls, one_threaded = store(kind, data, pattern, tmp_path / "one", None,
                                         durable=durable)
    two, two_calls, _ = store(kind, data, pattern, tmp_path / "two", threshold, durable=durable)
    assert one_threaded == 0
    assert (two.size, two.sha256) == (one.size, one.sha256) == (
        len(data), hashlib.sha256(data).hexdigest())
    assert two_calls == one_calls
    assert (tmp_path / "two").read_bytes() == data


def test_the_thread_runs_for_large_streams_only(tmp_path: Path) -> None:
    """Default threshold: a 1 MiB store stays on one thread, a 3 MiB one does not."""
    for size, expect_thread in ((1 << 20, False), (3 << 20, True)):
        recorder = Recorder()
        data = bytes(range(256)) * (size // 256)
        with open(tmp_path / "src", "wb") as f:
            f.write(data)
        with open(tmp_path / "src", "rb") as f:
            result = store_from_reader(f, tmp_path / "dest", hooks=[recorder])
        assert result.sha256 == hashlib.sha256(data).hexdigest()
        assert (recorder.threaded_chunks > 0) is expect_thread
        assert hash_threads() == 0


class SlowHashThread(HashThread):
    """A hashing thread that lags far behind, so the producer must wait for it
    and a readinto ring that was too small would be overwritten while hashed."""

    def __init__(self, update: Any, fail_at: int | None = None) -> None:
        count = 0

        def slow_update(chunk: memoryview) -> None:
            nonlocal count
            count += 1
            if fail_at is not None and count == fail_at:
                raise MemoryError("injected")
            time.sleep(0.0005)
            update(chunk)

        super().__init__(slow_update)


@pytest.mark.usefixtures("threaded")
@pytest.mark.parametrize("kind", ["readinto", "reused"])
def test_lagging_hasher_sees_every_buffer_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setattr(streamstore._core, "HashThread", SlowHashThread)
    data = random.Random(5).randbytes(256_000)  # 62 chunks, all different
    pattern = [CHUNK, 100, CHUNK, 3000] if kind == "readinto" else [CHUNK]
    result = store_from_reader(make_source(kind, data, pattern), tmp_path / "d",
                               chunk_size=CHUNK)
    assert result.sha256 == hashlib.sha256(data).hexdigest()


class ChunkOwners(ss.Hook):
    """Records which buffers the chunks live in."""

    def __init__(self) -> None:
        self.owners: set[int] = set()

    def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
        self.owners.add(id(chunk.obj))


def test_readinto_ring_is_bounded(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x" * (100 * CHUNK))
    owners = ChunkOwners()
    with open(src, "rb", buffering=0) as f:  # a trusted readinto: filled in the ring itself
        store_from_reader(f, tmp_path / "d", chunk_size=CHUNK, hooks=[owners])
    assert len(owners.owners) == RING_SLOTS == MAX_IN_FLIGHT + 1
    owners = ChunkOwners()
    with open(src, "rb", buffering=0) as f:
        store_from_reader(f, tmp_path / "d", chunk_size=1 << 20, hooks=[owners])
    assert len(owners.owners) == 1  # large chunks: one buffer, one thread


def test_untrusted_readinto_fills_one_scratch_buffer_copied_into_the_ring(tmp_path: Path) -> None:
    seen: set[int] = set()

    class Counting(ShortReads):
        def readinto(self, buffer: memoryview) -> int:
            seen.add(id(buffer.obj))
            return super().readinto(buffer)

    owners = ChunkOwners()
    data = b"x" * (100 * CHUNK)
    store_from_reader(Counting(data, [CHUNK]), tmp_path / "d", chunk_size=CHUNK, hooks=[owners])
    assert len(seen) == 1 and len(owners.owners) == RING_SLOTS
    assert not seen & owners.owners


def test_a_source_writing_into_returned_buffers_cannot_skew_the_digest(tmp_path: Path) -> None:
    """A readinto() that keeps every buffer and scribbles over the old ones
    later: the digest must still describe exactly the bytes in the file."""
    kept: list[memoryview] = []
    rng = random.Random(7)

    class Scribbler:
        def __init__(self, size: int) -> None:
            self.left = size

        def readinto(self, buffer: memoryview) -> int:
            for old in kept[-20:]:
                old[:8] = b"SCRIBBLE"
            n = min(len(buffer), self.left)
            buffer[:n] = rng.randbytes(n)
            self.left -= n
            kept.append(buffer)
            return n

    result = store_from_reader(Scribbler(8 * 1024 * 1024), tmp_path / "d", chunk_size=CHUNK)
    written = (tmp_path / "d").read_bytes()
    assert len(written) == result.size == 8 * 1024 * 1024
    assert hashlib.sha256(written).hexdigest() == result.sha256


def assert_clean(directory: Path, before: dict[str, bytes]) -> None:
    assert temp_files(directory) == []
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    assert hash_threads() == 0


@pytest.mark.usefixtures("threaded")
@pytest.mark.parametrize("exc", [Boom("hook"), KeyboardInterrupt()])
def test_hook_raising_while_thread_runs(tmp_path: Path, exc: BaseException) -> None:
    (tmp_path / "d").write_bytes(b"old")
    with pytest.raises(type(exc)) as info:
        store_from_reader(b"a" * 200_000, tmp_path / "d", hooks=[RaiseAt(100_000, exc)],
                          chunk_size=CHUNK)
    assert info.value is exc
    assert_clean(tmp_path, {"d": b"old"})


@pytest.mark.usefixtures("threaded")
def test_source_failing_mid_stream(tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:
        for i in range(30):
            assert hash_threads() or i < 3
            yield b"b" * CHUNK
        raise Boom("source")

    with pytest.raises(streamstore.SourceError) as info:
        store_from_reader(chunks(), tmp_path / "d", chunk_size=CHUNK)
    assert isinstance(info.value.__cause__, Boom)
    assert_clean(tmp_path, {})


@pytest.mark.usefixtures("threaded")
def test_disk_full_mid_stream(tmp_path: Path) -> None:
    with fail_storage(tmp_path, errno=errno.ENOSPC, after_bytes=100_000) as fault:
        with pytest.raises(streamstore.DiskFullError) as info:
            store_from_reader(b"c" * 300_000, tmp_path / "d", chunk_size=CHUNK)
    assert fault.triggered == 1
    assert info.value.errno == errno.ENOSPC
    assert_clean(tmp_path, {})


@pytest.mark.usefixtures("threaded")
@pytest.mark.parametrize("how", ["limit", "expected_size"])
def test_too_large_stops_before_the_excess_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    written = 0
    write = TempSink.write

    def counting_write(self: TempSink, data: memoryview | bytes) -> None:
        nonlocal written
        written += len(data)
        write(self, data)

    monkeypatch.setattr(TempSink, "write", counting_write)
    recorder = Recorder()
    kwargs: dict[str, Any] = {"limit": 100_000} if how == "limit" else {"expected_size": 100_000}
    with pytest.raises(streamstore.TooLargeError) as info:
        store_from_reader(ShortReads(b"d" * 300_000, [CHUNK]), tmp_path / "d",
                          hooks=[recorder], chunk_size=CHUNK, **kwargs)
    assert info.value.limit == 100_000
    assert written <= 100_000
    assert recorder.threaded_chunks > 0
    assert_clean(tmp_path, {})


@pytest.mark.usefixtures("threaded")
def test_digest_mismatch_reports_the_real_digest(tmp_path: Path) -> None:
    data = b"e" * 100_000
    with pytest.raises(streamstore.HashMismatchError) as info:
        store_from_reader(data, tmp_path / "d", expected_sha256="0" * 64, chunk_size=CHUNK)
    assert info.value.actual == hashlib.sha256(data).hexdigest()
    assert_clean(tmp_path, {})


@pytest.mark.usefixtures("threaded")
def test_hashing_thread_failure_is_raised_and_cleaned_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streamstore._core, "HashThread",
                        lambda update: SlowHashThread(update, fail_at=5))
    with pytest.raises(MemoryError, match="injected"):
        store_from_reader(b"f" * 100_000, tmp_path / "d", chunk_size=CHUNK)
    assert_clean(tmp_path, {})


@pytest.mark.usefixtures("threaded")
@pytest.mark.asyncio
async def test_async_same_result(tmp_path: Path) -> None:
    data = hashlib.sha256(b"async").digest() * 10_000

    async def body() -> Any:
        for i in range(0, len(data), 5000):
            yield data[i : i + 5000]

    recorder = Recorder()
    result = await astore_from_reader(body(), tmp_path / "d", hooks=[recorder],
                                      chunk_size=CHUNK)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "d").read_bytes() == data
    assert recorder.threaded_chunks > 0


@pytest.mark.usefixtures("threaded")
@pytest.mark.asyncio
async def test_async_cancel_mid_stream_joins_the_thread(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    threaded = asyncio.Event()

    class Signal(Recorder):
        def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
            super().on_chunk(chunk, bytes_so_far)
            if self.threaded_chunks == 1:  # runs in a worker thread
                loop.call_soon_threadsafe(threaded.set)

    async def body() -> Any:
        for _ in range(10_000):
            yield b"g" * CHUNK
            await asyncio.sleep(0)

    task = asyncio.ensure_future(
        astore_from_reader(body(), tmp_path / "d", hooks=[Signal()], chunk_size=CHUNK))
    await threaded.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_clean(tmp_path, {})

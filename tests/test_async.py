"""astore_from_reader: async sources, the same checks as the sync front end, an
event loop that is never blocked by disk work, and cancellation that cleans up."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import streamstore as ss
from helpers import snapshot, temp_files

DATA = bytes(range(256)) * 4096
SHA = hashlib.sha256(DATA).hexdigest()


class UploadFileLike:
    """Starlette's UploadFile shape: ``async def read(size)``."""

    def __init__(self, data: bytes) -> None:
        self._file = io.BytesIO(data)

    async def read(self, size: int = -1) -> bytes:
        await asyncio.sleep(0)
        return self._file.read(size)


async def agen(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[i : i + size]


class AiterOnly:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return agen(self.data, 10_000)


def stream_reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


SOURCES: dict[str, Any] = {
    "UploadFile-like": lambda: UploadFileLike(DATA),
    "asyncio.StreamReader": lambda: stream_reader(DATA),
    "async generator": lambda: agen(DATA, 5000),
    "async iterable": lambda: AiterOnly(DATA),
    "huge async chunks": lambda: agen(DATA, 700_000),
    "bytes": lambda: DATA,
    "BytesIO": lambda: io.BytesIO(DATA),
    "sync generator": lambda: (DATA[i : i + 999] for i in range(0, len(DATA), 999)),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", SOURCES)
async def test_every_async_source_kind(kind: str, dest_dir: Path) -> None:
    result = await ss.astore_from_reader(SOURCES[kind](), dest_dir / "f")
    assert result == ss.StoreResult(dest_dir / "f", len(DATA), SHA)
    assert (dest_dir / "f").read_bytes() == DATA
    assert temp_files(dest_dir) == []


@pytest.mark.asyncio
async def test_a_source_that_reuses_its_buffer_is_copied(dest_dir: Path) -> None:
    async def reusing() -> AsyncIterator[bytearray]:
        buf = bytearray(1000)
        for i in range(300):
            buf[:] = bytes([i % 256]) * 1000
            yield buf

    expected = b"".join(bytes([i % 256]) * 1000 for i in range(300))
    result = await ss.astore_from_reader(reusing(), dest_dir / "f")
    assert (dest_dir / "f").read_bytes() == expected
    assert result.sha256 == hashlib.sha256(expected).hexdigest()


@pytest.mark.asyncio
async def test_same_checks_as_the_sync_front_end(dest_dir: Path) -> None:
    (dest_dir / "f").write_bytes(b"old")
    with pytest.raises(ss.TooLargeError):
        await ss.astore_from_reader(agen(DATA, 4096), dest_dir / "f", limit=10_000)
    with pytest.raises(ss.HashMismatchError):
        await ss.astore_from_reader(agen(DATA, 4096), dest_dir / "f", expected_sha256="0" * 64)
    with pytest.raises(ss.PartialWriteError):
        await ss.astore_from_reader(agen(DATA, 4096), dest_dir / "f", expected_size=len(DATA) + 1)
    with pytest.raises(ss.TooSmallError):
        await ss.astore_from_reader(agen(b"ab", 1), dest_dir / "f",
                                    limit=ss.SizeLimit(min_bytes=3))
    with pytest.raises(ss.DestinationExistsError):
        await ss.astore_from_reader(agen(b"ab", 1), dest_dir / "f", overwrite=False)
    assert snapshot(dest_dir) == {"f": b"old"}


@pytest.mark.asyncio
async def test_async_source_error_is_wrapped(dest_dir: Path) -> None:
    async def dropping() -> AsyncIterator[bytes]:
        yield b"abc"
        raise ConnectionResetError("peer went away")

    with pytest.raises(ss.SourceError, match="after 3 bytes") as info:
        await ss.astore_from_reader(dropping(), dest_dir / "f")
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert snapshot(dest_dir) == {}


@pytest.mark.asyncio
async def test_async_read_returning_str_or_too_much(dest_dir: Path) -> None:
    class Text:
        async def read(self, n: int) -> str:
            return "abc"

    class Greedy:
        async def read(self, n: int) -> bytes:
            return b"x" * (n + 1)

    with pytest.raises(TypeError, match="text mode"):
        await ss.astore_from_reader(Text(), dest_dir / "f")
    with pytest.raises(ss.SourceError, match="more than"):
        await ss.astore_from_reader(Greedy(), dest_dir / "f")
    with pytest.raises(TypeError, match="async def read"):
        await ss.astore_from_reader(42, dest_dir / "f")  # type: ignore[arg-type]
    assert snapshot(dest_dir) == {}


@pytest.mark.asyncio
async def test_hooks_progress_and_errors_mapping(dest_dir: Path) -> None:
    events: list[str] = []
    threads: set[int] = set()

    class Rec(ss.Hook):
        def on_start(self, expected_size: int | None) -> None:
            events.append("start")
            threads.add(threading.get_ident())

        def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
            if not events or events[-1] != "chunk":
                events.append("chunk")

        def on_finish(self, result: ss.StoreResult) -> None:
            events.append("finish")
            assert not result.path.exists()

    progress: list[int] = []
    await ss.astore_from_reader(agen(DATA, 4096), dest_dir / "f", hooks=[Rec()],
                                progress=lambda p: progress.append(p.bytes_done))
    assert events == ["start", "chunk", "finish"]
    assert threading.get_ident() not in threads
    assert progress[0] == 0 and progress[-1] == len(DATA) and progress == sorted(progress)

    class Mapped(Exception):
        pass

    with pytest.raises(Mapped) as info:
        await ss.astore_from_reader(agen(DATA, 4096), dest_dir / "g", limit=10,
                                    errors={ss.TooLargeError: lambda e: Mapped()})
    assert isinstance(info.value.__cause__, ss.TooLargeError)


@pytest.mark.asyncio
async def test_cancellation_mid_stream_cleans_up(dest_dir: Path) -> None:
    (dest_dir / "f").write_bytes(b"old")
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        for _ in range(10_000):
            started.set()
            await asyncio.sleep(0.001)
            yield DATA[:65536]

    task = asyncio.create_task(ss.astore_from_reader(slow(), dest_dir / "f"))
    await started.wait()
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert snapshot(dest_dir) == {"f": b"old"}


@pytest.mark.asyncio
async def test_cancellation_while_the_worker_thread_runs(dest_dir: Path) -> None:
    inside = threading.Event()
    release = threading.Event()

    class Block(ss.Hook):
        def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
            inside.set()
            release.wait(5)

    task = asyncio.create_task(ss.astore_from_reader(agen(DATA, 65536), dest_dir / "f",
                                                     hooks=[Block()]))
    assert await asyncio.to_thread(inside.wait, 5)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done(), "cancellation must wait for the worker thread"
    assert len(temp_files(dest_dir)) == 1
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert snapshot(dest_dir) == {}


@pytest.mark.asyncio
async def test_coroutine_callbacks_are_rejected(dest_dir: Path) -> None:
    async def progress(p: ss.Progress) -> None:
        pass

    with pytest.raises(TypeError, match="coroutine"):
        await ss.astore_from_reader(b"x", dest_dir / "f", progress=progress)


@pytest.mark.asyncio
async def test_event_loop_is_never_blocked_by_disk_work(dest_dir: Path) -> None:
    """A 10 ms ticker sees < 50 ms lag while a 256 MiB stream is stored durably."""
    block = bytes(range(256)) * 4096

    async def source() -> AsyncIterator[bytes]:
        for _ in range(256):
            yield block
            await asyncio.sleep(0)

    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - before - 0.01)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    result = await ss.astore_from_reader(source(), dest_dir / "big")
    done.set()
    await tick
    assert result.size == 256 * 1024 * 1024
    assert len(lags) > 5
    assert max(lags) < 0.05, f"event loop lagged {max(lags) * 1000:.1f} ms"


@pytest.mark.asyncio
async def test_declared_size_caps_how_far_an_async_source_is_read(dest_dir: Path) -> None:
    produced = [0]

    async def endless() -> AsyncIterator[bytes]:
        while True:
            produced[0] += 4096
            yield b"x" * 4096

    with pytest.raises(ss.TooLargeError) as info:
        await ss.astore_from_reader(endless(), dest_dir / "f", expected_size=100_000,
                                    chunk_size=4096)
    assert info.value.limit == 100_000
    assert produced[0] <= 100_000 + 4096
    assert snapshot(dest_dir) == {}


@pytest.mark.asyncio
async def test_cancelling_a_slow_sync_source_is_prompt(dest_dir: Path) -> None:
    """The worker feeds a sync source for at most ~0.1 s per hop, so a
    cancellation does not wait for a whole 1 MiB batch of slow reads."""
    reading = threading.Event()

    class Slow:
        def read(self, n: int) -> bytes:
            reading.set()
            time.sleep(0.02)
            return b"s" * min(n, 1024)

    task = asyncio.create_task(ss.astore_from_reader(Slow(), dest_dir / "f"))
    assert await asyncio.to_thread(reading.wait, 5)
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - started < 0.5
    assert snapshot(dest_dir) == {}


@pytest.mark.asyncio
async def test_a_failing_source_waits_for_the_batch_in_flight(dest_dir: Path) -> None:
    """The loop reads the next batch while the worker writes the previous one;
    when the source fails, cleanup happens only after that worker finished."""
    in_worker = threading.Event()
    release = threading.Event()
    finished: list[bool] = []

    class Gate(ss.Hook):
        def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
            if bytes_so_far == 32 * 1024:
                in_worker.set()
                release.wait(5)
            if bytes_so_far == 1024 * 1024:
                finished.append(True)

    async def source() -> AsyncIterator[bytes]:
        for _ in range(32):
            yield b"a" * 32 * 1024
        assert await asyncio.to_thread(in_worker.wait, 5)
        asyncio.get_running_loop().call_later(0.05, release.set)
        raise ConnectionResetError("client went away")

    with pytest.raises(ss.SourceError):
        await ss.astore_from_reader(source(), dest_dir / "f", hooks=[Gate()])
    assert finished == [True]
    assert snapshot(dest_dir) == {}

"""The asyncio front end: reads the source on the event loop, and does all disk
work (hashing, writes, fsync, rename) and the hooks in a worker thread, a batch
of chunks per hop.  Same :class:`~streamstore._core.Operation` as the sync one.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TypeVar

from ._core import DEFAULT_CHUNK_SIZE, ErrorMapper, Operation
from ._hooks import ProgressHook
from ._sources import aiter_chunks
from ._types import AsyncSource, Hook, ProgressCallback, SizeLimit, StoreResult

__all__ = ["arun_operation", "astore_from_reader", "run_in_thread"]

T = TypeVar("T")
BATCH_BYTES = 1024 * 1024


def _submit(fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    return loop.run_in_executor(None, ctx.run, fn, *args)


async def _settle(future: asyncio.Future[object]) -> None:
    """Wait until ``future`` is done, whatever happens to the calling task; never raise."""
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            continue
    if not future.cancelled():
        future.exception()  # retrieved: whoever called us is raising something else


async def _join(future: asyncio.Future[T]) -> T:
    """Await a worker's result; if the task is cancelled, re-raise that only
    after the worker has finished, so cleanup never races a write in flight."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await _settle(future)  # type: ignore[arg-type]
        raise


async def run_in_thread(fn: Callable[..., T], *args: object) -> T:
    """Run ``fn(*args)`` in the default executor without ever abandoning it
    (see :func:`_join`)."""
    return await _join(_submit(fn, *args))


def _feed_all(op: Operation, batch: list[memoryview]) -> None:
    feed = op.feed
    for chunk in batch:
        feed(chunk)


async def _pump_async(op: Operation, chunks: AsyncIterator[memoryview]) -> None:
    """Read batches on the loop while the worker feeds the previous batch.

    At most two batches are held.  Once more bytes were read than the size
    limit or declared size allows, the batch goes to the worker at once and is
    awaited before anything more is read: the worker raises TooLargeError, so
    an endless source is read at most one chunk past its limit.
    """
    cap = op.max_size
    read = 0
    batch: list[memoryview] = []
    batched = 0
    in_flight: asyncio.Future[None] | None = None
    try:
        async for chunk in chunks:
            batch.append(chunk)
            batched += len(chunk)
            read += len(chunk)
            over = cap is not None and read > cap
            if batched >= BATCH_BYTES or over:
                if in_flight is not None:
                    await _join(in_flight)
                in_flight = _submit(_feed_all, op, batch)
                batch = []
                batched = 0
                if over:
                    await _join(in_flight)
        if in_flight is not None:
            await _join(in_flight)
        if batch:
            await run_in_thread(_feed_all, op, batch)
    finally:
        if in_flight is not None and not in_flight.done():
            await _settle(in_flight)  # type: ignore[arg-type]


async def astore_from_reader(
    source: AsyncSource,
    dest: str | os.PathLike[str],
    *,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    limit: int | SizeLimit | None = None,
    progress: ProgressCallback | ProgressHook | None = None,
    hooks: Sequence[Hook] = (),
    errors: ErrorMapper | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overwrite: bool = True,
    durable: bool = True,
    mode: int | None = None,
) -> StoreResult:
    """Async twin of :func:`store_from_reader`, with the same keywords and guarantees.

    Also accepts objects with ``async def read(n)`` (Starlette ``UploadFile``,
    aiohttp and asyncio ``StreamReader``) and async iterables of bytes (httpx
    ``aiter_bytes()``).  The source is read on the event loop; hashing,
    writing, fsync, rename, the hooks and the progress callback run in a
    worker thread, so the loop is never blocked by disk work.  Sync sources are
    read in that worker thread too.  Cancelling the task cleans up like any
    other failure.
    """
    op = Operation(
        dest,
        expected_sha256=expected_sha256,
        expected_size=expected_size,
        limit=limit,
        progress=progress,
        hooks=hooks,
        errors=errors,
        chunk_size=chunk_size,
        overwrite=overwrite,
        durable=durable,
        mode=mode,
    )
    return await arun_operation(op, source)


async def arun_operation(op: Operation, source: AsyncSource) -> StoreResult:
    """Drive ``op`` with the chunks of ``source`` (validated first) and return its result.

    The asyncio loop itself; :meth:`~streamstore.ContentStore.aput` drives its
    own :class:`Operation` through it too.
    """
    chunks = aiter_chunks(source, op.chunk_size, op.dest)
    try:
        await run_in_thread(op.start)
        if isinstance(chunks, Iterator):
            while await run_in_thread(op.pump, chunks, BATCH_BYTES):
                pass
        else:
            try:
                await _pump_async(op, chunks)
            finally:
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
        return await run_in_thread(op.commit)
    except BaseException as exc:
        raise op.fail(exc)  # noqa: B904 - fail() chains mapped errors itself

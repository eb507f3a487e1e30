"""The asyncio front ends: ``astore_from_reader`` reads the source on the event
loop, ``aopen_writer`` takes pushed bytes; both hand batches of chunks to a
worker thread, where the one :class:`~streamstore._core.Ingest` hashes, checks,
runs the hooks and writes.  Starting, committing and cleaning up run in the
worker too: the event loop never does disk work.

Cancellation: before the commit has begun, cancelling aborts the store
(after the worker finished the batch in flight) and ``CancelledError``
propagates.  Once it has begun it is finished: the call returns the committed
result and the cancellation is requested again, so the caller's next
``await`` sees it.  (When the store is the task's own coroutine -- e.g.
``create_task(astore_from_reader(...))`` or ``asyncio.wait_for`` on Python
3.11 -- there is no next ``await`` and asyncio would drop a result returned
with a pending cancellation, so the task simply completes with the result.)
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from ._core import Ingest
from ._sources import aiter_chunks, bytes_view, split
from ._sync import make_ingest
from ._types import AsyncSource, Sink, StoreOptions, StoreResult, StrPath

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "AsyncWriter",
    "aopen_writer",
    "join_worker",
    "settle",
    "submit",
    "afail",
    "arun_ingest",
    "astore_from_reader",
    "run_in_thread",
]

T = TypeVar("T")
BATCH_BYTES = 1024 * 1024
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _call(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    try:
        return fn(*args)
    except StopIteration as exc:
        # asyncio cannot put StopIteration into a Future (the await would hang);
        # inside a coroutine it would become this RuntimeError anyway (PEP 479).
        raise RuntimeError(f"{getattr(fn, '__qualname__', fn)} raised StopIteration") from exc


def submit(fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
    """Run ``fn(*args)`` in the default executor (in this context); its future."""
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    return loop.run_in_executor(None, ctx.run, _call, fn, args)


async def settle(future: asyncio.Future[Any]) -> bool:
    """Wait until ``future`` is done, whatever happens to the calling task; never
    raise.  True if the task was cancelled meanwhile."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            cancelled = True
    if not future.cancelled():
        future.exception()  # retrieved: whoever called us is raising something else
    return cancelled


async def join_worker(future: asyncio.Future[T]) -> T:
    """Await a worker's result; if the task is cancelled, re-raise that only
    after the worker has finished, so cleanup never races a write in flight."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await settle(future)
        raise


async def run_in_thread(fn: Callable[..., T], *args: object) -> T:
    """Run ``fn(*args)`` in the default executor without ever abandoning it
    (see :func:`join_worker`)."""
    return await join_worker(submit(fn, *args))


def _rerequest_cancellation() -> None:
    """Cancel the current task again, unless its own coroutine is one of ours
    (then nobody would see it but asyncio, which would drop our result)."""
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - always inside a task
        return
    code = getattr(task.get_coro(), "cr_code", None)
    if code is not None and os.path.dirname(os.path.abspath(code.co_filename)) == _PACKAGE_DIR:
        return
    task.cancel()


async def _afinish(ingest: Ingest) -> StoreResult:
    """``ingest.finish()`` in a worker.  Cancelled meanwhile: if the store
    committed, return (or raise) its outcome and re-request the cancellation."""
    future = submit(ingest.finish)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await settle(future)
        error = future.exception()
        if error is None:
            _rerequest_cancellation()
            return future.result()
        if getattr(error, "committed", None) is not None:
            _rerequest_cancellation()
            raise error from None
        raise


async def afail(ingest: Ingest, exc: BaseException) -> BaseException:
    """``ingest.fail(exc)`` in a worker, run to the end even if the task is
    cancelled meanwhile (the cancellation is then requested again)."""
    future = submit(ingest.fail, exc)
    cancelled = await settle(future)
    if cancelled and not isinstance(exc, asyncio.CancelledError):
        _rerequest_cancellation()
    error = future.exception()
    if error is not None:  # pragma: no cover - fail() returns, it does not raise
        return error
    return future.result()


class _Batcher:
    """Hands chunks to the worker a batch (about 1 MiB) at a time, with at most
    one batch in flight while the next is collected: two batches held at most."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.batch: list[memoryview] = []
        self.batched = 0
        self.in_flight: asyncio.Future[None] | None = None

    async def push(self, chunk: memoryview) -> None:
        """Count ``chunk`` against the caps now (TooLargeError at once), queue it."""
        self.ingest.receive(len(chunk))
        self.batch.append(chunk)
        self.batched += len(chunk)
        if self.batched >= BATCH_BYTES:
            await self._hand_over()

    async def _hand_over(self) -> None:
        if self.in_flight is not None:
            future, self.in_flight = self.in_flight, None
            await join_worker(future)
        batch, self.batch, self.batched = self.batch, [], 0
        self.in_flight = submit(self.ingest.feed_all, batch)

    async def drain(self) -> None:
        """Feed everything queued and wait until it is written."""
        if self.batch:
            await self._hand_over()
        if self.in_flight is not None:
            future, self.in_flight = self.in_flight, None
            await join_worker(future)

    async def settle(self) -> None:
        """After a failure: wait for the batch in flight, whatever it raises."""
        future, self.in_flight = self.in_flight, None
        if future is not None and await settle(future):
            _rerequest_cancellation()


async def astore_from_reader(
    source: AsyncSource, dest: StrPath | Sink, **options: Unpack[StoreOptions]
) -> StoreResult:
    """Async twin of :func:`store_from_reader`, with the same options and guarantees.

    Also accepts objects with ``async def read(n)`` (Starlette ``UploadFile``,
    aiohttp and asyncio ``StreamReader``) and async iterables of bytes (httpx
    ``aiter_bytes()``, Starlette ``request.stream()``).  The source is read on
    the event loop; hashing, writing, fsync, the commit, the cleanup, the
    hooks and the progress callback run in a worker thread, so the loop is
    never blocked by disk work.  Sync sources are read in that worker thread
    too.  Cancelling the task before the commit began aborts the store like
    any other failure; once it began, the store completes and the
    cancellation is re-requested (see :mod:`streamstore` docs, "Async").
    """
    ingest = make_ingest(dest, options, "astore_from_reader()")
    try:
        return await arun_ingest(ingest, source)
    except BaseException as exc:
        raise await afail(ingest, exc)  # noqa: B904 - see run_ingest


async def arun_ingest(ingest: Ingest, source: AsyncSource) -> StoreResult:
    """Drive ``ingest`` with the chunks of ``source`` (validated first) and return its result.

    The asyncio loop itself; :meth:`~streamstore.ContentStore.aput` drives its
    own :class:`Ingest` through it too.
    """
    chunks = aiter_chunks(source, ingest.chunk_size, ingest.dest)
    try:
        await run_in_thread(ingest.start)
        if isinstance(chunks, Iterator):
            while await run_in_thread(ingest.pump, chunks, BATCH_BYTES):
                pass
        else:
            await _pump_async(ingest, chunks)
        return await _afinish(ingest)
    except BaseException as exc:
        raise await afail(ingest, exc)  # noqa: B904 - fail() chains mapped errors itself


async def _pump_async(ingest: Ingest, chunks: AsyncIterator[memoryview]) -> None:
    batcher = _Batcher(ingest)
    try:
        try:
            async for chunk in chunks:
                await batcher.push(chunk)
            await batcher.drain()
        finally:
            await batcher.settle()
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class AsyncWriter:
    """A store you push bytes into from async code:
    ``async with aopen_writer(dest) as w: await w.write(data)``.

    :meth:`write` queues the bytes and returns once at most two batches
    (about 2 MiB) are held; the worker thread hashes, checks and writes them
    meanwhile, so an error (a hook, a full disk) may surface at a later
    ``write`` or at the end of the block.  Leaving the block normally commits
    (``result`` holds the :class:`StoreResult`); leaving it with an exception,
    or cancelling the task before the commit began, aborts.
    """

    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest
        self._batcher = _Batcher(ingest)
        self._state = "new"
        self.result: StoreResult | None = None
        """The committed result, once the block exited cleanly."""

    @property
    def bytes_written(self) -> int:
        """Bytes accepted so far (some may still be on their way to the sink)."""
        return self._ingest.received

    async def __aenter__(self) -> AsyncWriter:
        if self._state != "new":
            raise RuntimeError("an AsyncWriter can be entered only once")
        self._state = "open"
        try:
            await run_in_thread(self._ingest.start)
        except BaseException as exc:
            self._state = "failed"
            raise await afail(self._ingest, exc)  # noqa: B904
        return self

    async def write(self, data: Any) -> int:
        """Queue bytes-like ``data``; returns ``len(data)`` in bytes."""
        if self._state != "open":
            raise ValueError(f"write() on a {self._state} writer")
        view = bytes_view(data)
        try:
            if view is None:
                raise TypeError(f"write() takes bytes-like data, got {type(data).__name__}")
            if not isinstance(view.obj, bytes):
                view = memoryview(view.tobytes())  # the caller may reuse its buffer
            for chunk in split(view, self._ingest.chunk_size):
                await self._batcher.push(chunk)
        except BaseException as exc:
            await self._fail(exc)
        return len(view)  # type: ignore[arg-type]

    async def _fail(self, exc: BaseException) -> None:
        self._state = "failed"
        await self._batcher.settle()
        failure = await afail(self._ingest, exc)
        if failure is exc:
            raise exc
        raise failure from exc

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._state != "open":
            return
        if exc is not None:
            self._state = "failed"
            await self._batcher.settle()
            failure = await afail(self._ingest, exc)
            if failure is not exc:
                raise failure from exc
            return
        try:
            await self._batcher.drain()
            self.result = await _afinish(self._ingest)
            self._state = "committed"
        except BaseException as error:
            committed = getattr(error, "committed", None)
            if committed is not None:
                self.result = committed
                self._state = "committed"
                raise
            await self._fail(error)

    def __repr__(self) -> str:
        return f"<streamstore.AsyncWriter {self._state}, {self.bytes_written} bytes>"


def aopen_writer(dest: StrPath | Sink, **options: Unpack[StoreOptions]) -> AsyncWriter:
    """An :class:`AsyncWriter` for ``dest`` with the options of :func:`store_from_reader`.

    ::

        async with aopen_writer("/srv/out.bin", limit=10 * 2**20) as w:
            async for piece in request.stream():
                await w.write(piece)
        print(w.result.sha256)

    Every guarantee of :func:`astore_from_reader` holds, and disk work stays
    off the event loop.
    """
    return AsyncWriter(make_ingest(dest, options, "aopen_writer()"))

"""Turn every supported source into an iterator of chunks (memoryviews).

This is the only place that touches the caller's source: exceptions it raises
become :class:`SourceError` (except a :class:`StreamStoreError`, which a
source built on streamstore -- a multipart part, say -- raises on purpose and
which keeps its type), misbehaviour (``None`` from a blocking read, more
bytes than asked) becomes :class:`SourceError`, and a source of the wrong kind
is a ``TypeError`` raised before anything touches the disk.
"""

from __future__ import annotations

import http.client
import inspect
import io
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NoReturn

from ._errors import SourceError, StreamStoreError
from ._pipeline import MAX_CHUNK, RING_SLOTS, RingBuffer

__all__ = ["aiter_chunks", "bytes_view", "iter_chunks", "split"]

_KINDS = (
    "bytes/bytearray/memoryview, a binary file object (with readinto() or read()), "
    "or an iterable of bytes-like chunks"
)
_ASYNC_KINDS = _KINDS + ", an object with 'async def read(n)', or an async iterable of bytes"


def bytes_view(obj: object) -> memoryview | None:
    """A flat byte view of a bytes-like object, or None if ``obj`` is not bytes-like."""
    if isinstance(obj, str):
        return None
    try:
        view = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        return None
    if not view.c_contiguous:
        view = memoryview(view.tobytes())  # e.g. a strided slice: copy into one flat run
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _raise_source_error(exc: Exception, done: int, dest: Path | None) -> NoReturn:
    """Raise ``exc`` as a :class:`SourceError` (from ``exc``); a streamstore
    error -- which a source built on streamstore, a multipart part say, raises
    on purpose -- keeps its type."""
    if isinstance(exc, StreamStoreError):
        raise exc
    raise SourceError(
        f"source raised {type(exc).__name__}: {exc} (after {done} bytes)", dest=dest
    ) from exc


def _check_chunk(
    data: object, limit: int | None, done: int, dest: Path | None, what: str
) -> memoryview:
    view = bytes_view(data)
    if view is None:
        if isinstance(data, str):
            raise TypeError(
                f"{what} returned str: the source is in text mode; "
                "open it in binary mode ('rb') or pass its .buffer"
            )
        if data is None and limit is not None:
            raise SourceError(
                f"{what} returned None (a non-blocking stream with no data ready) "
                f"after {done} bytes; pass a blocking stream",
                dest=dest,
            )
        if inspect.isawaitable(data):
            if inspect.iscoroutine(data):
                data.close()
            raise TypeError(
                f"{what} returned an awaitable; use astore_from_reader for async sources"
            )
        raise TypeError(f"{what} returned {type(data).__name__}, expected bytes")
    if limit is not None and len(view) > limit:
        raise SourceError(
            f"{what} returned {len(view)} bytes, more than the {limit} asked for "
            f"(after {done} bytes)",
            dest=dest,
        )
    return view


def split(view: memoryview, chunk_size: int) -> Iterator[memoryview]:
    if len(view) <= chunk_size:
        yield view
    else:
        for start in range(0, len(view), chunk_size):
            yield view[start : start + chunk_size]


def _is_async_only(source: object) -> bool:
    read = getattr(source, "read", None)
    if read is not None and inspect.iscoroutinefunction(read):
        return True
    return hasattr(source, "__aiter__") and not hasattr(source, "__iter__")


# readinto implementations known to fill the buffer only during the call and
# never keep it: their buffers may go to the hashing thread without a copy.
_TRUSTED_READINTO = frozenset({
    io.FileIO.readinto, io.BufferedReader.readinto, io.BufferedRandom.readinto,
    io.BytesIO.readinto, socket.SocketIO.readinto, http.client.HTTPResponse.readinto,
})
_TRUSTED_RAW = (io.FileIO, socket.SocketIO)


def _trusted_readinto(source: object) -> bool:
    method = getattr(type(source), "readinto", None)
    if method not in _TRUSTED_READINTO:
        return False
    if method in (io.BufferedReader.readinto, io.BufferedRandom.readinto):
        return isinstance(getattr(source, "raw", None), _TRUSTED_RAW)
    return True


def iter_chunks(
    source: object, chunk_size: int, dest: Path | None, *, kinds: str = _KINDS
) -> Iterator[memoryview]:
    """Validate ``source`` now and return an iterator over its chunks.

    A ``readinto`` source fills reused buffers: each chunk is only guaranteed
    valid until the next one is requested (in fact it lives until
    ``RING_SLOTS - 1`` more were handed out; see :mod:`streamstore._pipeline`).
    A ``readinto`` that is not a known file, socket or HTTP response might
    keep the buffer and write into it later: its bytes are copied into the
    ring, so the digest always describes exactly the bytes written.
    """
    if isinstance(source, str):
        raise TypeError(
            "source is a str; pass bytes (e.g. text.encode()) or a binary stream"
        )
    view = bytes_view(source)
    if view is not None:
        return split(view, chunk_size)
    if isinstance(source, io.TextIOBase):
        raise TypeError(
            "source is a text-mode stream; open it in binary mode ('rb') "
            "or pass its .buffer (e.g. sys.stdin.buffer)"
        )
    if _is_async_only(source):
        raise TypeError(
            f"source {type(source).__name__} is asynchronous; use astore_from_reader"
        )
    if callable(getattr(source, "readinto", None)):
        return _readinto_chunks(source, chunk_size, dest, copy=not _trusted_readinto(source))
    if callable(getattr(source, "read", None)):
        return _read_chunks(source, chunk_size, dest)
    if hasattr(source, "__iter__"):
        return _iterable_chunks(source, chunk_size, dest)
    raise TypeError(f"cannot store from {type(source).__name__}; pass {kinds}")


def _readinto_chunks(
    source: Any, chunk_size: int, dest: Path | None, *, copy: bool
) -> Iterator[memoryview]:
    # A ring of buffers, allocated as first needed: a small stream uses one or
    # two, and a buffer is refilled only after RING_SLOTS - 1 newer chunks.
    # An untrusted source reads into one scratch buffer of its own instead,
    # copied into the ring.
    slots = RING_SLOTS if chunk_size <= MAX_CHUNK else 1
    ring: list[memoryview] = []
    slot = 0
    readinto = source.readinto
    scratch = memoryview(bytearray(chunk_size)) if copy else None
    done = 0
    while True:
        if slot < len(ring):
            buffer = ring[slot]
        else:
            buffer = memoryview(RingBuffer(chunk_size))
            ring.append(buffer)
        slot = slot + 1 if slot + 1 < slots else 0
        try:
            n = readinto(buffer if scratch is None else scratch)
        except Exception as exc:
            _raise_source_error(exc, done, dest)
        if n is None:
            raise SourceError(
                f"source.readinto() returned None (a non-blocking stream with no data "
                f"ready) after {done} bytes; pass a blocking stream",
                dest=dest,
            )
        if not isinstance(n, int) or n < 0 or n > chunk_size:
            raise SourceError(
                f"source.readinto() returned {n!r} for a buffer of {chunk_size} bytes",
                dest=dest,
            )
        if n == 0:
            return
        done += n
        if scratch is not None:
            buffer[:n] = scratch[:n]
        yield buffer if n == chunk_size else buffer[:n]


def _read_chunks(source: Any, chunk_size: int, dest: Path | None) -> Iterator[memoryview]:
    read = source.read
    done = 0
    while True:
        try:
            data = read(chunk_size)
        except Exception as exc:
            _raise_source_error(exc, done, dest)
        view = _check_chunk(data, chunk_size, done, dest, "source.read()")
        if not view:
            return
        done += len(view)
        yield view


def _iterable_chunks(source: Any, chunk_size: int, dest: Path | None) -> Iterator[memoryview]:
    done = 0
    try:
        iterator = iter(source)
    except Exception as exc:
        _raise_source_error(exc, done, dest)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception as exc:
            _raise_source_error(exc, done, dest)
        view = _check_chunk(item, None, done, dest, "source iterator")
        done += len(view)
        yield from split(view, chunk_size)


def aiter_chunks(
    source: object, chunk_size: int, dest: Path | None
) -> AsyncIterator[memoryview] | Iterator[memoryview]:
    """Like :func:`iter_chunks`, but async sources give an async iterator.

    Async chunks are views of immutable ``bytes`` (copied if the source handed
    out a mutable buffer), so they may be held across awaits.
    """
    read = getattr(source, "read", None)
    if read is not None and inspect.iscoroutinefunction(read):
        return _aread_chunks(read, chunk_size, dest)
    if hasattr(source, "__aiter__"):
        return _aiterable_chunks(source, chunk_size, dest)
    return iter_chunks(source, chunk_size, dest, kinds=_ASYNC_KINDS)


def _owned(view: memoryview) -> memoryview:
    return view if isinstance(view.obj, bytes) else memoryview(view.tobytes())


async def _aread_chunks(
    read: Any, chunk_size: int, dest: Path | None
) -> AsyncIterator[memoryview]:
    done = 0
    while True:
        try:
            data = await read(chunk_size)
        except Exception as exc:
            _raise_source_error(exc, done, dest)
        view = _check_chunk(data, chunk_size, done, dest, "source.read()")
        if not view:
            return
        done += len(view)
        yield _owned(view)


async def _aiterable_chunks(
    source: Any, chunk_size: int, dest: Path | None
) -> AsyncIterator[memoryview]:
    done = 0
    try:
        iterator = source.__aiter__()
    except Exception as exc:
        _raise_source_error(exc, done, dest)
    while True:
        try:
            item = await iterator.__anext__()
        except StopAsyncIteration:
            return
        except Exception as exc:
            _raise_source_error(exc, done, dest)
        view = _check_chunk(item, None, done, dest, "source async iterator")
        done += len(view)
        for piece in split(_owned(view), chunk_size):
            yield piece

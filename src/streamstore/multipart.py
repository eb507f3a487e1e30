"""Streaming multipart/form-data: every part of an upload is a source, read
straight from the request body -- no spool, constant memory.

::

    from streamstore.multipart import aiter_parts

    async for part in aiter_parts(request.stream(), request.headers["content-type"]):
        if part.filename is None:
            fields[part.name] = await part.text()          # a small form field
        else:
            info = await store.aput(part, limit=100 * 2**20)  # a file, streamed

:func:`iter_parts` reads a sync stream (WSGI ``environ["wsgi.input"]`` behind
a length limit, Flask's ``request.stream``, a file, an iterable of bytes) and
yields :class:`Part` objects; :func:`aiter_parts` reads an async one
(Starlette's ``request.stream()``, aiohttp's ``request.content``, anything
with ``async def read(n)`` or an async iterable of bytes) and yields
:class:`AsyncPart` objects.  A part is an iterable (async iterable) of
``memoryview`` chunks, so ``store_from_reader``/``astore_from_reader``,
``ContentStore.put``/``aput`` and a loop over ``open_writer``/``aopen_writer``
consume it as it arrives, with the store's own size limits checked as the
bytes come in.  A part the caller does not consume is skipped when the next
one is requested.

The parser is python-multipart's ``MultipartParser`` (the one Starlette and
FastAPI use), a push parser: each chunk read from the body is pushed into it
and its callbacks queue the events that chunk produced (part headers, slices
of the chunk itself as part data, part ends).  The pull side hands those
events out one by one and reads the next chunk only when the queue is empty,
so at most one body chunk is held, and part data is never copied.

Errors: a malformed body -- a Content-Type that is not multipart/form-data or
lacks a usable boundary, a body that does not start with the boundary, a
part without ``Content-Disposition: form-data; name=...``, a body that ends
before the closing boundary, a stream that fails or a client that
disconnects -- and every limit below raise
:class:`~streamstore.MultipartError` (a ``ValueError``; answer it with 400),
except ``max_body_size``, which raises :class:`~streamstore.TooLargeError`
(413).  Raised inside a store, they abort it: nothing of that part is
stored.  A part is complete, and can be committed, only once its closing
delimiter has arrived; a body that breaks later leaves the parts before it
as they were stored.

Limits (keyword arguments of both functions):

- ``max_parts`` (default 1000): parts in one body.
- ``max_header_size`` (default 16 KiB): bytes of header names and values of
  one part; a part may also have at most 8 header lines.
- ``max_field_size`` (default 1 MiB): bytes of one non-file field (a part
  without a ``filename``), whether it is read, stored or skipped; also the
  default cap of :meth:`Part.read_all` and :meth:`Part.text`.
- ``max_body_size`` (default ``None``: no limit): bytes of the whole body.
- ``chunk_size`` (default 64 KiB): bytes asked of the stream per read.

Needs the ``web`` extra: ``pip install 'streamstore[web]'``.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

try:
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError as _exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "streamstore.multipart needs python-multipart: pip install 'streamstore[web]'"
    ) from _exc

from ._core import check_int
from ._errors import MultipartError, TooLargeError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_FIELD_SIZE",
    "DEFAULT_MAX_HEADER_SIZE",
    "DEFAULT_MAX_PARTS",
    "AsyncPart",
    "Part",
    "aiter_parts",
    "iter_parts",
    "parse_boundary",
]

DEFAULT_MAX_PARTS = 1000
DEFAULT_MAX_HEADER_SIZE = 16 * 1024
DEFAULT_MAX_FIELD_SIZE = 1024 * 1024
DEFAULT_CHUNK_SIZE = 64 * 1024
_MAX_BOUNDARY = 256  # RFC 2046 says 70; python-multipart refuses more than 256
_MAX_HEADER_LINES = 8  # as recent python-multipart versions enforce themselves

# python-multipart >= 0.0.2x caps each header line itself (4 KiB by default):
# let it allow what our own per-part limit allows.
_PARSER_HEADER_LIMIT = "max_header_size" in inspect.signature(MultipartParser).parameters

# Events queued by the parser's callbacks.
_START, _DATA, _END_PART, _END = range(4)
Event = tuple[int, Any]

# Part states.
_OPEN, _DONE, _SKIPPED = range(3)


def parse_boundary(content_type: str | bytes | None) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type header value;
    :class:`~streamstore.MultipartError` if it is another type or the boundary
    is missing, empty, longer than 256 bytes or contains a line break."""
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    if not content_type:
        raise MultipartError("no Content-Type: expected multipart/form-data with a boundary")
    try:
        media_type, params = parse_options_header(content_type)
    except (UnicodeEncodeError, ValueError) as exc:
        raise MultipartError(f"unreadable Content-Type {content_type!r}") from exc
    media_type = media_type.lower()  # older python-multipart versions keep its case
    if media_type != b"multipart/form-data":
        raise MultipartError(
            f"Content-Type is {media_type.decode('latin-1')!r}, not multipart/form-data"
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError("the multipart/form-data Content-Type has no boundary")
    if len(boundary) > _MAX_BOUNDARY or b"\r" in boundary or b"\n" in boundary:
        raise MultipartError(
            f"invalid multipart boundary ({len(boundary)} bytes): at most {_MAX_BOUNDARY} "
            "bytes, no line breaks"
        )
    return boundary


def _decode(value: bytes) -> str:
    """Header text: UTF-8 (what browsers send for non-ASCII file names), else latin-1."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


class _Limits:
    __slots__ = ("body", "chunk", "field", "header", "parts")

    def __init__(self, max_parts: int, max_header_size: int, max_field_size: int,
                 max_body_size: int | None, chunk_size: int) -> None:
        self.parts = check_int("max_parts", max_parts, 0)
        self.header = check_int("max_header_size", max_header_size, 1)
        self.field = check_int("max_field_size", max_field_size, 0)
        self.body = None if max_body_size is None else check_int("max_body_size",
                                                                  max_body_size, 0)
        self.chunk = check_int("chunk_size", chunk_size, 1)


class _PartInfo:
    """What the headers of one part say."""

    __slots__ = ("content_type", "filename", "headers", "index", "name")

    def __init__(self, index: int, raw: list[tuple[bytes, bytes]]) -> None:
        headers: dict[str, str] = {}
        disposition: bytes | None = None
        for field, value in raw:
            key = field.decode("latin-1").lower()
            text = _decode(value.strip())
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
            if key == "content-disposition":
                disposition = value
        if disposition is None:
            raise MultipartError(f"part {index} has no Content-Disposition header")
        kind, params = parse_options_header(disposition)
        if kind != b"form-data":
            raise MultipartError(
                f"part {index} has Content-Disposition {kind.decode('latin-1')!r}, "
                "not form-data")
        name = params.get(b"name")
        if name is None:
            raise MultipartError(f"part {index} has no name in its Content-Disposition")
        filename = params.get(b"filename")
        self.index = index
        self.name = _decode(name)
        self.filename = None if filename is None else _decode(filename)
        self.content_type = headers.get("content-type")
        self.headers: Mapping[str, str] = MappingProxyType(headers)


class _Body:
    """The I/O-free half: body bytes in (:meth:`feed`), events out (:meth:`event`).

    Events are ``(_START, _PartInfo)``, ``(_DATA, memoryview)`` (a slice of
    a fed chunk, never copied), ``(_END_PART, None)`` and ``(_END, None)``.
    Once it raised, every later call raises a MultipartError again.
    """

    def __init__(self, content_type: str | bytes | None, limits: _Limits) -> None:
        self.limits = limits
        boundary = parse_boundary(content_type)
        callbacks: dict[str, Callable[..., None]] = {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }
        options: dict[str, Any] = {}
        if _PARSER_HEADER_LIMIT:
            options["max_header_size"] = limits.header
        try:
            self._parser = MultipartParser(boundary, callbacks, **options)  # type: ignore[arg-type]
        except FormParserError as exc:  # pragma: no cover - parse_boundary checks first
            raise MultipartError(f"invalid multipart boundary: {exc}") from exc
        self._events: deque[Event] = deque()
        self.received = 0
        """Body bytes fed so far."""
        self.parts = 0
        self.finished = False
        """True once the closing boundary was parsed."""
        self.error: BaseException | None = None
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._field = bytearray()
        self._value = bytearray()
        self._header_bytes = 0
        self._field_left: int | None = None  # bytes the current non-file field may still have

    # -- parser callbacks (they run inside MultipartParser.write) -------------------

    def _on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.limits.parts:
            raise MultipartError(f"too many parts: more than max_parts={self.limits.parts}")
        self._raw_headers = []
        self._header_bytes = 0
        self._field_left = None

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.limits.header:
            raise MultipartError(
                f"the headers of part {self.parts} are larger than "
                f"max_header_size={self.limits.header} bytes")

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        if len(self._raw_headers) >= _MAX_HEADER_LINES:
            raise MultipartError(
                f"part {self.parts} has more than {_MAX_HEADER_LINES} header lines")
        self._raw_headers.append((bytes(self._field), bytes(self._value)))
        self._field.clear()
        self._value.clear()

    def _on_headers_finished(self) -> None:
        info = _PartInfo(self.parts, self._raw_headers)
        self._field_left = self.limits.field if info.filename is None else None
        self._events.append((_START, info))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._field_left is not None:
            self._field_left -= end - start
            if self._field_left < 0:
                raise MultipartError(
                    f"form field {self.parts} is larger than "
                    f"max_field_size={self.limits.field} bytes")
        self._events.append((_DATA, memoryview(data)[start:end]))

    def _on_part_end(self) -> None:
        self._events.append((_END_PART, None))

    def _on_end(self) -> None:
        self.finished = True
        self._events.append((_END, None))

    # -- the pull side ------------------------------------------------------------------

    def event(self) -> Event | None:
        """The next event, or None when more body bytes are needed."""
        if self._events:
            return self._events.popleft()
        if self.error is not None:
            raise MultipartError(f"the multipart body is unusable: {self.error}")
        return None

    def feed(self, chunk: bytes) -> None:
        """Parse the next ``chunk`` of the body; ``b""`` means the body ended."""
        if self.error is not None:
            raise MultipartError(f"the multipart body is unusable: {self.error}")
        try:
            if not chunk:
                if not self.finished:
                    raise MultipartError(
                        f"the multipart body ended after {self.received} bytes, "
                        "before its closing boundary (truncated)")
                return
            self.received += len(chunk)
            limit = self.limits.body
            if limit is not None and self.received > limit:
                raise TooLargeError(
                    f"the request body is larger than max_body_size={limit} bytes",
                    limit=limit, size=self.received)
            try:
                self._parser.write(chunk)
            except FormParserError as exc:
                raise MultipartError(f"malformed multipart body: {exc}") from exc
        except BaseException as exc:
            self.error = exc
            self._events.clear()
            raise

    def fail(self, exc: BaseException) -> MultipartError:
        """Record that reading the body raised ``exc``; the MultipartError to raise."""
        error = MultipartError(
            f"reading the request body failed after {self.received} bytes: "
            f"{type(exc).__name__}: {exc}")
        self.error = error
        self._events.clear()
        return error


class _PartBase:
    """What sync and async parts share: the headers and the state."""

    def __init__(self, info: _PartInfo, body: _Body) -> None:
        self.name: str = info.name
        """The form field name (``Content-Disposition: form-data; name=...``)."""
        self.filename: str | None = info.filename
        """The client's file name (untrusted: never use it as a path); ``None``
        for a plain form field, ``""`` for a file input left empty."""
        self.content_type: str | None = info.content_type
        """The part's Content-Type header value, if it has one."""
        self.headers: Mapping[str, str] = info.headers
        """Every header of the part, by lowercase name (read-only)."""
        self.index: int = info.index
        """1 for the first part of the body, 2 for the next, ..."""
        self.size = 0
        """Bytes of this part handed out (or skipped) so far."""
        self._body = body
        self._state = _OPEN

    @property
    def is_file(self) -> bool:
        """True if the part has a ``filename`` (a file input), False for a plain field."""
        return self.filename is not None

    @property
    def complete(self) -> bool:
        """True once every byte of the part was read, up to its closing delimiter."""
        return self._state == _DONE

    def _take(self, event: Event) -> memoryview | None:
        kind, value = event
        if kind == _DATA:
            self.size += len(value)
            return value  # type: ignore[no-any-return]
        self._state = _DONE  # _END_PART: the parser emits nothing else inside a part
        return None

    def _check_open(self) -> bool:
        if self._state == _SKIPPED:
            raise RuntimeError(
                f"part {self.index} ({self.name!r}) was skipped: the parts iterator "
                "moved on to the next part before it was read")
        return self._state == _OPEN

    def _charset(self, encoding: str | None) -> str:
        if encoding is not None:
            return encoding
        if self.content_type:
            _, params = parse_options_header(self.content_type.encode("latin-1", "replace"))
            charset = params.get(b"charset")
            if charset:
                return charset.decode("latin-1")
        return "utf-8"

    def _cap(self, limit: int | None) -> int:
        return self._body.limits.field if limit is None else check_int("limit", limit, 0)

    def _too_big(self, cap: int) -> MultipartError:
        return MultipartError(f"part {self.index} ({self.name!r}) is larger than {cap} bytes")

    def _text(self, data: bytes, encoding: str | None) -> str:
        charset = self._charset(encoding)
        try:
            return data.decode(charset)
        except (UnicodeDecodeError, LookupError) as exc:
            raise MultipartError(
                f"part {self.index} ({self.name!r}) is not valid {charset} text") from exc

    def __repr__(self) -> str:
        state = ("open", "complete", "skipped")[self._state]
        filename = "" if self.filename is None else f", filename={self.filename!r}"
        return (f"<{type(self).__name__} {self.index} name={self.name!r}{filename}, "
                f"{self.size} bytes, {state}>")


class Part(_PartBase):
    """One part of a multipart body read by :func:`iter_parts`.

    Iterating it yields the part's bytes as ``memoryview`` chunks (views of
    immutable ``bytes``: they may be kept) as they are read from the body, so
    it is a source for :func:`~streamstore.store_from_reader` and
    :meth:`~streamstore.ContentStore.put`.  Valid until the parts iterator
    moves on: then an unread rest is skipped and reading raises RuntimeError.
    Not thread-safe.
    """

    def __init__(self, info: _PartInfo, body: _Body, reader: _SyncReader) -> None:
        super().__init__(info, body)
        self._reader = reader

    def __iter__(self) -> Part:
        return self

    def __next__(self) -> memoryview:
        """The next chunk of the part; StopIteration at its end."""
        if not self._check_open():
            raise StopIteration
        chunk = self._take(self._reader.next_event())
        if chunk is None:
            raise StopIteration
        return chunk

    def read_all(self, limit: int | None = None) -> bytes:
        """The rest of the part as bytes; :class:`~streamstore.MultipartError` if
        it is larger than ``limit`` (default: ``max_field_size``)."""
        cap = self._cap(limit)
        data = bytearray()
        for chunk in self:
            if len(data) + len(chunk) > cap:
                raise self._too_big(cap)
            data += chunk
        return bytes(data)

    def text(self, encoding: str | None = None, limit: int | None = None) -> str:
        """The rest of the part decoded (``encoding``, else the part's charset,
        else UTF-8); :class:`~streamstore.MultipartError` if it is not valid
        text or larger than ``limit`` bytes (default: ``max_field_size``)."""
        return self._text(self.read_all(limit), encoding)

    def skip(self) -> None:
        """Read and discard the rest of the part."""
        for _ in self:
            pass


class AsyncPart(_PartBase):
    """One part of a multipart body read by :func:`aiter_parts`.

    ``async for chunk in part`` yields its bytes as ``memoryview`` chunks
    (views of immutable ``bytes``) as they arrive, so it is a source for
    :func:`~streamstore.astore_from_reader` and
    :meth:`~streamstore.ContentStore.aput`.  Valid until the parts iterator
    moves on: then an unread rest is skipped and reading raises RuntimeError.
    Not safe for concurrent use by several tasks.
    """

    def __init__(self, info: _PartInfo, body: _Body, reader: _AsyncReader) -> None:
        super().__init__(info, body)
        self._reader = reader

    def __aiter__(self) -> AsyncPart:
        return self

    async def __anext__(self) -> memoryview:
        """The next chunk of the part; StopAsyncIteration at its end."""
        if not self._check_open():
            raise StopAsyncIteration
        chunk = self._take(await self._reader.next_event())
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def read_all(self, limit: int | None = None) -> bytes:
        """The rest of the part as bytes; :class:`~streamstore.MultipartError` if
        it is larger than ``limit`` (default: ``max_field_size``)."""
        cap = self._cap(limit)
        data = bytearray()
        async for chunk in self:
            if len(data) + len(chunk) > cap:
                raise self._too_big(cap)
            data += chunk
        return bytes(data)

    async def text(self, encoding: str | None = None, limit: int | None = None) -> str:
        """The rest of the part decoded (``encoding``, else the part's charset,
        else UTF-8); :class:`~streamstore.MultipartError` if it is not valid
        text or larger than ``limit`` bytes (default: ``max_field_size``)."""
        return self._text(await self.read_all(limit), encoding)

    async def skip(self) -> None:
        """Read and discard the rest of the part."""
        async for _ in self:
            pass


# -- sync ---------------------------------------------------------------------------


def _bytes(chunk: object, what: str) -> bytes:
    if type(chunk) is bytes:
        return chunk
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return bytes(chunk)  # a mutable buffer could change under the queued views
    raise TypeError(f"{what} returned {type(chunk).__name__}, expected bytes")


def _sync_read(stream: object, chunk_size: int) -> Callable[[], bytes]:
    """A function returning the next chunk of ``stream`` (``b""`` at its end)."""
    if isinstance(stream, (bytes, bytearray, memoryview)):
        data = bytes(stream)
        chunks = iter([data[i:i + chunk_size] for i in range(0, len(data), chunk_size)])
        return lambda: next(chunks, b"")
    read = getattr(stream, "read", None)
    if callable(read):
        if inspect.iscoroutinefunction(read):
            raise TypeError(f"{type(stream).__name__} is asynchronous; use aiter_parts")
        return lambda: _bytes(read(chunk_size), "stream.read()")
    if hasattr(stream, "__aiter__") and not hasattr(stream, "__iter__"):
        raise TypeError(f"{type(stream).__name__} is asynchronous; use aiter_parts")
    if hasattr(stream, "__iter__"):
        iterator = iter(stream)

        def next_chunk() -> bytes:
            for item in iterator:
                if item:
                    return _bytes(item, "the stream's iterator")
            return b""

        return next_chunk
    raise TypeError(
        f"cannot read a multipart body from {type(stream).__name__}; pass a binary stream "
        "with read(n), an iterable of bytes, or bytes")


class _SyncReader:
    def __init__(self, body: _Body, read: Callable[[], bytes]) -> None:
        self._body = body
        self._read = read

    def next_event(self) -> Event:
        body = self._body
        while (event := body.event()) is None:
            try:
                chunk = self._read()
            except Exception as exc:
                raise body.fail(exc) from exc
            body.feed(chunk)
        return event


class _PartIterator:
    def __init__(self, body: _Body, reader: _SyncReader) -> None:
        self._body = body
        self._reader = reader
        self._current: Part | None = None
        self._finished = False

    def __iter__(self) -> _PartIterator:
        return self

    def __next__(self) -> Part:
        current, self._current = self._current, None
        if current is not None and current._state == _OPEN:
            current.skip()
            current._state = _SKIPPED
        if self._finished:
            raise StopIteration
        kind, info = self._reader.next_event()
        if kind == _END:
            self._finished = True
            raise StopIteration
        part = self._current = Part(info, self._body, self._reader)
        return part


def iter_parts(
    stream: Any,
    content_type: str | bytes | None,
    *,
    max_parts: int = DEFAULT_MAX_PARTS,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    max_field_size: int = DEFAULT_MAX_FIELD_SIZE,
    max_body_size: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Iterator[Part]:
    """The parts of the multipart/form-data body ``stream``, one :class:`Part`
    at a time, read as they are consumed.

    ``content_type`` is the request's Content-Type header value (boundary
    included); a wrong one raises :class:`~streamstore.MultipartError` here,
    before the stream is read.  ``stream`` has ``read(n)`` (and ends at the end
    of the body: Flask's ``request.stream``, ``werkzeug.wsgi.get_input_stream``
    -- a bare ``wsgi.input`` may block past it) or is an iterable of bytes, or
    bytes.  Limits: see :mod:`streamstore.multipart`.
    """
    limits = _Limits(max_parts, max_header_size, max_field_size, max_body_size, chunk_size)
    body = _Body(content_type, limits)
    return _PartIterator(body, _SyncReader(body, _sync_read(stream, limits.chunk)))


# -- async --------------------------------------------------------------------------


def _async_read(stream: object, chunk_size: int) -> Callable[[], Any]:
    """An async function returning the next chunk of ``stream`` (``b""`` at its end)."""
    read = getattr(stream, "read", None)
    if read is not None and inspect.iscoroutinefunction(read):
        async def read_chunk() -> bytes:
            return _bytes(await read(chunk_size), "stream.read()")

        return read_chunk
    if hasattr(stream, "__aiter__"):
        iterator = stream.__aiter__()

        async def next_chunk() -> bytes:
            async for item in iterator:
                if item:
                    return _bytes(item, "the stream's async iterator")
            return b""

        return next_chunk
    raise TypeError(
        f"cannot read a multipart body asynchronously from {type(stream).__name__}; pass "
        "an object with 'async def read(n)' or an async iterable of bytes (for sync "
        "streams use iter_parts)")


class _AsyncReader:
    def __init__(self, body: _Body, read: Callable[[], Any]) -> None:
        self._body = body
        self._read = read

    async def next_event(self) -> Event:
        body = self._body
        while (event := body.event()) is None:
            try:
                chunk = await self._read()
            except Exception as exc:
                raise body.fail(exc) from exc
            body.feed(chunk)
        return event


class _AsyncPartIterator:
    def __init__(self, body: _Body, reader: _AsyncReader) -> None:
        self._body = body
        self._reader = reader
        self._current: AsyncPart | None = None
        self._finished = False

    def __aiter__(self) -> _AsyncPartIterator:
        return self

    async def __anext__(self) -> AsyncPart:
        current, self._current = self._current, None
        if current is not None and current._state == _OPEN:
            await current.skip()
            current._state = _SKIPPED
        if self._finished:
            raise StopAsyncIteration
        kind, info = await self._reader.next_event()
        if kind == _END:
            self._finished = True
            raise StopAsyncIteration
        part = self._current = AsyncPart(info, self._body, self._reader)
        return part


def aiter_parts(
    stream: Any,
    content_type: str | bytes | None,
    *,
    max_parts: int = DEFAULT_MAX_PARTS,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    max_field_size: int = DEFAULT_MAX_FIELD_SIZE,
    max_body_size: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> AsyncIterator[AsyncPart]:
    """Async twin of :func:`iter_parts`: ``async for part in aiter_parts(...)``.

    ``stream`` has ``async def read(n)`` (aiohttp's ``request.content``: its
    ``read`` is used, never its line iterator) or is an async iterable of
    bytes (Starlette's ``request.stream()``).  Parsing runs on the event loop
    (python-multipart finds boundaries with ``bytes.find``); what a store does
    with the parts runs in its worker thread.
    """
    limits = _Limits(max_parts, max_header_size, max_field_size, max_body_size, chunk_size)
    body = _Body(content_type, limits)
    return _AsyncPartIterator(body, _AsyncReader(body, _async_read(stream, limits.chunk)))

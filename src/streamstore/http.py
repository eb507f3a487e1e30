"""HTTP glue that every web adapter shares, with no framework imported: the
status code and a safe message for each streamstore error, Content-Length
parsing, and streaming downloads of stored objects with ``Range`` support.

Status codes (:func:`status_for`)::

    TooLargeError                        413  (the upload is over a limit)
    MultipartError, SourceError,
    PartialWriteError, TooSmallError,
    HashMismatchError                    400  (a bad or broken request body)
    ObjectNotFoundError, InvalidDigestError   404
    DestinationExistsError               409
    DiskFullError                        507  (Insufficient Storage)
    any other StreamStoreError           500

The messages of :func:`error_detail` never contain a server path (a
``DiskFullError``'s own message names the directory; the client gets
"insufficient storage").

Downloads: :func:`open_download` turns a stored object plus the request's
method and ``Range``/``If-Range``/``If-None-Match`` headers into a
:class:`Download` -- a status (200, 206, 304, 416), the response headers
(``ETag`` is the quoted SHA-256) and a body read in constant memory, from
any backend (a local file, or the S3 backend's seekable ranged reader).
When the whole object is sent, it is read through
``ContentStore.open(digest, verify=True)``: if the stored bytes no longer
match their digest, the read that would hand over the last bytes raises
:class:`~streamstore.HashMismatchError` instead, so the response is cut
short and the client never receives a complete corrupt object.  A partial
range cannot be verified (the digest covers the whole object) and is not.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from ._async import run_in_thread
from ._errors import (
    DestinationExistsError,
    DiskFullError,
    HashMismatchError,
    InvalidDigestError,
    MultipartError,
    ObjectNotFoundError,
    PartialWriteError,
    SourceError,
    StorageError,
    StreamStoreError,
    TooLargeError,
    TooSmallError,
)

if TYPE_CHECKING:
    from ._store import ContentStore

__all__ = [
    "DEFAULT_DOWNLOAD_CHUNK",
    "ByteRange",
    "Download",
    "RangeNotSatisfiable",
    "content_length",
    "error_detail",
    "open_download",
    "parse_range",
    "status_for",
]

DEFAULT_DOWNLOAD_CHUNK = 256 * 1024

_STATUS: tuple[tuple[type[StreamStoreError], int], ...] = (
    (TooLargeError, 413),
    (MultipartError, 400),
    (SourceError, 400),
    (PartialWriteError, 400),
    (TooSmallError, 400),
    (HashMismatchError, 400),
    (ObjectNotFoundError, 404),
    (InvalidDigestError, 404),
    (DestinationExistsError, 409),
    (DiskFullError, 507),
)


def status_for(exc: BaseException) -> int | None:
    """The HTTP status for a streamstore error raised while handling an upload
    (see the module docstring); 500 for any other ``StreamStoreError``, None
    for an exception that is not one."""
    if not isinstance(exc, StreamStoreError):
        return None
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_detail(exc: StreamStoreError) -> str:
    """A message for the client: what went wrong, never a server path."""
    if isinstance(exc, TooLargeError):
        return f"the upload is larger than the limit of {exc.limit} bytes"
    if isinstance(exc, TooSmallError):
        return f"the upload is smaller than the minimum of {exc.limit} bytes"
    if isinstance(exc, PartialWriteError):
        return (f"the body ended after {exc.actual_size} of its "
                f"{exc.expected_size} declared bytes")
    if isinstance(exc, HashMismatchError):
        return f"SHA-256 mismatch: expected {exc.expected}, got {exc.actual}"
    if isinstance(exc, MultipartError):
        return str(exc)
    if isinstance(exc, SourceError):
        return "the request body could not be read"
    if isinstance(exc, (ObjectNotFoundError, InvalidDigestError)):
        return "no such object"
    if isinstance(exc, DiskFullError):
        return "insufficient storage"
    if isinstance(exc, DestinationExistsError):
        return "the destination already exists"
    if isinstance(exc, StorageError):
        return "storage error"
    return "internal error"


def content_length(value: str | None) -> int | None:
    """A Content-Length header value as an int (None if absent);
    :class:`~streamstore.MultipartError` (400) if it is not a non-negative
    decimal number."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise MultipartError(f"invalid Content-Length {value!r}")
    return int(text)


# -- ranges -------------------------------------------------------------------------

_RANGE_RE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.ASCII | re.IGNORECASE)


@dataclass(frozen=True)
class ByteRange:
    """``length`` bytes from offset ``start`` of an object of ``size`` bytes."""

    start: int
    length: int
    size: int

    @property
    def end(self) -> int:
        """The offset of the last byte (inclusive, as in ``Content-Range``)."""
        return self.start + self.length - 1

    @property
    def whole(self) -> bool:
        """True if the range covers the whole object."""
        return self.start == 0 and self.length == self.size

    @property
    def content_range(self) -> str:
        """The ``Content-Range`` header value."""
        return f"bytes {self.start}-{self.end}/{self.size}"


class RangeNotSatisfiable(ValueError):
    """A syntactically valid range that selects no byte of the object (answer 416)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range a ``Range`` header asks of an object of ``size`` bytes.

    None means "send the whole object" (no header, a header this server
    ignores as RFC 9110 allows: another unit, several ranges, bad syntax).
    Raises :class:`RangeNotSatisfiable` for a range that selects nothing
    (a start at or past the end, a zero-byte suffix, any range of an empty
    object).  An end past the object's end is cut to it.
    """
    if header is None:
        return None
    match = _RANGE_RE.fullmatch(header)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        if last and int(last) < start:
            return None  # invalid: ignored
        if start >= size:
            raise RangeNotSatisfiable(f"range starts at {start}, the object has {size} bytes")
        end = size - 1 if not last else min(int(last), size - 1)
        return ByteRange(start, end - start + 1, size)
    if not last:
        return None
    suffix = int(last)
    if suffix == 0 or size == 0:
        raise RangeNotSatisfiable(f"suffix range of {suffix} bytes of a {size}-byte object")
    length = min(suffix, size)
    return ByteRange(size - length, length, size)


# -- downloads ----------------------------------------------------------------------


def _etag_matches(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


class Download:
    """A planned response for one stored object: :attr:`status`,
    :attr:`headers`, and the body -- iterate it (``for``, in the calling
    thread) or async-iterate it (``async for``: every read runs in a worker
    thread).  The body is read in chunks of ``chunk_size`` from one open
    reader, closed at the end, on an error, or by :meth:`close`.
    """

    def __init__(self, status: int, headers: dict[str, str], reader: BinaryIO | None,
                 length: int, chunk_size: int) -> None:
        self.status = status
        """200, 206, 304 or 416."""
        self.headers = headers
        """Response headers (Content-Length, ETag, Accept-Ranges, Content-Range, ...)."""
        self.length = length
        """Bytes the body will have."""
        self._reader = reader
        self._left = length
        self._chunk = chunk_size

    def close(self) -> None:
        """Close the reader (idempotent)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    async def aclose(self) -> None:
        """:meth:`close` in a worker thread (closing a remote reader may block)."""
        if self._reader is not None:
            await run_in_thread(self.close)

    def _read(self) -> bytes:
        reader = self._reader
        if reader is None or self._left <= 0:
            self.close()
            return b""
        try:
            data = reader.read(min(self._chunk, self._left))
            if not data:
                raise StorageError(5, "Input/output error", None,
                                   message="the stored object ended early")
            self._left -= len(data)
            if self._left <= 0:
                self.close()
        except BaseException:
            self.close()
            raise
        return data

    def __iter__(self) -> Iterator[bytes]:
        while data := self._read():
            yield data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[bytes]:
        try:
            while data := await run_in_thread(self._read):
                yield data
        finally:
            if self._reader is not None:
                await self.aclose()

    def __repr__(self) -> str:
        return f"<streamstore.http.Download {self.status}, {self.length} bytes>"


def open_download(
    store: ContentStore,
    digest: str,
    *,
    method: str = "GET",
    range_header: str | None = None,
    if_range: str | None = None,
    if_none_match: str | None = None,
    content_type: str = "application/octet-stream",
    extra_headers: Mapping[str, str] | None = None,
    chunk_size: int = DEFAULT_DOWNLOAD_CHUNK,
) -> Download:
    """Plan the response to a GET or HEAD of the object ``digest`` and open its reader.

    Pass the request's ``Range`` (``range_header``), ``If-Range`` and ``If-None-Match`` header
    values as they came (None when absent).  Blocking (it stats and opens the
    object): from async code run it in a thread, as the adapters do.
    Raises :class:`~streamstore.ObjectNotFoundError` /
    :class:`~streamstore.InvalidDigestError` (404) for a missing object.
    The returned :class:`Download` holds an open reader only for a GET that
    sends bytes: close it (or read it to the end).
    """
    info = store.info(digest)
    size = info.size
    etag = f'"{info.sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Type": content_type,
        "X-Content-Type-Options": "nosniff",
        **(extra_headers or {}),
    }
    if _etag_matches(if_none_match, etag):
        headers.pop("Content-Type")
        return Download(304, headers, None, 0, chunk_size)
    wanted: ByteRange | None = None
    if if_range is None or if_range.strip() == etag:
        try:
            wanted = parse_range(range_header, size)
        except RangeNotSatisfiable:
            headers["Content-Range"] = f"bytes */{size}"
            headers["Content-Length"] = "0"
            return Download(416, headers, None, 0, chunk_size)
    if wanted is None:
        wanted = ByteRange(0, size, size)
        status = 200
    else:
        status = 206
        headers["Content-Range"] = wanted.content_range
    headers["Content-Length"] = str(wanted.length)
    if method.upper() == "HEAD" or wanted.length == 0:
        return Download(status, headers, None, 0, chunk_size)
    if wanted.whole:
        reader = store.open(digest, verify=True)
    else:
        reader = store.open(digest)
        try:
            reader.seek(wanted.start, os.SEEK_SET)
        except BaseException:
            reader.close()
            raise
    return Download(status, headers, reader, wanted.length, chunk_size)

"""Resumable uploads into a :class:`~streamstore.ContentStore`: a tus 1.0.0 server
as a plain ASGI application (no framework needed)::

    from streamstore import ContentStore
    from streamstore.tus import TusApp

    app = TusApp(ContentStore("/srv/store"), max_size=10 * 2**30)
    # served alone:  uvicorn module:app
    # or mounted:    Starlette(routes=[Mount("/files", app=app)])

Implements the core protocol and the extensions creation,
creation-with-upload, creation-defer-length, termination, checksum (sha1,
sha256, md5), expiration and concatenation.  Bytes answered with ``204`` are
on stable storage; a completed upload is committed into the store
atomically, checked against its running SHA-256 (and against ``sha256`` in
``Upload-Metadata`` when the client sends one), then ``on_complete`` is
called.  docs/tus.md states exactly what is guaranteed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import inspect
import logging
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from ._async import join_worker, run_in_thread, settle, submit
from ._errors import (
    DiskFullError,
    HashMismatchError,
    ObjectNotFoundError,
    StreamStoreError,
)
from ._store import ContentStore, ObjectInfo
from ._tus_proto import (
    CHECKSUM_ALGORITHMS,
    EXTENSIONS,
    OFFSET_CONTENT_TYPE,
    TUS_VERSION,
    UPLOAD_ID_RE,
    Reply,
    format_http_date,
    parse_checksum,
    parse_concat,
    parse_metadata,
    parse_sha256,
    parse_uint,
    upload_id_from_url,
)
from ._tus_staging import (
    COMMITTED,
    DONE,
    UPLOADING,
    Appender,
    Busy,
    DataFile,
    Record,
    Staging,
)
from ._types import StrPath

__all__ = ["CompletedUpload", "TusApp", "TusStats"]

logger = logging.getLogger("streamstore.tus")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
_T = TypeVar("_T")

_BATCH = 1024 * 1024
"""Bytes of a request body collected before they are handed to a worker thread."""
_COMMIT_CHUNK = 1024 * 1024
_ORPHAN_AGE = 3600.0
_HOST_RE = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_PREFIX_RE = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")

# How reading a request body ended.
_COMPLETE = "complete"
_DISCONNECTED = "disconnected"
_TAKEN_OVER = "taken over"
_TIMED_OUT = "timed out"
_TOO_LARGE = "too large"
_FAILED = "failed"


@dataclass(frozen=True)
class CompletedUpload:
    """An upload committed into the store: what ``on_complete`` is called with.

    ``id`` is the upload's id (the last segment of its URL), ``size`` and
    ``sha256`` describe its bytes, ``metadata`` is what the client sent in
    ``Upload-Metadata`` (decoded), and ``stored`` is the store's
    :class:`~streamstore.ObjectInfo` (``stored.created`` is False when the
    same bytes were stored before).
    """

    id: str
    size: int
    sha256: str
    metadata: dict[str, str]
    stored: ObjectInfo


@dataclass(frozen=True)
class TusStats:
    """A snapshot of the staging area (:meth:`TusApp.stats`).

    ``uploads_active``: uploads still accepting bytes (including complete
    partial uploads awaiting concatenation); ``bytes_received``: the bytes
    they hold; ``uploads_completed``: committed uploads whose records are kept
    (until they expire) to answer ``HEAD``; ``uploads_expired``: expired
    uploads the next sweep removes; ``bytes_staged``: the size of the data
    files on disk; ``staging_free``: bytes free on the staging filesystem
    (``None`` if unknown).
    """

    uploads_active: int
    bytes_received: int
    uploads_completed: int
    uploads_expired: int
    bytes_staged: int
    staging_free: int | None


class _Slot:
    """One upload's in-process lock: who holds it, who waits, and whether a
    waiter asked the holder to stop reading its request body."""

    __slots__ = ("held", "reading", "stop", "task", "users", "waiters")

    def __init__(self) -> None:
        self.held = False
        self.users = 0
        self.waiters: deque[tuple[asyncio.Future[None], bool]] = deque()
        self.task: asyncio.Task[Any] | None = None
        self.reading = False
        self.stop: str | None = None  # why the holder must stop reading: taken over, timed out


class _Watchdog:
    """Stops a request body that goes quiet: if the holder has waited
    ``timeout`` seconds for the next piece of its body, it is cancelled (as
    a takeover would) and keeps what it received.  One timer per request,
    re-armed lazily: nothing is done per message but noting the time."""

    def __init__(self, slot: _Slot, timeout: float | None) -> None:
        self.slot = slot
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.handle: asyncio.TimerHandle | None = None
        if timeout is not None:
            self.handle = self.loop.call_later(timeout, self._check)

    def _check(self) -> None:
        assert self.timeout is not None
        idle = self.loop.time() - self.last
        slot = self.slot
        if idle >= self.timeout and slot.reading and slot.stop is None and slot.task is not None:
            slot.stop = _TIMED_OUT
            slot.task.cancel()
            self.handle = None
            return
        self.handle = self.loop.call_later(max(self.timeout - idle, 0.01), self._check)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


@dataclass
class _Hold:
    """A locked upload: its in-process slot, its record (read under the lock)
    and its data file (``None`` when it has none: finished or removed)."""

    slot: _Slot
    record: Record | None
    data: DataFile | None


class _Request:
    """The parts of an ASGI HTTP scope this app reads."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers = headers
        method = str(scope.get("method", "GET")).upper()
        override = headers.get("x-http-method-override")
        self.method = override.strip().upper() if override and override.strip() else method
        self.is_head = self.method == "HEAD"
        path = str(scope.get("path", ""))
        root = str(scope.get("root_path", ""))
        if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
            path = path[len(root):]
        self.route = path

    def header(self, name: str) -> str | None:
        """A request header (lowercase ``name``); repeated headers joined by ', '."""
        return self.headers.get(name)

    def has_body(self) -> bool:
        """Whether the request announces a body (Content-Length > 0, or chunked)."""
        length = parse_uint(self.header("content-length"), "Content-Length")
        if length is not None:
            return length > 0
        return self.header("transfer-encoding") is not None

    def upload_url(self, upload_id: str, trust_forwarded: bool) -> str:
        """The absolute URL of an upload of this app (mount path and, if
        trusted, the proxy's X-Forwarded-Proto/Host/Prefix included)."""
        scheme = str(self.scope.get("scheme", "http"))
        host = self.header("host")
        prefix = ""
        if trust_forwarded:
            proto = _first(self.header("x-forwarded-proto"))
            if proto is not None and proto.lower() in ("http", "https"):
                scheme = proto.lower()
            forwarded_host = _first(self.header("x-forwarded-host"))
            if forwarded_host is not None and _HOST_RE.fullmatch(forwarded_host):
                host = forwarded_host
            forwarded_prefix = _first(self.header("x-forwarded-prefix"))
            if forwarded_prefix is not None and _PREFIX_RE.fullmatch(forwarded_prefix):
                stripped = forwarded_prefix.strip("/")
                prefix = f"/{stripped}" if stripped else ""
        if host is None or not _HOST_RE.fullmatch(host):
            server = self.scope.get("server")
            host = f"{server[0]}:{server[1]}" if server else "localhost"
        root = str(self.scope.get("root_path", "")).rstrip("/")
        return f"{scheme}://{host}{prefix}{root}/{upload_id}"


def _first(value: str | None) -> str | None:
    """The first of a comma-separated header's values (proxies append theirs)."""
    if value is None:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _uncancel() -> None:
    """Forget a cancellation this task caught on purpose (Python 3.11+ counts them)."""
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()


def _storage_reply(exc: BaseException) -> Reply:
    if isinstance(exc, DiskFullError):
        return Reply(507, "not enough storage space for this upload")
    return Reply(500, "the upload could not be stored")


def _is_async_callable(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None))  # noqa: B004 - a class with async __call__


def _check_seconds(name: str, value: object, *, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if value < 0 or value != value:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def _check_size(name: str, value: object, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (bytes), got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


class TusApp:
    """A tus 1.0.0 server (ASGI) that commits completed uploads into ``store``.

    - ``store``: a :class:`~streamstore.ContentStore` (local or any backend);
      completed uploads are stored with ``aput``, deduplicated as usual, with
      the client's ``Upload-Metadata`` as their metadata.
    - ``staging``: the local directory holding uploads in progress (one data
      file and one record each); default ``<store root>/tus`` for a local
      store, required otherwise.  Created if missing (its parent must exist).
    - ``max_size``: the largest upload accepted, in bytes (``Tus-Max-Size``;
      413 beyond it).  ``None``: no limit.
    - ``expire_after``: seconds an unfinished upload is kept after its last
      change (sliding; ``Upload-Expires``), and a completed upload's record
      after its completion.  ``None``: never expire.
    - ``on_complete``: called with a :class:`CompletedUpload` after each
      commit, before the last request is answered.  A coroutine function is
      awaited on the event loop; a plain callable runs in a worker thread.
      If it raises, the error is logged, the client is still answered with
      success (the upload is stored) and the call is retried by later sweeps
      until it returns or the record expires: at least once per upload.
    - ``durable``: fsync staged bytes and records (default: the store's).
    - ``reserve``: bytes that must stay free on the staging filesystem; a
      creation whose ``Upload-Length`` does not fit is refused with 507.
    - ``lock_timeout``: seconds a request waits for an upload another request
      is using before it is answered 423 Locked (see docs/tus.md).
    - ``idle_timeout``: seconds a request body may stall (no bytes arriving)
      before the server stops reading it, keeps what arrived and answers 408.
      ``None``: wait forever (a newer request can still take over).
    - ``checkpoint_every``: during a long request without ``Upload-Checksum``,
      record the offset after every this many bytes, so a crash of the server
      loses at most that much of it.  ``None``: only at the end of a request.
    - ``trust_forwarded``: build upload URLs from ``X-Forwarded-Proto``,
      ``X-Forwarded-Host`` and ``X-Forwarded-Prefix`` (only behind a proxy
      that sets them).
    - ``sweep_interval``: seconds between sweeps (expired uploads, orphaned
      files, pending ``on_complete`` calls).  A sweep runs at start-up (ASGI
      lifespan, else the first request), then at most this often, started by
      requests; :meth:`sweep` runs one on demand.
    """

    def __init__(
        self,
        store: ContentStore,
        *,
        max_size: int | None = None,
        expire_after: float | None = 86400.0,
        on_complete: Callable[[CompletedUpload], object] | None = None,
        staging: StrPath | None = None,
        durable: bool | None = None,
        reserve: int = 0,
        lock_timeout: float = 5.0,
        idle_timeout: float | None = 60.0,
        checkpoint_every: int | None = 16 * 1024 * 1024,
        trust_forwarded: bool = False,
        sweep_interval: float = 600.0,
    ) -> None:
        if not isinstance(store, ContentStore):
            raise TypeError(f"store must be a streamstore.ContentStore, got {type(store).__name__}")
        self.store = store
        self.max_size = _check_size("max_size", max_size, 0)
        self.expire_after = _check_seconds("expire_after", expire_after, allow_none=True)
        if on_complete is not None and not callable(on_complete):
            raise TypeError(f"on_complete must be callable, got {on_complete!r}")
        self.on_complete = on_complete
        self.reserve = _check_size("reserve", reserve, 0) or 0
        self.lock_timeout = _check_seconds("lock_timeout", lock_timeout, allow_none=False) or 0.0
        self.idle_timeout = _check_seconds("idle_timeout", idle_timeout, allow_none=True)
        if self.idle_timeout == 0:
            raise ValueError("idle_timeout must be > 0 (or None)")
        self.checkpoint_every = _check_size("checkpoint_every", checkpoint_every, 1)
        self.trust_forwarded = bool(trust_forwarded)
        interval = _check_seconds("sweep_interval", sweep_interval, allow_none=False)
        if not interval:
            raise ValueError("sweep_interval must be > 0")
        self.sweep_interval = interval
        if staging is None:
            if store.root is None:
                raise ValueError("staging= is required when the store is not a local directory: "
                                 "uploads in progress are staged on a local filesystem")
            directory = Path(store.root) / "tus"
        else:
            directory = Path(os.fspath(staging))
        self.staging = Staging(Path(os.path.abspath(directory)),
                               durable=store.durable if durable is None else bool(durable))
        """The staging area (its ``directory`` holds the uploads in progress)."""
        self.staging.ensure()
        self._slots: dict[str, _Slot] = {}
        self._hashes: dict[str, tuple[int, int, Any]] = {}  # id -> (epoch, offset, sha256)
        self._notifying: set[str] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._next_sweep = 0.0

    def __repr__(self) -> str:
        return f"TusApp({self.store!r}, staging={str(self.staging.directory)!r})"

    # -- ASGI ---------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point (``http`` and ``lifespan`` scopes)."""
        kind = scope.get("type")
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            raise RuntimeError(f"TusApp serves HTTP, not {kind!r}")
        if time.monotonic() >= self._next_sweep:
            self._start_sweep()
        request = _Request(scope)
        try:
            reply = await self._handle(request, receive)
        except Reply as error:
            reply = error
        if reply is not None:
            await self._send(send, request, reply)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._start_sweep()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        """Stop a background sweep in progress (ASGI lifespan shutdown calls this)."""
        task, self._sweeper = self._sweeper, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _send(self, send: Send, request: _Request, reply: Reply) -> None:
        headers = [(b"tus-resumable", TUS_VERSION.encode()), (b"cache-control", b"no-store")]
        headers.extend((name.lower().encode("latin-1"), value.encode("latin-1"))
                       for name, value in reply.headers.items())
        body = b""
        if reply.status != 204 and not request.is_head:
            body = (reply.message + "\n").encode("utf-8") if reply.message else b""
            headers.append((b"content-type", b"text/plain; charset=utf-8"))
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, request: _Request, receive: Receive) -> Reply | None:
        if request.method == "OPTIONS":
            return self._options()
        version = request.header("tus-resumable")
        if version is None or version.strip() != TUS_VERSION:
            raise Reply(412, f"Tus-Resumable: {TUS_VERSION} is required",
                        {"Tus-Version": TUS_VERSION})
        route = request.route
        if route in ("", "/"):
            if request.method == "POST":
                return await self._create(request, receive)
            raise Reply(405, "the upload collection takes POST", {"Allow": "POST, OPTIONS"})
        upload_id = route[1:]
        if not route.startswith("/") or UPLOAD_ID_RE.fullmatch(upload_id) is None:
            raise Reply(404, "no such upload")
        if request.method == "HEAD":
            return await self._head(upload_id)
        if request.method == "PATCH":
            return await self._patch(request, receive, upload_id)
        if request.method == "DELETE":
            return await self._delete(upload_id)
        raise Reply(405, "an upload takes HEAD, PATCH and DELETE",
                    {"Allow": "HEAD, PATCH, DELETE, OPTIONS"})

    # -- the requests -------------------------------------------------------------

    def _options(self) -> Reply:
        extensions = [e for e in EXTENSIONS if e != "expiration" or self.expire_after is not None]
        headers = {
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": ",".join(extensions),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        }
        if self.max_size is not None:
            headers["Tus-Max-Size"] = str(self.max_size)
        return Reply(204, "", headers)

    async def _head(self, upload_id: str) -> Reply:
        record = self._live(await run_in_thread(self.staging.read, upload_id))
        return Reply(200, "", self._state_headers(record, head=True))

    async def _patch(self, request: _Request, receive: Receive, upload_id: str) -> Reply | None:
        if _media_type(request.header("content-type")) != OFFSET_CONTENT_TYPE:
            raise Reply(415, f"PATCH needs Content-Type: {OFFSET_CONTENT_TYPE}")
        offset = parse_uint(request.header("upload-offset"), "Upload-Offset")
        if offset is None:
            raise Reply(400, "Upload-Offset is required")
        new_length = parse_uint(request.header("upload-length"), "Upload-Length")
        checksum = self._checksum(request)
        content_length = parse_uint(request.header("content-length"), "Content-Length")
        record = self._live(await run_in_thread(self.staging.read, upload_id))
        if record.parts is not None:
            raise Reply(403, "the final upload of a concatenation cannot be patched")
        async with self._locked(upload_id, takeover=True) as hold:
            record = self._live(hold.record, allow_expired=True)
            if self._expired(record):
                await self._forget(upload_id)
                raise Reply(410, "the upload has expired")
            if offset != record.offset:
                raise Reply(409, f"Upload-Offset {offset} does not match the upload's offset "
                                 f"{record.offset}", {"Upload-Offset": str(record.offset)})
            length = record.length
            if new_length is not None and new_length != length:
                if length is not None:
                    raise Reply(400, f"the upload's length is {length} and cannot change")
                if new_length < record.offset:
                    raise Reply(400, f"Upload-Length {new_length} is below the upload's offset "
                                     f"{record.offset}")
                if self.max_size is not None and new_length > self.max_size:
                    raise Reply(413, f"the upload is larger than the maximum of {self.max_size} "
                                     "bytes")
                length = new_length
            limit = length if length is not None else self.max_size
            if content_length is not None and limit is not None and offset + content_length > limit:
                raise Reply(413, f"the request's {content_length} bytes at offset {offset} go "
                                 f"past the upload's end at {limit}")
            if record.finished:
                return Reply(204, "", self._state_headers(record))
            if hold.data is None:
                logger.error("tus upload %s has a record but no data file; removing it", upload_id)
                await self._forget(upload_id)
                raise Reply(410, "the upload's data is gone")
            record, outcome = await self._append(hold, receive, length=length, limit=limit,
                                                 checksum=checksum)
        if outcome == _DISCONNECTED:
            return None
        if outcome == _TAKEN_OVER:
            raise Reply(409, "a newer request took over this upload",
                        {"Upload-Offset": str(record.offset)})
        if outcome == _TIMED_OUT:
            raise Reply(408, f"no data for {self.idle_timeout} seconds",
                        {"Upload-Offset": str(record.offset), "Connection": "close"})
        return Reply(204, "", self._state_headers(record))

    async def _delete(self, upload_id: str) -> Reply:
        self._live(await run_in_thread(self.staging.read, upload_id), allow_expired=True)
        async with self._locked(upload_id, takeover=True) as hold:
            if hold.record is None:
                raise Reply(404, "no such upload")
            await self._forget(upload_id)
        return Reply(204)

    async def _create(self, request: _Request, receive: Receive) -> Reply | None:
        concat = request.header("upload-concat")
        parts = parse_concat(concat) if concat is not None else None
        metadata_header, metadata = parse_metadata(request.header("upload-metadata"))
        if "sha256" in metadata:
            parse_sha256(metadata["sha256"])
        if parts is not None:
            return await self._concatenate(request, concat or "", parts, metadata_header, metadata)
        length = parse_uint(request.header("upload-length"), "Upload-Length")
        defer = request.header("upload-defer-length")
        if defer is not None:
            if defer.strip() != "1":
                raise Reply(400, "Upload-Defer-Length must be 1")
            if length is not None:
                raise Reply(400, "give Upload-Length or Upload-Defer-Length, not both")
        elif length is None:
            raise Reply(400, "Upload-Length or Upload-Defer-Length: 1 is required")
        if length is not None and self.max_size is not None and length > self.max_size:
            raise Reply(413, f"the upload is larger than the maximum of {self.max_size} bytes")
        # creation-with-upload: the body is read when its type says so; an
        # empty chunked body without a Content-Type (Node's default for a
        # POST) is no data.
        content_type = request.header("content-type")
        has_body = _media_type(content_type) == OFFSET_CONTENT_TYPE
        if not has_body and request.has_body() and (
                content_type is not None or request.header("content-length") is not None):
            raise Reply(415, f"a creation with data needs Content-Type: {OFFSET_CONTENT_TYPE}")
        checksum = None
        limit = length if length is not None else self.max_size
        if has_body:
            checksum = self._checksum(request)
            content_length = parse_uint(request.header("content-length"), "Content-Length")
            if content_length is not None and limit is not None and content_length > limit:
                raise Reply(413, f"the request's {content_length} bytes go past the upload's "
                                 f"end at {limit}")
        await self._admit(length)
        now = time.time()
        record = Record(id=Staging.new_id(), length=length, metadata=metadata,
                        metadata_header=metadata_header,
                        concat="partial" if concat is not None else None,
                        created=now, updated=now, expires=self._expiry(now))
        url = request.upload_url(record.id, self.trust_forwarded)
        outcome = _COMPLETE
        async with self._created(record) as hold:
            try:
                if length == 0 and not record.partial:
                    assert hold.data is not None
                    empty = Appender(hold.data, 0, hashlib.sha256(), None)
                    record = await self._commit(hold, record, empty, 0)
                elif has_body:
                    record, outcome = await self._append(hold, receive, length=length,
                                                         limit=limit, checksum=checksum)
            except Reply as reply:
                # The upload exists: answer 201 with the bytes kept, so the
                # client has a URL to resume (or to DELETE).
                logger.info("tus upload %s: created, but its creation body was refused: %s %s",
                            record.id, reply.status, reply.message)
                current: Record | None = await run_in_thread(self.staging.read, record.id)
                record = current or record
        if outcome == _DISCONNECTED:
            return None
        headers = {"Location": url}
        headers.update(self._state_headers(record))
        return Reply(201, "", headers)

    async def _concatenate(self, request: _Request, concat: str, urls: list[str],
                           metadata_header: str, metadata: dict[str, str]) -> Reply:
        if request.header("upload-length") is not None:
            raise Reply(400, "a final upload must not have Upload-Length")
        ids = []
        for url in urls:
            part = upload_id_from_url(url)
            if part is None:
                raise Reply(400, f"Upload-Concat: {url!r} is not an upload URL of this server")
            ids.append(part)
        async with contextlib.AsyncExitStack() as stack:
            holds = {}
            for part in sorted(set(ids)):  # one order: no deadlock between two concatenations
                holds[part] = await stack.enter_async_context(self._locked(part, takeover=False))
            records = []
            for part in ids:
                record = holds[part].record
                if record is None or self._expired(record):
                    raise Reply(400, f"Upload-Concat: the upload {part} does not exist")
                if not record.partial:
                    raise Reply(400, f"Upload-Concat: the upload {part} is not a partial upload")
                if record.offset != record.length:
                    raise Reply(400, f"Upload-Concat: the upload {part} is not complete "
                                     "(concatenation-unfinished is not supported)")
                records.append(record)
            length = sum(record.offset for record in records)
            if self.max_size is not None and length > self.max_size:
                raise Reply(413, f"the upload is larger than the maximum of {self.max_size} bytes")
            expected = parse_sha256(metadata["sha256"]) if "sha256" in metadata else None
            paths = [(self.staging.data_path(r.id), r.offset) for r in records]
            try:
                stored = await self.store.aput(_concatenation(paths), expected_size=length,
                                               expected_sha256=expected,
                                               metadata=metadata or None,
                                               chunk_size=_COMMIT_CHUNK)
            except HashMismatchError:
                raise Reply(460, "the concatenation's SHA-256 does not match sha256 in "
                                 "Upload-Metadata") from None
            except StreamStoreError as exc:
                logger.error("tus: storing a concatenation failed: %s", exc)
                raise _storage_reply(exc) from exc
        now = time.time()
        record = Record(id=Staging.new_id(), length=length, offset=length, metadata=metadata,
                        metadata_header=metadata_header, concat=concat.strip(), parts=ids,
                        created=now, updated=now, expires=self._expiry(now),
                        state=COMMITTED if self.on_complete is not None else DONE,
                        sha256=stored.sha256)
        await run_in_thread(self.staging.write, record)
        await self._notify(record, stored)
        headers = {"Location": request.upload_url(record.id, self.trust_forwarded)}
        headers.update(self._state_headers(record))
        return Reply(201, "", headers)

    # -- appending a request body ---------------------------------------------------

    async def _append(self, hold: _Hold, receive: Receive, *, length: int | None,
                      limit: int | None, checksum: tuple[str, bytes] | None
                      ) -> tuple[Record, str]:
        """Stream the request body after the upload's offset; record the new
        offset (or commit the upload if it is complete).  Returns the record
        and how the body ended; raises :class:`Reply` after discarding what
        this request may not keep."""
        record = hold.record
        data = hold.data
        assert record is not None and data is not None
        base = await self._prefix_hash(record, data)
        check = CHECKSUM_ALGORITHMS[checksum[0]]() if checksum is not None else None
        app = Appender(data, record.offset, base.copy(), check)
        await run_in_thread(data.truncate, record.offset)
        recorded = record

        async def checkpoint() -> None:
            nonlocal recorded
            if length is not None and app.pos >= length and not record.partial:
                return  # complete: only the commit may record the last byte
            recorded = await self._record_progress(recorded, app, length)

        outcome, error = await self._receive(hold.slot, receive, app, limit=limit,
                                             checkpoint=None if check is not None else checkpoint)
        if error is not None:
            logger.error("tus upload %s: storing a request body failed: %s", record.id, error)
            await self._discard(data, recorded)
            raise _storage_reply(error) from error
        if outcome == _TOO_LARGE:
            await self._discard(data, recorded)
            raise Reply(413, f"the request goes past the upload's end at {limit} bytes")
        if check is not None and checksum is not None:
            if outcome != _COMPLETE:  # an unverifiable fragment: keep none of it
                await self._discard(data, recorded)
                return recorded, outcome
            if check.digest() != checksum[1]:
                await self._discard(data, recorded)
                raise Reply(460, "Checksum Mismatch: the request's bytes do not match "
                                 "Upload-Checksum and were discarded",
                            {"Upload-Offset": str(recorded.offset)})
        if length is not None and app.pos == length and not record.partial:
            # Every byte is here (even if the client left after sending the
            # last one): an offset equal to the length is only ever recorded
            # with the commit, so clients never see complete what is not stored.
            return await self._commit(hold, recorded, app, length), outcome
        if app.pos != recorded.offset or length != recorded.length:
            recorded = await self._record_progress(recorded, app, length)
        return recorded, outcome

    async def _receive(self, slot: _Slot, receive: Receive, app: Appender, *,
                       limit: int | None, checkpoint: Callable[[], Awaitable[None]] | None
                       ) -> tuple[str, BaseException | None]:
        """Read the request body into ``app``, one batch in a worker thread while
        the next is received.  Returns how it ended and a storage error, if any."""
        batch: list[bytes] = []
        batched = 0
        received = app.pos
        checkpointed = app.pos
        every = self.checkpoint_every
        pending: asyncio.Future[None] | None = None
        outcome = _COMPLETE
        loop = asyncio.get_running_loop()
        watchdog = _Watchdog(slot, self.idle_timeout)
        try:
            while True:
                if slot.stop is not None:
                    outcome = slot.stop
                    break
                slot.reading = True
                watchdog.last = loop.time()
                try:
                    message = await receive()
                except asyncio.CancelledError:
                    if slot.stop is None:
                        raise
                    _uncancel()  # cancelled on purpose: a newer request, or the watchdog
                    outcome = slot.stop
                    break
                finally:
                    slot.reading = False
                if message.get("type") != "http.request":
                    outcome = _DISCONNECTED
                    break
                body = message.get("body", b"")
                if body:
                    if limit is not None and received + len(body) > limit:
                        outcome = _TOO_LARGE
                        break
                    received += len(body)
                    batch.append(body if isinstance(body, bytes) else bytes(body))
                    batched += len(body)
                    if batched >= _BATCH:
                        if pending is not None:
                            future, pending = pending, None
                            await join_worker(future)
                        pending = submit(app.write, batch)
                        batch, batched = [], 0
                        if checkpoint is not None and every is not None and (
                                received - checkpointed >= every):
                            future, pending = pending, None
                            await join_worker(future)
                            await checkpoint()
                            checkpointed = app.pos
                if not message.get("more_body", False):
                    break
            if outcome != _TOO_LARGE:
                if pending is not None:
                    future, pending = pending, None
                    await join_worker(future)
                if batch:
                    await run_in_thread(app.write, batch)
        except Exception as exc:
            return _FAILED, exc
        finally:
            watchdog.cancel()
            if pending is not None and await settle(pending):
                raise asyncio.CancelledError
        return outcome, None

    async def _record_progress(self, record: Record, app: Appender,
                               length: int | None) -> Record:
        """fsync the bytes appended so far, then record the new offset atomically."""
        now = time.time()
        updated = replace(record, offset=app.pos, length=length, updated=now,
                          expires=self._expiry(now))

        def work() -> Any:
            app.data.sync()
            self.staging.write(updated)
            return app.hasher.copy()

        hasher = await run_in_thread(work)
        self._hashes[record.id] = (updated.epoch, updated.offset, hasher)
        return updated

    async def _discard(self, data: DataFile, record: Record) -> None:
        """Drop the bytes past the recorded offset (the next writer would anyway)."""
        try:
            await run_in_thread(data.truncate, record.offset)
        except StreamStoreError as exc:
            logger.warning("tus upload %s: cannot truncate %s: %s", record.id, data.path, exc)

    async def _prefix_hash(self, record: Record, data: DataFile) -> Any:
        """The SHA-256 state of the upload's first ``offset`` bytes: kept from the
        last request, or computed once by re-reading them (after a restart)."""
        cached = self._hashes.get(record.id)
        if cached is not None and cached[0] == record.epoch and cached[1] == record.offset:
            return cached[2]
        if cached is not None and cached[0] == record.epoch and cached[1] < record.offset:
            start, hasher = cached[1], cached[2].copy()
        else:
            start, hasher = 0, hashlib.sha256()
        await run_in_thread(data.hash_range, hasher.update, start, record.offset)
        self._hashes[record.id] = (record.epoch, record.offset, hasher)
        return hasher

    # -- completing ---------------------------------------------------------------

    async def _commit(self, hold: _Hold, record: Record, app: Appender, length: int) -> Record:
        """All bytes are here: check the whole digest, store the upload, record it
        as committed, drop its data file, call ``on_complete``."""
        data = hold.data
        assert data is not None
        digest = app.hasher.hexdigest()
        declared = record.metadata.get("sha256")
        if declared is not None and parse_sha256(declared) != digest:
            await self._discard(data, record)
            raise Reply(460, f"the upload's SHA-256 is {digest}, not the sha256 in "
                             "Upload-Metadata; the bytes of this request were discarded",
                        {"Upload-Offset": str(record.offset)})
        reader = await run_in_thread(data.reader, length)
        try:
            stored = await self.store.aput(reader, expected_sha256=digest, expected_size=length,
                                           metadata=record.metadata or None,
                                           chunk_size=_COMMIT_CHUNK)
        except HashMismatchError as exc:
            # The staged bytes changed on disk after they were hashed.
            logger.error("tus upload %s: staged bytes failed verification (%s); "
                         "the upload starts over", record.id, exc)
            restarted = replace(record, offset=0, epoch=record.epoch + 1, updated=time.time())
            self._hashes.pop(record.id, None)
            await self._discard(data, restarted)
            await run_in_thread(self.staging.write, restarted)
            raise Reply(500, "the staged bytes failed verification; the upload starts over "
                             "at offset 0", {"Upload-Offset": "0"}) from exc
        except StreamStoreError as exc:
            logger.error("tus upload %s: committing into the store failed: %s", record.id, exc)
            await self._discard(data, record)
            raise _storage_reply(exc) from exc
        finally:
            await run_in_thread(reader.close)
        self._hashes.pop(record.id, None)
        now = time.time()
        final = replace(record, offset=length, length=length, sha256=stored.sha256, updated=now,
                        expires=self._expiry(now),
                        state=COMMITTED if self.on_complete is not None else DONE)
        try:
            await run_in_thread(self._finish_staging, final)
        except StreamStoreError as exc:  # the object is stored: still a success
            logger.error("tus upload %s: stored as %s, but recording it failed: %s",
                         record.id, stored.sha256, exc)
        await self._notify(final, stored)
        return final

    def _finish_staging(self, record: Record) -> None:
        self.staging.write(record)
        self.staging.drop_data(record.id)

    async def _notify(self, record: Record, stored: ObjectInfo) -> None:
        """Call ``on_complete`` (at least once per upload), then mark the record done."""
        callback = self.on_complete
        if callback is not None:
            assert record.sha256 is not None and record.length is not None
            upload = CompletedUpload(record.id, record.length, record.sha256,
                                     dict(record.metadata), stored)
            self._notifying.add(record.id)
            try:
                if _is_async_callable(callback):
                    await callback(upload)  # type: ignore[misc]
                else:
                    result = await run_in_thread(callback, upload)
                    if inspect.isawaitable(result):
                        await result
            except Exception:
                logger.exception("tus: on_complete raised for upload %s; it is called again at "
                                 "the next sweep", record.id)
                return
            finally:
                self._notifying.discard(record.id)
        if record.state == COMMITTED:
            try:
                await run_in_thread(self.staging.write, replace(record, state=DONE))
            except StreamStoreError as exc:
                logger.error("tus upload %s: cannot record the notification: %s", record.id, exc)

    # -- locks --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _locked(self, upload_id: str, *, takeover: bool) -> AsyncIterator[_Hold]:
        """Hold the upload: its in-process lock, then the flock on its data file
        (423 if either stays taken for ``lock_timeout``); the record is read
        under both."""
        slot = await self._acquire(upload_id, takeover)
        data: DataFile | None = None
        try:
            try:
                data = await run_in_thread(self.staging.lock, upload_id, self.lock_timeout)
            except Busy:
                raise Reply(423, "the upload is in use by another process; retry later") from None
            record = await run_in_thread(self.staging.read, upload_id)
            yield _Hold(slot, record, data)
        finally:
            await self._let_go(upload_id, slot, data)

    @contextlib.asynccontextmanager
    async def _created(self, record: Record) -> AsyncIterator[_Hold]:
        """Create the upload and hold it (nobody else knows its id yet)."""
        slot = await self._acquire(record.id, False)
        data: DataFile | None = None
        try:
            try:
                data = await run_in_thread(self.staging.create, record)
            except StreamStoreError as exc:
                logger.error("tus: cannot create an upload: %s", exc)
                raise _storage_reply(exc) from exc
            yield _Hold(slot, record, data)
        finally:
            await self._let_go(record.id, slot, data)

    async def _let_go(self, upload_id: str, slot: _Slot, data: DataFile | None) -> None:
        """Close the upload's data file, then release its in-process lock."""
        try:
            if data is not None:
                # in a worker: closing the last descriptor of a removed file
                # frees its blocks, which takes a while for a big one
                await run_in_thread(data.close)
        finally:
            self._release(upload_id, slot)

    async def _acquire(self, upload_id: str, takeover: bool) -> _Slot:
        """Take the upload's in-process lock.  If a request holds it, wait up to
        ``lock_timeout`` (then 423); with ``takeover``, first ask the holder to
        stop reading its body (it keeps what it received and lets go)."""
        slot = self._slots.get(upload_id)
        if slot is None:
            slot = self._slots[upload_id] = _Slot()
        slot.users += 1
        try:
            if slot.held:
                if takeover:
                    slot.stop = _TAKEN_OVER
                    if slot.reading and slot.task is not None:
                        slot.task.cancel()
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                entry = (waiter, takeover)
                slot.waiters.append(entry)
                try:
                    await asyncio.wait([waiter], timeout=self.lock_timeout)
                except BaseException:
                    if waiter.done() and not waiter.cancelled():
                        self._hand_over(slot)  # it was ours already: pass it on
                    else:
                        waiter.cancel()
                        with contextlib.suppress(ValueError):
                            slot.waiters.remove(entry)
                    raise
                if not waiter.done():
                    waiter.cancel()
                    with contextlib.suppress(ValueError):
                        slot.waiters.remove(entry)
                    raise Reply(423, "the upload is in use by another request; retry later")
            else:
                slot.held = True
            slot.task = asyncio.current_task()
            slot.reading = False
            wanted = any(wants and not w.done() for w, wants in slot.waiters)
            slot.stop = _TAKEN_OVER if wanted else None
            return slot
        except BaseException:
            self._drop(upload_id, slot)
            raise

    def _hand_over(self, slot: _Slot) -> None:
        """Release ``slot``: to the first waiter still waiting, or free it."""
        slot.task = None
        slot.reading = False
        slot.stop = None
        while slot.waiters:
            waiter, _ = slot.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        slot.held = False

    def _release(self, upload_id: str, slot: _Slot) -> None:
        self._hand_over(slot)
        self._drop(upload_id, slot)

    def _drop(self, upload_id: str, slot: _Slot) -> None:
        slot.users -= 1
        if slot.users <= 0 and not slot.held and self._slots.get(upload_id) is slot:
            del self._slots[upload_id]

    # -- helpers ------------------------------------------------------------------

    def _expiry(self, now: float) -> float | None:
        return None if self.expire_after is None else now + self.expire_after

    @staticmethod
    def _expired(record: Record) -> bool:
        return record.expires is not None and time.time() >= record.expires

    def _live(self, record: Record | None, *, allow_expired: bool = False) -> Record:
        """``record``, or 404 if there is none and 410 if it expired."""
        if record is None:
            raise Reply(404, "no such upload")
        if not allow_expired and self._expired(record):
            raise Reply(410, "the upload has expired")
        return record

    async def _forget(self, upload_id: str) -> None:
        self._hashes.pop(upload_id, None)
        await run_in_thread(self.staging.remove, upload_id)

    def _checksum(self, request: _Request) -> tuple[str, bytes] | None:
        value = request.header("upload-checksum")
        return None if value is None else parse_checksum(value)

    async def _admit(self, length: int | None) -> None:
        """507 unless the staging filesystem has ``length`` bytes free plus ``reserve``."""
        if length is None and not self.reserve:
            return
        free = await run_in_thread(self.staging.free_bytes)
        if free is not None and (length or 0) + self.reserve > free:
            raise Reply(507, "not enough storage space for this upload")

    def _state_headers(self, record: Record, *, head: bool = False) -> dict[str, str]:
        """Upload-Offset, -Length, -Expires (and for HEAD -Metadata, -Concat)."""
        headers = {"Upload-Offset": str(record.offset)}
        if record.length is not None:
            headers["Upload-Length"] = str(record.length)
        elif head:
            headers["Upload-Defer-Length"] = "1"
        if head and record.metadata_header:
            headers["Upload-Metadata"] = record.metadata_header
        if head and record.concat is not None:
            headers["Upload-Concat"] = record.concat
        if record.expires is not None and not record.finished:
            headers["Upload-Expires"] = format_http_date(record.expires)
        if record.state != UPLOADING and record.sha256 is not None:
            digest = bytes.fromhex(record.sha256)
            headers["Repr-Digest"] = f"sha-256=:{base64.b64encode(digest).decode()}:"
        return headers

    # -- maintenance --------------------------------------------------------------

    def _start_sweep(self) -> None:
        self._next_sweep = time.monotonic() + self.sweep_interval
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._background_sweep())

    async def _background_sweep(self) -> None:
        try:
            await self.sweep()
        except Exception:
            logger.exception("tus: sweeping the staging area failed")

    async def sweep(self) -> int:
        """Remove expired uploads and orphaned staging files, and retry the
        ``on_complete`` calls that have not returned yet.  Returns how many
        uploads and files were removed.  Uploads in use are left alone."""
        report = await run_in_thread(self.staging.sweep, time.time(), set(self._slots),
                                     _ORPHAN_AGE)
        for upload_id in report.removed:
            self._hashes.pop(upload_id, None)
        for record in report.to_notify:
            if record.id in self._notifying or record.id in self._slots:
                continue
            assert record.sha256 is not None
            try:
                stored = await run_in_thread(self.store.info, record.sha256)
            except ObjectNotFoundError:
                logger.warning("tus upload %s: its object %s is no longer in the store; "
                               "on_complete is not called", record.id, record.sha256)
                await run_in_thread(self.staging.write, replace(record, state=DONE))
                continue
            await self._notify(record, stored)
        return len(report.removed) + report.orphans

    async def stats(self) -> TusStats:
        """Count the uploads in the staging area (a directory scan, in a worker thread)."""
        return await run_in_thread(self._stats, time.time())

    def _stats(self, now: float) -> TusStats:
        active = completed = expired = received = staged = 0
        for record in self.staging.records():
            if record.expires is not None and now >= record.expires:
                expired += 1
            elif record.state == UPLOADING:
                active += 1
                received += record.offset
            else:
                completed += 1
            if record.state == UPLOADING:
                staged += self.staging.data_size(record.id)
        return TusStats(active, received, completed, expired, staged, self.staging.free_bytes())

    def uploads(self) -> Iterator[str]:
        """The ids of the uploads in the staging area (in progress or recently completed)."""
        return self.staging.ids()


def _concatenation(parts: list[tuple[Path, int]]) -> Iterator[bytes]:
    """The bytes of partial uploads in order, read in 1 MiB pieces (a sync
    iterable: the store reads it in its worker thread)."""
    for path, length in parts:
        with open(path, "rb", buffering=0) as f:
            left = length
            while left > 0:
                chunk = f.read(min(_COMMIT_CHUNK, left))
                if not chunk:
                    raise OSError(f"{path} ended {left} bytes early")
                left -= len(chunk)
                yield chunk


"""aiohttp glue: stream uploads (raw or multipart) into a store, answer
streamstore errors with the right status, serve stored objects with
``Range`` support.

::

    from aiohttp import web
    from streamstore import ContentStore
    from streamstore.aiohttp import error_middleware, object_response, request_parts

    store = ContentStore("./uploads")

    async def upload(request):
        async for part in request_parts(request):
            if part.is_file:
                info = await store.aput(part, limit=100 * 2**20)
                return web.json_response({"sha256": info.sha256, "size": info.size})
        return web.json_response({"detail": "no file part"}, status=400)

    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/upload", upload)

The body is read from ``request.content`` with ``read(n)``.  aiohttp's own
``client_max_size`` does not apply to that stream (nor to its multipart
reader, aiohttp#3702): bound uploads with the store's ``limit=`` and
``max_body_size=``.  Needs aiohttp and the ``web`` extra:
``pip install aiohttp 'streamstore[web]'``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

try:
    from aiohttp import web
except ImportError as _exc:  # pragma: no cover - exercised without aiohttp only
    raise ImportError(
        "streamstore.aiohttp needs aiohttp: pip install aiohttp 'streamstore[web]'"
    ) from _exc

from ._async import run_in_thread
from ._errors import StreamStoreError
from ._store import ContentStore
from .http import content_length, error_detail, open_download, status_for
from .multipart import AsyncPart, aiter_parts

__all__ = [
    "error_middleware",
    "error_response",
    "object_response",
    "request_length",
    "request_parts",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_parts(request: web.Request, **limits: Any) -> AsyncIterator[AsyncPart]:
    """:func:`~streamstore.multipart.aiter_parts` over ``request.content`` and the
    request's Content-Type; ``limits`` as there."""
    return aiter_parts(request.content, request.headers.get("Content-Type"), **limits)


def request_length(request: web.Request) -> int | None:
    """The request's Content-Length (None if absent; MultipartError -> 400 if
    malformed), for ``expected_size`` when storing a raw body."""
    return content_length(request.headers.get("Content-Length"))


def error_response(exc: StreamStoreError) -> web.Response:
    """``{"error": <class name>, "detail": <message>}`` with the status of
    :func:`streamstore.http.status_for` (no server path in the message)."""
    return web.json_response({"error": type(exc).__name__, "detail": error_detail(exc)},
                             status=status_for(exc) or 500)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer a :class:`~streamstore.StreamStoreError` raised by a handler with
    :func:`error_response` (before the handler started its response)."""
    try:
        return await handler(request)
    except StreamStoreError as exc:
        return error_response(exc)


class _BodyFailed(ConnectionError):
    """A download failed after its headers were sent: aiohttp drops the connection."""


async def object_response(
    request: web.Request,
    store: ContentStore,
    digest: str,
    *,
    content_type: str = "application/octet-stream",
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Send a stored object in answer to a GET or HEAD: 200, 206 for a single
    ``Range``, 304, 416; constant memory, every read in a worker thread; the
    digest verified when the whole object is sent (a mismatch cuts the
    response short).  A missing object raises ObjectNotFoundError (404 with
    :func:`error_middleware`)."""
    h = request.headers
    download = await run_in_thread(
        lambda: open_download(store, digest, method=request.method, range_header=h.get("Range"),
                              if_range=h.get("If-Range"),
                              if_none_match=h.get("If-None-Match"),
                              content_type=content_type, extra_headers=headers))
    try:
        response = web.StreamResponse(status=download.status, headers=download.headers)
        await response.prepare(request)
        try:
            async for chunk in download:
                await response.write(chunk)
        except StreamStoreError as exc:
            raise _BodyFailed(f"the download of {digest} failed: {exc}") from exc
        await response.write_eof()
        return response
    finally:
        await download.aclose()

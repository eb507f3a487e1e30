"""FastAPI and Starlette glue: stream uploads (raw or multipart) into a store,
answer streamstore errors with the right status, serve stored objects with
``Range`` support.

::

    from streamstore import ContentStore
    from streamstore.starlette import add_error_handlers, object_response, request_parts

    store = ContentStore("./uploads", reserve=1 << 30)
    app = FastAPI()
    add_error_handlers(app)          # TooLargeError -> 413, DiskFullError -> 507, ...

    @app.post("/upload")
    async def upload(request: Request):
        async for part in request_parts(request):
            if part.is_file:
                info = await store.aput(part, limit=100 * 2**20)
                return {"sha256": info.sha256, "size": info.size}
        return JSONResponse({"detail": "no file part"}, status_code=400)

    @app.get("/objects/{digest}")
    async def download(digest: str, request: Request):
        return await object_response(request, store, digest)

Read the body through ``request.stream()`` only (which these helpers do):
``await request.form()``, ``UploadFile`` parameters and ``File()``/``Form()``
spool the whole body first.  Needs Starlette (FastAPI brings it) and the
``web`` extra: ``pip install 'streamstore[web]'``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

try:
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.types import Receive, Scope, Send
except ImportError as _exc:  # pragma: no cover - exercised without Starlette only
    raise ImportError(
        "streamstore.starlette needs Starlette (FastAPI includes it): "
        "pip install starlette 'streamstore[web]'"
    ) from _exc

from ._async import run_in_thread
from ._errors import StreamStoreError
from ._store import ContentStore
from .http import Download, content_length, error_detail, open_download, status_for
from .multipart import AsyncPart, aiter_parts

__all__ = [
    "ObjectResponse",
    "add_error_handlers",
    "error_response",
    "object_response",
    "request_length",
    "request_parts",
]


def request_parts(request: Request, **limits: Any) -> AsyncIterator[AsyncPart]:
    """:func:`~streamstore.multipart.aiter_parts` over the request's body stream
    and Content-Type; ``limits`` as there (``max_parts``, ``max_field_size``, ...)."""
    return aiter_parts(request.stream(), request.headers.get("content-type"), **limits)


def request_length(request: Request) -> int | None:
    """The request's Content-Length (None if absent; MultipartError -> 400 if
    malformed): pass it as ``expected_size`` when storing a raw body, so a
    store that cannot fit is refused (507) before a byte is read."""
    return content_length(request.headers.get("content-length"))


def error_response(exc: StreamStoreError) -> JSONResponse:
    """``{"error": <class name>, "detail": <message>}`` with the status of
    :func:`streamstore.http.status_for` (no server path in the message)."""
    status = status_for(exc) or 500
    return JSONResponse({"error": type(exc).__name__, "detail": error_detail(exc)},
                        status_code=status)


async def _handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StreamStoreError)
    return error_response(exc)


def add_error_handlers(app: Any) -> None:
    """Answer every :class:`~streamstore.StreamStoreError` an endpoint raises
    with :func:`error_response` (a Starlette or FastAPI app)."""
    app.add_exception_handler(StreamStoreError, _handler)


class ObjectResponse(StreamingResponse):
    """A streamed :class:`~streamstore.http.Download`; its reader is closed when
    the response ends, however it ends (a client disconnect included)."""

    def __init__(self, download: Download) -> None:
        super().__init__(download, status_code=download.status, headers=download.headers)
        self.download = download

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.download.aclose()


async def object_response(
    request: Request,
    store: ContentStore,
    digest: str,
    *,
    content_type: str = "application/octet-stream",
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The response to a GET or HEAD of a stored object: 200, 206 for a single
    ``Range``, 304 on a matching ``If-None-Match``, 416 for a range outside
    the object; constant memory; the digest verified when the whole object
    is sent (see :mod:`streamstore.http`).  A missing object raises
    ObjectNotFoundError (404 with :func:`add_error_handlers`)."""
    h = request.headers
    download = await run_in_thread(
        lambda: open_download(store, digest, method=request.method, range_header=h.get("range"),
                              if_range=h.get("if-range"),
                              if_none_match=h.get("if-none-match"),
                              content_type=content_type, extra_headers=headers))
    if download.status in (304, 416) or download.length == 0:
        return Response(status_code=download.status, headers=download.headers)
    return ObjectResponse(download)

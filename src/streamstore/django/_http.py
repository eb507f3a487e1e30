"""HTTP answers for streamstore errors: 400, 413 and 507."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse

from .. import http
from .._errors import StreamStoreError

__all__ = ["UploadErrorMiddleware", "error_response", "status_for"]

_UPLOAD_STATUSES = frozenset({400, 413, 507})


def status_for(exc: BaseException) -> int | None:
    """The HTTP status that answers ``exc``, or ``None`` when it is no client error.

    :class:`~streamstore.TooLargeError` is 413; :class:`~streamstore.DiskFullError`
    is 507; :class:`~streamstore.TooSmallError`,
    :class:`~streamstore.HashMismatchError`,
    :class:`~streamstore.PartialWriteError`, :class:`~streamstore.MultipartError`
    and :class:`~streamstore.SourceError` (the client's body broke off) are
    400 (the statuses of :func:`streamstore.http.status_for`).  Anything else
    (a storage failure, a bug) is the server's: ``None``, left to Django's 500.
    """
    status = http.status_for(exc)
    return status if status in _UPLOAD_STATUSES else None


def error_response(exc: BaseException) -> HttpResponse | None:
    """A plain-text :class:`~django.http.HttpResponse` answering ``exc`` with
    :func:`status_for`'s status, or ``None`` when ``exc`` is no client error.

    The body is :func:`streamstore.http.error_detail`'s message, which never
    names a server path; a 507 also carries ``Retry-After: 60``.
    """
    status = status_for(exc)
    if status is None or not isinstance(exc, StreamStoreError):
        return None
    response = HttpResponse(http.error_detail(exc) + "\n", status=status,
                            content_type="text/plain; charset=utf-8")
    if status == 507:
        response["Retry-After"] = "60"
    return response


def streaming_handlers(request: HttpRequest) -> Iterator[Any]:
    """The request's :class:`ContentStoreUploadHandler` instances (none are created)."""
    from ._upload import ContentStoreUploadHandler

    for handler in getattr(request, "_upload_handlers", ()) or ():
        if isinstance(handler, ContentStoreUploadHandler):
            yield handler


class UploadErrorMiddleware:
    """Answers streamstore upload errors with 400/413/507 and aborts cut-short uploads.

    Add it to ``MIDDLEWARE`` (before ``CsrfViewMiddleware``) when
    :class:`ContentStoreUploadHandler` is installed through
    ``FILE_UPLOAD_HANDLERS``.  It

    - turns an upload error raised by a view into :func:`error_response`;
    - replaces the 500 that Django renders when the error surfaced outside a
      view (e.g. while ``CsrfViewMiddleware`` read ``request.POST``) with the
      same answer;
    - aborts, when the response is done, every upload of the request that was
      not stored (a body that broke off, an error in the parser), so no temp
      file outlives its request.

    Views wrapped in :func:`stream_uploads` do all of this themselves.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            response = self.get_response(request)
        finally:
            for handler in streaming_handlers(request):
                handler.abort()
        if response.status_code == 500:
            for handler in streaming_handlers(request):
                mapped = None if handler.error is None else error_response(handler.error)
                if mapped is not None:
                    return mapped
        return response

    def process_exception(self, request: HttpRequest,
                          exception: Exception) -> HttpResponse | None:
        """Answer an upload error that a view raised (or let Django handle others)."""
        for handler in streaming_handlers(request):
            handler.abort()
        return error_response(exception)

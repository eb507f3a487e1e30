"""Flask (WSGI) glue: stream uploads (raw or multipart) into a store, answer
streamstore errors with the right status, serve stored objects with
``Range`` support.

::

    from flask import Flask
    from streamstore import ContentStore
    from streamstore.flask import object_response, register_error_handlers, request_parts

    store = ContentStore("./uploads")
    app = Flask(__name__)
    register_error_handlers(app)

    @app.post("/upload")
    def upload():
        for part in request_parts():
            if part.is_file:
                info = store.put(part, limit=100 * 2**20)
                return {"sha256": info.sha256, "size": info.size}
        return {"detail": "no file part"}, 400

The body is read from ``request.stream``: never touch ``request.form``,
``request.files`` or ``request.data`` first (they consume and spool it).
Flask's ``MAX_CONTENT_LENGTH`` becomes the reader's ``max_body_size`` (413).
Whether the body streams depends on the server: Gunicorn and Werkzeug's
server pass it through as it arrives.  Needs Flask and the ``web`` extra:
``pip install flask 'streamstore[web]'``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

try:
    import flask
except ImportError as _exc:  # pragma: no cover - exercised without Flask only
    raise ImportError(
        "streamstore.flask needs Flask: pip install flask 'streamstore[web]'"
    ) from _exc

from ._errors import StreamStoreError
from ._store import ContentStore
from .http import content_length, error_detail, open_download, status_for
from .multipart import Part, iter_parts

__all__ = [
    "error_response",
    "object_response",
    "register_error_handlers",
    "request_length",
    "request_parts",
]


def request_parts(**limits: Any) -> Iterator[Part]:
    """:func:`~streamstore.multipart.iter_parts` over the current request's
    ``request.stream`` and Content-Type; ``limits`` as there (``max_body_size``
    defaults to the app's ``MAX_CONTENT_LENGTH``)."""
    request = flask.request
    limits.setdefault("max_body_size", request.max_content_length)
    return iter_parts(request.stream, request.headers.get("Content-Type"), **limits)


def request_length() -> int | None:
    """The current request's Content-Length (None if absent; MultipartError ->
    400 if malformed), for ``expected_size`` when storing a raw body."""
    return content_length(flask.request.headers.get("Content-Length"))


def error_response(exc: StreamStoreError) -> flask.Response:
    """``{"error": <class name>, "detail": <message>}`` with the status of
    :func:`streamstore.http.status_for` (no server path in the message)."""
    response = flask.jsonify(error=type(exc).__name__, detail=error_detail(exc))
    response.status_code = status_for(exc) or 500
    return response


def register_error_handlers(app: flask.Flask) -> None:
    """Answer every :class:`~streamstore.StreamStoreError` a view raises with
    :func:`error_response`."""
    app.register_error_handler(StreamStoreError, error_response)


def object_response(
    store: ContentStore,
    digest: str,
    *,
    content_type: str = "application/octet-stream",
    headers: Mapping[str, str] | None = None,
) -> flask.Response:
    """The response to the current GET or HEAD of a stored object: 200, 206 for
    a single ``Range``, 304, 416; constant memory; the digest verified when
    the whole object is sent (a mismatch cuts the response short).  The
    reader is closed when the server closes the response."""
    h = flask.request.headers
    download = open_download(store, digest, method=flask.request.method,
                             range_header=h.get("Range"), if_range=h.get("If-Range"),
                             if_none_match=h.get("If-None-Match"),
                             content_type=content_type, extra_headers=headers)
    response = flask.Response(iter(download), status=download.status,
                              headers=download.headers, direct_passthrough=True)
    response.call_on_close(download.close)
    return response

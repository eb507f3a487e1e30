"""An upload API whose storage is chosen by configuration: a local directory or
S3, through the same ``ContentStore`` API.  Standard library only (WSGI), plus
boto3 for S3.

    STORE=./blobs python examples/s3_upload_api.py
    STORE=s3://bucket/blobs AWS_ENDPOINT_URL=http://127.0.0.1:8333 \\
        AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... python examples/s3_upload_api.py

    curl -T photo.jpg -H 'X-Filename: photo.jpg' http://127.0.0.1:8000/upload
    curl http://127.0.0.1:8000/blobs/<sha256>

``POST``/``PUT /upload`` streams the request body into the store (hashing,
size limit and the optional ``X-Sha256`` check happen in the same pass;
nothing is visible unless every check passed) and answers with JSON.
``GET /blobs/<sha256>`` streams the object back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import make_server

import streamstore as ss

MAX_UPLOAD = 100 * 1024 * 1024

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def open_store(location: str) -> ss.ContentStore:
    """A directory, or ``s3://bucket[/prefix]`` (boto3 reads AWS_* variables)."""
    if location.startswith("s3://"):
        import boto3

        from streamstore.s3 import S3Backend

        bucket, _, prefix = location[len("s3://"):].partition("/")
        return ss.ContentStore(S3Backend(boto3.client("s3"), bucket, prefix))
    return ss.ContentStore(location)


# What each failure means to an HTTP client.
ERRORS: list[tuple[type[BaseException], str]] = [
    (ss.TooLargeError, "413 Content Too Large"),
    (ss.HashMismatchError, "422 Unprocessable Content"),
    (ss.PartialWriteError, "400 Bad Request"),
    (ss.SourceError, "400 Bad Request"),
    (ss.InvalidDigestError, "400 Bad Request"),
    (ss.ObjectNotFoundError, "404 Not Found"),
    (ss.DiskFullError, "507 Insufficient Storage"),
    (ss.StorageError, "503 Service Unavailable"),
]


def _json(start_response: StartResponse, status: str, doc: dict[str, Any]) -> list[bytes]:
    payload = json.dumps(doc).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(payload)))])
    return [payload]


def body(stream: Any, length: int) -> Iterator[bytes]:
    """The request body: WSGI allows reading ``CONTENT_LENGTH`` bytes, no more."""
    left = length
    while left:
        block = stream.read(min(left, 256 * 1024))
        if not block:
            return  # the client hung up: expected_size reports a partial upload
        left -= len(block)
        yield block


def make_app(store: ss.ContentStore) -> Callable[[dict[str, Any], StartResponse],
                                                 Iterable[bytes]]:
    """The WSGI application over ``store``."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        try:
            if path == "/upload" and method in ("POST", "PUT"):
                return upload(environ, start_response)
            if path.startswith("/blobs/") and method == "GET":
                return download(path[len("/blobs/"):], start_response)
            return _json(start_response, "404 Not Found", {"error": "no such route"})
        except ss.StreamStoreError as exc:
            status = next(s for cls, s in ERRORS if isinstance(exc, cls))
            return _json(start_response, status, {"error": str(exc)})

    def upload(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        length = environ.get("CONTENT_LENGTH")
        if not length:
            return _json(start_response, "411 Length Required", {"error": "no Content-Length"})
        filename = environ.get("HTTP_X_FILENAME")
        info = store.put(
            body(environ["wsgi.input"], int(length)),
            expected_size=int(length),
            expected_sha256=environ.get("HTTP_X_SHA256"),
            limit=MAX_UPLOAD,
            metadata={"filename": filename} if filename else None,
        )
        return _json(start_response, "201 Created" if info.created else "200 OK",
                     {"sha256": info.sha256, "size": info.size, "location": info.location,
                      "created": info.created, "metadata": info.metadata})

    def download(digest: str, start_response: StartResponse) -> Iterator[bytes]:
        size = store.info(digest).size
        reader = store.open(digest)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])

        def chunks() -> Iterator[bytes]:
            with reader:
                while block := reader.read(1024 * 1024):
                    yield block

        return chunks()

    return app


def main() -> None:
    store = open_store(os.environ.get("STORE", "./blobs"))
    port = int(os.environ.get("PORT", "8000"))
    with make_server("127.0.0.1", port, make_app(store)) as server:
        print(f"serving {store.location} on http://127.0.0.1:{port}")
        server.serve_forever()


if __name__ == "__main__":
    main()

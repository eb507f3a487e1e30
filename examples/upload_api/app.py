"""Example 3: an upload API on FastAPI.

    POST /v1/uploads                  raw body or multipart/form-data -> 201 + JSON
    GET|HEAD /v1/uploads/{sha256}     the stored bytes (Range, If-None-Match)
    GET /v1/uploads/{sha256}/info     size and metadata

Uploads stream straight into a content store -- no spool, SHA-256 computed on
the fly, the size limit enforced as the bytes arrive -- and errors map to
HTTP: 413 too large, 400 malformed/truncated/digest mismatch, 507 no space
(refused up front when a raw body's Content-Length cannot fit), 503 when
too many uploads are in flight.

A raw body may declare its digest with ``X-Content-SHA256: <hex>``; a
multipart form may send a ``sha256`` field before the file.  Other form
fields before the file become the object's metadata (with the file name and
content type).

Run it (one command, from a checkout with ``pip install -e '.[web]' fastapi uvicorn``)::

    python examples/upload_api/app.py
    curl -F title=cat -F file=@cat.jpg http://127.0.0.1:8000/v1/uploads
    curl --data-binary @big.iso -H 'Content-Type: application/octet-stream' \\
         http://127.0.0.1:8000/v1/uploads

Configuration, from the environment:

    UPLOAD_API_BACKEND         local (default) or s3
    UPLOAD_API_ROOT            the local store's directory (default ./uploads)
    UPLOAD_API_RESERVE         bytes a local store keeps free (default 0)
    UPLOAD_API_S3_BUCKET       the bucket (s3)
    UPLOAD_API_S3_PREFIX       a key prefix (s3, default "")
    UPLOAD_API_S3_ENDPOINT     an S3-compatible endpoint URL (s3, optional);
                               credentials come from boto3's usual variables
    UPLOAD_API_MAX_BYTES       largest upload (default 1 GiB)
    UPLOAD_API_MAX_CONCURRENT  uploads in flight before 503 (default 8)
    UPLOAD_API_HOST, UPLOAD_API_PORT   where to listen (127.0.0.1:8000)
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from streamstore import ContentStore, ObjectInfo
from streamstore.starlette import (
    add_error_handlers,
    object_response,
    request_length,
    request_parts,
)


@dataclass(frozen=True)
class Settings:
    backend: str = "local"
    root: str = "./uploads"
    reserve: int = 0
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_endpoint: str = ""
    max_bytes: int = 1 << 30
    max_concurrent: int = 8
    host: str = "127.0.0.1"
    port: int = 8000

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        def get(name: str, default: Any) -> Any:
            value = env.get(f"UPLOAD_API_{name.upper()}")
            return default if value is None else type(default)(value)

        return cls(**{name: get(name, default) for name, default in vars(cls()).items()})


def expected_digest(value: str | None) -> str | None:
    """A client's declared SHA-256 (hex), or None; 400 if it is not one."""
    if value is not None and re.fullmatch(r"[0-9a-fA-F]{64}", value) is None:
        raise HTTPException(400, "a SHA-256 is 64 hexadecimal characters")
    return value


def make_store(settings: Settings) -> ContentStore:
    """The content store the configuration asks for."""
    if settings.backend == "local":
        return ContentStore(settings.root, reserve=settings.reserve)
    if settings.backend == "s3":
        import boto3  # only the S3 configuration needs it

        from streamstore.s3 import S3Backend

        client = boto3.client("s3", endpoint_url=settings.s3_endpoint or None)
        return ContentStore(S3Backend(client, settings.s3_bucket, prefix=settings.s3_prefix))
    raise ValueError(f"UPLOAD_API_BACKEND must be local or s3, not {settings.backend!r}")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    store = make_store(settings)
    slots = asyncio.Semaphore(settings.max_concurrent)
    app = FastAPI(title="streamstore upload API")
    add_error_handlers(app)  # TooLargeError 413, MultipartError 400, DiskFullError 507, ...

    async def upload_slot() -> AsyncIterator[None]:
        if slots.locked():  # answer at once rather than queue a body we cannot take
            raise HTTPException(503, "too many uploads in flight", {"Retry-After": "1"})
        async with slots:
            yield

    def answer(info: ObjectInfo) -> JSONResponse:
        location = f"/v1/uploads/{info.sha256}"
        return JSONResponse(
            {"sha256": info.sha256, "size": info.size, "created": info.created,
             "location": location, "metadata": info.metadata},
            status_code=201, headers={"Location": location})

    @app.post("/v1/uploads", status_code=201, dependencies=[Depends(upload_slot)])
    async def upload(request: Request) -> Response:
        content_type = request.headers.get("content-type", "application/octet-stream")
        if not content_type.lower().startswith("multipart/"):
            info = await store.aput(
                request.stream(), limit=settings.max_bytes,
                expected_size=request_length(request),
                expected_sha256=expected_digest(request.headers.get("x-content-sha256")),
                metadata={"content_type": content_type})
            return answer(info)
        fields: dict[str, str] = {}
        async for part in request_parts(request, max_parts=64, max_field_size=64 * 1024):
            if not part.is_file:
                fields[part.name] = await part.text()
                continue
            expected = expected_digest(fields.pop("sha256", None))
            metadata = {**fields, "filename": part.filename,
                        "content_type": part.content_type or "application/octet-stream"}
            info = await store.aput(part, limit=settings.max_bytes, expected_sha256=expected,
                                    metadata=metadata)
            return answer(info)
        raise HTTPException(400, "the form has no file part")

    @app.api_route("/v1/uploads/{sha256}", methods=["GET", "HEAD"])
    async def download(sha256: str, request: Request) -> Response:
        return await object_response(request, store, sha256)

    @app.get("/v1/uploads/{sha256}/info")
    async def info(sha256: str) -> dict[str, Any]:
        found = await asyncio.to_thread(store.info, sha256)
        return {"sha256": found.sha256, "size": found.size, "metadata": found.metadata}

    app.state.store = store
    return app


def main() -> None:
    import uvicorn

    settings = Settings.from_env()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()

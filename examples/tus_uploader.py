"""An uploader service: resumable tus uploads into a content store, streaming
downloads with Range support, a health endpoint, and 507 when space runs low.

Run it (one command; needs ``pip install 'streamstore[test]'`` or just
starlette + uvicorn, plus boto3 and the s3 extra for an S3 store)::

    python examples/tus_uploader.py --store ./store --port 8000
    python examples/tus_uploader.py --store s3://bucket/prefix \\
        --s3-endpoint http://127.0.0.1:8333 --staging ./staging

Every option can also come from the environment (``TUS_STORE``,
``TUS_STAGING``, ``TUS_S3_ENDPOINT``, ``TUS_MAX_SIZE``, ``TUS_RESERVE``,
``TUS_EXPIRE_AFTER``; AWS credentials the usual way for S3).

Endpoints:

- ``/files/``: the tus 1.0.0 endpoint (``streamstore.tus.TusApp``); any tus
  client works, e.g. ``tus-js-client`` with ``endpoint: "http://host:8000/files/"``.
- ``GET``/``HEAD /objects/<sha256>``: the stored bytes, streamed in constant
  memory, with ``Range: bytes=...`` (one range), ``ETag`` and the filename and
  type the uploader sent (``Upload-Metadata`` keys ``filename``, ``filetype``).
- ``GET /health``: upload and storage statistics as JSON.

Uploads are refused with 507 Insufficient Storage when the staging
filesystem would have less than ``--reserve`` bytes free (checked when an
upload is created, against its declared length); a local store refuses a
commit that would leave less than that too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from streamstore import ContentStore, InvalidDigestError, ObjectNotFoundError
from streamstore.tus import CompletedUpload, TusApp

logger = logging.getLogger("tus_uploader")

CHUNK = 256 * 1024
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass
class Config:
    """Where things are stored and the limits, from flags or the environment."""

    store: str = "./store"
    """A directory (local store) or ``s3://bucket[/prefix]``."""
    staging: str | None = None
    """Where uploads in progress are kept (required for S3)."""
    s3_endpoint: str | None = None
    max_size: int | None = None
    reserve: int = 1024**3
    expire_after: float = 86400.0


def open_store(config: Config) -> ContentStore:
    """The content store the configuration names: local now, S3 by URL."""
    if not config.store.startswith("s3://"):
        return ContentStore(config.store, reserve=config.reserve)
    try:
        import boto3

        from streamstore.s3 import S3Backend
    except ImportError as exc:
        raise SystemExit(f"an s3:// store needs boto3 and streamstore.s3 "
                         f"(pip install 'streamstore[s3]'): {exc}") from None
    bucket, _, prefix = config.store[len("s3://"):].partition("/")
    client = boto3.client("s3", endpoint_url=config.s3_endpoint)
    return ContentStore(S3Backend(client, bucket, prefix))


class Uploader:
    """The service: a TusApp plus downloads and health, in one Starlette app."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = open_store(config)
        self.completed = 0
        self.bytes_committed = 0
        self.tus = TusApp(self.store, max_size=config.max_size,
                          expire_after=config.expire_after, reserve=config.reserve,
                          staging=config.staging, on_complete=self.on_complete)
        self.app = Starlette(
            routes=[
                Mount("/files", app=self.tus),
                Route("/objects/{digest}", self.download, methods=["GET", "HEAD"]),
                Route("/health", self.health),
            ],
            lifespan=contextlib.asynccontextmanager(self.lifespan),
        )

    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Starlette does not pass lifespan events to mounted apps: sweep here."""
        await self.tus.sweep()
        yield
        await self.tus.aclose()

    async def on_complete(self, upload: CompletedUpload) -> None:
        self.completed += 1
        self.bytes_committed += upload.size
        logger.info("stored %s (%d bytes, %s) from upload %s", upload.sha256, upload.size,
                    upload.metadata.get("filename", "no name"), upload.id)

    async def health(self, request: Request) -> Response:
        stats = await self.tus.stats()
        storage: dict[str, Any] = {"location": self.store.location,
                                   "reserve": self.config.reserve}
        if self.store.root is not None:
            st = await asyncio.to_thread(os.statvfs, self.store.root)
            free: int | None = st.f_bavail * st.f_frsize
            storage.update(free_bytes=free, objects=await asyncio.to_thread(len, self.store))
        else:
            free = stats.staging_free
        storage["staging_free_bytes"] = stats.staging_free
        low = free is not None and free < self.config.reserve
        storage["low_space"] = low
        body = {
            "status": "degraded" if low else "ok",
            "uploads": {
                "active": stats.uploads_active,
                "bytes_received": stats.bytes_received,
                "bytes_staged": stats.bytes_staged,
                "completed_kept": stats.uploads_completed,
                "expired_pending_sweep": stats.uploads_expired,
                "completed_since_start": self.completed,
                "bytes_committed_since_start": self.bytes_committed,
            },
            "storage": storage,
        }
        return JSONResponse(body, status_code=200)

    async def download(self, request: Request) -> Response:
        digest = request.path_params["digest"]
        try:
            info = await asyncio.to_thread(self.store.info, digest)
        except (ObjectNotFoundError, InvalidDigestError):
            return Response("no such object\n", status_code=404)
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{info.sha256}"',
                   "Cache-Control": "public, max-age=31536000, immutable"}
        filetype = str(info.metadata.get("filetype") or "application/octet-stream")
        filename = info.metadata.get("filename")
        if isinstance(filename, str) and filename:
            safe = re.sub(r'[^\w.\- ]', "_", filename)
            headers["Content-Disposition"] = f'attachment; filename="{safe}"'
        start, end, status = 0, info.size, 200
        wanted = request.headers.get("range")
        if_range = request.headers.get("if-range")
        if wanted is not None and if_range in (None, f'"{info.sha256}"'):
            parsed = parse_range(wanted, info.size)
            if parsed is None:
                headers["Content-Range"] = f"bytes */{info.size}"
                return Response(status_code=416, headers=headers)
            if isinstance(parsed, tuple):
                start, end = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.size}"
        headers["Content-Length"] = str(end - start)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=filetype)
        return StreamingResponse(self.read(info.sha256, start, end), status_code=status,
                                 headers=headers, media_type=filetype)

    async def read(self, digest: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start`` to ``end`` of an object, one chunk in memory at a time,
        every read in a worker thread."""
        f = await asyncio.to_thread(self.store.open, digest)
        try:
            await asyncio.to_thread(f.seek, start)
            left = end - start
            while left > 0:
                chunk = await asyncio.to_thread(f.read, min(CHUNK, left))
                if not chunk:
                    raise RuntimeError(f"object {digest} ended {left} bytes early")
                left -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(f.close)


def parse_range(value: str, size: int) -> tuple[int, int] | bool | None:
    """One ``bytes=`` range as (start, end exclusive); None if it cannot be
    satisfied; False to ignore it and send everything (several ranges or a
    malformed header: RFC 9110 lets a server ignore Range)."""
    match = _RANGE_RE.fullmatch(value.strip())
    if match is None or match.groups() == ("", ""):
        return False
    first, last = match.groups()
    if not first:  # the last N bytes
        n = int(last)
        return (max(size - n, 0), size) if n > 0 and size > 0 else None
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if start >= size or end <= start:
        return None
    return (start, end)


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=env("TUS_STORE", "./store"),
                        help="a directory, or s3://bucket/prefix")
    parser.add_argument("--staging", default=env("TUS_STAGING"),
                        help="directory for uploads in progress (default: <store>/tus; "
                             "required for S3)")
    parser.add_argument("--s3-endpoint", default=env("TUS_S3_ENDPOINT"))
    parser.add_argument("--max-size", type=int, default=env("TUS_MAX_SIZE"))
    parser.add_argument("--reserve", type=int, default=int(env("TUS_RESERVE", str(1024**3))),
                        help="bytes to keep free; uploads that do not fit get 507")
    parser.add_argument("--expire-after", type=float,
                        default=float(env("TUS_EXPIRE_AFTER", "86400")))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--fd", type=int, default=None,
                        help="serve on this inherited listening socket (socket activation)")
    args = parser.parse_args(argv)
    config = Config(store=args.store, staging=args.staging, s3_endpoint=args.s3_endpoint,
                    max_size=None if args.max_size is None else int(args.max_size),
                    reserve=args.reserve, expire_after=args.expire_after)
    return config, args


def main(argv: list[str] | None = None) -> None:
    config, args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    service = Uploader(config)
    server_config = uvicorn.Config(service.app, host=args.host, port=args.port,
                                   log_level="warning", proxy_headers=False)
    server = uvicorn.Server(server_config)
    if args.fd is not None:
        server.run(sockets=[socket.socket(fileno=args.fd)])
    else:
        server.run()


if __name__ == "__main__":
    main()

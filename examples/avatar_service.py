"""Example 2: an avatar upload service (Starlette on uvicorn).

    PUT /users/{user_id}/avatar     the raw image as the request body
    GET /users/{user_id}/avatar     the current avatar

What it guarantees, and how streamstore does each part:

- the body is taken in 8 KiB chunks (``chunk_size=8192``: the checks, the hash and the
  writes see at most 8 KiB at a time, however the server split it) and never held whole;
- at least 100 B and at most 10 MiB, enforced while streaming (``limit=SizeLimit``):
  413 the moment the 10 MiB are crossed, 400 for a body under 100 B -- and a
  declared Content-Length over 10 MiB is refused before a byte is read;
- JPEG, PNG, WebP or GIF by magic bytes, whatever the chunking (``SniffHook``
  with ``sniff_image_type``): 415 otherwise;
- the old avatar is replaced atomically: the new file is written beside it and
  renamed over it only after every check passed, so a reader sees the old
  image or the new one, never a mix, and a failed upload leaves the old one;
- the metadata row in SQLite is committed together with the file through the
  transaction hooks: ``on_finish`` begins the transaction and writes the row
  (holding SQLite's write lock), the rename happens, ``on_commit`` commits,
  ``on_abort`` rolls back.  No row without its file, no file without its row,
  and the row always describes the file on disk -- also with concurrent
  uploads for one user, which the write lock puts in one order;
- progress is logged every 256 KiB (``ProgressHook``); 507 when the disk is
  full, 503 past ``--max-uploads`` uploads in flight.

One window is left, and no two-resource commit closes it: a crash between the
rename and the COMMIT leaves the new file with the old row (or none, for a
first avatar).  ``AvatarService.reconcile()``, run at start-up, repairs that
by hashing the few files whose row disagrees.

Run it with one command:

    python examples/avatar_service.py --root /tmp/avatars --port 8000
    curl -T me.png http://127.0.0.1:8000/users/alice/avatar
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import re
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from streamstore import (
    DiskFullError,
    Hook,
    PartialWriteError,
    Progress,
    ProgressHook,
    SizeLimit,
    SniffHook,
    SourceError,
    StoreResult,
    TooLargeError,
    TooSmallError,
    astore_from_reader,
    sniff_image_type,
)

__all__ = ["AvatarService", "UnsupportedImage", "create_app", "main"]

MIN_BYTES = 100
MAX_BYTES = 10 * 1024 * 1024
CHUNK = 8 * 1024
PROGRESS_STEP = 256 * 1024
SNIFF_BYTES = 12
_USER_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS avatars (
    user_id TEXT PRIMARY KEY,
    sha256  TEXT NOT NULL,
    size    INTEGER NOT NULL,
    mime    TEXT NOT NULL,
    updated REAL NOT NULL
)
"""

log = logging.getLogger("avatar")


class UnsupportedImage(Exception):
    """The body does not start like a JPEG, PNG, WebP or GIF image (HTTP 415)."""


class ImageCheck:
    """The magic-bytes check: remembers the type it found."""

    def __init__(self) -> None:
        self.mime: str | None = None

    def __call__(self, head: bytes) -> None:
        self.mime = sniff_image_type(head)
        if self.mime is None:
            raise UnsupportedImage("not a JPEG, PNG, WebP or GIF image")


class AvatarRow(Hook):
    """Ties the avatars row to the file: written in ``on_finish`` inside a
    transaction that holds SQLite's write lock, committed in ``on_commit``
    (after the rename), rolled back in ``on_abort``."""

    def __init__(self, db: Path, user_id: str, check: ImageCheck) -> None:
        self.db = db
        self.user_id = user_id
        self.check = check
        self.conn: sqlite3.Connection | None = None

    def on_finish(self, result: StoreResult) -> None:
        """Begin the transaction (waiting for the write lock) and write the row."""
        # Hooks run in worker threads, one call at a time: the connection
        # may move between threads but is never used by two at once.
        conn = self.conn = sqlite3.connect(self.db, timeout=60, isolation_level=None,
                                           check_same_thread=False)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO avatars (user_id, sha256, size, mime, updated) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(user_id) DO UPDATE SET sha256 = excluded.sha256,"
            " size = excluded.size, mime = excluded.mime, updated = excluded.updated",
            (self.user_id, result.sha256, result.size, self.check.mime, time.time()))

    def on_commit(self, result: StoreResult) -> None:
        """The file is in place: commit the row."""
        assert self.conn is not None
        try:
            self.conn.execute("COMMIT")
        finally:
            self.conn.close()

    def on_abort(self, exc: BaseException) -> None:
        """The file was not replaced: undo the row."""
        if self.conn is not None:
            try:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
            finally:
                self.conn.close()


class AvatarService:
    """Avatars as files in ``root/avatars/`` with their rows in ``root/avatars.db``."""

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True,
                 max_uploads: int = 64) -> None:
        self.root = Path(root)
        self.files = self.root / "avatars"
        self.files.mkdir(parents=True, exist_ok=True)
        self.db = self.root / "avatars.db"
        self.durable = durable
        self.slots = asyncio.Semaphore(max_uploads)
        with sqlite3.connect(self.db) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
        conn.close()

    def path(self, user_id: str) -> Path:
        """Where ``user_id``'s avatar is."""
        return self.files / user_id

    async def put(self, user_id: str, body: Any, declared: int | None) -> dict[str, Any]:
        """Store ``body`` (an async iterable of bytes) as ``user_id``'s avatar."""
        check = ImageCheck()

        def progress(p: Progress) -> None:
            log.info("avatar %s: %d bytes received", user_id, p.bytes_done)

        options: dict[str, Any] = {
            "limit": SizeLimit(min_bytes=MIN_BYTES, max_bytes=MAX_BYTES),
            "chunk_size": CHUNK,
            "hooks": [SniffHook(SNIFF_BYTES, check), AvatarRow(self.db, user_id, check)],
            "progress": ProgressHook(progress, step=PROGRESS_STEP),
            "overwrite": True,
            "durable": self.durable,
            "mode": 0o644,
        }
        if declared is not None:
            options["expected_size"] = declared
        result = await astore_from_reader(body, self.path(user_id), **options)
        return {"user": user_id, "sha256": result.sha256, "size": result.size,
                "mime": check.mime}

    def row(self, user_id: str) -> tuple[str, int, str] | None:
        """``(sha256, size, mime)`` of ``user_id``'s row, if any."""
        with sqlite3.connect(self.db) as conn:
            found = conn.execute("SELECT sha256, size, mime FROM avatars WHERE user_id = ?",
                                 (user_id,)).fetchone()
        conn.close()
        return None if found is None else (found[0], found[1], found[2])

    def reconcile(self) -> int:
        """Repair what a crash between a rename and its COMMIT left: make every
        row describe its file (hashing only the files whose size or time
        disagrees with their row), add rows for files without one.  Returns
        how many rows were changed."""
        changed = 0
        with sqlite3.connect(self.db) as conn:
            rows = {r[0]: r for r in conn.execute(
                "SELECT user_id, sha256, size, updated FROM avatars")}
            for entry in os.scandir(self.files):
                if not entry.is_file() or not _USER_RE.fullmatch(entry.name):
                    continue  # temp files of uploads in flight, or of a crash
                st = entry.stat()
                row = rows.pop(entry.name, None)
                if row is not None and row[2] == st.st_size and st.st_mtime <= row[3]:
                    continue
                digest, head = _hash_file(Path(entry.path))
                if row is not None and row[1] == digest:
                    continue
                mime = sniff_image_type(head) or "application/octet-stream"
                conn.execute(
                    "INSERT INTO avatars (user_id, sha256, size, mime, updated)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT(user_id) DO UPDATE SET"
                    " sha256 = excluded.sha256, size = excluded.size, mime = excluded.mime,"
                    " updated = excluded.updated",
                    (entry.name, digest, st.st_size, mime, time.time()))
                changed += 1
            for user_id in rows:  # a row whose file is gone
                conn.execute("DELETE FROM avatars WHERE user_id = ?", (user_id,))
                changed += 1
        conn.close()
        return changed


def _hash_file(path: Path) -> tuple[str, bytes]:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
        hasher.update(head)
        while chunk := f.read(1024 * 1024):
            hasher.update(chunk)
    return hasher.hexdigest(), head


def _open_avatar(path: Path) -> tuple[BinaryIO, bytes, int]:
    """The avatar opened (one inode: one avatar's bytes, even if it is replaced
    while being sent), its first bytes, and its size."""
    f = open(path, "rb")
    try:
        return f, f.read(SNIFF_BYTES), os.fstat(f.fileno()).st_size
    except BaseException:
        f.close()
        raise


def _error(status: int, message: str, **headers: str) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(service: AvatarService) -> Starlette:
    """The Starlette application serving ``service``."""

    async def put_avatar(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        if not _USER_RE.fullmatch(user_id):
            return _error(404, "no such user")
        declared: int | None = None
        if "content-length" in request.headers:
            try:
                declared = int(request.headers["content-length"])
            except ValueError:
                return _error(400, "bad Content-Length")
        if service.slots.locked():
            return _error(503, "too many uploads in progress", **{"Retry-After": "5"})
        async with service.slots:
            try:
                stored = await service.put(user_id, request.stream(), declared)
            except TooLargeError:
                return _error(413, f"an avatar is at most {MAX_BYTES} bytes")
            except TooSmallError:
                return _error(400, f"an avatar is at least {MIN_BYTES} bytes")
            except UnsupportedImage as exc:
                return _error(415, str(exc))
            except DiskFullError:
                return _error(507, "no space left for avatars", **{"Retry-After": "60"})
            except (PartialWriteError, SourceError):
                return _error(400, "the upload broke off")
        log.info("avatar %s: stored %s (%d bytes)", user_id, stored["sha256"], stored["size"])
        return JSONResponse(stored)

    async def get_avatar(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        if not _USER_RE.fullmatch(user_id):
            return _error(404, "no such user")
        try:
            f, head, size = await run_in_threadpool(_open_avatar, service.path(user_id))
        except FileNotFoundError:
            return _error(404, "no avatar")

        def body() -> Iterator[bytes]:  # Starlette iterates it in a worker thread
            with f:
                yield head
                while chunk := f.read(64 * 1024):
                    yield chunk

        return StreamingResponse(body(), media_type=sniff_image_type(head)
                                 or "application/octet-stream",
                                 headers={"Content-Length": str(size)})

    return Starlette(routes=[
        Route("/users/{user_id}/avatar", put_avatar, methods=["PUT"]),
        Route("/users/{user_id}/avatar", get_avatar, methods=["GET"]),
    ])


def main(argv: list[str] | None = None) -> int:
    """Serve avatars: ``python examples/avatar_service.py --root DIR --port 8000``."""
    import uvicorn

    parser = argparse.ArgumentParser(description="An avatar upload service.")
    parser.add_argument("--root", required=True, help="where avatars and their database live")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-uploads", type=int, default=64,
                        help="uploads in flight before answering 503")
    parser.add_argument("--no-fsync", action="store_true",
                        help="skip the fsyncs (faster, not crash-safe)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    service = AvatarService(args.root, durable=not args.no_fsync, max_uploads=args.max_uploads)
    repaired = service.reconcile()
    if repaired:
        log.warning("reconciled %d avatar rows with their files", repaired)
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ContentStore: a content-addressed blob store on the core pipeline.

Layout under ``root``::

    objects/ab/cd/abcd...(64 hex)        the object, read-only (0o444)
    objects/ab/cd/abcd....json           its metadata (optional), read-only
    tmp/.streamstore-tmp.<pid>.<hex>.object   temp files of puts in flight

A put streams into a temp file in ``tmp/`` through the core's
:class:`~streamstore._core.Operation` (one pass: hash, checks, hooks, fsync)
and commits it with ``commit_to``: a hard link to ``objects/ab/cd/<digest>``,
exclusive, so an object only ever appears complete and an existing one wins
(dedupe).  Shard directories are created on demand and never removed.

Metadata is written beside the object by :func:`store_from_reader` (atomic
replace) and removed before its object by :meth:`ContentStore.delete`, both
under an ``flock`` on the shard directory, so metadata never outlives its
object.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ._async import arun_operation, run_in_thread
from ._core import ErrorMapper, Operation, check_path
from ._errors import (
    InvalidDigestError,
    ObjectNotFoundError,
    StorageError,
    storage_error,
)
from ._hooks import ProgressHook
from ._pending import fsync_directory, sweep_temp
from ._sync import run_operation, store_from_reader
from ._types import AsyncSource, Hook, ProgressCallback, SizeLimit, Source, StoreResult

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["ContentStore", "ObjectInfo", "check_digest"]

OBJECT_MODE = 0o444
_DIGEST_RE = re.compile(r"[0-9a-fA-F]{64}")
_OBJECT_NAME_RE = re.compile(r"[0-9a-f]{64}")
_SHARD_RE = re.compile(r"[0-9a-f]{2}")
_VERIFY_CHUNK = 1024 * 1024
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def check_digest(digest: object) -> str:
    """Return ``digest`` lowercased if it is exactly 64 hex characters.

    Raises :class:`InvalidDigestError` otherwise (``TypeError`` for a non-str),
    before anything touches the filesystem: a key can never name a path.
    """
    if not isinstance(digest, str):
        raise TypeError(f"object digest must be a str, got {type(digest).__name__}")
    if _DIGEST_RE.fullmatch(digest) is None:
        raise InvalidDigestError(digest=digest)
    return digest.lower()


def _encode_metadata(metadata: object) -> bytes | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
    for key in metadata:
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be str, got {key!r}")
    try:
        text = json.dumps(dict(metadata), ensure_ascii=False, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be JSON-serializable: {exc}") from exc
    return text.encode("utf-8")


@dataclass(frozen=True)
class ObjectInfo:
    """A stored object: its ``sha256`` (lowercase hex, also its name), ``size``
    in bytes, ``path`` on disk and ``metadata`` (``{}`` when none was stored)."""

    sha256: str
    size: int
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)


class ContentStore:
    """A content-addressed blob store in the directory ``root``.

    Each object is stored once, named by its SHA-256, verified on the way in,
    read-only on disk, with optional JSON metadata beside it.  Safe under
    concurrent writers (threads and processes) and crashes: an object only
    ever appears complete.  ``root``'s layout (``objects/``, ``tmp/``) is
    created if missing; ``root``'s parent must exist.  ``durable=False`` skips
    the fsyncs (faster, not crash-safe).
    """

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True) -> None:
        raw = check_path(root, "root")
        if raw == "":
            raise ValueError("root must be a directory path, got ''")
        self.root = Path(raw)
        self.durable = bool(durable)
        self._objects = self.root / "objects"
        self._tmp = self.root / "tmp"
        for directory in (self.root, self._objects, self._tmp):
            self._mkdir(directory)

    def __repr__(self) -> str:
        return f"ContentStore({str(self.root)!r}, durable={self.durable})"

    # -- layout ---------------------------------------------------------------

    def _mkdir(self, directory: Path) -> None:
        try:
            directory.mkdir()
        except FileExistsError:
            if not directory.is_dir():
                raise StorageError(
                    errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory), dest=directory,
                    message=f"cannot use {directory} in a content store") from None
            return
        except OSError as exc:
            raise storage_error(exc, dest=directory,
                                message=f"cannot create {directory}") from exc
        if self.durable:
            try:
                fsync_directory(directory.parent)
            except OSError as exc:
                raise storage_error(exc, dest=directory,
                                    message=f"cannot fsync {directory.parent}") from exc

    def _shard(self, digest: str) -> Path:
        return self._objects / digest[:2] / digest[2:4]

    def _object_path(self, digest: str) -> Path:
        return self._shard(digest) / digest

    def _meta_path(self, digest: str) -> Path:
        return self._shard(digest) / f"{digest}.json"

    def _commit_path(self, result: StoreResult) -> Path:
        """``commit_to`` for the core: the object's path, its shard directories made."""
        shard = self._shard(result.sha256)
        self._mkdir(shard.parent)
        self._mkdir(shard)
        return shard / result.sha256

    def _shards(self) -> Iterator[Path]:
        for top in _scandir(self._objects):
            if _SHARD_RE.fullmatch(top.name) and top.is_dir(follow_symlinks=False):
                for sub in _scandir(Path(top.path)):
                    if _SHARD_RE.fullmatch(sub.name) and sub.is_dir(follow_symlinks=False):
                        yield Path(sub.path)

    @contextmanager
    def _locked(self, shard: Path) -> Iterator[bool]:
        """Hold an exclusive flock on ``shard`` (yields False if it does not exist)."""
        try:
            fd = os.open(shard, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        except FileNotFoundError:
            yield False
            return
        except OSError as exc:
            raise storage_error(exc, dest=shard, message=f"cannot open {shard}") from exc
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield True
        finally:
            os.close(fd)

    # -- put ------------------------------------------------------------------

    def _operation(
        self,
        expected_sha256: str | None,
        expected_size: int | None,
        limit: int | SizeLimit | None,
        progress: ProgressCallback | ProgressHook | None,
        hooks: Sequence[Hook],
        errors: ErrorMapper | None,
    ) -> Operation:
        return Operation(
            self._tmp / "object",
            expected_sha256=expected_sha256,
            expected_size=expected_size,
            limit=limit,
            progress=progress,
            hooks=hooks,
            errors=errors,
            durable=self.durable,
            mode=OBJECT_MODE,
            commit_to=self._commit_path,
        )

    def _finish(
        self, result: StoreResult, meta: bytes | None, errors: ErrorMapper | None
    ) -> ObjectInfo:
        digest = result.sha256
        if meta is None:
            metadata = self._read_metadata(digest)
        else:
            metadata = json.loads(meta)
            with self._locked(self._shard(digest)) as exists:
                # Under the shard lock a delete cannot run between the check and
                # the write, so metadata never outlives its object.
                if exists and os.path.lexists(result.path):
                    store_from_reader(meta, self._meta_path(digest), errors=errors,
                                      durable=self.durable, mode=OBJECT_MODE)
        return ObjectInfo(digest, result.size, result.path, metadata)

    def put(
        self,
        source: Source,
        *,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
        limit: int | SizeLimit | None = None,
        progress: ProgressCallback | ProgressHook | None = None,
        hooks: Sequence[Hook] = (),
        errors: ErrorMapper | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ObjectInfo:
        """Store ``source`` under its SHA-256 and return its :class:`ObjectInfo`.

        Sources and keywords are those of :func:`store_from_reader`, with the
        same checks, hooks (``on_finish`` sees the final object path), errors
        and ``errors=`` mapping.  Content already stored is deduplicated: the
        stream is still read and checked in full, then the existing object is
        kept.  ``metadata`` (a JSON-serializable mapping, checked before any
        byte is read) replaces the object's metadata; without it the existing
        metadata is kept.
        """
        meta = _encode_metadata(metadata)
        op = self._operation(expected_sha256, expected_size, limit, progress, hooks, errors)
        result = run_operation(op, source)
        return self._finish(result, meta, errors)

    async def aput(
        self,
        source: AsyncSource,
        *,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
        limit: int | SizeLimit | None = None,
        progress: ProgressCallback | ProgressHook | None = None,
        hooks: Sequence[Hook] = (),
        errors: ErrorMapper | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ObjectInfo:
        """Async twin of :meth:`put`, on the :func:`astore_from_reader` machinery:
        the source is read on the event loop, all disk work runs in a worker thread."""
        meta = _encode_metadata(metadata)
        op = self._operation(expected_sha256, expected_size, limit, progress, hooks, errors)
        result = await arun_operation(op, source)
        return await run_in_thread(self._finish, result, meta, errors)

    # -- read -----------------------------------------------------------------

    def _read_metadata(self, digest: str) -> dict[str, Any]:
        path = self._meta_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise storage_error(exc, dest=path, message=f"cannot read {path}") from exc
        try:
            value = json.loads(data)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise StorageError(errno.EIO, os.strerror(errno.EIO), str(path), dest=path,
                               message=f"metadata file {path} is corrupt")
        return value

    def _stat(self, digest: str) -> os.stat_result:
        path = self._object_path(digest)
        try:
            return os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(digest=digest, dest=path) from None
        except OSError as exc:
            raise storage_error(exc, dest=path, message=f"cannot inspect {path}") from exc

    def info(self, sha256: str) -> ObjectInfo:
        """The :class:`ObjectInfo` of a stored object; :class:`ObjectNotFoundError` if absent."""
        digest = check_digest(sha256)
        st = self._stat(digest)
        return ObjectInfo(digest, st.st_size, self._object_path(digest),
                          self._read_metadata(digest))

    def open(self, sha256: str) -> BinaryIO:
        """Open a stored object for reading (binary, read-only, a context manager).

        Objects only ever appear complete, so this never returns a partial one.
        """
        digest = check_digest(sha256)
        path = self._object_path(digest)
        try:
            return open(path, "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(digest=digest, dest=path) from None
        except OSError as exc:
            raise storage_error(exc, dest=path, message=f"cannot open {path}") from exc

    def path(self, sha256: str) -> Path:
        """The path of a stored object (read-only; :class:`ObjectNotFoundError` if absent)."""
        digest = check_digest(sha256)
        self._stat(digest)
        return self._object_path(digest)

    def __contains__(self, sha256: object) -> bool:
        digest = check_digest(sha256)
        return os.path.lexists(self._object_path(digest))

    def __iter__(self) -> Iterator[str]:
        """The digests of all stored objects (in no particular order)."""
        for shard in self._shards():
            prefix = shard.parent.name + shard.name
            for entry in _scandir(shard):
                name = entry.name
                if (
                    _OBJECT_NAME_RE.fullmatch(name)
                    and name.startswith(prefix)
                    and entry.is_file(follow_symlinks=False)
                ):
                    yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)

    # -- maintenance ----------------------------------------------------------

    def delete(self, sha256: str) -> bool:
        """Remove an object and its metadata; False if it was not stored.

        A put racing with the delete leaves either the complete object or none.
        """
        digest = check_digest(sha256)
        shard = self._shard(digest)
        with self._locked(shard) as exists:
            if not exists:
                return False
            # Metadata first: a crash in between leaves an object without
            # metadata, never metadata without its object.
            _unlink(self._meta_path(digest))
            removed = _unlink(self._object_path(digest))
            if removed and self.durable:
                try:
                    fsync_directory(shard)
                except OSError as exc:
                    raise storage_error(exc, dest=shard,
                                        message=f"cannot fsync {shard}") from exc
            return removed

    def verify(self, sha256: str | None = None) -> list[str]:
        """Re-hash one object (or all) and return the digests whose bytes no longer
        match their name, with constant memory.  An empty list means all is well."""
        if sha256 is not None:
            digest = check_digest(sha256)
            self._stat(digest)
            digests: Iterator[str] | list[str] = [digest]
        else:
            digests = iter(self)
        buffer = bytearray(_VERIFY_CHUNK)
        corrupt = []
        for digest in digests:
            actual = self._hash(digest, buffer)
            if actual is not None and actual != digest:
                corrupt.append(digest)
        return corrupt

    def _hash(self, digest: str, buffer: bytearray) -> str | None:
        path = self._object_path(digest)
        view = memoryview(buffer)
        hasher = hashlib.sha256()
        try:
            with open(path, "rb", buffering=0) as f:
                readinto = f.readinto
                update = hasher.update
                while n := readinto(view):
                    update(view[:n])
        except FileNotFoundError:
            return None  # deleted while verifying
        except OSError as exc:
            raise storage_error(exc, dest=path, message=f"cannot read {path}") from exc
        return hasher.hexdigest()

    def sweep(self, older_than: float = 3600.0) -> int:
        """Remove orphaned temp files of dead writers (older than ``older_than``
        seconds) in ``tmp/`` and the shard directories; return how many.

        Built on :func:`sweep_temp`: a live writer's temp is never removed.
        """
        removed = sweep_temp(self._tmp, older_than=older_than)
        for shard in self._shards():
            removed += sweep_temp(shard, older_than=older_than)
        return removed


def _scandir(directory: Path) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            yield from entries
    except FileNotFoundError:
        return


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise storage_error(exc, dest=path, message=f"cannot remove {path}") from exc
    return True

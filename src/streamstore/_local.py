"""The local backend of :class:`~streamstore.ContentStore`: objects on a filesystem.

Layout under ``root``::

    objects/ab/cd/abcd...(64 hex)        the object, read-only (0o444)
    objects/ab/cd/abcd....json           its metadata (optional), read-only
    tmp/.streamstore-tmp.<pid>.<hex>.object   temp files of puts in flight

A put streams into a temp file in ``tmp/`` (a :class:`LocalObjectSink`) and
publishes it with an exclusive hard link to ``objects/ab/cd/<digest>``, so an
object only ever appears complete and an existing one wins (dedupe).  Shard
directories are created at the commit, after every check passed, and never
removed.  Metadata is written once, beside its object, under an ``flock`` on
the shard directory, which :meth:`LocalBackend.delete` takes too, so metadata
never outlives its object.
"""

from __future__ import annotations

import collections
import errno
import functools
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from ._core import Ingest
from ._errors import (
    DestinationExistsError,
    ObjectNotFoundError,
    StorageError,
    storage_error,
)
from ._pending import Fds, FileSink, TempSink, fsync_directory, open_into, sweep_temp
from ._sync import run_ingest
from ._types import StoreResult

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["OBJECT_MODE", "LocalBackend", "LocalObjectSink", "unlink"]

T = TypeVar("T")
_drain: Callable[[Iterator[None]], object] = functools.partial(collections.deque, maxlen=0)

OBJECT_MODE = 0o444
_OBJECT_NAME_RE = re.compile(r"[0-9a-f]{64}")
_SHARD_RE = re.compile(r"[0-9a-f]{2}")
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _scandir(directory: Path) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            yield from entries
    except FileNotFoundError:
        return


def unlink(path: Path) -> bool:
    """Remove the file at ``path``: False if it was not there; StorageError on failure."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise storage_error(exc, dest=path, message=f"cannot remove {path}") from exc
    return True


class LocalBackend:
    """Objects, metadata and temp files under one local directory ``root``."""

    def __init__(self, root: Path, *, durable: bool = True, create: bool = True,
                 reserve: int = 0) -> None:
        self.root = Path(os.path.abspath(root))
        self.durable = durable
        self.reserve = reserve
        self.location = str(self.root)
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        if create:
            for directory in (self.root, self.objects, self.tmp):
                self.mkdir(directory)
        elif not self.objects.is_dir():
            raise StorageError(
                errno.ENOENT, os.strerror(errno.ENOENT), str(self.root), dest=self.root,
                message=f"{root}: not a content store (no objects/ directory)")

    # -- layout -------------------------------------------------------------------

    def mkdir(self, directory: Path) -> bool:
        """Create ``directory`` (its parent must exist), fsyncing the parent
        when durable; False if it already was a directory."""
        try:
            directory.mkdir()
        except FileExistsError:
            if not directory.is_dir():
                raise StorageError(
                    errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory), dest=directory,
                    message=f"cannot use {directory} in a content store") from None
            return False
        except OSError as exc:
            raise storage_error(exc, dest=directory,
                                message=f"cannot create {directory}") from exc
        if self.durable:
            try:
                fsync_directory(directory.parent)
            except OSError as exc:
                raise storage_error(exc, dest=directory,
                                    message=f"cannot fsync {directory.parent}") from exc
        return True

    def shard(self, digest: str) -> Path:
        """The directory holding ``digest``'s object."""
        return self.objects / digest[:2] / digest[2:4]

    def object_path(self, digest: str) -> Path:
        """Where ``digest``'s object is (or would be)."""
        return self.shard(digest) / digest

    def meta_path(self, digest: str) -> Path:
        """Where ``digest``'s metadata is (or would be)."""
        return self.shard(digest) / f"{digest}.json"

    def shards(self) -> Iterator[Path]:
        """Every shard directory."""
        for top in _scandir(self.objects):
            if _SHARD_RE.fullmatch(top.name) and top.is_dir(follow_symlinks=False):
                for sub in _scandir(Path(top.path)):
                    if _SHARD_RE.fullmatch(sub.name) and sub.is_dir(follow_symlinks=False):
                        yield Path(sub.path)

    def under_lock(self, shard: Path, fn: Callable[[bool], T]) -> T:
        """``fn(exists)`` holding an exclusive flock on ``shard`` (``exists`` is
        False, and no lock is taken, if the shard does not exist).

        A plain try/finally rather than a context manager: an interrupt landing
        as a generator-based ``__enter__`` returns would leave the lock held by
        a suspended generator until the garbage collector runs.
        """
        fds = Fds()
        try:
            try:
                fd = open_into(fds, shard, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
            except FileNotFoundError:
                return fn(False)
            except OSError as exc:
                raise storage_error(exc, dest=shard, message=f"cannot open {shard}") from exc
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            return fn(True)
        finally:
            # close_all, inlined: an interrupt at the entry of a function
            # called here would skip it and keep the lock until the garbage
            # collector ran -- a hang for the next put in this process.
            pending: BaseException | None = None
            while fds and fds[-1] is not None:
                try:
                    fds.insert(0, None)  # type: ignore[arg-type]
                    _drain(map(os.close, iter(fds.pop, None)))
                except BaseException as exc:
                    pending = exc if pending is None else pending
            del fds[:]
            if pending is not None:
                raise pending

    # -- the backend interface ------------------------------------------------------

    def sink(self, *, metadata: bytes | None = None,
             expected_sha256: str | None = None) -> LocalObjectSink:
        """A sink that publishes at the stream's content address."""
        if not self.tmp.is_dir():
            self.mkdir(self.tmp)
        return LocalObjectSink(self, metadata)

    def stat(self, digest: str) -> int:
        """The size of ``digest``'s object; ObjectNotFoundError if absent."""
        path = self.object_path(digest)
        try:
            return os.stat(path).st_size
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(digest=digest, dest=path) from None
        except OSError as exc:
            raise storage_error(exc, dest=path, message=f"cannot inspect {path}") from exc

    def contains(self, digest: str) -> bool:
        """True if ``digest``'s object is stored."""
        return os.path.lexists(self.object_path(digest))

    def metadata(self, digest: str) -> dict[str, Any]:
        """``digest``'s metadata (``{}`` when none was stored)."""
        path = self.meta_path(digest)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
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

    def open(self, digest: str) -> BinaryIO:
        """The object, opened for reading (seekable, unbuffered)."""
        path = self.object_path(digest)
        try:
            return open(path, "rb", buffering=0)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(digest=digest, dest=path) from None
        except OSError as exc:
            raise storage_error(exc, dest=path, message=f"cannot open {path}") from exc

    def path(self, digest: str) -> Path:
        """The local path of ``digest``'s object."""
        return self.object_path(digest)

    def digests(self) -> Iterator[str]:
        """The digests of all stored objects (in no particular order)."""
        for shard in self.shards():
            prefix = shard.parent.name + shard.name
            for entry in _scandir(shard):
                name = entry.name
                if (
                    _OBJECT_NAME_RE.fullmatch(name)
                    and name.startswith(prefix)
                    and entry.is_file(follow_symlinks=False)
                ):
                    yield name

    def delete(self, digest: str) -> bool:
        """Remove an object and its metadata; False if it was not stored."""
        shard = self.shard(digest)

        def delete(exists: bool) -> bool:
            if not exists:
                return False
            # Metadata first: a crash in between leaves an object without
            # metadata, never metadata without its object.
            unlink(self.meta_path(digest))
            removed = unlink(self.object_path(digest))
            if removed and self.durable:
                try:
                    fsync_directory(shard)
                except OSError as exc:
                    raise storage_error(exc, dest=shard,
                                        message=f"cannot fsync {shard}") from exc
            return removed

        return self.under_lock(shard, delete)

    def sweep(self, older_than: float) -> int:
        """Remove orphaned temp files in ``tmp/`` and the shard directories."""
        removed = sweep_temp(self.tmp, older_than=older_than) if self.tmp.is_dir() else 0
        for shard in self.shards():
            removed += sweep_temp(shard, older_than=older_than)
        return removed

    def write_metadata(self, digest: str, meta: bytes) -> None:
        """Write ``meta`` beside ``digest``'s object unless metadata exists already."""
        def write(exists: bool) -> None:
            # Under the shard lock a delete cannot run between the check and
            # the write, so metadata never outlives its object.
            if exists and os.path.lexists(self.object_path(digest)):
                sink = FileSink(self.meta_path(digest), overwrite=False, durable=self.durable,
                                mode=OBJECT_MODE)
                try:
                    run_ingest(Ingest(sink, dest=sink.path), meta)
                except DestinationExistsError:
                    pass  # the first writer's metadata wins

        self.under_lock(self.shard(digest), write)


class LocalObjectSink(TempSink):
    """Streams into ``tmp/`` and publishes by an exclusive link at the content
    address (an existing object wins).  After the commit, ``created`` says
    whether this store added the object and ``metadata`` is its metadata."""

    def __init__(self, backend: LocalBackend, metadata: bytes | None) -> None:
        super().__init__(backend.root, str(backend.tmp), "object", durable=backend.durable,
                         mode=OBJECT_MODE, reserve=backend.reserve)
        self.backend = backend
        self._meta = metadata
        self._digest: str | None = None
        self.created = False
        """True once a commit added the object (False: it was already stored)."""
        self.metadata: dict[str, Any] = {}
        """The object's metadata after the commit."""

    def prepare(self, result: StoreResult) -> StoreResult:
        """Flush, and fill in the object's final path."""
        self.flush()
        self._digest = result.sha256
        path = self.backend.object_path(result.sha256)
        return StoreResult(path, result.size, result.sha256, str(path))

    def _final_result(self, result: StoreResult) -> StoreResult:
        if self._digest is None:
            self._digest = result.sha256
        path = self.backend.object_path(result.sha256)
        return StoreResult(path, result.size, result.sha256, str(path))

    def publish(self) -> None:
        """Create the shard directories, then link the temp at the object's path."""
        digest = self._digest
        temp = self._temp[0]
        assert digest is not None and temp is not None
        backend = self.backend
        shard = backend.shard(digest)
        target = shard / digest
        try:
            backend.mkdir(shard.parent)
            backend.mkdir(shard)
            os.link(temp, target, src_dir_fd=self._fds[0], follow_symlinks=False)
            self.created = True
        except FileExistsError:
            self.created = False  # the content is stored already: it wins
        except OSError as exc:
            raise storage_error(exc, dest=target,
                                message=f"cannot link the object into {shard}") from exc

    def _published(self) -> bool:
        assert self._digest is not None
        if os.fstat(self._fds[1]).st_nlink >= 2:
            self.created = True
        return os.path.lexists(self.backend.object_path(self._digest))

    def _tidy_after_publish(self) -> None:
        temp = self._temp[0]
        if temp is not None:
            try:
                os.unlink(temp, dir_fd=self._fds[0])
            except FileNotFoundError:
                pass
            self._temp[0] = None

    def _sync_directory(self) -> None:
        if self.created and self._digest is not None:
            fsync_directory(self.backend.shard(self._digest))

    def _after_visible(self, result: StoreResult) -> None:
        if self._meta is not None:
            self.backend.write_metadata(result.sha256, self._meta)
        self.metadata = self.backend.metadata(result.sha256)

"""Durable local staging of tus uploads in progress.  Synchronous: every call
here runs in a worker thread, never on the event loop.

Layout of the staging directory, one pair of files per upload::

    <id>.data     the bytes received; only the first ``offset`` of them count
    <id>.info     the record (JSON): offset, length, metadata, state, expiry
    .streamstore-tmp.*    temp files of record writes in flight

A record is replaced atomically with the core's :class:`~streamstore.FileSink`
(temp file, fsync, rename, directory fsync), so it is always either the old
or the new one, never a torn mix.  The data file is appended to and fsynced
before the record that counts its bytes is written: a crash leaves at most
bytes past the recorded offset, which the next writer truncates.

Whoever changes an upload holds an exclusive ``flock`` on its data file.
The kernel drops the lock when its holder dies, however it dies, so a crash
never leaves an upload locked.  A completed upload keeps only its record
(until it expires); its data file is gone.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ._errors import StorageError, storage_error
from ._local import unlink
from ._pending import WRITEBACK_STEP, _start_writeback, fsync, fsync_directory, sweep_temp
from ._sync import store_from_reader

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "COMMITTED",
    "DONE",
    "UPLOADING",
    "Appender",
    "Busy",
    "DataFile",
    "Record",
    "Staging",
    "SweepReport",
]

logger = logging.getLogger("streamstore.tus")

UPLOADING = "uploading"
"""Bytes are still arriving (a completed *partial* upload stays here too)."""
COMMITTED = "committed"
"""The object is in the store; ``on_complete`` has not returned yet."""
DONE = "done"
"""The object is in the store and ``on_complete`` returned."""
_STATES = (UPLOADING, COMMITTED, DONE)

_ID_RE = re.compile(r"[0-9a-f]{32}")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_READ_CHUNK = 1024 * 1024
_IOV_MAX = 1024
_LOCK_POLL = 0.02
_RECORD_VERSION = 1


class Busy(Exception):
    """Another process holds the upload's lock."""


@dataclass
class Record:
    """What the server knows about one upload (the ``.info`` file).

    ``offset`` counts the bytes acknowledged or checkpointed; ``epoch``
    changes when the upload's bytes are reset to zero, so a hash of an older
    prefix is never reused.  ``expires`` is a Unix time (``None``: never).
    """

    id: str
    length: int | None
    offset: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    metadata_header: str = ""
    concat: str | None = None
    parts: list[str] | None = None
    created: float = 0.0
    updated: float = 0.0
    expires: float | None = None
    state: str = UPLOADING
    sha256: str | None = None
    epoch: int = 0

    @property
    def partial(self) -> bool:
        """A partial upload of the concatenation extension."""
        return self.concat == "partial"

    @property
    def finished(self) -> bool:
        """No more bytes will be accepted: committed, or a complete partial upload."""
        return self.state != UPLOADING or (self.partial and self.offset == self.length)

    def encode(self) -> bytes:
        """The record as UTF-8 JSON."""
        data = asdict(self)
        data["v"] = _RECORD_VERSION
        return json.dumps(data, ensure_ascii=False, sort_keys=True).encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes) -> Record:
        """Parse an encoded record; ValueError if it is not one."""
        data = json.loads(raw)
        if not isinstance(data, dict) or data.pop("v", None) != _RECORD_VERSION:
            raise ValueError("not a tus upload record")
        try:
            record = cls(**data)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        _check_record(record)
        return record


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_record(record: Record) -> None:
    ok = (
        isinstance(record.id, str) and _ID_RE.fullmatch(record.id) is not None
        and (record.length is None or _is_uint(record.length))
        and _is_uint(record.offset) and _is_uint(record.epoch)
        and (record.length is None or record.offset <= record.length)
        and isinstance(record.metadata, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in record.metadata.items())
        and record.state in _STATES
        and (record.state == UPLOADING or isinstance(record.sha256, str))
    )
    if not ok:
        raise ValueError("invalid tus upload record")


def _pwrite_all(fd: int, chunks: list[bytes], offset: int) -> int:
    """Write every chunk at ``offset`` onwards (short writes retried); bytes written."""
    views = [memoryview(chunk) for chunk in chunks if chunk]
    total = 0
    pwritev = getattr(os, "pwritev", None)
    while views:
        if pwritev is not None:
            n = pwritev(fd, views[:_IOV_MAX], offset + total)
        else:  # pragma: no cover - platforms without pwritev
            n = os.pwrite(fd, views[0], offset + total)
        if n <= 0:
            raise OSError(errno.EIO, "write returned no progress")
        total += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]
    return total


def _pread_into(fd: int, buffer: memoryview, offset: int) -> int:
    preadv = getattr(os, "preadv", None)
    if preadv is not None:
        return int(preadv(fd, [buffer], offset))
    data = os.pread(fd, len(buffer), offset)  # pragma: no cover - platforms without preadv
    buffer[: len(data)] = data  # pragma: no cover
    return len(data)  # pragma: no cover


class DataFile:
    """An upload's data file, open and exclusively locked (``flock``) until :meth:`close`."""

    def __init__(self, fd: int, path: Path, *, durable: bool) -> None:
        self.fd = fd
        self.path = path
        self.durable = durable

    def _error(self, exc: OSError, what: str) -> StorageError:
        return storage_error(exc, dest=self.path, message=f"cannot {what} {self.path}")

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes (bytes past the recorded offset are not kept)."""
        try:
            if os.fstat(self.fd).st_size != size:
                os.ftruncate(self.fd, size)
        except OSError as exc:
            raise self._error(exc, "truncate") from exc

    def write(self, offset: int, chunks: list[bytes]) -> int:
        """Write ``chunks`` at ``offset``; the number of bytes written."""
        try:
            return _pwrite_all(self.fd, chunks, offset)
        except OSError as exc:
            raise self._error(exc, "write to") from exc

    def sync(self) -> None:
        """fsync the data (when durable)."""
        if self.durable:
            try:
                fsync(self.fd)
            except OSError as exc:
                raise self._error(exc, "fsync") from exc

    def hash_range(self, update: Callable[[memoryview], object], start: int, end: int) -> None:
        """Feed bytes ``start`` to ``end`` of the file to ``update``."""
        buffer = memoryview(bytearray(min(_READ_CHUNK, max(end - start, 1))))
        position = start
        try:
            while position < end:
                n = _pread_into(self.fd, buffer[: min(len(buffer), end - position)], position)
                if n <= 0:
                    raise OSError(errno.EIO, f"{self.path} is shorter than its recorded offset "
                                             f"{end} (ends at {position})")
                update(buffer[:n])
                position += n
        except OSError as exc:
            raise self._error(exc, "read") from exc

    def reader(self, length: int) -> BinaryIO:
        """The first ``length`` bytes, as a new read-only file object."""
        try:
            raw = open(self.path, "rb", buffering=0)
        except OSError as exc:
            raise self._error(exc, "open") from exc
        return _Bounded(raw, length)  # type: ignore[return-value]

    def close(self) -> None:
        """Close the file, which releases the lock.  Idempotent."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class _Bounded:
    """A read-only view of the first ``length`` bytes of a file (``readinto``/``close``)."""

    def __init__(self, raw: Any, length: int) -> None:
        self.raw = raw
        self.left = length

    def readinto(self, buffer: memoryview) -> int:
        if self.left <= 0:
            return 0
        view = memoryview(buffer)[: min(len(buffer), self.left)]
        n = self.raw.readinto(view)
        if not n:
            raise OSError(errno.EIO, "staged upload data ended early")
        self.left -= n
        return int(n)

    def close(self) -> None:
        self.raw.close()


class Appender:
    """Appends one request body to an upload: writes, then hashes, each batch.

    ``hasher`` is the running SHA-256 of the whole upload (a copy: it becomes
    the upload's only once the offset is recorded); ``checksum`` the
    request's own ``Upload-Checksum`` hasher, if any.  Calls come one at a
    time (a worker thread), so ``pos`` and the hashers are never shared.
    """

    def __init__(self, data: DataFile, offset: int, hasher: Any, checksum: Any | None) -> None:
        self.data = data
        self.pos = offset
        self.hasher = hasher
        self.checksum = checksum
        self._writeback_at = offset + WRITEBACK_STEP

    def write(self, chunks: list[bytes]) -> None:
        """Append ``chunks`` and hash them."""
        self.pos += self.data.write(self.pos, chunks)
        if self.data.durable and self.pos >= self._writeback_at:
            # start writing back now, so the fsync that acknowledges has less to do
            self._writeback_at = self.pos + WRITEBACK_STEP
            _start_writeback(self.data.fd)
        update = self.hasher.update
        for chunk in chunks:
            update(chunk)
        if self.checksum is not None:
            for chunk in chunks:
                self.checksum.update(chunk)


@dataclass
class SweepReport:
    """What one sweep of the staging directory did and found."""

    removed: list[str] = field(default_factory=list)
    """Ids of expired uploads removed."""
    orphans: int = 0
    """Orphaned data and temp files removed."""
    to_notify: list[Record] = field(default_factory=list)
    """Committed uploads whose ``on_complete`` has not returned yet."""


class Staging:
    """The staging directory of one :class:`~streamstore.tus.TusApp`."""

    def __init__(self, directory: Path, *, durable: bool) -> None:
        self.directory = directory
        self.durable = durable

    def ensure(self) -> None:
        """Create the directory if it is missing (its parent must exist)."""
        try:
            self.directory.mkdir(exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, dest=self.directory,
                                message=f"cannot create {self.directory}") from exc

    def data_path(self, upload_id: str) -> Path:
        """Where an upload's bytes are."""
        return self.directory / f"{upload_id}.data"

    def info_path(self, upload_id: str) -> Path:
        """Where an upload's record is."""
        return self.directory / f"{upload_id}.info"

    @staticmethod
    def new_id() -> str:
        """A fresh upload id: 128 random bits in hex."""
        return secrets.token_hex(16)

    # -- records ------------------------------------------------------------------

    def read(self, upload_id: str) -> Record | None:
        """The upload's record; None if there is none (or it is unreadable)."""
        path = self.info_path(upload_id)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise storage_error(exc, dest=path, message=f"cannot read {path}") from exc
        try:
            record = Record.decode(raw)
        except ValueError:
            logger.warning("ignoring the corrupt tus upload record %s", path)
            return None
        return record if record.id == upload_id else None

    def write(self, record: Record) -> None:
        """Replace the upload's record atomically (and durably, when durable)."""
        store_from_reader(record.encode(), self.info_path(record.id), durable=self.durable)

    # -- data files ---------------------------------------------------------------

    def create(self, record: Record) -> DataFile:
        """Create the upload: its data file (exclusive, locked), then its record."""
        path = self.data_path(record.id)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_NOFOLLOW,
                         0o600)
        except OSError as exc:
            raise storage_error(exc, dest=path, message=f"cannot create {path}") from exc
        data = DataFile(fd, path, durable=self.durable)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            self.write(record)  # its directory fsync also persists the data file's name
        except BaseException:
            data.close()
            unlink(path)
            raise
        return data

    def lock(self, upload_id: str, timeout: float) -> DataFile | None:
        """Open and lock the upload's data file, waiting up to ``timeout`` seconds
        for another process to release it (then :class:`Busy`).  None if the
        data file does not exist (any more)."""
        path = self.data_path(upload_id)
        try:
            fd = os.open(path, os.O_RDWR | _O_CLOEXEC | _O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise storage_error(exc, dest=path, message=f"cannot open {path}") from exc
        data = DataFile(fd, path, durable=self.durable)
        try:
            if not _flock(fd, timeout):
                raise Busy(upload_id)
            if os.fstat(fd).st_nlink == 0:  # removed while we waited for the lock
                data.close()
                return None
        except BaseException:
            data.close()
            raise
        return data

    def remove(self, upload_id: str) -> bool:
        """Remove the record, then the data (a crash in between leaves an
        orphaned data file, which :meth:`sweep` removes).  False if neither existed."""
        removed = unlink(self.info_path(upload_id))
        removed = unlink(self.data_path(upload_id)) or removed
        if removed and self.durable:
            try:
                fsync_directory(self.directory)
            except OSError as exc:
                raise storage_error(exc, dest=self.directory,
                                    message=f"cannot fsync {self.directory}") from exc
        return removed

    def drop_data(self, upload_id: str) -> None:
        """Remove a finished upload's data file (its record stays)."""
        unlink(self.data_path(upload_id))

    def free_bytes(self) -> int | None:
        """Bytes free for an unprivileged writer on the staging filesystem (None: unknown)."""
        try:
            st = os.statvfs(self.directory)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    # -- scans --------------------------------------------------------------------

    def ids(self) -> Iterator[str]:
        """The ids of all uploads that have a record."""
        try:
            with os.scandir(self.directory) as entries:
                names = [entry.name for entry in entries]
        except FileNotFoundError:
            return
        for name in names:
            stem, dot, suffix = name.partition(".")
            if dot and suffix == "info" and _ID_RE.fullmatch(stem):
                yield stem

    def records(self) -> Iterator[Record]:
        """Every readable record."""
        for upload_id in self.ids():
            record = self.read(upload_id)
            if record is not None:
                yield record

    def data_size(self, upload_id: str) -> int:
        """The data file's size in bytes (0 if it has none)."""
        try:
            return os.stat(self.data_path(upload_id)).st_size
        except OSError:
            return 0

    def sweep(self, now: float, busy: Collection[str], orphan_age: float) -> SweepReport:
        """Remove expired uploads and orphaned files; list the committed uploads
        still to be notified.  Uploads in ``busy`` (in use in this process) and
        uploads locked by another process are left alone."""
        report = SweepReport()
        report.orphans += sweep_temp(self.directory, older_than=orphan_age)
        with_record = set()
        for upload_id in list(self.ids()):
            with_record.add(upload_id)
            if upload_id in busy:
                continue
            record = self.read(upload_id)
            if record is None:
                continue
            if record.expires is not None and now >= record.expires:
                if self._remove_expired(upload_id, now):
                    report.removed.append(upload_id)
                continue
            if record.state != UPLOADING:
                self.drop_data(upload_id)  # left behind by a crash after the commit
                if record.state == COMMITTED:
                    report.to_notify.append(record)
        report.orphans += self._sweep_orphaned_data(with_record, busy, now, orphan_age)
        return report

    def _remove_expired(self, upload_id: str, now: float) -> bool:
        try:
            data = self.lock(upload_id, 0.0)  # None for a finished upload: no data file
        except Busy:
            return False
        try:
            record = self.read(upload_id)  # again, under the lock: it may have moved on
            if record is None or record.expires is None or now < record.expires:
                return False
            return self.remove(upload_id)
        finally:
            if data is not None:
                data.close()

    def _sweep_orphaned_data(self, with_record: set[str], busy: Collection[str], now: float,
                             orphan_age: float) -> int:
        removed = 0
        try:
            with os.scandir(self.directory) as entries:
                names = [entry.name for entry in entries if entry.name.endswith(".data")]
        except FileNotFoundError:
            return 0
        for name in names:
            upload_id = name[: -len(".data")]
            if not _ID_RE.fullmatch(upload_id) or upload_id in with_record or upload_id in busy:
                continue
            path = self.directory / name
            try:
                if now - os.stat(path).st_mtime < orphan_age:
                    continue  # possibly an upload being created right now
                data = self.lock(upload_id, 0.0)
            except (OSError, Busy):
                continue
            if data is None:
                continue
            try:
                if not os.path.exists(self.info_path(upload_id)):
                    removed += unlink(path)
            finally:
                data.close()
        return removed


def _flock(fd: int, timeout: float) -> bool:
    """Take an exclusive flock on ``fd``, polling up to ``timeout`` seconds."""
    if fcntl is None:  # pragma: no cover - not POSIX
        return True
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True  # e.g. ENOLCK on a network filesystem: no cross-process lock
        if time.monotonic() >= deadline:
            return False
        time.sleep(_LOCK_POLL)



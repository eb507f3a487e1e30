"""The temp file: created exclusively beside the destination, written, flushed,
then committed by one atomic rename (or link, for exclusive create) and a
directory fsync -- or discarded.

Temp files are named ``.streamstore-tmp.<pid>.<16 hex>.<dest name>`` and the
writer holds an exclusive ``flock`` on its temp for as long as it lives, so
:func:`sweep_temp` can tell a crashed writer's orphan (lock free) from a live
writer's temp (lock held) even when the pid has been reused.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from ._errors import DestinationExistsError, StorageError, storage_error

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["TEMP_PREFIX", "PendingFile", "fsync_directory", "is_temp_name", "sweep_temp"]

TEMP_PREFIX = ".streamstore-tmp."
_TEMP_RE = re.compile(r"\A\.streamstore-tmp\.(\d+)\.[0-9a-f]{16}\.", re.DOTALL)
_NAME_BYTES = 96
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)

WRITEBACK_STEP = 4 * 1024 * 1024
"""A durable file's pages are handed to the kernel's writeback after every
this many bytes (a hint; the fsync before the rename is what guarantees)."""
_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range: Callable[[int, int, int, int], int] | None = None
_sync_file_range_loaded = False


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (ImportError, OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _start_writeback(fd: int) -> None:
    """Start (not wait for) writeback of ``fd``'s dirty pages: Linux
    ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` through ctypes, as the os module
    lacks it.  Elsewhere, or if it fails, do nothing: fsync does it all."""
    global _sync_file_range, _sync_file_range_loaded
    if not _sync_file_range_loaded:
        _sync_file_range_loaded = True
        _sync_file_range = _load_sync_file_range()
    if _sync_file_range is not None:
        if _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE) != 0:
            _sync_file_range = None  # e.g. ENOSYS or ESPIPE: stop trying


_fault_plans: list[Callable[[PendingFile], None]] = []
"""Test seam for :func:`streamstore.testing.fail_storage`: callables given each
new :class:`PendingFile` (they may replace its ``write``/``flush``/``commit``
or raise).  Empty outside tests; :meth:`PendingFile.create` checks it once."""


def is_temp_name(name: str) -> bool:
    """True if ``name`` has the shape of a streamstore temp file name."""
    return _TEMP_RE.match(name) is not None


def _temp_name(dest_name: str) -> str:
    short = os.fsdecode(os.fsencode(dest_name)[:_NAME_BYTES])
    return f"{TEMP_PREFIX}{os.getpid()}.{secrets.token_hex(8)}.{short}"


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """fsync a directory so that a rename or unlink inside it survives a crash."""
    fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems cannot fsync a directory; the rename is then as
        # durable as that filesystem makes it.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _lock(fd: int) -> bool:
    """Take the owner's lock; False if another process (a sweeper) holds it."""
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        # e.g. ENOLCK on some network filesystems: sweep_temp then falls back
        # to checking the pid in the name.
    return True


class PendingFile:
    """A temp file that becomes ``dest`` on :meth:`commit` or vanishes on :meth:`discard`.

    Use :meth:`create`; as a context manager, leaving the block without a
    commit discards the temp file.
    """

    def __init__(self, dest: Path, fd: int, temp_path: Path, *, overwrite: bool, durable: bool,
                 mode: int | None) -> None:
        self.dest = dest
        self.temp_path = temp_path
        self.overwrite = overwrite
        self.durable = durable
        self.mode = mode
        self._fd = fd
        self._done = False

    @classmethod
    def create(cls, dest: Path, *, overwrite: bool = True, durable: bool = True,
               mode: int | None = None) -> PendingFile:
        """Create the temp file in ``dest``'s directory; nothing is read or written yet."""
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise storage_error(exc, dest=dest, message=f"cannot inspect {dest}") from exc
        else:
            if stat.S_ISDIR(st.st_mode):
                raise StorageError(errno.EISDIR, os.strerror(errno.EISDIR), str(dest), dest=dest,
                                   message="destination is a directory")
            if not overwrite:
                raise DestinationExistsError(
                    errno.EEXIST, os.strerror(errno.EEXIST), str(dest), dest=dest,
                    message="destination exists and overwrite=False")
        directory = dest.parent
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
        perm = 0o666 if mode is None else 0o600
        for _ in range(16):
            temp_path = directory / _temp_name(dest.name)
            try:
                fd = os.open(temp_path, flags, perm)
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    message = (f"parent directory {directory} does not exist "
                               "(streamstore does not create directories)")
                elif exc.errno == errno.ENOTDIR:
                    message = f"parent {directory} is not a directory"
                else:
                    message = f"cannot create a temp file in {directory}"
                raise storage_error(exc, dest=dest, message=message) from exc
            try:
                if not _lock(fd) or os.fstat(fd).st_nlink == 0:  # a sweeper got here first
                    os.close(fd)
                    continue
            except BaseException:
                os.close(fd)
                raise
            pending = cls(dest, fd, temp_path, overwrite=overwrite, durable=durable, mode=mode)
            if _fault_plans:  # test seam only (streamstore.testing.fail_storage)
                _apply_fault_plans(pending)
            return pending
        raise StorageError(errno.EEXIST, os.strerror(errno.EEXIST), str(directory), dest=dest,
                           message="could not create a unique temp file")

    def write(self, data: memoryview | bytes) -> None:
        """Write all of ``data`` at the current position."""
        fd = self._fd
        try:
            n = os.write(fd, data)
            if n < len(data):
                view = memoryview(data)
                while n < len(view):
                    n += os.write(fd, view[n:])
        except OSError as exc:
            raise storage_error(
                exc, dest=self.dest, message=f"cannot write to {self.dest}"
            ) from exc
        if self.durable:
            written = self._written = self._written + n
            if written >= self._writeback_at:
                self._writeback_at = written + WRITEBACK_STEP
                _start_writeback(fd)

    # Durable files count their bytes and, every WRITEBACK_STEP, ask the kernel
    # to start writing them back, so the final fsync finds little left to do.
    _written = 0
    _writeback_at = WRITEBACK_STEP

    def flush(self) -> None:
        """Apply ``mode`` and, when durable, fsync the data to stable storage."""
        try:
            if self.mode is not None:
                os.fchmod(self._fd, self.mode)
            if self.durable:
                os.fsync(self._fd)
        except OSError as exc:
            raise storage_error(exc, dest=self.dest, message=f"cannot flush {self.dest}") from exc

    def commit(self, target: Path | None = None) -> bool:
        """Make the temp file visible at ``dest`` atomically (call :meth:`flush` first).

        With ``target``, the file is committed there instead, exclusively (a
        hard link, so there is no check-then-rename window), and a file that
        already exists at ``target`` wins: it is kept, the temp file is removed
        and False is returned.  That is a content-addressed store's dedupe,
        where equal names mean equal bytes.  True when the file was committed.
        """
        if self._done:
            raise RuntimeError("PendingFile already committed or discarded")
        temp, dest = self.temp_path, self.dest if target is None else target
        created = True
        try:
            if target is not None:
                try:
                    os.link(temp, dest, follow_symlinks=False)
                except FileExistsError:
                    created = False
                os.unlink(temp)
            elif self.overwrite:
                os.replace(temp, dest)
            else:
                os.link(temp, dest, follow_symlinks=False)
                os.unlink(temp)
        except FileExistsError as exc:
            raise DestinationExistsError(
                errno.EEXIST, os.strerror(errno.EEXIST), str(dest), dest=dest,
                message="destination appeared while storing and overwrite=False") from exc
        except OSError as exc:
            raise storage_error(exc, dest=dest, message=f"cannot rename into {dest}") from exc
        self._done = True
        self._close()
        if self.durable and created:
            try:
                fsync_directory(dest.parent)
            except OSError as exc:
                raise storage_error(
                    exc, dest=dest,
                    message=f"{dest} was written but the directory fsync failed") from exc
        return created

    def discard(self) -> None:
        """Remove the temp file.  Idempotent; a no-op after :meth:`commit`."""
        if self._done:
            return
        self._done = True
        try:
            os.unlink(self.temp_path)
        except FileNotFoundError:
            pass
        finally:
            self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    @property
    def fileno(self) -> int:
        """The temp file's descriptor (-1 once closed)."""
        return self._fd

    def __enter__(self) -> PendingFile:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.discard()


def _apply_fault_plans(pending: PendingFile) -> None:
    try:
        for plan in tuple(_fault_plans):
            plan(pending)
    except BaseException:
        pending.discard()
        raise


def _owner_alive(path: str, pid: int) -> bool:
    """True if a live process still owns the temp file at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return True  # vanished or unreadable: leave it alone
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return True
            else:
                return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    finally:
        os.close(fd)


def sweep_temp(directory: str | os.PathLike[str], *, older_than: float = 3600.0) -> int:
    """Remove this library's orphaned temp files in ``directory``; return how many.

    A temp file is removed only if its name has streamstore's temp shape, it
    is a regular file not modified for ``older_than`` seconds, and no live
    process holds it (its writer's lock is gone).  A live writer's temp is
    never removed, however old.  Not recursive.
    """
    if isinstance(older_than, bool) or not isinstance(older_than, (int, float)):
        raise TypeError(f"older_than must be a number of seconds, got {older_than!r}")
    if older_than < 0:
        raise ValueError(f"older_than must be >= 0, got {older_than}")
    removed = 0
    now = time.time()
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _TEMP_RE.match(entry.name)
            if match is None:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < older_than:
                continue
            if _owner_alive(entry.path, int(match.group(1))):
                continue
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed += 1
    return removed

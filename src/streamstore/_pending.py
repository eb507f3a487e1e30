"""The local sink: a temp file created exclusively beside the destination,
written, flushed, then published by one atomic rename (or link, for exclusive
create) and a directory fsync -- or discarded.

Temp files are named ``.streamstore-tmp.<pid>.<16 hex>.<dest name>`` and the
writer holds an exclusive ``flock`` on its temp for as long as it lives, so
:func:`sweep_temp` can tell a crashed writer's orphan (lock free) from a live
writer's temp (lock held) even when the pid has been reused.

Every call is relative to the destination's directory, opened once when the
store starts, so a ``chdir`` in another thread (or the directory being
renamed) cannot split one store across two directories.

Interrupts: a ``KeyboardInterrupt`` (or any exception a signal handler or
profiler raises) may land between any two bytecodes.  Descriptors therefore
go straight from ``os.open`` into a list and from the list into ``os.close``
inside one C call (:func:`_open_into`, :func:`_close_all`), where no
interrupt can separate them; every cleanup step is idempotent; and
:attr:`TempSink.committed` finds out from the filesystem whether the publish
happened, whatever instruction was interrupted.
"""

from __future__ import annotations

import collections
import errno
import functools
import os
import re
import secrets
import stat
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from ._errors import DestinationExistsError, DiskFullError, StorageError, storage_error
from ._types import StoreResult, StrPath

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "TEMP_PREFIX",
    "FileSink",
    "TempSink",
    "check_dest",
    "Fds",
    "close_all",
    "fsync",
    "fsync_directory",
    "is_temp_name",
    "open_into",
    "sweep_temp",
]

TEMP_PREFIX = ".streamstore-tmp."
_TEMP_RE = re.compile(r"\A\.streamstore-tmp\.(\d+)\.[0-9a-f]{16}\.", re.DOTALL)
_NAME_BYTES = 96
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_DIR_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC

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


_F_FULLFSYNC = getattr(fcntl, "F_FULLFSYNC", None) if sys.platform == "darwin" else None


def fsync(fd: int) -> None:
    """Flush ``fd`` to stable storage: ``fsync``, or ``F_FULLFSYNC`` on macOS
    (where ``fsync`` only reaches the drive's volatile cache)."""
    if _F_FULLFSYNC is not None:
        try:
            fcntl.fcntl(fd, _F_FULLFSYNC)
            return
        except OSError:  # pragma: no cover - e.g. a filesystem without it
            pass
    os.fsync(fd)


class Fds(list[int]):
    """A list of descriptors that closes what it still holds when it is
    garbage-collected: the backstop for a cleanup an interrupt skipped."""

    __slots__ = ()

    def __del__(self) -> None:
        if self:
            try:
                close_all(self)
            except BaseException:
                pass


def open_into(holder: list[int], path: StrPath, flags: int, mode: int = 0o777, *,
              dir_fd: int | None = None) -> int:
    """``os.open`` whose descriptor is appended to ``holder`` in the same C call.

    ``fd = os.open(...)`` can lose the descriptor: an exception raised by a
    signal handler after the call returns but before the assignment drops it.
    ``list.extend`` consumes the ``map`` without running bytecode in between,
    so the descriptor is in ``holder`` as soon as it exists.
    """
    opener = os.open if dir_fd is None else functools.partial(os.open, dir_fd=dir_fd)
    holder.extend(map(opener, (path,), (flags,), (mode,)))
    return holder[-1]


_END = None


def close_all(holder: list[int], keep: int = 0) -> None:
    """Close and remove the descriptors in ``holder`` after the first ``keep``, last first.

    Popping and closing happen inside one C call (``deque`` draining a ``map``
    over ``holder.pop``), so an interrupt can neither leak a popped descriptor
    nor close one twice (which could close a descriptor another thread just
    opened under the same number).  Interrupted before that call, it closes
    them anyway, then re-raises the interrupt.
    """
    first: BaseException | None = None
    while len(holder) > keep:
        try:
            _close_after(holder, keep)
        except BaseException as exc:
            if first is None:
                first = exc
    if first is not None:
        raise first


def _close_after(holder: list[int], keep: int) -> None:
    end: list[int | None] = holder  # type: ignore[assignment]
    end.insert(keep, _END)
    try:
        collections.deque(map(os.close, iter(end.pop, _END)), maxlen=0)
    finally:
        if len(end) > keep and end[keep] is _END:
            del end[keep]


def fsync_directory(directory: StrPath | int) -> None:
    """fsync a directory (a path, or an open descriptor) so that a rename or
    unlink inside it survives a crash."""
    holder = Fds()
    try:
        fd = directory if isinstance(directory, int) else open_into(holder, directory, _DIR_FLAGS)
        try:
            fsync(fd)
        except OSError as exc:
            # Some filesystems cannot fsync a directory; the rename is then as
            # durable as that filesystem makes it.
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
                raise
    finally:
        close_all(holder)


def is_temp_name(name: str) -> bool:
    """True if ``name`` has the shape of a streamstore temp file name."""
    return _TEMP_RE.match(name) is not None


def _temp_name(dest_name: str) -> str:
    short = os.fsdecode(os.fsencode(dest_name)[:_NAME_BYTES])
    return f"{TEMP_PREFIX}{os.getpid()}.{secrets.token_hex(8)}.{short}"


def check_dest(value: object, name: str = "dest") -> tuple[Path, str, str]:
    """``(path, directory, file name)`` of a destination path given as str,
    bytes or os.PathLike; TypeError/ValueError if it is not a file path."""
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__}")
    raw = os.fspath(value)
    if not isinstance(raw, str):
        raw = os.fsdecode(raw)
    if "\0" in raw:
        raise ValueError(f"{name} contains a NUL byte")
    directory, base = os.path.split(raw)
    if base in ("", ".", ".."):
        raise ValueError(f"{name} must name a file, not a directory: {raw!r}")
    return Path(raw), directory or ".", base


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


_fault_plans: list[Callable[[TempSink], None]] = []
"""Test seam for :func:`streamstore.testing.fail_storage`: callables given each
started :class:`TempSink` (they may replace its ``write``/``flush``/``publish``
or raise).  Empty outside tests."""

_live: weakref.WeakSet[TempSink] = weakref.WeakSet()


def _discard(fds: list[int], temp: list[str | None]) -> None:
    """Remove a temp file and close its descriptors (a sink's finalizer)."""
    name = temp[0]
    if name is not None and len(fds) == 2:
        temp[0] = None
        try:
            os.unlink(name, dir_fd=fds[0])
        except OSError:
            pass
    close_all(fds)


def _after_fork_in_child() -> None:
    # A forked child shares the parent's open temp files, and with them the
    # parent's flock: if the parent died, its orphans could not be swept while
    # the child lives.  The child drops its copies and may not touch the
    # parent's stores.
    for sink in list(_live):
        sink._disown()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

# Sink states.
_NEW, _OPEN, _COMMITTING, _PUBLISHED, _DONE = range(5)


class TempSink:
    """A temp file in a directory, published by :meth:`publish` (subclasses
    choose how) or removed by :meth:`abort`.  The machinery of every local sink.

    ``dest`` is the path errors name; the temp is created in ``directory``.
    """

    def __init__(self, dest: Path, directory: str, dest_name: str, *, durable: bool,
                 mode: int | None, reserve: int = 0) -> None:
        self.dest = dest
        self.reserve = reserve
        self.directory = directory
        self.dest_name = dest_name
        self.durable = durable
        self.mode = mode
        self._fds = Fds()  # [directory fd, temp fd]: see open_into/close_all
        self._temp: list[str | None] = [None]  # the temp file's name while it is ours
        # Dropped without commit() or abort() (an interrupt at the entry of a
        # context manager's __exit__, say): the garbage collector cleans up.
        weakref.finalize(self, _discard, self._fds, self._temp)
        self._ino: tuple[int, int] | None = None
        self._pid = os.getpid()
        self._state = _NEW
        self._final: StoreResult | None = None
        self._written = 0
        self._writeback_at = WRITEBACK_STEP
        self._synced = False
        self._visible_done = False
        self._temp_created: str | None = None

    # -- life cycle -----------------------------------------------------------------

    def _check_existing(self, st: os.stat_result | None) -> None:
        """Refuse a destination that exists in a form this sink must not replace."""
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            raise StorageError(errno.EISDIR, os.strerror(errno.EISDIR), str(self.dest),
                               dest=self.dest, message="destination is a directory")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            kind = _KINDS.get(stat.S_IFMT(st.st_mode), "special file")
            raise StorageError(
                errno.EINVAL, os.strerror(errno.EINVAL), str(self.dest), dest=self.dest,
                message=f"destination is a {kind}, not a regular file; streamstore replaces "
                        "only regular files and symlinks")

    def _stat_dest(self, dir_fd: int, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise storage_error(exc, dest=self.dest, message=f"cannot inspect {self.dest}") from exc

    def start(self, expected_size: int | None = None) -> None:
        """Open the directory, check the destination, create and lock the temp file."""
        if self._state != _NEW:
            raise RuntimeError(f"{type(self).__name__} is single-use: start() was called")
        self._state = _OPEN
        _live.add(self)
        fds = self._fds
        try:
            dir_fd = open_into(fds, self.directory, _DIR_FLAGS)
        except OSError as exc:
            directory = self.directory
            if exc.errno == errno.ENOENT:
                message = (f"parent directory {directory} does not exist "
                           "(streamstore does not create directories)")
            elif exc.errno == errno.ENOTDIR:
                message = f"parent {directory} is not a directory"
            else:
                message = f"cannot open the directory {directory}"
            raise storage_error(exc, dest=self.dest, message=message) from exc
        self._check_existing(self._stat_dest(dir_fd, self.dest_name))
        self._before_create(dir_fd)
        if expected_size is not None or self.reserve:
            self._admit(dir_fd, expected_size or 0)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
        perm = 0o666 if self.mode is None else 0o600
        for _ in range(16):
            name = self._temp[0] = _temp_name(self.dest_name)
            try:
                fd = open_into(fds, name, flags, perm, dir_fd=dir_fd)
            except FileExistsError:
                continue
            except OSError as exc:
                message = f"cannot create a temp file in {self.directory}"
                raise storage_error(exc, dest=self.dest, message=message) from exc
            if _lock(fd):
                st = os.fstat(fd)
                if st.st_nlink > 0:
                    self._ino = (st.st_dev, st.st_ino)
                    self._temp_created = name
                    if _fault_plans:  # test seam only (streamstore.testing.fail_storage)
                        for plan in tuple(_fault_plans):
                            plan(self)
                    return
            # A sweeper took the new file first: it removes it; try another name.
            self._temp[0] = None
            close_all(fds, keep=1)
        raise StorageError(errno.EEXIST, os.strerror(errno.EEXIST), self.directory,
                           dest=self.dest, message="could not create a unique temp file")

    @property
    def temp_path(self) -> Path | None:
        """The temp file's path once created (for messages and tests)."""
        name = self._temp_created
        return None if name is None else Path(self.directory, name)

    def _before_create(self, dir_fd: int) -> None:
        """Checks a subclass makes before the temp file exists."""

    def _admit(self, dir_fd: int, size: int) -> None:
        """DiskFullError unless the filesystem has ``size`` bytes free beyond ``reserve``."""
        try:
            st = os.fstatvfs(dir_fd)
        except OSError:
            return  # cannot tell: the writes will say
        free = st.f_bavail * st.f_frsize
        if size + self.reserve > free:
            wanted = f"{size} bytes"
            if self.reserve:
                wanted += f" plus a reserve of {self.reserve}"
            raise DiskFullError(
                errno.ENOSPC, os.strerror(errno.ENOSPC), self.directory, dest=self.dest,
                message=f"not enough space in {self.directory}: {wanted} wanted, "
                        f"{free} bytes free")

    def write(self, data: memoryview | bytes) -> None:
        """Write all of ``data`` at the current position."""
        try:
            fd = self._fds[1]
            n = os.write(fd, data)
            if n < len(data):
                view = memoryview(data)
                while n < len(view):
                    n += os.write(fd, view[n:])
        except IndexError:
            raise RuntimeError(f"{type(self).__name__}.write() before start() "
                               "or after commit()/abort()") from None
        except OSError as exc:
            raise storage_error(
                exc, dest=self.dest, message=f"cannot write to {self.dest}"
            ) from exc
        if self.durable:
            written = self._written = self._written + n
            if written >= self._writeback_at:
                self._writeback_at = written + WRITEBACK_STEP
                _start_writeback(fd)

    def flush(self) -> None:
        """Apply ``mode`` and, when durable, fsync the data to stable storage."""
        fd = self._fds[1]
        try:
            if self.mode is not None:
                os.fchmod(fd, self.mode)
            if self.durable:
                fsync(fd)
        except OSError as exc:
            raise storage_error(exc, dest=self.dest, message=f"cannot flush {self.dest}") from exc

    def prepare(self, result: StoreResult) -> StoreResult:
        """Flush (mode, fsync) and return ``result`` with the destination filled in."""
        self.flush()
        return StoreResult(self.dest, result.size, result.sha256, str(self.dest))

    def commit(self, result: StoreResult) -> StoreResult:
        """Publish the temp file (the commit point), then finish: close, fsync the directory."""
        if self._state != _OPEN or len(self._fds) != 2:
            raise RuntimeError(f"{type(self).__name__}.commit() needs a started, open sink")
        self._final = self._final_result(result)
        self._state = _COMMITTING
        self.publish()
        return self._after_publish(raise_errors=True)

    def _final_result(self, result: StoreResult) -> StoreResult:
        if result.path is None:
            result = StoreResult(self.dest, result.size, result.sha256, str(self.dest))
        return result

    def publish(self) -> None:
        """Make the temp file visible (subclasses: rename, link, ...)."""
        raise NotImplementedError

    def _published(self) -> bool:
        """Whether :meth:`publish` made the bytes visible (asked after an interrupt)."""
        raise NotImplementedError

    def _after_publish(self, *, raise_errors: bool) -> StoreResult:
        """The bytes are visible: drop the temp name, fsync the directory, run
        :meth:`_after_visible`, close.  Resumable: an interrupted run is
        finished by the next call (``committed``, ``abort``)."""
        final = self._final
        assert final is not None
        if self._state == _COMMITTING:
            self._state = _PUBLISHED
        if self._state == _PUBLISHED:
            error: OSError | None = None
            try:
                _live.discard(self)
                self._tidy_after_publish()
                if self.durable and not self._synced:
                    self._sync_directory()
                    self._synced = True
                if not self._visible_done:
                    self._after_visible(final)
                    self._visible_done = True
            except OSError as exc:
                error = exc
            self._state = _DONE
            close_all(self._fds)
            if error is not None and raise_errors:
                err = storage_error(
                    error, dest=self.dest,
                    message=f"{self.dest} was written but finishing the commit failed")
                err.committed = final  # type: ignore[attr-defined]
                raise err from error
        close_all(self._fds)
        return final

    def _tidy_after_publish(self) -> None:
        """Remove what publishing left behind (e.g. the temp name after a link)."""

    def _sync_directory(self) -> None:
        """fsync the directory the bytes were published in."""
        if self._fds:
            fsync_directory(self._fds[0])

    def _after_visible(self, result: StoreResult) -> None:
        """Work after the bytes are visible (a subclass writes metadata here)."""

    @property
    def committed(self) -> StoreResult | None:
        """The visible result if :meth:`commit` published before it was interrupted."""
        if self._state == _DONE:
            close_all(self._fds)
            return self._final
        if self._state == _PUBLISHED:
            return self._after_publish(raise_errors=False)
        if self._state != _COMMITTING or len(self._fds) != 2:
            return None
        try:
            published = self._published()
        except OSError:
            return None
        if not published:
            return None
        return self._after_publish(raise_errors=False)

    def abort(self) -> None:
        """Remove the temp file and close everything.  Idempotent; a no-op after
        a commit that published (and in a forked child)."""
        if self._state in (_COMMITTING, _PUBLISHED) and self.committed is not None:
            return
        if self._state == _DONE:
            close_all(self._fds)
            return
        name = self._temp[0]
        if name is not None and len(self._fds) == 2:
            try:
                os.unlink(name, dir_fd=self._fds[0])
            except FileNotFoundError:
                pass
            self._temp[0] = None
        self._state = _DONE
        _live.discard(self)
        close_all(self._fds)

    def _disown(self) -> None:
        if os.getpid() != self._pid and self._state != _DONE:
            self._state = _DONE
            self._temp[0] = None
            close_all(self._fds)

    def _same_inode(self, name: str) -> bool:
        try:
            st = os.stat(name, dir_fd=self._fds[0], follow_symlinks=False)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._ino


_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


class FileSink(TempSink):
    """The local file sink: the bytes become the file at ``path`` atomically.

    A temp file beside ``path`` takes the bytes; on commit it is fsynced and
    renamed over ``path`` (``overwrite=True``) or hard-linked to it
    (``overwrite=False``: exclusive create, race-free,
    :class:`~streamstore.DestinationExistsError` if ``path`` exists), then the
    directory is fsynced.  ``durable=False`` skips the fsyncs (still atomic,
    not crash-safe).  ``mode`` sets the final permission bits (default
    ``0o666 & ~umask``, as ``open()`` creates files).  ``reserve`` (bytes)
    is admission control: when the store's size is declared
    (``expected_size``), it is refused with :class:`~streamstore.DiskFullError`
    before a byte is read unless the filesystem has that size free plus
    ``reserve``; with a ``reserve`` and no declared size, unless ``reserve``
    bytes are free.  A symlink at ``path``
    is replaced, not followed; a directory, FIFO, socket or device node at
    ``path`` is refused before anything is read.

    ``store_from_reader(source, path)`` uses a ``FileSink``; pass one as
    ``dest`` to reuse a configuration.  Single-use.
    """

    def __init__(self, path: StrPath, *, overwrite: bool = True, durable: bool = True,
                 mode: int | None = None, reserve: int = 0) -> None:
        dest, directory, name = check_dest(path)
        if not isinstance(reserve, int) or isinstance(reserve, bool) or reserve < 0:
            raise ValueError(f"reserve must be an int >= 0 (bytes), got {reserve!r}")
        if mode is not None:
            if not isinstance(mode, int) or isinstance(mode, bool):
                raise TypeError(f"mode must be an int, got {type(mode).__name__}")
            if not 0 <= mode <= 0o7777:
                raise ValueError(f"mode must be permission bits (0 to 0o7777), got {oct(mode)}")
        super().__init__(dest, directory, name, durable=bool(durable), mode=mode,
                         reserve=reserve)
        self.overwrite = bool(overwrite)
        self.path = dest
        """The destination path."""

    def __repr__(self) -> str:
        mode = None if self.mode is None else oct(self.mode)
        return (f"FileSink({str(self.path)!r}, overwrite={self.overwrite}, "
                f"durable={self.durable}, mode={mode})")

    def _before_create(self, dir_fd: int) -> None:
        if not self.overwrite and self._stat_dest(dir_fd, self.dest_name) is not None:
            raise DestinationExistsError(
                errno.EEXIST, os.strerror(errno.EEXIST), str(self.dest), dest=self.dest,
                message="destination exists and overwrite=False")

    def publish(self) -> None:
        """Rename the temp over the destination, or link it there (``overwrite=False``)."""
        dir_fd, temp, name = self._fds[0], self._temp[0], self.dest_name
        assert temp is not None
        try:
            if self.overwrite:
                self._check_existing(self._stat_dest(dir_fd, name))
                os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            else:
                os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError as exc:
            raise DestinationExistsError(
                errno.EEXIST, os.strerror(errno.EEXIST), str(self.dest), dest=self.dest,
                message="destination appeared while storing and overwrite=False") from exc
        except OSError as exc:
            raise storage_error(exc, dest=self.dest,
                                message=f"cannot rename into {self.dest}") from exc

    def _published(self) -> bool:
        temp = self._temp[0]
        if self.overwrite:
            return temp is None or not self._same_inode(temp)
        if temp is None or not self._same_inode(temp):
            return True
        return os.fstat(self._fds[1]).st_nlink >= 2

    def _tidy_after_publish(self) -> None:
        temp = self._temp[0]
        if temp is not None and not self.overwrite:
            try:
                os.unlink(temp, dir_fd=self._fds[0])
            except FileNotFoundError:
                pass
        self._temp[0] = None


def _owner_alive(dir_fd: int, name: str, pid: int, holder: list[int]) -> bool:
    """True if a live process still owns the temp file ``name``.  When False,
    the caller holds the file's lock (its descriptor is in ``holder``)."""
    try:
        fd = open_into(holder, name, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | os.O_NONBLOCK,
                       dir_fd=dir_fd)
    except OSError:
        return True  # vanished or unreadable: leave it alone
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


def sweep_temp(directory: StrPath, *, older_than: float = 3600.0) -> int:
    """Remove this library's orphaned temp files in ``directory``; return how many.

    A temp file is removed only if its name has streamstore's temp shape, it
    is a regular file not modified for ``older_than`` seconds, and no live
    process holds it (its writer's lock is gone).  A live writer's temp is
    never removed, however old: the sweeper removes a temp while holding its
    lock, so no writer can take it over in between.  Not recursive.
    """
    if isinstance(older_than, bool) or not isinstance(older_than, (int, float)):
        raise TypeError(f"older_than must be a number of seconds, got {older_than!r}")
    if older_than < 0:
        raise ValueError(f"older_than must be >= 0, got {older_than}")
    removed = 0
    now = time.time()
    fds = Fds()
    try:
        dir_fd = open_into(fds, directory, _DIR_FLAGS)
        with os.scandir(dir_fd) as entries:
            names = [entry.name for entry in entries if _TEMP_RE.match(entry.name)]
        for name in names:
            try:
                if _sweep_one(dir_fd, name, now, older_than, fds):
                    removed += 1
            finally:
                close_all(fds, keep=1)
    finally:
        close_all(fds)
    return removed


def _sweep_one(dir_fd: int, name: str, now: float, older_than: float, fds: list[int]) -> bool:
    match = _TEMP_RE.match(name)
    assert match is not None
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < older_than:
        return False
    if _owner_alive(dir_fd, name, int(match.group(1)), fds):
        return False
    held = os.fstat(fds[-1])
    try:
        current = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino):
        return False  # replaced meanwhile: not the file we judged
    try:
        os.unlink(name, dir_fd=dir_fd)  # still holding its lock
    except FileNotFoundError:
        return False
    return True

"""Fault-injection tools for testing code that uses streamstore.

Import this in your own test suite (it is never imported by ``streamstore``
itself, and it does not import pytest)::

    from streamstore.testing import FailingReader, fail_storage

    def test_upload_maps_disk_full_to_507(tmp_path, client):
        with fail_storage(tmp_path, after_bytes=1024):        # ENOSPC after 1 KiB
            response = client.post("/upload", content=b"x" * 4096)
        assert response.status_code == 507

What is here:

- Readers that misbehave on purpose, each with an async twin:
  :class:`FailingReader` (raises after N bytes), :class:`ShortReader` (short
  reads in a chosen pattern), :class:`SlowReader` (sleeps between reads) and
  :class:`TruncatedReader` (ends before its declared size).  Every reader
  counts ``bytes_read`` and ``read_calls``, so a test can prove a store failed
  *before* reading anything.
- :func:`fail_storage`: make the filesystem fail on purpose (disk full,
  permission denied, any ``errno``) under one directory, at a chosen byte
  offset or at the create, fsync or rename step -- no root, no real full disk.
- :func:`assert_no_temp_files`: assert a directory tree holds no temp files.
- A pytest plugin, registered through the ``pytest11`` entry point as
  ``streamstore`` (disable with ``-p no:streamstore``), with the fixtures
  ``content_store`` (a fresh :class:`~streamstore.ContentStore` in
  ``tmp_path``) and ``assert_no_temp_files`` (the function above).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno as _errno
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from ._errors import storage_error
from ._pending import TempSink, _fault_plans, is_temp_name
from ._types import BytesLike

__all__ = [
    "AsyncFailingReader",
    "AsyncShortReader",
    "AsyncSlowReader",
    "AsyncTruncatedReader",
    "FailingReader",
    "ShortReader",
    "SlowReader",
    "StorageFault",
    "TruncatedReader",
    "assert_no_temp_files",
    "fail_storage",
    "temp_files",
]

FaultPoint = Literal["create", "write", "fsync", "rename"]
_FAULT_POINTS = ("create", "write", "fsync", "rename")
_R = TypeVar("_R", bound="_Reader")


# --------------------------------------------------------------------------- readers


class _Reader:
    """Shared machinery: serves ``data`` through ``read(n)`` and ``readinto(buffer)``."""

    def __init__(self, data: BytesLike) -> None:
        self._data = bytes(data)
        self._pos = 0
        self.bytes_read = 0
        """Bytes handed out so far."""
        self.read_calls = 0
        """Calls to ``read``/``readinto`` so far (including the one that saw end of stream)."""
        self.closed = False

    def _limit(self, n: int) -> int:
        """At most how many bytes this call may return (before end of data)."""
        return n

    def _before_read(self) -> None:
        """Called at the start of every read call; may raise or sleep."""

    def _take(self, n: int | None) -> bytes:
        if self.closed:
            raise ValueError("read from a closed reader")
        self.read_calls += 1
        self._before_read()
        remaining = len(self._data) - self._pos
        if n is None or n < 0:
            n = remaining
        n = min(self._limit(n), remaining)
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        self.bytes_read += n
        return chunk

    def read(self, n: int | None = -1, /) -> bytes:
        """Return up to ``n`` bytes (all that is left if ``n`` is negative); ``b""`` at the end."""
        return self._take(n)

    def readinto(self, buffer: BytesLike, /) -> int:
        """Fill the start of ``buffer``; return how many bytes were written (0 at the end)."""
        view = memoryview(buffer).cast("B")
        chunk = self._take(len(view))
        view[: len(chunk)] = chunk
        return len(chunk)

    def readable(self) -> bool:
        """Always ``True``."""
        return True

    def close(self) -> None:
        """Mark the reader closed; further reads raise ``ValueError``."""
        self.closed = True

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _instantiate(exc: BaseException | type[BaseException]) -> BaseException:
    if isinstance(exc, type) and issubclass(exc, BaseException):
        return exc()
    if isinstance(exc, BaseException):
        return exc
    raise TypeError(f"exc must be an exception instance or class, got {exc!r}")


class FailingReader(_Reader):
    """Serves ``data`` but raises ``exc`` once ``fail_after`` bytes were read.

    Exactly ``fail_after`` bytes are handed out, then every further read
    raises ``exc`` (an instance, or a class to instantiate), even if ``data``
    is exhausted: a network drop just before the end still fails.  With
    ``fail_after > len(data)`` the reader never fails.  The default ``exc`` is
    ``ConnectionResetError(ECONNRESET)``, what a dropped TCP peer gives.
    ``KeyboardInterrupt`` and other ``BaseException`` s are allowed.
    """

    def __init__(
        self,
        data: BytesLike,
        fail_after: int,
        exc: BaseException | type[BaseException] | None = None,
    ) -> None:
        super().__init__(data)
        if not isinstance(fail_after, int) or isinstance(fail_after, bool) or fail_after < 0:
            raise ValueError(f"fail_after must be an int >= 0, got {fail_after!r}")
        if exc is None:
            exc = ConnectionResetError(_errno.ECONNRESET, os.strerror(_errno.ECONNRESET))
        _instantiate(exc)  # validate now, not at the failing read
        self.fail_after = fail_after
        self.exc = exc
        self.failed = False
        """True once the exception was raised."""

    def _limit(self, n: int) -> int:
        return min(n, self.fail_after - self._pos)

    def _before_read(self) -> None:
        if self._pos >= self.fail_after:
            self.failed = True
            raise _instantiate(self.exc)


class ShortReader(_Reader):
    """Serves ``data`` in short reads: call *i* returns at most ``pattern[i % len(pattern)]`` bytes.

    Real sockets and pipes return fewer bytes than asked; code that assumes a
    full buffer per read breaks on this reader.
    """

    def __init__(self, data: BytesLike, pattern: Sequence[int]) -> None:
        super().__init__(data)
        pattern = list(pattern)
        if not pattern or any(
            not isinstance(p, int) or isinstance(p, bool) or p < 1 for p in pattern
        ):
            raise ValueError(f"pattern must be a non-empty sequence of ints >= 1, got {pattern!r}")
        self.pattern = pattern

    def _limit(self, n: int) -> int:
        return min(n, self.pattern[(self.read_calls - 1) % len(self.pattern)])


class SlowReader(_Reader):
    """Serves ``data`` at most ``chunk`` bytes per read, sleeping ``delay`` seconds before each.

    A slow client: use it to test timeouts, progress reporting and cancellation.
    """

    def __init__(self, data: BytesLike, delay: float, chunk: int = 8192) -> None:
        super().__init__(data)
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
            raise ValueError(f"delay must be a number of seconds >= 0, got {delay!r}")
        if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
            raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
        self.delay = float(delay)
        self.chunk = chunk

    def _limit(self, n: int) -> int:
        return min(n, self.chunk)

    def _before_read(self) -> None:
        if self.delay:
            time.sleep(self.delay)


class TruncatedReader(_Reader):
    """An upload that ends early: serves ``data`` then end of stream, though it
    announced ``declared_size`` bytes (as a ``Content-Length`` would).

    Pass ``expected_size=reader.declared_size`` and the store fails with
    :class:`~streamstore.PartialWriteError`.
    """

    def __init__(self, data: BytesLike, declared_size: int) -> None:
        super().__init__(data)
        if (
            not isinstance(declared_size, int)
            or isinstance(declared_size, bool)
            or declared_size <= len(self._data)
        ):
            raise ValueError(
                f"declared_size must be an int larger than len(data) ({len(self._data)}), "
                f"got {declared_size!r}"
            )
        self.declared_size = declared_size


class _AsyncReader:
    """An ``async def read(n)`` twin around one of the sync readers."""

    _sync: _Reader

    @property
    def bytes_read(self) -> int:
        """Bytes handed out so far."""
        return self._sync.bytes_read

    @property
    def read_calls(self) -> int:
        """Calls to ``read`` so far."""
        return self._sync.read_calls

    async def read(self, n: int = -1, /) -> bytes:
        """Return up to ``n`` bytes (all that is left if ``n`` is negative); ``b""`` at the end."""
        return self._sync.read(n)

    async def aclose(self) -> None:
        """Mark the reader closed."""
        self._sync.close()


class AsyncFailingReader(_AsyncReader):
    """Async twin of :class:`FailingReader` (``async def read(n)``)."""

    def __init__(
        self,
        data: BytesLike,
        fail_after: int,
        exc: BaseException | type[BaseException] | None = None,
    ) -> None:
        self._failing = self._sync = FailingReader(data, fail_after, exc)

    @property
    def failed(self) -> bool:
        """True once the exception was raised."""
        return self._failing.failed


class AsyncShortReader(_AsyncReader):
    """Async twin of :class:`ShortReader` (``async def read(n)``)."""

    def __init__(self, data: BytesLike, pattern: Sequence[int]) -> None:
        self._sync = ShortReader(data, pattern)


class AsyncSlowReader(_AsyncReader):
    """Async twin of :class:`SlowReader`: awaits ``asyncio.sleep(delay)`` before each read,
    so the event loop keeps running (and the task can be cancelled) meanwhile."""

    def __init__(self, data: BytesLike, delay: float, chunk: int = 8192) -> None:
        self._sync = SlowReader(data, 0, chunk)
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
            raise ValueError(f"delay must be a number of seconds >= 0, got {delay!r}")
        self.delay = float(delay)

    async def read(self, n: int = -1, /) -> bytes:
        """Sleep ``delay`` seconds, then return up to ``min(n, chunk)`` bytes."""
        await asyncio.sleep(self.delay)
        return self._sync.read(n)


class AsyncTruncatedReader(_AsyncReader):
    """Async twin of :class:`TruncatedReader` (``async def read(n)``)."""

    def __init__(self, data: BytesLike, declared_size: int) -> None:
        self._sync = TruncatedReader(data, declared_size)
        self.declared_size = declared_size
        """The size the upload announced."""


# --------------------------------------------------------------------------- storage faults


class StorageFault:
    """An active :func:`fail_storage` plan; ``triggered`` counts the faults raised so far."""

    def __init__(
        self,
        directory: Path,
        *,
        errno: int,
        after_bytes: int,
        at: FaultPoint,
        times: int | None,
    ) -> None:
        self.directory = directory
        self.errno = errno
        self.after_bytes = after_bytes
        self.at = at
        self.times = times
        self.triggered = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"StorageFault({str(self.directory)!r}, errno={_errno.errorcode.get(self.errno)}, "
            f"after_bytes={self.after_bytes}, at={self.at!r}, times={self.times}, "
            f"triggered={self.triggered})"
        )

    def _covers(self, directory: str) -> bool:
        parent = os.path.realpath(directory)
        root = str(self.directory)
        return parent == root or parent.startswith(root.rstrip(os.sep) + os.sep)

    def _claim(self) -> bool:
        """Count one fault; False if ``times`` faults were already raised."""
        with self._lock:
            if self.times is not None and self.triggered >= self.times:
                return False
            self.triggered += 1
            return True

    def _error(self, pending: TempSink, message: str) -> OSError:
        code = self.errno
        exc = OSError(code, os.strerror(code), str(pending.temp_path))
        return storage_error(exc, dest=pending.dest, message=message)

    def __call__(self, pending: TempSink) -> None:
        """Called by the core for each new temp file while the plan is active."""
        if not self._covers(pending.directory):
            return
        dest = pending.dest
        if self.at == "create":
            if self._claim():
                raise self._error(pending, f"cannot create a temp file in {dest.parent}")
        elif self.at == "write":
            self._arm_write(pending)
        elif self.at == "fsync":
            flush = pending.flush

            def failing_flush() -> None:
                if self._claim():
                    raise self._error(pending, f"cannot flush {dest}")
                flush()

            pending.flush = failing_flush  # type: ignore[method-assign]
        else:
            publish = pending.publish

            def failing_publish() -> None:
                if self._claim():
                    raise self._error(pending, f"cannot rename into {dest}")
                publish()

            pending.publish = failing_publish  # type: ignore[method-assign]

    def _arm_write(self, pending: TempSink) -> None:
        write = pending.write
        room = self.after_bytes
        armed = True

        def failing_write(data: memoryview | bytes) -> None:
            nonlocal room, armed
            if armed and len(data) > room:
                if self._claim():
                    if room > 0:
                        write(memoryview(data)[:room])  # the bytes that still "fit"
                    raise self._error(pending, f"cannot write to {pending.dest}")
                armed = False  # ``times`` faults were raised already
            room -= len(data)
            write(data)

        pending.write = failing_write  # type: ignore[method-assign]


@contextlib.contextmanager
def fail_storage(
    directory: str | os.PathLike[str],
    *,
    errno: int = _errno.ENOSPC,
    after_bytes: int = 0,
    at: FaultPoint = "write",
    times: int | None = None,
) -> Iterator[StorageFault]:
    """Make stores under ``directory`` fail with ``OSError(errno)`` while the block runs.

    The failure is injected where the real one would come from, so it takes
    the same path through streamstore: it is translated like a real ``OSError``
    (``ENOSPC``/``EDQUOT``/``EFBIG`` become :class:`~streamstore.DiskFullError`,
    ``EACCES``/``EPERM``/``EROFS`` :class:`~streamstore.StoragePermissionError`,
    anything else :class:`~streamstore.StorageError`), the temp file is removed
    and the destination is left as it was.  No root and no real full disk
    needed.

    - ``directory``: only stores whose destination lies in this directory or
      below it are affected (symlinks resolved), so parallel tests using
      other directories are not.
    - ``at``: ``"write"`` (the default) writes the first ``after_bytes`` bytes
      of the stream for real, then fails -- like a disk that fills up at that
      offset (a stream of at most ``after_bytes`` bytes is not affected);
      ``"create"`` fails creating the temp file, before any byte is read;
      ``"fsync"`` fails the flush after the last byte; ``"rename"`` fails the
      final rename.
    - ``times``: fail only the first ``times`` affected stores (``None``: all),
      e.g. ``times=1`` to test a retry.

    Yields a :class:`StorageFault` whose ``triggered`` counts the faults raised.
    Plans may be nested and used from several threads.
    """
    if at not in _FAULT_POINTS:
        raise ValueError(f"at must be one of {', '.join(map(repr, _FAULT_POINTS))}, got {at!r}")
    if not isinstance(errno, int) or isinstance(errno, bool) or errno <= 0:
        raise ValueError(f"errno must be a positive errno such as errno.ENOSPC, got {errno!r}")
    if not isinstance(after_bytes, int) or isinstance(after_bytes, bool) or after_bytes < 0:
        raise ValueError(f"after_bytes must be an int >= 0, got {after_bytes!r}")
    if times is not None and (not isinstance(times, int) or isinstance(times, bool) or times < 1):
        raise ValueError(f"times must be None or an int >= 1, got {times!r}")
    root = Path(os.path.realpath(os.fspath(directory)))
    plan = StorageFault(root, errno=errno, after_bytes=after_bytes, at=at, times=times)
    _fault_plans.append(plan)
    try:
        yield plan
    finally:
        _fault_plans.remove(plan)


# --------------------------------------------------------------------------- assertions


def temp_files(directory: str | os.PathLike[str], *, recursive: bool = True) -> list[Path]:
    """The streamstore temp files in ``directory`` (and below it unless ``recursive=False``)."""
    found: list[Path] = []
    if recursive:
        for parent, dirs, files in os.walk(directory):
            found.extend(Path(parent, name) for name in files + dirs if is_temp_name(name))
    else:
        with os.scandir(directory) as entries:
            found.extend(Path(e.path) for e in entries if is_temp_name(e.name))
    return sorted(found)


def assert_no_temp_files(directory: str | os.PathLike[str], *, recursive: bool = True) -> None:
    """Assert that no streamstore temp file is left in ``directory`` (recursively by default).

    Raises ``AssertionError`` naming every temp file found.
    """
    found = temp_files(directory, recursive=recursive)
    if found:
        listed = ", ".join(str(p) for p in found)
        raise AssertionError(f"{len(found)} temp file(s) left in {os.fspath(directory)}: {listed}")



# --------------------------------------------------------------------------- pytest plugin


def pytest_configure(config: Any) -> None:
    """pytest hook: register the fixtures (runs only when loaded as a pytest plugin)."""
    import pytest

    class StreamstoreFixtures:
        @pytest.fixture
        def content_store(self, tmp_path: Path) -> Any:
            """A fresh, empty :class:`streamstore.ContentStore` in ``tmp_path / "store"``."""
            import streamstore

            cls = getattr(streamstore, "ContentStore", None)
            if cls is None:  # pragma: no cover - older streamstore
                pytest.skip("this streamstore version has no ContentStore")
            return cls(tmp_path / "store")

        @pytest.fixture(name="assert_no_temp_files")
        def assert_no_temp_files_fixture(self) -> Any:
            """:func:`streamstore.testing.assert_no_temp_files`, as a fixture."""
            return assert_no_temp_files

    if not config.pluginmanager.has_plugin("streamstore-fixtures"):
        config.pluginmanager.register(StreamstoreFixtures(), "streamstore-fixtures")

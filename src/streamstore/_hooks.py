"""The built-in hooks: size limits, expected size, expected digest, progress.

``limit=``, ``expected_size=``, ``expected_sha256=`` and ``progress=`` are all
sugar for these; the core runs them exactly like the caller's own hooks.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

from ._errors import HashMismatchError, PartialWriteError, TooLargeError, TooSmallError
from ._types import Hook, Progress, ProgressCallback, SizeLimit, StoreResult

__all__ = ["DEFAULT_PROGRESS_STEP", "DigestCheck", "ExpectedSize", "Limit", "ProgressHook"]

DEFAULT_PROGRESS_STEP = 256 * 1024


class Limit(Hook):
    """Enforces a :class:`SizeLimit` while streaming."""

    def __init__(self, limit: SizeLimit, dest: Path) -> None:
        self.limit = limit
        self.dest = dest

    def on_start(self, expected_size: int | None) -> None:
        max_bytes = self.limit.max_bytes
        if max_bytes is not None and expected_size is not None and expected_size > max_bytes:
            raise TooLargeError(
                f"declared size {expected_size} is larger than the limit of {max_bytes} bytes",
                limit=max_bytes,
                size=expected_size,
                dest=self.dest,
            )

    def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
        max_bytes = self.limit.max_bytes
        if max_bytes is not None and bytes_so_far > max_bytes:
            raise TooLargeError(limit=max_bytes, size=bytes_so_far, dest=self.dest)

    def on_finish(self, result: StoreResult) -> None:
        if result.size < self.limit.min_bytes:
            raise TooSmallError(limit=self.limit.min_bytes, size=result.size, dest=self.dest)


class ExpectedSize(Hook):
    """The stream must be exactly the declared size (e.g. Content-Length)."""

    def __init__(self, expected_size: int, dest: Path) -> None:
        self.expected_size = expected_size
        self.dest = dest

    def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
        if bytes_so_far > self.expected_size:
            raise TooLargeError(
                f"stream is larger than its declared size of {self.expected_size} bytes "
                f"(stopped after {bytes_so_far} bytes)",
                limit=self.expected_size,
                size=bytes_so_far,
                dest=self.dest,
            )

    def on_finish(self, result: StoreResult) -> None:
        if result.size < self.expected_size:
            raise PartialWriteError(
                expected_size=self.expected_size, actual_size=result.size, dest=self.dest
            )


class DigestCheck(Hook):
    """The stream's SHA-256 must equal the expected digest."""

    def __init__(self, expected: str, dest: Path) -> None:
        self.expected = expected
        self.dest = dest

    def on_finish(self, result: StoreResult) -> None:
        if result.sha256 != self.expected:
            raise HashMismatchError(expected=self.expected, actual=result.sha256, dest=self.dest)


class ProgressHook(Hook):
    """Calls ``callback(Progress)`` once at the start (``bytes_done == 0``), then
    whenever at least ``step`` more bytes arrived, and once at the end with the
    final size.  Values never decrease.

    ``progress=cb`` is ``hooks=[ProgressHook(cb)]``; pass a ``ProgressHook`` in
    ``hooks=`` (or as ``progress=``) to choose another ``step``.
    """

    def __init__(self, callback: ProgressCallback, *, step: int = DEFAULT_PROGRESS_STEP) -> None:
        if not callable(callback):
            raise TypeError(f"progress callback must be callable, got {type(callback).__name__}")
        if inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
            getattr(callback, "__call__", None)  # noqa: B004
        ):
            raise TypeError(
                "progress callback is a coroutine function; pass a plain function "
                "(it runs in a worker thread under astore_from_reader)"
            )
        if not isinstance(step, int) or isinstance(step, bool) or step < 1:
            raise ValueError(f"progress step must be a positive int, got {step!r}")
        self.callback = callback
        self.step = step
        self._total: int | None = None
        self._started = 0.0
        self._next = step

    def on_start(self, expected_size: int | None) -> None:
        self._total = expected_size
        self._started = time.monotonic()
        self._next = self.step
        self.callback(Progress(0, expected_size, 0.0))

    def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
        if bytes_so_far >= self._next:
            self._next = bytes_so_far + self.step
            self.callback(Progress(bytes_so_far, self._total, time.monotonic() - self._started))

    def on_finish(self, result: StoreResult) -> None:
        self.callback(Progress(result.size, self._total, time.monotonic() - self._started))

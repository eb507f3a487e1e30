"""Ready-made hooks: progress reporting and sniffing the head of a stream."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable

from ._types import Hook, Progress, ProgressCallback, StoreResult

__all__ = ["DEFAULT_PROGRESS_STEP", "ProgressHook", "SniffHook"]

DEFAULT_PROGRESS_STEP = 256 * 1024


def _check_plain_callable(callback: object, what: str) -> None:
    if not callable(callback):
        raise TypeError(f"{what} must be callable, got {type(callback).__name__}")
    if inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        getattr(callback, "__call__", None)  # noqa: B004
    ):
        raise TypeError(
            f"{what} is a coroutine function; pass a plain function "
            "(it runs in a worker thread under astore_from_reader)"
        )


class ProgressHook(Hook):
    """Calls ``callback(Progress)`` once at the start (``bytes_done == 0``), then
    whenever at least ``step`` more bytes arrived, and at the end with the
    final size.  Values never decrease and no value is reported twice (an
    empty stream reports its 0 once).

    ``progress=cb`` is ``hooks=[ProgressHook(cb)]``; pass a ``ProgressHook`` in
    ``hooks=`` (or as ``progress=``) to choose another ``step``.
    """

    def __init__(self, callback: ProgressCallback, *, step: int = DEFAULT_PROGRESS_STEP) -> None:
        _check_plain_callable(callback, "progress callback")
        if not isinstance(step, int) or isinstance(step, bool) or step < 1:
            raise ValueError(f"progress step must be a positive int, got {step!r}")
        self.callback = callback
        self.step = step
        self._total: int | None = None
        self._started = 0.0
        self._next = step
        self._reported = -1

    def _report(self, done: int) -> None:
        self._reported = done
        self.callback(Progress(done, self._total, time.monotonic() - self._started))

    def on_start(self, expected_size: int | None) -> None:
        """Report 0 bytes done."""
        self._total = expected_size
        self._started = time.monotonic()
        self._next = self.step
        self._reported = 0
        self.callback(Progress(0, expected_size, 0.0))

    def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
        """Report if ``step`` more bytes arrived since the last report."""
        if bytes_so_far >= self._next:
            self._next = bytes_so_far + self.step
            self._report(bytes_so_far)

    def on_finish(self, result: StoreResult) -> None:
        """Report the final size (unless it was just reported)."""
        if result.size != self._reported:
            self._report(result.size)


class SniffHook(Hook):
    """Calls ``check(head)`` once with the first ``size`` bytes of the stream,
    however the stream is split into chunks (short and empty chunks included),
    before any of those bytes is written.  A stream shorter than ``size`` is
    checked with all of it at the end, before it becomes visible.  Raise from
    ``check`` to reject the stream.

    The usual use is a file-type check by magic bytes::

        def only_images(head: bytes) -> None:
            if sniff_image_type(head) is None:
                raise NotAnImage()

        store_from_reader(upload, dest, hooks=[SniffHook(12, only_images)])

    Each store needs its own ``SniffHook`` (it keeps the head between chunks).
    """

    def __init__(self, size: int, check: Callable[[bytes], object]) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"SniffHook size must be a positive int, got {size!r}")
        _check_plain_callable(check, "SniffHook check")
        self.size = size
        self.check = check
        self._head = bytearray()
        self._done = False

    def on_start(self, expected_size: int | None) -> None:
        """Forget any earlier head."""
        self._head = bytearray()
        self._done = False

    def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
        """Collect the head; check it once ``size`` bytes arrived."""
        if self._done:
            return
        head = self._head
        head += chunk[: self.size - len(head)]
        if len(head) >= self.size:
            self._done = True
            self.check(bytes(head))

    def on_finish(self, result: StoreResult) -> None:
        """Check a stream shorter than ``size``."""
        if not self._done:
            self._done = True
            self.check(bytes(self._head))


_IMAGE_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
)


def sniff_image_type(head: bytes) -> str | None:
    """The MIME type of a JPEG, PNG, GIF or WebP image from its first 12 bytes, else ``None``."""
    for offset, magic, mime in _IMAGE_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None

"""Public value types, the Hook base class and the Protocols for sources."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "AsyncReadSource",
    "AsyncSource",
    "BytesLike",
    "Hook",
    "Progress",
    "ProgressCallback",
    "ReadSource",
    "ReadintoSource",
    "SizeLimit",
    "Source",
    "StoreResult",
]

BytesLike = bytes | bytearray | memoryview


@runtime_checkable
class ReadintoSource(Protocol):
    """A binary stream that fills a caller's buffer (files, sockets, HTTP responses)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


@runtime_checkable
class ReadSource(Protocol):
    """A binary stream that returns up to ``n`` bytes per call; ``b""`` means end of stream."""

    def read(self, n: int, /) -> bytes: ...


class AsyncReadSource(Protocol):
    """An async stream: Starlette ``UploadFile``, aiohttp and asyncio ``StreamReader``."""

    async def read(self, n: int, /) -> bytes: ...


Source = BytesLike | ReadintoSource | ReadSource | Iterable[BytesLike]
"""Anything :func:`~streamstore.store_from_reader` accepts."""

AsyncSource = Source | AsyncReadSource | AsyncIterable[BytesLike]
"""Anything :func:`~streamstore.astore_from_reader` accepts."""


@dataclass(frozen=True)
class StoreResult:
    """What was stored: the final ``path``, its ``size`` in bytes and ``sha256`` (lowercase hex)."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Progress:
    """A progress report: ``bytes_done`` so far, ``total`` (the expected size, if
    known) and ``elapsed`` seconds since the store started."""

    bytes_done: int
    total: int | None
    elapsed: float

    @property
    def fraction(self) -> float | None:
        """``bytes_done / total`` (``None`` when the total is unknown; 1.0 for an empty total)."""
        if self.total is None:
            return None
        return 1.0 if self.total == 0 else min(1.0, self.bytes_done / self.total)


ProgressCallback = Callable[[Progress], object]


@dataclass(frozen=True)
class SizeLimit:
    """Bounds on a stream's size: at most ``max_bytes`` (``None``: no maximum),
    at least ``min_bytes``.

    ``limit=N`` is shorthand for ``SizeLimit(max_bytes=N)``.
    """

    max_bytes: int | None = None
    min_bytes: int = 0

    def __post_init__(self) -> None:
        for name in ("max_bytes", "min_bytes"):
            value = getattr(self, name)
            if value is None and name == "max_bytes":
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"SizeLimit.{name} must be an int, got {type(value).__name__}")
            if value < 0:
                raise ValueError(f"SizeLimit.{name} must be >= 0, got {value}")
        if self.max_bytes is not None and self.min_bytes > self.max_bytes:
            raise ValueError(
                f"SizeLimit.min_bytes ({self.min_bytes}) is larger than "
                f"max_bytes ({self.max_bytes})"
            )


_HOOK_METHODS = ("on_start", "on_chunk", "on_finish")


class Hook:
    """Observe or veto a store.  Override any of the three methods.

    Raising from any of them aborts the store: the temp file is removed, the
    destination is left as it was, and the exception propagates unchanged.
    Hooks run in the order given, after the built-in size checks.  Under
    :func:`~streamstore.astore_from_reader` they run in a worker thread (one
    at a time, never concurrently).
    """

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in vars(cls).items():
            if name.startswith("on_") and name not in _HOOK_METHODS:
                raise TypeError(
                    f"{cls.__name__}.{name} is not a hook method; "
                    f"Hook methods are {', '.join(_HOOK_METHODS)}"
                )
            if name in _HOOK_METHODS and inspect.iscoroutinefunction(value):
                raise TypeError(
                    f"{cls.__name__}.{name} is a coroutine function; hook methods "
                    "must be plain functions (they run in a worker thread under "
                    "astore_from_reader)"
                )

    def on_start(self, expected_size: int | None) -> None:
        """Called once before the first byte is read; ``expected_size`` as given."""

    def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
        """Called for each chunk before it is written; ``bytes_so_far`` includes it.

        ``chunk`` is only valid during the call (its buffer is reused): copy
        what you need to keep.
        """

    def on_finish(self, result: StoreResult) -> None:
        """Called when every byte is written, checked and flushed, just before
        the file becomes visible at ``result.path``."""

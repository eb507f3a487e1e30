"""Public value types, the Hook base class, the Sink protocol, the option sets
and the Protocols for sources."""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

if TYPE_CHECKING:
    from ._errors import StreamStoreError

__all__ = [
    "AsyncReadSource",
    "AsyncSource",
    "BytesLike",
    "ErrorMapper",
    "Hook",
    "IngestOptions",
    "PutOptions",
    "Progress",
    "ProgressCallback",
    "ReadSource",
    "ReadintoSource",
    "SizeLimit",
    "Sink",
    "Source",
    "StoreOptions",
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
    """What was stored: its ``size`` in bytes, ``sha256`` (lowercase hex) and where.

    ``location`` (a ``str``) says where the bytes now are, for any destination:
    the path for a local file, a URL such as ``s3://bucket/key`` for others.
    ``path`` is the local path (a :class:`~pathlib.Path`), ``None`` when the
    destination is not a local file.  ``location`` defaults to ``str(path)``.
    """

    path: Path | None
    size: int
    sha256: str
    location: str = field(default="")

    def __post_init__(self) -> None:
        if not self.location and self.path is not None:
            object.__setattr__(self, "location", str(self.path))


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


_HOOK_METHODS = ("on_start", "on_chunk", "on_finish", "on_commit", "on_abort")


class Hook:
    """Observe or veto a store, and take part in its commit.  Override any method.

    The order for one store is ``on_start``, ``on_chunk`` for every chunk,
    ``on_finish`` (every byte written and checked, not yet visible), then
    ``on_commit`` (visible) -- or ``on_abort`` on any failure.

    Raising from ``on_start``, ``on_chunk`` or ``on_finish`` aborts the store:
    the destination is left as it was and the exception propagates unchanged
    (after ``on_abort`` ran).  Hooks run in the order given, after the
    built-in size and digest checks.  Under the async front ends they run in
    a worker thread, one at a time, never concurrently.

    With ``on_finish``, ``on_commit`` and ``on_abort`` a caller can tie the
    file to a database row: insert it in ``on_finish``, commit the
    transaction in ``on_commit``, roll it back in ``on_abort``, so the file and
    the row never disagree.
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
        the bytes become visible at ``result.location``."""

    def on_commit(self, result: StoreResult) -> None:
        """Called once the bytes are visible (after the commit point).

        The store has succeeded and cannot be undone.  If this raises, the
        other hooks' ``on_commit`` still run, then the exception propagates
        with the committed :class:`StoreResult` as its ``committed``
        attribute; ``on_abort`` is not called.
        """

    def on_abort(self, exc: BaseException) -> None:
        """Called when the store fails after this hook's ``on_start`` was called,
        with the exception that aborted it; nothing was made visible.

        Hooks are aborted in reverse order.  An exception raised here does not
        replace the original: it is added to the original's notes.
        """


class Sink(Protocol):
    """The destination of one store: where the bytes go, and how they become visible.

    A sink is used once.  The ingest calls ``start`` (if the sink has it),
    ``write`` for every chunk, ``prepare`` (if it has it), then ``commit`` --
    or ``abort`` on any failure, including a failed ``commit``.  The ingest
    hashes, counts and checks; the sink only does the I/O.

    Optional members, looked up with ``getattr``:

    - ``start(expected_size: int | None) -> None``: called once before the
      first write (``expected_size`` as declared by the caller, or ``None``).
    - ``prepare(result: StoreResult) -> StoreResult``: called after the last
      write and every check, before the ``on_finish`` hooks: make the bytes
      durable without making them visible, and return the result filled in
      with where they will be (``location``, ``path``).
    - ``committed: StoreResult | None``: read when ``commit`` raised; a sink
      that can raise after its bytes became visible (an interrupt landing just
      after a rename, say) reports the visible result here, so the store is
      reported as committed rather than failed.

    :class:`~streamstore.FileSink` is the local sink; a path ``dest`` means one.
    """

    def write(self, chunk: memoryview, /) -> None:
        """Take the next chunk; it is valid only during the call (copy it to keep it)."""
        ...

    def commit(self, result: StoreResult, /) -> StoreResult:
        """Every check passed: make the bytes visible and return the final result."""
        ...

    def abort(self) -> None:
        """Discard everything.  Safe after a failed ``write`` or ``commit``; idempotent."""
        ...


ErrorMapper = (
    Mapping[type["StreamStoreError"], Callable[["StreamStoreError"], BaseException]]
    | Callable[["StreamStoreError"], "BaseException | None"]
)
"""``errors=``: ``{ErrorClass: factory}`` or a callable returning an exception or ``None``."""


class IngestOptions(TypedDict, total=False):
    """The options of every store (``store_from_reader``, ``open_writer``,
    ``ContentStore.put`` and their async twins), as keyword arguments."""

    expected_sha256: str | None
    expected_size: int | None
    limit: int | SizeLimit | None
    progress: ProgressCallback | Hook | None
    hooks: Sequence[Hook]
    errors: ErrorMapper | None
    chunk_size: int


class StoreOptions(IngestOptions, total=False):
    """:class:`IngestOptions` plus the options of a local file destination
    (they apply when ``dest`` is a path; a :class:`Sink` is configured itself)."""

    overwrite: bool
    durable: bool
    mode: int | None
    reserve: int


class PutOptions(IngestOptions, total=False):
    """:class:`IngestOptions` plus ``metadata`` (``ContentStore.put``/``aput``)."""

    metadata: Mapping[str, Any] | None


StrPath = str | os.PathLike[str]

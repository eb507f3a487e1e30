"""The synchronous front ends: a read loop (``store_from_reader``) and a push
writer (``open_writer``) around the one :class:`~streamstore._core.Ingest`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._core import Ingest, split_options
from ._pending import FileSink
from ._sources import bytes_view, iter_chunks, split
from ._types import Sink, Source, StoreOptions, StoreResult, StrPath

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Writer", "make_ingest", "open_writer", "run_ingest", "store_from_reader"]

_FILE_OPTIONS = frozenset({"overwrite", "durable", "mode", "reserve"})


def make_ingest(dest: StrPath | Sink, options: Mapping[str, Any], what: str) -> Ingest:
    """The :class:`Ingest` for ``dest`` (a path means a :class:`FileSink`) and
    keyword ``options``; every argument checked, nothing touched."""
    ingest_options, file_options = split_options(options, _FILE_OPTIONS, what)
    if isinstance(dest, (str, bytes, os.PathLike)):
        sink = FileSink(dest, **file_options)
        return Ingest(sink, ingest_options, dest=sink.path)
    if file_options:
        names = ", ".join(f"{name}=" for name in file_options)
        raise TypeError(f"{names} apply to a path dest; configure the sink "
                        f"{type(dest).__name__} itself instead")
    return Ingest(dest, ingest_options)


def store_from_reader(
    source: Source, dest: StrPath | Sink, **options: Unpack[StoreOptions]
) -> StoreResult:
    """Store ``source`` at ``dest`` atomically, hashing it with SHA-256 in the same pass.

    ``source`` is bytes-like, a binary file object (``readinto`` preferred,
    else ``read(n)``) or an iterable of bytes-like chunks.  ``dest`` is a path
    (a :class:`FileSink`: a temp file in its directory becomes ``dest`` by one
    atomic rename only after every check passed) or any :class:`Sink`.  On any
    failure nothing becomes visible and ``dest`` is left exactly as it was.

    - ``expected_sha256``: hex digest (any case); a mismatch raises
      :class:`HashMismatchError`.
    - ``expected_size``: the declared length; more raises :class:`TooLargeError`
      (before the excess is written), less :class:`PartialWriteError`.
    - ``limit``: max bytes, or a :class:`SizeLimit` with ``max_bytes`` and
      ``min_bytes`` (:class:`TooLargeError` / :class:`TooSmallError`).
    - ``progress``: called with a :class:`Progress` at the start, about every
      256 KiB and at the end (a :class:`ProgressHook` sets another step).
    - ``hooks``: :class:`Hook` objects that see the start, every chunk, the
      result before it becomes visible, and the commit or abort.
    - ``errors``: maps streamstore errors to the caller's own exceptions, either
      ``{ErrorClass: factory}`` (most specific class wins) or a callable
      returning an exception or ``None``; raised ``from`` the original.
    - ``chunk_size``: bytes per read (default 32 KiB).
    - For a path ``dest`` only (see :class:`FileSink`): ``overwrite=False``
      creates ``dest`` exclusively (:class:`DestinationExistsError` if it
      exists); ``durable`` fsyncs the file before the rename and the directory
      after; ``mode`` sets the final permission bits; ``reserve`` refuses a
      store whose declared size does not fit with that many bytes to spare.

    Returns a :class:`StoreResult` (``path``, ``size``, ``sha256``, ``location``).
    """
    ingest = make_ingest(dest, options, "store_from_reader()")
    try:
        return run_ingest(ingest, source)
    except BaseException as exc:
        raise ingest.fail(exc)  # noqa: B904 - see run_ingest


def run_ingest(ingest: Ingest, source: Source) -> StoreResult:
    """Drive ``ingest`` with the chunks of ``source`` (validated first) and return its result.

    The synchronous loop itself; :class:`~streamstore.ContentStore` drives its
    own :class:`Ingest` through it too.  A caller that does more after this
    returns wraps it in ``except BaseException as exc: raise ingest.fail(exc)``
    too: an interrupt landing between the commit and the caller's next step
    then still reports the commit (``fail`` is idempotent).
    """
    chunks = iter_chunks(source, ingest.chunk_size, ingest.dest)
    try:
        ingest.start()
        feed = ingest.feed
        for chunk in chunks:
            feed(chunk)
        return ingest.finish()
    except BaseException as exc:
        raise ingest.fail(exc)  # noqa: B904 - fail() chains mapped errors itself


class Writer:
    """A store you push bytes into: ``with open_writer(dest) as w: w.write(data)``.

    Leaving the block normally commits (``result`` holds the
    :class:`StoreResult`); leaving it with an exception aborts, leaving the
    destination as it was.  After a failed :meth:`write` the writer is
    aborted and further writes raise.  Not thread-safe.
    """

    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest
        self._state = "new"
        self.result: StoreResult | None = None
        """The committed result, once the block exited cleanly."""

    @property
    def bytes_written(self) -> int:
        """Bytes accepted so far."""
        return self._ingest.size

    def __enter__(self) -> Writer:
        if self._state != "new":
            raise RuntimeError("a Writer can be entered only once")
        self._state = "open"
        try:
            self._ingest.start()
        except BaseException as exc:
            self._state = "failed"
            raise self._ingest.fail(exc)  # noqa: B904
        return self

    def write(self, data: Any) -> int:
        """Take bytes-like ``data`` (checked, hashed and written before this
        returns); returns ``len(data)`` in bytes."""
        if self._state != "open":
            raise ValueError(f"write() on a {self._state} writer")
        view = bytes_view(data)
        if view is None:
            self._state = "failed"
            exc: BaseException = TypeError(
                f"write() takes bytes-like data, got {type(data).__name__}")
            raise self._ingest.fail(exc)
        try:
            feed = self._ingest.feed
            for chunk in split(view, self._ingest.chunk_size):
                feed(chunk)
        except BaseException as exc:
            self._state = "failed"
            raise self._ingest.fail(exc)  # noqa: B904
        return len(view)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._state != "open":
            return
        if exc is not None:
            self._state = "failed"
            failure = self._ingest.fail(exc)
            if failure is not exc:
                raise failure from exc
            return
        try:
            self.result = self._ingest.finish()
            self._state = "committed"
        except BaseException as error:
            self._state = "failed"
            committed = getattr(error, "committed", None)
            if committed is not None:
                self.result = committed
                self._state = "committed"
            raise self._ingest.fail(error)  # noqa: B904

    def __repr__(self) -> str:
        return f"<streamstore.Writer {self._state}, {self.bytes_written} bytes>"


def open_writer(dest: StrPath | Sink, **options: Unpack[StoreOptions]) -> Writer:
    """A :class:`Writer` for ``dest`` with the options of :func:`store_from_reader`.

    Use it where your code is handed the bytes piece by piece instead of
    holding a readable source::

        with open_writer("/srv/out.bin", limit=10 * 2**20) as w:
            for piece in pieces:
                w.write(piece)
        print(w.result.sha256)

    Every guarantee of :func:`store_from_reader` holds: limits and hooks see
    every byte, the digest is checked, the bytes become visible atomically
    when the block exits cleanly, and nothing does when it raises.
    """
    return Writer(make_ingest(dest, options, "open_writer()"))

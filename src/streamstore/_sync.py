"""The synchronous front end: a read loop around :class:`~streamstore._core.Operation`."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ._core import DEFAULT_CHUNK_SIZE, ErrorMapper, Operation
from ._hooks import ProgressHook
from ._sources import iter_chunks
from ._types import Hook, ProgressCallback, SizeLimit, Source, StoreResult

__all__ = ["run_operation", "store_from_reader"]


def store_from_reader(
    source: Source,
    dest: str | os.PathLike[str],
    *,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    limit: int | SizeLimit | None = None,
    progress: ProgressCallback | ProgressHook | None = None,
    hooks: Sequence[Hook] = (),
    errors: ErrorMapper | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overwrite: bool = True,
    durable: bool = True,
    mode: int | None = None,
) -> StoreResult:
    """Store ``source`` at ``dest`` atomically, hashing it with SHA-256 in the same pass.

    ``source`` is bytes-like, a binary file object (``readinto`` preferred,
    else ``read(n)``) or an iterable of bytes-like chunks.  The bytes go to a
    temp file in ``dest``'s directory which becomes ``dest`` by one atomic
    rename only after every check passed; on any failure it is removed and
    ``dest`` is left exactly as it was.

    - ``expected_sha256``: hex digest (any case); a mismatch raises
      :class:`HashMismatchError`.
    - ``expected_size``: the declared length; more raises :class:`TooLargeError`
      (before the excess is written), less :class:`PartialWriteError`.
    - ``limit``: max bytes, or a :class:`SizeLimit` with ``max_bytes`` and
      ``min_bytes`` (:class:`TooLargeError` / :class:`TooSmallError`).
    - ``progress``: called with a :class:`Progress` at the start, about every
      256 KiB and at the end (a :class:`ProgressHook` sets another step).
    - ``hooks``: :class:`Hook` objects that see the start, every chunk and the
      result before it becomes visible; raising from one aborts the store.
    - ``errors``: maps streamstore errors to the caller's own exceptions, either
      ``{ErrorClass: factory}`` (most specific class wins) or a callable
      returning an exception or ``None``; raised ``from`` the original.
    - ``overwrite=False``: create ``dest`` exclusively (race-free);
      :class:`DestinationExistsError` if it exists.
    - ``durable``: fsync the file before the rename and the directory after.
    - ``mode``: the final permission bits (default: ``0o666 & ~umask``, as
      ``open()`` creates files).

    Returns a :class:`StoreResult` (``path``, ``size``, ``sha256``).
    """
    op = Operation(
        dest,
        expected_sha256=expected_sha256,
        expected_size=expected_size,
        limit=limit,
        progress=progress,
        hooks=hooks,
        errors=errors,
        chunk_size=chunk_size,
        overwrite=overwrite,
        durable=durable,
        mode=mode,
    )
    return run_operation(op, source)


def run_operation(op: Operation, source: Source) -> StoreResult:
    """Drive ``op`` with the chunks of ``source`` (validated first) and return its result.

    The synchronous loop itself; :class:`~streamstore.ContentStore` drives its
    own :class:`Operation` through it too.
    """
    chunks = iter_chunks(source, op.chunk_size, op.dest)
    try:
        op.start()
        feed = op.feed
        for chunk in chunks:
            feed(chunk)
        return op.commit()
    except BaseException as exc:
        raise op.fail(exc)  # noqa: B904 - fail() chains mapped errors itself

"""The error tree.

    StreamStoreError(Exception)
    ├── HashMismatchError          .expected, .actual
    ├── PartialWriteError          .expected_size, .actual_size
    ├── SizeLimitError             .limit, .size
    │   ├── TooLargeError
    │   └── TooSmallError
    ├── SourceError                original exception as __cause__ (.original)
    ├── MultipartError(ValueError) a malformed multipart/form-data body (HTTP 400)
    ├── DecryptionError            an encrypted object failed authentication
    ├── ObjectNotFoundError(KeyError)    .digest   (ContentStore: no such object)
    ├── InvalidDigestError(ValueError)   .digest   (ContentStore: not 64 hex characters)
    └── StorageError(OSError)      .errno, .strerror, .filename
        ├── DiskFullError          ENOSPC, EDQUOT, EFBIG
        ├── StoragePermissionError EACCES, EPERM, EROFS
        └── DestinationExistsError EEXIST with overwrite=False

Errors raised by a store to a local path carry ``.dest``, that path (``None``
when the destination is not a local file, or the error is not tied to one).
Every error pickles and copies with its attributes and ``__notes__``.  Bad
arguments raise the builtin ``TypeError``/``ValueError`` before any byte is
read; exceptions raised by the caller's own hooks propagate unchanged;
``BaseException`` s that are not ``Exception`` s (``KeyboardInterrupt``,
``asyncio.CancelledError``) are never wrapped.  Any other exception escaping a
store is a bug.

The commit point: a store that raises has left its destination exactly as it
was.  The one exception is an exception that arrives after the bytes became
visible (``KeyboardInterrupt`` landing just after the rename, a hook's
``on_commit`` raising): it carries the committed
:class:`~streamstore.StoreResult` as its ``committed`` attribute.

Foreign ``OSError``s are translated in exactly one place, :func:`storage_error`.
"""

from __future__ import annotations

import errno as _errno
import os
from pathlib import Path
from typing import Any

__all__ = [
    "DestinationExistsError",
    "DiskFullError",
    "HashMismatchError",
    "DecryptionError",
    "InvalidDigestError",
    "MultipartError",
    "ObjectNotFoundError",
    "PartialWriteError",
    "SizeLimitError",
    "SourceError",
    "StorageError",
    "StoragePermissionError",
    "StreamStoreError",
    "TooLargeError",
    "TooSmallError",
    "storage_error",
]


def _restore(cls: type[StreamStoreError], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return cls(*args, **kwargs)


def _as_path(dest: str | os.PathLike[str] | None) -> Path | None:
    return None if dest is None else Path(dest)


class StreamStoreError(Exception):
    """Base class of every error streamstore raises on purpose.

    ``dest`` is the destination path of the failed store (``None`` when the
    error is not tied to one destination).
    """

    dest: Path | None

    def __init__(self, message: str, *, dest: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.dest = _as_path(dest)

    def _reduce_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (str(self.args[0]) if self.args else "",), {"dest": self.dest}

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = self._reduce_args()
        # The instance dict carries __notes__, ``committed`` and anything a
        # caller attached; restored by BaseException.__setstate__.
        return (_restore, (type(self), args, kwargs), dict(vars(self)))


class HashMismatchError(StreamStoreError):
    """The stream's SHA-256 differs from ``expected_sha256``; nothing was committed."""

    def __init__(
        self,
        message: str | None = None,
        *,
        expected: str,
        actual: str,
        dest: str | os.PathLike[str] | None = None,
    ) -> None:
        self.expected = expected
        self.actual = actual
        if message is None:
            message = f"SHA-256 mismatch: expected {expected}, got {actual}"
            if dest is not None:
                message += f" (nothing written to {os.fspath(dest)})"
        super().__init__(message, dest=dest)

    def _reduce_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = super()._reduce_args()
        return args, {**kwargs, "expected": self.expected, "actual": self.actual}


class PartialWriteError(StreamStoreError):
    """The source ended before ``expected_size`` bytes arrived (a truncated upload)."""

    def __init__(
        self,
        message: str | None = None,
        *,
        expected_size: int,
        actual_size: int,
        dest: str | os.PathLike[str] | None = None,
    ) -> None:
        self.expected_size = expected_size
        self.actual_size = actual_size
        if message is None:
            message = (
                f"source ended after {actual_size} bytes, "
                f"but {expected_size} bytes were expected"
            )
        super().__init__(message, dest=dest)

    def _reduce_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = super()._reduce_args()
        return args, {
            **kwargs,
            "expected_size": self.expected_size,
            "actual_size": self.actual_size,
        }


class SizeLimitError(StreamStoreError):
    """The stream's size is outside the allowed range.

    ``limit`` is the bound that was crossed and ``size`` the number of bytes
    seen when the store stopped (for :class:`TooLargeError` a lower bound of
    the stream's true size: the rest is never read).
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        limit: int,
        size: int,
        dest: str | os.PathLike[str] | None = None,
    ) -> None:
        self.limit = limit
        self.size = size
        super().__init__(message or self._default_message(), dest=dest)

    def _default_message(self) -> str:
        return f"stream size {self.size} is outside the limit {self.limit}"

    def _reduce_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = super()._reduce_args()
        return args, {**kwargs, "limit": self.limit, "size": self.size}


class TooLargeError(SizeLimitError):
    """More bytes than ``max_bytes`` (or ``expected_size``); the excess never reached disk."""

    def _default_message(self) -> str:
        return (
            f"stream is larger than the limit of {self.limit} bytes "
            f"(stopped after {self.size} bytes)"
        )


class TooSmallError(SizeLimitError):
    """Fewer than ``min_bytes`` bytes by the end of the stream."""

    def _default_message(self) -> str:
        return f"stream is smaller than the minimum of {self.limit} bytes (got {self.size})"


class SourceError(StreamStoreError):
    """The source raised or misbehaved.

    Every ``Exception`` the source raises -- from ``read``, ``readinto``,
    ``__iter__``/``__next__`` or their async twins, including one you raise on
    purpose in your own generator -- becomes a ``SourceError`` whose
    ``__cause__`` (also :attr:`original`) is the exception raised.  To let your
    own exception through, map it back with ``errors=``, e.g.
    ``errors={SourceError: lambda e: e.original}``.  ``BaseException`` s that
    are not ``Exception`` s, and streamstore's own errors raised by a source
    built on streamstore (a :mod:`streamstore.multipart` part raising
    :class:`MultipartError`), propagate unchanged.
    """

    @property
    def original(self) -> BaseException | None:
        """The exception the source raised (``__cause__``), or ``None`` if it misbehaved."""
        return self.__cause__


class MultipartError(StreamStoreError, ValueError):
    """A multipart/form-data body is malformed or breaks a configured limit (a
    missing or bad boundary, a truncated body, too many parts, a header or
    field too large).  Also a :class:`ValueError`; answer it with HTTP 400.
    Nothing from the body is stored."""


class DecryptionError(StreamStoreError):
    """Encrypted data failed authentication (tampered, truncated, reordered,
    or the wrong key) or has a malformed header.  No unauthenticated
    plaintext is ever returned.  Messages never contain key material."""


class ObjectNotFoundError(StreamStoreError, KeyError):
    """A :class:`~streamstore.ContentStore` holds no object with this ``digest``.

    Also a :class:`KeyError`, so ``except KeyError`` keeps working; ``dest`` is
    the path the object would have.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        digest: str,
        dest: str | os.PathLike[str] | None = None,
    ) -> None:
        self.digest = digest
        super().__init__(message or f"no object {digest} in the store", dest=dest)

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""

    def _reduce_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = super()._reduce_args()
        return args, {**kwargs, "digest": self.digest}


class InvalidDigestError(StreamStoreError, ValueError):
    """A content-store key is not a SHA-256 hex digest (exactly 64 hex characters).

    Also a :class:`ValueError`.  ``digest`` is the rejected key; it was
    rejected before any filesystem call, so it never named a path.
    """

    def __init__(self, message: str | None = None, *, digest: str) -> None:
        self.digest = digest
        if message is None:
            shown = digest if len(digest) <= 80 else digest[:77] + "..."
            message = (
                f"invalid object digest {shown!r}: expected exactly 64 hexadecimal "
                f"characters (a SHA-256), got {len(digest)} characters"
            )
        super().__init__(message)

    def _reduce_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = super()._reduce_args()
        del kwargs["dest"]
        return args, {**kwargs, "digest": self.digest}


class StorageError(StreamStoreError, OSError):
    """Writing, flushing or renaming on the destination filesystem failed.

    Also an :class:`OSError`: ``errno``, ``strerror`` and ``filename`` keep the
    operating system's values, so ``except OSError`` keeps working.
    """

    def __init__(
        self,
        errno: int,
        strerror: str,
        filename: str | None = None,
        *,
        dest: str | os.PathLike[str] | None = None,
        message: str | None = None,
    ) -> None:
        OSError.__init__(self, errno, strerror, filename)
        self.dest = _as_path(dest)
        self.message = message

    def __str__(self) -> str:
        base = OSError.__str__(self)
        return f"{self.message}: {base}" if self.message else base

    def _reduce_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (self.errno, self.strerror, self.filename), {
            "dest": self.dest,
            "message": self.message,
        }


class DiskFullError(StorageError):
    """No space left: ENOSPC, EDQUOT (quota) or EFBIG (file size limit)."""


class StoragePermissionError(StorageError):
    """Permission denied or read-only filesystem: EACCES, EPERM, EROFS."""


class DestinationExistsError(StorageError):
    """``overwrite=False`` and the destination already exists; it was not touched."""


_BY_ERRNO: dict[int, type[StorageError]] = {
    _errno.ENOSPC: DiskFullError,
    _errno.EFBIG: DiskFullError,
    _errno.EACCES: StoragePermissionError,
    _errno.EPERM: StoragePermissionError,
    _errno.EROFS: StoragePermissionError,
    _errno.EEXIST: DestinationExistsError,
}
if hasattr(_errno, "EDQUOT"):
    _BY_ERRNO[_errno.EDQUOT] = DiskFullError


def storage_error(
    exc: OSError, *, dest: str | os.PathLike[str] | None, message: str
) -> StorageError:
    """Translate an ``OSError`` from the filesystem into the matching :class:`StorageError`."""
    if isinstance(exc, StorageError):
        return exc
    code = exc.errno if exc.errno is not None else _errno.EIO
    cls = _BY_ERRNO.get(code, StorageError)
    strerror = exc.strerror or os.strerror(code)
    filename = exc.filename if isinstance(exc.filename, str) else None
    return cls(code, strerror, filename, dest=dest, message=message)

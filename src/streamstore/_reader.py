"""A reader that checks a stored object's SHA-256 as it is read."""

from __future__ import annotations

import hashlib
import io
from typing import Any, BinaryIO

from ._errors import HashMismatchError

__all__ = ["VerifyingReader"]


class VerifyingReader(io.RawIOBase):
    """Reads ``raw`` (an object of ``size`` bytes) once, front to back, hashing
    what passes; the read that would hand over the last bytes checks the
    SHA-256 first and raises :class:`~streamstore.HashMismatchError` instead,
    as does an object that is shorter or longer than ``size``.  Not seekable.
    """

    def __init__(self, raw: BinaryIO, size: int, sha256: str, *, dest: Any = None) -> None:
        super().__init__()
        self._raw = raw
        self._size = size
        self._expected = sha256
        self._dest = dest
        self._hasher = hashlib.sha256()
        self._pos = 0

    def readable(self) -> bool:
        """Always ``True``."""
        return True

    def _fail(self, actual: str) -> HashMismatchError:
        return HashMismatchError(
            f"stored object {self._expected} is corrupt: its SHA-256 is {actual}",
            expected=self._expected, actual=actual, dest=self._dest)

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer``; 0 at the end (after the digest was checked)."""
        view = memoryview(buffer).cast("B")
        left = self._size - self._pos
        if left <= 0:
            if left == 0 and self._raw.read(1):  # longer than it should be
                raise self._fail("(the object is longer than its recorded size)")
            return 0
        if len(view) < left:
            n = self._raw.readinto(view)  # type: ignore[attr-defined]
            if not n:
                raise self._fail("(the object is shorter than its recorded size)")
            self._hasher.update(view[:n])
            self._pos += n
            return int(n)
        # The read that reaches the end: hold the bytes back until they are checked.
        tail = bytearray(left)
        got = 0
        while got < left:
            n = self._raw.readinto(memoryview(tail)[got:])  # type: ignore[attr-defined]
            if not n:
                raise self._fail("(the object is shorter than its recorded size)")
            got += n
        self._hasher.update(tail)
        actual = self._hasher.hexdigest()
        if actual != self._expected:
            raise self._fail(actual)
        self._pos += left
        view[:left] = tail
        return left

    def close(self) -> None:
        """Close the underlying object."""
        try:
            self._raw.close()
        finally:
            super().close()

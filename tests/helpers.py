"""Small test helpers shared by the core tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from streamstore._pending import is_temp_name


def snapshot(directory: Path) -> dict[str, bytes]:
    """Name -> bytes of every regular file in ``directory`` (not recursive)."""
    return {
        e.name: Path(e.path).read_bytes()
        for e in os.scandir(directory)
        if e.is_file(follow_symlinks=False)
    }


def temp_files(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if is_temp_name(name)]


class ShortReads:
    """A readinto() source returning at most the next size of ``pattern`` per call."""

    def __init__(self, data: bytes, pattern: list[int]) -> None:
        self.data = memoryview(data)
        self.pattern = [max(1, p) for p in pattern] or [len(data) or 1]
        self.pos = 0
        self.calls = 0

    def readinto(self, buffer: memoryview) -> int:
        want = min(len(buffer), self.pattern[self.calls % len(self.pattern)])
        self.calls += 1
        chunk = self.data[self.pos : self.pos + want]
        buffer[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


class ReadOnly:
    """A source with only read(n)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.touched = False

    def read(self, n: int) -> bytes:
        self.touched = True
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


class Untouchable:
    """A source that records whether anyone read it."""

    def __init__(self) -> None:
        self.touched = False

    def readinto(self, buffer: memoryview) -> int:
        self.touched = True
        return 0


def raising_after(data: bytes, exc: BaseException) -> Iterator[bytes]:
    yield data
    raise exc

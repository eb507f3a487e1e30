"""Hypothesis strategies shared by the test suite (attrs-style: one module).

The central one is :func:`store_cases`: a payload, a way to deliver it (the
source kind and its read pattern) and a set of faults to inject at random
points (source failure, hook raising, storage failure, limits, declared size,
digest), together with the set of errors the documented contract allows.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

import streamstore
from streamstore import Hook, SizeLimit, StoreResult
from streamstore.testing import FailingReader, ShortReader

SOURCE_KINDS = ("bytes", "readinto", "read", "chunks", "generator", "failing")
HOOK_PHASES = ("none", "start", "chunk", "finish")
STORAGE_POINTS = ("none", "create", "write", "fsync", "rename")


class HookBoom(Exception):
    """Raised by :class:`RaisingHook`; must propagate unchanged."""


class SourceBoom(Exception):
    """Raised by failing sources; must arrive as ``SourceError.__cause__``."""


class RaisingHook(Hook):
    """Raises :class:`HookBoom` in ``phase`` (for ``chunk``: once ``at`` bytes were seen)."""

    def __init__(self, phase: str, at: int = 0) -> None:
        self.phase = phase
        self.at = at

    def on_start(self, expected_size: int | None) -> None:
        if self.phase == "start":
            raise HookBoom("on_start")

    def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
        if self.phase == "chunk" and bytes_so_far >= self.at:
            raise HookBoom(f"on_chunk at {bytes_so_far}")

    def on_finish(self, result: StoreResult) -> None:
        if self.phase == "finish":
            raise HookBoom("on_finish")


class ReadOnly:
    """A source with only ``read(n)`` (no ``readinto``), returning short reads."""

    def __init__(self, data: bytes, pattern: Sequence[int]) -> None:
        self._reader = ShortReader(data, pattern)

    def read(self, n: int = -1, /) -> bytes:
        return self._reader.read(n)


def split(data: bytes, pattern: Sequence[int]) -> list[bytes]:
    """Cut ``data`` into chunks whose sizes cycle through ``pattern`` (0 gives empty chunks)."""
    out: list[bytes] = []
    pos = i = 0
    while pos < len(data):
        n = pattern[i % len(pattern)]
        out.append(data[pos : pos + n])
        pos += n
        i += 1
    return out


def _generator(chunks: list[bytes], fail_at: int | None) -> Iterator[bytes]:
    """Yield ``chunks``; raise :class:`SourceBoom` once ``fail_at`` bytes are out (if ever)."""
    if fail_at is not None and fail_at > sum(map(len, chunks)):
        fail_at = None
    done = 0
    for chunk in chunks:
        if fail_at is not None and done + len(chunk) > fail_at:
            break
        done += len(chunk)
        yield chunk
    if fail_at is not None:
        raise SourceBoom(f"generator failed after {done} bytes")


@dataclass
class StoreCase:
    """One generated store: how to run it and what outcomes the contract allows."""

    data: bytes
    kind: str
    pattern: list[int]
    chunk_size: int
    source_fail_at: int | None = None
    max_bytes: int | None = None
    min_bytes: int = 0
    expected_size: int | None = None
    digest: str = "none"  # "none" | "right" | "wrong"
    hook_phase: str = "none"
    hook_at: int = 0
    storage_at: str = "none"
    storage_after: int = 0
    overwrite: bool = True
    durable: bool = False
    allowed: set[type[BaseException]] = field(default_factory=set)

    def source(self) -> Any:
        """A fresh source delivering ``data`` as this case says."""
        data, pattern = self.data, self.pattern
        if self.kind == "bytes":
            return data
        if self.kind == "readinto":
            return ShortReader(data, [max(1, p) for p in pattern])
        if self.kind == "read":
            return ReadOnly(data, [max(1, p) for p in pattern])
        if self.kind == "chunks":
            return split(data, pattern)
        if self.kind == "generator":
            return _generator(split(data, pattern), self.source_fail_at)
        assert self.kind == "failing"
        fail_at = self.source_fail_at if self.source_fail_at is not None else len(data) + 1
        return FailingReader(data, fail_at, SourceBoom("reader failed"))

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``store_from_reader``."""
        kw: dict[str, Any] = {
            "chunk_size": self.chunk_size,
            "overwrite": self.overwrite,
            "durable": self.durable,
        }
        if self.max_bytes is not None or self.min_bytes:
            kw["limit"] = SizeLimit(max_bytes=self.max_bytes, min_bytes=self.min_bytes)
        if self.expected_size is not None:
            kw["expected_size"] = self.expected_size
        if self.digest != "none":
            good = hashlib.sha256(self.data).hexdigest()
            kw["expected_sha256"] = good.upper() if self.digest == "right" else "0" * 64
        if self.hook_phase != "none":
            kw["hooks"] = [RaisingHook(self.hook_phase, self.hook_at)]
        return kw


def _allowed(case: StoreCase) -> set[type[BaseException]]:
    """Every error a correct implementation may raise for ``case`` (empty: it must succeed).

    Each fault listed here fires if the store gets far enough, so a non-empty
    set also means the store cannot succeed.
    """
    n = len(case.data)
    allowed: set[type[BaseException]] = set()
    if case.kind in ("failing", "generator") and case.source_fail_at is not None:
        if case.source_fail_at <= n:
            allowed.add(streamstore.SourceError)
    if case.max_bytes is not None and n > case.max_bytes:
        allowed.add(streamstore.TooLargeError)
    if n < case.min_bytes:
        allowed.add(streamstore.TooSmallError)
    if case.expected_size is not None:
        if case.max_bytes is not None and case.expected_size > case.max_bytes:
            allowed.add(streamstore.TooLargeError)  # the declared size alone is too large
        if n > case.expected_size:
            allowed.add(streamstore.TooLargeError)
        elif n < case.expected_size:
            allowed.add(streamstore.PartialWriteError)
    if case.digest == "wrong" and hashlib.sha256(case.data).hexdigest() != "0" * 64:
        allowed.add(streamstore.HashMismatchError)
    if case.hook_phase in ("start", "finish") or (
        case.hook_phase == "chunk" and 1 <= case.hook_at <= n
    ):
        allowed.add(HookBoom)
    if case.storage_at in ("create", "fsync", "rename") or (
        case.storage_at == "write" and n > case.storage_after
    ):
        allowed.add(streamstore.DiskFullError)
    return allowed


payloads = st.binary(min_size=0, max_size=4096)
chunk_patterns = st.lists(st.integers(1, 700), min_size=1, max_size=6)
chunk_sizes = st.sampled_from([1, 7, 64, 512, 4096, 32 * 1024])


@st.composite
def store_cases(draw: st.DrawFn, kinds: Sequence[str] = SOURCE_KINDS) -> StoreCase:
    """A :class:`StoreCase` with random data, delivery and faults."""
    data = draw(payloads)
    n = len(data)
    kind = draw(st.sampled_from(list(kinds)))
    pattern = draw(chunk_patterns)
    if kind == "chunks":  # iterables may hand out empty chunks
        pattern = draw(st.lists(st.integers(0, 700), min_size=1, max_size=6).filter(any))
    case = StoreCase(data=data, kind=kind, pattern=pattern, chunk_size=draw(chunk_sizes))
    near = st.integers(0, n + 16)
    if kind in ("failing", "generator") and draw(st.booleans()):
        case.source_fail_at = draw(near)
    if draw(st.integers(0, 3)) == 0:
        case.max_bytes = draw(near)
    if draw(st.integers(0, 5)) == 0:
        case.min_bytes = draw(st.integers(0, n + 16))
        if case.max_bytes is not None:
            case.min_bytes = min(case.min_bytes, case.max_bytes)
    if draw(st.integers(0, 3)) == 0:
        case.expected_size = draw(st.one_of(st.just(n), near))
    case.digest = draw(st.sampled_from(["none", "none", "right", "wrong"]))
    case.hook_phase = draw(st.sampled_from([*HOOK_PHASES, "none", "none"]))
    if case.hook_phase == "chunk":
        case.hook_at = draw(st.integers(1, n + 16))
    case.storage_at = draw(st.sampled_from([*STORAGE_POINTS, "none", "none", "none"]))
    if case.storage_at == "write":
        case.storage_after = draw(near)
    case.durable = draw(st.integers(0, 7)) == 0
    case.allowed = _allowed(case)
    return case


def tree(directory: str | os.PathLike[str]) -> dict[str, object]:
    """Everything under ``directory``: relative path -> bytes (file), ``("link", target)``
    or ``"dir"``.  Two equal trees mean "the directory is exactly as before"."""
    out: dict[str, object] = {}
    for parent, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(parent, name)
            rel = os.path.relpath(path, directory)
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                out[rel] = "dir"
            else:
                with open(path, "rb") as f:
                    out[rel] = f.read()
    return out

"""Coverage-guided fuzz target for the store pipeline (atheris / libFuzzer).

    python3 -m pip install -e '.[fuzz]'
    python3 fuzz/fuzz_store.py -max_total_time=300      # any libFuzzer flags

Each input is decoded into a payload, a source kind (bytes, short-read
``readinto`` reader, list of chunks, a reader that fails after N bytes), a read
pattern, a chunk size, and faults at input-chosen points: a size limit, a wrong
digest, a hook that raises, a storage failure (``fail_storage``).  The
invariant is the library's contract: success with exactly the payload and
nothing else changed, or one of the errors the injected faults allow with the
directory exactly as before.  Any violation raises ``AssertionError``, which
atheris reports as a crash with the input that caused it.

:func:`test_one_input` needs no atheris: the test suite runs it under
hypothesis (tests/test_fuzz.py).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

try:
    import atheris
except ImportError:  # the per-input check still works without it
    atheris = None

if atheris is not None and __name__ == "__main__":
    with atheris.instrument_imports():
        import streamstore
        import streamstore.testing

import streamstore
from streamstore.testing import FailingReader, ShortReader, fail_storage


class Boom(Exception):
    """Raised by the fuzzed hook and the failing reader."""


class RaiseAt(streamstore.Hook):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
        if bytes_so_far >= self.at:
            raise Boom(f"hook at {bytes_so_far}")


class _Input:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def rest(self) -> bytes:
        return self.data[self.pos :]


def _snapshot(directory: str) -> dict[str, bytes]:
    out = {}
    for name in os.listdir(directory):
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = f.read()
    return out


def test_one_input(data: bytes) -> None:
    """Decode one fuzz input, run the store, and check the contract."""
    inp = _Input(data)
    flags = inp.byte()
    kind = flags % 4
    pattern = [inp.byte() + 1 for _ in range(1 + inp.byte() % 4)]
    chunk_size = inp.byte() + 1
    limit = inp.byte() * 8 if flags & 0x10 else None
    fail_at = inp.byte() * 4 if kind == 3 else None
    hook_at = inp.byte() * 4 + 1 if flags & 0x20 else None
    storage_after = inp.byte() * 4 if flags & 0x40 else None
    wrong_digest = bool(flags & 0x80)
    has_old = bool(flags & 0x08)
    payload = inp.rest()
    n = len(payload)

    allowed: set[type[BaseException]] = set()
    if fail_at is not None and fail_at <= n:
        allowed.add(streamstore.SourceError)
    if limit is not None and n > limit:
        allowed.add(streamstore.TooLargeError)
    if hook_at is not None and hook_at <= n:
        allowed.add(Boom)
    if storage_after is not None and n > storage_after:
        allowed.add(streamstore.DiskFullError)
    if wrong_digest:
        allowed.add(streamstore.HashMismatchError)

    if kind == 0:
        source: object = payload
    elif kind == 1:
        source = ShortReader(payload, pattern)
    elif kind == 2:
        chunks, pos, i = [], 0, 0
        while pos < n:
            chunks.append(payload[pos : pos + pattern[i % len(pattern)]])
            pos += pattern[i % len(pattern)]
            i += 1
        source = chunks
    else:
        assert fail_at is not None
        source = FailingReader(payload, fail_at, Boom("source"))

    with tempfile.TemporaryDirectory(prefix="streamstore-fuzz-") as d:
        dest = Path(d) / "dest"
        if has_old:
            dest.write_bytes(b"old content")
        before = _snapshot(d)
        kwargs: dict[str, object] = {"chunk_size": chunk_size, "durable": False}
        if limit is not None:
            kwargs["limit"] = limit
        if wrong_digest:
            kwargs["expected_sha256"] = "f" * 64
        if hook_at is not None:
            kwargs["hooks"] = [RaiseAt(hook_at)]
        try:
            if storage_after is not None:
                with fail_storage(d, after_bytes=storage_after):
                    result = streamstore.store_from_reader(source, dest, **kwargs)  # type: ignore[arg-type]
            else:
                result = streamstore.store_from_reader(source, dest, **kwargs)  # type: ignore[arg-type]
        except Exception as exc:
            if not allowed or not isinstance(exc, tuple(allowed)):
                raise AssertionError(f"unexpected {exc!r}; allowed {allowed}") from exc
            if isinstance(exc, streamstore.SourceError) and not isinstance(exc.__cause__, Boom):
                raise AssertionError(f"SourceError without the original cause: {exc!r}") from exc
            if _snapshot(d) != before:
                raise AssertionError(f"directory changed after {exc!r}") from exc
            return
        if allowed:
            raise AssertionError(f"succeeded although one of {allowed} must happen")
        if result.size != n or result.sha256 != hashlib.sha256(payload).hexdigest():
            raise AssertionError(f"wrong result {result}")
        if _snapshot(d) != {**before, "dest": payload}:
            raise AssertionError("stored bytes differ from the source")


def main() -> None:
    if atheris is None:
        sys.exit("atheris is not installed: python3 -m pip install -e '.[fuzz]'")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

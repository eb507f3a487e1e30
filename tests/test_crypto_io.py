"""EncryptedSink under every front end, and the decrypting reader: round trips
over sizes around segment boundaries, random range reads against the
plaintext, pread and seek+read sources, the commit point, hooks and limits."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamstore import (
    DecryptionError,
    FileSink,
    HashMismatchError,
    Hook,
    SourceError,
    StorageError,
    StoreResult,
    TooLargeError,
    aopen_writer,
    astore_from_reader,
    open_writer,
    store_from_reader,
)
from streamstore._crypto import SEGMENT_SIZE, ciphertext_size
from streamstore._pending import is_temp_name
from streamstore.crypto import (
    DecryptedReader,
    EncryptedSink,
    Keyring,
    generate_key,
    open_decrypted,
)

RING = Keyring({"k1": generate_key()})
S = SEGMENT_SIZE

boundary_sizes = st.one_of(
    st.sampled_from([0, 1, S - 1, S, S + 1, 2 * S - 1, 2 * S, 2 * S + 1, 3 * S]),
    st.integers(0, 4 * S),
    st.builds(lambda k, d: max(0, k * S + d), st.integers(0, 4), st.integers(-3, 3)),
)


def noise(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


class Seekable(io.RawIOBase):
    """A seekable file without a descriptor (like a ranged reader over object
    storage): counts its requests."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = [offset, self.pos + offset, len(self.data) + offset][whence]
        return self.pos

    def readinto(self, buffer: Any) -> int:
        self.requests += 1
        piece = self.data[self.pos : self.pos + min(len(buffer), 10_000)]  # short reads
        buffer[: len(piece)] = piece
        self.pos += len(piece)
        return len(piece)


def enc_file(tmp_path: Path, data: bytes, ring: Keyring = RING, name: str = "obj") -> Path:
    path = tmp_path / name
    result = store_from_reader(data, EncryptedSink(FileSink(path, durable=False), ring))
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.path == path and result.location == str(path)
    return path


# -- round trips ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=boundary_sizes, chunk=st.sampled_from([1000, 32 * 1024, S, 100_000]),
       data=st.data())
def test_round_trip_and_random_ranges(tmp_path: Path, size: int, chunk: int,
                                      data: st.DataObject) -> None:
    plain = noise(size, size)
    path = tmp_path / f"rt-{size}-{chunk}"
    result = store_from_reader(plain, EncryptedSink(FileSink(path, durable=False), RING),
                               chunk_size=chunk)
    assert (result.size, result.sha256) == (size, hashlib.sha256(plain).hexdigest())
    assert path.stat().st_size == ciphertext_size(size, 2)
    kind = data.draw(st.sampled_from(["path", "file", "bytesio", "seekable"]))
    source: Any = {
        "path": lambda: path,
        "file": lambda: open(path, "rb"),
        "bytesio": lambda: io.BytesIO(path.read_bytes()),
        "seekable": lambda: io.BufferedReader(Seekable(path.read_bytes())),
    }[kind]()
    with open_decrypted(source, RING) as reader:
        assert reader.size == size
        assert reader.read() == plain
        for _ in range(5):
            start = data.draw(st.integers(0, size + 10))
            length = data.draw(st.integers(0, 3 * S))
            reader.seek(start)
            assert reader.read(length) == plain[start : start + length]
            assert reader.tell() == min(max(start, min(start + length, size)), start + length)
        end_offset = data.draw(st.integers(-size, 0))
        assert reader.seek(end_offset, os.SEEK_END) == size + end_offset
        assert reader.read() == plain[size + end_offset :]


@pytest.mark.parametrize("algorithm", ["aes-256-gcm", "chacha20-poly1305"])
def test_both_algorithms(tmp_path: Path, algorithm: str) -> None:
    ring = Keyring({"a": generate_key()}, algorithm=algorithm)
    plain = noise(2 * S + 3)
    path = enc_file(tmp_path, plain, ring)
    with open_decrypted(path, ring) as reader:
        assert reader.algorithm == algorithm
        assert reader.key_id == "a"
        assert reader.read() == plain


def test_reader_api(tmp_path: Path) -> None:
    plain = noise(3 * S + 17)
    path = enc_file(tmp_path, plain)
    with open_decrypted(path, RING) as reader:
        assert isinstance(reader, DecryptedReader)
        assert reader.readable() and reader.seekable() and not reader.writable()
        assert "k1" in repr(reader)
        buf = bytearray(S + 5)
        assert reader.readinto(buf) == len(buf) and buf == plain[: S + 5]
        assert reader.peek(1)[:1] == plain[S + 5 : S + 6]
        assert reader.seek(-10, os.SEEK_CUR) == S - 5
        assert reader.read(10) == plain[S - 5 : S + 5]
        assert reader.readline() == plain[S + 5 :][: plain[S + 5 :].find(b"\n") + 1]
        reader.seek(10**9)
        assert reader.read() == b""
        with pytest.raises(ValueError):
            reader.seek(-1)
        with pytest.raises(ValueError):
            reader.seek(0, 7)
        raw = reader.raw
        raw.seek(5)
        assert raw.read(5) == plain[5:10]
        assert raw.readall() == plain[10:]
        assert raw.readall() == b""
    assert reader.closed
    with pytest.raises(ValueError):
        reader.read()
    key_ring = Keyring({b"\xff\x00": RING._lookup(b"k1")})  # type: ignore[dict-item]
    bpath = enc_file(tmp_path, b"x", key_ring, "bin-id")
    with open_decrypted(bpath, key_ring) as reader:
        assert reader.key_id == b"\xff\x00"


def test_reader_reads_whole_segments_one_request_each(tmp_path: Path) -> None:
    plain = noise(4 * S)
    blob = enc_file(tmp_path, plain).read_bytes()
    raw = Seekable(blob)
    with open_decrypted(io.BufferedReader(raw, 1), RING) as reader:
        opening = raw.requests
        reader.seek(2 * S + 100)
        assert reader.read(10) == plain[2 * S + 100 : 2 * S + 110]
        # One segment (65,552 bytes) fetched in 10,000-byte short reads: 7 requests.
        assert raw.requests - opening == 7


def test_reader_closes_what_it_was_given(tmp_path: Path) -> None:
    path = enc_file(tmp_path, b"abc")
    f = open(path, "rb")
    with open_decrypted(f, RING) as reader:
        assert reader.read() == b"abc"
    assert f.closed
    g = open(path, "rb")
    with pytest.raises(DecryptionError):
        open_decrypted(g, Keyring({"k1": generate_key()}))
    assert g.closed
    with pytest.raises(TypeError):
        open_decrypted(12, RING)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        open_decrypted(path, {"k1": b"x"})  # type: ignore[arg-type]
    with pytest.raises(StorageError):
        open_decrypted(tmp_path / "missing", RING)


def test_path_readers_leak_no_descriptor(tmp_path: Path) -> None:
    path = enc_file(tmp_path, b"abc")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with open_decrypted(path, RING) as reader:
            reader.read()
        with pytest.raises(DecryptionError):
            open_decrypted(path, Keyring({"k1": generate_key()}))
    assert len(os.listdir("/proc/self/fd")) == before


# -- the sink under the front ends ------------------------------------------------------


class Recorder(Hook):
    def __init__(self) -> None:
        self.seen = bytearray()
        self.events: list[str] = []

    def on_start(self, expected_size: int | None) -> None:
        self.events.append(f"start {expected_size}")

    def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
        self.seen.extend(chunk)

    def on_finish(self, result: StoreResult) -> None:
        self.events.append(f"finish {result.size}")

    def on_commit(self, result: StoreResult) -> None:
        self.events.append("commit")

    def on_abort(self, exc: BaseException) -> None:
        self.events.append(f"abort {type(exc).__name__}")


def test_hooks_limits_and_digests_see_the_plaintext(tmp_path: Path) -> None:
    plain = noise(S + 10)
    hook = Recorder()
    path = tmp_path / "obj"
    digest = hashlib.sha256(plain).hexdigest()
    result = store_from_reader(plain, EncryptedSink(FileSink(path), RING), hooks=[hook],
                               expected_sha256=digest, expected_size=len(plain),
                               limit=len(plain))
    assert hook.seen == plain
    assert hook.events == [f"start {len(plain)}", f"finish {len(plain)}", "commit"]
    assert result.sha256 == digest
    with open_decrypted(path, RING) as reader:
        assert reader.read() == plain


@pytest.mark.parametrize("failure", ["limit", "digest", "source"])
def test_a_failed_encrypted_store_leaves_nothing(tmp_path: Path, failure: str) -> None:
    plain = noise(3 * S)
    path = tmp_path / "obj"
    path.write_bytes(b"old")
    hook = Recorder()
    sink = EncryptedSink(FileSink(path), RING)

    def broken() -> Any:
        yield plain[:S]
        raise ConnectionResetError("peer went away")

    options: dict[str, Any] = {"hooks": [hook]}
    source: Any = plain
    expected: type[BaseException]
    if failure == "limit":
        options["limit"], expected = 2 * S, TooLargeError
    elif failure == "digest":
        options["expected_sha256"], expected = "0" * 64, HashMismatchError
    else:
        source, expected = broken(), SourceError
    with pytest.raises(expected):
        store_from_reader(source, sink, **options)
    assert path.read_bytes() == b"old"
    assert not [n for n in os.listdir(tmp_path) if is_temp_name(n)]
    assert hook.events[-1] == f"abort {expected.__name__}"
    sink.abort()  # idempotent


def test_open_writer_and_the_declared_size_reaches_the_inner_sink(tmp_path: Path) -> None:
    declared: list[int | None] = []

    class Spy(FileSink):
        def start(self, expected_size: int | None = None) -> None:
            declared.append(expected_size)
            super().start(expected_size)

    plain = noise(2 * S)
    path = tmp_path / "w"
    sink = EncryptedSink(Spy(path), RING)
    with open_writer(sink, expected_size=len(plain)) as w:
        for i in range(0, len(plain), 5000):
            w.write(plain[i : i + 5000])
    assert w.result is not None and w.result.size == len(plain)
    assert declared == [ciphertext_size(len(plain), 2)] == [path.stat().st_size]
    assert sink.ciphertext_size == path.stat().st_size
    assert "EncryptedSink(FileSink(" in repr(sink) and "k1" in repr(sink)


def test_async_front_ends(tmp_path: Path) -> None:
    plain = noise(3 * S + 1)

    async def chunks() -> Any:
        for i in range(0, len(plain), 7000):
            yield plain[i : i + 7000]

    async def main() -> None:
        a = tmp_path / "a"
        result = await astore_from_reader(chunks(), EncryptedSink(FileSink(a), RING))
        assert result.size == len(plain)
        b = tmp_path / "b"
        async with aopen_writer(EncryptedSink(FileSink(b), RING)) as w:
            await w.write(plain)
        for path in (a, b):
            with open_decrypted(path, RING) as reader:
                assert reader.read() == plain

    asyncio.run(main())


def test_sink_misuse(tmp_path: Path) -> None:
    sink = EncryptedSink(FileSink(tmp_path / "x"), RING)
    with pytest.raises(RuntimeError):
        sink.write(memoryview(b"early"))
    with pytest.raises(RuntimeError):
        sink.prepare(StoreResult(None, 0, "0" * 64))
    with pytest.raises(TypeError):
        EncryptedSink(object(), RING)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        EncryptedSink(FileSink(tmp_path / "y"), "key")  # type: ignore[arg-type]
    sink.start(None)
    with pytest.raises(RuntimeError):
        sink.start(None)
    sink.abort()
    assert sink.committed is None
    assert os.listdir(tmp_path) == []


def test_a_sink_without_start_or_prepare(tmp_path: Path) -> None:
    got = bytearray()
    told: list[StoreResult] = []

    class Minimal:
        def write(self, chunk: memoryview) -> None:
            got.extend(chunk)

        def commit(self, result: StoreResult) -> StoreResult:
            told.append(result)
            return result

        def abort(self) -> None:
            pass

    result = store_from_reader(b"minimal", EncryptedSink(Minimal(), RING))  # type: ignore[arg-type]
    assert result.size == 7 and result.sha256 == hashlib.sha256(b"minimal").hexdigest()
    # The inner sink is told the size of what it received, and the plaintext's name.
    assert told == [StoreResult(None, len(got), result.sha256)]
    assert len(got) == ciphertext_size(7, 2)
    with open_decrypted(io.BytesIO(bytes(got)), RING) as reader:
        assert reader.read() == b"minimal"


def test_committed_is_delegated(tmp_path: Path) -> None:
    class Late(FileSink):
        def commit(self, result: StoreResult) -> StoreResult:
            super().commit(result)
            raise KeyboardInterrupt  # just after the bytes became visible

    path = tmp_path / "late"
    with pytest.raises(KeyboardInterrupt) as info:
        store_from_reader(b"data", EncryptedSink(Late(path), RING))
    committed = info.value.committed  # type: ignore[attr-defined]
    assert committed.size == 4 and committed.path == path
    with open_decrypted(path, RING) as reader:
        assert reader.read() == b"data"


def test_rotation_old_objects_stay_readable(tmp_path: Path) -> None:
    old_key, new_key = generate_key(), generate_key()
    before = Keyring({"2024": old_key})
    old = enc_file(tmp_path, b"old object", before, "old")
    after = Keyring({"2024": old_key, "2025": new_key}, active="2025")
    new = enc_file(tmp_path, b"new object", after, "new")
    with open_decrypted(old, after) as reader:
        assert reader.key_id == "2024" and reader.read() == b"old object"
    with open_decrypted(new, after) as reader:
        assert reader.key_id == "2025" and reader.read() == b"new object"
    with pytest.raises(DecryptionError, match="2025"):
        open_decrypted(new, before)


def test_empty_reads(tmp_path: Path) -> None:
    path = enc_file(tmp_path, b"abc")
    with open_decrypted(path, RING) as reader:
        assert reader.read(0) == b""
        assert reader.raw.readinto(bytearray()) == 0
        assert reader.read() == b"abc"
    empty = enc_file(tmp_path, b"", name="empty")
    with open_decrypted(empty, RING) as reader:
        assert reader.size == 0 and reader.read() == b"" and reader.read(5) == b""
        assert reader.seek(0, os.SEEK_END) == 0


# -- constant memory ----------------------------------------------------------------------

MiB = 1024 * 1024


class Pattern:
    """A readinto() source of ``size`` bytes that allocates nothing per call."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = memoryview(bytes(range(256)) * 512)

    def readinto(self, buffer: memoryview) -> int:
        n = min(len(buffer), self.left, len(self.block))
        buffer[:n] = self.block[:n]
        self.left -= n
        return n


def heap_peaks(size: int, path: Path) -> tuple[int, int]:
    """Peak Python heap while encrypting ``size`` bytes to ``path``, then while
    decrypting them back (1 MiB reads)."""
    import tracemalloc

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        store_from_reader(Pattern(size), EncryptedSink(FileSink(path, durable=False), RING))
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        buffer = memoryview(bytearray(MiB))
        total = 0
        with open_decrypted(path, RING) as reader:
            while n := reader.readinto(buffer):
                total += n
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    path.unlink()
    return write_peak, read_peak


def test_encrypting_and_decrypting_keep_the_heap_flat(tmp_path: Path) -> None:
    small = heap_peaks(4 * MiB, tmp_path / "small")
    large = heap_peaks(64 * MiB, tmp_path / "large")
    for before, after in zip(small, large, strict=True):
        assert after < 2 * MiB, f"peak heap {after} bytes for 64 MiB"
        assert after <= before + 64 * 1024, f"heap grew with size: {before} -> {after}"


@pytest.mark.parametrize("at", ["write", "fsync", "rename"])
def test_storage_faults_under_an_encrypted_sink(tmp_path: Path, at: str) -> None:
    from streamstore import DiskFullError
    from streamstore.testing import fail_storage

    path = tmp_path / "obj"
    path.write_bytes(b"old")
    plain = noise(3 * S)
    with fail_storage(tmp_path, at=at, after_bytes=S) as fault:  # type: ignore[arg-type]
        with pytest.raises(DiskFullError):
            store_from_reader(plain, EncryptedSink(FileSink(path), RING))
    assert fault.triggered == 1
    assert path.read_bytes() == b"old"
    assert not [n for n in os.listdir(tmp_path) if is_temp_name(n)]

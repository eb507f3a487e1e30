"""store_from_reader: every source kind, every check, every error, and the
directory exactly as before whenever it fails."""

from __future__ import annotations

import array
import errno
import hashlib
import io
import itertools
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import streamstore as ss
from helpers import ReadOnly, ShortReads, Untouchable, raising_after, snapshot, temp_files
from streamstore._pending import TempSink

DATA = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(DATA).hexdigest()


def gen(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


SOURCES: dict[str, Any] = {
    "bytes": lambda: DATA,
    "bytearray": lambda: bytearray(DATA),
    "memoryview": lambda: memoryview(DATA),
    "array": lambda: array.array("B", DATA),
    "BytesIO": lambda: io.BytesIO(DATA),
    "BufferedReader": lambda: io.BufferedReader(io.BytesIO(DATA)),
    "read-only": lambda: ReadOnly(DATA),
    "short readinto": lambda: ShortReads(DATA, [1, 7, 4096, 65536, 3]),
    "list of chunks": lambda: [DATA[:10], b"", DATA[10:100_000], bytearray(DATA[100_000:])],
    "generator": lambda: gen(DATA, 1000),
    "huge chunks": lambda: gen(DATA, 300_000),
}


@pytest.mark.parametrize("kind", SOURCES)
def test_every_source_kind_stores_exact_bytes(kind: str, dest_dir: Path) -> None:
    dest = dest_dir / "f.bin"
    result = ss.store_from_reader(SOURCES[kind](), dest)
    assert result == ss.StoreResult(dest, len(DATA), SHA)
    assert dest.read_bytes() == DATA
    assert temp_files(dest_dir) == []


def test_real_binary_file(tmp_path: Path, dest_dir: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(DATA)
    with src.open("rb") as f:
        result = ss.store_from_reader(f, dest_dir / "copy")
    assert result.sha256 == SHA and (dest_dir / "copy").read_bytes() == DATA
    with src.open("rb", buffering=0) as f:
        assert ss.store_from_reader(f, dest_dir / "copy2").size == len(DATA)


def test_empty_source(dest_dir: Path) -> None:
    result = ss.store_from_reader(b"", dest_dir / "empty")
    assert result.size == 0 and result.sha256 == hashlib.sha256(b"").hexdigest()
    assert (dest_dir / "empty").read_bytes() == b""


@pytest.mark.parametrize("dest_type", [str, Path, os.fsencode])
def test_dest_may_be_str_path_or_bytes(dest_type: Any, dest_dir: Path) -> None:
    result = ss.store_from_reader(b"abc", dest_type(str(dest_dir / "x")))
    assert result.path == dest_dir / "x"
    assert isinstance(result.path, Path)


def test_relative_dest_uses_the_working_directory(dest_dir: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(dest_dir)
    ss.store_from_reader(b"abc", "rel.txt")
    assert (dest_dir / "rel.txt").read_bytes() == b"abc"


# -- bad sources: TypeError naming the fix, nothing on disk ---------------------------------

class AsyncOnly:
    async def read(self, n: int) -> bytes:
        return b""


BAD_SOURCES: dict[str, tuple[Any, str]] = {
    "str": (lambda tmp: "text", "encode"),
    "text file": (lambda tmp: open(tmp / "t.txt", "w+", encoding="utf-8"), "binary mode"),
    "StringIO": (lambda tmp: io.StringIO("abc"), "binary mode"),
    "int": (lambda tmp: 42, "cannot store from int"),
    "object": (lambda tmp: object(), "cannot store from object"),
    "async reader": (lambda tmp: AsyncOnly(), "astore_from_reader"),
    "str chunks": (lambda tmp: ["abc"], "text mode"),
    "int chunks": (lambda tmp: [b"ok", 5], "returned int"),
    "read() gives str": (lambda tmp: type("R", (), {"read": lambda self, n: "x"})(), "text mode"),
}


@pytest.mark.parametrize("kind", BAD_SOURCES)
def test_bad_sources_raise_type_error_and_leave_nothing(
    kind: str, tmp_path: Path, dest_dir: Path
) -> None:
    make, hint = BAD_SOURCES[kind]
    source = make(tmp_path)
    with pytest.raises(TypeError, match=hint):
        ss.store_from_reader(source, dest_dir / "f")
    if hasattr(source, "close"):
        source.close()
    assert snapshot(dest_dir) == {}


def test_sys_stdin_text_mode_is_rejected_with_a_hint(dest_dir: Path) -> None:
    stream = io.TextIOWrapper(io.BytesIO(b"abc"), encoding="utf-8")
    with pytest.raises(TypeError, match=r"\.buffer"):
        ss.store_from_reader(stream, dest_dir / "f")


# -- bad arguments: fail before any byte is read ---------------------------------------------

BAD_ARGS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"expected_sha256": "abc"}, ValueError, "64 hexadecimal"),
    ({"expected_sha256": "g" * 64}, ValueError, "64 hexadecimal"),
    ({"expected_sha256": b"a" * 64}, TypeError, "hex str"),
    ({"expected_size": -1}, ValueError, "expected_size must be >= 0"),
    ({"expected_size": 1.5}, TypeError, "expected_size must be an int"),
    ({"limit": -1}, ValueError, "limit must be >= 0"),
    ({"limit": True}, TypeError, "limit must be an int or a SizeLimit"),
    ({"limit": "10M"}, TypeError, "limit must be an int or a SizeLimit"),
    ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
    ({"mode": 0o10000}, ValueError, "permission bits"),
    ({"hooks": [object()]}, TypeError, "Hook instances"),
    ({"hooks": ss.Hook()}, TypeError, "wrap a single hook"),
    ({"progress": 5}, TypeError, "must be callable"),
    ({"errors": 5}, TypeError, "errors= must be"),
    ({"errors": {ValueError: lambda e: e}}, TypeError, "StreamStoreError subclasses"),
]


@pytest.mark.parametrize(("kwargs", "exc", "match"), BAD_ARGS)
def test_bad_arguments_fail_before_reading(
    kwargs: dict[str, Any], exc: type[Exception], match: str, dest_dir: Path
) -> None:
    source = Untouchable()
    with pytest.raises(exc, match=match):
        ss.store_from_reader(source, dest_dir / "f", **kwargs)
    assert not source.touched
    assert snapshot(dest_dir) == {}


async def _async_progress(p: ss.Progress) -> None:
    pass


def test_coroutine_progress_callback_is_rejected(dest_dir: Path) -> None:
    with pytest.raises(TypeError, match="coroutine"):
        ss.store_from_reader(b"x", dest_dir / "f", progress=_async_progress)


def test_coroutine_hook_methods_are_rejected_at_class_creation() -> None:
    with pytest.raises(TypeError, match="coroutine"):
        class Bad(ss.Hook):
            async def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
                pass


def test_misspelled_hook_methods_are_rejected_at_class_creation() -> None:
    with pytest.raises(TypeError, match="on_chunks is not a hook method"):
        class Typo(ss.Hook):
            def on_chunks(self, chunk: memoryview, bytes_so_far: int) -> None:
                pass


@pytest.mark.parametrize("bad", ["", "dir/", ".", ".."])
def test_dest_must_name_a_file(bad: str, dest_dir: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(dest_dir)
    with pytest.raises(ValueError, match="must name a file"):
        ss.store_from_reader(b"x", bad)


def test_missing_parent_directory_is_not_created(tmp_path: Path) -> None:
    source = Untouchable()
    with pytest.raises(ss.StorageError, match="does not exist") as info:
        ss.store_from_reader(source, tmp_path / "missing" / "f")
    assert info.value.errno == errno.ENOENT
    assert not source.touched
    assert not (tmp_path / "missing").exists()


def test_dest_that_is_a_directory(dest_dir: Path) -> None:
    (dest_dir / "sub").mkdir()
    source = Untouchable()
    with pytest.raises(ss.StorageError, match="is a directory") as info:
        ss.store_from_reader(source, dest_dir / "sub")
    assert info.value.errno == errno.EISDIR and not source.touched


def test_parent_that_is_a_file(dest_dir: Path) -> None:
    (dest_dir / "file").write_bytes(b"x")
    with pytest.raises(ss.StorageError) as info:
        ss.store_from_reader(b"abc", dest_dir / "file" / "f")
    assert info.value.errno == errno.ENOTDIR


# -- checks -------------------------------------------------------------------------------

def test_expected_sha256_is_case_insensitive(dest_dir: Path) -> None:
    result = ss.store_from_reader(DATA, dest_dir / "f", expected_sha256=SHA.upper())
    assert result.sha256 == SHA


def test_hash_mismatch_leaves_old_content(dest_dir: Path) -> None:
    dest = dest_dir / "f"
    dest.write_bytes(b"old")
    with pytest.raises(ss.HashMismatchError) as info:
        ss.store_from_reader(DATA, dest, expected_sha256="0" * 64)
    assert (info.value.expected, info.value.actual, info.value.dest) == ("0" * 64, SHA, dest)
    assert snapshot(dest_dir) == {"f": b"old"}


def test_expected_size_exact(dest_dir: Path) -> None:
    assert ss.store_from_reader(DATA, dest_dir / "f", expected_size=len(DATA)).size == len(DATA)


def test_source_shorter_than_expected_size(dest_dir: Path) -> None:
    with pytest.raises(ss.PartialWriteError) as info:
        ss.store_from_reader(DATA, dest_dir / "f", expected_size=len(DATA) + 1)
    assert (info.value.expected_size, info.value.actual_size) == (len(DATA) + 1, len(DATA))
    assert snapshot(dest_dir) == {}


class WrittenBytes:
    """Spy on TempSink.write: how many bytes reached the temp file."""

    def __init__(self, monkeypatch: Any) -> None:
        self.total = 0
        original = TempSink.write

        def write(pending: TempSink, data: memoryview | bytes) -> None:
            self.total += len(data)
            original(pending, data)

        monkeypatch.setattr(TempSink, "write", write)


def test_source_longer_than_expected_size_stops_before_writing_the_excess(
    dest_dir: Path, monkeypatch: Any
) -> None:
    written = WrittenBytes(monkeypatch)
    with pytest.raises(ss.TooLargeError) as info:
        ss.store_from_reader(io.BytesIO(DATA), dest_dir / "f", expected_size=100_000)
    assert info.value.limit == 100_000
    assert 100_000 < info.value.size <= 100_000 + 32 * 1024
    assert written.total <= 100_000
    assert snapshot(dest_dir) == {}


def test_limit_stops_an_endless_source_within_one_chunk(dest_dir: Path, monkeypatch: Any) -> None:
    written = WrittenBytes(monkeypatch)

    class Endless:
        reads = 0

        def readinto(self, buffer: memoryview) -> int:
            self.reads += 1
            return len(buffer)

    endless = Endless()
    with pytest.raises(ss.TooLargeError) as info:
        ss.store_from_reader(endless, dest_dir / "f", limit=1024 * 1024)
    assert info.value.limit == 1024 * 1024
    assert info.value.size == 1024 * 1024 + 32 * 1024
    assert endless.reads == 1024 // 32 + 1
    assert written.total == 1024 * 1024
    assert snapshot(dest_dir) == {}


def test_declared_size_over_the_limit_fails_before_reading(dest_dir: Path) -> None:
    source = Untouchable()
    with pytest.raises(ss.TooLargeError, match="declared size") as info:
        ss.store_from_reader(source, dest_dir / "f", limit=10, expected_size=11)
    assert (info.value.limit, info.value.size) == (10, 11)
    assert not source.touched and snapshot(dest_dir) == {}


def test_size_limit_min_and_max(dest_dir: Path) -> None:
    lim = ss.SizeLimit(max_bytes=len(DATA), min_bytes=len(DATA))
    assert ss.store_from_reader(DATA, dest_dir / "ok", limit=lim).size == len(DATA)
    with pytest.raises(ss.TooSmallError) as info:
        ss.store_from_reader(b"abc", dest_dir / "small", limit=ss.SizeLimit(min_bytes=4))
    assert (info.value.limit, info.value.size) == (4, 3)
    with pytest.raises(ss.TooLargeError):
        ss.store_from_reader(DATA, dest_dir / "big", limit=ss.SizeLimit(max_bytes=len(DATA) - 1))
    assert snapshot(dest_dir) == {"ok": DATA}


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"max_bytes": -1}, ValueError),
        ({"min_bytes": -1}, ValueError),
        ({"max_bytes": 1, "min_bytes": 2}, ValueError),
        ({"max_bytes": 1.0}, TypeError),
    ],
)
def test_size_limit_validates(kwargs: dict[str, Any], exc: type[Exception]) -> None:
    with pytest.raises(exc, match="SizeLimit"):
        ss.SizeLimit(**kwargs)


# -- progress -----------------------------------------------------------------------------

def test_progress_first_zero_then_throttled_then_final(dest_dir: Path) -> None:
    reports: list[ss.Progress] = []
    data = DATA * 3
    result = ss.store_from_reader(
        io.BytesIO(data), dest_dir / "f", progress=reports.append, expected_size=len(data)
    )
    done = [p.bytes_done for p in reports]
    assert done[0] == 0 and done[-1] == result.size
    assert done == sorted(done)
    assert all(p.total == len(data) for p in reports)
    assert [p.elapsed for p in reports] == sorted(p.elapsed for p in reports)
    steps = [b - a for a, b in itertools.pairwise(done[1:-1])]
    assert all(step >= 256 * 1024 for step in steps)
    assert len(reports) <= len(data) // (256 * 1024) + 2
    assert reports[-1].fraction == 1.0


def test_progress_step_can_be_changed(dest_dir: Path) -> None:
    reports: list[int] = []
    hook = ss.ProgressHook(lambda p: reports.append(p.bytes_done), step=64 * 1024)
    ss.store_from_reader(io.BytesIO(DATA), dest_dir / "f", progress=hook)
    assert len(reports) == len(DATA) // (64 * 1024) + 1  # 0, every step, no repeated end
    assert reports == sorted(set(reports)) and reports[-1] == len(DATA)
    with pytest.raises(ValueError, match="step"):
        ss.ProgressHook(print, step=0)


def test_progress_without_total(dest_dir: Path) -> None:
    reports: list[ss.Progress] = []
    ss.store_from_reader(b"abc", dest_dir / "f", progress=reports.append)
    seen = [(p.bytes_done, p.total, p.fraction) for p in reports]
    assert seen == [(0, None, None), (3, None, None)]


# -- hooks --------------------------------------------------------------------------------

class Recorder(ss.Hook):
    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.events: list[tuple[Any, ...]] = []

    def on_start(self, expected_size: int | None) -> None:
        self.events.append(("start", expected_size))

    def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
        self.events.append(("chunk", bytes(chunk[:4]), len(chunk), bytes_so_far))

    def on_finish(self, result: ss.StoreResult) -> None:
        temps = temp_files(self.dest.parent)
        tmp_size = os.stat(self.dest.parent / temps[0]).st_size
        self.events.append(("finish", result, self.dest.exists(), len(temps), tmp_size))


def test_hooks_see_start_every_chunk_and_finish_before_visibility(dest_dir: Path) -> None:
    dest = dest_dir / "f"
    rec = Recorder(dest)
    result = ss.store_from_reader([b"GIF89a", b"rest" * 10], dest, hooks=[rec], expected_size=46)
    assert rec.events == [
        ("start", 46),
        ("chunk", b"GIF8", 6, 6),
        ("chunk", b"rest", 40, 46),
        ("finish", result, False, 1, 46),
    ]


def test_chunks_never_exceed_chunk_size(dest_dir: Path) -> None:
    rec = Recorder(dest_dir / "f")
    ss.store_from_reader([DATA], dest_dir / "f", hooks=[rec], chunk_size=1000)
    sizes = [e[2] for e in rec.events if e[0] == "chunk"]
    assert max(sizes) == 1000 and sum(sizes) == len(DATA)


class NotAnImage(Exception):
    pass


class Fail(ss.Hook):
    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, expected_size: int | None) -> None:
        if self.where == "start":
            raise NotAnImage("start")

    def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
        if self.where == "chunk" and bytes_so_far > 100_000:
            raise NotAnImage("chunk")

    def on_finish(self, result: ss.StoreResult) -> None:
        if self.where == "finish":
            raise NotAnImage("finish")


@pytest.mark.parametrize("where", ["start", "chunk", "finish"])
def test_a_raising_hook_aborts_and_propagates_unchanged(where: str, dest_dir: Path) -> None:
    (dest_dir / "f").write_bytes(b"old")
    err = {}
    with pytest.raises(NotAnImage, match=where) as info:
        ss.store_from_reader(io.BytesIO(DATA), dest_dir / "f", hooks=[Fail(where)],
                             errors=lambda e: err.setdefault("called", e))
    assert type(info.value) is NotAnImage and err == {}
    assert snapshot(dest_dir) == {"f": b"old"}


def test_a_hook_that_rejects_by_magic_number(dest_dir: Path) -> None:
    class OnlyPNG(ss.Hook):
        def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
            if bytes_so_far == len(chunk) and bytes(chunk[:8]) != b"\x89PNG\r\n\x1a\n":
                raise ValueError("not a PNG")

    with pytest.raises(ValueError, match="not a PNG"):
        ss.store_from_reader(b"GIF89a....", dest_dir / "f", hooks=[OnlyPNG()])
    png = b"\x89PNG\r\n\x1a\n" + DATA
    assert ss.store_from_reader(png, dest_dir / "g", hooks=[OnlyPNG()]).size == len(png)


# -- error-type hook ----------------------------------------------------------------------

class HTTPError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def test_errors_mapping_most_specific_class_wins(dest_dir: Path) -> None:
    mapping = {
        ss.StreamStoreError: lambda e: HTTPError(500),
        ss.SizeLimitError: lambda e: HTTPError(400),
        ss.TooLargeError: lambda e: HTTPError(413),
    }
    with pytest.raises(HTTPError) as info:
        ss.store_from_reader(DATA, dest_dir / "f", limit=10, errors=mapping)
    assert info.value.status == 413
    assert isinstance(info.value.__cause__, ss.TooLargeError)
    with pytest.raises(HTTPError) as info:
        ss.store_from_reader(b"", dest_dir / "f", limit=ss.SizeLimit(min_bytes=1), errors=mapping)
    assert info.value.status == 400
    with pytest.raises(HTTPError) as info:
        ss.store_from_reader(DATA, dest_dir / "f", expected_sha256="0" * 64, errors=mapping)
    assert info.value.status == 500
    assert snapshot(dest_dir) == {}


def test_errors_mapping_without_a_match_raises_the_original(dest_dir: Path) -> None:
    with pytest.raises(ss.TooLargeError):
        ss.store_from_reader(DATA, dest_dir / "f", limit=10,
                             errors={ss.HashMismatchError: lambda e: HTTPError(422)})


def test_errors_callable_may_decline(dest_dir: Path) -> None:
    seen: list[BaseException] = []

    def factory(exc: ss.StreamStoreError) -> BaseException | None:
        seen.append(exc)
        return HTTPError(507) if isinstance(exc, ss.DiskFullError) else None

    with pytest.raises(ss.TooLargeError) as info:
        ss.store_from_reader(DATA, dest_dir / "f", limit=10, errors=factory)
    assert seen == [info.value] and info.value.dest == dest_dir / "f"


# -- source failures ----------------------------------------------------------------------

def test_source_exception_becomes_source_error_with_cause(dest_dir: Path) -> None:
    (dest_dir / "f").write_bytes(b"old")
    reset = ConnectionResetError(104, "Connection reset by peer")
    with pytest.raises(ss.SourceError, match="after 3 bytes") as info:
        ss.store_from_reader(raising_after(b"abc", reset), dest_dir / "f")
    assert info.value.__cause__ is reset and info.value.dest == dest_dir / "f"
    assert snapshot(dest_dir) == {"f": b"old"}


def test_keyboard_interrupt_propagates_and_cleans_up(dest_dir: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        ss.store_from_reader(raising_after(b"abc", KeyboardInterrupt()), dest_dir / "f")
    assert snapshot(dest_dir) == {}


@pytest.mark.parametrize(
    ("reader", "match"),
    [
        (type("R", (), {"readinto": lambda self, b: None}), "non-blocking"),
        (type("R", (), {"readinto": lambda self, b: len(b) + 1}), "returned"),
        (type("R", (), {"readinto": lambda self, b: -1}), "returned -1"),
        (type("R", (), {"read": lambda self, n: None}), "non-blocking"),
        (type("R", (), {"read": lambda self, n: b"x" * (n + 1)}), "more than"),
    ],
)
def test_misbehaving_sources(reader: type, match: str, dest_dir: Path) -> None:
    with pytest.raises(ss.SourceError, match=match):
        ss.store_from_reader(reader(), dest_dir / "f")
    assert snapshot(dest_dir) == {}


# -- overwrite, durability, mode ----------------------------------------------------------

def test_overwrite_replaces_atomically(dest_dir: Path) -> None:
    (dest_dir / "f").write_bytes(b"old")
    ss.store_from_reader(b"new", dest_dir / "f")
    assert snapshot(dest_dir) == {"f": b"new"}


def test_exclusive_create_refuses_an_existing_dest_before_reading(dest_dir: Path) -> None:
    (dest_dir / "f").write_bytes(b"old")
    source = Untouchable()
    with pytest.raises(ss.DestinationExistsError) as info:
        ss.store_from_reader(source, dest_dir / "f", overwrite=False)
    assert info.value.errno == errno.EEXIST
    assert not source.touched and snapshot(dest_dir) == {"f": b"old"}
    assert ss.store_from_reader(b"new", dest_dir / "g", overwrite=False).size == 3


def test_exclusive_create_refuses_a_dangling_symlink(dest_dir: Path) -> None:
    (dest_dir / "link").symlink_to(dest_dir / "nowhere")
    with pytest.raises(ss.DestinationExistsError):
        ss.store_from_reader(b"x", dest_dir / "link", overwrite=False)
    assert not (dest_dir / "nowhere").exists()


def test_exclusive_create_has_exactly_one_winner(dest_dir: Path) -> None:
    barrier = threading.Barrier(8)
    outcomes: list[object] = []

    class Wait(ss.Hook):
        def on_finish(self, result: ss.StoreResult) -> None:
            barrier.wait(timeout=10)

    def worker(i: int) -> None:
        try:
            ss.store_from_reader(bytes([i]) * 1000, dest_dir / "f", overwrite=False,
                                 hooks=[Wait()])
            outcomes.append(i)
        except ss.DestinationExistsError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if isinstance(o, int)]
    assert len(winners) == 1 and len(outcomes) == 8
    assert snapshot(dest_dir) == {"f": bytes([winners[0]]) * 1000}


@pytest.mark.parametrize("durable", [True, False])
def test_durable_fsyncs_file_and_directory(durable: bool, dest_dir: Path, monkeypatch: Any) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        synced.append(kind)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    ss.store_from_reader(DATA, dest_dir / "f", durable=durable)
    assert synced == (["file", "dir"] if durable else [])


def test_default_mode_follows_the_umask_without_setting_it(tmp_path: Path) -> None:
    script = (
        "import os, sys, streamstore\n"
        "os.umask(0o027)\n"
        "streamstore.store_from_reader(b'x', sys.argv[1])\n"
        "print(oct(os.umask(0o027)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "f")],
                         check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "0o27"
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o640


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o444, 0o640])
def test_explicit_mode(mode: int, dest_dir: Path) -> None:
    ss.store_from_reader(DATA, dest_dir / "f", mode=mode)
    assert stat.S_IMODE((dest_dir / "f").stat().st_mode) == mode


def test_umask_is_never_touched(dest_dir: Path, monkeypatch: Any) -> None:
    def forbidden(mask: int) -> int:
        raise AssertionError("os.umask is process-wide and must not be called")

    monkeypatch.setattr(os, "umask", forbidden)
    ss.store_from_reader(b"x", dest_dir / "f")


def test_temp_file_lives_beside_dest_with_a_recognisable_name(dest_dir: Path) -> None:
    seen: list[str] = []

    class Look(ss.Hook):
        def on_start(self, expected_size: int | None) -> None:
            seen.extend(os.listdir(dest_dir))

    ss.store_from_reader(b"x", dest_dir / "report.pdf", hooks=[Look()])
    assert len(seen) == 1
    assert seen[0].startswith(f".streamstore-tmp.{os.getpid()}.")
    assert seen[0].endswith(".report.pdf")


def test_very_long_dest_names_still_get_a_temp(dest_dir: Path) -> None:
    name = "é" * 127  # 254 bytes in UTF-8
    ss.store_from_reader(b"x", dest_dir / name)
    assert snapshot(dest_dir) == {name: b"x"}


def test_dest_symlink_is_replaced_not_followed(dest_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"target")
    (dest_dir / "f").symlink_to(target)
    ss.store_from_reader(b"new", dest_dir / "f")
    assert not (dest_dir / "f").is_symlink()
    assert target.read_bytes() == b"target" and (dest_dir / "f").read_bytes() == b"new"


def test_strided_and_multidimensional_buffers_are_stored_as_their_bytes(dest_dir: Path) -> None:
    raw = bytes(range(256)) * 4
    strided = memoryview(raw)[::2]
    matrix = memoryview(raw).cast("B", (32, 32))
    ss.store_from_reader([strided, matrix], dest_dir / "f")
    assert (dest_dir / "f").read_bytes() == raw[::2] + raw
    ss.store_from_reader(strided, dest_dir / "g")
    assert (dest_dir / "g").read_bytes() == raw[::2]

"""streamstore.testing: the readers, fail_storage and the pytest plugin do what they document."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import streamstore
from streamstore import (
    DiskFullError,
    PartialWriteError,
    SourceError,
    StorageError,
    StoragePermissionError,
    astore_from_reader,
    store_from_reader,
)
from streamstore.testing import (
    AsyncFailingReader,
    AsyncShortReader,
    AsyncSlowReader,
    AsyncTruncatedReader,
    FailingReader,
    ShortReader,
    SlowReader,
    TruncatedReader,
    assert_no_temp_files,
    fail_storage,
    temp_files,
)

pytest_plugins = ["pytester"]

DATA = bytes(range(256)) * 64  # 16 KiB


def reads(reader: object, n: int) -> list[bytes]:
    out = []
    while chunk := reader.read(n):  # type: ignore[attr-defined]
        out.append(chunk)
    return out


# ---------------------------------------------------------------- readers


def test_short_reader_cycles_its_pattern_and_serves_all_bytes() -> None:
    reader = ShortReader(b"abcdefghij", [1, 3])
    assert reads(reader, 100) == [b"a", b"bcd", b"e", b"fgh", b"i", b"j"]
    assert reader.bytes_read == 10
    assert reader.read_calls == 7  # six chunks and the end-of-stream read


def test_short_reader_readinto_honours_pattern_and_buffer() -> None:
    reader = ShortReader(b"abcdefgh", [5])
    buf = bytearray(3)
    assert reader.readinto(buf) == 3 and buf == b"abc"
    assert reader.readinto(memoryview(bytearray(10))) == 5
    assert reader.readinto(bytearray(10)) == 0


@pytest.mark.parametrize("pattern", [[], [0], [2, -1], [True]])
def test_short_reader_rejects_bad_patterns(pattern: list[int]) -> None:
    with pytest.raises(ValueError, match="pattern"):
        ShortReader(b"x", pattern)


def test_failing_reader_serves_exactly_fail_after_bytes_then_raises_every_time() -> None:
    reader = FailingReader(DATA, 1000, TimeoutError("stalled"))
    got = b""
    with pytest.raises(TimeoutError, match="stalled"):
        while True:
            got += reader.read(300)
    assert got == DATA[:1000]
    assert reader.failed
    with pytest.raises(TimeoutError):
        reader.read(1)


def test_failing_reader_fails_at_end_of_data_and_not_beyond() -> None:
    at_end = FailingReader(b"abc", 3)
    assert at_end.read(10) == b"abc"
    with pytest.raises(ConnectionResetError) as info:
        at_end.read(10)
    assert info.value.errno == errno.ECONNRESET
    never = FailingReader(b"abc", 4)
    assert reads(never, 10) == [b"abc"] and not never.failed


def test_failing_reader_instantiates_exception_classes() -> None:
    reader = FailingReader(b"", 0, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        reader.read(1)
    with pytest.raises(TypeError, match="exception"):
        FailingReader(b"", 0, "boom")  # type: ignore[arg-type]


def test_slow_reader_sleeps_and_limits_chunks() -> None:
    reader = SlowReader(b"x" * 10, delay=0.02, chunk=4)
    start = time.monotonic()
    assert reads(reader, 100) == [b"xxxx", b"xxxx", b"xx"]
    assert time.monotonic() - start >= 0.08  # four reads, including the final empty one


def test_truncated_reader_ends_before_its_declared_size(tmp_path: Path) -> None:
    reader = TruncatedReader(b"x" * 100, declared_size=150)
    with pytest.raises(PartialWriteError) as info:
        store_from_reader(reader, tmp_path / "f", expected_size=reader.declared_size)
    assert (info.value.expected_size, info.value.actual_size) == (150, 100)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="declared_size"):
        TruncatedReader(b"abc", 3)


def test_closed_reader_refuses_reads() -> None:
    with ShortReader(b"abc", [1]) as reader:
        assert reader.read(1) == b"a"
    with pytest.raises(ValueError, match="closed"):
        reader.read(1)


@pytest.mark.asyncio
async def test_async_twins_behave_like_the_sync_readers(tmp_path: Path) -> None:
    short = AsyncShortReader(DATA, [7, 1000])
    result = await astore_from_reader(short, tmp_path / "short")
    assert (tmp_path / "short").read_bytes() == DATA
    assert result.sha256 == hashlib.sha256(DATA).hexdigest()
    assert short.bytes_read == len(DATA)

    failing = AsyncFailingReader(DATA, 5000, ConnectionResetError)
    with pytest.raises(SourceError) as info:
        await astore_from_reader(failing, tmp_path / "failing")
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert failing.failed and failing.bytes_read == 5000

    truncated = AsyncTruncatedReader(DATA, len(DATA) + 1)
    with pytest.raises(PartialWriteError):
        await astore_from_reader(truncated, tmp_path / "t", expected_size=truncated.declared_size)

    slow = AsyncSlowReader(b"abc", delay=0.01, chunk=1)
    assert [await slow.read(10) for _ in range(4)] == [b"a", b"b", b"c", b""]
    assert slow.read_calls == 4
    assert os.listdir(tmp_path) == ["short"]


# ---------------------------------------------------------------- fail_storage


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (errno.ENOSPC, DiskFullError),
        (errno.EDQUOT, DiskFullError),
        (errno.EFBIG, DiskFullError),
        (errno.EACCES, StoragePermissionError),
        (errno.EROFS, StoragePermissionError),
        (errno.EIO, StorageError),
    ],
)
def test_fail_storage_errno_maps_like_a_real_os_error(
    tmp_path: Path, code: int, error: type[StorageError]
) -> None:
    dest = tmp_path / "f"
    dest.write_bytes(b"old")
    with fail_storage(tmp_path, errno=code) as fault, pytest.raises(error) as info:
        store_from_reader(DATA, dest)
    assert type(info.value) is error
    assert info.value.errno == code and info.value.dest == dest
    assert fault.triggered == 1
    assert dest.read_bytes() == b"old"
    assert_no_temp_files(tmp_path)


@pytest.mark.parametrize("at", ["create", "write", "fsync", "rename"])
def test_fail_storage_at_each_step_leaves_the_directory_as_it_was(tmp_path: Path, at: str) -> None:
    dest = tmp_path / "f"
    dest.write_bytes(b"old")
    reader = ShortReader(DATA, [4096])
    with fail_storage(tmp_path, at=at) as fault:  # type: ignore[arg-type]
        with pytest.raises(DiskFullError):
            store_from_reader(reader, dest)
    assert fault.triggered == 1
    # create fails before any byte is read, write (after_bytes=0) at the first
    # chunk, fsync and rename after the whole stream.
    expected = {"create": 0, "write": 4096}.get(at, len(DATA))
    assert reader.bytes_read == expected
    assert dest.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_fail_storage_after_bytes_fails_exactly_past_the_offset(tmp_path: Path) -> None:
    with fail_storage(tmp_path, after_bytes=len(DATA)):
        store_from_reader(DATA, tmp_path / "fits")  # exactly after_bytes: not affected
        with pytest.raises(DiskFullError):
            store_from_reader(DATA + b"!", tmp_path / "too-big")
    assert (tmp_path / "fits").read_bytes() == DATA
    assert sorted(os.listdir(tmp_path)) == ["fits"]


def test_fail_storage_writes_the_bytes_before_the_offset(tmp_path: Path) -> None:
    seen: list[int] = []

    class Spy(streamstore.Hook):
        def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
            pending = [p for p in tmp_path.iterdir() if p.name.startswith(".streamstore-tmp.")]
            seen.append(pending[0].stat().st_size)

    with fail_storage(tmp_path, after_bytes=5000), pytest.raises(DiskFullError):
        store_from_reader(DATA, tmp_path / "f", chunk_size=4096, hooks=[Spy()])
    # Before the chunk that crosses 5000 is handed on, 4096 bytes are on disk; the
    # fault wrote 904 more (to exactly 5000) and then failed.
    assert seen == [0, 4096]
    assert os.listdir(tmp_path) == []


def test_fail_storage_is_scoped_to_its_directory_and_below(tmp_path: Path) -> None:
    inside, sub, outside = tmp_path / "in", tmp_path / "in" / "sub", tmp_path / "out"
    sub.mkdir(parents=True)
    outside.mkdir()
    link = tmp_path / "link"
    link.symlink_to(inside)
    with fail_storage(inside) as fault:
        store_from_reader(DATA, outside / "f")
        for dest in (inside / "f", sub / "f", link / "f"):
            with pytest.raises(DiskFullError):
                store_from_reader(DATA, dest)
    assert fault.triggered == 3
    assert (outside / "f").read_bytes() == DATA
    store_from_reader(DATA, inside / "f")  # the plan is gone after the block
    assert (inside / "f").read_bytes() == DATA


def test_fail_storage_times_lets_a_retry_succeed(tmp_path: Path) -> None:
    dest = tmp_path / "f"
    with fail_storage(tmp_path, errno=errno.EDQUOT, after_bytes=100, times=1) as fault:
        with pytest.raises(DiskFullError):
            store_from_reader(DATA, dest)
        store_from_reader(DATA, dest)
    assert fault.triggered == 1
    assert dest.read_bytes() == DATA


def test_fail_storage_is_removed_when_the_block_raises(tmp_path: Path) -> None:
    from streamstore import _pending

    before = list(_pending._fault_plans)
    with pytest.raises(RuntimeError), fail_storage(tmp_path):
        raise RuntimeError
    assert _pending._fault_plans == before
    store_from_reader(DATA, tmp_path / "f")


@pytest.mark.parametrize(
    "kwargs",
    [{"at": "close"}, {"errno": 0}, {"errno": "ENOSPC"}, {"after_bytes": -1}, {"times": 0}],
)
def test_fail_storage_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError), fail_storage(tmp_path, **kwargs):  # type: ignore[arg-type]
        pass


def test_users_can_map_disk_full_to_http_507(tmp_path: Path) -> None:
    """The story the seam exists for: an app's error mapping, tested without a full disk."""

    class HTTPError(Exception):
        def __init__(self, status: int) -> None:
            super().__init__(status)
            self.status = status

    def upload(body: object) -> int:
        try:
            store_from_reader(
                body,
                tmp_path / "upload.bin",
                errors={DiskFullError: lambda e: HTTPError(507)},
            )
        except HTTPError as exc:
            return exc.status
        return 201

    with fail_storage(tmp_path, after_bytes=1024):
        assert upload(ShortReader(DATA, [512])) == 507
    assert upload(ShortReader(DATA, [512])) == 201


@pytest.mark.asyncio
async def test_fail_storage_applies_to_the_async_front_end(tmp_path: Path) -> None:
    with fail_storage(tmp_path, errno=errno.EACCES, at="create"):
        reader = AsyncShortReader(DATA, [100])
        with pytest.raises(StoragePermissionError):
            await astore_from_reader(reader, tmp_path / "f")
    assert reader.bytes_read == 0
    assert os.listdir(tmp_path) == []


def test_fail_storage_applies_to_content_store(tmp_path: Path) -> None:
    store = streamstore.ContentStore(tmp_path / "store")
    with fail_storage(store.root, after_bytes=10) as fault, pytest.raises(DiskFullError):
        store.put(DATA)
    assert fault.triggered == 1
    assert len(store) == 0
    assert_no_temp_files(store.root)
    assert store.put(DATA).sha256 == hashlib.sha256(DATA).hexdigest()


# ---------------------------------------------------------------- assertions


def test_assert_no_temp_files_names_what_it_found(tmp_path: Path) -> None:
    assert_no_temp_files(tmp_path)
    (tmp_path / "sub").mkdir()
    name = f".streamstore-tmp.{os.getpid()}.0123456789abcdef.x"
    (tmp_path / "sub" / name).write_bytes(b"")
    (tmp_path / ".streamstore-tmp.not-a-temp").write_bytes(b"")
    assert_no_temp_files(tmp_path, recursive=False)
    with pytest.raises(AssertionError, match=r"1 temp file\(s\) left .*0123456789abcdef"):
        assert_no_temp_files(tmp_path)
    assert temp_files(tmp_path) == [tmp_path / "sub" / name]


# ---------------------------------------------------------------- the pytest plugin


def test_plugin_fixtures_work_in_a_users_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from streamstore import DiskFullError
        from streamstore.testing import fail_storage

        def test_store(content_store, assert_no_temp_files):
            info = content_store.put(b"hello")
            assert info.size == 5 and len(content_store) == 1
            with fail_storage(content_store.root), pytest.raises(DiskFullError):
                content_store.put(b"world")
            assert_no_temp_files(content_store.root)

        def test_fresh_store_per_test(content_store):
            assert len(content_store) == 0

        def test_helper_fails(tmp_path, assert_no_temp_files):
            (tmp_path / ".streamstore-tmp.1.0123456789abcdef.x").write_bytes(b"")
            with pytest.raises(AssertionError):
                assert_no_temp_files(tmp_path)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(content_store):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:streamstore")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'content_store' not found*"])


def test_importing_streamstore_never_imports_pytest_or_the_testing_module() -> None:
    code = (
        "import sys, streamstore; a = sorted(m for m in ('pytest', 'streamstore.testing') "
        "if m in sys.modules); import streamstore.testing; "
        "print(a, 'pytest' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[] False"


def test_public_names_are_documented_and_listed() -> None:
    import streamstore.testing as testing

    for name in testing.__all__:
        obj = getattr(testing, name)
        assert obj.__doc__, name
    assert "testing" not in streamstore.__all__

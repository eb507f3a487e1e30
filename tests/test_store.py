"""ContentStore: every API method, dedupe, metadata, keys, verify and sweep."""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamstore
from streamstore import (
    ContentStore,
    DiskFullError,
    HashMismatchError,
    Hook,
    InvalidDigestError,
    ObjectInfo,
    ObjectNotFoundError,
    Progress,
    SizeLimit,
    SourceError,
    StorageError,
    StoragePermissionError,
    StoreResult,
    StreamStoreError,
    TooLargeError,
    TooSmallError,
)
from streamstore._pending import is_temp_name
from streamstore.testing import fail_storage


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def temps(store: ContentStore) -> list[str]:
    """Every temp file anywhere in the store."""
    return [name for _, _, files in os.walk(store.root) for name in files if is_temp_name(name)]


def all_files(root: Path) -> set[str]:
    return {
        os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
    }


class Counting:
    """A read(n) source that records how many bytes were consumed."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "store")


# -- construction -----------------------------------------------------------------


def test_creates_layout_and_accepts_existing_root(tmp_path: Path) -> None:
    root = tmp_path / "s"
    ContentStore(root)
    assert (root / "objects").is_dir() and (root / "tmp").is_dir()
    again = ContentStore(str(root), durable=False)
    assert again.root == root and not again.durable
    assert "ContentStore(" in repr(again)


def test_root_that_is_a_file_or_has_no_parent_is_a_storage_error(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_bytes(b"x")
    with pytest.raises(StorageError) as info:
        ContentStore(afile)
    assert info.value.dest == afile
    with pytest.raises(StorageError) as info2:
        ContentStore(tmp_path / "missing" / "store")
    assert isinstance(info2.value, OSError) and info2.value.errno is not None


@pytest.mark.parametrize("root", ["", "a\0b", 42])
def test_bad_root_is_rejected(root: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        ContentStore(root)


# -- put ------------------------------------------------------------------------------


def test_put_stores_read_only_sharded_object(store: ContentStore) -> None:
    data = os.urandom(100_000)
    info = store.put(data)
    digest = sha(data)
    assert info == ObjectInfo(digest, len(data), info.path, {})
    assert info.path == store.root / "objects" / digest[:2] / digest[2:4] / digest
    assert info.path.read_bytes() == data
    assert stat.S_IMODE(info.path.stat().st_mode) == 0o444
    assert temps(store) == []
    assert hash(info) == hash(ObjectInfo(digest, len(data), info.path, {"x": 1}))


@pytest.mark.parametrize(
    "make",
    [
        lambda d: d,
        lambda d: bytearray(d),
        lambda d: Counting(d),
        lambda d: iter([d[:7], d[7:]]),
        lambda d: __import__("io").BytesIO(d),
    ],
    ids=["bytes", "bytearray", "read", "iterable", "readinto"],
)
def test_put_accepts_every_source_kind(store: ContentStore, make: Any) -> None:
    data = b"some content " * 1000
    assert store.put(make(data)).sha256 == sha(data)
    with store.open(sha(data)) as f:
        assert f.read() == data


def test_put_empty_stream(store: ContentStore) -> None:
    info = store.put(b"")
    assert info.size == 0 and info.sha256 == sha(b"")
    with store.open(info.sha256) as f:
        assert f.read() == b""
    assert store.verify() == []


def test_dedupe_keeps_one_copy_and_removes_the_duplicate_temp(store: ContentStore) -> None:
    data = os.urandom(50_000)
    first = store.put(data)
    inode = first.path.stat().st_ino
    second = store.put(Counting(data))
    assert second == first
    assert first.path.stat().st_ino == inode  # the existing object was kept
    assert list(store) == [first.sha256] and len(store) == 1
    assert temps(store) == []
    files = all_files(store.root)
    assert files == {os.path.relpath(first.path, store.root)}


def test_dedupe_with_expected_sha256_still_reads_and_verifies(store: ContentStore) -> None:
    data = os.urandom(70_000)
    store.put(data)
    source = Counting(data)
    assert store.put(source, expected_sha256=sha(data).upper()).sha256 == sha(data)
    assert source.pos == len(data)  # read to the end, not short-circuited
    wrong = Counting(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(HashMismatchError) as info:
        store.put(wrong, expected_sha256=sha(data))
    assert info.value.expected == sha(data) and info.value.actual == sha(wrong.data)
    assert wrong.pos == len(data)
    assert list(store) == [sha(data)] and sha(wrong.data) not in store
    assert temps(store) == [] and store.verify() == []


def test_hash_mismatch_on_new_content_stores_nothing(store: ContentStore) -> None:
    with pytest.raises(HashMismatchError):
        store.put(b"abc", expected_sha256=sha(b"abd"))
    assert len(store) == 0 and temps(store) == []


def test_core_checks_hooks_and_progress_apply(store: ContentStore) -> None:
    seen: list[StoreResult] = []
    progress: list[Progress] = []

    class Record(Hook):
        def on_finish(self, result: StoreResult) -> None:
            seen.append(result)

    data = os.urandom(600_000)
    info = store.put(data, expected_size=len(data), limit=len(data), hooks=[Record()],
                     progress=progress.append)
    assert seen == [StoreResult(info.path, len(data), sha(data))]  # final object path
    assert progress[0].bytes_done == 0 and progress[-1].bytes_done == len(data)
    assert progress[-1].total == len(data)

    with pytest.raises(TooLargeError):
        store.put(os.urandom(1000), limit=999)
    with pytest.raises(TooSmallError):
        store.put(b"x", limit=SizeLimit(min_bytes=2))
    with pytest.raises(streamstore.PartialWriteError):
        store.put(b"xy", expected_size=3)
    assert len(store) == 1 and temps(store) == []


def test_hook_raising_on_finish_leaves_no_object(store: ContentStore) -> None:
    class Veto(Hook):
        def on_finish(self, result: StoreResult) -> None:
            assert result.path.name == result.sha256
            raise RuntimeError("database down")

    with pytest.raises(RuntimeError, match="database down"):
        store.put(b"payload", hooks=[Veto()])
    assert b"payload" and sha(b"payload") not in store and temps(store) == []


def test_errors_mapping_applies_to_put(store: ContentStore) -> None:
    class Http413(Exception):
        pass

    with pytest.raises(Http413) as info:
        store.put(b"x" * 10, limit=5, errors={TooLargeError: lambda e: Http413(str(e))})
    assert isinstance(info.value.__cause__, TooLargeError)


def test_source_errors_and_bad_sources(store: ContentStore) -> None:
    def broken() -> Iterator[bytes]:
        yield b"abc"
        raise ConnectionResetError("peer went away")

    with pytest.raises(SourceError) as info:
        store.put(broken())
    assert isinstance(info.value.__cause__, ConnectionResetError)
    with pytest.raises(TypeError):
        store.put("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.put(b"x", expected_sha256="nothex")
    assert len(store) == 0 and temps(store) == []


# -- metadata ---------------------------------------------------------------------


def test_metadata_is_set_once_the_first_writer_wins(store: ContentStore) -> None:
    data = b"attachment"
    digest = sha(data)
    assert store.put(data).metadata == {}  # no metadata yet
    info = store.put(data, metadata={"filename": "a.txt", "n": 1})
    assert info.metadata == {"filename": "a.txt", "n": 1} and not info.created
    assert info.path is not None
    meta_path = info.path.with_name(digest + ".json")
    assert json.loads(meta_path.read_text()) == {"filename": "a.txt", "n": 1}
    assert store.put(data).metadata == {"filename": "a.txt", "n": 1}  # kept
    assert store.info(digest).metadata == {"filename": "a.txt", "n": 1}
    later = store.put(data, metadata={"filename": "b.txt"})
    assert later.metadata == {"filename": "a.txt", "n": 1} and not later.created  # not replaced
    assert store.info(digest).metadata == {"filename": "a.txt", "n": 1}
    assert list(store) == [digest] and len(store) == 1  # metadata is not an object
    assert temps(store) == []


@pytest.mark.parametrize(
    "metadata",
    [{"x": object()}, {1: "int key"}, {"f": float("nan")}, ["not", "a", "mapping"], "str"],
)
def test_bad_metadata_is_a_type_error_before_reading(store: ContentStore, metadata: Any) -> None:
    source = Counting(b"data")
    with pytest.raises(TypeError):
        store.put(source, metadata=metadata)
    assert source.pos == 0
    assert all_files(store.root) == set()


def test_unicode_metadata_round_trips(store: ContentStore) -> None:
    meta = {"name": "résumé ✓.pdf", "nested": {"a": [1, 2, None, True]}}
    info = store.put(b"cv", metadata=meta)
    assert store.info(info.sha256).metadata == meta


def test_corrupt_metadata_is_a_storage_error(store: ContentStore) -> None:
    info = store.put(b"m", metadata={"a": 1})
    meta_path = info.path.with_name(info.sha256 + ".json")
    meta_path.chmod(0o644)
    meta_path.write_text("{not json")
    with pytest.raises(StorageError, match="corrupt"):
        store.info(info.sha256)


# -- keys -----------------------------------------------------------------------------

BAD_KEYS = [
    "../../etc/passwd",
    "a" * 63,
    "a" * 65,
    "",
    "g" * 64,
    "a" * 63 + "\0",
    "a" * 31 + "/" + "a" * 32,
    "../" + "a" * 61,
    "a" * 64 + "\n",
    " " + "a" * 63,
    "٣" * 64,  # Arabic-Indic digit: \d but not hex
]


@contextlib.contextmanager
def no_filesystem(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any filesystem call inside the block fails the test."""

    def boom(*args: object, **kwargs: object) -> Any:
        raise AssertionError(f"filesystem touched: {args!r}")

    with monkeypatch.context() as m:
        for name in ("stat", "lstat", "open", "unlink", "scandir", "link", "replace", "mkdir"):
            m.setattr(os, name, boom)
        m.setattr(os.path, "lexists", boom)
        m.setattr(builtins, "open", boom)
        yield


def check_rejected(store: ContentStore, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = [store.info, store.open, store.path, store.delete, store.verify,
             lambda k: k in store]
    for call in calls:
        with no_filesystem(monkeypatch), pytest.raises(InvalidDigestError) as info:
            call(key)
        assert info.value.digest == key
        assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_rejected_before_any_filesystem_call(
    store: ContentStore, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_rejected(store, key, monkeypatch)


@settings(max_examples=150, deadline=None)
@given(key=st.text())
def test_random_strings_are_rejected_or_name_a_path_inside_the_store(
    tmp_path_factory: pytest.TempPathFactory, key: str
) -> None:
    store = ContentStore(tmp_path_factory.mktemp("keys"), durable=False)
    is_digest = len(key) == 64 and all(c in "0123456789abcdefABCDEF" for c in key)
    if is_digest:
        with pytest.raises(ObjectNotFoundError):
            store.info(key)
        return
    for call in (store.info, store.open, store.path, store.delete, store.verify):
        with pytest.raises(InvalidDigestError):
            call(key)
    with pytest.raises(InvalidDigestError):
        key in store  # noqa: B015


@pytest.mark.parametrize("key", [b"a" * 64, 42, None])
def test_non_str_keys_are_type_errors(store: ContentStore, key: Any) -> None:
    with pytest.raises(TypeError):
        store.info(key)


def test_uppercase_input_lowercase_everywhere_after(store: ContentStore) -> None:
    info = store.put(b"case")
    upper = info.sha256.upper()
    assert upper in store
    assert store.info(upper).sha256 == info.sha256
    assert store.path(upper) == info.path
    with store.open(upper) as f:
        assert f.read() == b"case"
    assert store.verify(upper) == []
    assert store.delete(upper) is True and info.sha256 not in store


# -- read side ------------------------------------------------------------------------


def test_not_found_is_a_key_error(store: ContentStore) -> None:
    missing = sha(b"never stored")
    for call in (store.info, store.open, store.path, store.verify):
        with pytest.raises(ObjectNotFoundError) as info:
            call(missing)
        assert isinstance(info.value, KeyError) and isinstance(info.value, StreamStoreError)
        assert info.value.digest == missing
        assert str(info.value) == f"no object {missing} in the store"  # not repr()-quoted
    with pytest.raises(KeyError):
        store.info(missing)
    assert missing not in store
    assert store.delete(missing) is False


def test_errors_pickle_with_their_attributes() -> None:
    err = ObjectNotFoundError(digest="ab" * 32, dest=Path("/x/y"))
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is ObjectNotFoundError
    assert (copy.digest, copy.dest, str(copy)) == (err.digest, err.dest, str(err))
    bad = InvalidDigestError(digest="../x")
    copy2 = pickle.loads(pickle.dumps(bad))
    assert type(copy2) is InvalidDigestError
    assert (copy2.digest, str(copy2)) == ("../x", str(bad))
    assert "64 hexadecimal" in str(bad)


def test_open_is_a_read_only_binary_context_manager(store: ContentStore) -> None:
    data = os.urandom(3000)
    info = store.put(data)
    with store.open(info.sha256) as f:
        assert f.read() == data
        with pytest.raises(OSError):
            f.write(b"x")  # type: ignore[attr-defined]
    assert f.closed


def test_iter_len_contains_ignore_tmp_metadata_and_strays(store: ContentStore) -> None:
    blobs = [os.urandom(n) for n in (0, 1, 100, 5000)]
    for i, blob in enumerate(blobs):
        store.put(blob, metadata={"i": i})
    (store.root / "tmp" / ("f" * 64)).write_bytes(b"stray")
    shard = store.root / "objects" / "ff" / "ff"
    shard.mkdir(parents=True)
    (shard / ("0" * 64)).write_bytes(b"wrong shard")
    (shard / "README").write_bytes(b"not an object")
    (store.root / "objects" / "notashard").mkdir()
    assert sorted(store) == sorted(sha(b) for b in blobs)
    assert len(store) == len(blobs)
    assert all(sha(b) in store for b in blobs)


def test_delete_removes_object_and_metadata(store: ContentStore) -> None:
    info = store.put(b"bye", metadata={"k": "v"})
    assert store.delete(info.sha256) is True
    assert not info.path.exists()
    assert not info.path.with_name(info.sha256 + ".json").exists()
    assert store.delete(info.sha256) is False
    assert len(store) == 0
    assert store.put(b"bye").metadata == {}  # the old metadata is gone for good


# -- verify ---------------------------------------------------------------------------


def test_verify_finds_a_corrupted_object(store: ContentStore) -> None:
    good = store.put(os.urandom(3 * 1024 * 1024 + 5))  # more than one verify chunk
    bad = store.put(os.urandom(10_000))
    assert store.verify() == []
    bad.path.chmod(0o644)  # chmod u+w, then edit in place
    with open(bad.path, "r+b") as f:
        f.seek(1234)
        byte = f.read(1)
        f.seek(1234)
        f.write(bytes([byte[0] ^ 0x01]))
    assert store.verify() == [bad.sha256]
    assert store.verify(bad.sha256) == [bad.sha256]
    assert store.verify(good.sha256) == []
    truncated = store.put(b"truncate me")
    truncated.path.chmod(0o644)
    os.truncate(truncated.path, 3)
    assert sorted(store.verify()) == sorted([bad.sha256, truncated.sha256])
    assert store.delete(bad.sha256) and store.delete(truncated.sha256)
    assert store.verify() == []


# -- sweep ----------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from streamstore import FileSink
    pending = FileSink(Path(sys.argv[1]) / "tmp" / "object")
    pending.start(None)
    print(pending.temp_path, flush=True)
    time.sleep(60)
    """
)


def old(path: Path) -> None:
    past = time.time() - 7200
    os.utime(path, (past, past))


def test_sweep_honours_live_owners_and_removes_dead_ones(store: ContentStore) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store.root)], stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            live = Path(child.stdout.readline().strip())
            assert live.exists() and is_temp_name(live.name)
            old(live)
            assert store.sweep(older_than=0) == 0  # held open + flocked by a live process
            assert live.exists()
        finally:
            child.send_signal(signal.SIGKILL)
    assert store.sweep(older_than=3600) == 1  # the owner is dead and the temp is old
    assert not live.exists()


def test_sweep_respects_age_and_covers_shard_directories(store: ContentStore) -> None:
    info = store.put(b"x", metadata={"a": 1})
    dead_pid = 2**22 + 12345  # above the default pid_max: never a live process
    orphan_tmp = store.root / "tmp" / f".streamstore-tmp.{dead_pid}.{'0' * 16}.object"
    orphan_shard = info.path.parent / f".streamstore-tmp.{dead_pid}.{'1' * 16}.x.json"
    for path in (orphan_tmp, orphan_shard):
        path.write_bytes(b"partial")
    assert store.sweep() == 0  # too young for the default hour
    for path in (orphan_tmp, orphan_shard):
        old(path)
    assert store.sweep() == 2
    assert temps(store) == []
    assert store.info(info.sha256).metadata == {"a": 1}
    with pytest.raises(ValueError):
        store.sweep(older_than=-1)


# -- async ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_aput_stores_dedupes_and_writes_metadata(store: ContentStore) -> None:
    data = os.urandom(3 * 1024 * 1024)

    async def chunks() -> Any:
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    seen: list[StoreResult] = []

    class Record(Hook):
        def on_finish(self, result: StoreResult) -> None:
            seen.append(result)

    info = await store.aput(chunks(), metadata={"via": "aput"}, hooks=[Record()])
    assert info.sha256 == sha(data) and info.metadata == {"via": "aput"}
    assert seen[0].path == info.path
    again = await store.aput(data, expected_sha256=sha(data))
    assert again.metadata == {"via": "aput"} and len(store) == 1
    with store.open(info.sha256) as f:
        assert f.read() == data
    assert temps(store) == []


@pytest.mark.asyncio
async def test_aput_errors_and_mapping(store: ContentStore) -> None:
    class Mapped(Exception):
        pass

    with pytest.raises(Mapped):
        await store.aput(b"x" * 100, limit=10, errors=lambda e: Mapped(str(e)))
    with pytest.raises(HashMismatchError):
        await store.aput(b"abc", expected_sha256=sha(b"abd"))
    with pytest.raises(TypeError):
        await store.aput(b"abc", metadata={"bad": {1, 2}})
    assert len(store) == 0 and temps(store) == []


def test_durable_false_store_works(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "fast", durable=False)
    info = store.put(b"quick", metadata={"a": 1})
    assert store.info(info.sha256) == info and store.verify() == []


# -- storage faults -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "code", "error"),
    [("write", errno.ENOSPC, DiskFullError), ("create", errno.EACCES, StoragePermissionError),
     ("fsync", errno.EIO, StorageError), ("rename", errno.EIO, StorageError)],
)
def test_storage_faults_leave_nothing(store: ContentStore, at: Any, code: int,
                                      error: type[StorageError]) -> None:
    existing = store.put(b"already here", metadata={"keep": True})
    with fail_storage(store.root, at=at, errno=code, after_bytes=1000):
        with pytest.raises(error) as info:
            store.put(os.urandom(5000))
    assert info.value.errno == code
    assert list(store) == [existing.sha256] and temps(store) == []
    assert store.info(existing.sha256).metadata == {"keep": True}
    assert store.verify() == []


def test_metadata_write_failure_keeps_the_object(store: ContentStore) -> None:
    info = store.put(b"obj")
    assert info.path is not None
    meta_path = info.path.with_name(info.sha256 + ".json")
    # Only the shard directory fails: the object commit (from tmp/) goes through.
    with fail_storage(info.path.parent, at="rename", errno=errno.ENOSPC) as fault:
        with pytest.raises(DiskFullError) as exc:
            store.put(b"obj", metadata={"v": 2})
    assert fault.triggered == 1 and exc.value.dest == meta_path
    # The error arrived after the commit point: it says what is stored.
    assert exc.value.committed.sha256 == info.sha256  # type: ignore[attr-defined]
    assert store.info(info.sha256).metadata == {}
    assert temps(store) == [] and store.verify() == []

"""The Sink protocol, the push writers, transaction hooks and the one option set."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

import streamstore as ss
from streamstore.testing import temp_files

DATA = os.urandom(300_000)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MemorySink:
    """A user-written sink: bytes in memory, visible in ``self.visible`` on commit."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.visible: bytes | None = None
        self.events: list[Any] = []

    def start(self, expected_size: int | None) -> None:
        self.events.append(("start", expected_size))

    def write(self, chunk: memoryview) -> None:
        self.buffer += chunk

    def commit(self, result: ss.StoreResult) -> ss.StoreResult:
        self.events.append("commit")
        self.visible = bytes(self.buffer)
        return ss.StoreResult(None, result.size, result.sha256, "memory://one")

    def abort(self) -> None:
        self.events.append("abort")
        self.buffer.clear()


class MinimalSink:
    """Only the three required methods."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.committed_data: bytes | None = None

    def write(self, chunk: memoryview) -> None:
        self.data += chunk

    def commit(self, result: ss.StoreResult) -> ss.StoreResult:
        self.committed_data = bytes(self.data)
        return result

    def abort(self) -> None:
        self.data.clear()


# -- sinks --------------------------------------------------------------------------


def test_a_user_written_sink_gets_every_byte_and_one_commit() -> None:
    sink = MemorySink()
    result = ss.store_from_reader(DATA, sink, expected_size=len(DATA))
    assert sink.visible == DATA and sink.events == [("start", len(DATA)), "commit"]
    assert result == ss.StoreResult(None, len(DATA), sha(DATA), "memory://one")


def test_a_failed_check_aborts_a_user_sink() -> None:
    sink = MemorySink()
    with pytest.raises(ss.HashMismatchError):
        ss.store_from_reader(DATA, sink, expected_sha256="0" * 64)
    assert sink.visible is None and sink.events[-1] == "abort" and "commit" not in sink.events


def test_a_sink_with_only_the_required_methods() -> None:
    sink = MinimalSink()
    result = ss.store_from_reader(iter([b"ab", b"cd"]), sink)
    assert sink.committed_data == b"abcd" and result.sha256 == sha(b"abcd")
    assert result.path is None and result.location == ""


@pytest.mark.asyncio
async def test_a_user_sink_under_the_async_front_end() -> None:
    sink = MemorySink()

    async def chunks() -> Any:
        for i in range(0, len(DATA), 7000):
            yield DATA[i : i + 7000]

    result = await ss.astore_from_reader(chunks(), sink)
    assert sink.visible == DATA and result.location == "memory://one"


def test_not_a_sink_is_a_type_error_naming_what_is_missing() -> None:
    with pytest.raises(TypeError, match="has no write, commit, abort"):
        ss.store_from_reader(b"x", object())  # type: ignore[arg-type]


def test_file_options_with_a_sink_are_a_type_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="overwrite= apply to a path dest"):
        ss.store_from_reader(b"x", MemorySink(), overwrite=False)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="unexpected keyword argument 'chunksize'"):
        ss.store_from_reader(b"x", tmp_path / "f", chunksize=5)  # type: ignore[call-arg]


def test_file_sink_as_dest_and_its_location(tmp_path: Path) -> None:
    sink = ss.FileSink(tmp_path / "f", overwrite=False, mode=0o640)
    result = ss.store_from_reader(DATA, sink)
    assert result.path == tmp_path / "f" and result.location == str(tmp_path / "f")
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640
    with pytest.raises(RuntimeError, match="single-use"):
        ss.store_from_reader(DATA, sink)


def test_content_store_put_accepts_chunk_size(tmp_path: Path) -> None:
    store = ss.ContentStore(tmp_path / "store")
    seen: list[int] = []

    class Sizes(ss.Hook):
        def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
            seen.append(len(chunk))

    store.put(DATA, chunk_size=1000, hooks=[Sizes()])
    assert max(seen) == 1000
    with pytest.raises(TypeError, match="unexpected keyword argument 'overwrite'"):
        store.put(b"x", overwrite=False)  # type: ignore[call-arg]


# -- writers ---------------------------------------------------------------------------


def test_open_writer_commits_on_a_clean_exit(tmp_path: Path) -> None:
    dest = tmp_path / "f"
    with ss.open_writer(dest, expected_sha256=sha(DATA)) as w:
        for i in range(0, len(DATA), 4096):
            w.write(memoryview(DATA)[i : i + 4096])
        assert not dest.exists() and w.bytes_written == i + len(DATA[i : i + 4096])
    assert w.result is not None and w.result.sha256 == sha(DATA)
    assert dest.read_bytes() == DATA and temp_files(tmp_path) == []


def test_open_writer_aborts_when_the_block_raises(tmp_path: Path) -> None:
    dest = tmp_path / "f"
    dest.write_bytes(b"old")
    with pytest.raises(ZeroDivisionError), ss.open_writer(dest) as w:
        w.write(b"new bytes")
        1 / 0  # noqa: B018
    assert dest.read_bytes() == b"old" and temp_files(tmp_path) == [] and w.result is None


def test_open_writer_limits_and_a_dead_writer(tmp_path: Path) -> None:
    with pytest.raises(ss.TooLargeError), ss.open_writer(tmp_path / "f", limit=10) as w:
        w.write(b"12345")
        try:
            w.write(b"678901")
        finally:
            with pytest.raises(ValueError, match="failed writer"):
                w.write(b"more")
    assert not (tmp_path / "f").exists() and temp_files(tmp_path) == []
    with pytest.raises(TypeError, match="bytes-like"), ss.open_writer(tmp_path / "g") as w:
        w.write("text")
    assert temp_files(tmp_path) == []


def test_open_writer_into_a_content_store(tmp_path: Path) -> None:
    store = ss.ContentStore(tmp_path / "store")
    with store.open_writer(metadata={"name": "a"}) as w:
        w.write(DATA)
    assert w.result is not None and w.result.sha256 == sha(DATA) and w.result.created
    assert store.info(sha(DATA)).metadata == {"name": "a"}


@pytest.mark.asyncio
async def test_aopen_writer(tmp_path: Path) -> None:
    dest = tmp_path / "f"
    buffer = bytearray(3000)
    async with ss.aopen_writer(dest, limit=len(DATA)) as w:
        for i in range(0, len(DATA), 3000):
            piece = DATA[i : i + 3000]
            buffer[: len(piece)] = piece
            await w.write(memoryview(buffer)[: len(piece)])  # the buffer is reused at once
    assert w.result is not None and dest.read_bytes() == DATA
    with pytest.raises(ss.TooLargeError):
        async with ss.aopen_writer(tmp_path / "g", limit=5) as w:
            await w.write(b"123456")
    assert not (tmp_path / "g").exists() and temp_files(tmp_path) == []


@pytest.mark.asyncio
async def test_aopen_writer_cancelled_before_the_commit_stores_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "f"
    dest.write_bytes(b"old")
    started = asyncio.Event()

    async def upload() -> None:
        async with ss.aopen_writer(dest) as w:
            await w.write(b"some")
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(upload())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert dest.read_bytes() == b"old" and temp_files(tmp_path) == []


# -- transaction hooks --------------------------------------------------------------------


class Tx(ss.Hook):
    def __init__(self, log: list[Any], name: str = "tx", fail: str | None = None) -> None:
        self.log = log
        self.name = name
        self.fail = fail

    def _event(self, event: str, value: Any = None) -> None:
        self.log.append((self.name, event, value))
        if self.fail == event:
            raise RuntimeError(f"{self.name}.{event}")

    def on_start(self, expected_size: int | None) -> None:
        self._event("start")

    def on_finish(self, result: ss.StoreResult) -> None:
        self._event("finish", os.path.exists(result.location))

    def on_commit(self, result: ss.StoreResult) -> None:
        self._event("commit", os.path.exists(result.location))

    def on_abort(self, exc: BaseException) -> None:
        self._event("abort", type(exc).__name__)


def test_on_commit_runs_after_the_bytes_are_visible(tmp_path: Path) -> None:
    log: list[Any] = []
    ss.store_from_reader(b"x", tmp_path / "f", hooks=[Tx(log)])
    assert log == [("tx", "start", None), ("tx", "finish", False), ("tx", "commit", True)]


def test_on_abort_runs_in_reverse_for_hooks_that_started(tmp_path: Path) -> None:
    log: list[Any] = []
    hooks = [Tx(log, "a"), Tx(log, "b", fail="start"), Tx(log, "c")]
    with pytest.raises(RuntimeError, match=r"b\.start"):
        ss.store_from_reader(b"x", tmp_path / "f", hooks=hooks)
    assert log == [("a", "start", None), ("b", "start", None),
                   ("b", "abort", "RuntimeError"), ("a", "abort", "RuntimeError")]


def test_a_failing_on_abort_is_a_note_on_the_original(tmp_path: Path) -> None:
    log: list[Any] = []
    with pytest.raises(ss.TooSmallError) as info:
        ss.store_from_reader(b"x", tmp_path / "f", hooks=[Tx(log, fail="abort")],
                             limit=ss.SizeLimit(min_bytes=5))
    assert any("Tx.on_abort raised RuntimeError: tx.abort" in n for n in info.value.__notes__)


def test_a_failing_on_commit_carries_the_committed_result(tmp_path: Path) -> None:
    log: list[Any] = []
    hooks = [Tx(log, "a", fail="commit"), Tx(log, "b")]
    with pytest.raises(RuntimeError, match=r"a\.commit") as info:
        ss.store_from_reader(b"new", tmp_path / "f", hooks=hooks)
    committed = info.value.committed  # type: ignore[attr-defined]
    assert committed.sha256 == sha(b"new") and (tmp_path / "f").read_bytes() == b"new"
    assert ("b", "commit", True) in log and not any(e[1] == "abort" for e in log)


def test_a_database_row_and_the_file_never_disagree(tmp_path: Path) -> None:
    """The recipe: insert in on_finish, commit in on_commit, roll back in on_abort."""
    import sqlite3

    db = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    db.execute("create table files (name text primary key, sha256 text)")

    class Row(ss.Hook):
        def on_finish(self, result: ss.StoreResult) -> None:
            db.execute("begin")
            db.execute("insert or replace into files values (?, ?)",
                       (os.path.basename(result.location), result.sha256))

        def on_commit(self, result: ss.StoreResult) -> None:
            db.execute("commit")

        def on_abort(self, exc: BaseException) -> None:
            if db.in_transaction:
                db.execute("rollback")

    ss.store_from_reader(b"good", tmp_path / "a", hooks=[Row()])
    with pytest.raises(ss.DestinationExistsError):
        ss.store_from_reader(b"other", tmp_path / "a", hooks=[Row()], overwrite=False)
    rows = db.execute("select name, sha256 from files").fetchall()
    assert rows == [("a", sha(b"good"))] and (tmp_path / "a").read_bytes() == b"good"


# -- errors ---------------------------------------------------------------------------------


def test_errors_keep_notes_and_extra_attributes_when_pickled_or_copied() -> None:
    err = ss.TooLargeError(limit=1, size=2, dest="/x")
    err.add_note("a note")
    err.committed = ss.StoreResult(Path("/x"), 2, "0" * 64)  # type: ignore[attr-defined]
    for clone in (pickle.loads(pickle.dumps(err)), copy.copy(err), copy.deepcopy(err)):
        assert clone.__notes__ == ["a note"] and clone.committed == err.committed
        assert clone.limit == 1 and clone.dest == Path("/x")


def test_a_source_whose_iter_raises_is_a_source_error(tmp_path: Path) -> None:
    class Broken:
        def __iter__(self) -> Any:
            raise OSError("cannot start")

    with pytest.raises(ss.SourceError) as info:
        ss.store_from_reader(Broken(), tmp_path / "f")
    assert isinstance(info.value.original, OSError)


def test_an_exception_raised_on_purpose_in_a_generator_is_reachable(tmp_path: Path) -> None:
    class HTTPError(Exception):
        pass

    def body() -> Any:
        yield b"partial"
        raise HTTPError(413)

    with pytest.raises(ss.SourceError) as info:
        ss.store_from_reader(body(), tmp_path / "f")
    assert isinstance(info.value.original, HTTPError)
    with pytest.raises(HTTPError):  # mapped back, as SourceError's docstring shows
        ss.store_from_reader(body(), tmp_path / "f", errors={ss.SourceError: lambda e: e.original})
    assert temp_files(tmp_path) == []

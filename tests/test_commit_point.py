"""The faults the hostile trials found at the commit boundary and in the temp
file's life cycle, each with a regression test (deterministic where timing
matters; randomised stress is on the slow marker)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import streamstore as ss
from streamstore.testing import temp_files

DATA = bytes(range(256)) * 400


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class GatedSink:
    """Wraps a FileSink; ``commit`` waits for ``release`` so a test can act
    (cancel, time out) while the commit is running."""

    def __init__(self, path: Path) -> None:
        self.inner = ss.FileSink(path)
        self.committing = threading.Event()
        self.release = threading.Event()

    def start(self, expected_size: int | None) -> None:
        self.inner.start(expected_size)

    def write(self, chunk: memoryview) -> None:
        self.inner.write(chunk)

    def prepare(self, result: ss.StoreResult) -> ss.StoreResult:
        return self.inner.prepare(result)

    def commit(self, result: ss.StoreResult) -> ss.StoreResult:
        self.committing.set()
        assert self.release.wait(10)
        return self.inner.commit(result)

    def abort(self) -> None:
        self.inner.abort()


async def wait_for_event(event: threading.Event) -> None:
    """Wait on the event loop for a threading.Event set in a worker thread."""
    assert await asyncio.to_thread(event.wait, 10)


@pytest.mark.asyncio
async def test_cancelled_while_committing_returns_the_result_and_re_requests(
        tmp_path: Path) -> None:
    dest = tmp_path / "f"
    dest.write_bytes(b"old")
    sink = GatedSink(dest)
    got: list[ss.StoreResult] = []

    async def caller() -> None:
        got.append(await ss.astore_from_reader(DATA, sink))
        await asyncio.sleep(0)  # the caller's next await sees the cancellation

    task = asyncio.create_task(caller())
    await wait_for_event(sink.committing)
    task.cancel()
    await asyncio.sleep(0.01)
    sink.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert got and got[0].sha256 == sha(DATA) and dest.read_bytes() == DATA


@pytest.mark.asyncio
async def test_a_store_that_is_the_whole_task_completes_with_its_result(tmp_path: Path) -> None:
    sink = GatedSink(tmp_path / "f")
    task = asyncio.create_task(ss.astore_from_reader(DATA, sink))
    await wait_for_event(sink.committing)
    task.cancel()
    sink.release.set()
    result = await task  # not CancelledError: the bytes are visible
    assert result.sha256 == sha(DATA) and (tmp_path / "f").read_bytes() == DATA


@pytest.mark.asyncio
async def test_wait_for_timing_out_during_the_commit_returns_the_result(tmp_path: Path) -> None:
    sink = GatedSink(tmp_path / "f")
    threading.Timer(0.2, sink.release.set).start()
    result = await asyncio.wait_for(ss.astore_from_reader(DATA, sink), timeout=0.05)
    assert result.sha256 == sha(DATA) and (tmp_path / "f").read_bytes() == DATA


@pytest.mark.asyncio
async def test_cancelled_before_the_commit_stores_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "f"
    dest.write_bytes(b"old")

    async def slow() -> Any:
        yield b"a" * 1000
        await asyncio.sleep(10)
        yield b"b"

    task = asyncio.create_task(ss.astore_from_reader(slow(), dest))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert dest.read_bytes() == b"old" and temp_files(tmp_path) == []


@pytest.mark.asyncio
@pytest.mark.parametrize("where", ["hook", "progress"])
async def test_stop_iteration_from_a_hook_under_async_is_an_error_not_a_hang(
        tmp_path: Path, where: str) -> None:
    class Stopper(ss.Hook):
        def on_chunk(self, chunk: memoryview, bytes_so_far: int) -> None:
            raise StopIteration

    def stop(progress: ss.Progress) -> None:
        if progress.bytes_done:
            raise StopIteration

    options: dict[str, Any] = {"hooks": [Stopper()]} if where == "hook" else {"progress": stop}
    with pytest.raises(RuntimeError, match="StopIteration"):
        await asyncio.wait_for(
            ss.astore_from_reader([DATA] * 20, tmp_path / "f", **options), timeout=30)
    assert temp_files(tmp_path) == [] and not (tmp_path / "f").exists()


# -- destinations that are not regular files ----------------------------------------------


def test_a_fifo_or_socket_at_dest_is_refused_before_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        for node, kind in ((fifo, "FIFO"), (sock_path, "socket")):
            untouched = RecordingSource()
            with pytest.raises(ss.StorageError, match=f"is a {kind}, not a regular file"):
                ss.store_from_reader(untouched, node)
            assert untouched.reads == 0
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    finally:
        sock.close()
    assert temp_files(tmp_path) == []


class RecordingSource:
    def __init__(self) -> None:
        self.reads = 0

    def read(self, n: int) -> bytes:
        self.reads += 1
        return b""


@pytest.mark.parametrize("dest", ["file/.", "file/./", "file/..", "dir/", ""])
def test_dest_must_name_a_file(tmp_path: Path, dest: str) -> None:
    (tmp_path / "file").write_bytes(b"keep")
    with pytest.raises(ValueError, match="dest must name a file"):
        ss.store_from_reader(b"x", f"{tmp_path}/{dest}" if dest else dest)
    assert (tmp_path / "file").read_bytes() == b"keep"


# -- the temp file's life cycle -----------------------------------------------------------


def test_a_relative_dest_survives_a_chdir_in_another_thread(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    here = os.getcwd()
    os.chdir(tmp_path / "a")
    try:
        def chunks() -> Any:
            yield DATA
            t = threading.Thread(target=os.chdir, args=[tmp_path / "b"])
            t.start()
            t.join()
            yield DATA

        result = ss.store_from_reader(chunks(), "out.bin")
    finally:
        os.chdir(here)
    assert (tmp_path / "a" / "out.bin").read_bytes() == DATA * 2
    assert result.size == 2 * len(DATA)
    assert temp_files(tmp_path) == [] and os.listdir(tmp_path / "b") == []


FORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    from streamstore import FileSink
    sink = FileSink(sys.argv[1]); sink.start(None); sink.write(b"half")
    if os.fork() == 0:          # a child that does not exec: it shares the temp's lock
        time.sleep(60)
        os._exit(0)
    print(sink.temp_path, flush=True)
    time.sleep(60)
    """
)


def test_an_orphan_can_be_swept_while_a_forked_child_lives(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", FORKER, str(tmp_path / "f")],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    temp = Path(proc.stdout.readline().strip())
    children = [int(pid) for pid in
                Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    try:
        assert temp.exists() and len(children) == 1
        proc.send_signal(signal.SIGKILL)  # the writer dies; its forked child lives on
        proc.wait()
        assert ss.sweep_temp(tmp_path, older_than=0) == 1
        assert not temp.exists()
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        proc.stdout.close()


def test_stores_beside_a_tight_sweep_loop_never_fail(tmp_path: Path) -> None:
    stop = threading.Event()
    swept = [0]

    def sweeper() -> None:
        while not stop.is_set():
            swept[0] += ss.sweep_temp(tmp_path, older_than=0)

    thread = threading.Thread(target=sweeper)
    thread.start()
    try:
        for i in range(300):
            data = random.Random(i).randbytes(random.Random(i).randrange(1, 200_000))
            assert ss.store_from_reader(data, tmp_path / f"f{i % 7}", durable=False).size
            assert (tmp_path / f"f{i % 7}").read_bytes() == data
    finally:
        stop.set()
        thread.join()
    # The sweeper may win a temp in the instant between its creation and its
    # writer's lock (the writer then takes another name): never a live one.
    assert temp_files(tmp_path) == []


def test_a_rejected_content_store_put_creates_no_shard_directories(tmp_path: Path) -> None:
    store = ss.ContentStore(tmp_path / "store")
    objects = tmp_path / "store" / "objects"
    with pytest.raises(ss.HashMismatchError):
        store.put(b"abc", expected_sha256=sha(b"abd"))
    with pytest.raises(ss.TooSmallError):
        store.put(b"abc", limit=ss.SizeLimit(min_bytes=10))
    with pytest.raises(ss.PartialWriteError):
        store.put(b"abc", expected_size=10)
    assert os.listdir(objects) == []


# -- randomised stress -----------------------------------------------------------------------


@pytest.mark.slow
def test_thousands_of_stores_with_interrupts_at_random_moments(tmp_path: Path) -> None:
    """Real SIGINTs from another thread at random moments: zero leaked temps,
    zero leaked fds, zero calls that raised although dest changed."""
    rng = random.Random(2026)
    dest = tmp_path / "f"
    fds_before = len(os.listdir("/proc/self/fd"))
    main = threading.get_ident()
    armed = [False]

    def interrupt(signum: int, frame: Any) -> None:
        if armed[0]:  # a signal that arrives after the store finished is dropped
            raise KeyboardInterrupt

    lied = outcomes = interrupted = 0
    deadline = time.monotonic() + 240
    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        for i in range(3000):
            if time.monotonic() > deadline:
                break
            old = f"old {i}".encode()
            new = rng.randbytes(rng.choice([10, 5000, 100_000, 600_000]))
            dest.write_bytes(old)
            timer = threading.Timer(rng.uniform(0, 0.004),
                                    lambda: signal.pthread_kill(main, signal.SIGINT))
            timer.start()
            try:
                armed[0] = True
                ss.store_from_reader(new, dest, durable=rng.random() < 0.2,
                                     overwrite=rng.random() < 0.8)
            except KeyboardInterrupt as exc:
                armed[0] = False
                interrupted += 1
                expected = new if getattr(exc, "committed", None) is not None else old
            except ss.DestinationExistsError:
                armed[0] = False
                expected = old
            else:
                armed[0] = False
                expected = new
            timer.cancel()
            timer.join()
            outcomes += 1
            lied += dest.read_bytes() != expected
            assert temp_files(tmp_path) == [], i
    finally:
        signal.signal(signal.SIGINT, previous)
    assert outcomes > 500 and interrupted > 50 and lied == 0
    assert len(os.listdir("/proc/self/fd")) == fds_before

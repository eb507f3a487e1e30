"""Real faults, each produced for real rather than mocked: a full filesystem, a
file-size limit, an unprivileged user, a read-only mount, network resets and
timeouts, non-blocking and text-mode sources, interrupts, task cancellation, a
client disconnect, and threads racing on one destination.

Every test asserts the right error type, the destination untouched (old
content intact), no temp file left, and the process still healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import streamstore
from strategies import tree
from streamstore import (
    DestinationExistsError,
    DiskFullError,
    SourceError,
    StoragePermissionError,
    astore_from_reader,
    store_from_reader,
)
from streamstore.testing import (
    AsyncSlowReader,
    FailingReader,
    ShortReader,
    SlowReader,
    assert_no_temp_files,
)

OLD = b"old complete content\n" * 1000
MiB = 1024 * 1024
NOBODY = 65534


def payload(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture
def old_dest(tmp_path: Path) -> Path:
    dest = tmp_path / "dest.bin"
    dest.write_bytes(OLD)
    return dest


def read(path: Path) -> bytes:
    return path.read_bytes()


def assert_untouched(dest: Path) -> None:
    assert dest.read_bytes() == OLD
    assert_no_temp_files(dest.parent)


# ------------------------------------------------------------------ helpers: mounts, children


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


@contextlib.contextmanager
def mounted_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """Mount a real tmpfs of ``size`` at ``where``; skip the test if this machine can't."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    where.mkdir()
    result = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where))
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {result.stderr.strip()}")
    try:
        yield where
    finally:
        if _run("umount", str(where)).returncode != 0:
            _run("umount", "-l", str(where))


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB filesystem (tmpfs)."""
    with mounted_tmpfs(tmp_path / "small", "4m") as mnt:
        yield mnt


CHILD_PRELUDE = """
import json, sys
from pathlib import Path
import streamstore
from streamstore import store_from_reader
from streamstore.testing import ShortReader

def report(**kw):
    print(json.dumps(kw), flush=True)

def attempt(fn):
    try:
        fn()
    except streamstore.StreamStoreError as exc:
        return {"error": type(exc).__name__, "errno": getattr(exc, "errno", None),
                "message": str(exc)}
    return {"error": None}
"""


DROP_PRIVILEGES = """
import os
os.setgroups([])
os.setgid({uid})
os.setuid({uid})  # from root to another uid: every capability is dropped too
assert os.geteuid() == {uid} and os.getegid() == {uid}
"""


def run_child(code: str, *, user: int | None = None, timeout: float = 60) -> dict[str, Any]:
    """Run ``code`` (after CHILD_PRELUDE) in a fresh interpreter; return its JSON report.

    With ``user``, the child switches to that uid/gid after importing streamstore
    (the interpreter may live where that user cannot read, e.g. under /root).
    """
    drop = DROP_PRIVILEGES.format(uid=user) if user is not None else ""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD_PRELUDE + drop + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A root-owned 0755 directory outside pytest's 0700 tmp tree, so other users can reach it."""
    if os.geteuid() != 0:
        pytest.skip("switching to an unprivileged user needs root")
    path = Path(tempfile.mkdtemp(prefix="streamstore-perm-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------ 1. disk full


def test_full_tmpfs_is_disk_full_and_frees_its_space(small_fs: Path) -> None:
    dest = small_fs / "dest.bin"
    dest.write_bytes(OLD)
    before = tree(small_fs)
    free_before = os.statvfs(small_fs).f_bfree
    reader = ShortReader(payload(8 * MiB), [64 * 1024])
    with pytest.raises(DiskFullError) as info:
        store_from_reader(reader, dest)
    assert info.value.errno == errno.ENOSPC and info.value.dest == dest
    assert 3 * MiB < reader.bytes_read < 8 * MiB  # it really filled the disk first
    assert tree(small_fs) == before
    assert os.statvfs(small_fs).f_bfree == free_before  # the temp's blocks came back
    # Healthy: the same filesystem takes a store that fits.
    fits = payload(2 * MiB, 1)
    assert store_from_reader(fits, small_fs / "fits").size == len(fits)
    assert (small_fs / "fits").read_bytes() == fits
    assert_no_temp_files(small_fs)


def test_full_tmpfs_async(small_fs: Path) -> None:
    dest = small_fs / "dest.bin"
    dest.write_bytes(OLD)
    with pytest.raises(DiskFullError):
        asyncio.run(astore_from_reader(AsyncSlowReader(payload(6 * MiB), 0, 256 * 1024), dest))
    assert dest.read_bytes() == OLD
    assert_no_temp_files(small_fs)


def test_full_tmpfs_content_store(small_fs: Path) -> None:
    store = streamstore.ContentStore(small_fs / "store")
    small = store.put(b"small object")
    with pytest.raises(DiskFullError):
        store.put(ShortReader(payload(8 * MiB), [64 * 1024]))
    assert list(store) == [small.sha256]
    assert store.verify() == []
    assert_no_temp_files(store.root)


def test_rlimit_fsize_is_disk_full(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes write() fail with EFBIG (Python ignores SIGXFSZ)."""
    dest = tmp_path / "dest.bin"
    dest.write_bytes(OLD)
    report = run_child(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        dest = Path({str(dest)!r})
        reader = ShortReader(b"x" * (4 << 20), [65536])
        big = attempt(lambda: store_from_reader(reader, dest))
        small = attempt(lambda: store_from_reader(b"y" * 1000, dest.with_name("small")))
        report(big=big, small=small, bytes_read=reader.bytes_read)
        """
    )
    assert report["big"]["error"] == "DiskFullError"
    assert report["big"]["errno"] == errno.EFBIG
    assert report["bytes_read"] <= (1 << 20) + 65536
    assert report["small"] == {"error": None}  # the child stayed healthy
    assert dest.read_bytes() == OLD
    assert (tmp_path / "small").read_bytes() == b"y" * 1000
    assert_no_temp_files(tmp_path)


# ------------------------------------------------------------------ 2. permission denied

UNPRIVILEGED_STORE = """
dest = Path({dest!r})
reader = ShortReader(b"new" * 1000, [100])
outcome = attempt(lambda: store_from_reader(reader, dest))
report(outcome=outcome, bytes_read=reader.bytes_read, read_calls=reader.read_calls)
"""


def test_unprivileged_user_in_unwritable_directory(world_dir: Path) -> None:
    dest = world_dir / "dest.bin"
    dest.write_bytes(OLD)
    dest.chmod(0o666)  # even a writable dest does not help: the directory is not writable
    before = tree(world_dir)
    report = run_child(UNPRIVILEGED_STORE.format(dest=str(dest)), user=NOBODY)
    assert report["outcome"]["error"] == "StoragePermissionError"
    assert report["outcome"]["errno"] == errno.EACCES
    assert str(world_dir) in report["outcome"]["message"]
    assert (report["bytes_read"], report["read_calls"]) == (0, 0)  # failed before reading
    assert tree(world_dir) == before


def test_unprivileged_user_in_read_only_directory(world_dir: Path) -> None:
    """chmod 0555 on a directory the user owns: only root would get past it."""
    sub = world_dir / "ro"
    sub.mkdir()
    (sub / "dest.bin").write_bytes(OLD)
    os.chown(sub, NOBODY, NOBODY)
    os.chown(sub / "dest.bin", NOBODY, NOBODY)
    sub.chmod(0o555)
    before = tree(world_dir)
    report = run_child(UNPRIVILEGED_STORE.format(dest=str(sub / "dest.bin")), user=NOBODY)
    assert report["outcome"]["error"] == "StoragePermissionError"
    assert report["outcome"]["errno"] == errno.EACCES
    assert (report["bytes_read"], report["read_calls"]) == (0, 0)
    assert tree(world_dir) == before


def test_read_only_mount_even_for_root(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "ro", "1m") as mnt:
        dest = mnt / "dest.bin"
        dest.write_bytes(OLD)
        result = _run("mount", "-o", "remount,ro", str(mnt))
        if result.returncode != 0:
            pytest.skip(f"cannot remount read-only: {result.stderr.strip()}")
        before = tree(mnt)
        reader = ShortReader(b"new" * 1000, [100])
        with pytest.raises(StoragePermissionError) as info:
            store_from_reader(reader, dest)
        assert info.value.errno == errno.EROFS
        assert reader.read_calls == 0
        with pytest.raises(StoragePermissionError):
            asyncio.run(astore_from_reader(reader, dest))
        assert reader.read_calls == 0
        assert tree(mnt) == before


# ------------------------------------------------------------------ 3. source failures


@contextlib.contextmanager
def tcp_connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A real loopback TCP connection: (client, server side)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    with client, server:
        yield client, server


def test_connection_reset_by_peer(old_dest: Path) -> None:
    with tcp_connection() as (client, server):

        def peer() -> None:
            server.sendall(payload(200_000))
            # SO_LINGER 0 makes close() send a RST: the reader gets ECONNRESET.
            server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            server.close()

        sender = threading.Thread(target=peer)
        sender.start()
        try:
            with client.makefile("rb", buffering=0) as source:
                with pytest.raises(SourceError) as info:
                    store_from_reader(source, old_dest)
        finally:
            sender.join()
    cause = info.value.__cause__
    assert isinstance(cause, ConnectionResetError) and cause.errno == errno.ECONNRESET
    assert "ConnectionResetError" in str(info.value)
    assert_untouched(old_dest)


def test_socket_timeout(old_dest: Path) -> None:
    with tcp_connection() as (client, server):
        sender = threading.Thread(target=server.sendall, args=(payload(100_000),))
        sender.start()  # then the peer stalls, keeping the connection open
        client.settimeout(0.3)
        try:
            with client.makefile("rb", buffering=0) as source:
                with pytest.raises(SourceError, match=r"after \d+ bytes") as info:
                    store_from_reader(source, old_dest)
        finally:
            sender.join()
    assert isinstance(info.value.__cause__, TimeoutError)
    assert_untouched(old_dest)


def test_failing_reader_after_n_bytes_sync_and_async(old_dest: Path) -> None:
    for exc in (ConnectionResetError, TimeoutError("read timed out"), OSError(errno.EIO, "EIO")):
        reader = FailingReader(payload(MiB), 300_000, exc)
        with pytest.raises(SourceError) as info:
            store_from_reader(reader, old_dest)
        assert isinstance(info.value.__cause__, OSError)
        assert "after 300000 bytes" in str(info.value)
        assert_untouched(old_dest)


class TooGenerous:
    """read(n) returns n + 1 bytes: a broken wrapper that would overrun limits."""

    def read(self, n: int) -> bytes:
        return b"x" * (n + 1)


class TooGenerousInto:
    """readinto() claims more bytes than the buffer holds."""

    def readinto(self, buffer: memoryview) -> int:
        return len(buffer) + 1


@pytest.mark.parametrize("source", [TooGenerous(), TooGenerousInto()], ids=["read", "readinto"])
def test_source_returning_more_than_asked(old_dest: Path, source: object) -> None:
    with pytest.raises(SourceError, match=r"more than|for a buffer of"):
        store_from_reader(source, old_dest)  # type: ignore[arg-type]
    assert_untouched(old_dest)


def test_non_blocking_source_returning_none(old_dest: Path) -> None:
    r, w = os.pipe()
    try:
        os.set_blocking(r, False)
        os.write(w, b"some bytes")  # then nothing is ready: readinto() returns None
        with open(r, "rb", buffering=0, closefd=False) as source:
            with pytest.raises(SourceError, match="non-blocking"):
                store_from_reader(source, old_dest)
    finally:
        os.close(r)
        os.close(w)
    assert_untouched(old_dest)


def test_read_returning_none_is_a_source_error(old_dest: Path) -> None:
    class NoneRead:
        def read(self, n: int) -> bytes | None:
            return None

    with pytest.raises(SourceError, match="non-blocking"):
        store_from_reader(NoneRead(), old_dest)  # type: ignore[arg-type]
    assert_untouched(old_dest)


def test_text_mode_sources_are_type_errors_before_any_read(old_dest: Path) -> None:
    text_file = old_dest.with_name("text.txt")
    text_file.write_text("hello")
    with open(text_file) as f:
        with pytest.raises(TypeError, match="binary mode"):
            store_from_reader(f, old_dest)  # type: ignore[arg-type]
        assert f.tell() == 0
    with pytest.raises(TypeError, match="binary mode"):
        store_from_reader(io.StringIO("hello"), old_dest)  # type: ignore[arg-type]

    class StrRead:  # a duck-typed text reader
        def read(self, n: int) -> str:
            return "hello"

    with pytest.raises(TypeError, match="text mode"):
        store_from_reader(StrRead(), old_dest)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str"):
        store_from_reader(iter(["a", "b"]), old_dest)  # type: ignore[arg-type]
    assert sorted(os.listdir(old_dest.parent)) == ["dest.bin", "text.txt"]
    assert old_dest.read_bytes() == OLD


def test_generator_raising_chains_the_original(old_dest: Path) -> None:
    def gen() -> Iterator[bytes]:
        yield b"a" * 1000
        yield b"b" * 1000
        raise ValueError("upstream broke")

    expected = r"ValueError: upstream broke \(after 2000 bytes\)"
    with pytest.raises(SourceError, match=expected) as info:
        store_from_reader(gen(), old_dest)
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.dest == old_dest
    assert_untouched(old_dest)


def test_async_generator_raising_chains_the_original(old_dest: Path) -> None:
    async def agen() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        raise ConnectionAbortedError("peer went away")

    with pytest.raises(SourceError) as info:
        asyncio.run(astore_from_reader(agen(), old_dest))
    assert isinstance(info.value.__cause__, ConnectionAbortedError)
    assert_untouched(old_dest)


# ------------------------------------------------------------------ 5. interrupts, cancellation


def test_keyboard_interrupt_from_the_source(old_dest: Path) -> None:
    reader = FailingReader(payload(MiB), 100_000, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        store_from_reader(reader, old_dest)
    assert_untouched(old_dest)
    store_from_reader(b"healthy", old_dest.with_name("after"))


def test_keyboard_interrupt_from_an_async_source(old_dest: Path) -> None:
    async def agen() -> AsyncIterator[bytes]:
        yield b"a" * 100_000
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(astore_from_reader(agen(), old_dest))
    assert_untouched(old_dest)
    # A sync source under the async front end is read in a worker thread.
    reader = FailingReader(payload(MiB), 100_000, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(astore_from_reader(reader, old_dest))
    assert_untouched(old_dest)


async def _cancel_when(task: asyncio.Task[Any], ready: Callable[[], bool]) -> None:
    while not ready():  # noqa: ASYNC110 - polls a plain attribute of the reader
        await asyncio.sleep(0.002)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_task_cancellation_mid_stream_async_source(old_dest: Path) -> None:
    reader = AsyncSlowReader(payload(4 * MiB), delay=0.001, chunk=64 * 1024)
    task = asyncio.create_task(astore_from_reader(reader, old_dest))
    await _cancel_when(task, lambda: reader.bytes_read > 1 * MiB)  # past the first batch
    assert reader.bytes_read < 4 * MiB
    assert_untouched(old_dest)


@pytest.mark.asyncio
async def test_task_cancellation_while_a_worker_thread_reads(old_dest: Path) -> None:
    reader = SlowReader(payload(4 * MiB), delay=0.002, chunk=64 * 1024)
    task = asyncio.create_task(astore_from_reader(reader, old_dest))
    await _cancel_when(task, lambda: reader.bytes_read > 256 * 1024)
    calls = reader.read_calls
    await asyncio.sleep(0.05)
    assert reader.read_calls == calls  # the worker really stopped reading
    assert_untouched(old_dest)


# ASGI: a raw app (no framework) streaming the request body into astore_from_reader.

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ClientDisconnected(ConnectionError):
    """The ASGI server reported http.disconnect before the body was complete."""


def upload_app(dest: Path) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnected("client disconnected mid-upload")
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return

        try:
            result = await astore_from_reader(body(), dest)
        except SourceError as exc:
            if isinstance(exc.__cause__, ClientDisconnected):
                return  # nobody to answer
            raise
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": result.sha256.encode()})

    return app


async def drive(app: Callable[[Scope, Receive, Send], Awaitable[None]],
                chunks: list[bytes], *, disconnect: bool) -> list[Message]:
    """Play the server: hand the app ``chunks`` one at a time, then disconnect or finish."""
    incoming: asyncio.Queue[Message] = asyncio.Queue()
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1 and not disconnect
        incoming.put_nowait({"type": "http.request", "body": chunk, "more_body": not last})
    if disconnect:
        incoming.put_nowait({"type": "http.disconnect"})
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "PUT", "path": "/upload", "headers": []}
    await app(scope, incoming.get, send)
    return sent


@pytest.mark.asyncio
async def test_asgi_client_disconnect_mid_upload(old_dest: Path) -> None:
    app = upload_app(old_dest)
    chunks = [payload(64 * 1024, i) for i in range(40)]  # 2.5 MiB: several batches
    assert await drive(app, chunks, disconnect=True) == []
    assert_untouched(old_dest)
    # The same app completes a full upload.
    sent = await drive(app, chunks, disconnect=False)
    assert sent[0]["status"] == 201
    assert read(old_dest) == b"".join(chunks)
    assert sent[1]["body"] == hashlib.sha256(b"".join(chunks)).hexdigest().encode()
    assert_no_temp_files(old_dest.parent)


# ------------------------------------------------------------------ 6. concurrency stress


def _race(dest: Path, threads: int, stores: int, size: int) -> tuple[set[str], int]:
    """``threads`` writers store ``stores`` distinct payloads each to ``dest`` while two
    readers check that every read sees one complete payload.  Returns the digests
    and how many reads were checked."""
    payloads = {
        (t, i): payload(size, t * 100_000 + i) for t in range(threads) for i in range(stores)
    }
    digests = {hashlib.sha256(p).hexdigest() for p in payloads.values()}
    assert len(digests) == len(payloads)
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def writer(t: int) -> None:
        try:
            for i in range(stores):
                store_from_reader(payloads[t, i], dest, durable=False)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                with contextlib.suppress(FileNotFoundError):
                    data = dest.read_bytes()
                    assert hashlib.sha256(data).hexdigest() in digests, f"torn read: {len(data)}"
                    reads[0] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for th in readers + writers:
        th.start()
    for th in writers:
        th.join()
    stop.set()
    for th in readers:
        th.join()
    assert errors == []
    return digests, reads[0]


@pytest.mark.parametrize("stores", [pytest.param(100), pytest.param(500, marks=pytest.mark.slow)])
def test_concurrent_overwrites_leave_one_complete_payload(tmp_path: Path, stores: int) -> None:
    dest = tmp_path / "dest.bin"
    digests, reads = _race(dest, threads=8, stores=stores, size=64 * 1024)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() in digests
    assert reads > 0
    assert os.listdir(tmp_path) == ["dest.bin"]


@pytest.mark.parametrize("rounds", [pytest.param(60), pytest.param(400, marks=pytest.mark.slow)])
def test_concurrent_exclusive_creates_have_exactly_one_winner(tmp_path: Path, rounds: int) -> None:
    threads = 8
    barrier = threading.Barrier(threads)
    outcomes: dict[tuple[int, int], str] = {}

    def contender(t: int) -> None:
        for r in range(rounds):
            barrier.wait()
            try:
                store_from_reader(payload(16 * 1024, t), tmp_path / f"r{r}", overwrite=False,
                                  durable=False)
            except DestinationExistsError as exc:
                assert exc.dest == tmp_path / f"r{r}"
                outcomes[t, r] = "exists"
            else:
                outcomes[t, r] = "won"

    workers = [threading.Thread(target=contender, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(outcomes) == threads * rounds
    for r in range(rounds):
        winners = [t for t in range(threads) if outcomes[t, r] == "won"]
        assert len(winners) == 1, (r, winners)
        assert (tmp_path / f"r{r}").read_bytes() == payload(16 * 1024, winners[0])
    assert len(os.listdir(tmp_path)) == rounds
    assert_no_temp_files(tmp_path)

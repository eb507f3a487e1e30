"""streamstore.tus piece by piece: the wire format (_tus_proto), the staging
area (_tus_staging) and TusApp's arguments, plus TusApp in a real uvicorn
server in this process (async and plain on_complete, stats, sweep)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import sys
import threading
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import given
from hypothesis import strategies as st

from streamstore import ContentStore, StorageError
from streamstore._local import LocalBackend
from streamstore._tus_proto import (
    Reply,
    format_http_date,
    parse_checksum,
    parse_concat,
    parse_metadata,
    parse_sha256,
    parse_uint,
    upload_id_from_url,
)
from streamstore._tus_staging import COMMITTED, DONE, Busy, Record, Staging
from streamstore.tus import CompletedUpload, TusApp, TusStats

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}
KEY_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=",")


# -- the wire format ----------------------------------------------------------------

@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_parse_uint_accepts_every_offset(n: int) -> None:
    assert parse_uint(str(n), "X") == n


@pytest.mark.parametrize("value", ["", "-1", "+1", "1.0", "0x10", "\u0661", "1 2", str(2**63)])
def test_parse_uint_refuses(value: str) -> None:
    with pytest.raises(Reply) as error:
        parse_uint(value, "Upload-Offset")
    assert error.value.status == 400
    assert "Upload-Offset" in error.value.message


@given(st.dictionaries(st.text(KEY_CHARS, min_size=1, max_size=20), st.text(max_size=50),
                       max_size=8))
def test_metadata_round_trip(pairs: dict[str, str]) -> None:
    header = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" if v else k
                      for k, v in pairs.items())
    echoed, parsed = parse_metadata(header)
    assert parsed == pairs
    assert parse_metadata(echoed) == (echoed, pairs)


def test_metadata_tolerates_spaces_around_pairs_and_missing_padding() -> None:
    echoed, parsed = parse_metadata(" a YQ , b,c YWJj ")
    assert parsed == {"a": "a", "b": "", "c": "abc"}
    assert echoed == "a YQ , b,c YWJj"  # as sent, trimmed


@given(st.sampled_from(["sha1", "sha256", "md5"]), st.binary(max_size=100))
def test_parse_checksum(name: str, data: bytes) -> None:
    digest = hashlib.new(name, data).digest()
    assert parse_checksum(f"{name} {base64.b64encode(digest).decode()}") == (name, digest)


@given(st.binary(min_size=32, max_size=32))
def test_parse_sha256_hex_and_base64(raw: bytes) -> None:
    for text in (raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode(),
                 base64.urlsafe_b64encode(raw).decode().rstrip("=")):
        assert parse_sha256(text) == raw.hex()


@pytest.mark.parametrize("value", ["", "abc", "g" * 64, base64.b64encode(b"x" * 31).decode()])
def test_parse_sha256_refuses(value: str) -> None:
    with pytest.raises(Reply):
        parse_sha256(value)


def test_parse_concat() -> None:
    assert parse_concat("partial") is None
    assert parse_concat("final;/files/a http://h/files/b") == ["/files/a", "http://h/files/b"]
    for bad in ("final;", "final", "partial;", "other"):
        with pytest.raises(Reply):
            parse_concat(bad)


def test_upload_id_from_url() -> None:
    upload_id = "0123456789abcdef" * 2
    for url in (upload_id, f"/files/{upload_id}", f"http://h:1/a/b/{upload_id}/",
                f"https://h/{upload_id}?x=1#y"):
        assert upload_id_from_url(url) == upload_id
    for url in ("", "/files/", "/files/../etc", f"/files/{upload_id}x", "http://[::1"):
        assert upload_id_from_url(url) is None


@given(st.integers(min_value=0, max_value=4102444800))
def test_http_dates(timestamp: int) -> None:
    text = format_http_date(timestamp)
    assert text.endswith(" GMT")
    assert parsedate_to_datetime(text).timestamp() == timestamp


# -- the staging area ---------------------------------------------------------------

records = st.builds(
    Record,
    id=st.text("0123456789abcdef", min_size=32, max_size=32),
    length=st.none() | st.integers(min_value=10**6, max_value=2**62),
    offset=st.integers(min_value=0, max_value=10**6),
    metadata=st.dictionaries(st.text(KEY_CHARS, min_size=1), st.text(), max_size=4),
    created=st.floats(min_value=0, max_value=1e10),
    expires=st.none() | st.floats(min_value=0, max_value=1e10),
    epoch=st.integers(min_value=0, max_value=100),
)


@given(records)
def test_record_round_trip(record: Record) -> None:
    assert Record.decode(record.encode()) == record


@pytest.mark.parametrize("change", [
    {"id": "../../etc/passwd"}, {"offset": -1}, {"offset": 11, "length": 10},
    {"state": "weird"}, {"state": COMMITTED, "sha256": None}, {"metadata": {"a": 1}},
    {"length": True}, {"v": 2}, {"unknown": 1},
])
def test_record_decode_refuses_what_it_did_not_write(change: dict[str, Any]) -> None:
    import json

    data = json.loads(Record(id="a" * 32, length=10, offset=5).encode())
    data.update(change)
    with pytest.raises(ValueError):
        Record.decode(json.dumps(data).encode())
    with pytest.raises(ValueError):
        Record.decode(b"[1, 2]")


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    area = Staging(tmp_path / "staging", durable=True)
    area.ensure()
    return area


def test_create_read_write_remove(staging: Staging) -> None:
    record = Record(id=Staging.new_id(), length=11, metadata={"k": "v"})
    data = staging.create(record)
    try:
        assert staging.read(record.id) == record
        data.write(0, [b"hello", b"", b" world"])
        data.sync()
        record.offset = 11
        staging.write(record)
        assert staging.read(record.id) == record
        assert list(staging.ids()) == [record.id]
    finally:
        data.close()
    assert staging.data_path(record.id).read_bytes() == b"hello world"
    assert staging.remove(record.id)
    assert staging.read(record.id) is None
    assert not staging.remove(record.id)
    assert sorted(os.listdir(staging.directory)) == []


def test_a_corrupt_record_reads_as_missing(staging: Staging) -> None:
    upload_id = Staging.new_id()
    staging.info_path(upload_id).write_text("{not json")
    assert staging.read(upload_id) is None
    other = Staging.new_id()
    staging.info_path(other).write_bytes(Record(id=upload_id, length=1).encode())
    assert staging.read(other) is None  # a record under someone else's name


def test_data_file_writes_many_chunks_and_hashes_ranges(staging: Staging) -> None:
    record = Record(id=Staging.new_id(), length=None)
    data = staging.create(record)
    try:
        chunks = [os.urandom(n % 97 + 1) for n in range(3000)]  # more than IOV_MAX
        written = data.write(0, chunks)
        content = b"".join(chunks)
        assert written == len(content)
        for start, end in ((0, len(content)), (5, 5), (17, len(content) - 3)):
            hasher = hashlib.sha256()
            data.hash_range(hasher.update, start, end)
            assert hasher.hexdigest() == hashlib.sha256(content[start:end]).hexdigest()
        with pytest.raises(StorageError):
            data.hash_range(hashlib.sha256().update, 0, len(content) + 1)
        data.truncate(100)
        reader = data.reader(50)
        try:
            buffer = memoryview(bytearray(1000))
            assert reader.readinto(buffer) == 50
            assert bytes(buffer[:50]) == content[:50]
            assert reader.readinto(buffer) == 0
        finally:
            reader.close()
    finally:
        data.close()


def hold_lock_in_a_child(path: Path) -> subprocess.Popen[bytes]:
    code = ("import fcntl, os, sys, time\n"
            f"fd = os.open({str(path)!r}, os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"locked\n"
    return child


def test_lock_is_exclusive_across_processes_and_dies_with_them(staging: Staging) -> None:
    record = Record(id=Staging.new_id(), length=5)
    staging.create(record).close()
    child = hold_lock_in_a_child(staging.data_path(record.id))
    try:
        with pytest.raises(Busy):
            staging.lock(record.id, 0.2)
    finally:
        child.kill()
        child.communicate()
    data = staging.lock(record.id, 5.0)
    assert data is not None
    data.close()
    assert staging.lock(Staging.new_id(), 0.0) is None


def test_staging_sweep(staging: Staging) -> None:
    now = time.time()

    def make(expires: float | None, state: str = "uploading") -> str:
        sha = None if state == "uploading" else "0" * 64
        record = Record(id=Staging.new_id(), length=10, expires=expires, state=state,
                        sha256=sha)
        staging.create(record).close()
        return record.id

    expired, fresh, forever = make(now - 1), make(now + 100), make(None)
    busy, locked = make(now - 1), make(now - 1)
    committed, done = make(now + 100, COMMITTED), make(now + 100, DONE)
    orphan_old, orphan_new = Staging.new_id(), Staging.new_id()
    for orphan in (orphan_old, orphan_new):
        staging.data_path(orphan).write_bytes(b"left behind")
    os.utime(staging.data_path(orphan_old), (now - 7200, now - 7200))
    temp = staging.directory / f".streamstore-tmp.{2**22 + 7}.0123456789abcdef.x.info"
    temp.write_bytes(b"")
    os.utime(temp, (now - 7200, now - 7200))
    child = hold_lock_in_a_child(staging.data_path(locked))
    try:
        report = staging.sweep(now, busy={busy}, orphan_age=3600)
    finally:
        child.kill()
        child.communicate()
    assert report.removed == [expired]
    assert report.orphans == 2  # the old orphaned data file and the dead writer's temp
    assert [r.id for r in report.to_notify] == [committed]
    left = set(os.listdir(staging.directory))
    for upload_id in (fresh, forever, busy, locked):
        assert {f"{upload_id}.info", f"{upload_id}.data"} <= left
    for upload_id in (committed, done):  # a finished upload keeps only its record
        assert f"{upload_id}.info" in left and f"{upload_id}.data" not in left
    assert f"{orphan_new}.data" in left
    assert f"{orphan_old}.data" not in left and temp.name not in left
    assert f"{expired}.info" not in left and f"{expired}.data" not in left


# -- TusApp's arguments -------------------------------------------------------------

def test_staging_defaults_to_the_store_root(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    app = TusApp(store)
    assert app.staging.directory == tmp_path / "store" / "tus"
    assert app.staging.directory.is_dir()
    assert "TusApp(" in repr(app)


def test_staging_is_required_for_a_store_that_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    store = ContentStore(LocalBackend(tmp_path / "b"))
    with pytest.raises(ValueError, match="staging"):
        TusApp(store)
    app = TusApp(store, staging=tmp_path / "elsewhere")
    assert app.staging.directory.is_dir()


@pytest.mark.parametrize(("options", "error"), [
    ({"max_size": -1}, ValueError), ({"max_size": 1.5}, TypeError),
    ({"expire_after": -1}, ValueError), ({"expire_after": "1"}, TypeError),
    ({"lock_timeout": None}, TypeError), ({"idle_timeout": 0}, ValueError),
    ({"checkpoint_every": 0}, ValueError), ({"sweep_interval": 0}, ValueError),
    ({"reserve": -5}, ValueError), ({"on_complete": "print"}, TypeError),
    ({"expire_after": True}, TypeError),
])
def test_bad_arguments(tmp_path: Path, options: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        TusApp(ContentStore(tmp_path / "store"), **options)


def test_all_is_exactly_the_public_names() -> None:
    from streamstore import tus

    defined_here = {name for name, value in vars(tus).items() if not name.startswith("_")
                    and getattr(value, "__module__", None) == tus.__name__}
    assert defined_here == set(tus.__all__)
    for name in tus.__all__:
        value = getattr(tus, name)
        assert value.__doc__, name
        for attr, member in vars(value).items():
            if not attr.startswith("_") and callable(member):
                assert member.__doc__, f"{name}.{attr}"


def test_store_must_be_a_content_store(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        TusApp(str(tmp_path))  # type: ignore[arg-type]


# -- TusApp in a uvicorn server in this process ---------------------------------------

class ThreadServer:
    """uvicorn serving ``app`` on a free port, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on",
                                log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive()
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "store")


def upload(url: str, data: bytes, metadata: str = "") -> str:
    headers = {**TUS, "Upload-Length": str(len(data))}
    if metadata:
        headers["Upload-Metadata"] = metadata
    location = httpx.post(url + "/", headers=headers).headers["Location"]
    response = httpx.patch(location, content=data,
                           headers={**TUS, **OCTETS, "Upload-Offset": "0"})
    assert response.status_code == 204
    return str(location)


def test_location_under_a_server_root_path(store: ContentStore) -> None:
    """Served alone behind a proxy that strips /api (uvicorn --root-path /api)."""
    app = TusApp(store)
    server = ThreadServer(app)
    server.server.config.root_path = "/api"
    with server as url:
        response = httpx.post(url + "/", headers={**TUS, "Upload-Length": "1"})
        location = response.headers["Location"]
        assert location.startswith(url + "/api/")
        upload_id = location.rsplit("/", 1)[1]
        assert httpx.head(f"{url}/{upload_id}", headers=TUS).status_code == 200


def test_async_on_complete_runs_on_the_event_loop(store: ContentStore) -> None:
    calls: list[tuple[CompletedUpload, bool]] = []

    async def on_complete(done: CompletedUpload) -> None:
        await asyncio.sleep(0)
        calls.append((done, threading.current_thread() is loop_thread[0]))

    loop_thread: list[threading.Thread] = []
    app = TusApp(store, on_complete=on_complete)
    server = ThreadServer(app)
    loop_thread.append(server.thread)
    with server as url:
        location = upload(url, b"async", f"name {base64.b64encode(b'a.txt').decode()}")
    (done, on_loop), = calls
    assert on_loop
    assert done.id == location.rsplit("/", 1)[1]
    assert done.size == 5 and done.sha256 == hashlib.sha256(b"async").hexdigest()
    assert done.metadata == {"name": "a.txt"}
    assert done.stored.created and done.stored.metadata == {"name": "a.txt"}
    assert done.stored.sha256 in store


def test_plain_on_complete_runs_in_a_worker_thread(store: ContentStore) -> None:
    calls: list[bool] = []
    server_thread: list[threading.Thread] = []

    def on_complete(done: CompletedUpload) -> None:
        calls.append(threading.current_thread() is server_thread[0])

    server = ThreadServer(TusApp(store, on_complete=on_complete))
    server_thread.append(server.thread)
    with server as url:
        upload(url, b"plain")
        upload(url, b"plain")  # the same bytes again: stored once, reported twice
    assert calls == [False, False]
    assert len(store) == 1


def test_stats(store: ContentStore) -> None:
    app = TusApp(store, expire_after=None)
    with ThreadServer(app) as url:
        upload(url, b"done")
        location = httpx.post(url + "/", headers={**TUS, "Upload-Length": "10"}).headers[
            "Location"]
        httpx.patch(location, content=b"abc", headers={**TUS, **OCTETS, "Upload-Offset": "0"})
        stats = asyncio.run(app.stats())
    assert isinstance(stats, TusStats)
    assert (stats.uploads_active, stats.bytes_received, stats.uploads_completed) == (1, 3, 1)
    assert stats.bytes_staged == 3 and stats.uploads_expired == 0
    assert stats.staging_free is not None and stats.staging_free > 0
    assert len(list(app.uploads())) == 2


def test_sweep_forgets_expired_uploads(store: ContentStore) -> None:
    app = TusApp(store, expire_after=0.5, sweep_interval=3600)
    with ThreadServer(app) as url:
        upload(url, b"done")
        httpx.post(url + "/", headers={**TUS, "Upload-Length": "10"})
        time.sleep(0.6)
        assert asyncio.run(app.stats()).uploads_expired == 2
        assert asyncio.run(app.sweep()) == 2
        assert list(app.uploads()) == []
    assert len(store) == 1  # expiry forgets uploads, never stored objects


def test_non_http_scopes_are_refused(store: ContentStore) -> None:
    app = TusApp(store)

    async def main() -> None:
        async def receive() -> dict[str, Any]:
            return {}

        async def send(message: Any) -> None:
            pass

        with pytest.raises(RuntimeError, match="websocket"):
            await app({"type": "websocket"}, receive, send)

    asyncio.run(main())


def test_no_file_system_call_runs_on_the_event_loop(tmp_path: Path) -> None:
    """Every file the app opens, removes, renames or truncates, it does so in a
    worker thread: an audit hook in a server process (tests/tus_loop_audit.py)
    records the calls made on the event loop's thread for every kind of request."""
    import json

    script = Path(__file__).with_name("tus_loop_audit.py")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["completed"] == 2
    assert report["elsewhere"] > 20  # the hook does see the app's file work...
    assert report["on_loop"] == []  # ...and none of it on the loop

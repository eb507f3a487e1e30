"""ContentStore(S3Backend) against a real SeaweedFS: the whole ContentStore API,
dedupe, the metadata rule, staging and copying, concurrency, reading."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamstore as ss
from s3server import S3Server
from streamstore.s3 import S3Backend, S3Reader, read_sha256, verify_object
from test_s3_sink import PART, assert_clean, body, data_of, keys, uploads


def make_store(client: Any, bucket: str, prefix: str = "blobs", **kwargs: Any) -> ss.ContentStore:
    kwargs.setdefault("part_size", PART)
    return ss.ContentStore(S3Backend(client, bucket, prefix, **kwargs))


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def staging_keys(client: Any, bucket: str) -> list[str]:
    return [k for k in keys(client, bucket) if ".streamstore-staging/" in k]


@pytest.mark.parametrize("size", [0, 1, PART, 2 * PART + 1])
def test_put_open_info_round_trip(s3_client: Any, s3_bucket: str, size: int) -> None:
    store = make_store(s3_client, s3_bucket)
    data = data_of(size)
    info = store.put(data, metadata={"name": "a b.txt", "n": 1})
    assert info.sha256 == digest(data)
    assert info.created is True
    assert info.path is None
    assert info.location == f"s3://{s3_bucket}/blobs/{info.sha256}"
    assert info.metadata == {"name": "a b.txt", "n": 1}
    assert store.info(info.sha256) == info
    assert info.sha256 in store
    assert list(store) == [info.sha256]
    assert len(store) == 1
    with store.open(info.sha256) as f:
        assert f.read() == data
    with store.open(info.sha256, verify=True) as f:
        assert f.read() == data
    assert store.verify() == []
    assert read_sha256(s3_client, s3_bucket, f"blobs/{info.sha256}") == info.sha256
    assert verify_object(s3_client, s3_bucket, f"blobs/{info.sha256}").sha256 == info.sha256
    assert keys(s3_client, s3_bucket) == [f"blobs/{info.sha256}"]
    assert uploads(s3_client, s3_bucket) == []
    with pytest.raises(TypeError, match="local filesystem"):
        store.path(info.sha256)


@pytest.mark.parametrize("size", [10, 2 * PART + 1])
def test_duplicate_put_keeps_the_first_object_and_metadata(s3_client: Any, s3_bucket: str,
                                                          size: int) -> None:
    store = make_store(s3_client, s3_bucket)
    data = data_of(size)
    first = store.put(data, metadata={"v": 1})
    etag = s3_client.head_object(Bucket=s3_bucket, Key=f"blobs/{first.sha256}")["ETag"]
    again = store.put(data, metadata={"v": 2})
    assert again.created is False
    assert again.metadata == {"v": 1}
    assert again.sha256 == first.sha256
    assert s3_client.head_object(Bucket=s3_bucket, Key=f"blobs/{first.sha256}")["ETag"] == etag
    assert keys(s3_client, s3_bucket) == [f"blobs/{first.sha256}"]
    assert uploads(s3_client, s3_bucket) == []


def test_metadata_is_set_by_the_put_that_creates_the_object(s3_client: Any,
                                                           s3_bucket: str) -> None:
    store = make_store(s3_client, s3_bucket)
    bare = store.put(b"content")
    assert bare.metadata == {}
    later = store.put(b"content", metadata={"name": "late"})
    assert later.created is False
    assert later.metadata == {} == store.info(bare.sha256).metadata


@pytest.mark.parametrize("size", [10, 2 * PART + 1])
def test_expected_sha256_writes_straight_to_the_address(s3_server: S3Server, s3_client: Any,
                                                       s3_bucket: str, size: int) -> None:
    client = s3_server.client()
    seen: list[str] = []
    client.meta.events.register("before-call.s3.*",
                                lambda model, **kw: seen.append(model.name))
    store = make_store(client, s3_bucket)
    data = data_of(size)
    info = store.put(data, expected_sha256=digest(data).upper(), metadata={"k": "v"})
    assert info.created is True
    assert info.metadata == {"k": "v"}
    assert "CopyObject" not in seen and "DeleteObject" not in seen
    assert body(s3_client, s3_bucket, f"blobs/{info.sha256}") == data
    again = store.put(data, expected_sha256=info.sha256)
    assert again.created is False
    assert_clean(s3_client, s3_bucket, [f"blobs/{info.sha256}"])


@pytest.mark.parametrize("size", [10, 2 * PART + 1])
def test_a_wrong_expected_sha256_stores_nothing(s3_client: Any, s3_bucket: str,
                                                size: int) -> None:
    store = make_store(s3_client, s3_bucket)
    with pytest.raises(ss.HashMismatchError):
        store.put(data_of(size), expected_sha256="ab" * 32)
    assert_clean(s3_client, s3_bucket)


def test_a_multipart_put_is_staged_then_copied(s3_server: S3Server, s3_client: Any,
                                               s3_bucket: str) -> None:
    client = s3_server.client()
    seen: list[str] = []
    client.meta.events.register("before-call.s3.*",
                                lambda model, **kw: seen.append(model.name))
    store = make_store(client, s3_bucket)
    data = data_of(2 * PART + 1)
    info = store.put(data)
    assert "CopyObject" in seen and "DeleteObject" in seen
    found = s3_client.head_object(Bucket=s3_bucket, Key=f"blobs/{info.sha256}")
    assert found["Metadata"]["sha256"] == info.sha256
    assert_clean(s3_client, s3_bucket, [f"blobs/{info.sha256}"])


def test_large_objects_are_copied_in_parts(s3_server: S3Server, s3_client: Any,
                                           s3_bucket: str) -> None:
    """UploadPartCopy (beyond CopyObject's 5 GiB), shown with the limit lowered."""
    client = s3_server.client()
    seen: list[str] = []
    client.meta.events.register("before-call.s3.*",
                                lambda model, **kw: seen.append(model.name))
    backend = S3Backend(client, s3_bucket, "big", part_size=PART)
    backend.copy_limit = PART
    backend.copy_part_size = PART
    store = ss.ContentStore(backend)
    data = data_of(3 * PART + 123)
    info = store.put(data, metadata={"big": True})
    assert seen.count("UploadPartCopy") == 4
    assert "CopyObject" not in seen
    assert info.metadata == {"big": True} == store.info(info.sha256).metadata
    assert body(s3_client, s3_bucket, f"big/{info.sha256}") == data
    found = s3_client.head_object(Bucket=s3_bucket, Key=f"big/{info.sha256}",
                                  ChecksumMode="ENABLED")
    assert found["ChecksumType"] == "FULL_OBJECT"
    assert_clean(s3_client, s3_bucket, [f"big/{info.sha256}"])


def _put_concurrently(store: ss.ContentStore, data: bytes, n: int) -> list[ss.ObjectInfo]:
    results: list[ss.ObjectInfo] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def put(i: int) -> None:
        barrier.wait()
        try:
            results.append(store.put(data, metadata={"writer": i}))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return results


def test_eight_concurrent_puts_of_one_content(s3_client: Any, s3_bucket: str) -> None:
    store = make_store(s3_client, s3_bucket)
    for size in (1000, 2 * PART + 1):
        data = data_of(size, seed=size)
        results = _put_concurrently(store, data, 8)
        assert {r.sha256 for r in results} == {digest(data)}
        assert sum(r.created for r in results) == 1
        winner = next(r for r in results if r.created)
        assert all(r.metadata == winner.metadata for r in results)
        assert body(s3_client, s3_bucket, f"blobs/{digest(data)}") == data
        assert staging_keys(s3_client, s3_bucket) == []
        assert uploads(s3_client, s3_bucket) == []


@pytest.mark.asyncio
async def test_aput(s3_client: Any, s3_bucket: str) -> None:
    store = make_store(s3_client, s3_bucket)
    data = data_of(2 * PART + 5)

    async def pieces() -> Any:
        for i in range(0, len(data), 1 << 20):
            yield data[i:i + (1 << 20)]

    infos = await asyncio.gather(store.aput(pieces()), store.aput(data))
    assert {i.sha256 for i in infos} == {digest(data)}
    assert sorted(i.created for i in infos) == [False, True]
    assert_clean(s3_client, s3_bucket, [f"blobs/{digest(data)}"])


def test_failures_leave_nothing(s3_client: Any, s3_bucket: str) -> None:
    from streamstore.testing import FailingReader
    store = make_store(s3_client, s3_bucket)

    class Veto(ss.Hook):
        def on_finish(self, result: ss.StoreResult) -> None:
            raise RuntimeError("no")

    for size in (10, 2 * PART + 1):
        with pytest.raises(ss.SourceError):
            store.put(FailingReader(data_of(size), fail_after=size - 1))
        with pytest.raises(RuntimeError):
            store.put(data_of(size), hooks=[Veto()])
        with pytest.raises(ss.TooLargeError):
            store.put(data_of(size), limit=size - 1)
    assert_clean(s3_client, s3_bucket)


def test_interrupted_copy_that_landed_is_committed(s3_server: S3Server, s3_client: Any,
                                                  s3_bucket: str) -> None:
    client = s3_server.client()
    armed = [True]

    def interrupt(**kwargs: Any) -> None:
        if armed[0]:
            armed[0] = False
            raise KeyboardInterrupt

    client.meta.events.register("after-call.s3.CopyObject", interrupt)
    store = make_store(client, s3_bucket)
    data = data_of(2 * PART + 1)
    with pytest.raises(KeyboardInterrupt) as info:
        store.put(data)
    result = info.value.committed  # type: ignore[attr-defined]
    assert result.sha256 == digest(data)
    assert body(s3_client, s3_bucket, f"blobs/{digest(data)}") == data
    assert_clean(s3_client, s3_bucket, [f"blobs/{digest(data)}"])  # staging removed


def test_interrupt_before_the_copy_aborts(s3_server: S3Server, s3_client: Any,
                                          s3_bucket: str) -> None:
    client = s3_server.client()
    armed = [True]

    def interrupt(**kwargs: Any) -> None:
        if armed[0]:
            armed[0] = False
            raise KeyboardInterrupt

    client.meta.events.register("before-send.s3.CopyObject", interrupt)
    with pytest.raises(KeyboardInterrupt) as info:
        make_store(client, s3_bucket).put(data_of(2 * PART + 1))
    assert getattr(info.value, "committed", None) is None
    assert_clean(s3_client, s3_bucket)


def test_verify_and_open_verify_find_changed_bytes(s3_client: Any, s3_bucket: str) -> None:
    store = make_store(s3_client, s3_bucket)
    good = store.put(b"good bytes")
    bad = store.put(b"soon bad")
    s3_client.put_object(Bucket=s3_bucket, Key=f"blobs/{bad.sha256}", Body=b"tampered")
    assert store.verify() == [bad.sha256]
    assert store.verify(good.sha256) == []
    with store.open(bad.sha256, verify=True) as f, pytest.raises(ss.HashMismatchError):
        f.read()


def test_delete_missing_and_invalid(s3_client: Any, s3_bucket: str) -> None:
    store = make_store(s3_client, s3_bucket)
    info = store.put(b"x")
    assert store.delete(info.sha256) is True
    assert store.delete(info.sha256) is False
    assert info.sha256 not in store
    with pytest.raises(ss.ObjectNotFoundError):
        store.info(info.sha256)
    with pytest.raises(ss.ObjectNotFoundError):
        store.open(info.sha256)
    with pytest.raises(ss.InvalidDigestError):
        store.open("../../etc/passwd")
    assert len(store) == 0


def test_listing_ignores_foreign_keys_and_other_prefixes(s3_client: Any, s3_bucket: str) -> None:
    a = make_store(s3_client, s3_bucket, "a")
    b = make_store(s3_client, s3_bucket, "a/b")
    root = make_store(s3_client, s3_bucket, "")
    ia = a.put(b"in a")
    ib = b.put(b"in b")
    ir = root.put(b"in root")
    s3_client.put_object(Bucket=s3_bucket, Key="a/notes.txt", Body=b"x")
    s3_client.put_object(Bucket=s3_bucket, Key=f"a/{'f' * 63}", Body=b"x")
    assert list(a) == [ia.sha256]
    assert list(b) == [ib.sha256]
    assert list(root) == [ir.sha256]
    assert root.location == f"s3://{s3_bucket}"
    assert ir.location == f"s3://{s3_bucket}/{ir.sha256}"


def test_sweep_removes_stale_uploads_and_staging(s3_client: Any, s3_bucket: str) -> None:
    store = make_store(s3_client, s3_bucket)
    kept = store.put(b"kept")
    staging = f"blobs/.streamstore-staging/1-{'0' * 32}"
    s3_client.put_object(Bucket=s3_bucket, Key=staging, Body=b"left by a crash")
    s3_client.create_multipart_upload(Bucket=s3_bucket, Key=f"blobs/{'a' * 64}")
    s3_client.create_multipart_upload(Bucket=s3_bucket, Key="elsewhere/x")  # not the store's
    assert store.sweep(3600) == 0
    assert store.sweep(0) == 2
    assert keys(s3_client, s3_bucket) == [f"blobs/{kept.sha256}"]
    assert [u["Key"] for u in uploads(s3_client, s3_bucket)] == ["elsewhere/x"]


def test_metadata_too_large_is_refused_before_reading(s3_client: Any, s3_bucket: str) -> None:
    from streamstore.testing import FailingReader
    store = make_store(s3_client, s3_bucket)
    reader = FailingReader(b"data", fail_after=0)
    with pytest.raises(ValueError, match="too large"):
        store.put(reader, metadata={"x": "y" * 3000})
    assert reader.read_calls == 0


def test_reader_seek_and_read(s3_client: Any, s3_bucket: str) -> None:
    data = data_of(300_000)
    s3_client.put_object(Bucket=s3_bucket, Key="r", Body=data)
    with S3Reader(s3_client, s3_bucket, "r") as r:
        assert r.size == len(data) and r.seekable() and r.readable()
        assert r.read(10) == data[:10]
        assert r.seek(-5, io.SEEK_END) == len(data) - 5
        assert r.read() == data[-5:]
        assert r.read(1) == b""
        r.seek(1000)
        assert r.tell() == 1000
        assert r.read(100_000) == data[1000:101_000]
        r.seek(10, io.SEEK_CUR)
        assert r.read(5) == data[101_010:101_015]
        r.seek(len(data) + 10)
        assert r.read(5) == b""
        with pytest.raises(ValueError):
            r.seek(-1)
    s3_client.put_object(Bucket=s3_bucket, Key="empty", Body=b"")
    with S3Reader(s3_client, s3_bucket, "empty") as r:
        assert r.read() == b""
    with pytest.raises(ss.StorageError) as info:
        S3Reader(s3_client, s3_bucket, "missing")
    assert info.value.errno == __import__("errno").ENOENT


def test_reader_refuses_to_mix_two_versions(s3_client: Any, s3_bucket: str) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="r", Body=data_of(100_000))
    with S3Reader(s3_client, s3_bucket, "r") as r:
        r.read(10)
        s3_client.put_object(Bucket=s3_bucket, Key="r", Body=data_of(100_000, seed=3))
        r.seek(50_000)
        with pytest.raises(ss.StorageError) as info:
            r.read(10)
    assert info.value.errno == __import__("errno").ESTALE


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.integers(0, 70_000), st.integers(0, 30_000)), max_size=6))
def test_reader_matches_bytes_under_random_seeks(s3_client: Any, s3_bucket: str,
                                                 ops: list[tuple[int, int]]) -> None:
    data = data_of(65_536 + 17)
    key = "h"
    if key not in keys(s3_client, s3_bucket):
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=data)
    reference = io.BytesIO(data)
    with S3Reader(s3_client, s3_bucket, key) as r:
        for pos, n in ops:
            r.seek(pos)
            reference.seek(pos)
            assert r.read(n) == reference.read(n)
            assert r.tell() == reference.tell()


def test_backend_arguments(s3_client: Any) -> None:
    with pytest.raises(ValueError):
        S3Backend(s3_client, "")
    with pytest.raises(ValueError, match="part_size"):
        S3Backend(s3_client, "b", part_size=1)
    backend = S3Backend(s3_client, "b", "/x/y/")
    assert backend.location == "s3://b/x/y"
    assert backend.key("a" * 64) == f"x/y/{'a' * 64}"
    assert repr(ss.ContentStore(backend)) == "ContentStore(S3Backend('s3://b/x/y'))"

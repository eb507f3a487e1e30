"""S3Sink against a real SeaweedFS: round trips, what is stored where, and
every failure leaving the key as it was with no multipart upload behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ConnectionClosedError

import streamstore as ss
from s3server import S3Server
from streamstore._s3checksum import Checksum
from streamstore.s3 import S3Sink, read_sha256, verify_object
from streamstore.testing import AsyncSlowReader, FailingReader

MiB = 1024 * 1024
PART = 5 * MiB  # S3's minimum: keeps the tests fast


def data_of(n: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(f"{seed}-{n}".encode()).digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


def uploads(client: Any, bucket: str) -> list[dict[str, Any]]:
    return list(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def keys(client: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def body(client: Any, bucket: str, key: str) -> bytes:
    return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def assert_clean(client: Any, bucket: str, expected_keys: list[str] | None = None) -> None:
    assert uploads(client, bucket) == []
    assert keys(client, bucket) == (expected_keys or [])


def sink(client: Any, bucket: str, key: str = "obj", **kwargs: Any) -> S3Sink:
    kwargs.setdefault("part_size", PART)
    return S3Sink(client, bucket, key, **kwargs)


# -- round trips -----------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 3 * PART + 1])
def test_round_trip(s3_client: Any, s3_bucket: str, size: int) -> None:
    data = data_of(size)
    result = ss.store_from_reader(data, sink(s3_client, s3_bucket))
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.size == size
    assert result.path is None
    assert result.location == f"s3://{s3_bucket}/obj"
    assert body(s3_client, s3_bucket, "obj") == data
    assert read_sha256(s3_client, s3_bucket, "obj") == result.sha256
    assert verify_object(s3_client, s3_bucket, "obj") == result
    assert_clean(s3_client, s3_bucket, ["obj"])


def test_one_part_is_a_put_with_a_server_checked_sha256(s3_client: Any, s3_bucket: str) -> None:
    data = data_of(PART)
    s = sink(s3_client, s3_bucket)
    result = ss.store_from_reader(data, s)
    assert s.upload_id is None
    found = s3_client.head_object(Bucket=s3_bucket, Key="obj", ChecksumMode="ENABLED")
    assert found["Metadata"]["sha256"] == result.sha256
    assert found["Metadata"]["streamstore-upload"] == s.nonce
    assert hashlib.sha256(data).digest() == __import__("base64").b64decode(
        found["ChecksumSHA256"])


def test_multipart_carries_a_full_object_crc_and_a_sha256_tag(s3_client: Any,
                                                             s3_bucket: str) -> None:
    data = data_of(2 * PART + 7)
    s = sink(s3_client, s3_bucket)
    result = ss.store_from_reader(data, s)
    assert s.upload_id is not None
    found = s3_client.head_object(Bucket=s3_bucket, Key="obj", ChecksumMode="ENABLED")
    assert found["ChecksumType"] == "FULL_OBJECT"
    value = found[s.checksum.param]
    assert value == s.checksum.encode(s.checksum.compute(data))
    assert "sha256" not in found["Metadata"]
    tags = {t["Key"]: t["Value"] for t in
            s3_client.get_object_tagging(Bucket=s3_bucket, Key="obj")["TagSet"]}
    assert tags == {"sha256": result.sha256, "streamstore-upload": s.nonce}


def test_crc32_full_object_checksum(s3_client: Any, s3_bucket: str) -> None:
    data = data_of(2 * PART + 3, seed=1)
    ss.store_from_reader(data, sink(s3_client, s3_bucket, checksum="CRC32"))
    found = s3_client.head_object(Bucket=s3_bucket, Key="obj", ChecksumMode="ENABLED")
    import base64
    import zlib
    assert base64.b64decode(found["ChecksumCRC32"]) == zlib.crc32(data).to_bytes(4, "big")


def test_open_writer_and_user_metadata_and_extra_args(s3_client: Any, s3_bucket: str) -> None:
    data = data_of(PART + 10)
    s = sink(s3_client, s3_bucket, metadata={"origin": "test"},
             extra_args={"ContentType": "image/png", "Tagging": "team=a&x=y%20z"})
    with ss.open_writer(s, expected_size=len(data)) as w:
        for i in range(0, len(data), 100_000):
            w.write(data[i:i + 100_000])
    assert w.result is not None and w.result.size == len(data)
    found = s3_client.head_object(Bucket=s3_bucket, Key="obj")
    assert found["ContentType"] == "image/png"
    assert found["Metadata"]["origin"] == "test"
    tags = {t["Key"]: t["Value"] for t in
            s3_client.get_object_tagging(Bucket=s3_bucket, Key="obj")["TagSet"]}
    assert tags == {"team": "a", "x": "y z", "sha256": w.result.sha256,
                    "streamstore-upload": s.nonce}
    assert body(s3_client, s3_bucket, "obj") == data


@pytest.mark.asyncio
async def test_async_front_ends(s3_client: Any, s3_bucket: str) -> None:
    data = data_of(2 * PART + 1)

    async def pieces() -> Any:
        for i in range(0, len(data), 300_000):
            yield data[i:i + 300_000]

    result = await ss.astore_from_reader(pieces(), sink(s3_client, s3_bucket, "a"))
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    async with ss.aopen_writer(sink(s3_client, s3_bucket, "b")) as w:
        await w.write(data)
    assert w.result == ss.StoreResult(None, len(data), result.sha256, f"s3://{s3_bucket}/b")
    assert body(s3_client, s3_bucket, "a") == body(s3_client, s3_bucket, "b") == data
    assert uploads(s3_client, s3_bucket) == []


def test_expected_size_grows_the_part_size(s3_client: Any, s3_bucket: str) -> None:
    s = sink(s3_client, s3_bucket)
    s.start(100_000 * PART)  # 500 GB: 10,000 parts of 50 MiB
    assert s.part_size == 50 * MiB
    assert s.part_size * 10_000 >= 100_000 * PART
    s.abort()
    small = sink(s3_client, s3_bucket)
    small.start(3 * PART)
    assert small.part_size == PART
    small.abort()


def test_overwrite_replaces_and_overwrite_false_refuses(s3_client: Any, s3_bucket: str) -> None:
    ss.store_from_reader(b"old", sink(s3_client, s3_bucket))
    ss.store_from_reader(b"new", sink(s3_client, s3_bucket))
    assert body(s3_client, s3_bucket, "obj") == b"new"
    for size in (10, 2 * PART + 1):
        with pytest.raises(ss.DestinationExistsError) as info:
            ss.store_from_reader(data_of(size), sink(s3_client, s3_bucket, overwrite=False))
        assert info.value.errno == __import__("errno").EEXIST
        assert getattr(info.value, "committed", None) is None
        assert body(s3_client, s3_bucket, "obj") == b"new"
        assert_clean(s3_client, s3_bucket, ["obj"])
    for size in (10, 2 * PART + 1):
        ss.store_from_reader(data_of(size), sink(s3_client, s3_bucket, f"new{size}",
                                                 overwrite=False))
        assert body(s3_client, s3_bucket, f"new{size}") == data_of(size)


def test_overwrite_false_refuses_an_object_created_during_the_upload(
        s3_client: Any, s3_bucket: str) -> None:
    data = data_of(2 * PART + 1)

    class Racer(ss.Hook):
        def on_finish(self, result: ss.StoreResult) -> None:
            s3_client.put_object(Bucket=s3_bucket, Key="obj", Body=b"first")

    with pytest.raises(ss.DestinationExistsError):
        ss.store_from_reader(data, sink(s3_client, s3_bucket, overwrite=False), hooks=[Racer()])
    assert body(s3_client, s3_bucket, "obj") == b"first"
    assert_clean(s3_client, s3_bucket, ["obj"])


def test_verify_object_finds_changed_bytes(s3_client: Any, s3_bucket: str) -> None:
    result = ss.store_from_reader(data_of(100), sink(s3_client, s3_bucket))
    found = s3_client.head_object(Bucket=s3_bucket, Key="obj")
    s3_client.put_object(Bucket=s3_bucket, Key="obj", Body=data_of(100, seed=9),
                         Metadata=found["Metadata"])
    with pytest.raises(ss.HashMismatchError) as info:
        verify_object(s3_client, s3_bucket, "obj")
    assert info.value.expected == result.sha256
    s3_client.put_object(Bucket=s3_bucket, Key="plain", Body=b"x")
    assert read_sha256(s3_client, s3_bucket, "plain") is None
    with pytest.raises(ValueError, match="no SHA-256"):
        verify_object(s3_client, s3_bucket, "plain")


def test_a_tag_from_a_replaced_upload_does_not_count(s3_client: Any, s3_bucket: str) -> None:
    ss.store_from_reader(data_of(2 * PART + 1), sink(s3_client, s3_bucket))
    assert read_sha256(s3_client, s3_bucket, "obj") is not None
    # Another writer replaces the bytes but the tag set survives (a copy keeps tags).
    s3_client.copy_object(Bucket=s3_bucket, Key="obj", CopySource={"Bucket": s3_bucket,
                          "Key": "obj"}, MetadataDirective="REPLACE",
                          Metadata={"streamstore-upload": "someone-else"})
    assert read_sha256(s3_client, s3_bucket, "obj") is None


# -- every failure aborts ----------------------------------------------------------------

def test_source_error_mid_stream(s3_client: Any, s3_bucket: str) -> None:
    reader = FailingReader(data_of(4 * PART), fail_after=3 * PART + 5)
    s = sink(s3_client, s3_bucket)
    with pytest.raises(ss.SourceError):
        ss.store_from_reader(reader, s)
    assert s.upload_id is None  # aborted and forgotten
    assert_clean(s3_client, s3_bucket)


def test_source_error_leaves_the_old_object(s3_client: Any, s3_bucket: str) -> None:
    ss.store_from_reader(b"old", sink(s3_client, s3_bucket))
    with pytest.raises(ss.SourceError):
        ss.store_from_reader(FailingReader(data_of(3 * PART), fail_after=2 * PART + 1),
                             sink(s3_client, s3_bucket))
    assert body(s3_client, s3_bucket, "obj") == b"old"
    assert_clean(s3_client, s3_bucket, ["obj"])


@pytest.mark.parametrize("size", [100, 2 * PART + 1])
def test_failed_checks_abort(s3_client: Any, s3_bucket: str, size: int) -> None:
    data = data_of(size)
    with pytest.raises(ss.HashMismatchError):
        ss.store_from_reader(data, sink(s3_client, s3_bucket), expected_sha256="0" * 64)
    with pytest.raises(ss.TooLargeError):
        ss.store_from_reader(data, sink(s3_client, s3_bucket), limit=size - 1)
    with pytest.raises(ss.PartialWriteError):
        ss.store_from_reader(data, sink(s3_client, s3_bucket), expected_size=size + 1)
    with pytest.raises(ss.TooSmallError):
        ss.store_from_reader(data, sink(s3_client, s3_bucket),
                             limit=ss.SizeLimit(min_bytes=size + 1))
    assert_clean(s3_client, s3_bucket)


@pytest.mark.parametrize("size", [100, 2 * PART + 1])
def test_a_hook_vetoing_in_on_finish_aborts(s3_client: Any, s3_bucket: str, size: int) -> None:
    seen: list[BaseException] = []

    class Veto(ss.Hook):
        def on_finish(self, result: ss.StoreResult) -> None:
            assert result.location == f"s3://{s3_bucket}/obj"
            raise PermissionError("quota")

        def on_abort(self, exc: BaseException) -> None:
            seen.append(exc)

    with pytest.raises(PermissionError):
        ss.store_from_reader(data_of(size), sink(s3_client, s3_bucket), hooks=[Veto()])
    assert len(seen) == 1
    assert_clean(s3_client, s3_bucket)


def test_keyboard_interrupt_from_the_source(s3_client: Any, s3_bucket: str) -> None:
    reader = FailingReader(data_of(4 * PART), fail_after=2 * PART + 100, exc=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        ss.store_from_reader(reader, sink(s3_client, s3_bucket, max_concurrency=2))
    assert_clean(s3_client, s3_bucket)


def test_a_signal_landing_anywhere_aborts(s3_client: Any, s3_bucket: str) -> None:
    """A real SIGALRM raising KeyboardInterrupt at several moments of an upload."""
    def chunks() -> Iterator[bytes]:
        piece = data_of(256 * 1024)
        for _ in range(60):  # 15 MiB
            yield piece

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        for delay in (0.02, 0.1, 0.25):
            signal.setitimer(signal.ITIMER_REAL, delay)
            try:
                ss.store_from_reader(chunks(), sink(s3_client, s3_bucket))
            except KeyboardInterrupt as exc:
                if getattr(exc, "committed", None) is None:
                    assert_clean(s3_client, s3_bucket, [])
                    continue
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            # Finished (or committed) before the signal: the object is whole.
            assert body(s3_client, s3_bucket, "obj") == b"".join(chunks())
            s3_client.delete_object(Bucket=s3_bucket, Key="obj")
            assert_clean(s3_client, s3_bucket)
    finally:
        signal.signal(signal.SIGALRM, old)


@pytest.mark.asyncio
async def test_task_cancellation_aborts(s3_client: Any, s3_bucket: str) -> None:
    reader = AsyncSlowReader(data_of(4 * PART), delay=0.002, chunk=256 * 1024)
    s = sink(s3_client, s3_bucket)
    task = asyncio.create_task(ss.astore_from_reader(reader, s))
    for _ in range(1000):  # until at least one part is on its way
        if s.upload_id is not None:
            break
        await asyncio.sleep(0.01)
    assert s.upload_id is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_clean(s3_client, s3_bucket)


def test_a_part_the_server_rejects_aborts(s3_client: Any, s3_bucket: str) -> None:
    """Wrong part checksums: the server answers BadDigest; the store fails and aborts."""
    s = sink(s3_client, s3_bucket)
    s.checksum = Checksum("CRC32", "ChecksumCRC32", lambda data: 12345, 32)
    with pytest.raises(ss.StorageError) as info:
        ss.store_from_reader(data_of(3 * PART), s)
    assert info.value.errno == __import__("errno").EIO
    assert "BadDigest" in str(info.value)
    assert info.value.__cause__ is not None
    assert_clean(s3_client, s3_bucket)


def test_a_wrong_full_object_checksum_is_refused_at_complete(s3_client: Any,
                                                             s3_bucket: str) -> None:
    class WrongTotal(S3Sink):
        def _combine(self) -> int:
            return super()._combine() ^ 1

    with pytest.raises(ss.StorageError, match="BadDigest"):
        ss.store_from_reader(data_of(2 * PART + 1), WrongTotal(s3_client, s3_bucket, "obj",
                                                                part_size=PART))
    assert_clean(s3_client, s3_bucket)


def test_a_wrong_sha256_is_refused_by_put_object(s3_client: Any, s3_bucket: str) -> None:
    class WrongDigest(S3Sink):
        def _put_args(self, result: ss.StoreResult) -> dict[str, Any]:
            args = super()._put_args(result)
            args["ChecksumSHA256"] = __import__("base64").b64encode(b"\0" * 32).decode()
            return args

    with pytest.raises(ss.StorageError, match="BadDigest"):
        ss.store_from_reader(b"payload", WrongDigest(s3_client, s3_bucket, "obj"))
    assert_clean(s3_client, s3_bucket)


# -- permissions and connections ------------------------------------------------------------

@pytest.mark.parametrize("size", [10, 2 * PART])
def test_read_only_identity(s3_server: S3Server, s3_client: Any, s3_bucket: str,
                            size: int) -> None:
    with pytest.raises(ss.StoragePermissionError) as info:
        ss.store_from_reader(data_of(size), sink(s3_server.client("ro"), s3_bucket))
    assert info.value.errno == __import__("errno").EACCES
    assert "AccessDenied" in str(info.value)
    assert_clean(s3_client, s3_bucket)


def test_missing_bucket_and_bad_credentials(s3_server: S3Server) -> None:
    with pytest.raises(ss.StoragePermissionError):
        ss.store_from_reader(b"x", sink(s3_server.client("rw"), "no-such-bucket-here"))
    import boto3
    wrong = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                         aws_access_key_id="AKIDADMIN", aws_secret_access_key="wrong")
    with pytest.raises(ss.StoragePermissionError, match="SignatureDoesNotMatch"):
        ss.store_from_reader(b"x", S3Sink(wrong, "any-bucket", "k"))


def test_connection_refused(s3_server: S3Server) -> None:
    import boto3
    from botocore.config import Config

    from s3server import _free_ports
    port = _free_ports(1)[0]
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="a", aws_secret_access_key="b",
                          config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ss.StorageError) as info:
        ss.store_from_reader(b"x", S3Sink(client, "bucket", "k"))
    assert info.value.errno == __import__("errno").ECONNREFUSED


def test_tagging_denied_after_the_commit_reports_committed(s3_server: S3Server,
                                                           s3_client: Any,
                                                           s3_bucket: str) -> None:
    data = data_of(2 * PART + 1)
    committed: list[ss.StoreResult] = []

    class Seen(ss.Hook):
        def on_commit(self, result: ss.StoreResult) -> None:
            committed.append(result)

    with pytest.raises(ss.StoragePermissionError) as info:
        ss.store_from_reader(data, sink(s3_server.client("notag"), s3_bucket), hooks=[Seen()])
    result = info.value.committed  # type: ignore[attr-defined]
    assert committed == [result]
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert body(s3_client, s3_bucket, "obj") == data
    # Without the tag the digest is not recorded, which read_sha256 says honestly.
    assert read_sha256(s3_client, s3_bucket, "obj") is None
    ss.store_from_reader(data, sink(s3_server.client("notag"), s3_bucket, "b",
                                    tag_sha256=False))
    assert_clean(s3_client, s3_bucket, ["b", "obj"])


# -- the commit point ------------------------------------------------------------------------

def _raise_on(client: Any, event: str, exc: BaseException) -> Any:
    state = {"armed": True}

    def handler(**kwargs: Any) -> None:
        if state["armed"]:
            state["armed"] = False
            raise exc

    client.meta.events.register(event, handler)
    return handler


@pytest.mark.parametrize("operation,size", [("PutObject", 10),
                                            ("CompleteMultipartUpload", 2 * PART + 1)])
def test_interrupt_after_the_final_request_landed_reports_committed(
        s3_server: S3Server, s3_client: Any, s3_bucket: str, operation: str, size: int) -> None:
    """The server completed the upload; the interrupt arrives before the
    response reaches the caller: the store is reported committed."""
    client = s3_server.client()
    _raise_on(client, f"after-call.s3.{operation}", KeyboardInterrupt())
    data = data_of(size)
    with pytest.raises(KeyboardInterrupt) as info:
        ss.store_from_reader(data, sink(client, s3_bucket))
    result = info.value.committed  # type: ignore[attr-defined]
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert body(s3_client, s3_bucket, "obj") == data
    assert read_sha256(s3_client, s3_bucket, "obj") == result.sha256  # tagged when settled
    assert_clean(s3_client, s3_bucket, ["obj"])


@pytest.mark.parametrize("operation,size", [("PutObject", 10),
                                            ("CompleteMultipartUpload", 2 * PART + 1)])
def test_interrupt_before_the_final_request_was_sent_aborts(
        s3_server: S3Server, s3_client: Any, s3_bucket: str, operation: str, size: int) -> None:
    client = s3_server.client()
    _raise_on(client, f"before-send.s3.{operation}", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt) as info:
        ss.store_from_reader(data_of(size), sink(client, s3_bucket))
    assert getattr(info.value, "committed", None) is None
    assert_clean(s3_client, s3_bucket)


@pytest.mark.parametrize("size", [10, 2 * PART + 1])
def test_a_lost_response_to_a_landed_request_is_a_success(
        s3_server: S3Server, s3_client: Any, s3_bucket: str, size: int) -> None:
    """The connection drops after the server stored the object (even with
    overwrite=False, where a retry would see 412): the sink finds its nonce."""
    client = s3_server.client()
    operation = "PutObject" if size == 10 else "CompleteMultipartUpload"
    _raise_on(client, f"after-call.s3.{operation}",
              ConnectionClosedError(endpoint_url=s3_server.endpoint))
    data = data_of(size)
    result = ss.store_from_reader(data, sink(client, s3_bucket, overwrite=False))
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert body(s3_client, s3_bucket, "obj") == data
    assert_clean(s3_client, s3_bucket, ["obj"])


def test_abort_waits_for_parts_in_flight(s3_client: Any, s3_bucket: str) -> None:
    """Abort while parts are still uploading: no part survives the abort."""
    s = sink(s3_client, s3_bucket, max_concurrency=4)
    s.start(None)
    piece = memoryview(data_of(PART))
    for _ in range(5):  # four parts handed to the pool, the fifth buffered
        s.write(piece)
    s.write(piece[:1])
    upload_id = s.upload_id
    assert upload_id is not None
    s.abort()
    s.abort()  # idempotent
    assert_clean(s3_client, s3_bucket)
    with pytest.raises(Exception, match="NoSuchUpload"):
        s3_client.list_parts(Bucket=s3_bucket, Key="obj", UploadId=upload_id)


def test_buffers_are_bounded(s3_client: Any, s3_bucket: str) -> None:
    s = sink(s3_client, s3_bucket, max_concurrency=2)
    seen: list[int] = []
    original = s._take_buffer

    def counting() -> bytearray:
        buf = original()
        seen.append(s._buffers)
        return buf

    s._take_buffer = counting  # type: ignore[method-assign]
    ss.store_from_reader(data_of(6 * PART + 1), s)
    assert seen and max(seen) <= 3  # part_size * (max_concurrency + 1) bytes at most


def test_arguments_are_checked_before_anything(s3_client: Any) -> None:
    with pytest.raises(ValueError, match="part_size"):
        S3Sink(s3_client, "b", "k", part_size=MiB)
    with pytest.raises(ValueError, match="max_concurrency"):
        S3Sink(s3_client, "b", "k", max_concurrency=0)
    with pytest.raises(ValueError, match="key"):
        S3Sink(s3_client, "b", "")
    with pytest.raises(TypeError, match="boto3 S3 client"):
        S3Sink(object(), "b", "k")
    with pytest.raises(ValueError, match="extra_args cannot set"):
        S3Sink(s3_client, "b", "k", extra_args={"Metadata": {}})
    with pytest.raises(ValueError, match="limit"):
        S3Sink(s3_client, "b", "k", metadata={"big": "x" * 3000})
    with pytest.raises(ValueError, match="set by streamstore"):
        S3Sink(s3_client, "b", "k", metadata={"sha256": "x"})
    with pytest.raises(ValueError, match="checksum"):
        S3Sink(s3_client, "b", "k", checksum="MD5")


def test_threads_are_gone_after_the_store(s3_client: Any, s3_bucket: str) -> None:
    before = {t.ident for t in threading.enumerate()}
    ss.store_from_reader(data_of(3 * PART), sink(s3_client, s3_bucket))
    with pytest.raises(ss.SourceError):
        ss.store_from_reader(FailingReader(data_of(3 * PART), 2 * PART + 1),
                             sink(s3_client, s3_bucket, "b"))
    left = [t for t in threading.enumerate()
            if t.ident not in before and t.name.startswith("streamstore-s3")]
    assert left == []


def test_import_without_boto3_names_the_extra() -> None:
    import subprocess
    import sys
    code = ("import sys; sys.modules['botocore'] = None\n"
            "try:\n    import streamstore.s3\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONWARNINGS": "error"})
    assert "pip install 'streamstore[s3]'" in out.stdout


def test_public_names_of_streamstore_s3_are_documented() -> None:
    import inspect

    import streamstore.s3 as s3
    public = {n for n, v in vars(s3).items() if not n.startswith("_") and not inspect.ismodule(v)
              and getattr(v, "__module__", "streamstore.s3") == "streamstore.s3"
              and n not in ("annotations",)}
    assert public <= set(s3.__all__)
    for name in s3.__all__:
        value = getattr(s3, name)
        if isinstance(value, int):
            continue
        assert value.__module__ == "streamstore.s3", name
        assert inspect.getdoc(value), name
        if inspect.isclass(value):
            for attr, member in vars(value).items():
                if not attr.startswith("_") and (inspect.isfunction(member)
                                                 or isinstance(member, property)):
                    assert inspect.getdoc(member), f"{name}.{attr}"
    import subprocess
    import sys
    # The package never imports the S3 module (nor boto3) on its own.
    code = ("import sys, streamstore, streamstore.testing; "
            "assert 'streamstore.s3' not in sys.modules and 'botocore' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_overwrite_false_holds_where_complete_ignores_if_none_match(
        s3_server: S3Server, s3_client: Any, s3_bucket: str) -> None:
    """Ceph RGW Pacific ignores If-None-Match on CompleteMultipartUpload; the
    header is stripped here to act like it, and the HeadObject check still refuses."""
    client = s3_server.client()

    def strip(request: Any, **kwargs: Any) -> None:
        if "If-None-Match" in request.headers:
            del request.headers["If-None-Match"]

    client.meta.events.register_first("before-sign.s3.CompleteMultipartUpload", strip)
    ss.store_from_reader(b"existing", sink(s3_client, s3_bucket))
    with pytest.raises(ss.DestinationExistsError):
        ss.store_from_reader(data_of(2 * PART + 1), sink(client, s3_bucket, overwrite=False))
    assert body(s3_client, s3_bucket, "obj") == b"existing"
    assert_clean(s3_client, s3_bucket, ["obj"])


def test_an_interrupt_as_the_upload_is_created_leaves_no_upload(
        s3_server: S3Server, s3_client: Any, s3_bucket: str) -> None:
    """A SIGINT arrives just as the server's answer to CreateMultipartUpload
    comes in: the upload exists on the server, the caller never sees its id,
    and the abort must still find and remove it."""
    import threading
    import time

    client = s3_server.client()
    main = threading.get_ident()

    def answered(**kwargs: Any) -> None:
        if threading.get_ident() == main:
            raise KeyboardInterrupt  # the request ran in the thread the signal interrupts
        signal.pthread_kill(main, signal.SIGINT)  # it ran elsewhere: the waiting thread is hit
        time.sleep(0.2)

    client.meta.events.register("response-received.s3.CreateMultipartUpload", answered)
    with pytest.raises(KeyboardInterrupt):
        ss.store_from_reader(data_of(3 * PART), sink(client, s3_bucket))
    assert_clean(s3_client, s3_bucket)


def test_an_interrupt_inside_submit_after_the_create_was_queued(
        s3_client: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interrupt lands inside ThreadPoolExecutor.submit after the create
    request was queued (while submit starts a worker thread): the upload the
    worker then creates is still found and aborted."""
    import concurrent.futures as cf

    real_submit = cf.ThreadPoolExecutor.submit
    interrupted: list[bool] = []

    def submit(self: cf.ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        future = real_submit(self, fn, *args, **kwargs)
        if not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt  # queued, and submit() never returned
        return future

    monkeypatch.setattr(cf.ThreadPoolExecutor, "submit", submit)
    with pytest.raises(KeyboardInterrupt):
        ss.store_from_reader(data_of(3 * PART), sink(s3_client, s3_bucket))
    assert interrupted
    assert_clean(s3_client, s3_bucket)

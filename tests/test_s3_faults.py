"""S3 faults that need a server of their own (killed mid-upload), the error
translation table, the CRC arithmetic, and memory for a 1 GiB stream."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from hypothesis import given
from hypothesis import strategies as st

import streamstore as ss
from s3server import S3Server
from streamstore._s3checksum import ALGORITHMS, checksum_for, crc_combine
from streamstore._s3errors import s3_error
from streamstore.s3 import S3Sink, sweep_uploads
from test_s3_sink import PART, data_of, uploads

MiB = 1024 * 1024


# -- a server killed mid-upload ------------------------------------------------------------

def test_server_killed_mid_upload_then_sweep_cleans_up(tmp_path: Path) -> None:
    server = S3Server(tmp_path)
    server.start()
    try:
        client = server.client(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)
        bucket = server.new_bucket(client)

        def chunks() -> Iterator[bytes]:
            piece = data_of(MiB)
            for i in range(4 * 5):
                if i == 12:  # two parts are up: the server dies
                    server.kill()
                yield piece

        with pytest.raises(ss.StorageError) as info:
            ss.store_from_reader(chunks(), S3Sink(client, bucket, "obj", part_size=PART))
        assert info.value.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT)
        assert getattr(info.value, "committed", None) is None
        # The abort could not reach the server either, and says so.
        assert any("aborting the sink also failed" in n
                   for n in getattr(info.value, "__notes__", []))

        server.start()
        client = server.client()
        left = uploads(client, bucket)
        assert [u["Key"] for u in left] == ["obj"]
        assert sweep_uploads(client, bucket, older_than=3600) == 0  # still young
        assert sweep_uploads(client, bucket, older_than=0) == 1
        assert uploads(client, bucket) == []
        assert "Contents" not in client.list_objects_v2(Bucket=bucket)
    finally:
        server.stop()


def test_sweep_uploads_keeps_recent_activity_and_filters_by_prefix(
        s3_client: Any, s3_bucket: str) -> None:
    a = s3_client.create_multipart_upload(Bucket=s3_bucket, Key="in/a")["UploadId"]
    s3_client.create_multipart_upload(Bucket=s3_bucket, Key="out/b")
    s3_client.upload_part(Bucket=s3_bucket, Key="in/a", UploadId=a, PartNumber=1, Body=b"x")
    assert sweep_uploads(s3_client, s3_bucket, prefix="in/", older_than=600) == 0
    assert sweep_uploads(s3_client, s3_bucket, prefix="in/", older_than=0) == 1
    assert [u["Key"] for u in uploads(s3_client, s3_bucket)] == ["out/b"]
    with pytest.raises(ValueError):
        sweep_uploads(s3_client, s3_bucket, older_than=-1)
    with pytest.raises(TypeError):
        sweep_uploads(s3_client, s3_bucket, older_than="1")  # type: ignore[arg-type]


# -- the error table ------------------------------------------------------------------------

def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize("code,status,cls,number", [
    ("AccessDenied", 403, ss.StoragePermissionError, errno.EACCES),
    ("NoSuchBucket", 404, ss.StoragePermissionError, errno.EACCES),
    ("InvalidAccessKeyId", 403, ss.StoragePermissionError, errno.EACCES),
    ("ExpiredToken", 400, ss.StoragePermissionError, errno.EACCES),
    ("PreconditionFailed", 412, ss.DestinationExistsError, errno.EEXIST),
    ("EntityTooLarge", 400, ss.StorageError, errno.EFBIG),
    ("BadDigest", 400, ss.StorageError, errno.EIO),
    ("SlowDown", 503, ss.StorageError, errno.EAGAIN),
    ("ServiceUnavailable", 503, ss.StorageError, errno.EAGAIN),
    ("RequestTimeout", 400, ss.StorageError, errno.ETIMEDOUT),
    ("InternalError", 500, ss.StorageError, errno.EIO),
    ("NoSuchUpload", 404, ss.StorageError, errno.ENOENT),
    ("ConditionalRequestConflict", 409, ss.StorageError, errno.EBUSY),
])
def test_client_errors_map_to_the_tree(code: str, status: int, cls: type[ss.StorageError],
                                       number: int) -> None:
    original = _client_error(code, status)
    mapped = s3_error(original, action="PutObject", bucket="b", key="k")
    assert type(mapped) is cls
    assert isinstance(mapped, OSError)
    assert mapped.errno == number
    assert mapped.filename == "s3://b/k"
    assert mapped.dest is None
    assert code in str(mapped) and "PutObject" in str(mapped)


def test_get_precondition_is_a_stale_read_not_an_existing_destination() -> None:
    mapped = s3_error(_client_error("PreconditionFailed", 412), action="GetObject",
                      bucket="b", key="k")
    assert type(mapped) is ss.StorageError and mapped.errno == errno.ESTALE


@pytest.mark.parametrize("exc,cls,number", [
    (EndpointConnectionError(endpoint_url="http://x"), ss.StorageError, errno.ECONNREFUSED),
    (ConnectTimeoutError(endpoint_url="http://x"), ss.StorageError, errno.ETIMEDOUT),
    (ReadTimeoutError(endpoint_url="http://x"), ss.StorageError, errno.ETIMEDOUT),
    (NoCredentialsError(), ss.StoragePermissionError, errno.EACCES),
])
def test_botocore_errors_map_to_the_tree(exc: Exception, cls: type[ss.StorageError],
                                         number: int) -> None:
    mapped = s3_error(exc, action="UploadPart", bucket="b")
    assert type(mapped) is cls and mapped.errno == number
    assert mapped.filename == "s3://b"


def test_translated_errors_pickle_with_their_cause_attached(s3_server: S3Server) -> None:
    import pickle
    with pytest.raises(ss.StoragePermissionError) as info:
        ss.store_from_reader(b"x", S3Sink(s3_server.client("ro"), "any-bucket", "k"))
    assert isinstance(info.value.__cause__, ClientError)
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is ss.StoragePermissionError and copy.errno == errno.EACCES


# -- CRC arithmetic ----------------------------------------------------------------------------

@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_crc32_combine_matches_one_pass(a: bytes, b: bytes) -> None:
    assert crc_combine("CRC32", zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


@pytest.mark.skipif("CRC64NVME" not in ALGORITHMS, reason="needs awscrt")
@given(st.lists(st.binary(max_size=2000), min_size=1, max_size=6))
def test_crc64nvme_combine_matches_one_pass(pieces: list[bytes]) -> None:
    algorithm = checksum_for("CRC64NVME")
    total = algorithm.compute(pieces[0])
    for piece in pieces[1:]:
        total = algorithm.combine(total, algorithm.compute(piece), len(piece))
    assert total == algorithm.compute(b"".join(pieces))
    assert checksum_for(None) is algorithm


def test_checksum_encoding() -> None:
    crc32 = checksum_for("crc32")
    assert crc32.encode(zlib.crc32(b"abc")) == "NSRBwg=="  # what S3 answers for b"abc"


# -- memory ------------------------------------------------------------------------------------

_MEMORY_CHILD = textwrap.dedent("""
    import json, os, sys, threading
    sys.path.insert(0, sys.argv[1])
    from s3server import S3Server
    from pathlib import Path
    import streamstore as ss
    from streamstore.s3 import S3Sink

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024
        raise RuntimeError(field)

    server = S3Server(Path(sys.argv[2]))
    server.start()
    try:
        client = server.client()
        bucket = server.new_bucket(client)
        part, concurrency, total = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        # Warm up: imports, connections, thread pool code paths.
        ss.store_from_reader(os.urandom(3 * part), S3Sink(client, bucket, "warm",
                             part_size=part, max_concurrency=concurrency))
        read_fd, write_fd = os.pipe()

        def produce():
            block = memoryview(os.urandom(1 << 20))
            left = total
            with open(write_fd, "wb", buffering=0) as out:
                while left:
                    n = min(left, len(block))
                    out.write(block[:n])
                    left -= n

        threading.Thread(target=produce, daemon=True).start()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS
        before = rss("VmRSS:")
        with open(read_fd, "rb", buffering=0) as source:
            result = ss.store_from_reader(source, S3Sink(client, bucket, "big",
                                          part_size=part, max_concurrency=concurrency))
        peak = rss("VmHWM:")
        print(json.dumps({"size": result.size, "growth": peak - before}))
    finally:
        server.stop()
""")


@pytest.mark.slow
def test_memory_of_a_1_gib_stream_from_a_pipe(tmp_path: Path) -> None:
    part, concurrency, total = 8 * MiB, 4, 1024 * MiB
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, os.path.dirname(__file__), str(tmp_path),
         str(part), str(concurrency), str(total)],
        capture_output=True, text=True, timeout=600, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["size"] == total
    bound = part * (concurrency + 2) + 16 * MiB
    assert report["growth"] <= bound, f"peak RSS grew {report['growth']} bytes, bound {bound}"

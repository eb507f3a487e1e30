"""S3Sink: one stream into one S3 object, visible only once every check passed.

A stream that fits in one part is held in memory and sent as one
``PutObject`` (with ``ChecksumSHA256``) at the commit.  A longer one becomes
a multipart upload, created when the first part is full; full parts go to a
small thread pool while the stream is still being read, each with its CRC;
the last part and the wait for the parts in flight happen in ``prepare``,
``CompleteMultipartUpload`` (with the full-object CRC and ``MpuObjectSize``)
in ``commit``.  At most ``part_size * (max_concurrency + 1)`` bytes are held.

The commit point is the ``PutObject`` / ``CompleteMultipartUpload``.  When it
fails or is interrupted, the sink settles what happened: it aborts the
multipart upload (so a ``Complete`` still running on the server cannot land
later) and asks ``HeadObject`` whether the object at the key carries this
upload's nonce (``x-amz-meta-streamstore-upload``).  If it does, the store is
reported committed; if not, it failed and nothing of it is visible.  Nothing
here ever deletes an object at the destination key.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import errno
import hashlib
import io
import mmap
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl

from botocore.exceptions import BotoCoreError, ClientError

from ._core import check_int
from ._errors import DestinationExistsError, HashMismatchError, StorageError
from ._s3checksum import Checksum, checksum_for
from ._s3errors import error_code, http_status, s3_error, s3_errors, s3_url
from ._types import StoreResult

__all__ = [
    "DEFAULT_PART_SIZE",
    "MAX_PARTS",
    "MIN_PART_SIZE",
    "NONCE_KEY",
    "SHA256_KEY",
    "S3Sink",
    "abort_upload",
    "head",
    "read_sha256",
    "sweep_uploads",
    "verify_object",
]

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB
"""S3's smallest part (all but the last)."""
MAX_PART_SIZE = 5 * 1024 * MiB
"""S3's largest part."""
MAX_PARTS = 10_000
"""S3's most parts in one upload."""
DEFAULT_PART_SIZE = 8 * MiB
SHA256_KEY = "sha256"
"""The metadata key (``x-amz-meta-sha256``) and tag key holding the SHA-256 (hex)."""
NONCE_KEY = "streamstore-upload"
"""The metadata key (and tag key) holding the random id of the upload that wrote the object."""
METADATA_LIMIT = 2048
"""AWS's limit on an object's user metadata: keys plus values, in UTF-8 bytes."""
_MAX_TAGS = 10

_ABORT_TRIES = 3
_SETTLE_ERRORS = (ClientError, BotoCoreError, StorageError)

# Arguments the sink sets itself, and SSE-C (which every UploadPart would need too).
_RESERVED = frozenset({
    "Bucket", "Key", "Body", "Metadata", "ContentLength", "ContentMD5", "IfMatch",
    "IfNoneMatch", "UploadId", "PartNumber", "MultipartUpload", "ChecksumAlgorithm",
    "ChecksumType", "ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1",
    "ChecksumSHA256", "MpuObjectSize", "SSECustomerAlgorithm", "SSECustomerKey",
    "SSECustomerKeyMD5",
})

# States of a sink.
_NEW, _OPEN, _PREPARED, _COMMITTING, _COMMITTED, _FAILED, _ABORTED = range(7)


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def _metadata_size(metadata: Mapping[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())


def head(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """``HeadObject``'s response for ``key``, or ``None`` if there is no such object."""
    with s3_errors("HeadObject", bucket, key):
        try:
            return dict(client.head_object(Bucket=bucket, Key=key))
        except ClientError as exc:
            if http_status(exc) == 404 or error_code(exc) in ("NoSuchKey", "NotFound", "404"):
                return None
            raise


def _no_such_upload(exc: ClientError) -> bool:
    return error_code(exc) == "NoSuchUpload" or http_status(exc) == 404


def abort_upload(client: Any, bucket: str, key: str, upload_id: str) -> None:
    """Abort a multipart upload and confirm with ``ListParts`` that it is gone,
    aborting again while parts still show up (a part in flight during the
    abort can land after it).  :class:`StorageError` if it will not go away."""
    for _ in range(_ABORT_TRIES):
        with s3_errors("AbortMultipartUpload", bucket, key):
            try:
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except ClientError as exc:
                if not _no_such_upload(exc):
                    raise
        with s3_errors("ListParts", bucket, key):
            try:
                client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
            except ClientError as exc:
                if _no_such_upload(exc):
                    return
                raise
    raise StorageError(errno.EBUSY, os.strerror(errno.EBUSY), s3_url(bucket, key),
                       message=f"multipart upload {upload_id} of {s3_url(bucket, key)} is "
                               f"still listed after {_ABORT_TRIES} aborts")


class _Body(io.RawIOBase):
    """The request body of one part: a read-only, seekable view of the first
    ``size`` bytes of a part buffer, without a copy (botocore re-reads it to
    sign it and seeks back to retry)."""

    def __init__(self, buffer: mmap.mmap, size: int) -> None:
        super().__init__()
        self.view = memoryview(buffer)[:size]
        self._pos = 0

    def __len__(self) -> int:
        return len(self.view)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = (0, self._pos, len(self.view))[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        n = max(0, min(len(buffer), len(self.view) - self._pos))
        buffer[:n] = self.view[self._pos:self._pos + n]
        self._pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        end = len(self.view) if size is None or size < 0 else self._pos + size
        data = bytes(self.view[self._pos:end])
        self._pos += len(data)
        return data

    def close(self) -> None:
        self.view.release()
        super().close()


def _close_buffer(buffer: mmap.mmap) -> None:
    try:
        buffer.close()
    except BufferError:  # a view is still held somewhere: the mapping goes with it
        pass


@dataclass(frozen=True)
class _Part:
    number: int
    etag: str
    checksum: str
    crc: int
    size: int


class S3Sink:
    """A :class:`~streamstore.Sink` that stores a stream as the S3 object ``key``
    in ``bucket``, through the caller's boto3 ``client``.

    ``store_from_reader(source, S3Sink(client, "bucket", "key"))`` returns a
    :class:`~streamstore.StoreResult` with ``location == "s3://bucket/key"``
    and ``path is None``.  Every check of the store (size caps,
    ``expected_size``, ``expected_sha256``, hooks) passes before the object
    becomes visible; on any failure the multipart upload is aborted (and
    confirmed gone with ``ListParts``) and the key is left as it was.

    - ``part_size`` (bytes, at least 5 MiB): the size of a part, grown to stay
      under 10,000 parts when ``expected_size`` is given.  A stream of unknown
      size can be at most ``10,000 * part_size`` bytes (78 GiB at 8 MiB).
    - ``max_concurrency``: parts uploaded at once.  At most
      ``part_size * (max_concurrency + 1)`` bytes are buffered; writes wait
      while every buffer is in flight.
    - ``overwrite=False`` sends ``If-None-Match: *`` with the final request
      (and checks with ``HeadObject`` before ``CompleteMultipartUpload``, for
      servers that ignore the header there):
      :class:`~streamstore.DestinationExistsError` if the key exists.
    - ``metadata``: user metadata (``x-amz-meta-*``) for the object.
    - ``extra_args``: more ``PutObject``/``CreateMultipartUpload`` arguments
      (``ContentType``, ``StorageClass``, ``ServerSideEncryption``,
      ``Tagging``, ...); the ones the sink sets itself and SSE-C are refused.
    - ``checksum``: the full-object checksum of multipart uploads,
      ``"CRC64NVME"`` (needs ``awscrt``) or ``"CRC32"``; ``None`` picks
      CRC64NVME when ``awscrt`` is installed.
    - ``tag_sha256``: tag multipart objects with their SHA-256 after the commit.

    Where the SHA-256 goes: a one-part object gets it as ``ChecksumSHA256``
    (verified by the server) and as metadata ``x-amz-meta-sha256``, in the
    one ``PutObject``.  A multipart object gets its full-object CRC verified
    by the server at ``CompleteMultipartUpload``; S3 cannot set metadata
    there, so the SHA-256 is written as the object tags ``sha256`` and
    ``streamstore-upload`` (the upload's nonce, also in the object's
    metadata, which binds the tag to this very object) right after the
    commit.  If that tagging fails, the store has still committed: the error
    is raised with ``committed`` set.  :func:`read_sha256` and
    :func:`verify_object` read it back.

    Every method is blocking and may be called from any thread (one at a
    time); the async front ends call them in worker threads.  Single-use.
    """

    def __init__(self, client: Any, bucket: str, key: str, *,
                 part_size: int = DEFAULT_PART_SIZE, max_concurrency: int = 4,
                 overwrite: bool = True, metadata: Mapping[str, str] | None = None,
                 extra_args: Mapping[str, Any] | None = None, checksum: str | None = None,
                 tag_sha256: bool = True) -> None:
        if not isinstance(bucket, str) or not bucket:
            raise ValueError(f"bucket must be a non-empty str, got {bucket!r}")
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty str, got {key!r}")
        for name in ("put_object", "upload_part", "complete_multipart_upload"):
            if not callable(getattr(client, name, None)):
                raise TypeError(f"client must be a boto3 S3 client, got {type(client).__name__}")
        check_int("part_size", part_size, MIN_PART_SIZE)
        if part_size > MAX_PART_SIZE:
            raise ValueError(f"part_size must be at most 5 GiB, got {part_size}")
        check_int("max_concurrency", max_concurrency, 1)
        self.client = client
        self.bucket = bucket
        self.key = key
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.overwrite = bool(overwrite)
        self.tag_sha256 = bool(tag_sha256)
        self.checksum: Checksum = checksum_for(checksum)
        self.location = s3_url(bucket, key)
        """``s3://bucket/key``."""
        self.nonce = uuid.uuid4().hex
        """A random id, stored as ``x-amz-meta-streamstore-upload`` on the object."""
        self._user_metadata: dict[str, str] = self._check_metadata(metadata)
        self.extra_args: dict[str, Any] = self._check_extra_args(extra_args)
        self.upload_id: str | None = None
        """The multipart upload's id, once one was created."""
        self.version_id: str | None = None
        """The new object's version id (versioned buckets), after the commit."""
        self._state = _NEW
        # Part buffers are anonymous mmaps: pages cost memory only once written,
        # and closing one gives its memory back to the system at once.
        self._buf: mmap.mmap | None = None
        self._fill = 0
        self._free: list[mmap.mmap] = []
        self._all: list[mmap.mmap] = []
        self._buffers = 0
        self._body: _Body | None = None
        self._next_part = 1
        self._parts: dict[int, _Part] = {}
        self._inflight: dict[cf.Future[_Part], mmap.mmap] = {}
        self._pool: cf.ThreadPoolExecutor | None = None
        self._cancel = threading.Event()
        self._size = 0
        self._creating: cf.Future[str] | None = None
        self._full_crc: int | None = None
        self._final: StoreResult | None = None

    def __repr__(self) -> str:
        return (f"S3Sink({self.location!r}, part_size={self.part_size}, "
                f"max_concurrency={self.max_concurrency}, overwrite={self.overwrite})")

    # -- arguments ----------------------------------------------------------------

    def _check_metadata(self, metadata: Mapping[str, str] | None) -> dict[str, str]:
        if metadata is None:
            return {}
        if not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping of str to str, "
                            f"got {type(metadata).__name__}")
        result: dict[str, str] = {}
        for name, value in metadata.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError(f"metadata must map str to str, got {name!r}: {value!r}")
            if name.lower() in (SHA256_KEY, NONCE_KEY):
                raise ValueError(f"metadata key {name!r} is set by streamstore")
            result[name] = value
        own = {SHA256_KEY: "0" * 64, NONCE_KEY: self.nonce}
        if _metadata_size({**result, **own}) > METADATA_LIMIT:
            raise ValueError(f"metadata is larger than S3's limit of {METADATA_LIMIT} bytes "
                             f"(with streamstore's own {_metadata_size(own)} bytes)")
        return result

    def _check_extra_args(self, extra_args: Mapping[str, Any] | None) -> dict[str, Any]:
        if extra_args is None:
            return {}
        if not isinstance(extra_args, Mapping):
            raise TypeError(f"extra_args must be a mapping, got {type(extra_args).__name__}")
        refused = sorted(set(extra_args) & _RESERVED)
        if refused:
            raise ValueError(f"extra_args cannot set {', '.join(refused)}")
        tagging = extra_args.get("Tagging")
        if tagging is not None:
            if not isinstance(tagging, str):
                raise TypeError("extra_args['Tagging'] must be a URL-encoded str ('k=v&k2=v2')")
            if len(parse_qsl(tagging, keep_blank_values=True)) > _MAX_TAGS - 2:
                raise ValueError(f"extra_args['Tagging'] can hold at most {_MAX_TAGS - 2} "
                                 "tags (streamstore adds two)")
        return dict(extra_args)

    # -- the Sink protocol ----------------------------------------------------------

    def start(self, expected_size: int | None) -> None:
        """Size the parts for ``expected_size`` (if known) and reserve the first buffer."""
        if self._state != _NEW:
            raise RuntimeError("S3Sink.start() on a used sink")
        self._state = _OPEN
        if expected_size is None:
            return
        if expected_size > self.part_size * MAX_PARTS:
            part = -(-expected_size // MAX_PARTS)
            part = -(-part // MiB) * MiB
            if part > MAX_PART_SIZE:
                raise StorageError(
                    errno.EFBIG, os.strerror(errno.EFBIG), self.location,
                    message=f"{expected_size} bytes is larger than an S3 object can be")
            self.part_size = part

    def write(self, chunk: memoryview | bytes, /) -> None:
        """Copy ``chunk`` into the current part; hand full parts to the upload pool."""
        if self._state != _OPEN:
            if self._state != _NEW:
                raise RuntimeError(f"S3Sink.write() on a {self._state_name} sink")
            self._state = _OPEN
        view = memoryview(chunk).cast("B")
        n = len(view)
        pos = 0
        part_size = self.part_size
        while pos < n:
            fill = self._fill
            if fill == part_size:
                self._hand_off()
                fill = 0
            buf = self._buf
            if buf is None:
                buf = self._buf = self._take_buffer()
            take = min(part_size - fill, n - pos)
            buf[fill:fill + take] = view[pos:pos + take]
            self._fill = fill + take
            pos += take
        self._size += n

    def prepare(self, result: StoreResult) -> StoreResult:
        """Upload the last part and wait for every part (multipart streams)."""
        if self._state not in (_NEW, _OPEN):
            raise RuntimeError(f"S3Sink.prepare() on a {self._state_name} sink")
        if result.size != self._size:
            raise RuntimeError(f"S3Sink got {self._size} bytes but the result says {result.size}")
        if self.upload_id is not None:
            assert self._buf is not None
            self._submit(self._buf, self._fill)
            self._buf = None
            self._fill = 0
            self._wait_all()
            self._full_crc = self._combine()
            self._release()
        self._state = _PREPARED
        return replace(result, path=None, location=self.location)

    def commit(self, result: StoreResult, /) -> StoreResult:
        """Publish the object (``PutObject`` or ``CompleteMultipartUpload``), the
        commit point; then tag a multipart object with its SHA-256."""
        if self._state != _PREPARED:
            raise RuntimeError(f"S3Sink.commit() needs a prepared sink, not a "
                               f"{self._state_name} one")
        final = replace(result, path=None, location=self.location)
        self._final = final
        self._state = _COMMITTING
        try:
            self._publish(final)
        except Exception:
            if not self._settle():
                self._state = _FAILED
                raise
        self._state = _COMMITTED
        self._release()
        self._after_commit(final, raise_errors=True)
        return final

    @property
    def committed(self) -> StoreResult | None:
        """The committed result if the object is visible although :meth:`commit`
        was interrupted or raised (asked once; never raises)."""
        if self._state == _COMMITTED:
            return self._final
        if self._state != _COMMITTING:
            return None
        if self._settle():
            self._state = _COMMITTED
            self._release()
            assert self._final is not None
            self._after_commit(self._final, raise_errors=False)
            return self._final
        self._state = _FAILED
        return None

    def abort(self) -> None:
        """Stop the part uploads, abort the multipart upload (confirmed with
        ``ListParts``) and drop the buffers.  Idempotent; a no-op after a commit
        that made the object visible.  Never deletes an object at ``key``."""
        if self._state in (_COMMITTED, _ABORTED):
            return
        if self._state == _COMMITTING and self.committed is not None:
            return
        self._cancel.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        creating = self._creating  # done now if its work was ever queued (the pool is shut)
        if (self.upload_id is None and creating is not None and creating.done()
                and creating.exception() is None):
            self.upload_id = creating.result()  # created, though we never saw the answer
        self._inflight.clear()
        self._release()
        upload_id = self.upload_id
        if upload_id is not None:
            abort_upload(self.client, self.bucket, self._upload_key(), upload_id)
            self.upload_id = None
        self._cleanup()
        self._state = _ABORTED

    # -- parts ------------------------------------------------------------------------

    @property
    def _state_name(self) -> str:
        return ("new", "open", "prepared", "committing", "committed", "failed",
                "aborted")[self._state]

    def _upload_key(self) -> str:
        """The key the multipart upload is created at."""
        return self.key

    def _create_metadata(self) -> dict[str, str]:
        """Metadata for ``CreateMultipartUpload`` (the digest is not known yet)."""
        return {**self._user_metadata, NONCE_KEY: self.nonce}

    def _create_upload(self) -> None:
        # The request runs in the pool, not here: an interrupt (a signal
        # handler's KeyboardInterrupt) can only land in this thread's wait, so
        # abort() still learns the id of an upload the server created.
        self._pool = cf.ThreadPoolExecutor(self.max_concurrency,
                                           thread_name_prefix="streamstore-s3")
        # The future is ours before the request can start: an interrupt inside
        # submit() may land after the work was queued.
        creating = self._creating = cf.Future()
        key = self._upload_key()

        def create() -> None:
            try:
                creating.set_result(self._create_request(key))
            except BaseException as exc:
                creating.set_exception(exc)

        self._pool.submit(create)
        self.upload_id = creating.result()

    def _create_request(self, key: str) -> str:
        with s3_errors("CreateMultipartUpload", self.bucket, key):
            response = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, Metadata=self._create_metadata(),
                ChecksumAlgorithm=self.checksum.name, ChecksumType="FULL_OBJECT",
                **self.extra_args)
        return str(response["UploadId"])

    def _hand_off(self) -> None:
        """The current buffer is a full part and more bytes follow: upload it."""
        if self.upload_id is None:
            self._create_upload()
        assert self._buf is not None
        self._submit(self._buf, self._fill)
        self._buf = None
        self._fill = 0

    def _submit(self, buf: mmap.mmap, size: int) -> None:
        self._reap()
        number = self._next_part
        if number > MAX_PARTS:
            raise StorageError(
                errno.EFBIG, os.strerror(errno.EFBIG), self.location,
                message=f"the stream needs more than {MAX_PARTS} parts of {self.part_size} "
                        "bytes (declare expected_size, or use a larger part_size)")
        assert self._pool is not None and self.upload_id is not None
        future = self._pool.submit(self._upload_part, self.upload_id, number, buf, size)
        self._next_part = number + 1
        self._inflight[future] = buf

    def _upload_part(self, upload_id: str, number: int, buf: mmap.mmap, size: int) -> _Part:
        """Runs in the pool: checksum the part and upload it."""
        if self._cancel.is_set():
            raise cf.CancelledError
        body = _Body(buf, size)
        try:
            crc = self.checksum.compute(body.view)
            encoded = self.checksum.encode(crc)
            response = self.client.upload_part(
                Bucket=self.bucket, Key=self._upload_key(), UploadId=upload_id,
                PartNumber=number, Body=body, ContentLength=size,
                **{self.checksum.param: encoded})
        finally:
            body.close()
        return _Part(number, str(response["ETag"]), encoded, crc, size)

    def _take_buffer(self) -> mmap.mmap:
        """A free part buffer, waiting for an upload to finish if all are in use
        (at most ``max_concurrency + 1`` buffers exist)."""
        while not self._free:
            if self._buffers <= self.max_concurrency:
                self._buffers += 1
                buffer = mmap.mmap(-1, self.part_size)
                self._all.append(buffer)
                return buffer
            cf.wait(list(self._inflight), return_when=cf.FIRST_COMPLETED)
            self._reap()
        return self._free.pop()

    def _reap(self) -> None:
        """Collect finished uploads; raise the first failure (translated)."""
        for future in [f for f in self._inflight if f.done()]:
            buf = self._inflight.pop(future)
            error = None if future.cancelled() else future.exception()
            if error is not None:
                if isinstance(error, (ClientError, BotoCoreError)):
                    raise s3_error(error, action="UploadPart", bucket=self.bucket,
                                   key=self._upload_key()) from error
                raise error
            if future.cancelled():
                raise cf.CancelledError
            part = future.result()
            self._parts[part.number] = part
            self._free.append(buf)

    def _wait_all(self) -> None:
        while self._inflight:
            cf.wait(list(self._inflight), return_when=cf.FIRST_COMPLETED)
            self._reap()
        assert self._pool is not None
        self._pool.shutdown(wait=True)

    def _combine(self) -> int:
        parts = [self._parts[n] for n in sorted(self._parts)]
        crc = parts[0].crc
        for part in parts[1:]:
            crc = self.checksum.combine(crc, part.crc, part.size)
        return crc

    def _release(self) -> None:
        """Give the part buffers back (never while an upload may still read one)."""
        if self._body is not None:
            self._body.close()
            self._body = None
        self._buf = None
        self._free.clear()
        buffers, self._all = self._all, []
        for buffer in buffers:
            _close_buffer(buffer)

    # -- publishing ----------------------------------------------------------------------

    def _put_args(self, result: StoreResult) -> dict[str, Any]:
        """Arguments of the one-part ``PutObject`` (digest known: checksum and metadata)."""
        body: _Body | bytes = b""
        # The checksum is of the bytes this sink received, hashed here (at most
        # one part): under a transforming sink (EncryptedSink) they are not the
        # stream result.sha256 describes.
        sent = hashlib.sha256()
        if self._buf is not None and self._fill:
            body = self._body = _Body(self._buf, self._fill)
            sent.update(memoryview(self._buf)[: self._fill])
        return {
            **self.extra_args,
            "Bucket": self.bucket, "Key": self.key, "Body": body,
            "ContentLength": self._fill, "ChecksumSHA256": _b64(sent.hexdigest()),
            "Metadata": {**self._user_metadata, SHA256_KEY: result.sha256, NONCE_KEY: self.nonce},
        }

    def _complete_args(self, result: StoreResult) -> dict[str, Any]:
        """Arguments of ``CompleteMultipartUpload`` for the upload at :meth:`_upload_key`."""
        assert self._full_crc is not None
        parts = [{"PartNumber": p.number, "ETag": p.etag, self.checksum.param: p.checksum}
                 for p in (self._parts[n] for n in sorted(self._parts))]
        return {
            "Bucket": self.bucket, "Key": self._upload_key(), "UploadId": self.upload_id,
            "MultipartUpload": {"Parts": parts}, "ChecksumType": "FULL_OBJECT",
            "MpuObjectSize": self._size,
            self.checksum.param: self.checksum.encode(self._full_crc),
        }

    def _publish(self, result: StoreResult) -> None:
        """Make the object visible at ``key`` (the commit point)."""
        if self.upload_id is None:
            args = self._put_args(result)
            if not self.overwrite:
                args["IfNoneMatch"] = "*"
            with s3_errors("PutObject", self.bucket, self.key):
                response = self.client.put_object(**args)
        else:
            args = self._complete_args(result)
            if not self.overwrite:
                if head(self.client, self.bucket, self.key) is not None:
                    raise self._exists()
                args["IfNoneMatch"] = "*"
            with s3_errors("CompleteMultipartUpload", self.bucket, self.key):
                response = self.client.complete_multipart_upload(**args)
        version = response.get("VersionId")
        self.version_id = str(version) if version else None

    def _exists(self) -> DestinationExistsError:
        return DestinationExistsError(
            errno.EEXIST, os.strerror(errno.EEXIST), self.location,
            message=f"{self.location} exists and overwrite=False")

    def _settle(self) -> bool:
        """After the final request failed or was interrupted: abort the upload
        (fixing the outcome), then True if the object at ``key`` is ours."""
        try:
            if self.upload_id is not None:
                with s3_errors("AbortMultipartUpload", self.bucket, self._upload_key()):
                    try:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=self._upload_key(), UploadId=self.upload_id)
                    except ClientError as exc:
                        if not _no_such_upload(exc):
                            raise
            found = head(self.client, self.bucket, self.key)
        except _SETTLE_ERRORS:
            return False
        if found is None or found.get("Metadata", {}).get(NONCE_KEY) != self.nonce:
            return False
        version = found.get("VersionId")
        self.version_id = str(version) if version else self.version_id
        return True

    def _tags(self, sha256: str) -> list[dict[str, str]]:
        tags = [{"Key": k, "Value": v}
                for k, v in parse_qsl(self.extra_args.get("Tagging", ""), keep_blank_values=True)
                if k not in (SHA256_KEY, NONCE_KEY)]
        own = [{"Key": SHA256_KEY, "Value": sha256}, {"Key": NONCE_KEY, "Value": self.nonce}]
        return [*tags, *own]

    def _after_commit(self, result: StoreResult, *, raise_errors: bool) -> None:
        """Work once the object is visible: tag a multipart object with its SHA-256."""
        if self.upload_id is None or not self.tag_sha256:
            return
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key,
                                "Tagging": {"TagSet": self._tags(result.sha256)}}
        if self.version_id:
            args["VersionId"] = self.version_id
        try:
            with s3_errors("PutObjectTagging", self.bucket, self.key):
                self.client.put_object_tagging(**args)
        except StorageError as exc:
            exc.committed = result  # type: ignore[attr-defined]
            if raise_errors:
                raise

    def _cleanup(self) -> None:
        """More to remove on abort (a subclass's staging object)."""


def sweep_uploads(client: Any, bucket: str, *, prefix: str = "",
                  older_than: float = 86400.0) -> int:
    """Abort the multipart uploads under ``prefix`` in ``bucket`` that have been
    idle for ``older_than`` seconds; return how many were aborted.

    The S3 twin of :func:`~streamstore.sweep_temp`.  An upload's last activity
    is its newest part's time (``ListParts``), or its start when it has no
    part; S3 cannot tell a live writer from a dead one, so choose
    ``older_than`` longer than any upload may pause between parts.  Every
    upload under ``prefix`` counts, whoever started it (as with an
    ``AbortIncompleteMultipartUpload`` lifecycle rule).  Each abort is
    confirmed with ``ListParts``.
    """
    if not isinstance(bucket, str) or not bucket:
        raise ValueError(f"bucket must be a non-empty str, got {bucket!r}")
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    return _sweep(client, bucket, prefix, older_than, lambda key: True)


def _sweep(client: Any, bucket: str, prefix: str, older_than: float,
           accept: Callable[[str], bool]) -> int:
    """:func:`sweep_uploads` over the uploads whose key ``accept`` takes."""
    if isinstance(older_than, bool) or not isinstance(older_than, (int, float)):
        raise TypeError(f"older_than must be a number of seconds, got {older_than!r}")
    if older_than < 0:
        raise ValueError(f"older_than must be >= 0, got {older_than}")
    cutoff = time.time() - older_than
    aborted = 0
    with s3_errors("ListMultipartUploads", bucket, prefix or None):
        pages = client.get_paginator("list_multipart_uploads").paginate(
            Bucket=bucket, Prefix=prefix)
        uploads = [u for page in pages for u in page.get("Uploads", [])]
    for upload in uploads:
        key, upload_id = str(upload["Key"]), str(upload["UploadId"])
        if not accept(key) or upload["Initiated"].timestamp() > cutoff:
            continue
        last = _last_part_time(client, bucket, key, upload_id)
        if last is not None and last > cutoff:
            continue
        abort_upload(client, bucket, key, upload_id)
        aborted += 1
    return aborted


def _last_part_time(client: Any, bucket: str, key: str, upload_id: str) -> float | None:
    newest: float | None = None
    with s3_errors("ListParts", bucket, key):
        try:
            pages = client.get_paginator("list_parts").paginate(
                Bucket=bucket, Key=key, UploadId=upload_id)
            for page in pages:
                for part in page.get("Parts", []):
                    when = part["LastModified"].timestamp()
                    newest = when if newest is None else max(newest, when)
        except ClientError as exc:
            if not _no_such_upload(exc):
                raise
    return newest


def _tag_set(client: Any, bucket: str, key: str) -> dict[str, str]:
    with s3_errors("GetObjectTagging", bucket, key):
        response = client.get_object_tagging(Bucket=bucket, Key=key)
    return {str(t["Key"]): str(t["Value"]) for t in response.get("TagSet", [])}


def read_sha256(client: Any, bucket: str, key: str) -> str | None:
    """The SHA-256 (hex) streamstore recorded for the object ``key``, or ``None``.

    Looks at the metadata ``x-amz-meta-sha256`` (one-part objects and
    :class:`S3Backend` objects), then at the ``sha256`` tag, which counts
    only if its ``streamstore-upload`` tag matches the object's own
    ``x-amz-meta-streamstore-upload`` (a tag left by an upload that was
    since replaced does not).  :class:`StorageError` (``ENOENT``) if there is
    no such object.
    """
    found = head(client, bucket, key)
    if found is None:
        raise StorageError(errno.ENOENT, os.strerror(errno.ENOENT), s3_url(bucket, key),
                           message=f"no object {s3_url(bucket, key)}")
    metadata = found.get("Metadata", {})
    digest = metadata.get(SHA256_KEY)
    if digest:
        return str(digest).lower()
    nonce = metadata.get(NONCE_KEY)
    if nonce is None:
        return None
    tags = _tag_set(client, bucket, key)
    if tags.get(NONCE_KEY) == nonce and tags.get(SHA256_KEY):
        return tags[SHA256_KEY].lower()
    return None


def verify_object(client: Any, bucket: str, key: str) -> StoreResult:
    """Re-read the object ``key`` (constant memory) and check it against the
    SHA-256 recorded when it was stored (:func:`read_sha256`).

    Returns what was read (``location`` ``s3://bucket/key``).  Raises
    :class:`~streamstore.HashMismatchError` if the bytes no longer match,
    ``ValueError`` (before reading) if no SHA-256 is recorded for the object.
    """
    recorded = read_sha256(client, bucket, key)
    url = s3_url(bucket, key)
    if recorded is None:
        raise ValueError(f"{url} has no SHA-256 recorded by streamstore")
    from ._s3store import S3Reader  # the reader lives with the backend

    hasher = hashlib.sha256()
    buffer = memoryview(bytearray(MiB))
    size = 0
    with S3Reader(client, bucket, key) as reader:
        while n := reader.readinto(buffer):
            hasher.update(buffer[:n])
            size += n
    actual = hasher.hexdigest()
    if actual != recorded:
        raise HashMismatchError(f"{url} is corrupt: recorded SHA-256 {recorded}, read {actual}",
                                expected=recorded, actual=actual)
    return StoreResult(None, size, actual, url)

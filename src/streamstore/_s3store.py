"""The S3 backend of :class:`~streamstore.ContentStore`, and a seekable reader
of S3 objects.

Layout under ``prefix`` in ``bucket``::

    <prefix>/<sha256 hex>                             an object, named by its SHA-256
    <prefix>/.streamstore-staging/<time>-<nonce>      a multipart put being moved into place

Every object carries, set when it is created and never changed:
``x-amz-meta-sha256`` (its digest), ``x-amz-meta-streamstore-upload`` (the
random id of the put that created it) and, when that put had metadata,
``x-amz-meta-streamstore-metadata`` (the JSON, compact, percent-encoded).

A put whose stream fits in one part is one ``PutObject`` with
``If-None-Match: *`` straight at the content address (the digest is known by
then).  A longer put with ``expected_sha256`` is a multipart upload straight
at the content address, completed with ``If-None-Match: *``.  A longer put
without it is a multipart upload to a staging key, then a server-side copy to
the content address (``CopyObject`` with ``If-None-Match: *``, or
``UploadPartCopy`` parts above 5 GiB, which the server checks against the
full-object CRC), then the staging object is deleted.  In every case an
object already at the address wins: the put reports ``created=False`` and
leaves it (and its metadata) as it was.
"""

from __future__ import annotations

import concurrent.futures as cf
import errno
import io
import json
import os
import re
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, BinaryIO, cast
from urllib.parse import quote, unquote

from botocore.exceptions import BotoCoreError, ClientError

from ._errors import DestinationExistsError, ObjectNotFoundError, StorageError
from ._s3errors import error_code, http_status, s3_error, s3_errors, s3_url
from ._s3sink import (
    DEFAULT_PART_SIZE,
    MAX_PARTS,
    METADATA_LIMIT,
    NONCE_KEY,
    SHA256_KEY,
    MiB,
    S3Sink,
    _sweep,
    abort_upload,
    head,
)
from ._types import StoreResult

__all__ = ["METADATA_KEY", "S3Backend", "S3ObjectSink", "S3Reader"]

METADATA_KEY = "streamstore-metadata"
"""The metadata key (``x-amz-meta-streamstore-metadata``) holding a stored object's JSON."""
STAGING = ".streamstore-staging/"
COPY_LIMIT = 5 * 1024 * MiB
"""The largest object ``CopyObject`` copies; larger ones are copied in parts."""
COPY_PART_SIZE = 1024 * MiB
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_SAFE = "".join(c for c in string.punctuation if c != "%")


def encode_json(metadata: bytes) -> str:
    """The store's UTF-8 JSON metadata as an S3 header value: compact and
    percent-encoded (ASCII, no spaces; readable for plain ASCII)."""
    text = json.dumps(json.loads(metadata), ensure_ascii=False, separators=(",", ":"),
                      sort_keys=True)
    return quote(text, safe=_SAFE)


def decode_json(found: dict[str, Any], url: str) -> dict[str, Any]:
    """The JSON metadata of the object ``HeadObject`` described (``{}`` when none)."""
    raw = found.get("Metadata", {}).get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        value = json.loads(unquote(str(raw)))
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise StorageError(errno.EIO, os.strerror(errno.EIO), url,
                           message=f"the metadata of {url} is corrupt")
    return value


class S3Reader(io.RawIOBase):
    """A seekable, read-only raw stream over the S3 object ``key``, in constant
    memory: one ranged ``GetObject`` from the current position to the end,
    read straight into the caller's buffers, reopened after a ``seek`` or a
    broken connection.

    ``size`` is the object's size.  Every range carries ``If-Match`` with the
    object's ETag, so a reader never mixes two versions of an object: a
    changed object raises :class:`~streamstore.StorageError` (``ESTALE``).
    ``size`` and ``etag`` skip the ``HeadObject`` when the caller knows them.
    """

    def __init__(self, client: Any, bucket: str, key: str, *, size: int | None = None,
                 etag: str | None = None) -> None:
        super().__init__()
        self.client = client
        self.bucket = bucket
        self.key = key
        self.location = s3_url(bucket, key)
        if size is None:
            found = head(client, bucket, key)
            if found is None:
                raise StorageError(errno.ENOENT, os.strerror(errno.ENOENT), self.location,
                                   message=f"no object {self.location}")
            size = int(found["ContentLength"])
            etag = found.get("ETag") or None
        self.size = size
        """The object's size in bytes."""
        self.etag = etag
        self._pos = 0
        self._body: Any = None

    def __repr__(self) -> str:
        return f"<S3Reader {self.location} at {self._pos} of {self.size}>"

    def readable(self) -> bool:
        """Always ``True``."""
        return True

    def seekable(self) -> bool:
        """Always ``True``."""
        return True

    def tell(self) -> int:
        """The current position."""
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move to ``offset`` (relative to ``whence``); the next read opens a new range."""
        if self.closed:
            raise ValueError("seek on a closed S3Reader")
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        if pos != self._pos:
            self._drop()
            self._pos = pos
        return pos

    def _open(self) -> None:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key,
                                "Range": f"bytes={self._pos}-{self.size - 1}"}
        if self.etag:
            args["IfMatch"] = self.etag
        with s3_errors("GetObject", self.bucket, self.key):
            self._body = self.client.get_object(**args)["Body"]

    def _drop(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            body.close()

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the current position; 0 at the end."""
        if self.closed:
            raise ValueError("read from a closed S3Reader")
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.size - self._pos)
        if want <= 0:
            return 0
        for attempt in range(2):
            if self._body is None:
                self._open()
            try:
                n = self._body.readinto(view[:want])
            except (BotoCoreError, ClientError) as exc:
                self._drop()
                if attempt:
                    raise s3_error(exc, action="GetObject", bucket=self.bucket,
                                   key=self.key) from exc
                continue
            if n:
                self._pos += n
                return int(n)
            self._drop()
        raise StorageError(errno.EIO, os.strerror(errno.EIO), self.location,
                           message=f"{self.location} ended at {self._pos} of {self.size} bytes")

    def close(self) -> None:
        """Release the connection."""
        self._drop()
        super().close()


class S3Backend:
    """The objects of a :class:`~streamstore.ContentStore` in S3:
    ``ContentStore(S3Backend(client, "bucket", "prefix"))``.

    ``client`` is the caller's boto3 S3 client (credentials, endpoint and
    retries are its business); objects live at ``prefix/<sha256>``.
    ``part_size``, ``max_concurrency`` and ``checksum`` configure the uploads
    as for :class:`S3Sink`.

    Metadata lives on the object itself, set by the put that creates the
    object: a later put of the same content never changes it, even if the
    object was created without metadata (``ObjectInfo.metadata`` shows what
    is stored).  It must fit S3's 2 KiB of user metadata once encoded
    (``ValueError`` before anything is read otherwise).
    """

    durable = True
    """S3 acknowledges a write once it is durably stored."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", *,
                 part_size: int = DEFAULT_PART_SIZE, max_concurrency: int = 4,
                 checksum: str | None = None) -> None:
        if not isinstance(bucket, str) or not bucket:
            raise ValueError(f"bucket must be a non-empty str, got {bucket!r}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        # The arguments of every sink, checked once here.
        S3Sink(client, bucket, "check", part_size=part_size, max_concurrency=max_concurrency,
               checksum=checksum)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.base = f"{self.prefix}/" if self.prefix else ""
        self.staging = self.base + STAGING
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.checksum = checksum
        self.copy_limit = COPY_LIMIT
        """Objects larger than this are copied into place in parts (``UploadPartCopy``)."""
        self.copy_part_size = COPY_PART_SIZE
        self.location = s3_url(bucket, self.prefix or None)
        """``s3://bucket/prefix``."""

    def __repr__(self) -> str:
        return f"S3Backend({self.location!r})"

    def key(self, digest: str) -> str:
        """The key of ``digest``'s object."""
        return self.base + digest

    def url(self, digest: str) -> str:
        """``s3://bucket/prefix/<digest>``."""
        return s3_url(self.bucket, self.key(digest))

    # -- the backend interface ------------------------------------------------------

    def sink(self, *, metadata: bytes | None = None,
             expected_sha256: str | None = None) -> S3ObjectSink:
        """A sink that publishes at the stream's content address."""
        return S3ObjectSink(self, metadata, expected_sha256)

    def _head(self, digest: str) -> dict[str, Any]:
        found = head(self.client, self.bucket, self.key(digest))
        if found is None:
            raise ObjectNotFoundError(f"no object {digest} in {self.location}", digest=digest)
        return found

    def stat(self, digest: str) -> int:
        """The size of ``digest``'s object; ObjectNotFoundError if absent."""
        return int(self._head(digest)["ContentLength"])

    def contains(self, digest: str) -> bool:
        """True if ``digest``'s object is stored."""
        return head(self.client, self.bucket, self.key(digest)) is not None

    def metadata(self, digest: str) -> dict[str, Any]:
        """``digest``'s metadata (``{}`` when none was stored)."""
        found = head(self.client, self.bucket, self.key(digest))
        return {} if found is None else decode_json(found, self.url(digest))

    def open(self, digest: str) -> BinaryIO:
        """A seekable :class:`S3Reader` of ``digest``'s object (ranged GETs,
        constant memory)."""
        found = self._head(digest)
        reader = S3Reader(self.client, self.bucket, self.key(digest),
                          size=int(found["ContentLength"]), etag=found.get("ETag") or None)
        return cast(BinaryIO, reader)

    def path(self, digest: str) -> None:
        """Objects in S3 have no local path."""
        return None

    def digests(self) -> Iterator[str]:
        """The digests of all stored objects (in no particular order)."""
        with s3_errors("ListObjectsV2", self.bucket, self.base or None):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.base, Delimiter="/")
            for page in pages:
                for item in page.get("Contents", []):
                    name = str(item["Key"])[len(self.base):]
                    if _DIGEST_RE.fullmatch(name):
                        yield name

    def delete(self, digest: str) -> bool:
        """Remove an object (its metadata goes with it); False if it was not stored."""
        key = self.key(digest)
        if head(self.client, self.bucket, key) is None:
            return False
        with s3_errors("DeleteObject", self.bucket, key):
            self.client.delete_object(Bucket=self.bucket, Key=key)
        return True

    def _ours(self, key: str) -> bool:
        name = key[len(self.base):]
        return bool(_DIGEST_RE.fullmatch(name)) or key.startswith(self.staging)

    def sweep(self, older_than: float) -> int:
        """Abort this store's multipart uploads idle for ``older_than`` seconds
        and delete staging objects that old; return how many."""
        removed = _sweep(self.client, self.bucket, self.base, older_than, self._ours)
        cutoff = time.time() - older_than
        with s3_errors("ListObjectsV2", self.bucket, self.staging):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.staging)
            stale = [str(item["Key"]) for page in pages for item in page.get("Contents", [])
                     if item["LastModified"].timestamp() <= cutoff]
        for key in stale:
            with s3_errors("DeleteObject", self.bucket, key):
                self.client.delete_object(Bucket=self.bucket, Key=key)
            removed += 1
        return removed


class S3ObjectSink(S3Sink):
    """The sink of one :class:`S3Backend` put: publishes at the stream's content
    address (see the module docstring).  After the commit, ``created`` says
    whether this put added the object and ``metadata`` is its metadata."""

    def __init__(self, backend: S3Backend, metadata: bytes | None,
                 expected_sha256: str | None) -> None:
        self.backend = backend
        self.expected_sha256 = expected_sha256.lower() if expected_sha256 else None
        super().__init__(backend.client, backend.bucket, backend.staging + "pending",
                         part_size=backend.part_size, max_concurrency=backend.max_concurrency,
                         overwrite=False, checksum=backend.checksum, tag_sha256=False)
        self._json = None if metadata is None else encode_json(metadata)
        own = {SHA256_KEY: "0" * 64, NONCE_KEY: self.nonce}
        if self._json is not None:
            own[METADATA_KEY] = self._json
        size = sum(len(k) + len(v) for k, v in own.items())
        if size > METADATA_LIMIT:
            raise ValueError(f"metadata is too large for S3: {size} bytes of object metadata "
                             f"once encoded, at most {METADATA_LIMIT}")
        if self.expected_sha256 is not None:
            self._mpu_key = backend.key(self.expected_sha256)
        else:
            self._mpu_key = f"{backend.staging}{int(time.time())}-{self.nonce}"
        self.key = self._mpu_key
        self.location = s3_url(self.bucket, self.key)
        self.created = False
        """True once the commit added the object (False: it was already stored)."""
        self.metadata: dict[str, Any] = {}
        """The object's metadata after the commit."""
        self._found: dict[str, Any] | None = None
        self._staged = False  # CompleteMultipartUpload of the staging upload was sent
        self._stage_complete = False
        self._copy_upload: str | None = None

    def __repr__(self) -> str:
        return f"S3ObjectSink({self.backend.location!r})"

    def _object_metadata(self, digest: str) -> dict[str, str]:
        own = {SHA256_KEY: digest, NONCE_KEY: self.nonce}
        if self._json is not None:
            own[METADATA_KEY] = self._json
        return own

    def _upload_key(self) -> str:
        return self._mpu_key

    def _create_metadata(self) -> dict[str, str]:
        if self.expected_sha256 is not None:
            return self._object_metadata(self.expected_sha256)
        return {NONCE_KEY: self.nonce}

    def prepare(self, result: StoreResult) -> StoreResult:
        """Wait for the parts, and fill in the content address."""
        super().prepare(result)
        self.key = self.backend.key(result.sha256)
        self.location = self.backend.url(result.sha256)
        return replace(result, path=None, location=self.location)

    def _put_args(self, result: StoreResult) -> dict[str, Any]:
        args = super()._put_args(result)
        args["Metadata"] = self._object_metadata(result.sha256)
        return args

    def _exists_now(self) -> bool:
        self._found = head(self.client, self.bucket, self.key)
        return self._found is not None

    def _staged_upload(self) -> bool:
        """True when the multipart upload goes to a staging key (no expected digest)."""
        return self.expected_sha256 is None and self.upload_id is not None

    def _publish(self, result: StoreResult) -> None:
        self.created = False
        if not self._staged_upload():
            # One part, or an upload at the content address already.
            self._conditional(lambda: super(S3ObjectSink, self)._publish(result))
            return
        self._staged = True
        with s3_errors("CompleteMultipartUpload", self.bucket, self._mpu_key):
            self.client.complete_multipart_upload(**self._complete_args(result))
        self._stage_complete = True
        if self._exists_now():
            return
        if result.size > self.backend.copy_limit:
            self._conditional(lambda: self._copy_in_parts(result))
        else:
            self._conditional(lambda: self._copy(result))

    def _conditional(self, publish: Callable[[], None]) -> None:
        """Run a conditional publish; an object already there wins (unless it is
        ours, from a retried request)."""
        try:
            publish()
        except DestinationExistsError:
            self._exists_now()
            self.created = self._is_ours()
            if self.upload_id is not None and not self._staged and not self.created:
                abort_upload(self.client, self.bucket, self._mpu_key, self.upload_id)
            return
        self.created = True

    def _is_ours(self) -> bool:
        return (self._found is not None
                and self._found.get("Metadata", {}).get(NONCE_KEY) == self.nonce)

    def _copy(self, result: StoreResult) -> None:
        with s3_errors("CopyObject", self.bucket, self.key):
            self.client.copy_object(
                Bucket=self.bucket, Key=self.key,
                CopySource={"Bucket": self.bucket, "Key": self._mpu_key},
                MetadataDirective="REPLACE", Metadata=self._object_metadata(result.sha256),
                ChecksumAlgorithm=self.checksum.name, IfNoneMatch="*")

    def _copy_in_parts(self, result: StoreResult) -> None:
        """Copy the staging object in ``UploadPartCopy`` parts, completed with our
        full-object CRC (so the server checks the copy) and ``If-None-Match: *``."""
        with s3_errors("CreateMultipartUpload", self.bucket, self.key):
            upload_id = str(self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, Metadata=self._object_metadata(result.sha256),
                ChecksumAlgorithm=self.checksum.name, ChecksumType="FULL_OBJECT")["UploadId"])
        self._copy_upload = upload_id
        size = result.size
        part = max(self.backend.copy_part_size, -(-size // MAX_PARTS))
        ranges = [(n + 1, start, min(start + part, size) - 1)
                  for n, start in enumerate(range(0, size, part))]
        source = {"Bucket": self.bucket, "Key": self._mpu_key}

        def copy_part(number: int, first: int, last: int) -> dict[str, Any]:
            response = self.client.upload_part_copy(
                Bucket=self.bucket, Key=self.key, UploadId=upload_id, PartNumber=number,
                CopySource=source, CopySourceRange=f"bytes={first}-{last}")
            copied = response["CopyPartResult"]
            entry = {"PartNumber": number, "ETag": copied["ETag"]}
            if copied.get(self.checksum.param):
                entry[self.checksum.param] = copied[self.checksum.param]
            return entry

        with cf.ThreadPoolExecutor(self.max_concurrency,
                                   thread_name_prefix="streamstore-s3-copy") as pool:
            futures = [pool.submit(copy_part, *r) for r in ranges]
            try:
                parts = [f.result() for f in futures]
            except (ClientError, BotoCoreError) as exc:
                for future in futures:
                    future.cancel()
                raise s3_error(exc, action="UploadPartCopy", bucket=self.bucket,
                               key=self.key) from exc
        assert self._full_crc is not None
        with s3_errors("CompleteMultipartUpload", self.bucket, self.key):
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=upload_id,
                MultipartUpload={"Parts": parts}, ChecksumType="FULL_OBJECT",
                MpuObjectSize=size, IfNoneMatch="*",
                **{self.checksum.param: self.checksum.encode(self._full_crc)})
        self._copy_upload = None

    def _settle(self) -> bool:
        """Committed if any object is at the content address now (its bytes are
        the stream's by definition); ``created`` if it carries our nonce."""
        try:
            if self.upload_id is not None and not self._staged_upload():
                with s3_errors("AbortMultipartUpload", self.bucket, self._mpu_key):
                    try:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=self._mpu_key, UploadId=self.upload_id)
                    except ClientError as exc:
                        if error_code(exc) != "NoSuchUpload" and http_status(exc) != 404:
                            raise
            if not self._exists_now():
                return False
        except (ClientError, BotoCoreError, StorageError):
            return False
        self.created = self._is_ours()
        return True

    def _after_commit(self, result: StoreResult, *, raise_errors: bool) -> None:
        """Remove what is left of the staging (upload, object, copy upload); read
        the object's metadata."""
        try:
            if self._staged_upload() and not self._stage_complete:
                assert self.upload_id is not None
                abort_upload(self.client, self.bucket, self._mpu_key, self.upload_id)
            self._cleanup()
            if self.created:
                self.metadata = {} if self._json is None else json.loads(unquote(self._json))
            else:
                found = self._found
                if found is None:
                    found = head(self.client, self.bucket, self.key) or {}
                self.metadata = decode_json(found, self.location)
        except StorageError as exc:
            exc.committed = result  # type: ignore[attr-defined]
            if raise_errors:
                raise

    def _cleanup(self) -> None:
        """Abort the copy upload, then delete the staging object (keys only this put uses)."""
        if self._copy_upload is not None:
            abort_upload(self.client, self.bucket, self.key, self._copy_upload)
            self._copy_upload = None
        if self._staged:
            with s3_errors("DeleteObject", self.bucket, self._mpu_key):
                self.client.delete_object(Bucket=self.bucket, Key=self._mpu_key)
            self._staged = False

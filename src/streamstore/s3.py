"""S3-compatible object storage: one pass, verified before it becomes visible,
never a stray upload.  Needs the ``s3`` extra: ``pip install 'streamstore[s3]'``.

Bring your own boto3 client (credentials, endpoint, region and retries are
its business; this module never reads credentials)::

    import boto3
    from streamstore import ContentStore, store_from_reader
    from streamstore.s3 import S3Backend, S3Sink

    client = boto3.client("s3", endpoint_url="http://127.0.0.1:8333")
    result = store_from_reader(request_body, S3Sink(client, "bucket", "uploads/a.bin"),
                               limit=2**30, expected_sha256=digest)
    result.location                      # 's3://bucket/uploads/a.bin'

    store = ContentStore(S3Backend(client, "bucket", "blobs"))
    info = store.put(request_body, metadata={"filename": "a.bin"})

- :class:`S3Sink`: a :class:`~streamstore.Sink` for ``store_from_reader``,
  ``astore_from_reader``, ``open_writer`` and ``aopen_writer``.
- :class:`S3Backend`: ``ContentStore(S3Backend(client, bucket, prefix))``.
- :class:`S3Reader`: a seekable raw reader of an S3 object (ranged GETs).
- :func:`sweep_uploads`: abort stale multipart uploads.
- :func:`read_sha256`, :func:`verify_object`: the SHA-256 recorded on an
  object, and a re-read that checks it.

Nothing here needs an event loop: under the async front ends every call
runs in a worker thread.  See docs/s3.md for what each S3 server verifies
and what is atomic.
"""

from __future__ import annotations

try:
    import botocore  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "streamstore.s3 needs boto3, which is not installed: "
        "pip install 'streamstore[s3]'"
    ) from exc

from ._s3errors import s3_error, s3_errors
from ._s3sink import (
    DEFAULT_PART_SIZE,
    MIN_PART_SIZE,
    S3Sink,
    read_sha256,
    sweep_uploads,
    verify_object,
)
from ._s3store import S3Backend, S3ObjectSink, S3Reader

__all__ = [
    "DEFAULT_PART_SIZE",
    "MIN_PART_SIZE",
    "S3Backend",
    "S3ObjectSink",
    "S3Reader",
    "S3Sink",
    "read_sha256",
    "s3_error",
    "s3_errors",
    "sweep_uploads",
    "verify_object",
]

for _name in __all__:
    try:
        globals()[_name].__module__ = __name__
    except (AttributeError, TypeError):
        pass
del _name

"""The one place where botocore's exceptions become streamstore errors.

=====================================================  ==========================  ============
S3 error (code, or HTTP status) / botocore exception   raised as                   errno
=====================================================  ==========================  ============
AccessDenied, InvalidAccessKeyId,                      StoragePermissionError      EACCES
SignatureDoesNotMatch, NoSuchBucket, expired or
invalid tokens, missing credentials (403, 401)
PreconditionFailed (412, ``If-None-Match: *``)         DestinationExistsError      EEXIST
PreconditionFailed on GetObject (``If-Match``: the     StorageError                ESTALE
object changed while it was being read)
EntityTooLarge, too many parts                         StorageError                EFBIG
BadDigest, InvalidDigest,                              StorageError                EIO
XAmzContentSHA256Mismatch (a part or object was
corrupted on its way to the server: the stream was
fine, the transfer was not)
SlowDown, Throttling, 503 (after botocore's retries)   StorageError                EAGAIN
RequestTimeout, connect or read timeouts               StorageError                ETIMEDOUT
connection refused / endpoint unreachable              StorageError                ECONNREFUSED
connection closed or reset mid-request                 StorageError                ECONNRESET
NoSuchUpload (the upload was aborted meanwhile),       StorageError                ENOENT
NoSuchKey
ConditionalRequestConflict (409)                       StorageError                EBUSY
anything else (InternalError, other 4xx/5xx, ...)      StorageError                EIO
=====================================================  ==========================  ============

Every translated error has ``filename`` ``s3://bucket/key`` (or
``s3://bucket``), ``dest`` ``None`` (it is not a local path), a message
naming the S3 operation and the server's error code, and the botocore
exception as ``__cause__``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from ._errors import DestinationExistsError, StorageError, StoragePermissionError

__all__ = ["error_code", "http_status", "s3_error", "s3_errors", "s3_url"]

_PERMISSION = frozenset({
    "AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId",
    "SignatureDoesNotMatch", "NoSuchBucket", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "InvalidSecurity", "NotSignedUp", "InvalidPayer",
    "UnauthorizedAccess", "Forbidden",
})
_CORRUPT = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch",
                      "InvalidChecksum", "IncompleteBody"})
_THROTTLED = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                        "TooManyRequestsException", "ServiceUnavailable", "503"})
_TOO_LARGE = frozenset({"EntityTooLarge", "MaxMessageLengthExceeded", "InvalidPartOrder",
                        "TooManyParts"})


def s3_url(bucket: str, key: str | None = None) -> str:
    """``s3://bucket/key`` (``s3://bucket`` without a key)."""
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


def error_code(exc: BaseException) -> str:
    """The S3 error code of a ``ClientError`` (``""`` for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def http_status(exc: BaseException) -> int:
    """The HTTP status of a ``ClientError`` (0 for anything else)."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return int(status or 0)
    return 0


def _classify(exc: BaseException, action: str) -> tuple[type[StorageError], int, str]:
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = http_status(exc)
        text = exc.response.get("Error", {}).get("Message") or ""
        detail = f"{code}: {text}" if text and text != code else code or f"HTTP {status}"
        if code in _PERMISSION or status in (401, 403):
            return StoragePermissionError, errno.EACCES, detail
        if (code == "PreconditionFailed" or status == 412) and action == "GetObject":
            return StorageError, errno.ESTALE, detail
        if code == "PreconditionFailed" or status == 412:
            return DestinationExistsError, errno.EEXIST, detail
        if code in _TOO_LARGE:
            return StorageError, errno.EFBIG, detail
        if code in _CORRUPT:
            return StorageError, errno.EIO, detail
        if code in _THROTTLED or status in (429, 503):
            return StorageError, errno.EAGAIN, detail
        if code == "RequestTimeout":
            return StorageError, errno.ETIMEDOUT, detail
        if code in ("NoSuchUpload", "NoSuchKey") or status == 404:
            return StorageError, errno.ENOENT, detail
        if code == "ConditionalRequestConflict" or status == 409:
            return StorageError, errno.EBUSY, detail
        return StorageError, errno.EIO, detail
    name = type(exc).__name__
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        return StoragePermissionError, errno.EACCES, name
    if isinstance(exc, EndpointConnectionError):
        return StorageError, errno.ECONNREFUSED, name
    if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):
        return StorageError, errno.ETIMEDOUT, name
    if isinstance(exc, (ConnectionClosedError, ResponseStreamingError)):
        return StorageError, errno.ECONNRESET, name
    return StorageError, errno.EIO, name


def s3_error(exc: BaseException, *, action: str, bucket: str,
             key: str | None = None) -> StorageError:
    """The :class:`StorageError` for a botocore exception ``exc`` raised by the
    S3 operation ``action`` on ``bucket``/``key`` (see the module docstring).
    The caller raises it ``from exc``."""
    if isinstance(exc, StorageError):
        return exc
    cls, code, detail = _classify(exc, action)
    url = s3_url(bucket, key)
    return cls(code, os.strerror(code), url, message=f"{action} {url} failed ({detail})")


@contextmanager
def s3_errors(action: str, bucket: str, key: str | None = None) -> Iterator[None]:
    """Translate botocore exceptions raised in the block (:func:`s3_error`)."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(exc, action=action, bucket=bucket, key=key) from exc

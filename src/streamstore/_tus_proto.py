"""The tus 1.0.0 wire format: header parsing and formatting, no I/O.

Every parser raises :class:`Reply` (an HTTP status and a message) for a value
the protocol does not allow, so :mod:`streamstore.tus` answers it directly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "EXTENSIONS",
    "MAX_INT",
    "OFFSET_CONTENT_TYPE",
    "TUS_VERSION",
    "UPLOAD_ID_RE",
    "Reply",
    "format_http_date",
    "parse_checksum",
    "parse_concat",
    "parse_metadata",
    "parse_sha256",
    "parse_uint",
    "upload_id_from_url",
]

TUS_VERSION = "1.0.0"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "checksum",
    "expiration",
    "concatenation",
)
CHECKSUM_ALGORITHMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "md5": hashlib.md5,
}
MAX_INT = 2**63 - 1
"""The largest offset or length accepted (what a signed 64-bit ``off_t`` holds)."""

UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")
_DIGITS_RE = re.compile(r"[0-9]{1,19}")
# A metadata key: visible ASCII without the comma (RFC 9110 token characters
# are a subset); spaces and control characters cannot occur.
_KEY_RE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")


class Reply(Exception):
    """Answer the request with ``status`` and the text ``message``, plus ``headers``."""

    def __init__(self, status: int, message: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def parse_uint(value: str | None, name: str) -> int | None:
    """A header's non-negative integer (``None`` if absent); 400 if malformed."""
    if value is None:
        return None
    text = value.strip()
    if _DIGITS_RE.fullmatch(text) is None or int(text) > MAX_INT:
        raise Reply(400, f"{name} must be a non-negative integer, got {value!r}")
    return int(text)


def _b64decode(value: str) -> bytes:
    """Strict standard base64 (padding optional); ValueError otherwise."""
    if _B64_RE.fullmatch(value) is None:
        raise ValueError("not base64")
    padded = value + "=" * (-len(value) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def parse_metadata(value: str | None) -> tuple[str, dict[str, str]]:
    """``Upload-Metadata``: (the header as the client sent it, trimmed; ``{key: text}``).

    Keys are visible ASCII without commas; values are base64 of UTF-8 text
    (an absent value is ``""``).  An empty header means no metadata.  A key
    given twice, an invalid key, bad base64 or a value that is not UTF-8 is a
    400.  A header that parses holds only key and base64 characters, commas,
    spaces and tabs, so it is safe to echo.
    """
    if value is None or not value.strip():
        return "", {}
    pairs: dict[str, str] = {}
    for item in value.split(","):
        parts = item.strip(" \t").split(" ")
        if len(parts) > 2 or not parts[0]:
            raise Reply(400, f"Upload-Metadata: malformed pair {item.strip()!r}")
        key = parts[0]
        encoded = parts[1] if len(parts) == 2 else ""
        if _KEY_RE.fullmatch(key) is None:
            raise Reply(400, f"Upload-Metadata: invalid key {key!r}")
        if key in pairs:
            raise Reply(400, f"Upload-Metadata: key {key!r} given twice")
        try:
            pairs[key] = _b64decode(encoded).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise Reply(400, f"Upload-Metadata: the value of {key!r} is not base64 "
                             "of UTF-8 text") from None
    return value.strip(" \t"), pairs


def parse_sha256(text: str) -> str:
    """A SHA-256 given as 64 hex digits or as base64 of its 32 bytes, as lowercase hex.

    400 if it is neither (a ``sha256`` metadata value is checked when the
    upload is created, so a typo fails early, not after the last byte).
    """
    text = text.strip()
    if _HEX64_RE.fullmatch(text):
        return text.lower()
    for decode in (_b64decode, _b64url_decode):
        try:
            raw = decode(text)
        except ValueError:
            continue
        if len(raw) == 32:
            return raw.hex()
    raise Reply(400, "Upload-Metadata: sha256 must be a SHA-256 digest in hex "
                     f"(64 characters) or base64 (32 bytes), got {text[:80]!r}")


def _b64url_decode(value: str) -> bytes:
    return _b64decode(value.replace("-", "+").replace("_", "/"))


def parse_checksum(value: str) -> tuple[str, bytes]:
    """``Upload-Checksum: <algorithm> <base64 digest>`` as (algorithm, digest).

    400 for an unsupported algorithm or a malformed value (the checksum
    extension's answer); the digest's length must fit the algorithm.
    """
    parts = value.strip().split(" ")
    if len(parts) != 2:
        raise Reply(400, f"Upload-Checksum must be '<algorithm> <base64>', got {value!r}")
    name, encoded = parts
    factory = CHECKSUM_ALGORITHMS.get(name)
    if factory is None:
        supported = ",".join(CHECKSUM_ALGORITHMS)
        raise Reply(400, f"unsupported checksum algorithm {name!r} (supported: {supported})")
    try:
        digest = _b64decode(encoded)
    except ValueError:
        raise Reply(400, f"Upload-Checksum: {encoded!r} is not base64") from None
    if len(digest) != factory().digest_size:
        raise Reply(400, f"Upload-Checksum: a {name} digest has {factory().digest_size} "
                         f"bytes, got {len(digest)}")
    return name, digest


def parse_concat(value: str) -> list[str] | None:
    """``Upload-Concat``: ``None`` for ``partial``, the partial URLs for ``final;...``."""
    text = value.strip()
    if text == "partial":
        return None
    if text.startswith("final;"):
        urls = text[len("final;"):].split()
        if urls:
            return urls
    raise Reply(400, f"Upload-Concat must be 'partial' or 'final;<urls>', got {value!r}")


def upload_id_from_url(url: str) -> str | None:
    """The upload id at the end of an upload URL (absolute or relative), or None."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    last = unquote(path.rstrip("/").rpartition("/")[2])
    return last if UPLOAD_ID_RE.fullmatch(last) else None


def format_http_date(timestamp: float) -> str:
    """An RFC 9110 IMF-fixdate, e.g. ``Wed, 25 Jun 2014 16:00:00 GMT``."""
    return formatdate(timestamp, usegmt=True)

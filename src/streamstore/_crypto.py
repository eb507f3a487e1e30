"""The segmented AEAD format of ``streamstore.crypto`` (docs/encryption-format.md)
and the :class:`Keyring`: I/O-free, so the sink, the reader and the test
vectors share one implementation.

An encrypted object is ``header || segment_0 || ... || segment_{n-1}``.  The
header names the algorithm and the key id and carries a random salt (from
which HKDF-SHA256 derives the per-object key and a key check) and a nonce
prefix.  Each segment is 64 KiB of plaintext sealed with the one-shot AEAD
under the nonce ``prefix || uint32_be(index) || last``, the whole header as
associated data; only the final segment has ``last = 1``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._errors import DecryptionError, TooLargeError
from ._types import StrPath

__all__ = [
    "AES_256_GCM",
    "ALGORITHMS",
    "CHACHA20_POLY1305",
    "KEY_FILE_ENV",
    "MAGIC",
    "MAX_HEADER",
    "NONCE_STRUCT",
    "SEGMENT_SIZE",
    "TAG_SIZE",
    "Header",
    "Keyring",
    "Layout",
    "SegmentEncryptor",
    "ciphertext_size",
    "derive_keys",
    "encrypt_bytes",
    "generate_key",
    "make_aead",
    "parse_header",
    "show_key_id",
]

MAGIC = b"\x89SSE\r\n\x1a\n"
VERSION = 1
AES_256_GCM = 1
CHACHA20_POLY1305 = 2
ALGORITHMS = {"aes-256-gcm": AES_256_GCM, "chacha20-poly1305": CHACHA20_POLY1305}
"""Algorithm names (as ``Keyring(algorithm=...)`` takes them) -> header ids."""
_ALGORITHM_NAMES = {value: name for name, value in ALGORITHMS.items()}

KEY_SIZE = 32
SALT_SIZE = 32
NONCE_PREFIX_SIZE = 7
CHECK_SIZE = 32
TAG_SIZE = 16
MAX_KEY_ID = 64
SEGMENT_SIZE = 64 * 1024
"""Plaintext bytes per segment (every segment but the final one is this full)."""
CIPHER_SEGMENT = SEGMENT_SIZE + TAG_SIZE
MAX_SEGMENTS = 2**32
FIXED_HEADER = len(MAGIC) + 3  # magic, version, algorithm, key id length
_FIXED_TAIL = SALT_SIZE + NONCE_PREFIX_SIZE + CHECK_SIZE
MAX_HEADER = FIXED_HEADER + MAX_KEY_ID + _FIXED_TAIL
_KEY_INFO = b"streamstore-aead-v1 key"
_CHECK_INFO = b"streamstore-aead-v1 check"
NONCE_STRUCT = struct.Struct(">7sIB")

KEY_FILE_ENV = "STREAMSTORE_KEY_FILE"
"""The environment variable naming a key file (:meth:`Keyring.from_env`)."""

Aead = AESGCM | ChaCha20Poly1305


def generate_key() -> bytes:
    """A new random 32-byte key (``os.urandom``)."""
    return os.urandom(KEY_SIZE)


def make_aead(algorithm: int, key: bytes) -> Aead:
    """The one-shot AEAD of header id ``algorithm`` under ``key``."""
    if algorithm == AES_256_GCM:
        return AESGCM(key)
    if algorithm == CHACHA20_POLY1305:
        return ChaCha20Poly1305(key)
    raise ValueError(f"unknown algorithm id {algorithm}")


def derive_keys(master: bytes, salt: bytes, algorithm: int) -> tuple[bytes, bytes]:
    """(per-object segment key, key check): HKDF-SHA256 of ``master`` with
    ``salt``, two different ``info`` strings, 32 bytes each."""
    suffix = bytes((algorithm,))
    key = HKDF(SHA256(), KEY_SIZE, salt, _KEY_INFO + suffix).derive(master)
    check = HKDF(SHA256(), CHECK_SIZE, salt, _CHECK_INFO + suffix).derive(master)
    return key, check


def ciphertext_size(plaintext_size: int, key_id_size: int) -> int:
    """The encrypted size of ``plaintext_size`` bytes under a key id of ``key_id_size`` bytes."""
    segments = max(1, -(-plaintext_size // SEGMENT_SIZE))
    return FIXED_HEADER + key_id_size + _FIXED_TAIL + plaintext_size + segments * TAG_SIZE


class Header:
    """A parsed header; ``raw`` is its encoding, the associated data of every segment."""

    __slots__ = ("algorithm", "key_check", "key_id", "nonce_prefix", "raw", "salt")

    def __init__(self, algorithm: int, key_id: bytes, salt: bytes, nonce_prefix: bytes,
                 key_check: bytes) -> None:
        self.algorithm = algorithm
        self.key_id = key_id
        self.salt = salt
        self.nonce_prefix = nonce_prefix
        self.key_check = key_check
        self.raw = b"".join((MAGIC, bytes((VERSION, algorithm, len(key_id))), key_id, salt,
                             nonce_prefix, key_check))

    @property
    def algorithm_name(self) -> str:
        """``"aes-256-gcm"`` or ``"chacha20-poly1305"``."""
        return _ALGORITHM_NAMES[self.algorithm]


def header_size(prefix: bytes, name: str) -> int:
    """The whole header's size from its first :data:`FIXED_HEADER` bytes;
    DecryptionError if they are not a version-1 header."""
    if len(prefix) < FIXED_HEADER or prefix[: len(MAGIC)] != MAGIC:
        raise DecryptionError(f"{name} is not a streamstore encrypted object (bad magic)")
    version, algorithm, key_id_size = prefix[len(MAGIC) : FIXED_HEADER]
    if version != VERSION:
        raise DecryptionError(f"{name}: unsupported encryption format version {version}")
    if algorithm not in _ALGORITHM_NAMES:
        raise DecryptionError(f"{name}: unknown encryption algorithm id {algorithm}")
    if not 1 <= key_id_size <= MAX_KEY_ID:
        raise DecryptionError(f"{name}: malformed header (key id length {key_id_size})")
    return FIXED_HEADER + key_id_size + _FIXED_TAIL


def parse_header(data: bytes, name: str) -> Header:
    """Parse the header at the start of ``data``; DecryptionError if malformed."""
    size = header_size(data[:FIXED_HEADER], name)
    if len(data) < size:
        raise DecryptionError(f"{name}: truncated header")
    pos = FIXED_HEADER + data[FIXED_HEADER - 1]
    key_id = bytes(data[FIXED_HEADER:pos])
    salt = bytes(data[pos : pos + SALT_SIZE])
    pos += SALT_SIZE
    prefix = bytes(data[pos : pos + NONCE_PREFIX_SIZE])
    pos += NONCE_PREFIX_SIZE
    header = Header(data[len(MAGIC) + 1], key_id, salt, prefix, bytes(data[pos:size]))
    assert len(header.raw) == size
    return header


class Layout:
    """Where the segments of an encrypted object of ``total`` bytes with a header
    of ``header`` bytes are; DecryptionError if no valid object has that size.

    A valid body is ``n - 1`` full segments and a final one of ``TAG_SIZE``
    to ``CIPHER_SEGMENT`` bytes, which is empty (``TAG_SIZE``) only when it
    is the only one.
    """

    __slots__ = ("count", "final", "header", "size")

    def __init__(self, header: int, total: int, name: str) -> None:
        body = total - header
        count = max(1, -(-body // CIPHER_SEGMENT))
        final = body - (count - 1) * CIPHER_SEGMENT
        if final < TAG_SIZE or (count > 1 and final == TAG_SIZE) or count > MAX_SEGMENTS:
            raise DecryptionError(
                f"{name} is truncated or has bytes appended ({total} bytes is not the size "
                "of a complete encrypted object)")
        self.header = header
        self.count = count
        """Number of segments."""
        self.final = final
        """Ciphertext bytes of the final segment."""
        self.size = (count - 1) * SEGMENT_SIZE + final - TAG_SIZE
        """Plaintext bytes."""

    def segment(self, index: int) -> tuple[int, int]:
        """(offset, ciphertext length) of segment ``index``."""
        length = self.final if index == self.count - 1 else CIPHER_SEGMENT
        return self.header + index * CIPHER_SEGMENT, length


class SegmentEncryptor:
    """Encrypts a plaintext pushed in pieces into header and segments handed to
    ``output`` (each view is valid only during the call).

    The last full segment is held back until more bytes arrive, so the final
    segment carries the last-segment flag even when the plaintext is an exact
    multiple of the segment size; an empty plaintext is one empty final
    segment.  ``salt`` and ``nonce_prefix`` are random unless given (test
    vectors only: reusing them under one key reuses nonces).
    """

    def __init__(self, master: bytes, key_id: bytes, algorithm: int,
                 output: Callable[[memoryview], object], *, salt: bytes | None = None,
                 nonce_prefix: bytes | None = None) -> None:
        salt = os.urandom(SALT_SIZE) if salt is None else bytes(salt)
        prefix = os.urandom(NONCE_PREFIX_SIZE) if nonce_prefix is None else bytes(nonce_prefix)
        if len(salt) != SALT_SIZE or len(prefix) != NONCE_PREFIX_SIZE:
            raise ValueError(f"salt must be {SALT_SIZE} bytes and the nonce prefix "
                             f"{NONCE_PREFIX_SIZE} bytes")
        key, check = derive_keys(master, salt, algorithm)
        self.header = Header(algorithm, key_id, salt, prefix, check)
        aead = make_aead(algorithm, key)
        self._seal_into: Callable[[bytes, Any, bytes, Any], int] | None = getattr(
            aead, "encrypt_into", None)
        self._seal: Callable[[bytes, Any, bytes], bytes] = aead.encrypt
        self._aad = self.header.raw
        self._prefix = prefix
        self._output = output
        self._buf = bytearray(SEGMENT_SIZE)
        self._view = memoryview(self._buf)
        self._out = memoryview(bytearray(CIPHER_SEGMENT))
        self._fill = 0
        self._index = 0
        self.size = 0
        """Plaintext bytes taken so far."""
        self.written = 0
        """Ciphertext bytes handed to ``output`` so far."""
        self.finished = False

    def begin(self) -> None:
        """Hand the header to ``output``."""
        self._emit(memoryview(self._aad))

    def _emit(self, data: memoryview) -> None:
        self._output(data)
        self.written += len(data)

    def _seal_segment(self, plaintext: memoryview, last: bool) -> None:
        index = self._index
        if index >= MAX_SEGMENTS - (0 if last else 1):
            raise TooLargeError(
                f"an encrypted object holds at most {MAX_SEGMENTS} segments of "
                f"{SEGMENT_SIZE} bytes", limit=MAX_SEGMENTS * SEGMENT_SIZE, size=self.size)
        nonce = NONCE_STRUCT.pack(self._prefix, index, last)
        self._index = index + 1
        if self._seal_into is not None:
            out = self._out[: len(plaintext) + TAG_SIZE]
            self._seal_into(nonce, plaintext, self._aad, out)
            self._emit(out)
        else:  # older cryptography has no encrypt_into
            self._emit(memoryview(self._seal(nonce, plaintext, self._aad)))

    def update(self, data: memoryview) -> None:
        """Take the next plaintext bytes; hands over every segment known not to be the last."""
        n = len(data)
        if not n:
            return
        if self.finished:
            raise RuntimeError("SegmentEncryptor.update() after finish()")
        self.size += n
        view = self._view
        fill = self._fill
        pos = 0
        if fill == SEGMENT_SIZE:  # the held-back segment is not the last after all
            self._seal_segment(view, False)
            fill = 0
        while n - pos > SEGMENT_SIZE - fill:
            # More than fits: the segment being completed is followed by more bytes.
            if fill == 0:
                self._seal_segment(data[pos : pos + SEGMENT_SIZE], False)
                pos += SEGMENT_SIZE
            else:
                room = SEGMENT_SIZE - fill
                view[fill:] = data[pos : pos + room]
                pos += room
                self._seal_segment(view, False)
                fill = 0
        view[fill : fill + n - pos] = data[pos:]
        self._fill = fill + n - pos

    def finish(self) -> None:
        """Seal the final segment (what is buffered, possibly nothing)."""
        if self.finished:
            raise RuntimeError("SegmentEncryptor.finish() called twice")
        self.finished = True
        self._seal_segment(self._view[: self._fill], True)
        self._fill = 0


def encrypt_bytes(plaintext: bytes, master: bytes, key_id: bytes, algorithm: int, *,
                  salt: bytes | None = None, nonce_prefix: bytes | None = None,
                  pieces: Iterable[int] = ()) -> bytes:
    """The whole encrypted object of ``plaintext`` (in memory: for tests and
    vectors).  ``pieces`` optionally gives the sizes ``plaintext`` is fed in."""
    out: list[bytes] = []
    enc = SegmentEncryptor(master, key_id, algorithm, lambda view: out.append(bytes(view)),
                           salt=salt, nonce_prefix=nonce_prefix)
    enc.begin()
    view = memoryview(plaintext)
    pos = 0
    for size in pieces:
        enc.update(view[pos : pos + size])
        pos += size
    enc.update(view[pos:])
    enc.finish()
    return b"".join(out)


# -- the keyring ---------------------------------------------------------------------

_KEY_LINE_RE = re.compile(r"(\S+)\s+(\S+)")
_HEX_KEY_RE = re.compile(r"[0-9a-fA-F]{64}")


def _key_id_bytes(key_id: object) -> bytes:
    if isinstance(key_id, str):
        raw = key_id.encode("utf-8")
    elif isinstance(key_id, (bytes, bytearray)):
        raw = bytes(key_id)
    else:
        raise TypeError(f"key ids must be str or bytes, got {type(key_id).__name__}")
    if not 1 <= len(raw) <= MAX_KEY_ID:
        raise ValueError(f"key ids must be 1 to {MAX_KEY_ID} bytes long, got {len(raw)} bytes")
    return raw


def show_key_id(key_id: bytes) -> str:
    try:
        return repr(key_id.decode("utf-8"))
    except UnicodeDecodeError:
        return repr(key_id)


class Keyring:
    """The keys of encrypted objects: ``Keyring({key_id: key, ...}, active=key_id)``.

    Keys are raw 32-byte strings (:func:`~streamstore.crypto.generate_key`
    makes one); key ids are short ``str`` (UTF-8) or ``bytes``, 1 to 64 bytes,
    and are stored in each object's header in clear.  New objects are
    encrypted under the ``active`` key (optional when there is one key) with
    ``algorithm`` (``"aes-256-gcm"``, the default, or ``"chacha20-poly1305"``);
    objects under any key of the ring can be read, so rotating is adding a
    new key and making it active while the old ones stay.

    A keyring never shows its keys: not in its ``repr``, ``str`` or error
    messages, and it refuses to be pickled or copied.
    """

    __slots__ = ("_active", "_algorithm", "_ids", "_keys")

    def __init__(self, keys: Mapping[str, bytes] | Mapping[bytes, bytes] |
                 Mapping[str | bytes, bytes], *, active: str | bytes | None = None,
                 algorithm: str = "aes-256-gcm") -> None:
        if not isinstance(keys, Mapping):
            raise TypeError(f"keys must be a mapping of key ids to keys, "
                            f"got {type(keys).__name__}")
        if not keys:
            raise ValueError("a Keyring needs at least one key")
        self._keys: dict[bytes, bytes] = {}
        self._ids: dict[bytes, str | bytes] = {}
        for key_id, key in keys.items():
            raw_id = _key_id_bytes(key_id)
            if raw_id in self._keys:
                raise ValueError(f"key id {show_key_id(raw_id)} is given twice")
            if not isinstance(key, (bytes, bytearray, memoryview)):
                raise TypeError(f"key {show_key_id(raw_id)} must be bytes, "
                                f"got {type(key).__name__}")
            if len(key) != KEY_SIZE:
                raise ValueError(f"key {show_key_id(raw_id)} must be {KEY_SIZE} bytes, "
                                 f"got {len(key)} bytes")
            self._keys[raw_id] = bytes(key)
            self._ids[raw_id] = key_id if isinstance(key_id, str) else raw_id
        if active is None:
            if len(self._keys) > 1:
                raise ValueError("a Keyring with several keys needs active= (the key id "
                                 "new objects are encrypted under)")
            self._active = next(iter(self._keys))
        else:
            self._active = _key_id_bytes(active)
            if self._active not in self._keys:
                raise ValueError(f"active key id {show_key_id(self._active)} is not "
                                 "in the keyring")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, "
                             f"got {algorithm!r}")
        self._algorithm = ALGORITHMS[algorithm]

    @property
    def key_ids(self) -> tuple[str | bytes, ...]:
        """The key ids, as given."""
        return tuple(self._ids.values())

    @property
    def active(self) -> str | bytes:
        """The key id new objects are encrypted under."""
        return self._ids[self._active]

    @property
    def algorithm(self) -> str:
        """The algorithm new objects are encrypted with."""
        return _ALGORITHM_NAMES[self._algorithm]

    def __contains__(self, key_id: object) -> bool:
        try:
            return _key_id_bytes(key_id) in self._keys
        except (TypeError, ValueError):
            return False

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return (f"Keyring(key_ids={list(self.key_ids)!r}, active={self.active!r}, "
                f"algorithm={self.algorithm!r})")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("a Keyring holds keys and cannot be pickled or copied")

    def _for_writing(self) -> tuple[bytes, bytes, int]:
        """(key id, key, algorithm id) for a new object."""
        return self._active, self._keys[self._active], self._algorithm

    def _lookup(self, key_id: bytes) -> bytes | None:
        return self._keys.get(key_id)

    def _open(self, header: Header, name: str) -> Aead:
        """The AEAD of the object ``header`` starts: its key looked up and
        checked; DecryptionError if the ring cannot read it."""
        master = self._keys.get(header.key_id)
        if master is None:
            raise DecryptionError(
                f"{name} is encrypted under key id {show_key_id(header.key_id)}, which is "
                f"not in the keyring (key ids: {', '.join(map(show_key_id, self._keys))})")
        key, check = derive_keys(master, header.salt, header.algorithm)
        if not hmac.compare_digest(check, header.key_check):
            raise DecryptionError(
                f"{name}: the keyring's key {show_key_id(header.key_id)} is not the key "
                "this object was encrypted under (wrong key, or a damaged header)")
        return make_aead(header.algorithm, key)

    # -- loaders ---------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: StrPath, *, active: str | bytes | None = None,
                  algorithm: str = "aes-256-gcm") -> Keyring:
        """Load a key file: one ``KEY_ID KEY`` per line, the key as 64 hex digits
        or as base64 of 32 bytes; blank lines and ``#`` comments are ignored.

        The last key listed is the active one unless ``active`` names another,
        so rotating is appending a line.  Errors name the file and line, never
        a key.  Keep the file readable by its owner only.
        """
        name = os.fspath(path)
        try:
            text = Path(name).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"key file {name} is not UTF-8 text") from None
        keys: dict[str, bytes] = {}
        last = None
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            match = _KEY_LINE_RE.fullmatch(line)
            if match is None:
                raise ValueError(f"key file {name} line {number}: expected 'KEY_ID KEY'")
            key_id, encoded = match.groups()
            key = _decode_key(encoded)
            if key is None:
                raise ValueError(f"key file {name} line {number}: the key must be 64 hex "
                                 "digits or the base64 of 32 bytes")
            if key_id in keys:
                raise ValueError(f"key file {name} line {number}: key id {key_id!r} "
                                 "is listed twice")
            keys[key_id] = key
            last = key_id
        if last is None:
            raise ValueError(f"key file {name} holds no key")
        return cls(keys, active=last if active is None else active, algorithm=algorithm)

    @classmethod
    def from_env(cls, variable: str = KEY_FILE_ENV, *, algorithm: str = "aes-256-gcm"
                 ) -> Keyring | None:
        """:meth:`from_file` of the key file named by the environment variable
        ``variable`` (default ``STREAMSTORE_KEY_FILE``); ``None`` if it is unset or empty."""
        path = os.environ.get(variable)
        if not path:
            return None
        return cls.from_file(path, algorithm=algorithm)


def _decode_key(text: str) -> bytes | None:
    if _HEX_KEY_RE.fullmatch(text):
        return bytes.fromhex(text)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == KEY_SIZE else None


def key_line(key_id: str, key: bytes) -> str:
    """The key-file line for ``key`` (hex)."""
    _key_id_bytes(key_id)
    if not key_id or any(c.isspace() for c in key_id) or key_id.startswith("#"):
        raise ValueError("a key id in a key file must not contain whitespace or start with #")
    if len(key) != KEY_SIZE:
        raise ValueError(f"keys must be {KEY_SIZE} bytes")
    return f"{key_id} {key.hex()}"

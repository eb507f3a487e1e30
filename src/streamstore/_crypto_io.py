"""The I/O around the segmented AEAD format: :class:`EncryptedSink` (encrypt
into any sink) and :func:`open_decrypted` (a seekable, constant-memory reader)."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable
from dataclasses import replace
from typing import Any, BinaryIO, cast

from cryptography.exceptions import InvalidTag

from ._core import check_sink
from ._crypto import (
    MAX_HEADER,
    NONCE_STRUCT,
    SEGMENT_SIZE,
    TAG_SIZE,
    Aead,
    Keyring,
    Layout,
    SegmentEncryptor,
    ciphertext_size,
    parse_header,
    show_key_id,
)
from ._errors import DecryptionError, storage_error
from ._types import Sink, StoreResult, StrPath

__all__ = ["DecryptedReader", "EncryptedSink", "open_decrypted"]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class EncryptedSink:
    """A sink that encrypts into another sink: ``EncryptedSink(inner, keyring)``.

    Use it as any ``dest``: ``store_from_reader(source, EncryptedSink(FileSink(path),
    keyring))``.  The ingest still counts, hashes and checks the
    **plaintext** (the ``StoreResult``'s ``size`` and ``sha256`` are the
    plaintext's; limits and hooks see plaintext), while ``inner`` receives
    the encrypted object (docs/encryption-format.md) under the keyring's
    active key: the header when the store starts, then whole 64 KiB segments
    (the last one held back until the end of the stream), and the final
    segment in ``prepare``.  ``inner.start`` is told the ciphertext size
    when the plaintext size is declared.  ``prepare``, ``commit``, ``abort``
    and ``committed`` go to ``inner``; the result ``inner`` is given has the
    ``size`` of the ciphertext it received and the plaintext's ``sha256``
    (the name a content-addressed sink files it under), and the results
    handed back have the plaintext's size again.
    """

    def __init__(self, inner: Sink, keyring: Keyring) -> None:
        self.inner = check_sink(inner)
        """The sink that receives the ciphertext."""
        if not isinstance(keyring, Keyring):
            raise TypeError(f"keyring must be a streamstore.crypto.Keyring, "
                            f"got {type(keyring).__name__}")
        self.keyring = keyring
        self._enc: SegmentEncryptor | None = None
        self._started = False
        self._size = 0  # the plaintext size, once prepared
        self._update: Callable[[memoryview], None] = self._not_started

    def __repr__(self) -> str:
        return f"EncryptedSink({self.inner!r}, {self.keyring!r})"

    @staticmethod
    def _not_started(chunk: memoryview) -> None:
        raise RuntimeError("EncryptedSink.write() before start() or after prepare()/abort()")

    @property
    def ciphertext_size(self) -> int:
        """Encrypted bytes handed to the inner sink so far."""
        return 0 if self._enc is None else self._enc.written

    @property
    def committed(self) -> StoreResult | None:
        """The inner sink's ``committed`` (see :class:`~streamstore.Sink`)."""
        committed = getattr(self.inner, "committed", None)
        return self._plain(committed) if isinstance(committed, StoreResult) else None

    def _cipher(self, result: StoreResult) -> StoreResult:
        self._size = result.size
        return replace(result, size=self.ciphertext_size)

    def _plain(self, result: StoreResult) -> StoreResult:
        return replace(result, size=self._size)

    def start(self, expected_size: int | None = None) -> None:
        """Start the inner sink (told the ciphertext size) and write the header."""
        if self._started:
            raise RuntimeError("EncryptedSink is single-use: start() was called")
        self._started = True
        key_id, key, algorithm = self.keyring._for_writing()
        start = getattr(self.inner, "start", None)
        if start is not None:
            start(None if expected_size is None else ciphertext_size(expected_size, len(key_id)))
        # inner.write is bound after inner.start, which may replace it (a test seam does).
        enc = self._enc = SegmentEncryptor(key, key_id, algorithm, self.inner.write)
        enc.begin()
        self._update = enc.update

    def write(self, chunk: memoryview) -> None:
        """Encrypt ``chunk``: whole segments go to the inner sink as they fill."""
        self._update(chunk)

    def prepare(self, result: StoreResult) -> StoreResult:
        """Seal the final segment, then the inner sink's ``prepare`` (if it has one)."""
        if self._enc is None:
            raise RuntimeError("EncryptedSink.prepare() before start()")
        self._update = self._not_started
        self._enc.finish()
        prepare = getattr(self.inner, "prepare", None)
        if prepare is None:
            return result
        return self._plain(cast(StoreResult, prepare(self._cipher(result))))

    def commit(self, result: StoreResult) -> StoreResult:
        """The inner sink's ``commit``."""
        return self._plain(self.inner.commit(self._cipher(result)))

    def abort(self) -> None:
        """The inner sink's ``abort``."""
        self._update = self._not_started
        self.inner.abort()


# -- reading ---------------------------------------------------------------------


class _Positional:
    """Reads ``n`` bytes at an offset of a regular file with ``os.pread``."""

    def __init__(self, fd: int, owner: Any, name: str) -> None:
        self.fd = fd
        self.owner = owner  # what to close: the file object, or None (close fd)
        self.name = name

    def size(self) -> int:
        try:
            return os.fstat(self.fd).st_size
        except OSError as exc:
            raise storage_error(exc, dest=None, message=f"cannot inspect {self.name}") from exc

    def read_at(self, offset: int, n: int) -> bytes:
        try:
            data = os.pread(self.fd, n, offset)
            while len(data) < n:
                more = os.pread(self.fd, n - len(data), offset + len(data))
                if not more:
                    break
                data += more
        except OSError as exc:
            raise storage_error(exc, dest=None, message=f"cannot read {self.name}") from exc
        return data

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        if self.owner is not None:
            self.owner.close()
        else:
            os.close(fd)


class _Seeking:
    """Reads ``n`` bytes at an offset of any seekable binary file (seek, read)."""

    def __init__(self, f: BinaryIO, name: str) -> None:
        self.f = f
        self.name = name

    def size(self) -> int:
        size = getattr(self.f, "size", None)
        if isinstance(size, int) and not isinstance(size, bool):
            return size
        return self.f.seek(0, os.SEEK_END)

    def read_at(self, offset: int, n: int) -> bytes:
        f = self.f
        f.seek(offset)
        data = f.read(n) or b""
        while len(data) < n:
            more = f.read(n - len(data))
            if not more:
                break
            data += more
        return data

    def close(self) -> None:
        self.f.close()


def _source_of(source: StrPath | BinaryIO, name: str | None) -> _Positional | _Seeking:
    if isinstance(source, (str, bytes, os.PathLike)):
        path = os.fsdecode(os.fspath(source))
        try:
            fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        except OSError as exc:
            raise storage_error(exc, dest=path, message=f"cannot open {path}") from exc
        return _Positional(fd, None, name or path)
    if not callable(getattr(source, "read", None)):
        raise TypeError(f"open_decrypted() takes a path or a binary file, "
                        f"got {type(source).__name__}")
    shown = name or str(getattr(source, "name", "") or "encrypted stream")
    try:
        fd = source.fileno()
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return _Positional(fd, source, shown)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        pass
    return _Seeking(source, shown)


class _DecryptingRaw(io.RawIOBase):
    """The raw reader under :class:`DecryptedReader`: whole segments decrypted
    and authenticated one at a time into one reused buffer."""

    def __init__(self, source: _Positional | _Seeking, keyring: Keyring) -> None:
        super().__init__()
        self._source = source
        name = self.name = source.name
        start = source.read_at(0, MAX_HEADER)  # one request for any header
        self.header = parse_header(start, name)
        self._aead: Aead = keyring._open(self.header, name)
        # A size no writer produces (truncated inside a segment, bytes appended)
        # is reported by the first read: like a bad segment, it is damage, and
        # a caller can tell it from a key that does not fit, raised here.
        self._valid: Layout | None = None
        self._broken = ""
        try:
            self._valid = Layout(len(self.header.raw), source.size(), name)
        except DecryptionError as exc:
            self._broken = str(exc)
        self._open_into: Callable[[bytes, bytes, bytes, Any], int] | None = getattr(
            self._aead, "decrypt_into", None)
        self._aad = self.header.raw
        self._prefix = self.header.nonce_prefix
        self._plain = memoryview(bytearray(SEGMENT_SIZE))
        self._cached = -1  # index of the segment in _plain
        self._cached_len = 0
        self._final_ok = False
        self._pos = 0

    # -- the segments -------------------------------------------------------------

    @property
    def _layout(self) -> Layout:
        if self._valid is None:
            raise DecryptionError(self._broken)
        return self._valid

    def _load(self, index: int) -> None:
        """Decrypt and authenticate segment ``index`` into the buffer."""
        if index == self._cached:
            return
        self._cached = -1  # the buffer may hold unauthenticated bytes until the end
        layout = self._layout
        last = index == layout.count - 1
        offset, length = layout.segment(index)
        data = self._source.read_at(offset, length)
        if len(data) != length:
            raise DecryptionError(f"{self.name} is truncated (it shrank while being read)")
        nonce = NONCE_STRUCT.pack(self._prefix, index, last)
        size = length - TAG_SIZE
        try:
            if self._open_into is not None:
                self._open_into(nonce, data, self._aad, self._plain[:size])
            else:  # older cryptography has no decrypt_into
                self._plain[:size] = self._aead.decrypt(nonce, data, self._aad)
        except InvalidTag as exc:
            what = "the final segment" if last else f"segment {index}"
            raise DecryptionError(
                f"{self.name}: {what} (of {layout.count}) failed authentication: the object "
                "was damaged, tampered with, truncated, extended or reordered"
            ) from exc
        self._cached = index
        self._cached_len = size
        if last:
            self._final_ok = True

    def _check_final(self) -> None:
        if not self._final_ok:
            self._load(self._layout.count - 1)

    @property
    def size(self) -> int:
        """The plaintext size, from the object's size (authenticated by the
        final segment when a read reaches the end or a seek is relative to it);
        DecryptionError if no complete object has that size."""
        return self._layout.size

    # -- io.RawIOBase ---------------------------------------------------------------

    def readable(self) -> bool:
        """Always ``True``."""
        return True

    def seekable(self) -> bool:
        """Always ``True``."""
        return True

    def tell(self) -> int:
        """The plaintext position."""
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move to a plaintext position; relative to the end authenticates the final segment."""
        self._checkClosed()
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            self._check_final()
            pos = self._layout.size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` with plaintext from whole authenticated segments; 0 at
        the end, once the final segment is authenticated."""
        self._checkClosed()
        view = memoryview(buffer).cast("B")
        want = len(view)
        pos = self._pos
        end = self._layout.size
        if pos >= end:
            self._check_final()
            return 0
        got = 0
        plain = self._plain
        # Whole segments while the buffer has room for one: a small read
        # fetches one segment, a large one many.
        while got < want and pos < end and (got == 0 or want - got >= SEGMENT_SIZE):
            index = pos // SEGMENT_SIZE
            try:
                self._load(index)
            except DecryptionError:
                if got:
                    break  # hand over what was authenticated; the next read raises
                raise
            start = pos - index * SEGMENT_SIZE
            n = min(self._cached_len - start, want - got)
            view[got : got + n] = plain[start : start + n]
            got += n
            pos += n
        self._pos = pos
        return got

    def readall(self) -> bytes:
        """The rest of the plaintext."""
        left = self._layout.size - self._pos
        if left <= 0:
            self._check_final()
            return b""
        out = bytearray(left)
        view = memoryview(out)
        got = 0
        while got < left:
            n = self.readinto(view[got:])
            if not n:  # pragma: no cover - the layout fixes the size
                break
            got += n
        self._check_final()
        return bytes(out[:got])

    def close(self) -> None:
        """Close the underlying file."""
        if not self.closed:
            try:
                self._source.close()
            finally:
                self._cached = -1
                super().close()


class DecryptedReader(io.BufferedReader):
    """A seekable binary reader of an encrypted object's plaintext (constant
    memory); returned by :func:`open_decrypted` and an encrypted
    ``ContentStore.open()``.

    Reads decrypt whole 64 KiB segments with the one-shot AEAD: a segment that
    fails authentication raises :class:`~streamstore.DecryptionError` before
    any of its bytes are returned.  Reading up to the end, or seeking
    relative to it, authenticates the final segment, so a truncated object
    never reads as a shorter complete one.  ``size`` is the plaintext size.
    """

    def __init__(self, raw: _DecryptingRaw) -> None:
        super().__init__(raw, SEGMENT_SIZE)
        self._decrypting = raw

    @property
    def size(self) -> int:
        """The plaintext size in bytes (from the stored size; see the class docstring)."""
        return self._decrypting.size

    @property
    def key_id(self) -> str | bytes:
        """The id of the key the object is encrypted under (``str`` if it is UTF-8)."""
        raw = self._decrypting.header.key_id
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw

    @property
    def algorithm(self) -> str:
        """``"aes-256-gcm"`` or ``"chacha20-poly1305"``."""
        return self._decrypting.header.algorithm_name

    def __repr__(self) -> str:
        return (f"<streamstore.crypto.DecryptedReader {self._decrypting.name!r} "
                f"key_id={show_key_id(self._decrypting.header.key_id)}>")


def open_decrypted(source: StrPath | BinaryIO, keyring: Keyring, *,
                   name: str | None = None) -> DecryptedReader:
    """Open an encrypted object for reading its plaintext: a seekable
    :class:`DecryptedReader` that decrypts in constant memory.

    ``source`` is a path, or a binary file holding the object from offset 0
    (the reader takes it over and closes it).  A regular file is read with
    ``os.pread``; any other seekable file with ``seek`` and ``read`` (a
    ranged reader over object storage, say), one segment per request.  The
    header is read and the key checked at once: :class:`~streamstore.DecryptionError`
    if it is not an encrypted object, or the keyring has no key of its id or
    holds a different key under that id.  Damage to the rest (a segment that
    fails authentication, a size no complete object has) raises
    :class:`~streamstore.DecryptionError` from the read that meets it (or
    from ``size``).  ``name`` is what error messages call it.
    """
    if not isinstance(keyring, Keyring):
        raise TypeError(f"keyring must be a streamstore.crypto.Keyring, "
                        f"got {type(keyring).__name__}")
    src = _source_of(source, name)
    try:
        return DecryptedReader(_DecryptingRaw(src, keyring))
    except BaseException:
        src.close()
        raise

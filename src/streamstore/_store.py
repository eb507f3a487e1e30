"""ContentStore: content addressing over a backend (local directory, S3, ...).

The store is the policy -- objects named by their SHA-256, verified on the
way in, stored once, metadata set once -- and a backend does the storage.
A put runs the one ingest core into the backend's sink, which publishes the
bytes at their content address when every check passed.  The local backend
is :class:`~streamstore._local.LocalBackend`; ``streamstore.s3.S3Backend``
is the object-storage one.

A backend provides (duck-typed; see docs/design.md)::

    location: str                                   # where the store is
    sink(*, metadata: bytes | None, expected_sha256: str | None) -> Sink
        # commit publishes at result.sha256; afterwards .created (bool) and
        # .metadata (dict) describe the stored object
    stat(digest) -> int                             # size; ObjectNotFoundError
    contains(digest) -> bool
    metadata(digest) -> dict                        # {} when none
    open(digest) -> BinaryIO                        # seekable, constant memory
    path(digest) -> Path | None                     # local path, if any
    digests() -> Iterator[str]
    delete(digest) -> bool
    sweep(older_than: float) -> int
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from ._async import afail, arun_ingest
from ._core import Ingest, split_options
from ._errors import DecryptionError, InvalidDigestError, ObjectNotFoundError
from ._local import LocalBackend
from ._reader import VerifyingReader
from ._sync import Writer, run_ingest
from ._types import AsyncSource, PutOptions, Sink, Source, StoreResult, StrPath

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .crypto import DecryptedReader, Keyring

__all__ = [
    "Backend",
    "ContentStore",
    "ObjectInfo",
    "ObjectWriter",
    "check_digest",
    "encode_metadata",
]

_DIGEST_RE = re.compile(r"[0-9a-fA-F]{64}")
_VERIFY_CHUNK = 1024 * 1024
_PUT_EXTRA = frozenset({"metadata"})


def check_digest(digest: object) -> str:
    """Return ``digest`` lowercased if it is exactly 64 hex characters.

    Raises :class:`InvalidDigestError` otherwise (``TypeError`` for a non-str),
    before anything touches the storage: a key can never name a path.
    """
    if not isinstance(digest, str):
        raise TypeError(f"object digest must be a str, got {type(digest).__name__}")
    if _DIGEST_RE.fullmatch(digest) is None:
        raise InvalidDigestError(digest=digest)
    return digest.lower()


def encode_metadata(metadata: object) -> bytes | None:
    """``metadata`` as UTF-8 JSON (sorted keys); TypeError if it is not a
    JSON-serializable mapping with str keys."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
    for key in metadata:
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be str, got {key!r}")
    try:
        text = json.dumps(dict(metadata), ensure_ascii=False, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be JSON-serializable: {exc}") from exc
    return text.encode("utf-8")


class Backend(Protocol):
    """Where a :class:`ContentStore` keeps its objects (see the module docstring)."""

    location: str

    def sink(self, *, metadata: bytes | None = None,
             expected_sha256: str | None = None) -> Sink: ...
    def stat(self, digest: str) -> int: ...
    def contains(self, digest: str) -> bool: ...
    def metadata(self, digest: str) -> dict[str, Any]: ...
    def open(self, digest: str) -> BinaryIO: ...
    def path(self, digest: str) -> Path | None: ...
    def digests(self) -> Iterator[str]: ...
    def delete(self, digest: str) -> bool: ...
    def sweep(self, older_than: float) -> int: ...


@dataclass(frozen=True)
class ObjectInfo:
    """A stored object: its ``sha256`` (lowercase hex, also its name), ``size``
    in bytes, local ``path`` (``None`` in object storage), ``metadata`` (``{}``
    when none was stored) and ``location`` (the path, or a URL).

    ``created`` is set by ``put``/``aput``: True if that put stored new bytes,
    False if the object was already there (it is then left as it was).
    """

    sha256: str
    size: int
    path: Path | None
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)
    location: str = ""
    created: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if not self.location and self.path is not None:
            object.__setattr__(self, "location", str(self.path))


class ObjectWriter:
    """A put you push bytes into: ``with store.open_writer() as w: w.write(data)``.

    The :class:`~streamstore.Writer` of :meth:`ContentStore.open_writer`:
    leaving the block normally stores the object and sets ``result`` to its
    :class:`ObjectInfo`; leaving it with an exception stores nothing.  After a
    failed :meth:`write` the writer is aborted and further writes raise.
    Not thread-safe.
    """

    def __init__(self, ingest: Ingest, info: Callable[[StoreResult], ObjectInfo]) -> None:
        self._writer = Writer(ingest)
        self._info = info
        self.result: ObjectInfo | None = None
        """The stored object's :class:`ObjectInfo`, once the block exited cleanly."""

    @property
    def bytes_written(self) -> int:
        """Bytes accepted so far."""
        return self._writer.bytes_written

    def __enter__(self) -> ObjectWriter:
        self._writer.__enter__()
        return self

    def write(self, data: Any) -> int:
        """Take bytes-like ``data`` (checked, hashed and written before this
        returns); returns ``len(data)`` in bytes."""
        return self._writer.write(data)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._writer.__exit__(exc_type, exc, tb)
        finally:
            stored = self._writer.result
            if stored is not None and self.result is None:
                self.result = self._info(stored)

    def __repr__(self) -> str:
        return repr(self._writer).replace("streamstore.Writer", "streamstore.ObjectWriter")


class ContentStore:
    """A content-addressed blob store: in the directory ``root``, or in any backend
    (``ContentStore(S3Backend(client, bucket))``).

    Each object is stored once, named by its SHA-256, verified on the way in,
    read-only, with optional JSON metadata set by the first put that brings
    some.  Safe under concurrent writers (threads and processes) and crashes:
    an object only ever appears complete.

    For a local ``root``: its layout (``objects/``, ``tmp/``) is created if
    missing (``root``'s parent must exist); ``durable=False`` skips the fsyncs
    (faster, not crash-safe); ``create=False`` opens an existing store and
    creates nothing (:class:`StorageError` if ``root`` is not a store);
    ``reserve`` (bytes) refuses a put whose declared ``expected_size`` does not
    fit with that much to spare, with :class:`DiskFullError` before a byte is
    read (see :class:`FileSink`).

    ``encryption`` (a :class:`streamstore.crypto.Keyring`) stores every object
    encrypted under the keyring's active key (``streamstore.crypto``), still
    named by its plaintext's SHA-256: ``open``, ``info().size`` and ``verify``
    see the plaintext, ``path`` is the encrypted file.  A store is either
    encrypted or not: objects an unencrypted store wrote do not open in an
    encrypted one.
    """

    def __init__(self, root: StrPath | Backend, *, durable: bool = True,
                 create: bool = True, reserve: int = 0,
                 encryption: Keyring | None = None) -> None:
        if encryption is not None:
            from .crypto import Keyring

            if not isinstance(encryption, Keyring):
                raise TypeError(f"encryption must be a streamstore.crypto.Keyring, "
                                f"got {type(encryption).__name__}")
        self.encryption = encryption
        """The keyring of an encrypted store (``None``: objects are stored as they are)."""
        if isinstance(root, (str, bytes, os.PathLike)):
            if isinstance(root, bytes):
                root = os.fsdecode(root)
            raw = os.fspath(root)
            if raw == "":
                raise ValueError("root must be a directory path, got ''")
            if "\0" in raw:
                raise ValueError("root contains a NUL byte")
            self.root: Path | None = Path(raw)
            if not isinstance(reserve, int) or isinstance(reserve, bool) or reserve < 0:
                raise ValueError(f"reserve must be an int >= 0 (bytes), got {reserve!r}")
            self.backend: Any = LocalBackend(Path(raw), durable=bool(durable), create=create,
                                             reserve=reserve)
        elif callable(getattr(root, "sink", None)) and callable(getattr(root, "open", None)):
            self.root = None
            self.backend = root
        else:
            raise TypeError(f"root must be a directory path or a store backend, "
                            f"got {type(root).__name__}")
        self.durable = bool(getattr(self.backend, "durable", durable))
        self.location: str = self.backend.location
        """Where the store is: its root directory, or a URL."""

    def __repr__(self) -> str:
        if self.root is not None:
            return f"ContentStore({str(self.root)!r}, durable={self.durable})"
        return f"ContentStore({self.backend!r})"

    # -- put ----------------------------------------------------------------------

    def _ingest(self, options: Mapping[str, Any], what: str) -> tuple[Ingest, Sink]:
        ingest_options, extra = split_options(options, _PUT_EXTRA, what)
        meta = encode_metadata(extra.get("metadata"))
        expected = ingest_options.get("expected_sha256")
        if expected is not None and self.encryption is None:
            expected = str(expected)
        else:  # the backend receives ciphertext: the plaintext's digest is not its digest
            expected = None
        sink = self.backend.sink(metadata=meta, expected_sha256=expected)
        outer = sink
        if self.encryption is not None:
            from .crypto import EncryptedSink

            outer = EncryptedSink(sink, self.encryption)
        return Ingest(outer, ingest_options, dest=self.root), sink

    def _info(self, sink: Any, result: StoreResult) -> ObjectInfo:
        return ObjectInfo(result.sha256, result.size, result.path,
                          dict(getattr(sink, "metadata", {}) or {}), result.location,
                          bool(getattr(sink, "created", False)))

    def put(self, source: Source, **options: Unpack[PutOptions]) -> ObjectInfo:
        """Store ``source`` under its SHA-256 and return its :class:`ObjectInfo`.

        Sources and options are those of :func:`store_from_reader` (without
        the file options ``overwrite``/``durable``/``mode``), with the same
        checks, hooks (``on_finish`` sees the object's final location), errors
        and ``errors=`` mapping.  Content already stored is deduplicated: the
        stream is still read and checked in full, then the existing object
        wins and ``created`` is False.  ``metadata`` (a JSON-serializable
        mapping, checked before any byte is read) is stored with the object if
        it has none yet: the first metadata given wins, later puts never
        replace it; ``ObjectInfo.metadata`` shows what is stored.
        """
        ingest, sink = self._ingest(options, "ContentStore.put()")
        try:
            return self._info(sink, run_ingest(ingest, source))
        except BaseException as exc:
            raise ingest.fail(exc)  # noqa: B904 - see run_ingest

    async def aput(self, source: AsyncSource, **options: Unpack[PutOptions]) -> ObjectInfo:
        """Async twin of :meth:`put`, on the :func:`astore_from_reader` machinery:
        the source is read on the event loop, all storage work runs in a worker thread."""
        ingest, sink = self._ingest(options, "ContentStore.aput()")
        try:
            return self._info(sink, await arun_ingest(ingest, source))
        except BaseException as exc:
            raise await afail(ingest, exc)  # noqa: B904 - see run_ingest

    def open_writer(self, **options: Unpack[PutOptions]) -> ObjectWriter:
        """A put you push bytes into, with the options of :meth:`put`::

            with store.open_writer(limit=10 * 2**20, metadata={"name": "a.pdf"}) as w:
                for piece in pieces:
                    w.write(piece)
            print(w.result.sha256)

        Every guarantee of :meth:`put` holds: limits and hooks see every
        byte, and the object is stored when the block exits cleanly --
        nothing is when it raises.  ``w.result`` is the :class:`ObjectInfo`.
        """
        ingest, sink = self._ingest(options, "ContentStore.open_writer()")
        return ObjectWriter(ingest, lambda result: self._info(sink, result))

    # -- read -----------------------------------------------------------------------

    def info(self, sha256: str) -> ObjectInfo:
        """The :class:`ObjectInfo` of a stored object; :class:`ObjectNotFoundError` if absent."""
        digest = check_digest(sha256)
        size = self._size(digest)
        path = self.backend.path(digest)
        return ObjectInfo(digest, size, path, self.backend.metadata(digest),
                          self._location(digest, path))

    def size(self, sha256: str) -> int:
        """The size in bytes of a stored object (the plaintext's in an encrypted
        store), without reading its metadata; :class:`ObjectNotFoundError` if absent."""
        return self._size(check_digest(sha256))

    def _size(self, digest: str) -> int:
        size: int = self.backend.stat(digest)
        if self.encryption is not None:
            with self._decrypt(digest, self.backend.open(digest),
                               self.backend.path(digest)) as reader:
                size = reader.size
        return size

    def _location(self, digest: str, path: Path | None) -> str:
        if path is not None:
            return str(path)
        return f"{self.location.rstrip('/')}/{digest}"

    def _decrypt(self, digest: str, raw: BinaryIO, path: Path | None) -> DecryptedReader:
        from .crypto import open_decrypted

        assert self.encryption is not None
        return open_decrypted(raw, self.encryption, name=self._location(digest, path))

    def open(self, sha256: str, *, verify: bool = False) -> BinaryIO:
        """Open a stored object for reading (binary, read-only, a context manager).

        Objects only ever appear complete, so this never returns a partial one.
        The reader is seekable and reads in constant memory.  With
        ``verify=True`` it checks the SHA-256 as it reads instead (not
        seekable): the read that would return the last bytes raises
        :class:`HashMismatchError` if the stored bytes no longer match.
        """
        digest = check_digest(sha256)
        raw = self.backend.open(digest)
        if self.encryption is not None:
            raw = self._decrypt(digest, raw, self.backend.path(digest))
        if not verify:
            return raw  # type: ignore[no-any-return]
        try:
            size = _size_of(raw)
        except BaseException:
            raw.close()
            raise
        reader = VerifyingReader(raw, size, digest, dest=self.backend.path(digest))
        return io.BufferedReader(reader, _VERIFY_CHUNK)

    def path(self, sha256: str) -> Path:
        """The local path of a stored object (read-only; :class:`ObjectNotFoundError`
        if absent; ``TypeError`` for a store that is not on a local filesystem)."""
        digest = check_digest(sha256)
        self.backend.stat(digest)
        path = self.backend.path(digest)
        if path is None:
            raise TypeError(f"{self!r} is not on a local filesystem: objects have no path")
        return Path(path)

    def __contains__(self, sha256: object) -> bool:
        return bool(self.backend.contains(check_digest(sha256)))

    def __iter__(self) -> Iterator[str]:
        """The digests of all stored objects (in no particular order)."""
        return iter(self.backend.digests())

    def __len__(self) -> int:
        return sum(1 for _ in self)

    # -- maintenance ----------------------------------------------------------------

    def delete(self, sha256: str) -> bool:
        """Remove an object and its metadata; False if it was not stored.

        A put racing with the delete leaves either the complete object or none.
        """
        return bool(self.backend.delete(check_digest(sha256)))

    def verify(self, sha256: str | None = None) -> list[str]:
        """Re-hash one object (or all) and return the digests whose bytes no longer
        match their name, with constant memory.  An empty list means all is well.

        In an encrypted store, an object with a segment that fails
        authentication is corrupt too; one the keyring cannot open at all
        (another key id or key, a damaged header) raises
        :class:`DecryptionError`."""
        if sha256 is not None:
            digest = check_digest(sha256)
            self.backend.stat(digest)
            digests: Iterator[str] | list[str] = [digest]
        else:
            digests = iter(self)
        buffer = memoryview(bytearray(_VERIFY_CHUNK))
        corrupt = []
        for digest in digests:
            actual = self._hash(digest, buffer)
            if actual is not None and actual != digest:
                corrupt.append(digest)
        return corrupt

    def _hash(self, digest: str, buffer: memoryview) -> str | None:
        hasher = hashlib.sha256()
        try:
            f = self.backend.open(digest)
        except ObjectNotFoundError:
            return None  # deleted while verifying
        if self.encryption is not None:
            f = self._decrypt(digest, f, self.backend.path(digest))
        with f:
            update = hasher.update
            readinto = f.readinto
            try:
                while n := readinto(buffer):
                    update(buffer[:n])
            except DecryptionError:
                return "(fails authentication)"
        return hasher.hexdigest()

    def sweep(self, older_than: float = 3600.0) -> int:
        """Remove what crashed or abandoned puts left behind (temp files of dead
        writers older than ``older_than`` seconds; stale uploads in object
        storage); return how many.  A live writer's work is never removed."""
        if isinstance(older_than, bool) or not isinstance(older_than, (int, float)):
            raise TypeError(f"older_than must be a number of seconds, got {older_than!r}")
        if older_than < 0:
            raise ValueError(f"older_than must be >= 0, got {older_than}")
        return int(self.backend.sweep(older_than))


def _size_of(raw: BinaryIO) -> int:
    size = getattr(raw, "size", None)
    if isinstance(size, int):
        return size
    try:
        return os.fstat(raw.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        end = raw.seek(0, os.SEEK_END)
        raw.seek(0)
        return end

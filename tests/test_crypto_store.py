"""An encrypted ContentStore end to end: objects stored encrypted, addressed by
the plaintext's SHA-256; open/info/verify see the plaintext; dedupe,
metadata, rotation; a backend that is not a local directory."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamstore import (
    ContentStore,
    DecryptionError,
    HashMismatchError,
    ObjectNotFoundError,
    StoreResult,
    TooLargeError,
)
from streamstore._crypto import SEGMENT_SIZE, ciphertext_size
from streamstore._pending import is_temp_name
from streamstore.crypto import DecryptedReader, Keyring, generate_key, open_decrypted

KEY = generate_key()
RING = Keyring({"main": KEY})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def noise(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "store", durable=False, encryption=RING)


def test_put_open_info(store: ContentStore) -> None:
    plain = noise(2 * SEGMENT_SIZE + 99)
    info = store.put(plain, metadata={"name": "a.bin"})
    assert info.sha256 == sha(plain) and info.size == len(plain) and info.created
    assert info.metadata == {"name": "a.bin"}
    assert info.path == store.path(sha(plain))
    stored = info.path.read_bytes()  # type: ignore[union-attr]
    assert len(stored) == ciphertext_size(len(plain), 4)
    assert plain[:64] not in stored and plain[-64:] not in stored
    assert store.info(info.sha256) == info
    assert store.info(info.sha256).size == len(plain)
    with store.open(info.sha256) as f:
        assert isinstance(f, DecryptedReader)
        assert f.read() == plain
        f.seek(SEGMENT_SIZE - 3)
        assert f.read(6) == plain[SEGMENT_SIZE - 3 : SEGMENT_SIZE + 3]
    with store.open(info.sha256, verify=True) as f:
        assert f.read() == plain
    assert store.verify() == [] and store.verify(info.sha256) == []
    assert list(store) == [info.sha256] and info.sha256 in store and len(store) == 1


def test_dedupe_by_plaintext_digest(store: ContentStore) -> None:
    plain = b"same content twice"
    first = store.put(plain, metadata={"v": 1})
    stored = first.path.read_bytes()  # type: ignore[union-attr]
    second = store.put(io.BytesIO(plain), metadata={"v": 2})
    assert (second.sha256, second.created, second.metadata) == (first.sha256, False, {"v": 1})
    assert first.path.read_bytes() == stored  # type: ignore[union-attr]
    assert len(store) == 1
    assert not [n for _, _, files in os.walk(store.root) for n in files  # type: ignore[type-var]
                if is_temp_name(n)]


def test_checks_apply_to_the_plaintext(store: ContentStore) -> None:
    plain = noise(1000)
    assert store.put(plain, expected_sha256=sha(plain), expected_size=1000, limit=1000).created
    with pytest.raises(HashMismatchError):
        store.put(b"other", expected_sha256=sha(plain))
    with pytest.raises(TooLargeError):
        store.put(noise(SEGMENT_SIZE + 1), limit=SEGMENT_SIZE)
    assert list(store) == [sha(plain)]


def test_empty_object(store: ContentStore) -> None:
    info = store.put(b"")
    assert info.size == 0 and store.info(info.sha256).size == 0
    with store.open(info.sha256) as f:
        assert f.read() == b""
    assert store.verify() == []


def test_aput(store: ContentStore) -> None:
    plain = noise(3 * SEGMENT_SIZE)

    async def chunks() -> Any:
        for i in range(0, len(plain), 10_000):
            yield plain[i : i + 10_000]

    info = asyncio.run(store.aput(chunks()))
    assert info.sha256 == sha(plain) and info.created
    with store.open(info.sha256) as f:
        assert f.read() == plain


def _tamper(path: Path, offset: int) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_verify_and_open_detect_tampering(store: ContentStore) -> None:
    good = store.put(noise(5000, 2))
    bad = store.put(noise(2 * SEGMENT_SIZE + 5, 3))
    assert bad.path is not None
    _tamper(bad.path, bad.path.stat().st_size - 3)  # inside the final segment
    assert store.verify() == [bad.sha256]
    assert store.verify(good.sha256) == []
    with store.open(bad.sha256) as f:
        assert f.read(10) == noise(2 * SEGMENT_SIZE + 5, 3)[:10]  # authentic segment 0
        with pytest.raises(DecryptionError, match="final segment"):
            f.read()
    with store.open(bad.sha256, verify=True) as f, pytest.raises(DecryptionError):
        f.read()


def test_truncated_object_is_reported_by_verify(store: ContentStore) -> None:
    info = store.put(noise(3 * SEGMENT_SIZE, 4))
    assert info.path is not None
    os.chmod(info.path, 0o644)
    with open(info.path, "r+b") as f:
        f.truncate(info.path.stat().st_size - (SEGMENT_SIZE + 16))  # one whole segment gone
    assert store.verify() == [info.sha256]


def test_the_wrong_keyring_is_an_error_not_corruption(tmp_path: Path) -> None:
    root = tmp_path / "store"
    info = ContentStore(root, encryption=RING).put(b"payload")
    wrong_key = ContentStore(root, encryption=Keyring({"main": generate_key()}))
    with pytest.raises(DecryptionError, match="not the key"):
        wrong_key.verify()
    with pytest.raises(DecryptionError, match="not the key"):
        wrong_key.open(info.sha256)
    other_id = ContentStore(root, encryption=Keyring({"other": KEY}))
    with pytest.raises(DecryptionError, match="not in the keyring"):
        other_id.info(info.sha256)
    with pytest.raises(ObjectNotFoundError):
        other_id.open("0" * 64)
    # Without a keyring the store shows the encrypted bytes, which fail verify.
    plain_view = ContentStore(root)
    assert plain_view.verify() == [info.sha256]
    # And an unencrypted store's objects do not open in an encrypted view.
    raw = plain_view.put(b"stored in clear")
    with pytest.raises(DecryptionError, match="not a streamstore encrypted object"):
        ContentStore(root, encryption=RING).open(raw.sha256)


def test_rotation_in_a_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    old = ContentStore(root, encryption=Keyring({"2024": KEY})).put(b"old")
    new_key = generate_key()
    rotated = ContentStore(root, encryption=Keyring({"2024": KEY, "2025": new_key},
                                                    active="2025"))
    new = rotated.put(b"new")
    for info, key_id, plain in ((old, "2024", b"old"), (new, "2025", b"new")):
        with rotated.open(info.sha256) as f:
            assert isinstance(f, DecryptedReader)
            assert f.key_id == key_id and f.read() == plain
    assert rotated.verify() == []


def test_encryption_argument_is_checked(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="Keyring"):
        ContentStore(tmp_path, encryption={"k": KEY})  # type: ignore[arg-type]
    assert ContentStore(tmp_path).encryption is None


# -- a backend that is not a local directory ---------------------------------------------


class RangedReader(io.RawIOBase):
    """A seekable reader without a file descriptor, as object storage gives."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.size = len(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = [offset, self.pos + offset, len(self.data) + offset][whence]
        return self.pos

    def readinto(self, buffer: Any) -> int:
        piece = self.data[self.pos : self.pos + len(buffer)]
        buffer[: len(piece)] = piece
        self.pos += len(piece)
        return len(piece)


class MemoryBackend:
    """A complete in-memory store backend (the duck-typed Backend protocol)."""

    location = "mem://bucket"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.expected: list[str | None] = []

    def sink(self, *, metadata: bytes | None = None,
             expected_sha256: str | None = None) -> MemorySink:
        self.expected.append(expected_sha256)
        return MemorySink(self, metadata)

    def stat(self, digest: str) -> int:
        if digest not in self.objects:
            raise ObjectNotFoundError(digest=digest)
        return len(self.objects[digest])

    def contains(self, digest: str) -> bool:
        return digest in self.objects

    def metadata(self, digest: str) -> dict[str, Any]:
        return dict(self.meta.get(digest, {}))

    def open(self, digest: str) -> Any:
        self.stat(digest)
        return io.BufferedReader(RangedReader(self.objects[digest]))

    def path(self, digest: str) -> None:
        return None

    def digests(self) -> Iterator[str]:
        return iter(list(self.objects))

    def delete(self, digest: str) -> bool:
        self.meta.pop(digest, None)
        return self.objects.pop(digest, None) is not None

    def sweep(self, older_than: float) -> int:
        return 0


class MemorySink:
    def __init__(self, backend: MemoryBackend, meta: bytes | None) -> None:
        self.backend = backend
        self.meta = meta
        self.buffer = bytearray()
        self.created = False
        self.metadata: dict[str, Any] = {}

    def write(self, chunk: memoryview) -> None:
        self.buffer.extend(chunk)

    def commit(self, result: StoreResult) -> StoreResult:
        import json

        backend = self.backend
        if result.sha256 not in backend.objects:
            backend.objects[result.sha256] = bytes(self.buffer)
            self.created = True
        if self.meta is not None and result.sha256 not in backend.meta:
            backend.meta[result.sha256] = json.loads(self.meta)
        self.metadata = backend.metadata(result.sha256)
        return StoreResult(None, result.size, result.sha256,
                           f"{backend.location}/{result.sha256}")

    def abort(self) -> None:
        self.buffer.clear()


def test_an_encrypted_store_over_another_backend() -> None:
    backend = MemoryBackend()
    store = ContentStore(backend, encryption=RING)
    plain = noise(3 * SEGMENT_SIZE + 10, 5)
    info = store.put(plain, metadata={"k": "v"}, expected_sha256=sha(plain))
    assert info.location == f"mem://bucket/{sha(plain)}" and info.path is None
    assert backend.expected == [None]  # the backend gets ciphertext: no digest to hold it to
    assert len(backend.objects[info.sha256]) == ciphertext_size(len(plain), 4)
    assert store.info(info.sha256).size == len(plain)
    with store.open(info.sha256) as f:
        f.seek(2 * SEGMENT_SIZE + 5)
        assert f.read(100) == plain[2 * SEGMENT_SIZE + 5 : 2 * SEGMENT_SIZE + 105]
        f.seek(0)
        assert f.read() == plain
    assert store.verify() == []
    assert not store.put(plain).created
    blob = bytearray(backend.objects[info.sha256])
    blob[200] ^= 1
    backend.objects[info.sha256] = bytes(blob)
    assert store.verify() == [info.sha256]
    with pytest.raises(DecryptionError, match=f"mem://bucket/{info.sha256}"):
        store.open(info.sha256).read()
    plain_store = ContentStore(MemoryBackend())
    plain_store.put(b"x", expected_sha256=sha(b"x"))
    assert plain_store.backend.expected == [sha(b"x")]


def test_reading_a_store_object_with_open_decrypted(store: ContentStore) -> None:
    info = store.put(b"readable elsewhere")
    with open_decrypted(store.path(info.sha256), RING) as f:
        assert f.read() == b"readable elsewhere"


@pytest.mark.parametrize("damage", ["cut-inside", "cut-at-boundary", "append-5", "append-16",
                                    "append-segment"])
def test_verify_lists_truncated_and_extended_objects(store: ContentStore, damage: str) -> None:
    good = store.put(b"fine")
    info = store.put(noise(3 * SEGMENT_SIZE, 6))
    assert info.path is not None
    os.chmod(info.path, 0o644)
    blob = info.path.read_bytes()
    changed = {
        "cut-inside": blob[:-100],
        "cut-at-boundary": blob[: -(SEGMENT_SIZE + 16)],
        "append-5": blob + b"12345",
        "append-16": blob + bytes(16),
        "append-segment": blob + blob[-(SEGMENT_SIZE + 16) :],
    }[damage]
    info.path.write_bytes(changed)
    assert store.verify() == [info.sha256]
    assert store.verify(good.sha256) == []
    with store.open(info.sha256) as f, pytest.raises(DecryptionError):
        f.read()

"""The encrypted format: the test vectors of docs/encryption-format.md, an
independent encoder written from the spec, the header and layout rules, and
the Keyring (validation, never showing a key, loaders, rotation)."""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import pickle
import re
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import streamstore
from streamstore import DecryptionError
from streamstore._crypto import (
    AES_256_GCM,
    CHACHA20_POLY1305,
    Layout,
    SegmentEncryptor,
    ciphertext_size,
    derive_keys,
    encrypt_bytes,
    header_size,
    key_line,
    parse_header,
)
from streamstore.crypto import Keyring, generate_key, open_decrypted

DOC = Path(__file__).resolve().parent.parent / "docs" / "encryption-format.md"

VECTOR_KEY = bytes(range(32))
VECTOR_KEY_ID = b"vector-key"
VECTOR_SALT = bytes(range(0x20, 0x40))
VECTOR_PREFIX = bytes.fromhex("a0a1a2a3a4a5a6")
ALGORITHM_IDS = {"aes-256-gcm": AES_256_GCM, "chacha20-poly1305": CHACHA20_POLY1305}


def pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def doc_vectors() -> list[tuple[str, int, int, str, str]]:
    """(algorithm, plaintext size, ciphertext size, SHA-256, full hex or '') from the doc."""
    rows = []
    for line in DOC.read_text().splitlines():
        m = re.fullmatch(r"\|\s*(aes-256-gcm|chacha20-poly1305)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|"
                         r"\s*`([0-9a-f]{64})`\s*\|", line.strip())
        if m:
            rows.append((m[1], int(m[2]), int(m[3]), m[4], ""))
    full = re.finditer(r"(aes-256-gcm|chacha20-poly1305), (\d+) bytes?:\n\n```\n([0-9a-f\n]+)```",
                       DOC.read_text())
    rows.extend((m[1], int(m[2]), -1, "", m[3].replace("\n", "")) for m in full)
    return rows


def doc_derived() -> dict[tuple[str, str], str]:
    out = {}
    for m in re.finditer(r"(aes-256-gcm|chacha20-poly1305) (segment key|key check): "
                         r"`([0-9a-f]{64})`", DOC.read_text()):
        out[(m[1], m[2])] = m[3]
    return out


def reference_encrypt(plaintext: bytes, algorithm: int) -> bytes:
    """The format written straight from the spec, independently of streamstore._crypto."""
    info = b"streamstore-aead-v1 "
    key = HKDF(SHA256(), 32, VECTOR_SALT, info + b"key" + bytes([algorithm])).derive(VECTOR_KEY)
    check = HKDF(SHA256(), 32, VECTOR_SALT,
                 info + b"check" + bytes([algorithm])).derive(VECTOR_KEY)
    header = (b"\x89SSE\r\n\x1a\n" + bytes([1, algorithm, len(VECTOR_KEY_ID)]) + VECTOR_KEY_ID
              + VECTOR_SALT + VECTOR_PREFIX + check)
    aead = AESGCM(key) if algorithm == AES_256_GCM else ChaCha20Poly1305(key)
    segments = [plaintext[i:i + 65536] for i in range(0, len(plaintext), 65536)] or [b""]
    out = [header]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        nonce = VECTOR_PREFIX + struct.pack(">I", index) + bytes([last])
        out.append(aead.encrypt(nonce, segment, header))
    return b"".join(out)


# -- vectors ------------------------------------------------------------------------


def test_the_doc_lists_vectors_for_both_algorithms_and_the_boundary_sizes() -> None:
    rows = doc_vectors()
    sizes = {(alg, n) for alg, n, *_ in rows}
    for alg in ALGORITHM_IDS:
        assert {(alg, n) for n in (0, 1, 65535, 65536, 65537, 131072)} <= sizes
    assert len(doc_derived()) == 4


@pytest.mark.parametrize("row", doc_vectors(), ids=lambda r: f"{r[0]}-{r[1]}")
def test_vector(row: tuple[str, int, int, str, str]) -> None:
    alg, n, size, digest, full = row
    ct = encrypt_bytes(pattern(n), VECTOR_KEY, VECTOR_KEY_ID, ALGORITHM_IDS[alg],
                       salt=VECTOR_SALT, nonce_prefix=VECTOR_PREFIX)
    if full:
        assert ct.hex() == full
    else:
        assert len(ct) == size
        assert hashlib.sha256(ct).hexdigest() == digest
    assert ct == reference_encrypt(pattern(n), ALGORITHM_IDS[alg])
    keyring = Keyring({VECTOR_KEY_ID: VECTOR_KEY})
    with open_decrypted(io.BytesIO(ct), keyring) as reader:
        assert reader.read() == pattern(n)
        assert reader.algorithm == alg


@pytest.mark.parametrize("alg", list(ALGORITHM_IDS))
def test_derived_keys_match_the_doc(alg: str) -> None:
    key, check = derive_keys(VECTOR_KEY, VECTOR_SALT, ALGORITHM_IDS[alg])
    derived = doc_derived()
    assert key.hex() == derived[(alg, "segment key")]
    assert check.hex() == derived[(alg, "key check")]


@pytest.mark.parametrize("pieces", [[], [1] * 10, [65535, 1, 65536], [65536, 65536], [7, 131065],
                                    [200000]])
def test_the_ciphertext_does_not_depend_on_how_the_plaintext_is_split(pieces: list[int]) -> None:
    data = pattern(200000)
    whole = encrypt_bytes(data, VECTOR_KEY, VECTOR_KEY_ID, AES_256_GCM, salt=VECTOR_SALT,
                          nonce_prefix=VECTOR_PREFIX)
    split = encrypt_bytes(data, VECTOR_KEY, VECTOR_KEY_ID, AES_256_GCM, salt=VECTOR_SALT,
                          nonce_prefix=VECTOR_PREFIX, pieces=pieces)
    assert split == whole


def test_fresh_salt_and_nonce_prefix_per_object() -> None:
    a = encrypt_bytes(b"same", VECTOR_KEY, VECTOR_KEY_ID, AES_256_GCM)
    b = encrypt_bytes(b"same", VECTOR_KEY, VECTOR_KEY_ID, AES_256_GCM)
    ha, hb = parse_header(a, "a"), parse_header(b, "b")
    assert ha.salt != hb.salt and ha.nonce_prefix != hb.nonce_prefix
    assert a[len(ha.raw):] != b[len(hb.raw):]


# -- header and layout ----------------------------------------------------------------


def test_header_round_trip_and_size() -> None:
    ct = encrypt_bytes(b"x", VECTOR_KEY, VECTOR_KEY_ID, CHACHA20_POLY1305, salt=VECTOR_SALT,
                       nonce_prefix=VECTOR_PREFIX)
    header = parse_header(ct, "x")
    assert header.key_id == VECTOR_KEY_ID
    assert header.salt == VECTOR_SALT and header.nonce_prefix == VECTOR_PREFIX
    assert header.algorithm_name == "chacha20-poly1305"
    assert header_size(ct[:11], "x") == len(header.raw) == 82 + len(VECTOR_KEY_ID)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda h: b"\x89SSX" + h[4:], "bad magic"),
    (lambda h: h[:8] + b"\x02" + h[9:], "version 2"),
    (lambda h: h[:9] + b"\x07" + h[10:], "algorithm id 7"),
    (lambda h: h[:10] + b"\x00" + h[11:], "key id length 0"),
    (lambda h: h[:10] + b"\x41" + h[11:], "key id length 65"),
    (lambda h: h[:40], "truncated header"),
    (lambda h: b"", "bad magic"),
])
def test_malformed_headers_are_refused(mutate: object, message: str) -> None:
    ct = encrypt_bytes(b"x", VECTOR_KEY, VECTOR_KEY_ID, AES_256_GCM)
    bad = mutate(ct)  # type: ignore[operator]
    with pytest.raises(DecryptionError, match=message):
        parse_header(bad, "obj")


@pytest.mark.parametrize("n", [0, 1, 65535, 65536, 65537, 131072, 131073, 10 * 65536 + 5])
def test_layout_inverts_ciphertext_size(n: int) -> None:
    total = ciphertext_size(n, 3)
    layout = Layout(85, total, "x")
    assert layout.size == n
    assert layout.count == max(1, -(-n // 65536))
    assert len(encrypt_bytes(bytes(n), VECTOR_KEY, b"abc", AES_256_GCM)) == total


@pytest.mark.parametrize("body", [0, 15, 65552 + 15, 65552 + 16, 2 * 65552 + 1])
def test_layout_refuses_sizes_no_encoder_produces(body: int) -> None:
    with pytest.raises(DecryptionError, match="truncated or has bytes appended"):
        Layout(90, 90 + body, "x")


def test_encryptor_refuses_use_after_finish() -> None:
    enc = SegmentEncryptor(VECTOR_KEY, b"k", AES_256_GCM, lambda v: None)
    enc.begin()
    enc.finish()
    with pytest.raises(RuntimeError):
        enc.update(memoryview(b"more"))
    with pytest.raises(RuntimeError):
        enc.finish()
    with pytest.raises(ValueError):
        SegmentEncryptor(VECTOR_KEY, b"k", AES_256_GCM, lambda v: None, salt=b"short")


# -- the keyring --------------------------------------------------------------------


def test_keyring_never_shows_its_keys() -> None:
    key = generate_key()
    ring = Keyring({"old": generate_key(), "new": key}, active="new")
    for text in (repr(ring), str(ring)):
        assert key.hex() not in text and repr(key) not in text
        assert base64.b64encode(key).decode() not in text
        assert "old" in text and "new" in text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(ring)
    with pytest.raises(TypeError):
        copy.copy(ring)
    with pytest.raises(TypeError):
        copy.deepcopy(ring)


def test_keyring_errors_never_show_a_key() -> None:
    key = bytes(range(31))
    with pytest.raises(ValueError) as info:
        Keyring({"k": key})
    assert key.hex() not in str(info.value) and repr(key) not in str(info.value)
    assert "32 bytes" in str(info.value)


def test_keyring_properties_and_validation() -> None:
    a, b = generate_key(), generate_key()
    ring = Keyring({"a": a, b"b": b}, active=b"b", algorithm="chacha20-poly1305")
    assert ring.key_ids == ("a", b"b")
    assert ring.active == b"b"
    assert ring.algorithm == "chacha20-poly1305"
    assert "a" in ring and b"a" in ring and "zz" not in ring and 3 not in ring
    assert len(ring) == 2
    assert Keyring({"only": a}).active == "only"
    with pytest.raises(ValueError, match="active"):
        Keyring({"a": a, "b": b})
    with pytest.raises(ValueError, match="not in the keyring"):
        Keyring({"a": a}, active="c")
    with pytest.raises(ValueError, match="at least one"):
        Keyring({})
    with pytest.raises(TypeError):
        Keyring([("a", a)])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Keyring({1: a})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="1 to 64"):
        Keyring({"x" * 65: a})
    with pytest.raises(ValueError, match="twice"):
        Keyring({"a": a, b"a": b}, active="a")
    with pytest.raises(TypeError, match="must be bytes"):
        Keyring({"a": a.hex()})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="algorithm"):
        Keyring({"a": a}, algorithm="aes-128-cbc")
    assert len(generate_key()) == 32 and generate_key() != generate_key()


def test_key_file_loader(tmp_path: Path) -> None:
    k1, k2, k3 = generate_key(), generate_key(), generate_key()
    path = tmp_path / "keys"
    path.write_text(f"# streamstore keys\n\n{key_line('2024', k1)}\n"
                    f"2025   {base64.b64encode(k2).decode()}\n  {key_line('2026', k3)}  \n")
    ring = Keyring.from_file(path)
    assert ring.key_ids == ("2024", "2025", "2026")
    assert ring.active == "2026"
    assert Keyring.from_file(str(path), active="2025").active == "2025"
    assert ring._lookup(b"2025") == k2


@pytest.mark.parametrize(("text", "message"), [
    ("", "holds no key"),
    ("# only a comment\n", "holds no key"),
    ("k1\n", "line 1: expected 'KEY_ID KEY'"),
    ("k1 zz\n", "line 1: the key must be"),
    (f"k1 {'ab' * 31}\n", "line 1: the key must be"),
    (f"k1 {'ab' * 32}\nk1 {'cd' * 32}\n", "line 2: key id 'k1' is listed twice"),
    (f"k1 {'ab' * 32} extra\n", "line 1: expected"),
])
def test_key_file_errors_name_the_line_never_the_key(tmp_path: Path, text: str,
                                                     message: str) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        Keyring.from_file(path)
    assert "ab" * 31 not in str(info.value)


def test_key_file_must_exist_and_be_text(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Keyring.from_file(tmp_path / "missing")
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not UTF-8"):
        Keyring.from_file(tmp_path / "bin")


def test_key_line_refuses_unusable_ids() -> None:
    with pytest.raises(ValueError):
        key_line("has space", generate_key())
    with pytest.raises(ValueError):
        key_line("#x", generate_key())
    with pytest.raises(ValueError):
        key_line("k", b"short")


def test_keyring_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    path = tmp_path / "keys"
    path.write_text(key_line("env", key) + "\n")
    monkeypatch.delenv("STREAMSTORE_KEY_FILE", raising=False)
    assert Keyring.from_env() is None
    monkeypatch.setenv("STREAMSTORE_KEY_FILE", "")
    assert Keyring.from_env() is None
    monkeypatch.setenv("STREAMSTORE_KEY_FILE", str(path))
    ring = Keyring.from_env()
    assert ring is not None and ring.active == "env"
    monkeypatch.setenv("OTHER_KEYS", str(path))
    other = Keyring.from_env("OTHER_KEYS", algorithm="chacha20-poly1305")
    assert other is not None and other.algorithm == "chacha20-poly1305"


def test_public_names_are_documented_and_the_core_does_not_import_crypto() -> None:
    import inspect
    import subprocess
    import sys

    from streamstore import crypto

    for name in crypto.__all__:
        value = getattr(crypto, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name
            assert value.__module__ == "streamstore.crypto", name
    code = ("import sys, streamstore; "
            "assert 'streamstore.crypto' not in sys.modules, 'imported'; "
            "assert 'cryptography' not in sys.modules, 'cryptography imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert streamstore.DecryptionError is DecryptionError


def test_the_paths_for_cryptography_without_encrypt_into_and_decrypt_into() -> None:
    """Older cryptography releases lack the ``*_into`` methods: the fallbacks
    produce and accept the same bytes."""
    data = pattern(2 * 65536 + 3)
    out: list[bytes] = []
    enc = SegmentEncryptor(VECTOR_KEY, VECTOR_KEY_ID, AES_256_GCM,
                           lambda v: out.append(bytes(v)), salt=VECTOR_SALT,
                           nonce_prefix=VECTOR_PREFIX)
    enc._seal_into = None
    enc.begin()
    enc.update(memoryview(data))
    enc.finish()
    blob = b"".join(out)
    assert blob == reference_encrypt(data, AES_256_GCM)
    with open_decrypted(io.BytesIO(blob), Keyring({VECTOR_KEY_ID: VECTOR_KEY})) as reader:
        reader.raw._open_into = None  # type: ignore[attr-defined]
        assert reader.read() == data
        tampered = bytearray(blob)
        tampered[-1] ^= 1
    with open_decrypted(io.BytesIO(bytes(tampered)),
                        Keyring({VECTOR_KEY_ID: VECTOR_KEY})) as reader:
        reader.raw._open_into = None  # type: ignore[attr-defined]
        with pytest.raises(DecryptionError):
            reader.read()

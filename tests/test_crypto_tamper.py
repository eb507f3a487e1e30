"""Every tamper class of issue 12 is detected, and no unauthenticated plaintext
is ever returned: bit flips, truncation, appended bytes, a tampered header,
reordered segments, segments swapped between objects, the wrong key."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest

from streamstore import DecryptionError, FileSink, store_from_reader
from streamstore._crypto import CIPHER_SEGMENT, SEGMENT_SIZE, parse_header
from streamstore.crypto import EncryptedSink, Keyring, generate_key, open_decrypted

KEY = generate_key()
RING = Keyring({"k1": KEY})


def noise(n: int) -> bytes:
    """``n`` pseudo-random bytes (a fresh seed per call: distinct objects)."""
    return random.Random(os.urandom(8)).randbytes(n)


def encrypt(data: bytes, ring: Keyring = RING) -> bytes:
    out = bytearray()

    class Collect:
        def write(self, chunk: memoryview) -> None:
            out.extend(chunk)

        def commit(self, result: object) -> object:
            return result

        def abort(self) -> None:
            out.clear()

    store_from_reader(data, EncryptedSink(Collect(), ring))  # type: ignore[arg-type]
    return bytes(out)


def read_all(blob: bytes, ring: Keyring = RING, chunk: int = 4096) -> bytes:
    """Read ``blob`` front to back in small reads; every byte returned is kept."""
    got = bytearray()
    with open_decrypted(io.BytesIO(blob), ring) as reader:
        while piece := reader.read(chunk):
            got.extend(piece)
    return bytes(got)


def assert_detected(blob: bytes, original: bytes, ring: Keyring = RING) -> None:
    """Reading ``blob`` raises DecryptionError, and what was returned before that
    is a prefix of ``original`` made of whole authentic segments."""
    got = bytearray()
    with pytest.raises(DecryptionError):
        with open_decrypted(io.BytesIO(blob), ring) as reader:
            while piece := reader.read(4096):
                got.extend(piece)
    assert original.startswith(bytes(got))
    assert len(got) % SEGMENT_SIZE == 0


def header_len(blob: bytes) -> int:
    return len(parse_header(blob, "x").raw)


def test_every_single_bit_flip_of_a_small_object_is_detected() -> None:
    original = b"attack at dawn, bring the small object"
    blob = encrypt(original)
    assert read_all(blob) == original
    for position in range(len(blob)):
        for bit in range(8):
            tampered = bytearray(blob)
            tampered[position] ^= 1 << bit
            assert_detected(bytes(tampered), original)


def test_bit_flips_in_every_segment_of_a_larger_object() -> None:
    original = noise(3 * SEGMENT_SIZE + 100)
    blob = encrypt(original)
    h = header_len(blob)
    for segment in range(4):
        for offset in (0, 1, 5000, 65535, 65536, 65551):
            position = h + segment * CIPHER_SEGMENT + offset
            if position >= len(blob):
                continue
            tampered = bytearray(blob)
            tampered[position] ^= 0x80
            got = bytearray()
            with pytest.raises(DecryptionError):
                with open_decrypted(io.BytesIO(bytes(tampered)), RING) as reader:
                    while piece := reader.read(SEGMENT_SIZE // 2):
                        got.extend(piece)
            # Exactly the segments before the damaged one were returned.
            assert bytes(got) == original[: segment * SEGMENT_SIZE]


@pytest.mark.parametrize("size", [SEGMENT_SIZE, 2 * SEGMENT_SIZE, 3 * SEGMENT_SIZE + 7])
def test_truncation_at_and_between_segment_boundaries(
        size: int) -> None:
    original = noise(size)
    blob = encrypt(original)
    h = header_len(blob)
    cuts = set()
    for boundary in range(1, len(blob) // CIPHER_SEGMENT + 2):
        at = h + boundary * CIPHER_SEGMENT
        cuts.update({at - 17, at - 16, at - 1, at, at + 1, at + 16, at + 17})
    cuts.update({h, h + 1, h + 16, len(blob) - 1, len(blob) - 16})
    for cut in sorted(c for c in cuts if h <= c < len(blob)):
        assert_detected(blob[:cut], original)
    for cut in range(h):
        with pytest.raises(DecryptionError):
            open_decrypted(io.BytesIO(blob[:cut]), RING)


def test_truncation_at_a_boundary_is_caught_by_seek_end_and_by_reading_the_end() -> None:
    original = noise(3 * SEGMENT_SIZE)
    blob = encrypt(original)
    cut = blob[: header_len(blob) + 2 * CIPHER_SEGMENT]
    with open_decrypted(io.BytesIO(cut), RING) as reader:
        assert reader.size == 2 * SEGMENT_SIZE  # what the shorter file claims...
        assert reader.read(10) == original[:10]  # ...its first segments are authentic
        with pytest.raises(DecryptionError, match="final segment"):
            reader.seek(0, os.SEEK_END)
        reader.seek(2 * SEGMENT_SIZE)
        with pytest.raises(DecryptionError, match="final segment"):
            reader.read(1)  # EOF is never reported for a truncated object


@pytest.mark.parametrize("extra", [b"\x00", b"x" * 15, b"y" * 16, b"z" * 17, b"w" * 70000])
@pytest.mark.parametrize("size", [0, 5, SEGMENT_SIZE, SEGMENT_SIZE + 5])
def test_appended_bytes(extra: bytes, size: int) -> None:
    original = noise(size)
    blob = encrypt(original)
    assert_detected(blob + extra, original)


def test_appending_a_whole_valid_segment_from_elsewhere() -> None:
    original = noise(2 * SEGMENT_SIZE)
    blob = encrypt(original)
    h = header_len(blob)
    first = blob[h : h + CIPHER_SEGMENT]
    assert_detected(blob + first, original)


@pytest.mark.parametrize("field", ["magic", "version", "algorithm", "key id length", "key id",
                                   "salt", "nonce prefix", "key check"])
def test_tampered_header(field: str) -> None:
    original = b"header tamper " * 100
    blob = bytearray(encrypt(original))
    offsets = {"magic": 0, "version": 8, "algorithm": 9, "key id length": 10, "key id": 11,
               "salt": 13, "nonce prefix": 13 + 32, "key check": 13 + 39}
    blob[offsets[field]] ^= 0x01
    with pytest.raises(DecryptionError):
        read_all(bytes(blob))


def test_nonce_prefix_and_algorithm_are_authenticated_by_the_segments() -> None:
    # The nonce prefix is not covered by the key check: the segments' tags catch it.
    original = b"x" * 1000
    blob = bytearray(encrypt(original))
    blob[13 + 32 + 3] ^= 0x40
    with open_decrypted(io.BytesIO(bytes(blob)), RING) as reader:
        with pytest.raises(DecryptionError, match="failed authentication"):
            reader.read()


def test_reordered_and_duplicated_segments() -> None:
    original = noise(3 * SEGMENT_SIZE + 10)
    blob = encrypt(original)
    h = header_len(blob)
    seg = [blob[h + i * CIPHER_SEGMENT : h + (i + 1) * CIPHER_SEGMENT] for i in range(4)]
    header = blob[:h]
    for order in ([1, 0, 2, 3], [0, 2, 1, 3], [0, 1, 1, 3], [0, 0, 2, 3], [0, 1, 2, 2]):
        assert_detected(header + b"".join(seg[i] for i in order), original)
    # Moving the final segment forward (dropping a middle one).
    assert_detected(header + seg[0] + seg[1] + seg[3], original)


def test_segments_swapped_between_two_objects_under_the_same_key() -> None:
    a_plain, b_plain = noise(2 * SEGMENT_SIZE + 1), noise(2 * SEGMENT_SIZE + 1)
    a, b = encrypt(a_plain), encrypt(b_plain)
    h = header_len(a)
    assert h == header_len(b)
    for i in range(3):
        start, end = h + i * CIPHER_SEGMENT, h + (i + 1) * CIPHER_SEGMENT
        mixed = a[:start] + b[start:end] + a[end:]
        assert_detected(mixed, a_plain)
    # b's header on a's segments.
    assert_detected(b[:h] + a[h:], b_plain)


def test_the_wrong_key_and_an_unknown_key_id() -> None:
    blob = encrypt(b"secret")
    with pytest.raises(DecryptionError, match="not the key") as info:
        open_decrypted(io.BytesIO(blob), Keyring({"k1": generate_key()}))
    assert KEY.hex() not in str(info.value)
    with pytest.raises(DecryptionError, match="key id 'k1', which is not in the keyring"):
        open_decrypted(io.BytesIO(blob), Keyring({"k2": KEY}))


def test_not_an_encrypted_object() -> None:
    with pytest.raises(DecryptionError, match="not a streamstore encrypted object"):
        open_decrypted(io.BytesIO(b"plain text, never encrypted" * 10), RING)
    with pytest.raises(DecryptionError):
        open_decrypted(io.BytesIO(b""), RING)


def test_a_failing_segment_never_leaks_into_the_callers_buffer() -> None:
    original = noise(2 * SEGMENT_SIZE)
    blob = bytearray(encrypt(original))
    blob[header_len(bytes(blob)) + 10] ^= 1  # damage segment 0
    buffer = bytearray(b"\xee" * 1000)
    with open_decrypted(io.BytesIO(bytes(blob)), RING) as reader:
        with pytest.raises(DecryptionError):
            reader.readinto(buffer)
        with pytest.raises(DecryptionError):
            reader.raw.readinto(buffer)
    assert buffer == b"\xee" * 1000


def test_the_stored_file_holds_no_run_of_the_plaintext(tmp_path: Path) -> None:
    # A plaintext of repeated 32-byte runs: any 16-byte window of plaintext
    # that survived into the file would be found.
    unit = bytes(range(32))
    original = unit * (3 * SEGMENT_SIZE // 32) + b"tail-marker-0123456789"
    path = tmp_path / "obj"
    store_from_reader(original, EncryptedSink(FileSink(path), RING))
    stored = path.read_bytes()
    windows = {original[i : i + 16] for i in range(0, len(original) - 16, 7)}
    windows |= {unit[i : i + 16] for i in range(16)}
    assert not any(w in stored for w in windows)
    with open_decrypted(path, RING) as reader:
        assert reader.read() == original

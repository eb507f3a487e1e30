"""Encryption at rest: a streaming, segmented AEAD format for every sink.

Install with ``pip install 'streamstore[crypto]'`` (it needs ``cryptography``).

- :class:`Keyring`: the application's raw 32-byte keys by key id, one of them
  active for new objects; older ones stay readable (rotation).
- :class:`EncryptedSink`: wraps any sink; the core still hashes and checks
  the plaintext while the inner sink receives the encrypted object.
- :func:`open_decrypted`: a seekable reader of an encrypted object's plaintext,
  in constant memory; no byte of a segment is returned before the whole
  segment is authenticated (:class:`~streamstore.DecryptionError` otherwise).
- ``ContentStore(root, encryption=keyring)``: a content store whose objects
  are stored encrypted and still addressed by the plaintext's SHA-256.

The format (AES-256-GCM or ChaCha20-Poly1305, 64 KiB segments, a header
authenticated by every segment, HKDF-SHA256 per-object keys, STREAM-style
nonces) is specified with test vectors in ``docs/encryption-format.md``.
"""

from __future__ import annotations

try:
    import cryptography  # noqa: F401
except ImportError as exc:
    raise ImportError(
        "streamstore.crypto needs the 'cryptography' package: "
        "pip install 'streamstore[crypto]'"
    ) from exc

from ._crypto import ALGORITHMS, KEY_FILE_ENV, SEGMENT_SIZE, Keyring, generate_key
from ._crypto_io import DecryptedReader, EncryptedSink, open_decrypted

__all__ = [
    "ALGORITHMS",
    "KEY_FILE_ENV",
    "SEGMENT_SIZE",
    "DecryptedReader",
    "EncryptedSink",
    "Keyring",
    "generate_key",
    "open_decrypted",
]

for _name in ("DecryptedReader", "EncryptedSink", "Keyring", "generate_key",
              "open_decrypted"):
    globals()[_name].__module__ = __name__
del _name

"""The full-object checksums of S3 multipart uploads: CRC64NVME (with ``awscrt``)
or CRC32 (standard library), computed per part and combined into the
whole object's value without a second pass over the bytes."""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

_crt: ModuleType | None
try:
    from awscrt import checksums as _crt
except ImportError:  # pragma: no cover - exercised with awscrt absent
    _crt = None

__all__ = ["ALGORITHMS", "Checksum", "checksum_for", "crc_combine"]

_CRC32_POLY = 0xEDB88320  # reflected CRC-32 (zlib)
_CRC64NVME_POLY = 0x9A6C9329AC4BC9B5  # reflected CRC-64/NVME


def _multmodp(a: int, b: int, poly: int, top: int) -> int:
    """a(x) * b(x) modulo p(x), in the reflected bit order of zlib's crc32_combine."""
    m = top
    p = 0
    while True:
        if a & m:
            p ^= b
            if (a & (m - 1)) == 0:
                break
        m >>= 1
        b = (b >> 1) ^ poly if b & 1 else b >> 1
    return p


class _Combiner:
    """``combine(crc1, crc2, len2)``: the CRC of A+B from the CRCs of A and B
    (zlib's algorithm: multiply crc1 by x^(8*len2) modulo the polynomial)."""

    def __init__(self, poly: int, width: int) -> None:
        self.poly = poly
        self.top = 1 << (width - 1)
        powers = [1 << (width - 2)]  # x^1, x^2, x^4, ... x^(2^k)
        for _ in range(width + 8):
            powers.append(_multmodp(powers[-1], powers[-1], poly, self.top))
        self.powers = powers
        self._cache: dict[int, int] = {}

    def _x8n(self, n: int) -> int:
        """x^(8n) modulo p(x)."""
        cached = self._cache.get(n)
        if cached is not None:
            return cached
        p = self.top  # x^0
        k = 3
        rest = n
        while rest:
            if rest & 1:
                p = _multmodp(self.powers[k], p, self.poly, self.top)
            rest >>= 1
            k += 1
        if len(self._cache) < 64:
            self._cache[n] = p
        return p

    def __call__(self, crc1: int, crc2: int, len2: int) -> int:
        if len2 == 0:
            return crc1
        return _multmodp(self._x8n(len2), crc1, self.poly, self.top) ^ crc2


_crc32_combine = _Combiner(_CRC32_POLY, 32)
_crc64_combine = _Combiner(_CRC64NVME_POLY, 64)


def crc_combine(algorithm: str, crc1: int, crc2: int, len2: int) -> int:
    """The ``algorithm`` CRC of A+B from the CRC of A, the CRC of B and B's length."""
    if algorithm == "CRC32":
        return _crc32_combine(crc1, crc2, len2)
    if algorithm == "CRC64NVME":
        return _crc64_combine(crc1, crc2, len2)
    raise ValueError(f"unknown checksum algorithm {algorithm!r}")


@dataclass(frozen=True)
class Checksum:
    """One S3 checksum algorithm: its name, the request parameter that carries
    a value, how to compute it and how wide it is."""

    name: str
    param: str
    compute: Callable[[bytes | bytearray | memoryview], int]
    width: int

    def encode(self, value: int) -> str:
        """The base64 of the big-endian value, as S3 headers carry it."""
        return base64.b64encode(value.to_bytes(self.width // 8, "big")).decode("ascii")

    def combine(self, crc1: int, crc2: int, len2: int) -> int:
        """The value for A+B (see :func:`crc_combine`)."""
        return crc_combine(self.name, crc1, crc2, len2)


def _crc32(data: bytes | bytearray | memoryview) -> int:
    return zlib.crc32(data)


def _crc64nvme(data: bytes | bytearray | memoryview) -> int:
    assert _crt is not None
    crt: Any = _crt  # typed for bytes; it takes any buffer
    return int(crt.crc64nvme(data))


ALGORITHMS: dict[str, Checksum] = {"CRC32": Checksum("CRC32", "ChecksumCRC32", _crc32, 32)}
if _crt is not None:
    ALGORITHMS["CRC64NVME"] = Checksum("CRC64NVME", "ChecksumCRC64NVME", _crc64nvme, 64)


def checksum_for(name: str | None) -> Checksum:
    """The algorithm named ``name``; ``None`` picks CRC64NVME when ``awscrt`` is
    installed, else CRC32."""
    if name is None:
        return ALGORITHMS.get("CRC64NVME", ALGORITHMS["CRC32"])
    if not isinstance(name, str):
        raise TypeError(f"checksum must be a str or None, got {type(name).__name__}")
    algorithm = ALGORITHMS.get(name.upper())
    if algorithm is None:
        if name.upper() == "CRC64NVME":
            raise ValueError("checksum='CRC64NVME' needs awscrt: pip install awscrt")
        raise ValueError(f"checksum must be 'CRC64NVME' or 'CRC32', got {name!r}")
    return algorithm

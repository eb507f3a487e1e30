"""Building multipart/form-data bodies, and hypothesis strategies for them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

from hypothesis import strategies as st

BCHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?"


@dataclass(frozen=True)
class FormPart:
    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class Body:
    data: bytes
    boundary: str
    parts: tuple[FormPart, ...]
    ends: tuple[int, ...]
    """For each part, the body length at which its closing delimiter is complete
    (the part can end); the last entry is where the closing boundary ends."""

    @property
    def content_type(self) -> str:
        return f'multipart/form-data; boundary="{self.boundary}"'


def encode(parts: Sequence[FormPart], boundary: str = "streamstore-test-boundary",
           epilogue: bytes = b"\r\n") -> Body:
    out = bytearray()
    ends = []
    delimiter = f"--{boundary}".encode()
    for i, part in enumerate(parts):
        if i == 0:
            out += delimiter + b"\r\n"
        disposition = f'form-data; name="{part.name}"'
        if part.filename is not None:
            disposition += f'; filename="{part.filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if part.content_type is not None:
            out += f"Content-Type: {part.content_type}\r\n".encode()
        out += b"\r\n" + part.data + b"\r\n" + delimiter
        if i == len(parts) - 1:
            out += b"--"
        else:
            out += b"\r\n"
        ends.append(len(out))
    if not parts:
        out += delimiter + b"--"
        ends.append(len(out))
    out += epilogue
    return Body(bytes(out), boundary, tuple(parts), tuple(ends))


def chunked(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` split at the (sorted, deduplicated) offsets ``cuts``."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    pieces = []
    start = 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return [p for p in pieces if p]


class ChunkStream:
    """A ``read(n)`` stream handing out ``pieces`` (each cut to ``n``), then b''."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self.pieces = list(pieces)
        self.reads = 0

    def read(self, n: int) -> bytes:
        self.reads += 1
        if not self.pieces:
            return b""
        piece = self.pieces[0]
        if len(piece) <= n:
            self.pieces.pop(0)
            return piece
        self.pieces[0] = piece[n:]
        return piece[:n]


async def agen(pieces: Sequence[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def repeat(block: bytes, total: int) -> Iterator[bytes]:
    left = total
    while left > 0:
        piece = block[:left]
        left -= len(piece)
        yield piece


# -- strategies -------------------------------------------------------------------------

boundaries = st.text(alphabet=BCHARS, min_size=1, max_size=70)


@st.composite
def part_data(draw: st.DrawFn, boundary: str) -> bytes:
    """Binary data sprinkled with near-misses of the delimiter, never the delimiter."""
    near = [b"\r", b"\r\n", b"\r\n-", b"\r\n--", f"\r\n--{boundary}"[:-1].encode(),
            f"--{boundary}".encode(), b"\n--" + boundary.encode()]
    pieces = draw(st.lists(st.one_of(st.binary(max_size=300), st.sampled_from(near)),
                           max_size=8))
    data = b"".join(pieces)
    delimiter = f"\r\n--{boundary}".encode()
    while delimiter in data:
        data = data.replace(delimiter, b"\r\n-")
    return data


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12)


@st.composite
def bodies(draw: st.DrawFn, *, max_parts: int = 4, file_last: bool = False) -> Body:
    boundary = draw(boundaries)
    count = draw(st.integers(min_value=1 if file_last else 0, max_value=max_parts))
    parts = []
    for i in range(count):
        is_file = (i == count - 1) if file_last else draw(st.booleans())
        parts.append(FormPart(
            name=draw(names),
            data=draw(part_data(boundary)),
            filename=draw(names) + ".bin" if is_file else None,
            content_type=draw(st.sampled_from([None, "application/octet-stream",
                                               "image/png", "text/plain; charset=utf-8"])),
        ))
    return encode(parts, boundary, epilogue=draw(st.sampled_from([b"", b"\r\n"])))

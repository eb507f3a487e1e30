"""streamstore.multipart: parts as sources, skipping, limits, every malformed-body class."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import streamstore as ss
from multipart_bodies import ChunkStream, FormPart, agen, chunked, encode, repeat
from streamstore.multipart import AsyncPart, Part, aiter_parts, iter_parts, parse_boundary
from streamstore.testing import assert_no_temp_files

CT = "multipart/form-data; boundary=streamstore-test-boundary"


def form(*parts: FormPart) -> bytes:
    return encode(parts).data


def raw(*lines: bytes, boundary: bytes = b"streamstore-test-boundary") -> bytes:
    """A body from raw lines (CRLF-joined) for malformed cases."""
    return b"\r\n".join(lines).replace(b"{B}", boundary)


FILE = FormPart("file", b"\x89PNG\r\n" + bytes(range(256)) * 40, "cat.png", "image/png")
FIELD = FormPart("title", "Grüße".encode(), None, "text/plain; charset=utf-8")


@pytest.fixture
def store(tmp_path: Path) -> ss.ContentStore:
    return ss.ContentStore(tmp_path / "store", durable=False)


# -- parts as sources -----------------------------------------------------------------


def test_parts_expose_their_headers_and_store_in_one_pass(store: ss.ContentStore) -> None:
    seen = []
    for part in iter_parts(io.BytesIO(form(FIELD, FILE)), CT, chunk_size=97):
        assert isinstance(part, Part)
        if part.is_file:
            info = store.put(part, limit=1 << 20)
            seen.append((part.name, part.filename, part.content_type, info.sha256, info.size))
            assert part.complete
        else:
            seen.append((part.name, part.filename, part.content_type, part.text(), None))
        assert part.headers["content-disposition"].startswith("form-data")
    assert seen == [
        ("title", None, "text/plain; charset=utf-8", "Grüße", None),
        ("file", "cat.png", "image/png", hashlib.sha256(FILE.data).hexdigest(), len(FILE.data)),
    ]
    with store.open(seen[1][3]) as f:
        assert f.read() == FILE.data


@pytest.mark.asyncio
async def test_async_parts_store_through_aput_and_astore(store: ss.ContentStore,
                                                         tmp_path: Path) -> None:
    body = form(FIELD, FILE, FILE)
    results = []
    async for part in aiter_parts(agen(chunked(body, range(0, len(body), 1000))), CT):
        assert isinstance(part, AsyncPart)
        if not part.is_file:
            results.append(await part.text())
        elif part.index == 2:
            results.append((await store.aput(part)).sha256)
        else:
            results.append((await ss.astore_from_reader(part, tmp_path / "f.png")).sha256)
    digest = hashlib.sha256(FILE.data).hexdigest()
    assert results == ["Grüße", digest, digest]
    assert (tmp_path / "f.png").read_bytes() == FILE.data


def test_a_part_feeds_open_writer_through_a_loop(tmp_path: Path) -> None:
    for part in iter_parts(io.BytesIO(form(FILE)), CT):
        with ss.open_writer(tmp_path / "out", limit=1 << 20) as w:
            for chunk in part:
                w.write(chunk)
    assert w.result is not None and w.result.size == len(FILE.data)
    assert (tmp_path / "out").read_bytes() == FILE.data


@pytest.mark.asyncio
async def test_a_part_feeds_aopen_writer_through_a_loop(tmp_path: Path) -> None:
    async for part in aiter_parts(agen([form(FILE)]), CT):
        async with ss.aopen_writer(tmp_path / "out") as w:
            async for chunk in part:
                await w.write(chunk)
    assert (tmp_path / "out").read_bytes() == FILE.data


def test_chunks_are_views_of_immutable_bytes_never_copies() -> None:
    body = form(FILE)
    for part in iter_parts([body], CT):
        chunks = list(part)
        assert all(type(c.obj) is bytes for c in chunks)
        assert any(c.obj is body for c in chunks)  # a slice of the very chunk read


def test_unconsumed_parts_are_skipped(store: ss.ContentStore) -> None:
    body = form(FILE, FIELD, FormPart("second", b"2" * 5000, "2.bin"))
    parts = iter_parts(ChunkStream([body]), CT, chunk_size=512)
    first = next(parts)
    assert bytes(next(first))[:4] == b"\x89PNG"  # read a little, then move on
    field = next(parts)
    assert field.name == "title"
    with pytest.raises(RuntimeError, match="skipped"):
        next(first)
    second = next(parts)
    assert store.put(second).size == 5000
    assert list(parts) == []
    assert len(store) == 1


def test_reading_a_part_again_after_its_end_yields_nothing() -> None:
    for part in iter_parts(form(FILE), CT):
        assert part.read_all(limit=1 << 20) == FILE.data
        assert part.read_all() == b""
        assert list(part) == []


def test_read_all_and_text_are_capped() -> None:
    for part in iter_parts(form(FILE), CT, max_field_size=100):
        with pytest.raises(ss.MultipartError, match="larger than 100 bytes"):
            part.read_all()
    for part in iter_parts(form(FIELD), CT):
        with pytest.raises(ss.MultipartError, match="larger than 3 bytes"):
            part.text(limit=3)


def test_text_uses_the_part_charset_and_rejects_invalid_text() -> None:
    latin = FormPart("t", "café".encode("latin-1"), None, "text/plain; charset=latin-1")
    bad = FormPart("u", b"\xff\xfe\xfd")
    parts = iter_parts(form(latin, bad), CT)
    assert next(parts).text() == "café"
    with pytest.raises(ss.MultipartError, match="not valid utf-8"):
        next(parts).text()


def test_non_ascii_file_names_and_empty_file_inputs() -> None:
    body = raw(b"--{B}", 'Content-Disposition: form-data; name="f"; filename="naïve résumé.pdf"'
               .encode(), b"", b"pdf", b"--{B}",
               b'Content-Disposition: form-data; name="g"; filename=""', b"", b"", b"--{B}--")
    parts = list(iter_parts(body, CT))
    assert [(p.name, p.filename, p.size) for p in parts] == [
        ("f", "naïve résumé.pdf", 3), ("g", "", 0)]


def test_an_empty_form_and_an_epilogue() -> None:
    assert list(iter_parts(b"--streamstore-test-boundary--\r\n", CT)) == []
    body = encode([FIELD], epilogue=b"\r\nthis epilogue is ignored\r\n").data
    assert [p.text() for p in iter_parts(body, CT)] == ["Grüße"]


def test_leading_blank_lines_are_allowed() -> None:
    assert [p.name for p in iter_parts(b"\r\n" + form(FIELD), CT)] == ["title"]


def test_quoted_boundaries_and_header_case() -> None:
    body = encode([FIELD], boundary="a'b(c)d+e,f-g.h/i:j=k?l").data
    ctype = 'Multipart/Form-Data; charset=utf-8; boundary="a\'b(c)d+e,f-g.h/i:j=k?l"'
    assert [p.name for p in iter_parts(body, ctype)] == ["title"]


def test_streams_of_every_kind() -> None:
    body = form(FIELD, FILE)
    expected = [FIELD.data, FILE.data]
    for stream in (io.BytesIO(body), ChunkStream(chunked(body, range(0, len(body), 7))),
                   iter(chunked(body, [3, 100])), [b"", body, b""], body, bytearray(body),
                   io.BufferedReader(io.BytesIO(body), 4096)):
        assert [p.read_all(limit=1 << 20) for p in iter_parts(stream, CT)] == expected


def test_a_stream_that_hands_out_mutable_buffers_is_copied() -> None:
    class Reused:
        def __init__(self, body: bytes) -> None:
            self.src = io.BytesIO(body)
            self.buf = bytearray(64)

        def read(self, n: int) -> bytearray:
            got = self.src.readinto(self.buf)
            data = self.buf[:got]
            return data

    chunks = []
    for part in iter_parts(Reused(form(FILE)), CT, chunk_size=64):
        chunks.extend(part)
    assert b"".join(chunks) == FILE.data


def test_wrong_stream_kinds_are_type_errors() -> None:
    with pytest.raises(TypeError, match="use aiter_parts"):
        iter_parts(agen([b""]), CT)
    with pytest.raises(TypeError, match="cannot read a multipart body"):
        iter_parts(42, CT)
    with pytest.raises(TypeError, match="use iter_parts"):
        aiter_parts(io.BytesIO(b""), CT)


def test_limit_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="max_parts"):
        iter_parts(b"", CT, max_parts=-1)
    with pytest.raises(TypeError, match="chunk_size"):
        iter_parts(b"", CT, chunk_size=1.5)  # type: ignore[arg-type]


# -- the store's limits apply as the bytes arrive ---------------------------------------


def test_the_store_limit_stops_a_part_and_the_next_part_still_reads(
        store: ss.ContentStore) -> None:
    big = FormPart("big", b"x" * 100_000, "big.bin")
    stream = ChunkStream([form(big, FIELD)])
    parts = iter_parts(stream, CT, chunk_size=4096)
    with pytest.raises(ss.TooLargeError):
        store.put(next(parts), limit=10_000)
    reads_at_failure = stream.reads
    assert reads_at_failure <= 10_000 // 4096 + 3  # stopped about one chunk past the limit
    assert len(store) == 0
    assert_no_temp_files(store.root)  # type: ignore[arg-type]
    assert next(parts).text() == "Grüße"


@pytest.mark.asyncio
async def test_the_async_store_limit_stops_a_part(store: ss.ContentStore) -> None:
    big = FormPart("big", b"x" * 100_000, "big.bin")
    pieces = chunked(form(big), range(0, 200_000, 4096))
    pulled = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal pulled
        for piece in pieces:
            pulled += len(piece)
            yield piece

    async for part in aiter_parts(counted(), CT):
        with pytest.raises(ss.TooLargeError):
            await store.aput(part, limit=10_000)
        break
    assert pulled <= 10_000 + 2 * 4096
    assert len(store) == 0


def test_expected_sha256_mismatch_stores_nothing(store: ss.ContentStore) -> None:
    for part in iter_parts(form(FILE), CT):
        with pytest.raises(ss.HashMismatchError):
            store.put(part, expected_sha256="0" * 64)
    assert len(store) == 0


# -- malformed bodies ------------------------------------------------------------------


@pytest.mark.parametrize("content_type, message", [
    (None, "no Content-Type"),
    ("", "no Content-Type"),
    ("application/json", "not multipart/form-data"),
    ("multipart/mixed; boundary=x", "not multipart/form-data"),
    ("multipart/form-data", "no boundary"),
    ("multipart/form-data; boundary=", "no boundary"),
    ('multipart/form-data; boundary=""', "no boundary"),
    ("multipart/form-data; boundary=" + "b" * 300, "invalid multipart boundary"),
])
def test_bad_content_types(content_type: str | None, message: str) -> None:
    with pytest.raises(ss.MultipartError, match=message):
        iter_parts(io.BytesIO(form(FIELD)), content_type)
    with pytest.raises(ss.MultipartError, match=message):
        aiter_parts(agen([]), content_type)


def test_parse_boundary_accepts_bytes_and_quotes() -> None:
    assert parse_boundary(b'multipart/form-data; boundary="a b"') == b"a b"
    assert isinstance(ss.MultipartError("x"), ValueError)


MALFORMED = {
    "empty body": b"",
    "garbage first": b"hello world\r\n" + form(FIELD),
    "a preamble": b"preamble\r\n" + form(FIELD),
    "another boundary": form(FIELD).replace(b"streamstore-test-boundary", b"other-boundary"),
    "no CRLF after boundary": raw(b"--{B}x", b"Content-Disposition: form-data; name=a", b"",
                                  b"v", b"--{B}--"),
    "header without colon": raw(b"--{B}", b"Content-Disposition form-data", b"", b"v",
                                b"--{B}--"),
    "bad header name": raw(b"--{B}", b"Content Disposition: form-data; name=a", b"", b"v",
                           b"--{B}--"),
    "no content-disposition": raw(b"--{B}", b"Content-Type: text/plain", b"", b"v",
                                  b"--{B}--"),
    "no headers at all": raw(b"--{B}", b"", b"v", b"--{B}--"),
    "not form-data": raw(b"--{B}", b"Content-Disposition: attachment; name=a", b"", b"v",
                         b"--{B}--"),
    "no name": raw(b"--{B}", b'Content-Disposition: form-data; filename="a"', b"", b"v",
                   b"--{B}--"),
    "too many header lines": raw(b"--{B}", b"Content-Disposition: form-data; name=a",
                                 *[b"X-H%d: v" % i for i in range(10)], b"", b"v",
                                 b"--{B}--"),
    "truncated in the first boundary": b"--streamstore-test-bou",
    "truncated in headers": raw(b"--{B}", b"Content-Disposition: form-da"),
    "truncated after headers": raw(b"--{B}", b"Content-Disposition: form-data; name=a", b""),
    "truncated in data": form(FILE)[:-200],
    "truncated in the delimiter": form(FIELD)[: form(FIELD).rindex(b"--") - 3],
    "truncated before the final dashes": form(FIELD)[: form(FIELD).rindex(b"--")],
    "truncated between the final dashes": form(FIELD)[: form(FIELD).rindex(b"--") + 1],
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_bodies_raise_multipart_error_and_store_nothing(
        case: str, store: ss.ContentStore) -> None:
    with pytest.raises(ss.MultipartError):
        for part in iter_parts(io.BytesIO(MALFORMED[case]), CT, chunk_size=50):
            store.put(part)
    assert len(store) == 0
    assert_no_temp_files(store.root)  # type: ignore[arg-type]


@pytest.mark.asyncio
@pytest.mark.parametrize("case", ["garbage first", "truncated in data", "no name"])
async def test_malformed_bodies_async(case: str, store: ss.ContentStore) -> None:
    with pytest.raises(ss.MultipartError):
        async for part in aiter_parts(agen(chunked(MALFORMED[case], [10, 400])), CT):
            await store.aput(part)
    assert len(store) == 0


def test_the_error_repeats_once_the_body_is_broken() -> None:
    parts = iter_parts(form(FIELD, FILE)[:-100], CT)
    next(parts)
    file = next(parts)
    with pytest.raises(ss.MultipartError, match="truncated"):
        file.read_all(limit=1 << 20)
    with pytest.raises(ss.MultipartError, match="unusable"):
        next(parts)


def test_a_huge_header_is_refused_before_it_is_buffered() -> None:
    huge = raw(b"--{B}", b"Content-Disposition: form-data; name=a", b"X-Big: " + b"v" * 50_000,
               b"", b"v", b"--{B}--")
    stream = ChunkStream(chunked(huge, range(0, len(huge), 1024)))
    with pytest.raises(ss.MultipartError, match="header"):
        list(iter_parts(stream, CT, chunk_size=1024, max_header_size=2048))
    assert stream.reads <= 4
    big_ok = raw(b"--{B}", b"Content-Disposition: form-data; name=a", b"X-Big: " + b"v" * 3000,
                 b"", b"v", b"--{B}--")
    assert [p.headers["x-big"] for p in iter_parts(big_ok, CT)] == ["v" * 3000]


def test_max_header_size_counts_all_headers_of_a_part() -> None:
    body = raw(b"--{B}", b"Content-Disposition: form-data; name=a",
               *[b"X-H%d: %s" % (i, b"v" * 500) for i in range(6)], b"", b"v", b"--{B}--")
    assert len(list(iter_parts(body, CT, max_header_size=4000))) == 1
    with pytest.raises(ss.MultipartError, match="max_header_size=2000"):
        list(iter_parts(body, CT, max_header_size=2000))


def test_max_parts() -> None:
    body = form(*[FormPart(f"f{i}", b"v") for i in range(5)])
    assert len(list(iter_parts(body, CT, max_parts=5))) == 5
    with pytest.raises(ss.MultipartError, match="max_parts=4"):
        list(iter_parts(body, CT, max_parts=4))


def test_max_field_size_applies_to_fields_read_or_skipped_not_to_files() -> None:
    body = form(FormPart("big", b"x" * 5000), FormPart("f", b"y" * 5000, "f.bin"))
    with pytest.raises(ss.MultipartError, match="max_field_size=4096"):
        list(iter_parts(body, CT, max_field_size=4096))  # skipped: still counted
    body = form(FormPart("small", b"x" * 10), FormPart("f", b"y" * 5000, "f.bin"))
    sizes = [len(p.read_all(limit=10_000)) for p in iter_parts(body, CT, max_field_size=4096)]
    assert sizes == [10, 5000]


def test_max_body_size_is_a_too_large_error() -> None:
    body = form(FILE)
    with pytest.raises(ss.TooLargeError) as info:
        for part in iter_parts(body, CT, max_body_size=1000, chunk_size=256):
            part.skip()
    assert info.value.limit == 1000 and 1000 < info.value.size <= 1256
    assert len(list(iter_parts(body, CT, max_body_size=len(body)))) == 1


# -- failing streams and disconnects ---------------------------------------------------------


class Disconnect(Exception):
    pass


def failing(body: bytes, after: int) -> Iterator[bytes]:
    yield body[:after]
    raise Disconnect("client went away")


def test_a_failing_stream_is_a_multipart_error_and_nothing_is_stored(
        store: ss.ContentStore) -> None:
    with pytest.raises(ss.MultipartError, match="Disconnect") as info:
        for part in iter_parts(failing(form(FILE), 500), CT):
            store.put(part)
    assert isinstance(info.value.__cause__, Disconnect)
    assert len(store) == 0
    assert_no_temp_files(store.root)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_an_async_stream_failing_mid_part(store: ss.ContentStore) -> None:
    async def dropping() -> AsyncIterator[bytes]:
        yield form(FILE)[:700]
        raise Disconnect("gone")

    with pytest.raises(ss.MultipartError) as info:
        async for part in aiter_parts(dropping(), CT):
            await store.aput(part)
    assert isinstance(info.value.__cause__, Disconnect)
    assert len(store) == 0


def test_base_exceptions_from_the_stream_propagate_unchanged() -> None:
    def interrupted() -> Iterator[bytes]:
        yield form(FILE)[:300]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        for part in iter_parts(interrupted(), CT):
            part.skip()


@pytest.mark.asyncio
async def test_cancelling_a_store_of_a_part_leaves_nothing(store: ss.ContentStore) -> None:
    gate = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield form(FILE)[:2000]
        gate.set()
        await asyncio.sleep(3600)
        yield b""

    async def upload() -> None:
        async for part in aiter_parts(stalled(), CT):
            await store.aput(part)

    task = asyncio.create_task(upload())
    await gate.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(store) == 0
    assert_no_temp_files(store.root)  # type: ignore[arg-type]


def test_a_large_part_streams_with_a_flat_heap(tmp_path: Path) -> None:
    import tracemalloc

    def peak(size: int) -> int:
        head = encode([FormPart("f", b"", "f.bin")]).data
        split = head.index(b"\r\n--streamstore-test-boundary--")
        block = bytes(range(256)) * 256
        body = iter([head[:split], *repeat(block, size), head[split:]])
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            for part in iter_parts(body, CT):
                assert ss.store_from_reader(part, tmp_path / "big", durable=False).size == size
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(1 << 20), peak(32 << 20)
    assert large < 2 << 20, large
    assert large <= small + (256 << 10), (small, large)

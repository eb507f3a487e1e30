"""Properties of the multipart reader: any split of a valid body gives the same
parts; a body cut anywhere before its closing boundary raises MultipartError,
and a part is stored exactly when its closing delimiter arrived."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamstore as ss
from multipart_bodies import Body, ChunkStream, agen, bodies, chunked
from streamstore.multipart import aiter_parts, iter_parts
from streamstore.testing import assert_no_temp_files

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def expected(body: Body) -> list[tuple[str, str | None, str | None, bytes]]:
    return [(p.name, p.filename, p.content_type, p.data) for p in body.parts]


def parse(pieces: list[bytes], body: Body, chunk_size: int
          ) -> list[tuple[str, str | None, str | None, bytes]]:
    return [(p.name, p.filename, p.content_type, p.read_all(limit=1 << 20))
            for p in iter_parts(ChunkStream(pieces), body.content_type, chunk_size=chunk_size)]


@SETTINGS
@given(body=bodies(), cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=40),
       chunk_size=st.integers(min_value=1, max_value=9000))
def test_any_split_of_a_valid_body_gives_the_same_parts(body: Body, cuts: list[int],
                                                         chunk_size: int) -> None:
    assert parse(chunked(body.data, cuts), body, chunk_size) == expected(body)


@settings(max_examples=60, deadline=None)
@given(body=bodies(), cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=20))
def test_any_split_gives_the_same_parts_async(body: Body, cuts: list[int]) -> None:
    async def run() -> list[tuple[str, str | None, str | None, bytes]]:
        return [(p.name, p.filename, p.content_type, await p.read_all(limit=1 << 20))
                async for p in aiter_parts(agen(chunked(body.data, cuts)), body.content_type)]

    assert asyncio.run(run()) == expected(body)


@SETTINGS
@given(body=bodies(), data=st.data())
def test_a_body_cut_before_its_closing_boundary_is_a_multipart_error(
        body: Body, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=body.ends[-1] - 1), label="cut")
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=cut), max_size=6),
                     label="cuts")
    pieces = chunked(body.data[:cut], cuts)
    stored: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = ss.ContentStore(Path(tmp) / "store", durable=False)
        try:
            for part in iter_parts(ChunkStream(pieces), body.content_type, chunk_size=4096):
                store.put(part)
                stored.append(part.index)
        except ss.MultipartError:
            pass
        else:
            raise AssertionError(f"no MultipartError for a body cut at {cut}")
        # A part is stored exactly when its closing delimiter arrived.
        complete = [i + 1 for i, end in enumerate(body.ends[:len(body.parts)]) if end <= cut]
        assert stored == complete
        assert len(store) == len({body.parts[i - 1].data for i in complete})
        assert_no_temp_files(tmp)


@settings(max_examples=60, deadline=None)
@given(body=bodies(file_last=True), data=st.data())
def test_a_truncated_upload_stores_nothing_async(body: Body, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=body.ends[-1] - 1), label="cut")

    async def run(store: ss.ContentStore) -> None:
        async for part in aiter_parts(agen(chunked(body.data[:cut], [cut // 2])),
                                      body.content_type):
            if part.is_file:
                await store.aput(part)
            else:
                await part.read_all(limit=1 << 20)

    with tempfile.TemporaryDirectory() as tmp:
        store = ss.ContentStore(Path(tmp) / "store", durable=False)
        try:
            asyncio.run(run(store))
        except ss.MultipartError:
            pass
        else:
            raise AssertionError(f"no MultipartError for an upload cut at {cut}")
        assert len(store) == 0
        assert_no_temp_files(tmp)

"""Hypothesis properties: exact bytes and hashlib's digest for any data and read
pattern; for any checks, success or the right error with the directory exactly
as before."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamstore as ss
from helpers import ShortReads, snapshot

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

data_st = st.binary(max_size=20_000)
pattern_st = st.lists(st.integers(min_value=1, max_value=9000), min_size=1, max_size=8)


@SETTINGS
@given(data=data_st, pattern=pattern_st, chunk_size=st.integers(1, 70_000))
def test_short_reads_store_exact_bytes(data: bytes, pattern: list[int], chunk_size: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        dest = Path(d) / "f"
        result = ss.store_from_reader(ShortReads(data, pattern), dest, chunk_size=chunk_size,
                                      durable=False)
        assert dest.read_bytes() == data
        assert result.size == len(data)
        assert result.sha256 == hashlib.sha256(data).hexdigest()
        assert snapshot(Path(d)) == {"f": data}


@SETTINGS
@given(chunks=st.lists(st.binary(max_size=5000), max_size=20), chunk_size=st.integers(1, 6000))
def test_iterables_of_any_chunk_sizes(chunks: list[bytes], chunk_size: int) -> None:
    data = b"".join(chunks)
    with tempfile.TemporaryDirectory() as d:
        dest = Path(d) / "f"
        result = ss.store_from_reader(iter(chunks), dest, chunk_size=chunk_size, durable=False)
        assert dest.read_bytes() == data
        assert result.sha256 == hashlib.sha256(data).hexdigest()


def expected_outcome(size: int, max_bytes: int | None, min_bytes: int, expected_size: int | None,
                     digest_ok: bool | None) -> type[Exception] | None:
    if max_bytes is not None and expected_size is not None and expected_size > max_bytes:
        return ss.TooLargeError
    if max_bytes is not None and size > max_bytes:
        return ss.TooLargeError
    if expected_size is not None and size > expected_size:
        return ss.TooLargeError
    if size < min_bytes:
        return ss.TooSmallError
    if expected_size is not None and size < expected_size:
        return ss.PartialWriteError
    if digest_ok is False:
        return ss.HashMismatchError
    return None


@SETTINGS
@given(
    data=data_st,
    pattern=pattern_st,
    max_bytes=st.none() | st.integers(0, 25_000),
    min_bytes=st.integers(0, 25_000),
    expected_size=st.none() | st.integers(0, 25_000),
    digest=st.sampled_from([None, "right", "wrong"]),
    old=st.none() | st.binary(max_size=100),
    overwrite=st.booleans(),
)
def test_success_or_the_right_error_and_the_directory_as_before(
    data: bytes, pattern: list[int], max_bytes: int | None, min_bytes: int,
    expected_size: int | None, digest: str | None, old: bytes | None, overwrite: bool,
) -> None:
    if max_bytes is not None and min_bytes > max_bytes:
        min_bytes = max_bytes
    sha = hashlib.sha256(data).hexdigest()
    wrong = hashlib.sha256(b"x" + data).hexdigest()
    expected_sha = {None: None, "right": sha.upper(), "wrong": wrong}[digest]
    with tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        dest = directory / "f"
        if old is not None:
            dest.write_bytes(old)
        before = snapshot(directory)
        want = expected_outcome(len(data), max_bytes, min_bytes, expected_size,
                                None if digest is None else digest == "right")
        if old is not None and not overwrite:
            want = ss.DestinationExistsError
        try:
            result = ss.store_from_reader(
                ShortReads(data, pattern), dest, limit=ss.SizeLimit(max_bytes, min_bytes),
                expected_size=expected_size, expected_sha256=expected_sha, overwrite=overwrite,
                durable=False,
            )
        except ss.StreamStoreError as exc:
            assert type(exc) is want, (exc, want)
            assert exc.dest == dest
            assert snapshot(directory) == before
        else:
            assert want is None
            assert result == ss.StoreResult(dest, len(data), sha)
            assert snapshot(directory) == {"f": data}

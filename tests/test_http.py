"""streamstore.http: status codes, safe messages, Content-Length, range parsing,
download planning (no server needed)."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import streamstore as ss
from streamstore.http import (
    ByteRange,
    RangeNotSatisfiable,
    content_length,
    error_detail,
    open_download,
    parse_range,
    status_for,
)


@pytest.mark.parametrize("exc, status", [
    (ss.TooLargeError(limit=1, size=2), 413),
    (ss.TooSmallError(limit=2, size=1), 400),
    (ss.MultipartError("bad"), 400),
    (ss.SourceError("gone"), 400),
    (ss.PartialWriteError(expected_size=2, actual_size=1), 400),
    (ss.HashMismatchError(expected="a" * 64, actual="b" * 64), 400),
    (ss.ObjectNotFoundError(digest="a" * 64), 404),
    (ss.InvalidDigestError(digest="x"), 404),
    (ss.DestinationExistsError(errno.EEXIST, "exists"), 409),
    (ss.DiskFullError(errno.ENOSPC, "full", "/srv/secret/dir", message="no space in /srv"),
     507),
    (ss.StoragePermissionError(errno.EACCES, "denied"), 500),
    (ss.DecryptionError("tampered"), 500),
    (ValueError("not ours"), None),
])
def test_status_for(exc: BaseException, status: int | None) -> None:
    assert status_for(exc) == status
    if isinstance(exc, ss.StreamStoreError):
        assert "/srv" not in error_detail(exc)


def test_content_length() -> None:
    assert content_length(None) is None
    assert content_length(" 42 ") == 42
    for bad in ("", "-1", "1.5", "0x10", "٣"):
        with pytest.raises(ss.MultipartError):
            content_length(bad)


@pytest.mark.parametrize("header, size, expected", [
    (None, 10, None),
    ("bytes=0-0", 10, (0, 1)),
    ("bytes=2-5", 10, (2, 4)),
    ("bytes=2-", 10, (2, 8)),
    ("bytes=5-1000", 10, (5, 5)),
    ("bytes=-3", 10, (7, 3)),
    ("bytes=-30", 10, (0, 10)),
    ("Bytes = 1 - 2", 10, (1, 2)),
    ("bytes=5-2", 10, None),          # invalid: ignored
    ("bytes=0-1,4-5", 10, None),      # several ranges: ignored
    ("items=0-1", 10, None),
    ("bytes=-", 10, None),
    ("bytes=abc", 10, None),
])
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    got = parse_range(header, size)
    assert (None if got is None else (got.start, got.length)) == expected


@pytest.mark.parametrize("header, size", [
    ("bytes=10-", 10), ("bytes=10-20", 10), ("bytes=-0", 10), ("bytes=0-", 0), ("bytes=-5", 0),
])
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


@given(size=st.integers(min_value=0, max_value=10_000),
       first=st.one_of(st.none(), st.integers(min_value=0, max_value=20_000)),
       last=st.one_of(st.none(), st.integers(min_value=0, max_value=20_000)))
def test_a_parsed_range_is_always_inside_the_object(size: int, first: int | None,
                                                    last: int | None) -> None:
    header = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    try:
        got = parse_range(header, size)
    except RangeNotSatisfiable:
        return
    if got is not None:
        assert 0 <= got.start and got.length >= 1 and got.start + got.length <= size
        assert got.content_range == f"bytes {got.start}-{got.end}/{size}"
        assert got.whole == (got.start == 0 and got.length == size)


def test_byte_range_and_errors_pickle() -> None:
    assert pickle.loads(pickle.dumps(ByteRange(1, 2, 3))) == ByteRange(1, 2, 3)


def test_open_download_plans(tmp_path: Path) -> None:
    store = ss.ContentStore(tmp_path / "s", durable=False)
    info = store.put(b"0123456789")
    whole = open_download(store, info.sha256)
    assert (whole.status, whole.length, b"".join(whole)) == (200, 10, b"0123456789")
    ranged = open_download(store, info.sha256, range_header="bytes=3-4", chunk_size=1)
    assert (ranged.status, list(ranged)) == (206, [b"3", b"4"])
    head = open_download(store, info.sha256, method="HEAD")
    assert head.headers["Content-Length"] == "10" and list(head) == []
    empty = store.put(b"")
    assert open_download(store, empty.sha256).headers["Content-Length"] == "0"
    assert open_download(store, empty.sha256, range_header="bytes=0-").status == 416
    weak = open_download(store, info.sha256, if_none_match=f'W/"{info.sha256}", "x"')
    assert weak.status == 304
    closed = open_download(store, info.sha256)
    closed.close()
    assert list(closed) == []
    with pytest.raises(ss.ObjectNotFoundError):
        open_download(store, "0" * 64)

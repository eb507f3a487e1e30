"""ContentStore.open_writer: the push-style put (bytes handed over piece by piece)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from streamstore import ContentStore, ObjectInfo, SizeLimit, TooLargeError, TooSmallError
from streamstore.testing import temp_files


def test_pushed_pieces_become_one_object(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    pieces = [b"alpha-", b"", b"beta-", b"g" * 100_000]
    with store.open_writer(metadata={"name": "a.bin"}) as w:
        for piece in pieces:
            w.write(piece)
        assert w.bytes_written == sum(map(len, pieces))
        assert w.result is None
    data = b"".join(pieces)
    assert isinstance(w.result, ObjectInfo)
    assert w.result.sha256 == hashlib.sha256(data).hexdigest()
    assert w.result.size == len(data)
    assert w.result.created is True
    assert w.result.metadata == {"name": "a.bin"}
    with store.open(w.result.sha256) as f:
        assert f.read() == data


def test_a_second_writer_of_the_same_bytes_deduplicates(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    for expect_created in (True, False):
        with store.open_writer(metadata={"n": int(expect_created)}) as w:
            w.write(b"same bytes")
        assert w.result is not None
        assert w.result.created is expect_created
        assert w.result.metadata == {"n": 1}
    assert len(store) == 1


def test_an_exception_in_the_block_stores_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    with pytest.raises(RuntimeError, match="boom"), store.open_writer() as w:
        w.write(b"x" * 1000)
        raise RuntimeError("boom")
    assert w.result is None
    assert len(store) == 0
    assert temp_files(tmp_path / "store") == []


def test_the_limit_bites_on_the_write_that_crosses_it(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    with pytest.raises(TooLargeError) as info, store.open_writer(limit=10) as w:
        w.write(b"12345")
        w.write(b"678901")
    assert info.value.size == 11
    with pytest.raises(ValueError, match="failed writer"):
        w.write(b"more")
    assert len(store) == 0
    assert temp_files(tmp_path / "store") == []


def test_end_checks_run_when_the_block_exits(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    with pytest.raises(TooSmallError), store.open_writer(limit=SizeLimit(min_bytes=5)) as w:
        w.write(b"abc")
    assert w.result is None
    assert len(store) == 0


def test_unknown_options_are_refused_before_anything_is_touched(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    with pytest.raises(TypeError, match="overwrite"):
        store.open_writer(overwrite=True)  # type: ignore[call-arg]
    assert "ObjectWriter" in repr(store.open_writer())

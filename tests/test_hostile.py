"""Hostile input: symlinks around the destination, files planted at the temp
name, odd and malicious names and digests, and endless streams against limits.

The promise: nothing is ever written outside the destination's directory or
through a link someone planted, and an oversized stream stops within one chunk
of its limit with nothing past the limit on disk.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import streamstore
from strategies import tree
from streamstore import (
    DestinationExistsError,
    StorageError,
    TooLargeError,
    astore_from_reader,
    store_from_reader,
)
from streamstore.testing import assert_no_temp_files, fail_storage

DATA = b"new content " * 1000
SECRET = b"the victim's data\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the destination directory that an attacker wants overwritten."""
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "victim"
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def out(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


# ------------------------------------------------------------------ symlinks at and above dest


def test_parent_symlink_is_followed_and_the_temp_lives_in_the_real_directory(
    out: Path, tmp_path: Path
) -> None:
    """Documented: like open(), a symlinked parent directory is followed.  The temp
    file is created through the same path, so it lands in the real directory and
    the rename stays atomic (same filesystem, same directory)."""
    real = tmp_path / "real"
    real.mkdir()
    (out / "link").symlink_to(real, target_is_directory=True)
    seen: list[str] = []

    class WhereIsTheTemp(streamstore.Hook):
        def on_start(self, expected_size: int | None) -> None:
            seen.extend(os.listdir(real))

    result = store_from_reader(DATA, out / "link" / "f", hooks=[WhereIsTheTemp()])
    assert result.path == out / "link" / "f"
    assert len(seen) == 1 and seen[0].startswith(".streamstore-tmp.")
    assert os.listdir(real) == ["f"] and (real / "f").read_bytes() == DATA
    assert os.listdir(out) == ["link"]


def test_symlink_at_dest_is_replaced_never_written_through(out: Path, victim: Path) -> None:
    dest = out / "f"
    dest.symlink_to(victim)
    store_from_reader(DATA, dest)
    assert not dest.is_symlink() and dest.read_bytes() == DATA
    assert victim.read_bytes() == SECRET


def test_symlink_to_a_directory_at_dest_is_replaced(out: Path, tmp_path: Path) -> None:
    target_dir = tmp_path / "somedir"
    target_dir.mkdir()
    (out / "f").symlink_to(target_dir, target_is_directory=True)
    store_from_reader(DATA, out / "f")
    assert (out / "f").read_bytes() == DATA
    assert os.listdir(target_dir) == []


@pytest.mark.parametrize("dangling", [False, True])
def test_symlink_at_dest_with_overwrite_false_is_an_existing_dest(
    out: Path, victim: Path, dangling: bool
) -> None:
    dest = out / "f"
    target = victim.with_name("not-yet") if dangling else victim
    dest.symlink_to(target)
    with pytest.raises(DestinationExistsError):
        store_from_reader(DATA, dest, overwrite=False)
    assert dest.is_symlink() and os.readlink(dest) == str(target)
    assert victim.read_bytes() == SECRET
    assert not victim.with_name("not-yet").exists()
    assert_no_temp_files(out)


def test_directory_at_dest_is_refused(out: Path) -> None:
    (out / "d").mkdir()
    (out / "d" / "inside").write_bytes(b"keep")
    with pytest.raises(StorageError, match="is a directory") as info:
        store_from_reader(DATA, out / "d")
    assert info.value.errno == errno.EISDIR
    assert tree(out) == {"d": "dir", "d/inside": b"keep"}


# ------------------------------------------------------------------ planted temp names


TOKEN = "0123456789abcdef"


def planted_name(dest_name: str) -> str:
    return f".streamstore-tmp.{os.getpid()}.{TOKEN}.{dest_name}"


@pytest.fixture
def predictable_tokens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the temp name's random part predictable: TOKEN first, then fresh ones.
    Tests may set the list to TOKEN forever to force every attempt to collide."""
    tokens = [TOKEN]
    real = secrets.token_hex

    def token_hex(nbytes: int | None = None) -> str:
        return tokens.pop(0) if tokens else real(nbytes)

    monkeypatch.setattr(secrets, "token_hex", token_hex)
    return tokens


def test_planted_symlink_at_the_temp_name_is_never_written_through(
    out: Path, victim: Path, predictable_tokens: list[str]
) -> None:
    planted = out / planted_name("f")
    planted.symlink_to(victim)
    store_from_reader(DATA, out / "f")
    assert (out / "f").read_bytes() == DATA
    assert victim.read_bytes() == SECRET
    assert planted.is_symlink() and os.readlink(planted) == str(victim)
    assert predictable_tokens == []  # the planted name really was tried first


def test_planted_dangling_symlink_never_creates_its_target(
    out: Path, victim: Path, predictable_tokens: list[str]
) -> None:
    target = victim.with_name("created-by-attack")
    (out / planted_name("f")).symlink_to(target)
    store_from_reader(DATA, out / "f")
    assert not target.exists()
    assert (out / "f").read_bytes() == DATA


def test_planted_regular_file_at_the_temp_name_is_left_alone(
    out: Path, predictable_tokens: list[str]
) -> None:
    planted = out / planted_name("f")
    planted.write_bytes(b"someone else's")
    store_from_reader(DATA, out / "f")
    assert planted.read_bytes() == b"someone else's"
    assert (out / "f").read_bytes() == DATA


def test_every_temp_name_taken_is_a_clear_error(
    out: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secrets, "token_hex", lambda nbytes=None: TOKEN)
    (out / planted_name("f")).symlink_to(victim)
    (out / "f").write_bytes(b"old")
    with pytest.raises(StorageError, match="unique temp file") as info:
        store_from_reader(DATA, out / "f")
    assert info.value.errno == errno.EEXIST
    assert not isinstance(info.value, DestinationExistsError)
    assert victim.read_bytes() == SECRET
    assert (out / "f").read_bytes() == b"old"


# ------------------------------------------------------------------ odd and malicious names


@pytest.mark.parametrize(
    "name",
    [
        "plain",
        "-starts-with-dash",
        "with\nnewline",
        "with\\backslash",
        " spaces ",
        "caf\u00e9",  # NFC
        "cafe\u0301",  # NFD: a different name, stored as given
        "\u202eexe.txt",  # right-to-left override
        "x" * 255,  # the longest name ext4 allows; the temp name is shortened
        ".streamstore-tmp.lookalike",
    ],
)
def test_odd_names_land_exactly_where_asked(out: Path, name: str) -> None:
    result = store_from_reader(DATA, out / name)
    assert result.path == out / name
    assert os.listdir(out) == [name]
    assert (out / name).read_bytes() == DATA


def test_bytes_dest_is_accepted(out: Path) -> None:
    store_from_reader(DATA, os.fsencode(out / "bytes-name"))  # type: ignore[arg-type]
    assert os.listdir(out) == ["bytes-name"]


def test_name_too_long_is_a_storage_error(out: Path) -> None:
    with pytest.raises(StorageError) as info:
        store_from_reader(DATA, out / ("x" * 256))
    assert info.value.errno == errno.ENAMETOOLONG
    assert os.listdir(out) == []


@pytest.mark.parametrize(
    "dest", ["", "a\0b", "dir/", ".", "..", "x/.."], ids=repr
)
def test_malformed_dest_is_a_value_error_before_anything(out: Path, dest: str) -> None:
    cwd = os.getcwd()
    os.chdir(out)
    try:
        called = []
        with pytest.raises(ValueError):
            store_from_reader(iter(lambda: called.append(1) or b"x", None), dest)
        assert called == []
    finally:
        os.chdir(cwd)
    assert os.listdir(out) == []


@pytest.mark.parametrize(
    "key",
    [
        "../../etc/passwd",
        "a" * 63,
        "a" * 65,
        "a" * 63 + "\0",
        "a" * 64 + "\n",
        " " + "a" * 63,
        "ab/" + "c" * 61,
        "ab\\" + "c" * 61,
        "0x" + "a" * 62,
        "\uff10" * 64,  # fullwidth digit zero
        "\u0660" * 64,  # arabic-indic digit zero: str.isdigit() is True
        "\u0430" * 64,  # cyrillic a
        "g" * 64,
        "",
    ],
    ids=repr,
)
def test_malicious_digests_never_reach_the_filesystem(tmp_path: Path, key: str) -> None:
    store = streamstore.ContentStore(tmp_path / "store")
    before = tree(tmp_path)
    for method in (store.info, store.open, store.path, store.delete, store.verify):
        with pytest.raises(streamstore.InvalidDigestError) as info:
            method(key)
        assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError):
        store.put(b"data", expected_sha256=key)
    assert tree(tmp_path) == before


def test_uppercase_digest_is_the_same_object(tmp_path: Path) -> None:
    store = streamstore.ContentStore(tmp_path / "store")
    info = store.put(DATA)
    assert store.info(info.sha256.upper()).sha256 == info.sha256
    assert store.path(info.sha256.upper()) == store.path(info.sha256)


# ------------------------------------------------------------------ endless streams


LIMIT = 1024 * 1024
CHUNK = 64 * 1024


def endless_chunks(counter: list[int]) -> Iterator[bytes]:
    chunk = b"\xff" * CHUNK
    while True:
        counter[0] += 1
        yield chunk


class EndlessReader:
    """readinto() that never ends."""

    def __init__(self) -> None:
        self.bytes_read = 0

    def readinto(self, buffer: memoryview) -> int:
        buffer[:] = b"\xee" * len(buffer)
        self.bytes_read += len(buffer)
        return len(buffer)


def test_endless_iterable_stops_within_one_chunk_and_writes_nothing_past_the_limit(
    out: Path,
) -> None:
    counter = [0]
    # Proof that no byte past the limit reaches the disk: any write beyond
    # LIMIT bytes would raise DiskFullError instead of TooLargeError.
    with fail_storage(out, after_bytes=LIMIT) as fault, pytest.raises(TooLargeError) as info:
        store_from_reader(endless_chunks(counter), out / "f", limit=LIMIT, chunk_size=CHUNK)
    assert fault.triggered == 0
    assert info.value.limit == LIMIT
    assert LIMIT < info.value.size <= LIMIT + CHUNK
    assert counter[0] == LIMIT // CHUNK + 1
    assert os.listdir(out) == []


@pytest.mark.parametrize("limit", [0, 1, LIMIT - 1, LIMIT, LIMIT + 1])
def test_endless_reader_against_odd_limits(out: Path, limit: int) -> None:
    reader = EndlessReader()
    with fail_storage(out, after_bytes=limit), pytest.raises(TooLargeError) as info:
        store_from_reader(reader, out / "f", limit=limit, chunk_size=CHUNK)
    assert limit < info.value.size <= limit + CHUNK
    assert reader.bytes_read <= limit + CHUNK
    assert os.listdir(out) == []


def test_endless_stream_against_a_declared_size(out: Path) -> None:
    reader = EndlessReader()
    with fail_storage(out, after_bytes=5000), pytest.raises(TooLargeError, match="declared"):
        store_from_reader(reader, out / "f", expected_size=5000, chunk_size=4096)
    assert reader.bytes_read <= 5000 + 4096
    assert os.listdir(out) == []


async def endless_async(produced: list[int]) -> AsyncIterator[bytes]:
    chunk = b"\xdd" * CHUNK
    while True:
        produced[0] += len(chunk)
        yield chunk


def test_endless_async_stream_stops_within_one_chunk(out: Path) -> None:
    produced = [0]
    with fail_storage(out, after_bytes=LIMIT), pytest.raises(TooLargeError):
        asyncio.run(astore_from_reader(endless_async(produced), out / "f", limit=LIMIT,
                                       chunk_size=CHUNK))
    # fail_storage fails any write past LIMIT, so TooLargeError proves nothing
    # past the limit was written; the loop counts bytes as it reads them.
    assert produced[0] <= LIMIT + CHUNK
    assert os.listdir(out) == []


def test_endless_async_stream_reads_at_most_one_chunk_past_the_limit(out: Path) -> None:
    produced = [0]
    with pytest.raises(TooLargeError):
        asyncio.run(astore_from_reader(endless_async(produced), out / "f", limit=10,
                                       chunk_size=CHUNK))
    assert produced[0] <= 10 + CHUNK


def test_endless_stream_into_content_store(tmp_path: Path) -> None:
    store = streamstore.ContentStore(tmp_path / "store")
    counter = [0]
    with fail_storage(store.root, after_bytes=LIMIT), pytest.raises(TooLargeError):
        store.put(endless_chunks(counter), limit=LIMIT)
    assert counter[0] <= LIMIT // CHUNK + 2
    assert len(store) == 0
    assert_no_temp_files(store.root)
    assert hashlib.sha256(b"").hexdigest() not in store

"""Slow encryption tests: large streams in constant memory, and long
randomized round trips (``-m slow``)."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamstore import ContentStore
from streamstore._crypto import SEGMENT_SIZE
from streamstore.crypto import Keyring, generate_key
from test_crypto_io import MiB, Pattern, heap_peaks

RING = Keyring({"slow": generate_key()})


@pytest.mark.slow
def test_one_gib_encrypted_and_decrypted_with_a_flat_heap(tmp_path: Path) -> None:
    small = heap_peaks(16 * MiB, tmp_path / "small")
    large = heap_peaks(1024 * MiB, tmp_path / "large")
    for before, after in zip(small, large, strict=True):
        assert after < 2 * MiB, f"peak heap {after} bytes for 1 GiB"
        assert after <= before + 64 * 1024, f"heap grew with size: {before} -> {after}"


@pytest.mark.slow
def test_a_durable_encrypted_store_of_256_mib(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store", encryption=RING)
    size = 256 * MiB
    expected = hashlib.sha256()
    source = Pattern(size)
    block = bytes(source.block)
    left = size
    while left:
        n = min(left, len(block))
        expected.update(block[:n])
        left -= n
    info = store.put(Pattern(size))
    assert info.sha256 == expected.hexdigest() and info.size == size
    assert store.verify() == []
    with store.open(info.sha256) as f:
        f.seek(size - 10)
        assert len(f.read()) == 10


@pytest.mark.slow
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 6 * SEGMENT_SIZE), reads=st.lists(
    st.tuples(st.integers(0, 6 * SEGMENT_SIZE + 5), st.integers(0, 2 * SEGMENT_SIZE)),
    max_size=8))
def test_many_random_sizes_and_ranges(tmp_path: Path, size: int,
                                      reads: list[tuple[int, int]]) -> None:
    store = ContentStore(tmp_path / "hyp", durable=False, encryption=RING)
    plain = random.Random(size).randbytes(size)
    info = store.put(plain)
    with store.open(info.sha256) as f:
        for start, length in reads:
            f.seek(start)
            assert f.read(length) == plain[start : start + length]
        f.seek(0, os.SEEK_SET)
        assert f.read() == plain

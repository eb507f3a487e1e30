"""Constant memory: the Python heap peak does not grow with the stream's size."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

import streamstore as ss

MiB = 1024 * 1024


class Pattern:
    """A readinto() source of ``size`` bytes that allocates nothing per call."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = memoryview(bytes(range(256)) * 512)  # 128 KiB

    def readinto(self, buffer: memoryview) -> int:
        n = min(len(buffer), self.left, len(self.block))
        buffer[:n] = self.block[:n]
        self.left -= n
        return n


def peak_heap(size: int, dest: Path, **kwargs: object) -> int:
    source = Pattern(size)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = ss.store_from_reader(source, dest, **kwargs)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.size == size
    dest.unlink()
    return peak


def test_storing_256_mib_keeps_the_heap_under_1_mib(dest_dir: Path) -> None:
    small = peak_heap(16 * MiB, dest_dir / "small", durable=False)
    large = peak_heap(256 * MiB, dest_dir / "large", durable=False)
    assert large < 1 * MiB, f"peak heap {large} bytes for 256 MiB"
    assert large <= small + 64 * 1024, f"heap grew with size: {small} -> {large}"


def test_progress_and_hooks_do_not_add_per_chunk_memory(dest_dir: Path) -> None:
    reports: list[ss.Progress] = []
    peak = peak_heap(64 * MiB, dest_dir / "f", durable=False, progress=reports.append,
                     limit=ss.SizeLimit(max_bytes=128 * MiB), expected_size=64 * MiB)
    assert peak < 1 * MiB
    assert reports[-1].bytes_done == 64 * MiB


@pytest.mark.slow
def test_storing_2_gib_durably_keeps_the_heap_flat(dest_dir: Path) -> None:
    small = peak_heap(64 * MiB, dest_dir / "small")
    large = peak_heap(2048 * MiB, dest_dir / "large")
    assert large < 1 * MiB, f"peak heap {large} bytes for 2 GiB"
    assert large <= small + 64 * 1024, f"heap grew with size: {small} -> {large}"

"""The fuzz harness: random data, sources, chunk patterns, limits, declared sizes,
digests, hooks and storage faults at random points.

The invariant, always: the store succeeds with exactly the source's bytes and
nothing else changed, or it raises one of the errors the contract allows for
the injected faults and the directory is exactly as before.  (The oracle in
``strategies._allowed`` also says when success is *impossible*: every listed
fault fires if the store gets that far.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamstore
from strategies import (
    HookBoom,
    SourceBoom,
    StoreCase,
    split,
    store_cases,
    tree,
)
from streamstore import SourceError, StoreResult, StreamStoreError
from streamstore.testing import fail_storage

FUZZ_SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

olds = st.one_of(st.none(), st.binary(max_size=64))


def check(
    case: StoreCase,
    old: bytes | None,
    root: Path,
    run: Callable[[Any, Path, dict[str, Any]], StoreResult],
) -> str:
    """Run one case in a fresh directory under ``root`` and check the invariant."""
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        d = Path(tmp)
        dest = d / "dest"
        allowed = set(case.allowed)
        if old is not None:
            dest.write_bytes(old)
            if not case.overwrite:
                allowed.add(streamstore.DestinationExistsError)
        before = tree(d)
        fault = (
            fail_storage(d, at=case.storage_at, after_bytes=case.storage_after)  # type: ignore[arg-type]
            if case.storage_at != "none"
            else contextlib.nullcontext()
        )
        try:
            with fault:
                result = run(case.source(), dest, case.kwargs())
        except Exception as exc:
            assert allowed, f"{case}: unexpected {exc!r}"
            assert isinstance(exc, tuple(allowed)), f"{case}: {exc!r} not in {allowed}"
            if isinstance(exc, SourceError):
                assert isinstance(exc.__cause__, SourceBoom), exc.__cause__
            if isinstance(exc, StreamStoreError):
                assert exc.dest == dest
            assert tree(d) == before, f"{case}: directory changed after {exc!r}"
            return type(exc).__name__
        assert not allowed, f"{case}: succeeded, but must fail with one of {allowed}"
        assert result.path == dest
        assert result.size == len(case.data)
        assert result.sha256 == hashlib.sha256(case.data).hexdigest()
        assert tree(d) == {**before, "dest": case.data}
        return "ok"


def run_sync(source: Any, dest: Path, kwargs: dict[str, Any]) -> StoreResult:
    return streamstore.store_from_reader(source, dest, **kwargs)


def run_async(source: Any, dest: Path, kwargs: dict[str, Any]) -> StoreResult:
    return asyncio.run(streamstore.astore_from_reader(source, dest, **kwargs))


@FUZZ_SETTINGS
@given(case=store_cases(), old=olds, overwrite=st.booleans())
def test_fuzz_store_from_reader(
    tmp_path: Path, case: StoreCase, old: bytes | None, overwrite: bool
) -> None:
    case.overwrite = overwrite
    check(case, old, tmp_path, run_sync)


async def _agen(chunks: list[bytes], fail_at: int | None) -> AsyncIterator[bytes]:
    done = 0
    for chunk in chunks:
        if fail_at is not None and done + len(chunk) > fail_at:
            raise SourceBoom("async source failed")
        done += len(chunk)
        yield chunk
    if fail_at is not None and fail_at <= done:
        raise SourceBoom("async source failed at the end")


@settings(FUZZ_SETTINGS, max_examples=60)
@given(case=store_cases(), old=olds, as_async_iterable=st.booleans())
def test_fuzz_astore_from_reader(
    tmp_path: Path, case: StoreCase, old: bytes | None, as_async_iterable: bool
) -> None:
    """The async front end, with sync sources (read in a worker thread) and async iterables."""

    def run(source: Any, dest: Path, kwargs: dict[str, Any]) -> StoreResult:
        if as_async_iterable and case.kind in ("chunks", "generator", "failing"):
            fail_at = case.source_fail_at if case.kind != "chunks" else None
            source = _agen(split(case.data, [max(1, p) for p in case.pattern]), fail_at)
        return run_async(source, dest, kwargs)

    check(case, old, tmp_path, run)


@pytest.mark.slow
@settings(FUZZ_SETTINGS, max_examples=3000)
@given(case=store_cases(), old=olds, overwrite=st.booleans())
def test_fuzz_store_from_reader_long(
    tmp_path: Path, case: StoreCase, old: bytes | None, overwrite: bool
) -> None:
    case.overwrite = overwrite
    check(case, old, tmp_path, run_sync)


def test_the_oracle_is_not_vacuous(tmp_path: Path) -> None:
    """Both outcomes, and every kind of fault, are really produced by the strategy."""
    seen: set[str] = set()

    @settings(FUZZ_SETTINGS, max_examples=400, derandomize=True, database=None)
    @given(case=store_cases())
    def collect(case: StoreCase) -> None:
        seen.add(check(case, None, tmp_path, run_sync))

    collect()
    assert "ok" in seen
    assert {"SourceError", "HookBoom", "DiskFullError", "HashMismatchError"} <= seen, seen
    assert seen & {"TooLargeError", "TooSmallError", "PartialWriteError"}, seen


def test_hook_errors_propagate_unchanged(tmp_path: Path) -> None:
    case = StoreCase(data=b"abc", kind="bytes", pattern=[1], chunk_size=1, hook_phase="finish")
    case.allowed = {HookBoom}
    assert check(case, b"old", tmp_path, run_sync) == "HookBoom"


# ------------------------------------------------------------------ the atheris target

FUZZ_TARGET = Path(__file__).parent.parent / "fuzz" / "fuzz_store.py"


def _load_target() -> Any:
    spec = importlib.util.spec_from_file_location("fuzz_store", FUZZ_TARGET)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@settings(FUZZ_SETTINGS, max_examples=150)
@given(data=st.binary(max_size=600))
def test_atheris_target_runs_without_atheris(data: bytes) -> None:
    """The atheris entry point's per-input check holds for arbitrary input (no atheris needed)."""
    _TARGET.test_one_input(data)


_TARGET = _load_target()

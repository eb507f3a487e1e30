"""An interrupt at every instruction of a store: the commit point is honest.

The rule: a call that raises has left ``dest`` exactly as it was, with no temp
file and no descriptor left behind; a call that made ``dest`` visible reports
success -- or raises an exception carrying the committed result as
``exc.committed``.  Each test walks an injected ``KeyboardInterrupt`` over
every Python call/return and every C call/return of one operation (see
``tests/interrupts.py``), then checks the rule.
"""

from __future__ import annotations

import gc
import hashlib
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import streamstore as ss
from interrupts import (
    Injected,
    interrupt_at,
    open_fds,
    os_threads,
    settle_threads,
    tolerant_unraisablehook,
)
from streamstore.testing import temp_files

OLD = b"the old content"
NEW = bytes(range(256)) * 400  # 100 KiB: several chunks, no hashing thread


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def describe(value: Any) -> str:
    if isinstance(value, BaseException):
        return "".join(traceback.format_exception(value))
    return repr(value)


@dataclass
class Outcome:
    """What one interrupted run did (the exception itself is dropped before the
    leak checks, so that finalizers of what it kept alive have run)."""

    kind: str  # "done" | "returned" | "raised"
    result: Any  # the return value, or exc.committed
    injected: bool  # raised the injected interrupt (not some other error)
    text: str


def collect_garbage() -> None:
    hook, sys.unraisablehook = sys.unraisablehook, tolerant_unraisablehook(sys.unraisablehook)
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook


def walk(
    make: Callable[[int], Callable[[], Any]],
    check: Callable[[int, Outcome], None],
    *,
    then: int | None = None,
    limit: int = 20_000,
) -> int:
    """Run ``make(n)()`` interrupted at event n = 1, 2, ... until it completes
    uninterrupted; then, after a garbage collection, verify that no descriptor
    and no thread was left behind and ``check(n, outcome)``.  Returns how many
    points were walked."""
    threads = os_threads()
    for n in range(1, limit):
        fn = make(n)
        before = open_fds()
        kind, value = interrupt_at(n, fn, then=then)
        outcome = Outcome(
            kind,
            getattr(value, "committed", None) if kind == "raised" else value,
            isinstance(value, Injected),
            describe(value),
        )
        del value, fn
        if open_fds() != before or os_threads() != threads:
            collect_garbage()  # the backstops of what an interrupt left to the collector
        assert settle_threads(threads) == 0, f"n={n}: a thread was left running: {outcome.text}"
        leaked = open_fds() - before
        assert not leaked, f"n={n}: leaked fds {leaked} ({kind}: {outcome.text})"
        check(n, outcome)
        if kind == "done":
            return n
    raise AssertionError("the operation never completed")


def expect_honest(dest: Path, old: bytes | None, new: bytes) -> Callable[[int, Outcome], None]:
    """The commit-point rule for a store of ``new`` into ``dest`` (``old``: before)."""

    def check(n: int, out: Outcome) -> None:
        assert temp_files(dest.parent) == [], f"n={n}: temp left ({out.kind}: {out.text})"
        now = dest.read_bytes() if dest.exists() else None
        if out.kind in ("done", "returned"):
            assert now == new, f"n={n}: returned but dest does not hold the new bytes"
            assert out.result.sha256 == sha(new) and out.result.location == str(dest)
            return
        assert out.injected, f"n={n}: unexpected {out.text}"
        if out.result is not None:
            assert now == new, f"n={n}: exc.committed but dest not replaced"
            assert out.result.sha256 == sha(new)
        else:
            assert now == old, f"n={n}: raised without .committed but dest changed: {out.text}"

    return check


@pytest.mark.parametrize("overwrite", [True, False])
@pytest.mark.parametrize("durable", [True, False])
def test_store_from_reader_interrupted_anywhere(tmp_path: Path, overwrite: bool,
                                                durable: bool) -> None:
    dest = tmp_path / "f"
    old = None if not overwrite else OLD

    def make(n: int) -> Callable[[], Any]:
        if dest.exists():
            dest.unlink()
        if old is not None:
            dest.write_bytes(old)
        return lambda: ss.store_from_reader(NEW, dest, overwrite=overwrite, durable=durable,
                                            chunk_size=16384)

    points = walk(make, expect_honest(dest, old, NEW))
    assert points > 100


def test_open_writer_interrupted_anywhere(tmp_path: Path) -> None:
    dest = tmp_path / "f"

    def make(n: int) -> Callable[[], Any]:
        dest.write_bytes(OLD)

        def run() -> Any:
            with ss.open_writer(dest, durable=False, expected_size=len(NEW)) as w:
                for i in range(0, len(NEW), 30_000):
                    w.write(NEW[i : i + 30_000])
            return w.result

        return run

    walk(make, expect_honest(dest, OLD, NEW))


def test_hashing_thread_store_interrupted_anywhere(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream past the hashing-thread threshold: the thread is always joined."""
    from streamstore._core import Ingest

    monkeypatch.setattr(Ingest, "hash_thread_after", 64 * 1024)
    dest = tmp_path / "f"
    data = bytes(range(256)) * 1024  # 256 KiB, 8 chunks of 32 KiB

    def make(n: int) -> Callable[[], Any]:
        dest.write_bytes(OLD)
        return lambda: ss.store_from_reader(data, dest, durable=False)

    walk(make, expect_honest(dest, OLD, data))


def test_content_store_put_interrupted_anywhere(tmp_path: Path) -> None:
    store = ss.ContentStore(tmp_path / "store", durable=False)
    digest = sha(NEW)

    def make(n: int) -> Callable[[], Any]:
        store.delete(digest)
        return lambda: store.put(NEW, metadata={"n": 1})

    def check(n: int, out: Outcome) -> None:
        assert temp_files(tmp_path / "store") == [], f"n={n}: temp left: {out.text}"
        if out.kind in ("done", "returned"):
            assert digest in store and out.result.sha256 == digest
            return
        if out.result is None:
            assert digest not in store, f"n={n}: raised without .committed but stored"
        else:
            assert digest in store and store.verify() == []

    walk(make, check)


def test_a_second_interrupt_during_cleanup_still_cleans_up(tmp_path: Path) -> None:
    """Interrupt once mid-stream, then again at every event of the cleanup."""
    dest = tmp_path / "f"
    first = 40  # inside the first chunks of the stream

    def make_second(then: int) -> tuple[str, Any]:
        dest.write_bytes(OLD)
        return interrupt_at(first, lambda: ss.store_from_reader(NEW, dest, durable=False,
                                                               chunk_size=16384), then=then)

    for then in range(1, 400):
        before = open_fds()
        outcome, value = make_second(then)
        text = describe(value)
        del value
        collect_garbage()
        assert open_fds() - before == set(), f"then={then}: fd leaked: {text}"
        assert temp_files(tmp_path) == [], f"then={then}: temp left: {text}"
        assert outcome == "raised" and dest.read_bytes() == OLD


def test_walk_detects_a_leak() -> None:
    """The harness itself: an operation that loses a descriptor is caught."""
    leaky: list[int] = []

    def make(n: int) -> Callable[[], Any]:
        def run() -> None:
            fd = os.open(os.devnull, os.O_RDONLY)
            leaky.append(fd)
            os.close(fd)

        return run

    with pytest.raises(AssertionError, match="leaked fds"):
        walk(make, lambda n, outcome: None)
    for fd in leaky:
        try:
            os.close(fd)
        except OSError:
            pass

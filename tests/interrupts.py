"""Inject an interrupt at every point of an operation.

A profile function sees every Python call and return and every call into C
(``c_call``) and return from it (``c_return``).  :func:`interrupt_at` raises
``KeyboardInterrupt`` from it at the n-th such event -- exactly what a signal
handler can do between two instructions, but deterministic, so a test can
walk n = 1, 2, 3, ... over every point of a store.  With ``then`` the profile
stays on after the first interrupt and raises a second one that many events
later (a second Ctrl-C landing in the cleanup).

The one point not walked is the public function's own return into the
caller: an interrupt there arrives after the call completed (the value is
lost by the interpreter, not by streamstore), the same as one landing on the
caller's next instruction.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import streamstore

T = TypeVar("T")

EVENTS = frozenset({"call", "return", "c_call", "c_return"})
PACKAGE = os.path.dirname(os.path.abspath(streamstore.__file__))


def _returns_to_caller(frame: Any) -> bool:
    back = frame.f_back
    return back is None or not os.path.abspath(back.f_code.co_filename).startswith(PACKAGE)


class Injected(KeyboardInterrupt):
    """The interrupt raised by the profile function."""


def interrupt_at(n: int, fn: Callable[[], T], *, then: int | None = None) -> tuple[str, Any]:
    """Run ``fn()`` raising :class:`Injected` at the ``n``-th profile event.

    Returns ``("done", value)`` when ``fn`` returned before the n-th event
    (the walk over n is complete), ``("returned", value)`` when it returned
    although an interrupt was raised (it was absorbed and reported some other
    way, e.g. as ``committed``), ``("raised", exc)`` otherwise.
    """
    count = 0
    fired = 0
    second = None if then is None else n + then
    active = [True]

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count, fired
        if not active[0] or event not in EVENTS or (
            event == "return" and _returns_to_caller(frame)
        ):
            return
        count += 1
        if count == n or count == second:
            fired += 1
            if second is None or count == second:
                sys.setprofile(None)
            raise Injected(f"injected at event {count} ({event})")

    previous_hook = sys.unraisablehook
    sys.unraisablehook = tolerant_unraisablehook(previous_hook)
    sys.setprofile(profile)
    try:
        value = fn()
    except BaseException as exc:
        active[0] = False
        sys.setprofile(None)
        return "raised", exc
    finally:
        sys.unraisablehook = previous_hook
    active[0] = False
    sys.setprofile(None)
    return ("returned" if fired else "done"), value


def tolerant_unraisablehook(previous: Any) -> Any:
    """An unraisable-exception hook that drops what interrupts legitimately cause.

    An interrupt landing in a finalizer (a generator closed by the garbage
    collector) is printed and dropped by the interpreter, as a real one would
    be: the operation goes on, and the result must still be right.  A file
    object whose ``with`` block was never entered because the interrupt hit
    its ``__enter__`` is closed by the garbage collector, with a
    ``ResourceWarning`` (an error under this suite's warning filter).
    """

    def hook(info: Any) -> None:
        if not isinstance(info.exc_value, (Injected, ResourceWarning)):
            previous(info)

    return hook


def open_fds() -> set[int]:
    """This process's open file descriptors."""
    return {int(name) for name in os.listdir("/proc/self/fd")}


def os_threads() -> int:
    """This process's threads, as the kernel counts them (bare ``_thread`` ones too)."""
    return len(os.listdir("/proc/self/task"))


def settle_threads(before: int, timeout: float = 5.0) -> int:
    """Wait for helper threads to exit; the number still alive beyond ``before``."""
    import time

    deadline = time.monotonic() + timeout
    while os_threads() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    return os_threads() - before

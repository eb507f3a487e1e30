"""Hashing on a second thread: the optimisation :class:`~streamstore._core.Ingest`
switches to once a stream proves large.

One thread does read -> hooks -> write; a second one runs ``hashlib.update``.
Both calls release the GIL for buffers of a few KiB and more, so on two cores
hashing overlaps reading and writing instead of adding to them.  Nothing else
changes: hooks still run on the caller's thread, before the write, in order;
the hash sees the chunks in the same order; the digest is read only after the
thread has been joined.

Chunks are handed over in batches of :data:`BATCH` (one thread wake-up per
batch, not per chunk), with at most :data:`MAX_BATCHES` batches queued or being
hashed; so once :meth:`HashThread.submit` returns, at most
:data:`MAX_IN_FLIGHT` chunks are still referenced.  A ``readinto`` source
therefore fills a ring of :data:`RING_SLOTS` = ``MAX_IN_FLIGHT + 1`` reused
buffers (:class:`RingBuffer`), so a buffer is never refilled while it is hashed.
Chunks backed by ``bytes`` are immutable and handed over as they are; any
other chunk (a caller's reused ``bytearray``, an ``mmap``) is copied first.
Memory stays bounded: at most ``RING_SLOTS`` chunks of at most
:data:`MAX_CHUNK` bytes.
"""

from __future__ import annotations

import _thread
import weakref
from collections.abc import Callable
from queue import SimpleQueue

__all__ = ["BATCH", "HASH_THREAD_AFTER", "MAX_BATCHES", "MAX_CHUNK", "MAX_IN_FLIGHT",
           "MIN_CHUNK", "RING_SLOTS", "HashThread", "RingBuffer"]

HASH_THREAD_AFTER = 2 * 1024 * 1024
"""Bytes a stream must reach before the hashing thread starts: small stores
never pay for a thread (starting one costs ~50-100 us)."""

BATCH = 4
MAX_BATCHES = 3
MAX_IN_FLIGHT = MAX_BATCHES * BATCH + BATCH - 1  # queued batches + the one being filled
RING_SLOTS = MAX_IN_FLIGHT + 1  # 16 buffers: 512 KiB at the default 32 KiB chunk size
MIN_CHUNK = 4 * 1024
"""Below this chunk size hashlib keeps the GIL (it releases it from 2 KiB) and
queueing costs more than it saves: such stores stay on one thread."""
MAX_CHUNK = 64 * 1024
"""Above this chunk size the ring would cost too much memory: one thread."""


class RingBuffer(bytearray):
    """A source buffer that is refilled only after :data:`MAX_IN_FLIGHT` newer
    chunks were handed out, so the hashing thread may read it without a copy."""

    __slots__ = ()


class _State:
    __slots__ = ("error", "exited", "running", "stop")

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.stop = False
        self.exited = False
        self.running = _thread.allocate_lock()  # held from creation until the thread exits


def _run(update: Callable[[memoryview], object], work: SimpleQueue[list[memoryview] | None],
         done: SimpleQueue[None], state: _State) -> None:
    try:
        get = work.get
        finished = done.put
        while (batch := get()) is not None:
            if not state.stop:
                try:
                    for chunk in batch:
                        update(chunk)
                except BaseException as exc:  # e.g. MemoryError: reported by finish()
                    state.error = exc
                    state.stop = True
            finished(None)
    finally:
        _running.discard(state)
        state.exited = True
        state.running.release()


_running: set[_State] = set()


def running_threads() -> int:
    """How many hashing threads are running now (for tests)."""
    return len(_running)


def _stop(work: SimpleQueue[list[memoryview] | None], state: _State) -> None:
    state.stop = True
    work.put(None)


class HashThread:
    """Runs ``update(chunk)`` on a second thread, in submission order.

    :meth:`finish` (success) or :meth:`close` (failure) must be called: both
    join the thread.
    """

    def __init__(self, update: Callable[[memoryview], object]) -> None:
        self._work: SimpleQueue[list[memoryview] | None] = SimpleQueue()
        self._batch: list[memoryview] = []
        self._done: SimpleQueue[None] = SimpleQueue()
        self._put = self._work.put
        self._wait = self._done.get
        self._in_flight = 0  # batches handed over whose completion was not yet collected
        self._state = _State()
        self._closed = False
        # The thread holds the queues and the state, never this object: if the
        # object is dropped unclosed (an interrupt before its owner saw it),
        # the finalizer stops the thread.  A bare _thread (one C call to
        # start, no registry) leaves nothing half-registered if interrupted.
        weakref.finalize(self, _stop, self._work, self._state)
        self._state.running.acquire()
        _thread.start_new_thread(_run, (update, self._work, self._done, self._state))
        _running.add(self._state)  # the thread cannot exit before it is told to

    @property
    def _error(self) -> BaseException | None:
        return self._state.error

    def submit(self, chunk: memoryview) -> None:
        """Queue ``chunk`` for hashing; returns once at most MAX_IN_FLIGHT are held."""
        owner = type(chunk.obj)
        if owner is not bytes and owner is not RingBuffer:
            chunk = memoryview(bytes(chunk))  # the caller may reuse its buffer
        batch = self._batch
        batch.append(chunk)
        if len(batch) == BATCH:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._in_flight < MAX_BATCHES:
            self._in_flight += 1
        else:
            self._wait()  # an older batch is done: its buffers may be refilled
        self._put(self._batch)
        self._batch = []

    def finish(self) -> None:
        """Wait until every chunk is hashed and the thread has exited."""
        if self._batch:
            self._hand_over()
        self.close(stop=False)
        if self._error is not None:
            raise self._error

    def close(self, *, stop: bool = True) -> None:
        """Stop (skipping what is still queued unless ``stop=False``) and join."""
        if stop:
            self._state.stop = True
        if not self._closed:
            self._put(None)  # twice after an interrupt is harmless: the first ends the thread
            self._closed = True
        try:
            self._join()
        except BaseException:
            # Interrupted while joining: the thread only has a few chunks left
            # to skip or hash, so wait for it before the caller cleans up.
            self._join()
            raise

    def _join(self) -> None:
        state = self._state
        while not state.exited:
            if state.running.acquire(timeout=0.05):
                state.running.release()

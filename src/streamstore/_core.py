"""The ingest core: the one place that counts, hashes, checks, runs the hooks
and orders the commit.  It does no I/O itself: the bytes go to a
:class:`~streamstore.Sink`, and only the sink touches a disk or a network.

Every front end (``store_from_reader``, ``astore_from_reader``, the writers,
``ContentStore``) is a short loop around it::

    ingest = Ingest(sink, options)            # arguments checked, nothing touched
    try:
        ingest.start()                        # sink.start, on_start hooks
        for chunk in chunks:
            ingest.feed(chunk)                # caps, on_chunk hooks, hash, sink.write
        return ingest.finish()                # end checks, prepare, on_finish, commit, on_commit
    except BaseException as exc:
        raise ingest.fail(exc)                # abort, on_abort hooks, errors= mapping

The commit point is ``sink.commit``: before it every failure aborts the sink;
once it has begun, an exception is reported as committed if the sink says its
bytes are visible (``exc.committed``), never as a failure.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from time import monotonic
from typing import Any

from ._errors import (
    HashMismatchError,
    PartialWriteError,
    StreamStoreError,
    TooLargeError,
    TooSmallError,
)
from ._hooks import ProgressHook
from ._pipeline import HASH_THREAD_AFTER, MAX_CHUNK, MIN_CHUNK, HashThread
from ._types import ErrorMapper, Hook, IngestOptions, Sink, SizeLimit, StoreResult

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "INGEST_OPTIONS",
    "Ingest",
    "add_note",
    "check_int",
    "check_sha256",
    "check_sink",
    "map_error",
    "split_options",
]

DEFAULT_CHUNK_SIZE = 32 * 1024
INGEST_OPTIONS = frozenset(IngestOptions.__annotations__)
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")

# States of an Ingest.
_NEW, _STARTED, _COMMITTING, _COMMITTED, _FAILED = range(5)


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` if it is an int (not a bool) >= ``minimum``; TypeError/ValueError naming it."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_sha256(value: object, name: str = "expected_sha256") -> str:
    """``value`` lowercased if it is 64 hex characters; TypeError/ValueError naming it."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a hex str, got {type(value).__name__}")
    if _SHA256_RE.fullmatch(value) is None:
        raise ValueError(f"{name} must be 64 hexadecimal characters, got {value!r}")
    return value.lower()


def split_options(
    options: Mapping[str, Any], extra: frozenset[str], what: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword ``options`` into (ingest options, ``extra`` options);
    TypeError naming any other keyword, as a Python signature would."""
    ingest: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for name, value in options.items():
        if name in INGEST_OPTIONS:
            ingest[name] = value
        elif name in extra:
            rest[name] = value
        else:
            known = ", ".join(sorted(INGEST_OPTIONS | extra))
            raise TypeError(f"{what} got an unexpected keyword argument {name!r} "
                            f"(options: {known})")
    return ingest, rest


def _check_hooks(hooks: object) -> list[Hook]:
    if hooks == ():
        return []
    if isinstance(hooks, Hook):
        raise TypeError("hooks must be a sequence of Hook objects; wrap a single hook: [hook]")
    if not isinstance(hooks, Sequence) or isinstance(hooks, (str, bytes)):
        raise TypeError(f"hooks must be a sequence of Hook objects, got {type(hooks).__name__}")
    for hook in hooks:
        if not isinstance(hook, Hook):
            raise TypeError(
                f"hooks must be Hook instances (subclass streamstore.Hook), "
                f"got {type(hook).__name__}"
            )
    return list(hooks)


def _check_errors(errors: object) -> ErrorMapper | None:
    if errors is None:
        return None
    if isinstance(errors, Mapping):
        for key, factory in errors.items():
            if not (isinstance(key, type) and issubclass(key, StreamStoreError)):
                raise TypeError(
                    f"errors= keys must be StreamStoreError subclasses, got {key!r}"
                )
            if not callable(factory):
                raise TypeError(f"errors[{key.__name__}] must be callable, got {factory!r}")
        return errors
    if callable(errors):
        return errors
    raise TypeError(
        f"errors= must be a mapping of error classes to factories or a callable, "
        f"got {type(errors).__name__}"
    )


def _check_limit(limit: object) -> SizeLimit | None:
    if limit is None or isinstance(limit, SizeLimit):
        return limit
    if isinstance(limit, int) and not isinstance(limit, bool):
        return SizeLimit(max_bytes=check_int("limit", limit, 0))
    raise TypeError(f"limit must be an int or a SizeLimit, got {type(limit).__name__}")


def check_sink(sink: object) -> Sink:
    """``sink`` if it has the Sink protocol's required methods; TypeError otherwise."""
    if type(sink).__module__.partition(".")[0] == "streamstore":
        return sink  # type: ignore[return-value]  # one of ours
    missing = [name for name in ("write", "commit", "abort")
               if not callable(getattr(sink, name, None))]
    if missing:
        raise TypeError(
            f"dest must be a path (str or os.PathLike) or a Sink; {type(sink).__name__} "
            f"has no {', '.join(missing)} method"
        )
    return sink  # type: ignore[return-value]


def map_error(errors: ErrorMapper | None, exc: BaseException) -> BaseException | None:
    """What ``errors=`` turns ``exc`` into (None: raise ``exc`` itself)."""
    if errors is None or not isinstance(exc, StreamStoreError):
        return None
    if isinstance(errors, Mapping):
        for cls in type(exc).__mro__:
            factory = errors.get(cls)
            if factory is not None:
                return factory(exc)
        return None
    return errors(exc)


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, also on Python 3.10 (which keeps but does not print notes)."""
    notes = getattr(exc, "__notes__", None)
    if not isinstance(notes, list):
        notes = []
        try:
            exc.__notes__ = notes  # type: ignore[attr-defined]
        except (AttributeError, TypeError):  # pragma: no cover - exotic exception types
            return
    notes.append(note)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Ingest:
    """One store in progress: caps, hooks, hash and the commit order, over one sink.

    Creating it checks every option and touches nothing.  Once a stream
    reaches ``hash_thread_after`` bytes, hashing moves to a second thread
    (:mod:`streamstore._pipeline`) so it overlaps reading and writing;
    ``None`` keeps every store on one thread.  Results, errors and hook calls
    are the same either way.
    """

    hash_thread_after: int | None = HASH_THREAD_AFTER

    def __init__(self, sink: Sink, options: Mapping[str, Any] | None = None, *,
                 dest: Any = None) -> None:
        opts: Mapping[str, Any] = options or {}
        if not INGEST_OPTIONS.issuperset(opts):
            unknown = sorted(set(opts) - INGEST_OPTIONS)
            raise TypeError(f"unexpected option(s): {', '.join(unknown)}")
        self.sink = check_sink(sink)
        self.dest = dest
        """The local path errors carry as ``.dest`` (None for other sinks)."""
        self.chunk_size = check_int("chunk_size", opts.get("chunk_size", DEFAULT_CHUNK_SIZE), 1)
        expected_size = opts.get("expected_size")
        if expected_size is not None:
            check_int("expected_size", expected_size, 0)
        self.expected_size: int | None = expected_size
        expected = opts.get("expected_sha256")
        self.expected_sha256 = None if expected is None else check_sha256(expected)
        self.limit = _check_limit(opts.get("limit"))
        self.errors = _check_errors(opts.get("errors"))
        chain = _check_hooks(opts.get("hooks", ()))
        progress = opts.get("progress")
        if progress is not None:
            chain.append(progress if isinstance(progress, ProgressHook) else ProgressHook(progress))
        self.hooks = chain
        max_bytes = None if self.limit is None else self.limit.max_bytes
        caps = [c for c in (max_bytes, expected_size) if c is not None]
        self.max_size: int | None = min(caps) if caps else None
        """The most bytes the built-in checks let through (None: unbounded)."""
        self._chunk_hooks = [
            hook.on_chunk for hook in chain if type(hook).on_chunk is not Hook.on_chunk
        ]
        self._hasher = hashlib.sha256()
        self._update: Callable[[memoryview], object] = self._hasher.update
        self._write: Callable[[memoryview], object] = self.sink.write
        self.size = 0
        """Bytes fed so far."""
        self.received = 0
        """Bytes a front end announced with :meth:`receive` (read, not yet fed)."""
        self.result: StoreResult | None = None
        """The committed result, once committed."""
        self._state = _NEW
        self._started_hooks = 0  # hooks whose on_start was called (they get on_abort)
        self._abort_tries = 0
        self._raised: BaseException | None = None  # what fail() returned, once decided
        self._pipe: HashThread | None = None
        self._pipe_at = sys.maxsize  # size at which feed() starts the hashing thread

    # -- the size caps, in one place ---------------------------------------------

    def _too_large(self, size: int) -> TooLargeError:
        limit = self.limit
        if limit is not None and limit.max_bytes is not None and size > limit.max_bytes:
            return TooLargeError(limit=limit.max_bytes, size=size, dest=self.dest)
        assert self.expected_size is not None
        return TooLargeError(
            f"stream is larger than its declared size of {self.expected_size} bytes "
            f"(stopped after {size} bytes)",
            limit=self.expected_size, size=size, dest=self.dest,
        )

    def receive(self, n: int) -> None:
        """Count ``n`` bytes a front end has read but not fed yet; TooLargeError
        at once if they cross a cap (the async loop reads ahead of the feeding)."""
        received = self.received = self.received + n
        if self.max_size is not None and received > self.max_size:
            raise self._too_large(received)

    # -- the ingest ---------------------------------------------------------------

    def start(self) -> None:
        """Start the sink, then run the ``on_start`` hooks."""
        if self._state != _NEW:
            raise RuntimeError("Ingest.start() called twice")
        self._state = _STARTED
        after = self.hash_thread_after
        if after is not None and MIN_CHUNK <= self.chunk_size <= MAX_CHUNK:
            self._pipe_at = after
        declared = self.expected_size
        start = getattr(self.sink, "start", None)
        if start is not None:
            start(declared)
        self._write = self.sink.write  # bound after start: a test seam may replace it
        limit = self.limit
        if (limit is not None and limit.max_bytes is not None and declared is not None
                and declared > limit.max_bytes):
            raise TooLargeError(
                f"declared size {declared} is larger than the limit of {limit.max_bytes} bytes",
                limit=limit.max_bytes, size=declared, dest=self.dest,
            )
        for hook in self.hooks:
            self._started_hooks += 1
            hook.on_start(declared)

    def feed(self, chunk: memoryview) -> None:
        """Count, check, hash and write one chunk (hooks see it before it is written)."""
        size = self.size = self.size + len(chunk)
        if self.max_size is not None and size > self.max_size:
            raise self._too_large(size)
        for on_chunk in self._chunk_hooks:
            on_chunk(chunk, size)
        self._update(chunk)
        self._write(chunk)
        if size >= self._pipe_at:
            self._start_hash_thread()

    def _start_hash_thread(self) -> None:
        """The stream proved large: hash the following chunks on a second thread."""
        self._pipe_at = sys.maxsize
        try:
            self._pipe = HashThread(self._hasher.update)
        except RuntimeError:  # "can't start new thread": carry on with one
            return
        self._update = self._pipe.submit

    def pump(self, chunks: Iterator[memoryview], budget: int, seconds: float = 0.1) -> bool:
        """Feed chunks until about ``budget`` bytes are done or ``seconds`` have
        passed (so a caller between pumps, e.g. a cancelled task, never waits
        long on a slow source); False once ``chunks`` is exhausted."""
        feed = self.feed
        stop = self.size + budget
        deadline = monotonic() + seconds
        for chunk in chunks:
            feed(chunk)
            if self.size >= stop or monotonic() >= deadline:
                return True
        return False

    def feed_all(self, batch: list[memoryview]) -> None:
        """Feed every chunk of ``batch``."""
        feed = self.feed
        for chunk in batch:
            feed(chunk)

    def _check_end(self, result: StoreResult) -> None:
        limit = self.limit
        if limit is not None and result.size < limit.min_bytes:
            raise TooSmallError(limit=limit.min_bytes, size=result.size, dest=self.dest)
        if self.expected_size is not None and result.size < self.expected_size:
            raise PartialWriteError(expected_size=self.expected_size, actual_size=result.size,
                                    dest=self.dest)
        if self.expected_sha256 is not None and result.sha256 != self.expected_sha256:
            raise HashMismatchError(expected=self.expected_sha256, actual=result.sha256,
                                    dest=self.dest)

    def finish(self) -> StoreResult:
        """End of stream: check, prepare, ``on_finish``, commit, ``on_commit``.

        Returns the committed :class:`StoreResult`.  An exception from
        ``on_commit`` propagates (after every ``on_commit`` ran) with the result
        as its ``committed`` attribute.
        """
        if self._state != _STARTED:
            raise RuntimeError("Ingest.finish() needs a started ingest")
        if self._pipe is not None:
            self._pipe.finish()
        result = StoreResult(None, self.size, self._hasher.hexdigest())
        self._check_end(result)
        prepare = getattr(self.sink, "prepare", None)
        if prepare is not None:
            result = prepare(result)
        for hook in self.hooks:
            hook.on_finish(result)
        self._state = _COMMITTING
        final = self.sink.commit(result)
        self._committed(final)
        return final

    def _committed(self, result: StoreResult) -> None:
        """The bytes are visible: record it and run every ``on_commit`` hook."""
        self.result = result
        self._state = _COMMITTED
        first: BaseException | None = None
        for hook in self.hooks:
            try:
                hook.on_commit(result)
            except BaseException as exc:
                if first is None:
                    first = exc
                else:
                    add_note(first, f"{type(hook).__name__}.on_commit also raised "
                                    f"{_describe(exc)}")
        if first is not None:
            first.committed = result  # type: ignore[attr-defined]
            raise first

    def fail(self, exc: BaseException) -> BaseException:
        """Clean up after ``exc`` and return what to raise.

        Use as ``raise ingest.fail(exc)`` inside ``except BaseException as exc``.
        If the bytes are visible (``exc`` arrived after the commit point),
        nothing is undone: ``exc`` gets ``committed`` and the ``on_commit``
        hooks run.  Otherwise the hashing thread is stopped, the sink aborted
        and the ``on_abort`` hooks run (in reverse order).  Cleanup survives
        further interrupts: it runs to the end, then ``exc`` is returned.
        A mapped error (``errors=``) is chained to ``exc``.  Idempotent: a
        front end may call it again for an exception that escaped its first
        call (cleanup resumes where it stopped; the answer stays the same).
        """
        while True:
            try:
                return self._fail(exc)
            except BaseException as again:  # e.g. a second Ctrl-C: finish cleaning up
                if again is exc:
                    return exc
                add_note(exc, f"while cleaning up: {_describe(again)}")

    def _fail(self, exc: BaseException) -> BaseException:
        if self._state == _COMMITTING:
            committed = getattr(exc, "committed", None)
            if not isinstance(committed, StoreResult):
                committed = getattr(self.sink, "committed", None)
            if isinstance(committed, StoreResult):
                exc.committed = committed  # type: ignore[attr-defined]
                self._committed(committed)  # may raise an on_commit error: noted above
                return exc
        if self._state == _COMMITTED:
            if self.result is not None and getattr(exc, "committed", None) is None:
                exc.committed = self.result  # type: ignore[attr-defined]
            return exc
        self._state = _FAILED
        if self._pipe is not None:
            self._pipe.close()  # joined: nothing touches our buffers after this
        while self._abort_tries < 3:  # abort is idempotent: retried if interrupted
            self._abort_tries += 1
            try:
                self.sink.abort()
            except Exception as error:
                add_note(exc, f"aborting the sink also failed: {_describe(error)}")
            self._abort_tries = 3
        while self._started_hooks:
            self._started_hooks -= 1
            hook = self.hooks[self._started_hooks]
            if type(hook).on_abort is Hook.on_abort:
                continue
            try:
                hook.on_abort(exc)
            except Exception as error:
                add_note(exc, f"{type(hook).__name__}.on_abort raised {_describe(error)}")
        if self._raised is not None:
            return self._raised
        if isinstance(exc, StreamStoreError) and exc.dest is None and self.dest is not None:
            exc.dest = self.dest
        mapped = map_error(self.errors, exc)
        if mapped is None:
            self._raised = exc
        else:
            if mapped is not exc.__cause__:
                mapped.__cause__ = exc
                mapped.__suppress_context__ = True
            self._raised = mapped
        return self._raised

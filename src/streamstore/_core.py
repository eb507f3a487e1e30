"""The one pipeline both front ends drive: argument checks, hashing, counting,
hooks (limits, expected size and digest, progress, the caller's own) and the
commit of the pending file.

It never reads the source: the front ends do that and hand chunks to
:meth:`Operation.feed`.  A front end is::

    op = Operation(dest, **options)                 # checks arguments
    chunks = iter_chunks(source, op.chunk_size, op.dest)
    try:
        op.start()                                  # temp file, on_start hooks
        for chunk in chunks:
            op.feed(chunk)                          # hooks, hash, write
        return op.commit()                          # checks, fsync, on_finish, rename
    except BaseException as exc:
        raise op.fail(exc)                          # discard temp, map error
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from time import monotonic

from ._errors import StreamStoreError
from ._hooks import DigestCheck, ExpectedSize, Limit, ProgressHook
from ._pending import PendingFile
from ._pipeline import HASH_THREAD_AFTER, MAX_CHUNK, MIN_CHUNK, HashThread
from ._types import Hook, ProgressCallback, SizeLimit, StoreResult

__all__ = ["check_path", "DEFAULT_CHUNK_SIZE", "ErrorMapper", "Operation"]

DEFAULT_CHUNK_SIZE = 32 * 1024
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")

ErrorFactory = Callable[[StreamStoreError], BaseException]
ErrorMapper = (
    Mapping[type[StreamStoreError], ErrorFactory]
    | Callable[[StreamStoreError], BaseException | None]
)


def _check_int(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_sha256(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected_sha256 must be a hex str, got {type(value).__name__}")
    if _SHA256_RE.fullmatch(value) is None:
        raise ValueError(f"expected_sha256 must be 64 hexadecimal characters, got {value!r}")
    return value.lower()


def check_path(value: object, name: str) -> str:
    """``value`` as a str path (bytes decoded); TypeError/ValueError naming ``name`` if it is
    not a path or holds a NUL byte."""
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__}")
    raw = os.fspath(value)
    if not isinstance(raw, str):
        raw = os.fsdecode(raw)
    if "\0" in raw:
        raise ValueError(f"{name} contains a NUL byte")
    return raw


def _check_dest(dest: object) -> Path:
    raw = check_path(dest, "dest")
    path = Path(raw)
    if raw == "" or raw.endswith(("/", os.sep)) or path.name in ("", ".", ".."):
        raise ValueError(f"dest must name a file, not a directory: {raw!r}")
    return path


def _check_hooks(hooks: object) -> list[Hook]:
    if isinstance(hooks, Hook):
        raise TypeError("hooks must be a sequence of Hook objects; wrap a single hook: [hook]")
    if not isinstance(hooks, Sequence):
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


class Operation:
    """One store in progress: checks, hooks, hash and the pending file.

    Creating it checks every argument and touches nothing on disk.

    Once a stream reaches ``hash_thread_after`` bytes, hashing moves to a
    second thread (:mod:`streamstore._pipeline`) so it overlaps reading and
    writing; ``None`` keeps every store on one thread.  Results, errors and
    hook calls are the same either way.
    """

    hash_thread_after: int | None = HASH_THREAD_AFTER

    def __init__(
        self,
        dest: str | os.PathLike[str],
        *,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
        limit: int | SizeLimit | None = None,
        progress: ProgressCallback | ProgressHook | None = None,
        hooks: Sequence[Hook] = (),
        errors: ErrorMapper | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        overwrite: bool = True,
        durable: bool = True,
        mode: int | None = None,
        commit_to: Callable[[StoreResult], Path] | None = None,
    ) -> None:
        self.dest = path = _check_dest(dest)
        self.chunk_size = _check_int("chunk_size", chunk_size, 1)
        if expected_size is not None:
            _check_int("expected_size", expected_size, 0)
        if mode is not None and (_check_int("mode", mode, 0) > 0o7777):
            raise ValueError(f"mode must be permission bits (0 to 0o7777), got {oct(mode)}")
        self.expected_size = expected_size
        self.errors = _check_errors(errors)
        self.overwrite = bool(overwrite)
        self.durable = bool(durable)
        self.mode = mode
        if commit_to is not None and not callable(commit_to):
            raise TypeError(f"commit_to must be callable, got {type(commit_to).__name__}")
        self.commit_to = commit_to
        self.created: bool | None = None

        chain: list[Hook] = []
        if limit is not None:
            if isinstance(limit, SizeLimit):
                chain.append(Limit(limit, path))
            elif isinstance(limit, int) and not isinstance(limit, bool):
                chain.append(Limit(SizeLimit(max_bytes=_check_int("limit", limit, 0)), path))
            else:
                raise TypeError(f"limit must be an int or a SizeLimit, got {type(limit).__name__}")
        if expected_size is not None:
            chain.append(ExpectedSize(expected_size, path))
        if expected_sha256 is not None:
            chain.append(DigestCheck(_check_sha256(expected_sha256), path))
        chain.extend(_check_hooks(hooks))
        if progress is not None:
            chain.append(progress if isinstance(progress, ProgressHook) else ProgressHook(progress))
        self.hooks = chain
        caps = [
            cap
            for cap in [*(h.limit.max_bytes for h in chain if isinstance(h, Limit)), expected_size]
            if cap is not None
        ]
        self.max_size: int | None = min(caps) if caps else None
        """The most bytes the built-in checks let through (None: unbounded)."""
        self._chunk_hooks = [
            hook.on_chunk for hook in chain if type(hook).on_chunk is not Hook.on_chunk
        ]
        self._hasher = hashlib.sha256()
        self._update: Callable[[memoryview], object] = self._hasher.update
        self.size = 0
        self.pending: PendingFile | None = None
        self._write: Callable[[memoryview], None] | None = None
        self._pipe: HashThread | None = None
        self._pipe_at = sys.maxsize  # size at which feed() starts the hashing thread

    def start(self) -> None:
        """Create the temp file and run the ``on_start`` hooks."""
        self.pending = PendingFile.create(
            self.dest, overwrite=self.overwrite, durable=self.durable, mode=self.mode
        )
        self._write = self.pending.write
        after = self.hash_thread_after
        if after is not None and MIN_CHUNK <= self.chunk_size <= MAX_CHUNK:
            self._pipe_at = after
        for hook in self.hooks:
            hook.on_start(self.expected_size)

    def feed(self, chunk: memoryview) -> None:
        """Count, check, hash and write one chunk (hooks see it before it is written)."""
        size = self.size = self.size + len(chunk)
        for on_chunk in self._chunk_hooks:
            on_chunk(chunk, size)
        self._update(chunk)
        self._write(chunk)  # type: ignore[misc]
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

    def commit(self) -> StoreResult:
        """Check the end of the stream, flush, run ``on_finish`` hooks and make it visible.

        With ``commit_to``, the final path is ``commit_to(result)`` (``result.path``
        is then ``dest``, which only places the temp file); the hooks see that
        final path, and the commit there is exclusive with an existing file
        kept (see :meth:`PendingFile.commit`).  ``created`` tells which happened.
        """
        pending = self.pending
        assert pending is not None, "start() was not called"
        if self._pipe is not None:
            self._pipe.finish()
        result = StoreResult(self.dest, self.size, self._hasher.hexdigest())
        target = None
        if self.commit_to is not None:
            target = self.commit_to(result)
            result = StoreResult(target, result.size, result.sha256)
        pending.flush()
        for hook in self.hooks:
            hook.on_finish(result)
        self.created = pending.commit(target)
        return result

    def fail(self, exc: BaseException) -> BaseException:
        """Discard the temp file and return what to raise for ``exc``.

        Use as ``raise op.fail(exc)`` inside ``except BaseException as exc``:
        a mapped error is chained to ``exc`` by ``from``.
        """
        if self._pipe is not None:
            self._pipe.close()  # joined: nothing touches our buffers after this
        if self.pending is not None:
            try:
                self.pending.discard()
            except OSError:
                pass  # never mask the real failure; sweep_temp removes what is left
        if isinstance(exc, StreamStoreError) and exc.dest is None:
            exc.dest = self.dest
        mapped = map_error(self.errors, exc)
        if mapped is None:
            return exc
        mapped.__cause__ = exc
        mapped.__suppress_context__ = True
        return mapped


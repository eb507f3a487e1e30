"""The ``streamstore`` command line (also ``python -m streamstore``).

Every subcommand is a thin wrapper around the public API; errors are printed
as one line on stderr (what failed, for which input, what is on disk) and
mapped to the exit codes in :data:`EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, TextIO

from ._errors import (
    DecryptionError,
    DiskFullError,
    HashMismatchError,
    InvalidDigestError,
    ObjectNotFoundError,
    PartialWriteError,
    SizeLimitError,
    SourceError,
    StorageError,
    StoragePermissionError,
    StreamStoreError,
)
from ._hooks import ProgressHook
from ._pending import FileSink
from ._store import ContentStore, check_digest
from ._sync import store_from_reader
from ._types import Progress, Sink, SizeLimit

if TYPE_CHECKING:
    from .crypto import Keyring

__all__ = ["EXIT_CODES", "main", "parse_duration", "parse_size"]

EXIT_OK = 0
EXIT_CORRUPT = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_HASH_MISMATCH = 4
EXIT_SIZE = 5
EXIT_DISK_FULL = 6
EXIT_PERMISSION = 7
EXIT_SOURCE = 8
EXIT_STORAGE = 9
EXIT_DECRYPT = 10
EXIT_OUTPUT = 11
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_CORRUPT: "verify found corrupt objects",
    EXIT_USAGE: "bad usage: unknown option, malformed size, duration or digest",
    EXIT_NOT_FOUND: "no such object, or STORE is not a content store",
    EXIT_HASH_MISMATCH: "the input's SHA-256 differs from --sha256",
    EXIT_SIZE: "the input is larger than --max-size or smaller than --min-size",
    EXIT_DISK_FULL: "no space left on the store's filesystem (or quota exceeded)",
    EXIT_PERMISSION: "permission denied or read-only filesystem (on the store side)",
    EXIT_SOURCE: "the input could not be opened or read",
    EXIT_STORAGE: "any other storage error",
    EXIT_DECRYPT: "cannot decrypt: the key file lacks the object's key or holds another, "
                  "or an encrypted object failed authentication",
    EXIT_OUTPUT: "the results could not be written to stdout (closed or broken); "
                 "every input was still processed",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); a message says whether the last input was stored",
}

KEY_FILE_ENV = "STREAMSTORE_KEY_FILE"

LARGE_INPUT = 4 * 1024 * 1024
"""Inputs at least this large (or of unknown size) get a progress bar on a TTY."""

_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*")


def parse_size(text: str) -> int:
    """``"10M"`` -> 10485760.  K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024,
    KB/MB/GB/TB powers of 1000, no suffix or B means bytes (case-insensitive)."""
    match = _SIZE_RE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(
            f"invalid size {text!r}: use bytes or a number with K, M, G, T, "
            "KiB, MiB, GiB, TiB, KB, MB, GB or TB (e.g. 10M, 1.5GiB)"
        )
    try:
        return int(Decimal(match.group(1)) * _UNITS[unit])
    except InvalidOperation:  # pragma: no cover - the regex admits only numbers
        raise ValueError(f"invalid size {text!r}") from None


def parse_duration(text: str) -> float:
    """``"1h"`` -> 3600.0; units s, m, h, d; no unit means seconds."""
    match = _DURATION_RE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: use seconds or a number with s, m, h or d "
            "(e.g. 90s, 30m, 1h)"
        )
    return float(Decimal(match.group(1)) * _DURATION_UNITS[match.group(2)])


def _argtype(parse: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = what
    return convert


def _meta_item(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"invalid --meta {text!r}: use KEY=VALUE")
    return key, value


# -- output helpers ---------------------------------------------------------------


class _Failure(Exception):
    """A one-line error for the user, with its exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressBar:
    """Draws ``label  done / total  pct  rate  ETA`` on a terminal, at most ten
    times a second, and clears the line when closed.  Built on the core's
    progress callback (``progress=ProgressBar(...)``)."""

    def __init__(self, stream: TextIO, label: str, total: int | None) -> None:
        self.stream = stream
        self.label = label
        self.total = total
        self._last = 0.0
        self._drawn = False

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        final = progress.bytes_done > 0 and progress.bytes_done == self.total
        if self.total is None and progress.bytes_done < LARGE_INPUT:
            return
        if not final and now - self._last < 0.1:
            return
        self._last = now
        self._draw(progress)

    def _draw(self, progress: Progress) -> None:
        done, elapsed, total = progress.bytes_done, progress.elapsed, self.total
        rate = done / elapsed if elapsed > 0 else 0.0
        label = self.label if len(self.label) <= 24 else self.label[:21] + "..."
        parts = [label]
        if total:
            fraction = min(1.0, done / total)
            filled = int(fraction * 16)
            parts.append(f"[{'#' * filled}{'.' * (16 - filled)}] {fraction:4.0%}")
            parts.append(f"{_human(done)}/{_human(total)}")
        else:
            parts.append(_human(done))
        parts.append(f"{_human(rate)}/s")
        if total and rate > 0:
            parts.append(f"ETA {_clock(max(0, total - done) / rate)}")
        width = shutil.get_terminal_size((80, 24)).columns - 1
        line = " ".join(parts)[:width]
        self.stream.write(f"\r{line}\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the bar (the result goes to stdout)."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False


def _progress_for(label: str, total: int | None) -> ProgressBar | None:
    stream = sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty or (total is not None and total < LARGE_INPUT):
        return None
    return ProgressBar(stream, label, total)


def _open_input(name: str) -> tuple[BinaryIO, int | None, bool]:
    """The input stream, its size if known, and whether we must close it."""
    if name == "-":
        if sys.stdin is None:
            raise _Failure(EXIT_SOURCE, "cannot open input: stdin is closed")
        stream: BinaryIO = sys.stdin.buffer
        close = False
    else:
        try:
            stream = open(name, "rb")
        except OSError as exc:
            raise _Failure(EXIT_SOURCE, f"cannot open input: {exc.strerror or exc}") from None
        close = True
    total = None
    try:
        st = os.fstat(stream.fileno())
        if stat.S_ISREG(st.st_mode):
            total = max(0, st.st_size - stream.tell())
    except (OSError, ValueError, AttributeError):
        pass
    return stream, total, close


def _describe(exc: BaseException) -> tuple[int, str]:
    """Exit code and one-line reason for an error from the library."""
    if isinstance(exc, DecryptionError):
        return EXIT_DECRYPT, str(exc)
    if isinstance(exc, HashMismatchError):
        return EXIT_HASH_MISMATCH, f"SHA-256 mismatch: expected {exc.expected}, got {exc.actual}"
    if isinstance(exc, (PartialWriteError, SizeLimitError)):
        return EXIT_SIZE, str(exc)
    if isinstance(exc, SourceError):
        return EXIT_SOURCE, f"cannot read input: {exc}"
    if isinstance(exc, DiskFullError):
        return EXIT_DISK_FULL, str(exc)
    if isinstance(exc, StoragePermissionError):
        return EXIT_PERMISSION, str(exc)
    if isinstance(exc, ObjectNotFoundError):
        return EXIT_NOT_FOUND, f"no such object {exc.digest}"
    if isinstance(exc, InvalidDigestError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, (StorageError, OSError)):
        return EXIT_STORAGE, str(exc)
    if isinstance(exc, StreamStoreError):  # pragma: no cover - every subclass is above
        return EXIT_STORAGE, str(exc)
    if isinstance(exc, (TypeError, ValueError)):
        return EXIT_USAGE, str(exc)
    raise exc


# -- where things are: stores, destinations, keys -------------------------------------


def _s3_client(endpoint_url: str | None) -> Any:
    """A boto3 S3 client: ``--endpoint-url``, or boto3's own configuration
    (``AWS_*`` environment variables, ``~/.aws``)."""
    try:
        boto3 = importlib.import_module("boto3")
    except ImportError:
        raise _Failure(EXIT_USAGE, "s3:// locations need boto3: "
                       "pip install 'streamstore[s3]'") from None
    try:
        return boto3.client("s3", endpoint_url=endpoint_url)
    except Exception as exc:  # botocore's configuration errors (bad URL, no region, ...)
        raise _Failure(EXIT_USAGE, f"cannot make an S3 client: {exc}") from None


def _split_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/rest`` -> (bucket, rest)."""
    bucket, _, rest = url[len("s3://"):].partition("/")
    if not bucket:
        raise _Failure(EXIT_USAGE, f"{url}: no bucket (use s3://BUCKET[/PREFIX])")
    return bucket, rest


def _keyring(args: argparse.Namespace) -> Keyring | None:
    """The keyring of ``--key-file``, else of ``$STREAMSTORE_KEY_FILE``; None if neither."""
    path = getattr(args, "key_file", None) or os.environ.get(KEY_FILE_ENV)
    if not path:
        return None
    try:
        from .crypto import Keyring
    except ImportError as exc:
        raise _Failure(EXIT_USAGE, f"--key-file: {exc}") from None
    try:
        return Keyring.from_file(path)
    except OSError as exc:
        raise _Failure(EXIT_USAGE, f"cannot read the key file {path}: "
                       f"{exc.strerror or exc}") from None
    except ValueError as exc:
        raise _Failure(EXIT_USAGE, str(exc)) from None


def _store_arg(args: argparse.Namespace, *, create: bool) -> ContentStore:
    """The content store named by ``args.store``: a directory, or
    ``s3://bucket[/prefix]``; encrypted with ``--key-file``.  Read commands
    (``create=False``) create nothing."""
    root: str = args.store
    keyring = _keyring(args)
    if root.startswith("s3://"):
        from .s3 import S3Backend

        bucket, prefix = _split_s3(root)
        backend = S3Backend(_s3_client(args.endpoint_url), bucket, prefix)
        return ContentStore(backend, encryption=keyring)
    if not create and not (Path(root) / "objects").is_dir():
        raise _Failure(EXIT_NOT_FOUND,
                       f"{root}: not a content store (no objects/ directory)")
    try:
        return ContentStore(root, durable=not getattr(args, "no_fsync", False),
                            create=create, encryption=keyring)
    except (StorageError, ValueError) as exc:
        code, reason = _describe(exc)
        raise _Failure(code, f"{root}: cannot open the store: {reason}") from None


def _dest_arg(args: argparse.Namespace) -> Sink:
    """The sink for ``args.dest``: a file, or ``s3://bucket/key``; encrypted with
    ``--key-file``."""
    dest: str = args.dest
    sink: Sink
    if dest.startswith("s3://"):
        from .s3 import S3Sink

        bucket, key = _split_s3(dest)
        if not key:
            raise _Failure(EXIT_USAGE, f"{dest}: no key (use s3://BUCKET/KEY)")
        sink = S3Sink(_s3_client(args.endpoint_url), bucket, key)
    else:
        try:
            sink = FileSink(dest, durable=not args.no_fsync)
        except (TypeError, ValueError) as exc:
            raise _Failure(EXIT_USAGE, f"{dest}: {exc}") from None
    keyring = _keyring(args)
    if keyring is not None:
        from .crypto import EncryptedSink

        sink = EncryptedSink(sink, keyring)
    return sink


def _limit(args: argparse.Namespace) -> SizeLimit | None:
    if args.max_size is None and args.min_size is None:
        return None
    try:
        return SizeLimit(max_bytes=args.max_size, min_bytes=args.min_size or 0)
    except ValueError as exc:
        raise _Failure(EXIT_USAGE, f"--min-size/--max-size: {exc}") from None


# -- output ---------------------------------------------------------------------------


class _Output:
    """stdout for result lines: names are written as the bytes they are (a
    file name need not be valid UTF-8), and a closed or broken stdout is
    remembered rather than fatal, so every input is still processed."""

    def __init__(self) -> None:
        stream = sys.stdout
        self.failed: str | None = None if stream is not None else "stdout is closed"
        self.buffer: BinaryIO | None = None if stream is None else stream.buffer

    def line(self, *fields: str | bytes) -> None:
        """Write the fields, two spaces apart, and a newline."""
        if self.buffer is None or self.failed is not None:
            return
        data = b"  ".join(f if isinstance(f, bytes) else os.fsencode(f) for f in fields)
        try:
            self.buffer.write(data + b"\n")
            self.buffer.flush()
        except (OSError, ValueError) as exc:
            self.failed = "stdout is broken" if isinstance(exc, BrokenPipeError) else (
                f"cannot write to stdout: {getattr(exc, 'strerror', None) or exc}")
            _silence_stdout()

    def status(self, command: str, status: int) -> int:
        """``status``, or EXIT_OUTPUT (with a message) if results were lost."""
        if self.failed is not None and status == EXIT_OK:
            _error(command, f"{self.failed}: the results were not printed; "
                   "every input was processed")
            return EXIT_OUTPUT
        return status


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so that the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def _shown(name: str) -> str:
    """``name`` for a one-line message: undecodable bytes shown as \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _ingest(
    name: str, what: str, run: Callable[[BinaryIO, ProgressBar | None], Any]
) -> Any:
    """Open input ``name``, run the store with a progress bar if fitting, clean
    up.  A failure says what is on disk: ``what`` when nothing changed, or that
    the input was stored when the error came after the commit point."""
    try:
        stream, total, close = _open_input(name)
    except _Failure as failure:
        raise _Failure(failure.code, f"{_shown(name)}: {failure}; {what}") from None
    bar = _progress_for("stdin" if name == "-" else os.path.basename(name) or name, total)
    try:
        return run(stream, bar)
    except KeyboardInterrupt as exc:
        committed = getattr(exc, "committed", None)
        if committed is not None:
            raise _Failure(EXIT_INTERRUPTED, f"{_shown(name)}: interrupted, but it was stored "
                           f"completely: {committed.sha256}  {committed.size}  "
                           f"{committed.location}") from None
        raise _Failure(EXIT_INTERRUPTED, f"{_shown(name)}: interrupted; {what}") from None
    except (StreamStoreError, OSError, TypeError, ValueError) as exc:
        code, reason = _describe(exc)
        committed = getattr(exc, "committed", None)
        if committed is not None:
            what = (f"it was stored completely ({committed.sha256}  {committed.size}  "
                    f"{committed.location}), but finishing failed")
        raise _Failure(code, f"{_shown(name)}: {reason}; {what}") from None
    finally:
        if bar is not None:
            bar.close()
        if close:
            stream.close()


def _progress_arg(bar: ProgressBar | None) -> ProgressHook | None:
    return None if bar is None else ProgressHook(bar)


# -- subcommands ------------------------------------------------------------------


def cmd_put(args: argparse.Namespace) -> int:
    inputs: list[str] = args.inputs or ["-"]
    if args.sha256 is not None and len(inputs) > 1:
        raise _Failure(EXIT_USAGE, "--sha256 applies to a single input; got "
                       f"{len(inputs)} inputs")
    if inputs.count("-") > 1:
        raise _Failure(EXIT_USAGE, "'-' (stdin) can be given only once")
    store = _store_arg(args, create=True)
    metadata = dict(args.meta) if args.meta else None
    limit = _limit(args)
    out = _Output()
    status = EXIT_OK
    for name in inputs:
        def run(stream: BinaryIO, bar: ProgressBar | None) -> Any:
            return store.put(stream, expected_sha256=args.sha256, limit=limit,
                             progress=_progress_arg(bar), metadata=metadata)
        try:
            info = _ingest(name, "nothing was stored", run)
        except _Failure as failure:
            _error(args.command, str(failure))
            if failure.code == EXIT_INTERRUPTED:
                return failure.code
            status = status or failure.code
            continue
        out.line(info.sha256, str(info.size), name)
    return out.status(args.command, status)


def cmd_store(args: argparse.Namespace) -> int:
    sink = _dest_arg(args)
    limit = _limit(args)

    def run(stream: BinaryIO, bar: ProgressBar | None) -> Any:
        return store_from_reader(stream, sink, expected_sha256=args.sha256, limit=limit,
                                 progress=_progress_arg(bar))

    out = _Output()
    result = _ingest(args.input, f"{_shown(args.dest)} was not changed", run)
    out.line(result.sha256, str(result.size), args.dest)
    return out.status(args.command, EXIT_OK)


def _object_failure(digest: str, exc: BaseException) -> _Failure:
    code, reason = _describe(exc)
    if isinstance(exc, (ObjectNotFoundError, InvalidDigestError)):
        return _Failure(code, reason)
    return _Failure(code, f"{digest}: {reason}")


def _copy_out(f: BinaryIO, what: str) -> int:
    """Copy ``f`` to stdout; a read error is a failure naming ``what``."""
    with f:
        if sys.stdout is None:
            raise _Failure(EXIT_OUTPUT, "stdout is closed")
        out = sys.stdout.buffer
        try:
            shutil.copyfileobj(f, out, 1024 * 1024)
            out.flush()
        except BrokenPipeError:
            # The reader went away (e.g. `| head`): not an error of ours.
            _silence_stdout()
        except (StreamStoreError, OSError) as exc:
            try:
                out.flush()
            except OSError:
                pass
            raise _object_failure(what, exc) from None
    return EXIT_OK


def cmd_cat(args: argparse.Namespace) -> int:
    store = _store_arg(args, create=False)
    try:
        f = store.open(args.digest)
    except (StreamStoreError, OSError) as exc:
        raise _object_failure(args.digest, exc) from None
    return _copy_out(f, args.digest)


def cmd_decrypt(args: argparse.Namespace) -> int:
    keyring = _keyring(args)
    if keyring is None:
        raise _Failure(EXIT_USAGE, f"decrypt needs --key-file (or ${KEY_FILE_ENV})")
    from .crypto import open_decrypted

    try:
        f = open_decrypted(args.file, keyring)
    except (StreamStoreError, OSError) as exc:
        code, reason = _describe(exc)
        raise _Failure(code, reason) from None
    return _copy_out(f, args.file)


def cmd_keygen(args: argparse.Namespace) -> int:
    from ._crypto import key_line
    from .crypto import generate_key

    try:
        line = key_line(args.key_id, generate_key())
    except ValueError as exc:
        raise _Failure(EXIT_USAGE, f"invalid key id {args.key_id!r}: {exc}") from None
    out = _Output()
    out.line(line)
    return out.status(args.command, EXIT_OK)


def cmd_info(args: argparse.Namespace) -> int:
    store = _store_arg(args, create=False)
    try:
        info = store.info(args.digest)
    except (StreamStoreError, OSError) as exc:
        raise _object_failure(args.digest, exc) from None
    doc: dict[str, Any] = {"sha256": info.sha256, "size": info.size,
                           "path": None if info.path is None else str(info.path),
                           "metadata": info.metadata}
    if info.path is None:
        doc["location"] = info.location
    out = _Output()
    out.line(json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False))
    return out.status(args.command, EXIT_OK)


def cmd_ls(args: argparse.Namespace) -> int:
    store = _store_arg(args, create=False)
    out = _Output()
    status = EXIT_OK
    for digest in sorted(store):
        try:
            size = store.size(digest)
        except ObjectNotFoundError:
            continue  # deleted meanwhile
        except (StreamStoreError, OSError) as exc:
            failure = _object_failure(digest, exc)
            _error(args.command, str(failure))
            status = status or failure.code
            continue
        out.line(digest, str(size))
    return out.status(args.command, status)


def cmd_rm(args: argparse.Namespace) -> int:
    store = _store_arg(args, create=False)
    status = EXIT_OK
    for digest in args.digests:
        try:
            removed = store.delete(digest)
        except (StreamStoreError, OSError) as exc:
            failure = _object_failure(digest, exc)
            _error(args.command, str(failure))
            status = status or failure.code
            continue
        if not removed:
            _error(args.command, f"no such object {digest.lower()}")
            status = status or EXIT_NOT_FOUND
    return status


def cmd_verify(args: argparse.Namespace) -> int:
    store = _store_arg(args, create=False)
    corrupt: list[str] = []
    try:
        if args.digests:
            for digest in args.digests:
                corrupt.extend(store.verify(digest))
        else:
            corrupt = store.verify()
    except (StreamStoreError, OSError) as exc:
        digest = getattr(exc, "digest", None) or "verify"
        raise _object_failure(digest, exc) from None
    out = _Output()
    for digest in corrupt:
        out.line(digest)
    if corrupt:
        _error(args.command, f"{len(corrupt)} corrupt object(s): their bytes no longer "
               "match their SHA-256; delete and re-put them")
        return EXIT_CORRUPT
    return out.status(args.command, EXIT_OK)


def cmd_sweep(args: argparse.Namespace) -> int:
    store = _store_arg(args, create=False)
    try:
        removed = store.sweep(older_than=args.older_than)
    except (StreamStoreError, OSError) as exc:
        code, reason = _describe(exc)
        raise _Failure(code, f"{args.store}: {reason}") from None
    out = _Output()
    if store.root is None:
        out.line(f"removed {removed} stale upload(s) or staging object(s)")
    else:
        out.line(f"removed {removed} orphaned temp file(s)")
    return out.status(args.command, EXIT_OK)


# -- parser -----------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _epilog() -> str:
    lines = ["exit codes:"]
    lines += [f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items()]
    lines += [
        "",
        "sizes: plain bytes, or K/M/G/T (also KiB/MiB/...: powers of 1024) or",
        "       KB/MB/GB/TB (powers of 1000), e.g. 10M, 1.5GiB, 500KB.",
        "durations: seconds, or a number with s/m/h/d, e.g. 90s, 30m, 1h.",
        "",
        "STORE may be s3://BUCKET[/PREFIX] and DEST s3://BUCKET/KEY (needs",
        "streamstore[s3]); credentials and region come from the usual AWS_*",
        "environment variables or ~/.aws, the endpoint from --endpoint-url.",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``streamstore`` command."""
    return _build()[0]


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="streamstore",
        description="Store byte streams safely: one pass, SHA-256, size limits, atomic commit; "
        "and a content-addressed store of such streams.",
        epilog=_epilog(),
        formatter_class=formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)
    parser.add_argument("--version", action="version",
                        version=f"streamstore {importlib.metadata.version('streamstore')}")
    size = _argtype(parse_size, "size")
    digest = _argtype(check_digest, "digest")

    def key_file(p: argparse.ArgumentParser) -> None:
        p.add_argument("--key-file", metavar="FILE",
                       help=f"encryption keys (streamstore.crypto); default ${KEY_FILE_ENV}")

    def common(p: argparse.ArgumentParser, *, limits: bool) -> None:
        p.add_argument("--sha256", type=digest, metavar="HEX",
                       help="expected SHA-256; a different input is rejected (exit 4)")
        if limits:
            p.add_argument("--max-size", type=size, metavar="SIZE",
                           help="reject inputs larger than SIZE (exit 5)")
            p.add_argument("--min-size", type=size, metavar="SIZE",
                           help="reject inputs smaller than SIZE (exit 5)")
        p.add_argument("--no-fsync", action="store_true",
                       help="skip the fsyncs (faster, not crash-safe)")

    p = sub.add_parser("put", help="store inputs in STORE, print '<sha256>  <size>  <name>'",
                       description="Store each input (a file, or - for stdin; default: "
                       "stdin) in the content store STORE, created if missing.  Prints "
                       "'<sha256>  <size>  <name>' per input, like sha256sum.  Shows a "
                       "progress bar on stderr when it is a terminal and the input is large.",
                       epilog=_epilog(), formatter_class=formatter)
    p.add_argument("store", metavar="STORE", help="a directory, or s3://BUCKET[/PREFIX]")
    p.add_argument("inputs", nargs="*", metavar="FILE|-")
    common(p, limits=True)
    p.add_argument("--meta", action="append", type=_argtype(_meta_item, "KEY=VALUE"),
                   metavar="KEY=VALUE", help="metadata to store beside the object (repeatable)")
    key_file(p)
    p.set_defaults(func=cmd_put)

    p = sub.add_parser("cat", help="write an object to stdout",
                       epilog=_epilog(), formatter_class=formatter)
    p.add_argument("store", metavar="STORE")
    p.add_argument("digest", metavar="DIGEST")
    key_file(p)
    p.set_defaults(func=cmd_cat)

    p = sub.add_parser("info", help="print an object's info as JSON",
                       epilog=_epilog(), formatter_class=formatter)
    p.add_argument("store", metavar="STORE")
    p.add_argument("digest", metavar="DIGEST")
    key_file(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("ls", help="list objects: '<sha256>  <size>' per line",
                       epilog=_epilog(), formatter_class=formatter)
    p.add_argument("store", metavar="STORE")
    key_file(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("rm", help="delete objects", epilog=_epilog(), formatter_class=formatter)
    p.add_argument("store", metavar="STORE")
    p.add_argument("digests", nargs="+", metavar="DIGEST")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("verify", help="re-hash objects; exit 1 if any is corrupt",
                       description="Re-hash every object (or the given ones) and print the "
                       "digests of corrupt objects; exit 1 if there is any.",
                       epilog=_epilog(), formatter_class=formatter)
    p.add_argument("store", metavar="STORE")
    p.add_argument("digests", nargs="*", metavar="DIGEST")
    key_file(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("sweep", help="remove orphaned temp files of dead writers",
                       epilog=_epilog(), formatter_class=formatter)
    p.add_argument("store", metavar="STORE")
    p.add_argument("--older-than", type=_argtype(parse_duration, "duration"), default=3600.0,
                   metavar="DURATION", help="only temps older than this (default: 1h)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("store", help="store one input at DEST atomically (the core)",
                       description="Store one input (a file or - for stdin) at the path DEST: "
                       "a temp file beside DEST, fsync, atomic rename.  DEST is replaced "
                       "only if every check passes.  Prints '<sha256>  <size>  <DEST>'.",
                       epilog=_epilog(), formatter_class=formatter)
    p.add_argument("input", metavar="FILE|-")
    p.add_argument("dest", metavar="DEST", help="a path, or s3://BUCKET/KEY")
    common(p, limits=True)
    key_file(p)
    p.set_defaults(func=cmd_store)

    p = sub.add_parser("decrypt", help="write the plaintext of an encrypted FILE to stdout",
                       description="Decrypt FILE (written by 'store --key-file') to stdout, "
                       "authenticating every segment.",
                       epilog=_epilog(), formatter_class=formatter)
    p.add_argument("file", metavar="FILE")
    key_file(p)
    p.set_defaults(func=cmd_decrypt)

    p = sub.add_parser("keygen", help="print a new key-file line 'KEY_ID KEY'",
                       description="Print a new random 32-byte key as a key-file line; "
                       "append it to a key file to make it the active key.",
                       epilog=_epilog(), formatter_class=formatter)
    p.add_argument("key_id", metavar="KEY_ID")
    p.set_defaults(func=cmd_keygen)
    for command in sub.choices.values():
        command.add_argument("--endpoint-url", metavar="URL",
                             help="S3 endpoint for s3:// locations (default: boto3's "
                             "configuration, e.g. AWS_ENDPOINT_URL)")
    return parser, dict(sub.choices)


def _error(command: str, message: str) -> None:
    sys.stderr.write(f"streamstore {command}: {message}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser, commands = _build()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in commands:
        # Intermixed: options may follow the inputs (put STORE a --max-size 1M b).
        args = commands[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
    else:
        args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except _Failure as failure:
        _error(args.command, str(failure))
        return failure.code
    except KeyboardInterrupt:
        _error(args.command, "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_OK

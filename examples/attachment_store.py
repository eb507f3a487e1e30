"""Example 1: an attachment store, the storage side of an attachment importer.

An importer receives attachments together with the SHA-256 its source claims
for them (a mail archive, a ticket system's export, a backup manifest).  This
store keeps each attachment once, by content hash, and trusts nothing: the
hash is checked while the bytes stream in, a short stream is refused, and a
full disk is a typed error -- in every failure case nothing is stored.

    store = AttachmentStore("/srv/attachments", max_size=2 * 2**30)
    att = store.store_from_reader(claimed_sha256, reader, {"filename": "q3.pdf"},
                                  size=claimed_size, progress=print)

Run it from a shell (any size, constant memory):

    python examples/attachment_store.py demo                  # one command: a guided tour
    some-exporter | python examples/attachment_store.py --root DIR put SHA256 --size N \\
        --meta filename=q3.pdf
    python examples/attachment_store.py --root DIR get SHA256 > q3.pdf
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from streamstore import (
    ContentStore,
    DiskFullError,
    HashMismatchError,
    PartialWriteError,
    Progress,
    ProgressHook,
    SourceError,
    StreamStoreError,
    TooLargeError,
)

__all__ = [
    "Attachment",
    "AttachmentError",
    "AttachmentHashMismatch",
    "AttachmentIncomplete",
    "AttachmentSourceFailed",
    "AttachmentStorageFull",
    "AttachmentStore",
    "AttachmentTooLarge",
]


class AttachmentError(Exception):
    """Base of the attachment store's errors; nothing was stored when one is raised."""


class AttachmentHashMismatch(AttachmentError):
    """The bytes do not hash to the SHA-256 the caller claimed."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"attachment hash mismatch: claimed {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class AttachmentIncomplete(AttachmentError):
    """The stream ended before the claimed size (a partial write, e.g. a cut transfer)."""

    def __init__(self, expected_size: int, actual_size: int) -> None:
        super().__init__(f"attachment incomplete: {actual_size} of {expected_size} bytes")
        self.expected_size = expected_size
        self.actual_size = actual_size


class AttachmentTooLarge(AttachmentError):
    """The stream is larger than the store's ``max_size`` or the claimed size."""

    def __init__(self, limit: int, size: int) -> None:
        super().__init__(f"attachment too large: more than {limit} bytes (stopped at {size})")
        self.limit = limit


class AttachmentStorageFull(AttachmentError):
    """The disk (or quota) is full."""


class AttachmentSourceFailed(AttachmentError):
    """Reading the source failed (the original error is the ``__cause__``)."""


# One place maps the library's errors to the importer's own (raised ``from`` them).
_ERRORS: Mapping[type[StreamStoreError], Callable[[Any], BaseException]] = {
    HashMismatchError: lambda e: AttachmentHashMismatch(e.expected, e.actual),
    PartialWriteError: lambda e: AttachmentIncomplete(e.expected_size, e.actual_size),
    TooLargeError: lambda e: AttachmentTooLarge(e.limit, e.size),
    DiskFullError: lambda e: AttachmentStorageFull(f"no space left for the attachment: {e}"),
    SourceError: lambda e: AttachmentSourceFailed(f"reading the attachment failed: {e}"),
}


@dataclass(frozen=True)
class Attachment:
    """A stored attachment: ``sha256`` (its name), ``size``, ``metadata``, local
    ``path``, and ``created`` (False when the same bytes were already stored)."""

    sha256: str
    size: int
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    created: bool = False


class AttachmentStore:
    """Attachments by content hash, in the directory ``root``."""

    def __init__(self, root: str | os.PathLike[str], *, max_size: int | None = None,
                 durable: bool = True) -> None:
        self.store = ContentStore(root, durable=durable)
        self.max_size = max_size

    def store_from_reader(
        self, sha256: str, reader: BinaryIO | Any, metadata: Mapping[str, Any] | None = None,
        *, size: int | None = None, progress: Callable[[Progress], object] | None = None,
        progress_step: int = 64 * 1024 * 1024,
    ) -> Attachment:
        """Store what ``reader`` yields, which must hash to ``sha256``.

        ``reader`` is a binary file object (``readinto`` or ``read``), bytes, or
        an iterable of bytes.  ``size``, if the source claims one, is checked
        too (:class:`AttachmentIncomplete` if the stream is shorter,
        :class:`AttachmentTooLarge` the moment it is longer).  ``metadata`` is
        kept with the first copy of the bytes.  ``progress`` is called with a
        :class:`~streamstore.Progress` every ``progress_step`` bytes.
        Memory stays constant whatever the size.
        """
        options: dict[str, Any] = {"expected_sha256": sha256, "errors": _ERRORS,
                                   "chunk_size": 1024 * 1024}
        if size is not None:
            options["expected_size"] = size
        if self.max_size is not None:
            options["limit"] = self.max_size
        if metadata is not None:
            options["metadata"] = dict(metadata)
        if progress is not None:
            options["progress"] = ProgressHook(progress, step=progress_step)
        info = self.store.put(reader, **options)
        assert info.path is not None
        return Attachment(info.sha256, info.size, info.path, info.metadata, info.created)

    def get(self, sha256: str) -> Attachment:
        """The stored attachment (``KeyError`` if there is none)."""
        info = self.store.info(sha256)
        assert info.path is not None
        return Attachment(info.sha256, info.size, info.path, info.metadata)

    def open(self, sha256: str) -> BinaryIO:
        """The attachment's bytes, checked against its hash as they are read."""
        return self.store.open(sha256, verify=True)

    def __contains__(self, sha256: object) -> bool:
        return sha256 in self.store


# -- command line ----------------------------------------------------------------------------


def _progress_to_stderr(p: Progress) -> None:
    total = f" of {p.total / 2**20:.0f}" if p.total is not None else ""
    print(f"  {p.bytes_done / 2**20:8.1f}{total} MiB  {p.elapsed:6.1f} s", file=sys.stderr)


def _put(args: argparse.Namespace) -> int:
    store = AttachmentStore(args.root, max_size=args.max_size)
    metadata = dict(item.split("=", 1) for item in args.meta)
    try:
        att = store.store_from_reader(args.sha256, sys.stdin.buffer, metadata, size=args.size,
                                      progress=_progress_to_stderr)
    except AttachmentError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"sha256": att.sha256, "size": att.size, "path": str(att.path),
                      "created": att.created, "metadata": att.metadata}))
    return 0


def _get(args: argparse.Namespace) -> int:
    store = AttachmentStore(args.root)
    with store.open(args.sha256) as f:
        out = sys.stdout.buffer
        while chunk := f.read(1024 * 1024):
            out.write(chunk)
    return 0


def _demo(args: argparse.Namespace) -> int:
    root = Path(args.root or tempfile.mkdtemp(prefix="attachments-"))
    store = AttachmentStore(root, max_size=64 * 2**20)
    data = os.urandom(8 * 2**20)
    digest = hashlib.sha256(data).hexdigest()
    print(f"store: {root}")

    def step(title: str, fn: Callable[[], object]) -> None:
        try:
            result = fn()
        except AttachmentError as exc:
            result = f"{type(exc).__name__}: {exc}"
        print(f"- {title}\n    -> {result}")

    step("an 8 MiB attachment with its true hash", lambda: store.store_from_reader(
        digest, data, {"filename": "report.pdf"}, size=len(data),
        progress=_progress_to_stderr, progress_step=2 * 2**20))
    step("the same bytes again (stored once)", lambda: store.store_from_reader(
        digest, data, {"filename": "copy.pdf"}).created)
    step("bytes that do not match their claimed hash", lambda: store.store_from_reader(
        "0" * 64, data[:-1] + b"!"))
    step("a transfer cut short of its claimed size", lambda: store.store_from_reader(
        hashlib.sha256(data[:1000]).hexdigest(), data[:1000], size=len(data)))
    step("more than the store's 64 MiB limit", lambda: store.store_from_reader(
        "1" * 64, iter(lambda: bytes(2**20), b"")))
    print(f"attachments stored: {len(store.store)} (only the first one)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", help="the store's directory")
    sub = parser.add_subparsers(dest="command", required=True)
    put = sub.add_parser("put", help="store standard input under its claimed SHA-256")
    put.add_argument("sha256")
    put.add_argument("--size", type=int, help="the claimed size in bytes")
    put.add_argument("--max-size", type=int, help="refuse attachments larger than this")
    put.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    put.set_defaults(run=_put)
    get = sub.add_parser("get", help="write an attachment to standard output, verified")
    get.add_argument("sha256")
    get.set_defaults(run=_get)
    sub.add_parser("demo", help="a guided tour in a temporary store").set_defaults(run=_demo)
    args = parser.parse_args(argv)
    if args.command != "demo" and not args.root:
        parser.error("--root is required")
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())

"""The error tree: shape, data attributes, messages, pickling, errno mapping."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest

import streamstore as ss
from streamstore._errors import storage_error

ERRORS = [
    ss.HashMismatchError(expected="a" * 64, actual="b" * 64, dest="/d/f"),
    ss.PartialWriteError(expected_size=10, actual_size=3, dest="/d/f"),
    ss.SizeLimitError(limit=5, size=6, dest="/d/f"),
    ss.TooLargeError(limit=5, size=6, dest="/d/f"),
    ss.TooSmallError(limit=5, size=1, dest="/d/f"),
    ss.SourceError("source raised OSError", dest="/d/f"),
    ss.StorageError(errno.EIO, "I/O error", "/d/f", dest="/d/f", message="cannot write"),
    ss.DiskFullError(errno.ENOSPC, "No space left on device", "/d/f", dest="/d/f"),
    ss.StoragePermissionError(errno.EACCES, "Permission denied", "/d", dest="/d/f"),
    ss.DestinationExistsError(errno.EEXIST, "File exists", "/d/f", dest="/d/f"),
]


def test_tree_shape() -> None:
    assert issubclass(ss.StreamStoreError, Exception)
    for cls in (ss.HashMismatchError, ss.PartialWriteError, ss.SizeLimitError, ss.SourceError,
                ss.StorageError):
        assert cls.__bases__[0] is ss.StreamStoreError
    assert issubclass(ss.TooLargeError, ss.SizeLimitError)
    assert issubclass(ss.TooSmallError, ss.SizeLimitError)
    assert issubclass(ss.StorageError, OSError)
    for cls in (ss.DiskFullError, ss.StoragePermissionError, ss.DestinationExistsError):
        assert issubclass(cls, ss.StorageError)
        assert issubclass(cls, OSError)


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: type(e).__name__)
def test_pickle_round_trip_keeps_type_message_and_attributes(err: ss.StreamStoreError) -> None:
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err)
    assert str(copy) == str(err)
    assert vars(copy) == vars(err)
    assert copy.dest == Path("/d/f")
    if isinstance(err, OSError):
        assert (copy.errno, copy.strerror, copy.filename) == (err.errno, err.strerror, err.filename)


def test_messages_name_the_problem() -> None:
    assert "larger than the limit of 5 bytes" in str(ss.TooLargeError(limit=5, size=6))
    assert "smaller than the minimum of 5 bytes" in str(ss.TooSmallError(limit=5, size=1))
    assert "ended after 3 bytes" in str(ss.PartialWriteError(expected_size=10, actual_size=3))
    msg = str(ss.HashMismatchError(expected="a" * 64, actual="b" * 64, dest="/d/f"))
    assert "a" * 64 in msg and "b" * 64 in msg and "/d/f" in msg
    assert str(ERRORS[6]).startswith("cannot write: [Errno 5]")


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (errno.ENOSPC, ss.DiskFullError),
        (errno.EDQUOT, ss.DiskFullError),
        (errno.EFBIG, ss.DiskFullError),
        (errno.EACCES, ss.StoragePermissionError),
        (errno.EPERM, ss.StoragePermissionError),
        (errno.EROFS, ss.StoragePermissionError),
        (errno.EEXIST, ss.DestinationExistsError),
        (errno.EIO, ss.StorageError),
        (errno.ENOENT, ss.StorageError),
    ],
)
def test_storage_error_translation_keeps_errno(code: int, cls: type[ss.StorageError]) -> None:
    original = OSError(code, "boom", "/some/file")
    err = storage_error(original, dest="/d/f", message="cannot write")
    assert type(err) is cls
    assert err.errno == code
    assert err.strerror == "boom"
    assert err.filename == "/some/file"
    assert err.dest == Path("/d/f")

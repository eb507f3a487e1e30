"""streamstore: store a byte stream of any size safely.

Constant memory, SHA-256 in the same pass, size limits enforced while
streaming, progress, and all-or-nothing visibility: a temp file beside the
destination, fsync, atomic rename, directory fsync.
"""

from ._async import astore_from_reader
from ._errors import (
    DestinationExistsError,
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
    TooLargeError,
    TooSmallError,
)
from ._hooks import ProgressHook
from ._pending import sweep_temp
from ._store import ContentStore, ObjectInfo
from ._sync import store_from_reader
from ._types import Hook, Progress, SizeLimit, StoreResult

__version__ = "0.1.0"

__all__ = [
    "ContentStore",
    "DestinationExistsError",
    "DiskFullError",
    "HashMismatchError",
    "Hook",
    "InvalidDigestError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "PartialWriteError",
    "Progress",
    "ProgressHook",
    "SizeLimit",
    "SizeLimitError",
    "SourceError",
    "StorageError",
    "StoragePermissionError",
    "StoreResult",
    "StreamStoreError",
    "TooLargeError",
    "TooSmallError",
    "astore_from_reader",
    "store_from_reader",
    "sweep_temp",
]

for _name in __all__:
    try:
        globals()[_name].__module__ = __name__
    except (AttributeError, TypeError):  # pragma: no cover
        pass
del _name

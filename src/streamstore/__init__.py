"""streamstore: store a byte stream of any size safely.

Constant memory, SHA-256 in the same pass, size limits enforced while
streaming, progress, and all-or-nothing visibility into any destination (a
:class:`Sink`): locally a temp file beside the destination, fsync, atomic
rename, directory fsync.
"""

from ._async import AsyncWriter, aopen_writer, astore_from_reader
from ._errors import (
    DecryptionError,
    DestinationExistsError,
    DiskFullError,
    HashMismatchError,
    InvalidDigestError,
    MultipartError,
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
from ._hooks import ProgressHook, SniffHook, sniff_image_type
from ._pending import FileSink, sweep_temp
from ._store import ContentStore, ObjectInfo, ObjectWriter
from ._sync import Writer, open_writer, store_from_reader
from ._types import (
    Hook,
    IngestOptions,
    Progress,
    PutOptions,
    Sink,
    SizeLimit,
    StoreOptions,
    StoreResult,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncWriter",
    "ContentStore",
    "DecryptionError",
    "DestinationExistsError",
    "DiskFullError",
    "FileSink",
    "HashMismatchError",
    "Hook",
    "IngestOptions",
    "InvalidDigestError",
    "MultipartError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectWriter",
    "PartialWriteError",
    "Progress",
    "ProgressHook",
    "PutOptions",
    "SizeLimit",
    "SizeLimitError",
    "Sink",
    "SniffHook",
    "SourceError",
    "StorageError",
    "StoragePermissionError",
    "StoreOptions",
    "StoreResult",
    "StreamStoreError",
    "TooLargeError",
    "TooSmallError",
    "Writer",
    "aopen_writer",
    "astore_from_reader",
    "open_writer",
    "sniff_image_type",
    "store_from_reader",
    "sweep_temp",
]

for _name in __all__:
    try:
        globals()[_name].__module__ = __name__
    except (AttributeError, TypeError):  # pragma: no cover
        pass
del _name

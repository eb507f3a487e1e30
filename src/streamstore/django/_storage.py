"""A Django ``Storage`` over a :class:`~streamstore.ContentStore`: file names are
content addresses."""

from __future__ import annotations

import io
import mimetypes
import os
import posixpath
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urljoin

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, SuspiciousFileOperation
from django.core.files.base import File
from django.core.files.storage import Storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseNotModified
from django.utils.deconstruct import deconstructible
from django.utils.encoding import filepath_to_uri

from .._errors import ObjectNotFoundError, SourceError, StreamStoreError
from .._store import ContentStore, ObjectInfo
from .._types import SizeLimit

__all__ = ["ContentStoreStorage", "serve"]

_NAME_RE = re.compile(r"(?P<digest>[0-9a-f]{64})(?P<ext>\.[A-Za-z0-9]{1,16})?")
_EXT_RE = re.compile(r"\.[A-Za-z0-9]{1,16}")
_DIGEST_LEN = 64


def _extension(name: str) -> str:
    """The extension a content name keeps: ``.ext`` of 1-16 letters and digits, or ''."""
    ext = posixpath.splitext(posixpath.basename(str(name).replace("\\", "/")))[1]
    return ext if _EXT_RE.fullmatch(ext) else ""


def _digest(name: object) -> str | None:
    """The digest a storage name refers to, or None if it names no object."""
    if not isinstance(name, str):
        return None
    match = _NAME_RE.fullmatch(name)
    return None if match is None else match["digest"]


def _as_bytes(chunks: Iterator[Any]) -> Iterator[bytes]:
    for chunk in chunks:
        yield chunk.encode("utf-8") if isinstance(chunk, str) else chunk


def _content_error(exc: StreamStoreError) -> BaseException | None:
    if isinstance(exc, SourceError) and exc.original is not None:
        return exc.original
    return None


@deconstructible(path="streamstore.django.ContentStoreStorage")
class ContentStoreStorage(Storage):  # type: ignore[misc]
    """A Django file storage whose files are the objects of a ContentStore.

    ``save("report.pdf", content)`` stores the bytes under their SHA-256 and
    returns the name ``"<sha256>.pdf"``: the content address plus the
    extension of the name given (kept for URLs and MIME types).  So:

    - equal content is stored once, whatever it is called, and saving never
      needs an "available name": :meth:`get_available_name` returns the name
      unchanged and a second save of the same bytes returns the same name;
    - directories do not exist: :meth:`generate_filename` drops the
      directory part of ``upload_to``, :meth:`listdir` lists the root only;
    - stored files are immutable: :meth:`open` reads (``"rb"``, or ``"r"`` for
      UTF-8 text) and refuses write modes;
    - :meth:`delete` removes the bytes for every name that refers to them
      (``<sha256>`` and ``<sha256>.ext`` are the same object).

    ``location`` is the store's root directory (default
    ``settings.MEDIA_ROOT``), ``base_url`` the URL prefix of :meth:`url`
    (default ``settings.MEDIA_URL``; see :func:`serve`), ``durable=False``
    skips the fsyncs, ``max_size`` caps each saved file
    (:class:`~streamstore.TooLargeError`).  ``store`` uses an existing
    :class:`~streamstore.ContentStore` (e.g. over S3) instead of ``location``.
    """

    def __init__(self, location: str | os.PathLike[str] | None = None,
                 base_url: str | None = None, *, durable: bool = True,
                 max_size: int | None = None, store: ContentStore | None = None) -> None:
        if store is not None and location is not None:
            raise TypeError("pass location or store, not both")
        if store is not None and not isinstance(store, ContentStore):
            raise TypeError(f"store must be a ContentStore, got {type(store).__name__}")
        self._location = None if location is None else os.fspath(location)
        self._base_url = base_url
        self.durable = bool(durable)
        self.max_size = max_size
        self._given_store = store
        self._stores: dict[str, ContentStore] = {}

    # -- configuration ---------------------------------------------------------------

    @property
    def location(self) -> str:
        """The store's root directory (``settings.MEDIA_ROOT`` unless given)."""
        if self._given_store is not None:
            return self._given_store.location
        location = self._location if self._location is not None else settings.MEDIA_ROOT
        if not location:
            raise ImproperlyConfigured(
                "ContentStoreStorage needs a location (or settings.MEDIA_ROOT)")
        return os.path.abspath(location)

    @property
    def base_url(self) -> str | None:
        """The URL prefix of :meth:`url` (``settings.MEDIA_URL`` unless given),
        ending with a slash."""
        url: str | None = self._base_url if self._base_url is not None else settings.MEDIA_URL
        if url is not None and not str(url).endswith("/"):
            url = f"{url}/"
        return url

    @property
    def store(self) -> ContentStore:
        """The :class:`~streamstore.ContentStore` (created on first use)."""
        if self._given_store is not None:
            return self._given_store
        location = self.location
        store = self._stores.get(location)
        if store is None:
            store = self._stores[location] = ContentStore(location, durable=self.durable)
        return store

    # -- names --------------------------------------------------------------------------

    def generate_filename(self, filename: str) -> str:
        """A valid file name from ``filename`` with any directory dropped
        (``upload_to`` directories mean nothing to a content store)."""
        base = posixpath.basename(str(filename).replace("\\", "/"))
        return str(self.get_valid_name(base))

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        """``name`` itself: the content decides the stored name, and equal
        content may share it.  The extension is dropped if ``<sha256>.ext``
        would not fit in ``max_length``; SuspiciousFileOperation if not even
        the 64-character digest fits."""
        if max_length is not None:
            if max_length < _DIGEST_LEN:
                raise SuspiciousFileOperation(
                    f"Storage can not find an available filename for {name!r}: a "
                    f"content name has {_DIGEST_LEN} characters, max_length is {max_length}")
            if _DIGEST_LEN + len(_extension(name)) > max_length:
                return posixpath.splitext(str(name))[0] or "upload"
        return str(name)

    # -- the Storage interface ------------------------------------------------------------

    def _save(self, name: str, content: File) -> str:
        from ._upload import StoredUploadedFile

        info: ObjectInfo | None = None
        if (isinstance(content, StoredUploadedFile) and content.info is not None
                and content.store.location == self.store.location):
            info = content.info  # streamed into this very store already
            if self.max_size is not None and info.size > self.max_size:
                info = None  # let put() raise the usual TooLargeError
        if info is None:
            # The content's own exception propagates, as from any storage.
            options: dict[str, Any] = {"errors": _content_error}
            if self.max_size is not None:
                options["limit"] = SizeLimit(max_bytes=self.max_size)
            info = self.store.put(_as_bytes(content.chunks()), **options)
        return info.sha256 + _extension(name)

    def _open(self, name: str, mode: str = "rb") -> File:
        if set(mode) & set("wax+"):
            raise ValueError(f"{type(self).__name__} files are immutable: open them "
                             f"'rb' (or 'r'), not {mode!r}")
        raw = self.store.open(self._existing(name))
        if "b" in mode:
            return File(raw, name)
        buffered = io.BufferedReader(raw)  # type: ignore[type-var]
        return File(io.TextIOWrapper(buffered, encoding="utf-8"), name)

    def delete(self, name: str) -> None:
        """Remove the object ``name`` refers to (for every name that refers to it)."""
        if not name:
            raise ValueError("The name must be given to delete().")
        digest = _digest(name)
        if digest is not None:
            self.store.delete(digest)

    def exists(self, name: str) -> bool:
        """True if ``name`` is a content name (``<sha256>[.ext]``) of a stored object."""
        digest = _digest(name)
        return digest is not None and digest in self.store

    def size(self, name: str) -> int:
        """The object's size in bytes; FileNotFoundError if there is none."""
        return int(self.store.backend.stat(self._existing(name)))

    def url(self, name: str | None) -> str:
        """``base_url`` joined with ``name`` (quoted); ValueError without a base_url."""
        base_url = self.base_url
        if base_url is None:
            raise ValueError("This file is not accessible via a URL.")
        url = filepath_to_uri(name)
        if url is not None:
            url = url.lstrip("/")
        return urljoin(base_url, str(url or ""))

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        """``([], digests)`` for the root (``""`` or ``"."``); there are no directories."""
        if posixpath.normpath(str(path) or ".") not in (".", "/"):
            raise FileNotFoundError(f"{path!r}: a content store has no directories")
        return [], sorted(self.store)

    def path(self, name: str) -> str:
        """The object's local path (NotImplementedError for a store not on local disk)."""
        digest = _digest(name)
        if digest is None:
            raise FileNotFoundError(f"{name!r} is not the name of an object in a content store")
        path = self.store.backend.path(digest)
        if path is None:
            raise NotImplementedError("This backend doesn't support absolute paths.")
        return str(path)

    def _stat(self, name: str) -> os.stat_result:
        try:
            return os.stat(self.path(self._existing(name)))
        except FileNotFoundError:
            raise FileNotFoundError(f"no object named {name!r}") from None

    @staticmethod
    def _datetime(ts: float) -> datetime:
        # As FileSystemStorage: aware in UTC with USE_TZ, naive local time without.
        return datetime.fromtimestamp(ts, tz=timezone.utc if settings.USE_TZ else None)

    def get_accessed_time(self, name: str) -> datetime:
        """When the object was last read (local stores)."""
        return self._datetime(self._stat(name).st_atime)

    def get_created_time(self, name: str) -> datetime:
        """When the object was stored (its inode change time; local stores)."""
        return self._datetime(self._stat(name).st_ctime)

    def get_modified_time(self, name: str) -> datetime:
        """When the object's bytes were written (local stores)."""
        return self._datetime(self._stat(name).st_mtime)

    def _existing(self, name: str) -> str:
        digest = _digest(name)
        if digest is None or digest not in self.store:
            raise FileNotFoundError(f"no object named {name!r} in {self.location}")
        return digest

    def info(self, name: str) -> ObjectInfo:
        """The :class:`~streamstore.ObjectInfo` of the object ``name`` refers to."""
        try:
            return self.store.info(self._existing(name))
        except ObjectNotFoundError:
            raise FileNotFoundError(f"no object named {name!r}") from None


def serve(request: HttpRequest, name: str, storage: str | ContentStoreStorage = "default",
          ) -> HttpResponse:
    """A view serving the object a :class:`ContentStoreStorage` name refers to::

        path("media/<str:name>", serve, {"storage": "default"})

    The content type is guessed from the name's extension; the ETag is the
    digest and the response may be cached forever (the bytes behind a name
    never change).  404 for a name that refers to no object.
    """
    if isinstance(storage, str):
        from django.core.files.storage import storages

        storage = storages[storage]
    if not isinstance(storage, ContentStoreStorage):
        raise ImproperlyConfigured(f"serve() needs a ContentStoreStorage, got "
                                   f"{type(storage).__name__}")
    digest = _digest(name)
    if digest is None or digest not in storage.store:
        raise Http404(f"no object named {name!r}")
    etag = f'"{digest}"'
    if etag in request.headers.get("If-None-Match", ""):
        response: HttpResponse = HttpResponseNotModified()
    else:
        try:
            raw = storage.store.open(digest)
        except ObjectNotFoundError:
            raise Http404(f"no object named {name!r}") from None
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        response = FileResponse(raw, content_type=content_type, filename=name)
    response["ETag"] = etag
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    return response

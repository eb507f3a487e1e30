"""The upload handler: every file field of a multipart request streams into a
:class:`~streamstore.ContentStore` as Django's parser reads it."""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopFutureHandlers
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from .._errors import MultipartError, StreamStoreError, TooLargeError
from .._store import ContentStore, ObjectInfo, ObjectWriter
from .._types import Hook, SizeLimit
from ._http import error_response

__all__ = [
    "ContentStoreUploadHandler",
    "StoredUploadedFile",
    "UploadPart",
    "UploadRejected",
    "stream_uploads",
]

V = TypeVar("V", bound=Callable[..., HttpResponse])


class UploadRejected(StreamStoreError):
    """The request carrying an upload was rejected or failed before its files
    were accepted (a later file broke a limit, the CSRF check failed, the body
    was malformed or broke off); nothing of it was stored.

    Hooks see it in ``on_abort``; it is never raised to the caller.
    """


@dataclass(frozen=True)
class UploadPart:
    """One file field of a multipart request, as its headers describe it.

    Everything here comes from the client and is untrusted: ``file_name`` is
    the base name Django sanitized, ``content_type`` the declared type (check
    the bytes instead, e.g. with :class:`~streamstore.SniffHook`) and
    ``content_length`` the part's own declared length, if any.
    """

    field_name: str
    file_name: str
    content_type: str
    content_length: int | None = None
    charset: str | None = None
    content_type_extra: Mapping[str, Any] = field(default_factory=dict)


class StoredUploadedFile(UploadedFile):  # type: ignore[misc]
    """What ``request.FILES`` holds for a file streamed into the store.

    ``name``, ``content_type`` and ``charset`` are the client's; ``size`` is
    the number of bytes received.  Once the upload is stored (by the time a
    view sees it) ``info`` is its :class:`~streamstore.ObjectInfo` and
    ``sha256`` its digest.  Reading it (``read()``, ``chunks()``, ``open()``)
    reads the stored object.  Saving it to a
    :class:`~streamstore.django.ContentStoreStorage` over the same store copies
    nothing.
    """

    def __init__(self, store: ContentStore, part: UploadPart,
                 discard: Callable[[], None]) -> None:
        self._file: IO[bytes] | None = None
        super().__init__(None, part.file_name, part.content_type, 0, part.charset,
                         dict(part.content_type_extra))
        self.field_name = part.field_name
        self.store = store
        """The :class:`~streamstore.ContentStore` holding the upload."""
        self.info: ObjectInfo | None = None
        """The stored object (``None`` until the upload is stored)."""
        self._discard = discard

    @property
    def sha256(self) -> str:
        """The SHA-256 of the uploaded bytes (lowercase hex): the object's name."""
        if self.info is None:
            raise ValueError(f"{self.name!r} is not stored (yet)")
        return self.info.sha256

    @property
    def file(self) -> IO[bytes] | None:
        """The stored object opened for reading (opened on first use)."""
        if self._file is None and self.info is not None:
            self._file = self.store.open(self.info.sha256)
        return self._file

    @file.setter
    def file(self, value: IO[bytes] | None) -> None:
        self._file = value

    @property
    def closed(self) -> bool:
        """True unless the stored object is open."""
        return self._file is None or self._file.closed

    def open(self, mode: str | None = None) -> StoredUploadedFile:
        """(Re)open the stored object for reading, at its start."""
        if mode not in (None, "rb", "r"):
            raise ValueError(f"stored uploads open read-only in binary mode, not {mode!r}")
        if self.info is None:
            raise ValueError(f"{self.name!r} is not stored (yet)")
        if self.closed:
            self._file = self.store.open(self.info.sha256)
        else:
            assert self._file is not None
            self._file.seek(0)
        return self

    def close(self) -> None:
        """Close the stored object; an upload not stored yet is discarded."""
        if self.info is None:
            self._discard()
        if self._file is not None:
            self._file.close()

    def __repr__(self) -> str:
        state = self.info.sha256[:12] if self.info is not None else "not stored"
        return f"<StoredUploadedFile: {self.name} ({self.content_type}, {state})>"


class _Pending:
    """One file's writer and what ``request.FILES`` shows of it."""

    __slots__ = ("upload", "writer")

    def __init__(self, writer: ObjectWriter, upload: StoredUploadedFile | None) -> None:
        self.writer = writer
        self.upload = upload


class _Batch:
    """The files of one request that are not stored yet, and why the request
    failed (if it did).  Holds no reference to the handler, so that a
    ``weakref.finalize`` on the handler can discard what it left behind."""

    def __init__(self) -> None:
        self.pending: list[_Pending] = []
        self.error: BaseException | None = None

    def reject(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.discard()

    def discard(self) -> None:
        reason = self.error or UploadRejected(
            "the request was rejected before its uploads were stored")
        pending = self.pending
        while pending:
            writer = pending.pop().writer
            try:
                writer.__exit__(type(reason), reason, None)
            except Exception:  # pragma: no cover - an on_abort hook's failure is noted
                pass


def _store_from_settings() -> ContentStore:
    from django.core.files.storage import storages

    from ._storage import ContentStoreStorage

    alias = getattr(settings, "STREAMSTORE_UPLOAD_STORAGE", "default")
    storage = storages[alias]
    if not isinstance(storage, ContentStoreStorage):
        raise ImproperlyConfigured(
            f"ContentStoreUploadHandler streams into the storage {alias!r} "
            "(settings.STREAMSTORE_UPLOAD_STORAGE), which must be a "
            f"streamstore.django.ContentStoreStorage, not {type(storage).__name__}"
        )
    return storage.store


class ContentStoreUploadHandler(FileUploadHandler):  # type: ignore[misc]
    """A Django upload handler that streams every file field into a ContentStore.

    Each file's bytes go to the store as Django's multipart parser reads
    them: hashed, counted and size-checked on the way (a file over ``limit``
    stops the request at the chunk that crosses it), with no copy in memory
    or in a temp file of Django's.  ``request.FILES`` holds
    :class:`StoredUploadedFile` objects.

    All or nothing per request: the files are stored only when the whole
    body was read and every file passed its checks -- a later file breaking
    a limit, a malformed or broken-off body stores none of them.  With
    ``defer=True`` they wait further, until :meth:`accept` (what
    :func:`stream_uploads` calls once the CSRF check passed).  Errors are
    streamstore's own (:class:`~streamstore.TooLargeError`, ...): answer them
    with :func:`~streamstore.django.error_response` or
    :class:`~streamstore.django.UploadErrorMiddleware`.

    - ``store``: a :class:`~streamstore.ContentStore` or a
      :class:`~streamstore.django.ContentStoreStorage`; by default the
      storage named by ``settings.STREAMSTORE_UPLOAD_STORAGE`` (``"default"``).
    - ``limit``: bytes per file (an int or a :class:`~streamstore.SizeLimit`);
      by default ``settings.STREAMSTORE_UPLOAD_MAX_SIZE`` (``None``: no limit).
    - ``total_limit``: bytes of all files of the request together.
    - ``hooks``: called with each file's :class:`UploadPart`, returns the
      :class:`~streamstore.Hook` objects for that file (fresh ones: a
      ``SniffHook`` keeps state).
    - ``metadata``: called with each :class:`UploadPart`, returns the JSON
      metadata to store with the object (first metadata wins).

    Django constructs handlers listed in ``FILE_UPLOAD_HANDLERS`` with the
    request alone, so every option has a default.
    """

    chunk_size = 64 * 1024

    def __init__(
        self,
        request: HttpRequest | None = None,
        *,
        store: Any = None,
        limit: int | SizeLimit | None = None,
        total_limit: int | None = None,
        hooks: Callable[[UploadPart], Sequence[Hook]] | None = None,
        metadata: Callable[[UploadPart], Mapping[str, Any] | None] | None = None,
        defer: bool = False,
    ) -> None:
        super().__init__(request)
        if store is not None and not isinstance(store, ContentStore):
            inner = getattr(store, "store", None)
            if not isinstance(inner, ContentStore):
                raise TypeError(f"store must be a ContentStore or a ContentStoreStorage, "
                                f"got {type(store).__name__}")
            store = inner
        self._store: ContentStore | None = store
        if limit is None:
            limit = getattr(settings, "STREAMSTORE_UPLOAD_MAX_SIZE", None)
        self.limit = limit
        self.total_limit = total_limit
        self._hooks = hooks
        self._metadata = metadata
        self._accepted = not defer
        self._complete = False
        self._received = 0
        self._batch = _Batch()  # files not stored yet, in request order
        self._current: _Pending | None = None
        # A handler dropped with files still pending (an error Django's parser
        # raised, no middleware) discards them when it is collected.
        weakref.finalize(self, self._batch.discard)
        self.uploads: list[StoredUploadedFile] = []
        """Every file of the request, in order (also the ones not in ``request.FILES``)."""

    @property
    def error(self) -> BaseException | None:
        """The error that rejected the request's uploads, if one did."""
        return self._batch.error

    @property
    def store(self) -> ContentStore:
        """The :class:`~streamstore.ContentStore` the files go to."""
        if self._store is None:
            self._store = _store_from_settings()
        return self._store

    # -- Django's handler interface ----------------------------------------------------

    def new_file(self, field_name: str, file_name: str, content_type: str,
                 content_length: int | None, charset: str | None = None,
                 content_type_extra: dict[str, Any] | None = None) -> None:
        """Start streaming a file field into the store."""
        super().new_file(field_name, file_name, content_type, content_length, charset,
                         content_type_extra)
        part = UploadPart(field_name, file_name, content_type, content_length, charset,
                          dict(content_type_extra or {}))
        try:
            options: dict[str, Any] = {"chunk_size": self.chunk_size}
            if self.limit is not None:
                options["limit"] = self.limit
            if self._hooks is not None:
                options["hooks"] = list(self._hooks(part))
            if self._metadata is not None:
                options["metadata"] = self._metadata(part)
            writer = self.store.open_writer(**options)
            writer.__enter__()
        except BaseException as exc:
            self._reject(exc)
            raise
        entry = _Pending(writer, None)
        upload = StoredUploadedFile(self.store, part, functools.partial(
            self._batch.reject, UploadRejected("an upload was closed before it was stored")))
        entry.upload = upload
        self._batch.pending.append(entry)
        self._current = entry
        self.uploads.append(upload)
        self.file = upload  # Django's parser closes handler.file on StopUpload/SkipFile
        raise StopFutureHandlers

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        """Hash, check and write the next piece of the current file."""
        entry = self._current
        if entry is None:  # pragma: no cover - Django calls new_file first
            raise RuntimeError("receive_data_chunk() before new_file()")
        try:
            received = self._received = self._received + len(raw_data)
            if self.total_limit is not None and received > self.total_limit:
                raise TooLargeError(
                    f"the files of this request are larger than the limit of "
                    f"{self.total_limit} bytes (stopped after {received} bytes)",
                    limit=self.total_limit, size=received)
            entry.writer.write(raw_data)
        except BaseException as exc:
            self._reject(exc)
            raise

    def file_complete(self, file_size: int) -> StoredUploadedFile | None:
        """The file's last byte arrived: it waits, complete, for the end of the request."""
        entry = self._current
        if entry is None or entry.upload is None:
            return None
        self._current = None
        entry.upload.size = file_size
        return entry.upload

    def upload_interrupted(self) -> None:
        """The body ended inside a file: nothing of the request is stored."""
        self._reject(MultipartError("the request body ended inside a file"))

    def upload_complete(self) -> None:
        """The body was read to its end: store the files (unless deferred)."""
        if self.error is not None:
            raise self.error
        self._complete = True
        if self._accepted:
            self._store_pending()

    # -- accepting and discarding --------------------------------------------------------

    def accept(self) -> None:
        """Store the files (now, or as soon as the body was read).

        Only needed with ``defer=True``; :func:`stream_uploads` calls it once
        the request passed the CSRF check.
        """
        self._accepted = True
        if self._complete and self.error is None:
            self._store_pending()

    def abort(self) -> None:
        """Discard every file of the request not stored yet.  Idempotent; a
        no-op once the files were stored."""
        self._batch.discard()
        self._current = None

    def _store_pending(self) -> None:
        pending = self._batch.pending
        while pending:
            entry = pending.pop(0)
            try:
                entry.writer.__exit__(None, None, None)
            except BaseException as exc:
                self._reject(exc)
                raise
            finally:
                result = entry.writer.result
                if result is not None and entry.upload is not None:
                    entry.upload.info = result
                    entry.upload.size = result.size

    def _reject(self, exc: BaseException) -> None:
        self._current = None
        self._batch.reject(exc)


def stream_uploads(
    view: V | None = None,
    *,
    store: Any = None,
    limit: int | SizeLimit | None = None,
    total_limit: int | None = None,
    hooks: Callable[[UploadPart], Sequence[Hook]] | None = None,
    metadata: Callable[[UploadPart], Mapping[str, Any] | None] | None = None,
) -> Any:
    """Decorate a (sync) view so its file uploads stream into a ContentStore.

    ::

        @stream_uploads(store=blobs, limit=100 * 2**20)
        def upload(request):
            f = request.FILES["attachment"]       # a StoredUploadedFile
            Attachment.objects.create(sha256=f.sha256, name=f.name, size=f.size)
            return JsonResponse({"sha256": f.sha256})

    Django's recipe for swapping upload handlers, done right: the view is
    ``csrf_exempt`` (so ``CsrfViewMiddleware`` does not parse the body with
    the default handlers first) and the CSRF check runs inside, after the
    handler is installed.  The files are stored only once that check passed
    and the whole body was read; a request that fails either stores nothing.
    Upload errors become responses (:func:`~streamstore.django.error_response`:
    400, 413, 507); other exceptions propagate.  The options are those of
    :class:`ContentStoreUploadHandler`.
    """

    def decorate(view: V) -> V:
        if inspect.iscoroutinefunction(view):
            raise TypeError("stream_uploads() wraps sync views: Django parses the body "
                            "synchronously (an async view would block its event loop)")

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            handler = ContentStoreUploadHandler(
                request, store=store, limit=limit, total_limit=total_limit, hooks=hooks,
                metadata=metadata, defer=True)
            request.upload_handlers = [handler]

            def accepted(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                handler.accept()
                return view(request, *args, **kwargs)

            try:
                response: HttpResponse = csrf_protect(accepted)(request, *args, **kwargs)
            except Exception as exc:
                handler.abort()
                answer = error_response(exc)
                if answer is None:
                    raise
                return answer
            finally:
                handler.abort()
            return response

        return csrf_exempt(wrapper)  # type: ignore[no-any-return]

    if view is not None:
        return decorate(view)
    return decorate

"""Django integration: stream uploaded files straight into a
:class:`~streamstore.ContentStore`, and a ``Storage`` backend over one.

- :class:`ContentStoreUploadHandler`: a ``FileUploadHandler`` that streams
  every file field of a multipart request into the store as it arrives,
  with size limits enforced while streaming; ``request.FILES`` holds
  :class:`StoredUploadedFile` objects (``.sha256``, ``.info``).
- :func:`stream_uploads`: a view decorator that installs the handler the
  way Django needs it (``csrf_exempt`` outside, ``csrf_protect`` inside),
  stores nothing from a rejected request and answers 400/413/507.
- :class:`UploadErrorMiddleware` and :func:`error_response`: the same error
  mapping for a handler configured in ``FILE_UPLOAD_HANDLERS``.
- :class:`ContentStoreStorage`: a ``Storage`` whose file names are content
  addresses (``<sha256><ext>``), and :func:`serve`, a view that serves them.

Needs Django 4.2 or later: ``pip install 'streamstore[django]'``.  See
docs/django.md for the recipes.
"""

try:
    import django  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without Django installed
    raise ImportError(
        "streamstore.django needs Django; install it with: pip install 'streamstore[django]'"
    ) from exc

from ._http import UploadErrorMiddleware, error_response, status_for
from ._storage import ContentStoreStorage, serve
from ._upload import (
    ContentStoreUploadHandler,
    StoredUploadedFile,
    UploadPart,
    UploadRejected,
    stream_uploads,
)

__all__ = [
    "ContentStoreStorage",
    "ContentStoreUploadHandler",
    "StoredUploadedFile",
    "UploadErrorMiddleware",
    "UploadPart",
    "UploadRejected",
    "error_response",
    "serve",
    "status_for",
    "stream_uploads",
]

for _name in __all__:
    try:
        globals()[_name].__module__ = __name__
    except (AttributeError, TypeError):  # pragma: no cover
        pass
del _name

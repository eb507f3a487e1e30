"""Views of the test project."""

from __future__ import annotations

from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token

from streamstore import SniffHook, sniff_image_type
from streamstore.django import StoredUploadedFile, UploadPart, stream_uploads

from .app.models import Document


def describe(request: HttpRequest) -> JsonResponse:
    files = []
    for field, upload in request.FILES.items():
        assert isinstance(upload, StoredUploadedFile)
        assert upload.info is not None
        files.append({
            "field": field, "name": upload.name, "content_type": upload.content_type,
            "size": upload.size, "sha256": upload.sha256, "created": upload.info.created,
            "metadata": upload.info.metadata, "head": upload.read(16).hex(),
        })
    return JsonResponse({"files": files, "fields": dict(request.POST.items())})


@stream_uploads
def upload(request: HttpRequest) -> JsonResponse:
    return describe(request)


@stream_uploads(limit=64 * 1024 * 1024)
def big(request: HttpRequest) -> JsonResponse:
    return describe(request)


@stream_uploads(limit=1000, total_limit=1500)
def small(request: HttpRequest) -> JsonResponse:
    return describe(request)


def _only_images(head: bytes) -> None:
    if sniff_image_type(head) is None:
        raise BadRequest("not an image")


def _image_hooks(part: UploadPart) -> list[SniffHook]:
    return [SniffHook(12, _only_images)]


def _metadata(part: UploadPart) -> dict[str, str]:
    return {"name": part.file_name, "content_type": part.content_type}


@stream_uploads(hooks=_image_hooks, metadata=_metadata)
def images(request: HttpRequest) -> JsonResponse:
    return describe(request)


@stream_uploads
def document(request: HttpRequest) -> JsonResponse:
    doc = Document(title=request.POST["title"], file=request.FILES["file"])
    doc.save()
    return JsonResponse({"name": doc.file.name, "url": doc.file.url, "size": doc.file.size})


def plain(request: HttpRequest) -> JsonResponse:
    """No decorator: whatever FILE_UPLOAD_HANDLERS says."""
    return describe(request)


def token(request: HttpRequest) -> HttpResponse:
    return HttpResponse(get_token(request))

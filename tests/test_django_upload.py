"""streamstore.django's upload handler and stream_uploads, through Django's own
request handling (the test client): what is stored, what is answered, and that
a rejected request stores nothing and leaves no temp file."""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.http import HttpRequest
from django.test import Client
from django.test.utils import override_settings

from djsupport import BOUNDARY, CONTENT_TYPE, multipart, setup_django
from streamstore import ContentStore, Hook, SizeLimit, StoreResult, TooLargeError
from streamstore.django import (
    ContentStoreUploadHandler,
    StoredUploadedFile,
    UploadPart,
    UploadRejected,
    error_response,
    status_for,
    stream_uploads,
)
from streamstore.testing import temp_files

setup_django()

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


@pytest.fixture
def media(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "media"
    with override_settings(MEDIA_ROOT=str(root)):
        yield root


def stored(root: Path) -> set[str]:
    """Digests of the objects in the store at ``root`` (none if it was never created)."""
    return set(ContentStore(root)) if (root / "objects").exists() else set()


def post(client: Client, url: str, body: bytes, **extra: Any) -> Any:
    return client.generic("POST", url, body, content_type=CONTENT_TYPE, **extra)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_clean(root: Path) -> None:
    if root.exists():
        assert temp_files(root) == []


# -- what is stored ----------------------------------------------------------------------


def test_each_file_field_is_stored_under_its_digest(media: Path) -> None:
    a, b = b"first file\n" * 1000, bytes(range(256)) * 700  # b spans several 64 KiB chunks
    body = multipart([("title", "two files")],
                     [("a", "a.txt", "text/plain", a), ("b", "b.bin", "application/x", b)])
    response = post(Client(), "/upload", body)
    assert response.status_code == 200, response.content
    result = response.json()
    assert result["fields"] == {"title": "two files"}
    files = {f["field"]: f for f in result["files"]}
    assert files["a"]["sha256"] == sha(a) and files["a"]["size"] == len(a)
    assert files["b"]["sha256"] == sha(b) and files["b"]["size"] == len(b)
    assert files["a"]["name"] == "a.txt" and files["b"]["content_type"] == "application/x"
    assert files["b"]["head"] == b[:16].hex()  # the view read the stored object
    assert stored(media) == {sha(a), sha(b)}
    assert_clean(media)


def test_the_same_content_twice_is_stored_once(media: Path) -> None:
    data = b"same" * 5000
    body = multipart(files=[("a", "1.txt", "text/plain", data), ("b", "2.txt", "text/plain", data)])
    files = post(Client(), "/upload", body).json()["files"]
    assert [f["created"] for f in files] == [True, False]
    assert stored(media) == {sha(data)}


def test_an_empty_file_is_stored(media: Path) -> None:
    files = post(Client(), "/upload", multipart(files=[("a", "e.txt", "text/plain", b"")])).json()
    assert files["files"][0]["sha256"] == sha(b"")
    assert stored(media) == {sha(b"")}


def test_base64_encoded_parts_are_stored_decoded(media: Path) -> None:
    data = bytes(range(256)) * 300
    body = multipart(files=[("a", "a.bin", "application/x", data)], base64_files=True)
    files = post(Client(), "/upload", body).json()["files"]
    assert files[0]["sha256"] == sha(data)


def test_metadata_and_hooks_come_from_the_factories(media: Path) -> None:
    body = multipart(files=[("pic", "p.png", "image/png", PNG)])
    files = post(Client(), "/images", body).json()["files"]
    assert files[0]["metadata"] == {"name": "p.png", "content_type": "image/png"}


# -- rejected requests store nothing -------------------------------------------------------


def test_a_file_over_the_limit_is_413_and_nothing_is_stored(media: Path) -> None:
    body = multipart(files=[("a", "a.bin", "application/x", b"x" * 1001)])
    response = post(Client(), "/small", body)
    assert response.status_code == 413
    assert response.content == b"the upload is larger than the limit of 1000 bytes\n"
    assert stored(media) == set()
    assert_clean(media)


def test_a_later_file_over_the_limit_rejects_the_earlier_ones_too(media: Path) -> None:
    body = multipart(files=[("a", "a.txt", "text/plain", b"ok" * 100),
                            ("b", "b.bin", "application/x", b"x" * 1001)])
    assert post(Client(), "/small", body).status_code == 413
    assert stored(media) == set()
    assert_clean(media)


def test_the_total_limit_counts_every_file(media: Path) -> None:
    body = multipart(files=[("a", "a", "x/y", b"1" * 800), ("b", "b", "x/y", b"2" * 800)])
    response = post(Client(), "/small", body)
    assert response.status_code == 413
    assert b"1500" in response.content
    assert stored(media) == set()


def test_the_default_limit_comes_from_settings(media: Path) -> None:
    body = multipart(files=[("a", "a.bin", "application/x", b"z" * (1024 * 1024 + 1))])
    assert post(Client(), "/upload", body).status_code == 413
    with override_settings(STREAMSTORE_UPLOAD_MAX_SIZE=None):
        assert post(Client(), "/upload", body).status_code == 200
    assert len(stored(media)) == 1


def test_a_body_cut_off_inside_a_file_is_400_and_stores_nothing(media: Path) -> None:
    body = multipart(files=[("a", "a.txt", "text/plain", b"complete"),
                            ("b", "b.txt", "text/plain", b"cut off here")], close=False)
    body = body[: body.rindex(b"cut off") + 7]
    response = post(Client(), "/upload", body)
    assert response.status_code == 400
    assert stored(media) == set()
    assert_clean(media)


def test_a_parser_error_inside_a_file_stores_nothing(media: Path) -> None:
    body = multipart(files=[("a", "a.txt", "text/plain", b"fine")])
    bad = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"b\"; filename=\"b\"\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\nQUJDQUJD" + "Q" + "\r\n").encode()
    body = bad + body
    response = post(Client(raise_request_exception=False), "/upload", body)
    assert response.status_code == 400  # Django's own answer to MultiPartParserError
    assert stored(media) == set()
    assert_clean(media)


def test_a_hook_rejecting_the_bytes_stores_nothing(media: Path) -> None:
    body = multipart(files=[("ok", "p.png", "image/png", PNG),
                            ("bad", "x.png", "image/png", b"GIF?" + PNG)])
    response = post(Client(), "/images", body)
    assert response.status_code == 400  # the hook raised Django's BadRequest
    assert stored(media) == set()
    assert_clean(media)


# -- CSRF: the handler is installed before the check, and a failed check stores nothing ----


def test_a_request_failing_the_csrf_check_stores_nothing(media: Path) -> None:
    client = Client(enforce_csrf_checks=True)
    token = client.get("/token").content.decode()
    body = multipart([("csrfmiddlewaretoken", "x" * 64)], [("a", "a.txt", "text/plain", b"a")])
    assert post(client, "/upload", body).status_code == 403
    assert stored(media) == set()
    assert_clean(media)
    # The token may even come after the file: nothing is stored before the check.
    body = multipart(files=[("a", "a.txt", "text/plain", b"a")])[: -len(BOUNDARY) - 6]
    body += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"csrfmiddlewaretoken\""
             f"\r\n\r\n{token}\r\n--{BOUNDARY}--\r\n").encode()
    response = post(client, "/upload", body)
    assert response.status_code == 200, response.content
    assert stored(media) == {sha(b"a")}


# -- the handler installed for every view (FILE_UPLOAD_HANDLERS + the middleware) ----------

GLOBAL = {
    "FILE_UPLOAD_HANDLERS": ["streamstore.django.ContentStoreUploadHandler"],
    "MIDDLEWARE": ["streamstore.django.UploadErrorMiddleware",
                   "django.middleware.csrf.CsrfViewMiddleware"],
    "STREAMSTORE_UPLOAD_MAX_SIZE": 1000,
}


def test_configured_globally_uploads_stream_into_the_default_storage(media: Path) -> None:
    with override_settings(**GLOBAL):
        response = post(Client(), "/plain", multipart(files=[("a", "a", "x/y", b"hi")]))
        assert response.status_code == 200
        assert response.json()["files"][0]["sha256"] == sha(b"hi")
        response = post(Client(), "/plain", multipart(files=[("a", "a", "x/y", b"h" * 1001)]))
        assert response.status_code == 413
    assert stored(media) == {sha(b"hi")}
    assert_clean(media)


def test_configured_globally_an_error_while_csrf_reads_the_body_is_still_413(
        media: Path) -> None:
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    with override_settings(**GLOBAL):
        token = client.get("/token").content.decode()
        body = multipart([("csrfmiddlewaretoken", token)], [("a", "a", "x/y", b"h" * 1001)])
        response = post(client, "/plain", body)
    assert response.status_code == 413
    assert stored(media) == set()
    assert_clean(media)


def test_the_default_storage_must_be_a_content_store(media: Path) -> None:
    from django.core.exceptions import ImproperlyConfigured

    other = {"default": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}
    with override_settings(STORAGES=other):
        with pytest.raises(ImproperlyConfigured, match="STREAMSTORE_UPLOAD_STORAGE"):
            ContentStoreUploadHandler().store  # noqa: B018


# -- the handler's own contract ---------------------------------------------------------------


class Recorder(Hook):
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_commit(self, result: StoreResult) -> None:
        self.events.append("commit")

    def on_abort(self, exc: BaseException) -> None:
        self.events.append(type(exc).__name__)


def feed(handler: ContentStoreUploadHandler, name: str, data: bytes) -> StoredUploadedFile | None:
    from django.core.files.uploadhandler import StopFutureHandlers

    with pytest.raises(StopFutureHandlers):
        handler.new_file("f", name, "application/octet-stream", None)
    for i in range(0, len(data), 7):
        handler.receive_data_chunk(data[i:i + 7], i)
    return handler.file_complete(len(data))


def test_deferred_files_are_stored_only_when_accepted(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "s")
    hooks: list[Recorder] = []

    def make(part: UploadPart) -> list[Hook]:
        hooks.append(Recorder())
        return [hooks[-1]]

    handler = ContentStoreUploadHandler(store=store, hooks=make, defer=True)
    first, second = feed(handler, "1", b"one"), feed(handler, "2", b"two")
    handler.upload_complete()
    assert len(store) == 0 and first is not None and first.info is None
    with pytest.raises(ValueError, match="not stored"):
        first.sha256  # noqa: B018
    handler.accept()
    assert first.sha256 == sha(b"one") and second is not None and second.sha256 == sha(b"two")
    assert set(store) == {sha(b"one"), sha(b"two")}
    assert [h.events for h in hooks] == [["commit"], ["commit"]]
    handler.abort()  # a no-op once stored
    assert len(store) == 2
    with first:
        assert first.read() == b"one"
    assert first.closed


def test_abort_discards_pending_files_and_tells_their_hooks(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "s")
    hook = Recorder()
    handler = ContentStoreUploadHandler(store=store, hooks=lambda part: [hook], defer=True)
    feed(handler, "1", b"one")
    handler.abort()
    handler.abort()
    handler.upload_complete()
    handler.accept()
    assert hook.events == ["UploadRejected"]
    assert len(store) == 0
    assert temp_files(tmp_path / "s") == []


def test_closing_an_upload_that_is_not_stored_rejects_the_request(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "s")
    handler = ContentStoreUploadHandler(store=store, defer=True)
    upload = feed(handler, "1", b"one")
    assert upload is not None
    upload.close()  # what Django's parser does to request.FILES when it fails
    assert isinstance(handler.error, UploadRejected)
    with pytest.raises(UploadRejected):
        handler.upload_complete()
    assert len(store) == 0
    assert temp_files(tmp_path / "s") == []


def test_a_handler_dropped_mid_file_leaves_no_temp_file(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "s")
    handler = ContentStoreUploadHandler(store=store)
    from django.core.files.uploadhandler import StopFutureHandlers

    with pytest.raises(StopFutureHandlers):
        handler.new_file("f", "x", "a/b", None)
    handler.receive_data_chunk(b"half a file", 0)
    assert len(temp_files(tmp_path / "s")) == 1
    del handler
    gc.collect()
    assert temp_files(tmp_path / "s") == []
    assert len(store) == 0


def test_the_limit_stops_at_the_chunk_that_crosses_it(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "s")
    handler = ContentStoreUploadHandler(store=store, limit=SizeLimit(max_bytes=10))
    from django.core.files.uploadhandler import StopFutureHandlers

    with pytest.raises(StopFutureHandlers):
        handler.new_file("f", "x", "a/b", None)
    handler.receive_data_chunk(b"12345", 0)
    with pytest.raises(TooLargeError) as info:
        handler.receive_data_chunk(b"678901", 5)
    assert info.value.size == 11
    assert handler.error is info.value
    assert temp_files(tmp_path / "s") == [] and len(store) == 0


def test_store_may_be_a_storage_and_nothing_else(tmp_path: Path) -> None:
    from streamstore.django import ContentStoreStorage

    storage = ContentStoreStorage(tmp_path / "s")
    assert ContentStoreUploadHandler(store=storage).store is storage.store
    with pytest.raises(TypeError, match="ContentStore"):
        ContentStoreUploadHandler(store=str(tmp_path))


def test_stream_uploads_refuses_async_views() -> None:
    async def view(request: HttpRequest) -> None:
        raise AssertionError

    with pytest.raises(TypeError, match="sync views"):
        stream_uploads(view)


def test_error_mapping() -> None:
    from streamstore import (
        DiskFullError,
        HashMismatchError,
        MultipartError,
        PartialWriteError,
        SourceError,
        StorageError,
        TooSmallError,
    )

    cases: list[tuple[BaseException, int | None]] = [
        (TooLargeError(limit=1, size=2), 413),
        (DiskFullError(28, "No space left on device", "/srv/x", dest="/srv/x"), 507),
        (TooSmallError(limit=5, size=1), 400),
        (HashMismatchError(expected="a" * 64, actual="b" * 64), 400),
        (PartialWriteError(expected_size=5, actual_size=1), 400),
        (MultipartError("bad boundary"), 400),
        (SourceError("reset"), 400),
        (StorageError(5, "Input/output error", "/srv/x"), None),
        (ValueError("bug"), None),
    ]
    for exc, status in cases:
        assert status_for(exc) == status
        response = error_response(exc)
        assert (response.status_code if response is not None else None) == status
        if response is not None:
            assert b"/srv" not in response.content  # no server path reaches the client
    full = error_response(DiskFullError(28, "No space left on device", "/srv/x"))
    assert full is not None and full["Retry-After"] == "60"


def test_json_of_the_view_is_well_formed(media: Path) -> None:
    # The views answer JSON; a smoke check that the test project itself works.
    response = post(Client(), "/upload", multipart([("k", "v")]))
    assert json.loads(response.content) == {"files": [], "fields": {"k": "v"}}

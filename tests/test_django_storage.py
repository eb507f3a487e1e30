"""ContentStoreStorage against the contract of Django's storage backends.

Adapted from Django's own storage tests (tests/file_storage/tests.py and
test_inmemory_storage.py): each test below keeps the case Django checks and
states what a content-addressed store does instead where the two differ --
names are ``<sha256><ext>``, there are no directories, files are immutable.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured, SuspiciousFileOperation
from django.core.files.base import ContentFile, File
from django.core.files.storage import storages
from django.core.files.uploadedfile import InMemoryUploadedFile, TemporaryUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import override_settings
from django.utils import timezone
from django.utils.functional import lazy

from djsupport import CONTENT_TYPE, multipart, setup_django
from streamstore import ContentStore, TooLargeError
from streamstore._local import LocalBackend
from streamstore.django import ContentStoreStorage
from streamstore.testing import temp_files

setup_django()

from djproject.app.models import Document  # noqa: E402 - needs the app registry


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


CONTENTS = b"custom contents"
NAME = sha(CONTENTS)


@pytest.fixture
def storage(tmp_path: Path) -> ContentStoreStorage:
    return ContentStoreStorage(location=tmp_path / "store", base_url="/test_media_url/")


@pytest.fixture
def media(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "media"
    with override_settings(MEDIA_ROOT=str(root)):
        yield root


@pytest.fixture
def documents(media: Path) -> Iterator[None]:
    with connection.schema_editor() as editor:
        editor.create_model(Document)
    try:
        yield
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(Document)


def recent(dt: datetime, now: datetime) -> bool:
    return abs(now - dt) < timedelta(seconds=60)


# -- construction -----------------------------------------------------------------------


def test_deconstruction(tmp_path: Path) -> None:
    path, args, kwargs = ContentStoreStorage().deconstruct()
    assert path == "streamstore.django.ContentStoreStorage"
    assert (args, kwargs) == ((), {})
    given = {"location": str(tmp_path), "base_url": "http://files.example.com/", "durable": False}
    assert ContentStoreStorage(**given).deconstruct()[2] == given


def test_lazy_base_url_is_not_evaluated_at_init() -> None:
    def boom() -> str:
        raise LookupError("evaluated")

    storage = ContentStoreStorage(base_url=lazy(boom, str)())
    with pytest.raises(LookupError):
        storage.url("x")


def test_empty_location_is_refused(media: Path) -> None:
    with override_settings(MEDIA_ROOT=""), pytest.raises(ImproperlyConfigured):
        ContentStoreStorage().store  # noqa: B018


def test_location_and_store_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not both"):
        ContentStoreStorage(tmp_path, store=ContentStore(tmp_path / "s"))
    with pytest.raises(TypeError, match="ContentStore"):
        ContentStoreStorage(store=str(tmp_path))  # type: ignore[arg-type]


def test_setting_changed(tmp_path: Path) -> None:
    explicit = ContentStoreStorage(location=tmp_path / "explicit", base_url="explicit_url/")
    defaults = ContentStoreStorage()
    with override_settings(MEDIA_ROOT=str(tmp_path / "overridden"), MEDIA_URL="/over/"):
        assert explicit.location == str(tmp_path / "explicit")
        assert explicit.base_url == "explicit_url/"
        assert defaults.location == str(tmp_path / "overridden")
        assert defaults.base_url == "/over/"
        defaults.save("a.txt", ContentFile(b"a"))
        assert (tmp_path / "overridden" / "objects").is_dir()


# -- save, open, exists, delete -----------------------------------------------------------------


def test_file_access_options(storage: ContentStoreStorage) -> None:
    assert not storage.exists(NAME)
    name = storage.save("storage_test", ContentFile("storage contents"))
    assert name == sha(b"storage contents")
    assert storage.exists(name)
    with storage.open(name, "r") as f:
        assert f.read() == "storage contents"
    with storage.open(name) as f:
        assert f.read() == b"storage contents"
    storage.delete(name)
    assert not storage.exists(name)


@pytest.mark.parametrize("mode", ["w", "wb", "a", "r+", "rb+", "x"])
def test_stored_files_are_immutable(storage: ContentStoreStorage, mode: str) -> None:
    name = storage.save("f.txt", ContentFile(CONTENTS))
    with pytest.raises(ValueError, match="immutable"):
        storage.open(name, mode)


def test_the_name_is_the_digest_plus_the_extension(storage: ContentStoreStorage) -> None:
    assert storage.save("report.PDF", ContentFile(CONTENTS)) == NAME + ".PDF"
    assert storage.save("noext", ContentFile(CONTENTS)) == NAME
    assert storage.save("weird.ex t", ContentFile(CONTENTS)) == NAME  # not a plain extension
    assert storage.save("a.tar.gz", ContentFile(CONTENTS)) == NAME + ".gz"
    for name in (NAME, NAME + ".PDF", NAME + ".gz", NAME + ".anything"):
        assert storage.exists(name)
        assert storage.size(name) == len(CONTENTS)


def test_file_save_without_name(storage: ContentStoreStorage) -> None:
    f = ContentFile(CONTENTS)
    f.name = "test.file"
    assert storage.save(None, f) == NAME + ".file"


def test_file_save_with_path_drops_the_directories(storage: ContentStoreStorage) -> None:
    name = storage.save("path/to/test.file", ContentFile("file saved with path"))
    assert name == sha(b"file saved with path") + ".file"
    assert not storage.exists("path/to")
    assert not storage.exists("path/to/" + name)
    with storage.open(name) as f:
        assert f.read() == b"file saved with path"


def test_saving_the_same_bytes_again_returns_the_same_name(storage: ContentStoreStorage) -> None:
    # FileSystemStorage appends _<7 random chars>; equal content needs no new name here.
    first = storage.save("multiple_files.txt", ContentFile("Same Content"))
    second = storage.save("multiple_files.txt", ContentFile("Same Content"))
    third = storage.save("multiple_files.txt", ContentFile("Other Content"))
    assert first == second != third
    assert storage.listdir("")[1] == sorted([first[:64], third[:64]])


def test_save_doesnt_close(storage: ContentStoreStorage) -> None:
    with TemporaryUploadedFile("test", "text/plain", 1, "utf8") as file:
        file.write(b"1")
        file.seek(0)
        storage.save("path/to/test.file", file)
        assert not file.closed and not file.file.closed
    file = InMemoryUploadedFile(StringIO("1"), "", "test", "text/plain", 1, "utf8")
    with file:
        storage.save("path/to/test.file", file)
        assert not file.closed and not file.file.closed


def test_text_is_stored_as_utf8(storage: ContentStoreStorage) -> None:
    assert storage.size(storage.save("file.txt", ContentFile("test"))) == 4
    assert storage.size(storage.save("unicode.txt", ContentFile("è"))) == 2
    assert storage.size(storage.save("file.dat", ContentFile(b"\xf1\xf1"))) == 2


def test_large_file_saving(storage: ContentStoreStorage) -> None:
    data = b"A" * File.DEFAULT_CHUNK_SIZE * 3 + b"tail"
    name = storage.save("big.bin", ContentFile(data))
    assert name == sha(data) + ".bin"
    with storage.open(name) as f:
        assert f.read() == data


def test_file_chunks_error_propagates_and_stores_nothing(storage: ContentStoreStorage) -> None:
    f1 = ContentFile("chunks fails")

    def failing_chunks() -> Iterator[bytes]:
        yield b"some"
        raise OSError("the source broke")

    f1.chunks = failing_chunks  # type: ignore[method-assign]
    with pytest.raises(OSError, match="the source broke"):
        storage.save("error.file", f1)
    assert storage.listdir("") == ([], [])
    assert temp_files(storage.location) == []


def test_max_size_is_enforced_while_streaming(tmp_path: Path) -> None:
    storage = ContentStoreStorage(tmp_path / "s", max_size=10)
    assert storage.save("ok", ContentFile(b"0123456789"))
    with pytest.raises(TooLargeError):
        storage.save("big", ContentFile(b"0123456789!"))
    assert len(storage.store) == 1
    assert temp_files(tmp_path / "s") == []


def test_open_missing_file(storage: ContentStoreStorage) -> None:
    for name in (NAME, "missing.txt", "", "../etc/passwd"):
        with pytest.raises(FileNotFoundError):
            storage.open(name)
        with pytest.raises(FileNotFoundError):
            storage.size(name)


def test_delete(storage: ContentStoreStorage) -> None:
    name = storage.save("x.txt", ContentFile(CONTENTS))
    storage.delete(NAME)  # any name of the object removes it
    assert not storage.exists(name)
    storage.delete(name)  # deleting a missing file is no error
    storage.delete("missing_dir/missing_file.txt")


def test_delete_no_name(storage: ContentStoreStorage) -> None:
    with pytest.raises(ValueError):
        storage.delete("")


def test_file_storage_prevents_directory_traversal(storage: ContentStoreStorage) -> None:
    # FileSystemStorage raises SuspiciousFileOperation; here no name can name a path.
    for name in ("..", "/etc/passwd", "../" + NAME, NAME + "/../..", "objects"):
        assert not storage.exists(name)
    with pytest.raises(SuspiciousFileOperation):
        storage.save("../escape.txt", ContentFile(b"x"))


def test_names_are_case_sensitive_in_the_extension_only(storage: ContentStoreStorage) -> None:
    name = storage.save("CaSe_SeNsItIvE.TxT", ContentFile(CONTENTS))
    assert name.endswith(".TxT")
    assert not storage.exists(NAME.upper())  # digests are lowercase hex


def test_concurrent_saves_of_the_same_content(storage: ContentStoreStorage) -> None:
    data = os.urandom(300_000)
    names: list[str] = []
    threads = [threading.Thread(target=lambda: names.append(
        storage.save("same.bin", ContentFile(data)))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert names == [sha(data) + ".bin"] * 6
    assert len(storage.store) == 1
    assert temp_files(storage.location) == []


# -- names, urls, listing, paths, times -----------------------------------------------------------


def test_get_available_name_keeps_the_name(storage: ContentStoreStorage) -> None:
    storage.save("taken.txt", ContentFile(CONTENTS))
    assert storage.get_available_name("taken.txt") == "taken.txt"
    assert storage.get_available_name("taken.txt", max_length=68) == "taken.txt"
    assert storage.get_available_name("taken.txt", max_length=67) == "taken"
    with pytest.raises(SuspiciousFileOperation, match="can not find an available filename"):
        storage.get_available_name("taken.txt", max_length=63)


def test_generate_filename_drops_directories(storage: ContentStoreStorage) -> None:
    assert storage.generate_filename("documents/2024/01/my file.pdf") == "my_file.pdf"
    assert storage.generate_filename("a\\b\\c.txt") == "c.txt"
    with pytest.raises(SuspiciousFileOperation):
        storage.generate_filename("documents/")


def test_file_url(storage: ContentStoreStorage) -> None:
    assert storage.url(NAME + ".txt") == "/test_media_url/" + NAME + ".txt"
    assert (storage.url(r"~!*()'@#$%^&*abc`+ =.file")
            == "/test_media_url/~!*()'%40%23%24%25%5E%26*abc%60%2B%20%3D.file")
    assert storage.url("ab\0c") == "/test_media_url/ab%00c"
    assert storage.url("/evil.com") == "/test_media_url/evil.com"
    assert storage.url(r"\evil.com") == "/test_media_url/evil.com"
    assert storage.url("///evil.com") == "/test_media_url/evil.com"
    assert storage.url(None) == "/test_media_url/"


def test_base_url(tmp_path: Path) -> None:
    with override_settings(MEDIA_URL=None):
        with pytest.raises(ValueError):
            ContentStoreStorage(tmp_path).url("test.file")
    storage = ContentStoreStorage(tmp_path, base_url="/no_ending_slash")
    assert storage.url("test.file") == "/no_ending_slash/test.file"


def test_listdir(storage: ContentStoreStorage) -> None:
    assert storage.listdir("") == ([], [])
    a = storage.save("storage_test_1", ContentFile("custom content"))
    b = storage.save("storage_test_2.txt", ContentFile("other content"))
    assert storage.listdir("") == ([], sorted([a, b[:64]]))
    assert storage.listdir(".") == storage.listdir("")
    with pytest.raises(FileNotFoundError):
        storage.listdir("storage_dir_1")


def test_file_path(storage: ContentStoreStorage) -> None:
    name = storage.save("test.file", ContentFile(CONTENTS))
    path = Path(storage.path(name))
    assert path == Path(storage.location, "objects", NAME[:2], NAME[2:4], NAME)
    assert path.read_bytes() == CONTENTS


@pytest.mark.parametrize("getter", ["get_accessed_time", "get_created_time",
                                    "get_modified_time"])
def test_file_times(storage: ContentStoreStorage, getter: str) -> None:
    name = storage.save("test.file", ContentFile(CONTENTS))
    stat = {"get_accessed_time": os.path.getatime, "get_created_time": os.path.getctime,
            "get_modified_time": os.path.getmtime}[getter]
    with override_settings(USE_TZ=True):
        dt = getattr(storage, getter)(name)
        assert timezone.is_aware(dt)
        assert dt == datetime.fromtimestamp(stat(storage.path(name)), tz=dt_timezone.utc)
        assert recent(dt, timezone.now())
    with override_settings(USE_TZ=False):
        dt = getattr(storage, getter)(name)
        assert timezone.is_naive(dt)
        assert dt == datetime.fromtimestamp(stat(storage.path(name)))
    with pytest.raises(FileNotFoundError):
        getattr(storage, getter)("f" * 64)


class NoPathBackend(LocalBackend):
    """A store whose objects have no local path (as in object storage)."""

    def path(self, digest: str) -> None:  # type: ignore[override]
        return None


def test_a_store_without_local_paths(tmp_path: Path) -> None:
    store = ContentStore(NoPathBackend(tmp_path / "s", durable=False, create=True, reserve=0))
    storage = ContentStoreStorage(store=store, base_url="/m/")
    name = storage.save("a.txt", ContentFile(CONTENTS))
    assert storage.exists(name) and storage.size(name) == len(CONTENTS)
    with storage.open(name) as f:
        assert f.read() == CONTENTS
    with pytest.raises(NotImplementedError):
        storage.path(name)
    with pytest.raises(NotImplementedError):
        storage.get_modified_time(name)


# -- FileField ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("documents")
def test_filefield_save_read_and_reopen() -> None:
    doc = Document(title="t")
    doc.file.save("django_test.txt", ContentFile("content"))
    assert doc.file.name == sha(b"content") + ".txt"  # upload_to's directories dropped
    assert doc.file.size == 7
    assert doc.file.read(3) == b"con"
    assert doc.file.read() == b"tent"
    assert list(doc.file.chunks(chunk_size=2)) == [b"co", b"nt", b"en", b"t"]
    doc.file.close()
    stored = Document.objects.get(pk=doc.pk)
    assert stored.file.name == doc.file.name
    assert stored.file.url == "/media/" + doc.file.name
    with stored.file.open() as f:
        assert f.read() == b"content"
    with pytest.raises(ValueError, match="immutable"):
        Document.objects.get(pk=doc.pk).file.open("wb")


@pytest.mark.usefixtures("documents")
def test_filefield_duplicate_content_shares_the_name() -> None:
    docs = [Document(title=str(i)) for i in range(2)]
    for d in docs:
        d.file.save("multiple_files.txt", ContentFile("Same Content"))
    assert docs[0].file.name == docs[1].file.name
    docs[0].delete()  # deleting a model never deletes its file
    assert docs[1].file.storage.exists(docs[1].file.name)


@pytest.mark.usefixtures("documents")
def test_filefield_max_length() -> None:
    field = Document._meta.get_field("file")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(field, "max_length", 66)
        doc = Document(title="t")
        doc.file.save("filename.ext", ContentFile("Same Content"))
        assert doc.file.name == sha(b"Same Content")  # the extension did not fit
        mp.setattr(field, "max_length", 50)
        with pytest.raises(SuspiciousFileOperation, match="can not find an available"):
            Document(title="u").file.save("filename.ext", ContentFile("x"))


@pytest.mark.usefixtures("documents")
def test_an_upload_saved_to_the_same_store_is_not_copied(
        media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    puts: list[Any] = []
    real_put = ContentStore.put

    def counting_put(self: ContentStore, source: Any, **options: Any) -> Any:
        puts.append(source)
        return real_put(self, source, **options)

    monkeypatch.setattr(ContentStore, "put", counting_put)
    data = b"an uploaded document\n" * 5000
    body = multipart([("title", "report")], [("file", "report.pdf", "application/pdf", data)])
    response = Client().generic("POST", "/document", body, content_type=CONTENT_TYPE)
    assert response.status_code == 200, response.content
    assert response.json() == {"name": sha(data) + ".pdf", "url": f"/media/{sha(data)}.pdf",
                               "size": len(data)}
    assert puts == []  # streamed once by the upload handler, never copied
    assert Document.objects.get().file.name == sha(data) + ".pdf"
    # A storage over another store copies the bytes, as any storage would.
    other = ContentStoreStorage(media.parent / "other")
    with Document.objects.get().file.open() as f:
        assert other.save("copy.pdf", f) == sha(data) + ".pdf"
    assert len(puts) == 1


# -- serve --------------------------------------------------------------------------------------


def test_serve(media: Path) -> None:
    name = storages["default"].save("pic.png", ContentFile(b"\x89PNG\r\n\x1a\n...."))
    client = Client()
    response = client.get(f"/media/{name}")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"\x89PNG\r\n\x1a\n...."
    response.close()
    assert response["Content-Type"] == "image/png"
    assert response["ETag"] == f'"{name[:64]}"'
    assert "immutable" in response["Cache-Control"]
    assert client.get(f"/media/{name}", headers={"If-None-Match": response["ETag"]}
                      ).status_code == 304
    other_name = client.get(f"/media/{name[:64]}.bin")
    assert other_name.status_code == 200
    assert other_name["Content-Type"] == "application/octet-stream"
    other_name.close()
    assert client.get("/media/" + "0" * 64).status_code == 404
    assert client.get("/media/passwd").status_code == 404

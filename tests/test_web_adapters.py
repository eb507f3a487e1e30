"""The Starlette/FastAPI, aiohttp and Flask adapters, each behind a real server
(uvicorn, aiohttp's runner, Werkzeug's threaded WSGI server) with a real
client (httpx): uploads raw and multipart, error statuses, disconnects,
admission, downloads with ranges."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import streamstore as ss
from multipart_bodies import FormPart, encode
from streamstore.testing import assert_no_temp_files, fail_storage
from web_apps import APPS
from webservers import aiohttp_server, send_partial, uvicorn_server, wait_for, werkzeug_server

SERVERS = {"starlette": uvicorn_server, "aiohttp": aiohttp_server, "flask": werkzeug_server}
DATA = os.urandom(300_000)
DIGEST = hashlib.sha256(DATA).hexdigest()


class Site:
    def __init__(self, url: str, store: ss.ContentStore, done: list[str]) -> None:
        self.url = url
        self.store = store
        self.done = done
        self.client = httpx.Client(base_url=url, timeout=30)

    def multipart(self, *parts: FormPart, **params: Any) -> httpx.Response:
        body = encode(parts)
        return self.client.post("/multipart", content=body.data, params=params,
                                headers={"Content-Type": body.content_type})


@pytest.fixture(params=sorted(APPS))
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    store = ss.ContentStore(tmp_path / "store", durable=False)
    done: list[str] = []
    app = APPS[request.param](store, done)
    with SERVERS[request.param](app) as url:
        s = Site(url, store, done)
        try:
            yield s
        finally:
            s.client.close()


def assert_empty(store: ss.ContentStore) -> None:
    assert len(store) == 0
    assert store.root is not None
    assert_no_temp_files(store.root)


def test_multipart_upload_streams_into_the_store(site: Site) -> None:
    r = site.multipart(FormPart("title", b"holiday"), FormPart("tag", "été".encode()),
                       FormPart("file", DATA, "a.bin", "application/octet-stream"))
    assert r.status_code == 200, r.text
    assert r.json() == {"sha256": DIGEST, "size": len(DATA), "created": True,
                        "fields": {"title": "holiday", "tag": "été"}}
    assert site.store.info(DIGEST).metadata == {"title": "holiday", "tag": "été"}
    with site.store.open(DIGEST) as f:
        assert f.read() == DATA


def test_httpx_own_multipart_encoding_is_read(site: Site) -> None:
    r = site.client.post("/multipart", data={"title": "x"},
                         files={"file": ("b.bin", DATA, "application/octet-stream")})
    assert r.status_code == 200, r.text
    assert r.json()["sha256"] == DIGEST


def test_raw_upload(site: Site) -> None:
    r = site.client.post("/raw", content=DATA)
    assert r.status_code == 200, r.text
    assert r.json()["sha256"] == DIGEST
    chunked = site.client.post("/raw", content=iter([DATA[:1000], DATA[1000:]]))
    assert chunked.status_code == 200, chunked.text
    assert chunked.json() == {"sha256": DIGEST, "size": len(DATA), "created": False}


def test_a_part_over_the_limit_is_413_and_nothing_is_stored(site: Site) -> None:
    r = site.multipart(FormPart("file", DATA, "a.bin"), limit=10_000)
    assert r.status_code == 413
    assert r.json()["error"] == "TooLargeError"
    assert_empty(site.store)


def test_a_raw_body_over_the_limit_is_413_before_a_byte_is_read(site: Site) -> None:
    r = site.client.post("/raw", content=DATA, params={"limit": 1000})
    assert r.status_code == 413
    assert r.json()["detail"] == "the upload is larger than the limit of 1000 bytes"
    assert_empty(site.store)


@pytest.mark.parametrize("body, content_type", [
    (b"not multipart at all", "multipart/form-data; boundary=xyz"),
    (b"--xyz\r\nContent-Disposition: form-data; name=a\r\n\r\ntruncated",
     "multipart/form-data; boundary=xyz"),
    (b"--xyz--\r\n", "multipart/form-data"),
    (b"{}", "application/json"),
])
def test_malformed_bodies_are_400(site: Site, body: bytes, content_type: str) -> None:
    r = site.client.post("/multipart", content=body, headers={"Content-Type": content_type})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "MultipartError"
    assert_empty(site.store)


def test_disk_full_is_507_without_a_path_in_the_answer(site: Site) -> None:
    assert site.store.root is not None
    with fail_storage(site.store.root, errno=errno.ENOSPC, after_bytes=50_000):
        r = site.multipart(FormPart("file", DATA, "a.bin"))
    assert r.status_code == 507
    assert r.json() == {"error": "DiskFullError", "detail": "insufficient storage"}
    assert_empty(site.store)


def test_admission_refuses_a_body_that_cannot_fit(site: Site, tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    site.store.backend.reserve = free  # nothing declared fits any more
    r = site.client.post("/raw", content=DATA)
    assert r.status_code == 507
    assert_empty(site.store)


def test_a_client_that_disconnects_mid_part_leaves_nothing(site: Site) -> None:
    body = encode([FormPart("file", DATA, "a.bin")])
    headers = {"Content-Type": body.content_type, "Content-Length": str(len(body.data))}
    send_partial(site.url, "/multipart", headers, body.data[:100_000])
    wait_for(lambda: site.done)
    assert site.done == ["error"]
    assert_empty(site.store)


def test_a_raw_upload_cut_short_leaves_nothing(site: Site) -> None:
    send_partial(site.url, "/raw", {"Content-Length": str(len(DATA))}, DATA[:100_000])
    wait_for(lambda: site.done)
    assert site.done == ["error"]
    assert_empty(site.store)


# -- downloads -----------------------------------------------------------------------------


@pytest.fixture
def stored(site: Site) -> Site:
    site.store.put(DATA)
    return site


def test_download_whole(stored: Site) -> None:
    r = stored.client.get(f"/objects/{DIGEST}")
    assert r.status_code == 200
    assert r.content == DATA
    assert r.headers["etag"] == f'"{DIGEST}"'
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-length"] == str(len(DATA))


@pytest.mark.parametrize("header, start, end", [
    ("bytes=0-99", 0, 99), ("bytes=1000-", 1000, len(DATA) - 1),
    ("bytes=-500", len(DATA) - 500, len(DATA) - 1),
    ("bytes=299000-999999999", 299_000, len(DATA) - 1),
])
def test_download_a_range(stored: Site, header: str, start: int, end: int) -> None:
    r = stored.client.get(f"/objects/{DIGEST}", headers={"Range": header})
    assert r.status_code == 206
    assert r.content == DATA[start:end + 1]
    assert r.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"


def test_download_unsatisfiable_head_and_conditional(stored: Site) -> None:
    r = stored.client.get(f"/objects/{DIGEST}", headers={"Range": f"bytes={len(DATA)}-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(DATA)}"
    head = stored.client.head(f"/objects/{DIGEST}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(DATA))
    cached = stored.client.get(f"/objects/{DIGEST}", headers={"If-None-Match": f'"{DIGEST}"'})
    assert cached.status_code == 304 and cached.content == b""
    stale = stored.client.get(f"/objects/{DIGEST}",
                              headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == DATA


def test_download_missing_or_bad_digest_is_404(stored: Site) -> None:
    assert stored.client.get(f"/objects/{'0' * 64}").status_code == 404
    assert stored.client.get("/objects/not-a-digest").status_code == 404


def test_a_corrupt_object_is_never_sent_whole(stored: Site) -> None:
    path = stored.store.path(DIGEST)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(len(DATA) - 10)
        f.write(b"corrupted!")
    received = b""
    status = cut = None
    try:
        with stored.client.stream("GET", f"/objects/{DIGEST}") as r:
            status = r.status_code
            for chunk in r.iter_bytes():
                received += chunk
    except httpx.HTTPError as exc:  # the server cut the response short
        cut = exc
    # Either the headers were out (the response is cut short) or not yet (500).
    assert cut is not None or status == 500, (status, len(received))
    assert DATA[-10:] not in received[-10:] and b"corrupted!" not in received
    part = stored.client.get(f"/objects/{DIGEST}", headers={"Range": "bytes=0-99"})
    assert part.content == DATA[:100]  # a range is served as stored, unverified

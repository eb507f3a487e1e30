"""tus 1.0.0 conformance, raw HTTP (httpx and plain sockets) against a real
uvicorn server in a child process: every MUST of the core protocol and of
each extension TusApp implements (creation, creation-with-upload,
creation-defer-length, termination, checksum, expiration, concatenation),
plus the behaviour docs/tus.md promises (locks, disconnects, integrity).

The apps are mounted in Starlette under several paths, one configuration each.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tus_support import MIB, TUS, TusServer, stored_digests

MOUNTS = {
    "/files": {},
    "/small": {"max_size": 1000},
    "/expiring": {"expire_after": 1.0, "sweep_interval": 0.2},
    "/proxied": {"trust_forwarded": True},
    "/quick": {"idle_timeout": 1.0, "lock_timeout": 1.0},
    "/forever": {"expire_after": None},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TusServer]:
    root = tmp_path_factory.mktemp("tus-conformance")
    srv = TusServer(root, {"mounts": MOUNTS, "completions": str(root / "completions.jsonl")})
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def http(server: TusServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=TUS, timeout=30.0) as client:
        yield client


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def create(http: httpx.Client, mount: str = "/files", length: int | None = 0,
           **headers: str) -> str:
    """POST a new upload; its URL."""
    if length is not None:
        headers.setdefault("Upload-Length", str(length))
    response = http.post(mount + "/", headers=headers)
    assert response.status_code == 201, response.text
    return response.headers["Location"]


def patch(http: httpx.Client, url: str, offset: int, data: bytes,
          **headers: str) -> httpx.Response:
    headers = {"Content-Type": "application/offset+octet-stream",
               "Upload-Offset": str(offset), **headers}
    return http.patch(url, content=data, headers=headers)


def offset_of(http: httpx.Client, url: str) -> int:
    response = http.head(url)
    assert response.status_code == 200
    return int(response.headers["Upload-Offset"])


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def staging(server: TusServer, mount: str) -> Path:
    return server.root / f"staging-{mount.strip('/')}"


def raw_request(server: TusServer, method: str, url: str, headers: dict[str, str],
                body: bytes = b"") -> socket.socket:
    """Send a request's head and ``body`` (which may be shorter than its
    Content-Length) on a plain socket; the socket, still open."""
    path = urlsplit(url).path
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}",
             "Tus-Resumable: 1.0.0"] + [f"{k}: {v}" for k, v in headers.items()]
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return sock


def read_response(sock: socket.socket, timeout: float = 20.0) -> tuple[int, dict[str, str]]:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


# -- core protocol ------------------------------------------------------------------

class TestOptions:
    def test_advertises_version_extensions_and_checksums(self, http: httpx.Client) -> None:
        response = http.options("/files/")
        assert response.status_code in (200, 204)
        assert response.headers["Tus-Version"].split(",")[0] == "1.0.0"
        extensions = response.headers["Tus-Extension"].split(",")
        assert set(extensions) == {"creation", "creation-with-upload", "creation-defer-length",
                                   "termination", "checksum", "expiration", "concatenation"}
        assert "sha1" in response.headers["Tus-Checksum-Algorithm"].split(",")
        assert "Tus-Max-Size" not in response.headers

    def test_max_size_is_advertised(self, http: httpx.Client) -> None:
        assert http.options("/small/").headers["Tus-Max-Size"] == "1000"

    def test_no_expiration_extension_when_uploads_never_expire(self, http: httpx.Client) -> None:
        assert "expiration" not in http.options("/forever/").headers["Tus-Extension"]

    @pytest.mark.parametrize("version", [None, "0.2.2", "garbage"])
    def test_tus_resumable_is_ignored(self, server: TusServer, version: str | None) -> None:
        headers = {} if version is None else {"Tus-Resumable": version}
        response = httpx.options(server.url + "/files/", headers=headers)
        assert response.status_code in (200, 204)
        assert "1.0.0" in response.headers["Tus-Version"]

    def test_on_an_upload_url(self, http: httpx.Client) -> None:
        url = create(http, length=3)
        assert http.options(url).status_code in (200, 204)


class TestTusResumable:
    @pytest.mark.parametrize("method", ["POST", "HEAD", "PATCH", "DELETE"])
    def test_every_response_carries_it(self, http: httpx.Client, method: str) -> None:
        url = create(http, length=5)
        target = "/files/" if method == "POST" else url
        headers = {"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
        if method == "POST":
            headers["Upload-Length"] = "1"
        response = http.request(method, target, headers=headers)
        assert response.status_code < 300
        assert response.headers["Tus-Resumable"] == "1.0.0"
        error = http.request(method, "/files/" + "0" * 32, headers=headers)
        assert error.status_code >= 400
        assert error.headers["Tus-Resumable"] == "1.0.0"

    @pytest.mark.parametrize("version", ["0.2.2", "2.0.0", None])
    def test_unsupported_version_is_412_and_not_processed(
            self, server: TusServer, http: httpx.Client, version: str | None) -> None:
        url = create(http, length=5)
        headers = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
        if version is not None:
            headers["Tus-Resumable"] = version
        with httpx.Client(base_url=server.url) as bare:
            response = bare.patch(url, content=b"hello", headers=headers)
            assert response.status_code == 412
            assert "1.0.0" in response.headers["Tus-Version"].split(",")
            before = set(os.listdir(staging(server, "/files")))
            created = bare.post("/files/", headers={**headers, "Upload-Length": "5"})
            assert created.status_code == 412
            assert "Location" not in created.headers
            assert set(os.listdir(staging(server, "/files"))) == before
        assert offset_of(http, url) == 0


class TestHead:
    def test_offset_length_and_no_store(self, http: httpx.Client) -> None:
        url = create(http, length=11)
        response = http.head(url)
        assert response.status_code in (200, 204)
        assert response.headers["Upload-Offset"] == "0"
        assert response.headers["Upload-Length"] == "11"
        assert "no-store" in response.headers["Cache-Control"]
        assert patch(http, url, 0, b"hello").status_code == 204
        assert http.head(url).headers["Upload-Offset"] == "5"

    def test_completed_upload_still_has_an_offset(self, http: httpx.Client) -> None:
        url = create(http, length=5)
        assert patch(http, url, 0, b"hello").status_code == 204
        response = http.head(url)
        assert response.headers["Upload-Offset"] == "5"
        assert response.headers["Upload-Length"] == "5"
        digest = hashlib.sha256(b"hello").digest()
        assert response.headers["Repr-Digest"] == f"sha-256=:{b64(digest)}:"

    @pytest.mark.parametrize("tail", ["0" * 32, "nothex", "a/b", "0" * 33])
    def test_unknown_upload_is_404_without_offset(self, http: httpx.Client, tail: str) -> None:
        response = http.head("/files/" + tail)
        assert response.status_code in (403, 404, 410)
        assert "Upload-Offset" not in response.headers


class TestPatch:
    def test_appends_at_the_offset_and_answers_the_new_offset(
            self, server: TusServer, http: httpx.Client) -> None:
        data = os.urandom(3000)
        url = create(http, length=len(data))
        for start in range(0, 3000, 1000):
            response = patch(http, url, start, data[start:start + 1000])
            assert response.status_code == 204
            assert response.headers["Upload-Offset"] == str(start + 1000)
        assert hashlib.sha256(data).hexdigest() in stored_digests(server.root)

    @pytest.mark.parametrize("content_type", [None, "application/octet-stream",
                                              "text/plain", "multipart/form-data"])
    def test_wrong_content_type_is_415(self, http: httpx.Client, content_type: str | None) -> None:
        url = create(http, length=5)
        headers = {"Upload-Offset": "0"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        assert http.patch(url, content=b"hello", headers=headers).status_code == 415
        assert offset_of(http, url) == 0

    def test_content_type_parameters_are_allowed(self, http: httpx.Client) -> None:
        url = create(http, length=5)
        response = http.patch(url, content=b"hello", headers={
            "Upload-Offset": "0", "Content-Type": "Application/Offset+Octet-Stream; x=1"})
        assert response.status_code == 204

    @pytest.mark.parametrize("wrong", [1, 3, 100])
    def test_offset_mismatch_is_409_and_changes_nothing(self, http: httpx.Client,
                                                        wrong: int) -> None:
        url = create(http, length=10)
        assert patch(http, url, 0, b"ab").status_code == 204
        response = patch(http, url, wrong, b"cd")
        assert response.status_code == 409
        assert offset_of(http, url) == 2
        assert patch(http, url, 2, b"cdefghij").status_code == 204

    @pytest.mark.parametrize("value", [None, "-1", "+5", "abc", "1.5", "", "1e3",
                                       "99999999999999999999"])
    def test_malformed_offset_is_400(self, http: httpx.Client, value: str | None) -> None:
        url = create(http, length=5)
        headers = {"Content-Type": "application/offset+octet-stream"}
        if value is not None:
            headers["Upload-Offset"] = value
        assert http.patch(url, content=b"x", headers=headers).status_code == 400
        assert offset_of(http, url) == 0

    def test_unknown_upload_is_404(self, http: httpx.Client) -> None:
        assert patch(http, "/files/" + "ab" * 16, 0, b"x").status_code == 404

    def test_bytes_past_the_length_are_refused(self, http: httpx.Client) -> None:
        url = create(http, length=4)
        assert patch(http, url, 0, b"hello").status_code == 413
        assert offset_of(http, url) == 0

    def test_chunked_body_past_the_length_is_refused(self, http: httpx.Client) -> None:
        url = create(http, length=4)

        def body() -> Iterator[bytes]:
            yield b"hel"
            yield b"lo"

        response = http.patch(url, content=body(), headers={
            "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
        assert response.status_code == 413
        assert offset_of(http, url) == 0

    def test_chunked_body_without_content_length(self, server: TusServer,
                                                 http: httpx.Client) -> None:
        pieces = [os.urandom(70_000) for _ in range(40)]
        data = b"".join(pieces)
        url = create(http, length=len(data))
        response = http.patch(url, content=iter(pieces), headers={
            "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
        assert response.status_code == 204
        assert hashlib.sha256(data).hexdigest() in stored_digests(server.root)

    def test_empty_patch_on_a_completed_upload(self, http: httpx.Client) -> None:
        url = create(http, length=2)
        assert patch(http, url, 0, b"ok").status_code == 204
        response = patch(http, url, 2, b"")
        assert response.status_code == 204
        assert response.headers["Upload-Offset"] == "2"
        assert patch(http, url, 0, b"ok").status_code == 409

    def test_method_override(self, server: TusServer, http: httpx.Client) -> None:
        url = create(http, length=5)
        response = http.post(url, content=b"hello", headers={
            "X-HTTP-Method-Override": "PATCH", "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream"})
        assert response.status_code == 204
        assert response.headers["Upload-Offset"] == "5"
        assert hashlib.sha256(b"hello").hexdigest() in stored_digests(server.root)
        other = create(http, length=5)
        assert http.post(other, headers={"X-HTTP-Method-Override": "DELETE"}).status_code == 204
        assert http.head(other).status_code == 404

    def test_disconnect_keeps_the_bytes_received(self, http: httpx.Client,
                                                 server: TusServer) -> None:
        url = create(http, length=1_000_000)
        sent = os.urandom(300_000)
        sock = raw_request(server, "PATCH", url, {
            "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0",
            "Content-Length": "1000000"}, sent)
        time.sleep(0.2)
        sock.close()
        wait_for(lambda: offset_of(http, url) == len(sent))
        rest = os.urandom(700_000)
        assert patch(http, url, len(sent), rest).status_code == 204
        assert hashlib.sha256(sent + rest).hexdigest() in stored_digests(server.root)


    def test_every_byte_then_a_disconnect_still_completes(self, http: httpx.Client,
                                                          server: TusServer) -> None:
        """A chunked body whose last chunk never comes: all bytes are there, so the
        upload is committed; its offset never reads complete before that."""
        data = os.urandom(5000)
        url = create(http, length=len(data))
        sock = raw_request(server, "PATCH", url, {
            "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0",
            "Transfer-Encoding": "chunked"}, f"{len(data):x}\r\n".encode() + data + b"\r\n")
        time.sleep(0.2)
        sock.close()
        digest = hashlib.sha256(data).hexdigest()
        wait_for(lambda: offset_of(http, url) == len(data))
        assert digest in stored_digests(server.root)
        assert any(c["sha256"] == digest for c in server.completions())


# -- creation -----------------------------------------------------------------------

class TestCreation:
    def test_201_with_an_absolute_location_under_the_mount(self, server: TusServer,
                                                           http: httpx.Client) -> None:
        response = http.post("/files/", headers={"Upload-Length": "10"})
        assert response.status_code == 201
        location = response.headers["Location"]
        assert location.startswith(server.url + "/files/")
        assert http.head(location).headers["Upload-Offset"] == "0"
        relative = http.head(urlsplit(location).path)
        assert relative.status_code == 200

    def test_collection_url_without_slash(self, server: TusServer) -> None:
        with httpx.Client(base_url=server.url, headers=TUS, follow_redirects=True) as client:
            response = client.post("/files", headers={"Upload-Length": "1"})
        assert response.status_code == 201
        assert response.headers["Location"].startswith(server.url + "/files/")

    def test_metadata_is_echoed_by_head(self, http: httpx.Client) -> None:
        header = f"filename {b64('world_domination_plan.pdf')},is_confidential,emoji {b64('✓')}"
        url = create(http, length=5, **{"Upload-Metadata": header})
        assert http.head(url).headers["Upload-Metadata"] == header

    def test_no_metadata_no_header(self, http: httpx.Client) -> None:
        url = create(http, length=5)
        assert "Upload-Metadata" not in http.head(url).headers
        empty = create(http, length=5, **{"Upload-Metadata": ""})
        assert "Upload-Metadata" not in http.head(empty).headers

    @pytest.mark.parametrize("header", [
        "filename", "a b c", ",", "key !!!", f"dup {b64('1')},dup {b64('2')}",
        f"bad {b64(bytes([0xff, 0xfe]))}", "a,,b",
    ])
    def test_invalid_metadata_is_400(self, http: httpx.Client, header: str) -> None:
        if header == "filename":  # a key without a value is valid
            create(http, length=1, **{"Upload-Metadata": header})
            return
        response = http.post("/files/", headers={"Upload-Length": "1", "Upload-Metadata": header})
        assert response.status_code == 400

    def test_metadata_reaches_the_store(self, server: TusServer, http: httpx.Client) -> None:
        url = create(http, length=4, **{"Upload-Metadata":
                                        f"filename {b64('a.txt')},filetype {b64('text/plain')}"})
        assert patch(http, url, 0, b"abcd").status_code == 204
        digest = hashlib.sha256(b"abcd").hexdigest()
        meta = server.root / "store" / "objects" / digest[:2] / digest[2:4] / f"{digest}.json"
        assert json.loads(meta.read_text()) == {"filename": "a.txt", "filetype": "text/plain"}
        done = [c for c in server.completions() if c["id"] == url.rsplit("/", 1)[1]]
        assert done and done[0]["metadata"] == {"filename": "a.txt", "filetype": "text/plain"}

    @pytest.mark.parametrize("headers", [{}, {"Upload-Length": "-1"}, {"Upload-Length": "x"},
                                         {"Upload-Defer-Length": "2"},
                                         {"Upload-Length": "5", "Upload-Defer-Length": "1"}])
    def test_bad_length_headers_are_400(self, http: httpx.Client,
                                        headers: dict[str, str]) -> None:
        assert http.post("/files/", headers=headers).status_code == 400

    def test_over_max_size_is_413(self, http: httpx.Client) -> None:
        assert http.post("/small/", headers={"Upload-Length": "1001"}).status_code == 413
        create(http, "/small", length=1000)

    def test_empty_upload_is_complete_at_once(self, server: TusServer,
                                              http: httpx.Client) -> None:
        url = create(http, length=0)
        response = http.head(url)
        assert response.headers["Upload-Offset"] == "0"
        assert response.headers["Upload-Length"] == "0"
        assert "Upload-Expires" not in response.headers
        assert hashlib.sha256(b"").hexdigest() in stored_digests(server.root)

    def test_location_behind_a_trusted_proxy(self, http: httpx.Client) -> None:
        headers = {"Upload-Length": "1", "X-Forwarded-Proto": "https",
                   "X-Forwarded-Host": "uploads.example.com", "X-Forwarded-Prefix": "/api/v1"}
        response = http.post("/proxied/", headers=headers)
        location = response.headers["Location"]
        assert location.startswith("https://uploads.example.com/api/v1/proxied/")
        # the same upload through the same proxy, path as the proxy forwards it
        assert http.head("/proxied/" + location.rsplit("/", 1)[1]).status_code == 200

    def test_forwarded_headers_are_ignored_unless_trusted(self, server: TusServer,
                                                          http: httpx.Client) -> None:
        headers = {"Upload-Length": "1", "X-Forwarded-Proto": "https",
                   "X-Forwarded-Host": "evil.example", "X-Forwarded-Prefix": "/x"}
        location = http.post("/files/", headers=headers).headers["Location"]
        assert location.startswith(server.url + "/files/")

    def test_bad_forwarded_values_are_ignored(self, server: TusServer,
                                              http: httpx.Client) -> None:
        headers = {"Upload-Length": "1", "X-Forwarded-Proto": "gopher",
                   "X-Forwarded-Host": "a/b", "X-Forwarded-Prefix": "/x?y"}
        location = http.post("/proxied/", headers=headers).headers["Location"]
        assert location.startswith(server.url + "/proxied/")

    def test_no_metadata_key_is_required(self, server: TusServer, http: httpx.Client) -> None:
        url = create(http, length=3)
        assert http.head(url).status_code == 200
        assert patch(http, url, 0, b"xyz").status_code == 204
        assert hashlib.sha256(b"xyz").hexdigest() in stored_digests(server.root)


class TestCreationWithUpload:
    def test_body_in_the_post(self, server: TusServer, http: httpx.Client) -> None:
        response = http.post("/files/", content=b"hello", headers={
            "Upload-Length": "11", "Content-Type": "application/offset+octet-stream"})
        assert response.status_code == 201
        assert response.headers["Upload-Offset"] == "5"
        url = response.headers["Location"]
        assert offset_of(http, url) == 5
        assert patch(http, url, 5, b" world").status_code == 204
        assert hashlib.sha256(b"hello world").hexdigest() in stored_digests(server.root)

    def test_whole_upload_in_the_post(self, server: TusServer, http: httpx.Client) -> None:
        response = http.post("/files/", content=b"complete", headers={
            "Upload-Length": "8", "Content-Type": "application/offset+octet-stream"})
        assert response.status_code == 201
        assert response.headers["Upload-Offset"] == "8"
        assert hashlib.sha256(b"complete").hexdigest() in stored_digests(server.root)

    def test_body_needs_the_content_type(self, http: httpx.Client) -> None:
        response = http.post("/files/", content=b"hello", headers={
            "Upload-Length": "5", "Content-Type": "text/plain"})
        assert response.status_code == 415

    def test_untyped_empty_chunked_post_is_no_data(self, http: httpx.Client) -> None:
        response = http.post("/files/", content=iter([]), headers={"Upload-Length": "3"})
        assert response.status_code == 201
        assert response.headers["Upload-Offset"] == "0"
        typed = http.post("/files/", content=iter([b"abc"]),
                          headers={"Upload-Length": "3", "Content-Type": "text/plain"})
        assert typed.status_code == 415

    def test_bad_checksum_in_the_post_keeps_the_upload_at_zero(self, http: httpx.Client) -> None:
        response = http.post("/files/", content=b"hello", headers={
            "Upload-Length": "5", "Content-Type": "application/offset+octet-stream",
            "Upload-Checksum": f"sha1 {b64(hashlib.sha1(b'other').digest())}"})
        assert response.status_code == 201
        assert response.headers["Upload-Offset"] == "0"
        assert offset_of(http, response.headers["Location"]) == 0


class TestDeferLength:
    def test_length_set_by_a_later_patch(self, server: TusServer, http: httpx.Client) -> None:
        url = create(http, length=None, **{"Upload-Defer-Length": "1"})
        head = http.head(url)
        assert head.headers["Upload-Defer-Length"] == "1"
        assert "Upload-Length" not in head.headers
        assert patch(http, url, 0, b"abc").status_code == 204
        assert http.head(url).headers["Upload-Defer-Length"] == "1"
        response = patch(http, url, 3, b"def", **{"Upload-Length": "9"})
        assert response.status_code == 204
        head = http.head(url)
        assert head.headers["Upload-Length"] == "9"
        assert "Upload-Defer-Length" not in head.headers
        assert patch(http, url, 6, b"g", **{"Upload-Length": "8"}).status_code == 400
        assert patch(http, url, 6, b"ghi").status_code == 204
        assert hashlib.sha256(b"abcdefghi").hexdigest() in stored_digests(server.root)

    def test_empty_patch_setting_the_length_completes(self, server: TusServer,
                                                      http: httpx.Client) -> None:
        url = create(http, length=None, **{"Upload-Defer-Length": "1"})
        assert patch(http, url, 0, b"four").status_code == 204
        response = patch(http, url, 4, b"", **{"Upload-Length": "4"})
        assert response.status_code == 204
        assert response.headers["Upload-Length"] == "4"
        assert hashlib.sha256(b"four").hexdigest() in stored_digests(server.root)

    def test_length_below_the_offset_is_400(self, http: httpx.Client) -> None:
        url = create(http, length=None, **{"Upload-Defer-Length": "1"})
        assert patch(http, url, 0, b"four").status_code == 204
        assert patch(http, url, 4, b"", **{"Upload-Length": "3"}).status_code == 400

    def test_deferred_upload_still_capped_by_max_size(self, http: httpx.Client) -> None:
        url = create(http, "/small", length=None, **{"Upload-Defer-Length": "1"})
        assert patch(http, url, 0, b"x" * 1001).status_code == 413
        assert patch(http, url, 0, b"x" * 10, **{"Upload-Length": "2000"}).status_code == 413
        assert offset_of(http, url) == 0


class TestTermination:
    def test_delete_then_404(self, http: httpx.Client, server: TusServer) -> None:
        url = create(http, length=10)
        assert patch(http, url, 0, b"12345").status_code == 204
        upload_id = url.rsplit("/", 1)[1]
        assert (staging(server, "/files") / f"{upload_id}.data").exists()
        assert http.delete(url).status_code == 204
        assert http.head(url).status_code in (404, 410)
        assert patch(http, url, 5, b"67890").status_code in (404, 410)
        assert http.delete(url).status_code in (404, 410)
        assert not (staging(server, "/files") / f"{upload_id}.data").exists()
        assert not (staging(server, "/files") / f"{upload_id}.info").exists()

    def test_delete_completed_upload_keeps_the_object(self, server: TusServer,
                                                      http: httpx.Client) -> None:
        url = create(http, length=7)
        assert patch(http, url, 0, b"keep me").status_code == 204
        assert http.delete(url).status_code == 204
        assert http.head(url).status_code == 404
        assert hashlib.sha256(b"keep me").hexdigest() in stored_digests(server.root)


class TestChecksum:
    @pytest.mark.parametrize("algorithm", ["sha1", "sha256", "md5"])
    def test_matching_checksum(self, http: httpx.Client, algorithm: str) -> None:
        url = create(http, length=11)
        digest = hashlib.new(algorithm, b"hello world").digest()
        response = patch(http, url, 0, b"hello world",
                         **{"Upload-Checksum": f"{algorithm} {b64(digest)}"})
        assert response.status_code == 204

    def test_spec_example_value(self, http: httpx.Client) -> None:
        url = create(http, length=11)
        response = patch(http, url, 0, b"hello world",
                         **{"Upload-Checksum": "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="})
        assert response.status_code == 204

    def test_mismatch_is_460_and_the_bytes_are_discarded(self, server: TusServer,
                                                         http: httpx.Client) -> None:
        url = create(http, length=10)
        assert patch(http, url, 0, b"12345").status_code == 204
        wrong = f"sha1 {b64(hashlib.sha1(b'abcde').digest())}"
        response = patch(http, url, 5, b"XXXXX", **{"Upload-Checksum": wrong})
        assert response.status_code == 460
        assert offset_of(http, url) == 5
        good = f"sha1 {b64(hashlib.sha1(b'67890').digest())}"
        assert patch(http, url, 5, b"67890", **{"Upload-Checksum": good}).status_code == 204
        assert hashlib.sha256(b"1234567890").hexdigest() in stored_digests(server.root)

    def test_mismatch_on_a_large_body(self, http: httpx.Client) -> None:
        data = os.urandom(5 * 1024 * 1024)
        url = create(http, length=len(data) + 1)
        wrong = f"sha256 {b64(hashlib.sha256(data[:-1]).digest())}"
        assert patch(http, url, 0, data, **{"Upload-Checksum": wrong}).status_code == 460
        assert offset_of(http, url) == 0

    @pytest.mark.parametrize("value", ["crc32 AAAAAA==", "SHA1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
                                       "sha1", "sha1 !!!", "sha1 AAAA", ""])
    def test_unsupported_or_malformed_is_400(self, http: httpx.Client, value: str) -> None:
        url = create(http, length=11)
        response = patch(http, url, 0, b"hello world", **{"Upload-Checksum": value})
        assert response.status_code == 400
        assert offset_of(http, url) == 0

    def test_disconnect_with_a_checksum_keeps_nothing(self, server: TusServer,
                                                      http: httpx.Client) -> None:
        url = create(http, length=1000)
        checksum = f"sha1 {b64(hashlib.sha1(b'x' * 1000).digest())}"
        sock = raw_request(server, "PATCH", url, {
            "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0",
            "Content-Length": "1000", "Upload-Checksum": checksum}, b"x" * 500)
        time.sleep(0.2)
        sock.close()
        # the server releases the upload once it has handled the disconnect
        wait_for(lambda: patch(http, url, 0, b"y").status_code == 204)
        assert offset_of(http, url) == 1


class TestExpiration:
    def test_upload_expires_header(self, http: httpx.Client) -> None:
        before = time.time()
        response = http.post("/files/", headers={"Upload-Length": "10"})
        expires = parsedate_to_datetime(response.headers["Upload-Expires"]).timestamp()
        assert before + 86400 - 5 <= expires <= time.time() + 86400 + 5
        url = response.headers["Location"]
        patched = patch(http, url, 0, b"12345")
        assert "Upload-Expires" in patched.headers
        assert parsedate_to_datetime(patched.headers["Upload-Expires"]).timestamp() >= expires - 1
        assert "Upload-Expires" in http.head(url).headers
        done = patch(http, url, 5, b"67890")
        assert "Upload-Expires" not in done.headers

    def test_no_header_when_uploads_never_expire(self, http: httpx.Client) -> None:
        response = http.post("/forever/", headers={"Upload-Length": "10"})
        assert "Upload-Expires" not in response.headers

    def test_expired_upload_is_gone_then_swept(self, server: TusServer,
                                               http: httpx.Client) -> None:
        url = create(http, "/expiring", length=10)
        assert patch(http, url, 0, b"12345").status_code == 204
        upload_id = url.rsplit("/", 1)[1]
        data = staging(server, "/expiring") / f"{upload_id}.data"
        assert data.exists()
        wait_for(lambda: http.head(url).status_code in (404, 410))
        assert patch(http, url, 5, b"67890").status_code in (404, 410)
        # sweeps run as requests arrive, at most every sweep_interval
        wait_for(lambda: http.options("/expiring/").status_code == 204 and not data.exists())
        assert http.head(url).status_code == 404


class TestConcatenation:
    def partial(self, http: httpx.Client, data: bytes) -> str:
        url = create(http, length=len(data), **{"Upload-Concat": "partial"})
        if data:
            assert patch(http, url, 0, data).status_code == 204
        return url

    def test_final_concatenates_in_order(self, server: TusServer, http: httpx.Client) -> None:
        one, two = os.urandom(5), os.urandom(6)
        a = self.partial(http, one)
        b = self.partial(http, two)
        head = http.head(a)
        assert head.headers["Upload-Concat"] == "partial"
        assert head.headers["Upload-Offset"] == "5"
        # a complete partial upload is not committed on its own
        assert hashlib.sha256(one).hexdigest() not in stored_digests(server.root)
        concat = f"final;{urlsplit(b).path} {a} {b}"
        meta = f"filename {b64('x.txt')}"
        response = http.post("/files/", headers={"Upload-Concat": concat,
                                                 "Upload-Metadata": meta})
        assert response.status_code == 201
        final = response.headers["Location"]
        head = http.head(final)
        assert head.headers["Upload-Concat"] == concat
        assert head.headers["Upload-Length"] == "17" == head.headers["Upload-Offset"]
        assert head.headers["Upload-Metadata"] == meta
        expected = hashlib.sha256(two + one + two).hexdigest()
        assert expected in stored_digests(server.root)
        assert patch(http, final, 17, b"").status_code == 403
        assert patch(http, final, 0, b"x").status_code == 403

    def test_final_must_not_have_a_length(self, http: httpx.Client) -> None:
        a = self.partial(http, b"a")
        response = http.post("/files/", headers={"Upload-Concat": f"final;{a}",
                                                 "Upload-Length": "1"})
        assert response.status_code == 400

    def test_unfinished_partial_is_refused(self, http: httpx.Client) -> None:
        a = create(http, length=10, **{"Upload-Concat": "partial"})
        assert patch(http, a, 0, b"12345").status_code == 204
        assert http.post("/files/", headers={"Upload-Concat": f"final;{a}"}).status_code == 400

    @pytest.mark.parametrize("kind", ["not partial", "missing", "not a url"])
    def test_bad_parts_are_refused(self, http: httpx.Client, kind: str) -> None:
        part = {"not partial": lambda: create(http, length=0),
                "missing": lambda: "/files/" + "0" * 32,
                "not a url": lambda: "/files/../etc"}[kind]()
        assert http.post("/files/", headers={"Upload-Concat": f"final;{part}"}).status_code == 400

    @pytest.mark.parametrize("value", ["final;", "partial;x", "whole"])
    def test_malformed_concat_is_400(self, http: httpx.Client, value: str) -> None:
        response = http.post("/files/", headers={"Upload-Concat": value, "Upload-Length": "1"})
        assert response.status_code == 400

    def test_final_over_max_size_is_413(self, http: httpx.Client) -> None:
        parts = [self.partial_on(http, "/small", b"x" * 600) for _ in range(2)]
        response = http.post("/small/", headers={"Upload-Concat": "final;" + " ".join(parts)})
        assert response.status_code == 413

    def partial_on(self, http: httpx.Client, mount: str, data: bytes) -> str:
        url = create(http, mount, length=len(data), **{"Upload-Concat": "partial"})
        assert patch(http, url, 0, data).status_code == 204
        return url


# -- integrity ----------------------------------------------------------------------

class TestWholeUploadDigest:
    @pytest.mark.parametrize("form", ["hex", "HEX", "base64"])
    def test_matching_sha256_metadata(self, server: TusServer, http: httpx.Client,
                                      form: str) -> None:
        data = os.urandom(1000)
        raw = hashlib.sha256(data).digest()
        text = {"hex": raw.hex(), "HEX": raw.hex().upper(), "base64": b64(raw)}[form]
        url = create(http, length=1000, **{"Upload-Metadata": f"sha256 {b64(text)}"})
        assert patch(http, url, 0, data[:400]).status_code == 204
        assert patch(http, url, 400, data[400:]).status_code == 204
        assert raw.hex() in stored_digests(server.root)

    def test_mismatch_is_460_at_the_last_patch(self, server: TusServer,
                                               http: httpx.Client) -> None:
        wrong = hashlib.sha256(b"something else").hexdigest()
        url = create(http, length=8, **{"Upload-Metadata": f"sha256 {b64(wrong)}"})
        assert patch(http, url, 0, b"1234").status_code == 204
        response = patch(http, url, 4, b"5678")
        assert response.status_code == 460
        assert offset_of(http, url) == 4
        assert hashlib.sha256(b"12345678").hexdigest() not in stored_digests(server.root)

    @pytest.mark.parametrize("value", ["abc", "0" * 63, "z" * 64, b64(b"short")])
    def test_malformed_sha256_is_400_at_creation(self, http: httpx.Client, value: str) -> None:
        response = http.post("/files/", headers={"Upload-Length": "1",
                                                 "Upload-Metadata": f"sha256 {b64(value)}"})
        assert response.status_code == 400

    def test_concatenation_checked_against_sha256(self, http: httpx.Client) -> None:
        a = create(http, length=3, **{"Upload-Concat": "partial"})
        assert patch(http, a, 0, b"abc").status_code == 204
        wrong = hashlib.sha256(b"abd").hexdigest()
        response = http.post("/files/", headers={"Upload-Concat": f"final;{a}",
                                                 "Upload-Metadata": f"sha256 {b64(wrong)}"})
        assert response.status_code == 460


# -- locks --------------------------------------------------------------------------

class TestLocks:
    def stall(self, server: TusServer, http: httpx.Client, data: bytes) -> tuple[str, Any]:
        """Create an upload for ``data`` and start a PATCH that sends 1 MiB and a
        bit of it, then stalls; return once the server holds the upload (its
        first 1 MiB batch is on disk)."""
        url = create(http, length=len(data))
        sock = raw_request(server, "PATCH", url, {
            "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0",
            "Content-Length": str(len(data))}, data[: MIB + 50_000])
        staged = staging(server, "/files") / f"{url.rsplit('/', 1)[1]}.data"
        wait_for(lambda: staged.stat().st_size >= MIB)
        return url, sock

    def test_a_new_patch_takes_over_a_stalled_one(self, server: TusServer,
                                                  http: httpx.Client) -> None:
        data = os.urandom(3 * MIB)
        url, sock = self.stall(server, http, data)
        try:
            stale = patch(http, url, 0, os.urandom(10))
            assert stale.status_code == 409  # the stalled request kept what it received
            kept = int(stale.headers["Upload-Offset"])
            assert MIB <= kept <= MIB + 50_000
            status, _ = read_response(sock)
            assert status == 409
        finally:
            sock.close()
        assert offset_of(http, url) == kept
        assert patch(http, url, kept, data[kept:]).status_code == 204
        assert hashlib.sha256(data).hexdigest() in stored_digests(server.root)

    def test_idle_request_times_out_and_keeps_its_bytes(self, server: TusServer,
                                                        http: httpx.Client) -> None:
        url = create(http, "/quick", length=100)
        sock = raw_request(server, "PATCH", url, {
            "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0",
            "Content-Length": "100"}, b"x" * 30)
        try:
            status, headers = read_response(sock)
        finally:
            sock.close()
        assert status == 408
        assert headers["upload-offset"] == "30"
        assert offset_of(http, url) == 30

    def test_delete_takes_over_a_stalled_patch(self, server: TusServer,
                                               http: httpx.Client) -> None:
        url, sock = self.stall(server, http, os.urandom(2 * MIB))
        try:
            assert http.delete(url).status_code == 204
            assert http.head(url).status_code == 404
            status, _ = read_response(sock)
            assert status == 409
        finally:
            sock.close()


class TestRoutes:
    @pytest.mark.parametrize(("method", "path"), [("GET", "/files/"), ("PUT", "/files/"),
                                                  ("GET", "UPLOAD"), ("POST", "UPLOAD")])
    def test_other_methods_are_405(self, http: httpx.Client, method: str, path: str) -> None:
        if path == "UPLOAD":
            path = create(http, length=1)
        response = http.request(method, path)
        assert response.status_code == 405
        assert "Allow" in response.headers

    def test_unknown_paths_are_404(self, http: httpx.Client) -> None:
        assert http.head("/files/a/b").status_code == 404
        assert http.post("/files/x", headers={"Upload-Length": "1"}).status_code in (404, 405)


def test_health_of_the_fixture(server: TusServer) -> None:
    """The server logged no unexpected error while the module ran (runs last)."""
    log: Any = server.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]

"""streamstore.django under real servers: Django's runserver (WSGI) and uvicorn
(ASGI), driven over loopback by httpx and raw sockets."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from djsupport import CONTENT_TYPE, django_server, multipart, written_bytes
from streamstore import ContentStore
from streamstore.testing import temp_files

KINDS = ["wsgi", "asgi"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module", params=KINDS)
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, int, Path]]:
    kind = request.param
    base = tmp_path_factory.mktemp(kind)
    media = base / "media"
    with django_server(kind, media, base / "server.log") as (url, pid):
        yield kind, url, pid, media


@contextmanager
def csrf_client(url: str) -> Iterator[httpx.Client]:
    """A client holding a CSRF cookie and sending its token (as a browser's script would)."""
    with httpx.Client(base_url=url, timeout=60) as client:
        client.headers["X-CSRFToken"] = client.get("/token").text
        yield client


def stored(media: Path) -> set[str]:
    return set(ContentStore(media)) if (media / "objects").exists() else set()


def wait_until(condition: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_files_stream_into_the_store(server: tuple[str, str, int, Path]) -> None:
    kind, url, _pid, media = server
    a, b = os.urandom(200_000), f"{kind} text\n".encode() * 1000
    with csrf_client(url) as client:
        response = client.post("/upload", data={"note": kind},
                               files={"a": ("a.bin", a, "application/octet-stream"),
                                      "b": ("b.txt", b, "text/plain")})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["fields"] == {"note": kind}
    assert {f["field"]: f["sha256"] for f in result["files"]} == {"a": sha(a), "b": sha(b)}
    assert {sha(a), sha(b)} <= stored(media)
    assert temp_files(media) == []


def test_over_the_limit_is_413_and_nothing_is_stored(server: tuple[str, str, int, Path]) -> None:
    _kind, url, _pid, media = server
    small, large = os.urandom(100), os.urandom(1200)
    before = stored(media)
    with csrf_client(url) as client:
        response = client.post("/small", files={"a": ("a", small, "x/y"),
                                                "b": ("b", large, "x/y")})
    assert response.status_code == 413
    assert response.text == "the upload is larger than the limit of 1000 bytes\n"
    assert stored(media) == before
    assert temp_files(media) == []


def test_a_client_that_disconnects_mid_body_leaves_nothing(
        server: tuple[str, str, int, Path]) -> None:
    kind, url, _pid, media = server
    first, second = os.urandom(300_000), os.urandom(3_000_000)
    body = multipart(files=[("a", "a.bin", "x/y", first), ("b", "b.bin", "x/y", second)])
    port = int(url.rsplit(":", 1)[1])
    before = stored(media)
    with csrf_client(url) as client:
        token = client.headers["X-CSRFToken"]
        cookie = client.cookies["csrftoken"]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall((f"POST /big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {CONTENT_TYPE}\r\n"
                      f"Cookie: csrftoken={cookie}\r\n"
                      f"X-CSRFToken: {token}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode())
        sock.sendall(body[: len(body) // 2])
        if kind == "wsgi":
            # The handler streams as the body arrives: both files are in flight.
            assert wait_until(lambda: len(temp_files(media)) == 2), temp_files(media)
        # (Under ASGI Django reads the whole body before any handler runs, so
        # nothing of this request ever reaches the store.)
    assert wait_until(lambda: temp_files(media) == []), temp_files(media)
    # The server is still serving, and nothing of the broken request was stored.
    with csrf_client(url) as client:
        ok = client.post("/upload", files={"a": ("a", f"after {kind}".encode(), "x/y")})
    assert ok.status_code == 200
    assert stored(media) - before == {sha(f"after {kind}".encode())}


def test_django_spools_the_body_under_asgi_only(
        server: tuple[str, str, int, Path]) -> None:
    """The double write Django does under ASGI, measured: bytes the server
    process passed to write(2) while it stored one 16 MiB upload."""
    kind, url, pid, media = server
    data = os.urandom(16 * 1024 * 1024)
    body = multipart(files=[("a", "big.bin", "application/octet-stream", data)])
    with csrf_client(url) as client:
        client.post("/big", files={"a": ("warm", b"up", "x/y")})  # first-request work
        before = written_bytes(pid)
        response = client.post("/big", content=body, headers={"Content-Type": CONTENT_TYPE})
        after = written_bytes(pid)
    assert response.status_code == 200, response.text
    assert sha(data) in stored(media)
    ratio = (after - before) / len(data)
    if kind == "wsgi":
        assert 0.99 < ratio < 1.2, ratio  # the store's one write
    else:
        assert 1.95 < ratio < 2.3, ratio  # Django's spool of the body, then the store's write

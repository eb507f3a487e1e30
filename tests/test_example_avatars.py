"""Example 2, the avatar service, over a real uvicorn server (and, for exact
chunk patterns, its ASGI app driven message by message)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from exsupport import EXAMPLES, free_port, load_example, running
from streamstore.testing import temp_files

av = load_example("avatar_service")
SCRIPT = str(EXAMPLES / "avatar_service.py")
MAGIC = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff\xe0",
         "image/gif": b"GIF89a"}


def image(mime: str, size: int, seed: int = 0) -> bytes:
    body = random.Random(seed).randbytes(size)
    if mime == "image/webp":
        return b"RIFF" + (size - 8).to_bytes(4, "little") + b"WEBP" + body[12:]
    magic = MAGIC[mime]
    return magic + body[len(magic):]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Server:
    def __init__(self, url: str, root: Path, log: Path) -> None:
        self.url, self.root, self.log = url, root, log

    def row(self, user: str) -> tuple[str, int, str] | None:
        with contextlib.closing(sqlite3.connect(self.root / "avatars.db")) as conn:
            found = conn.execute("SELECT sha256, size, mime FROM avatars WHERE user_id = ?",
                                 (user,)).fetchone()
        return None if found is None else tuple(found)  # type: ignore[return-value]

    def rows(self) -> dict[str, str]:
        with contextlib.closing(sqlite3.connect(self.root / "avatars.db")) as conn:
            return dict(conn.execute("SELECT user_id, sha256 FROM avatars").fetchall())

    def file(self, user: str) -> bytes | None:
        path = self.root / "avatars" / user
        return path.read_bytes() if path.exists() else None

    def files(self) -> dict[str, str]:
        return {p.name: sha(p.read_bytes()) for p in (self.root / "avatars").iterdir()
                if not p.name.startswith(".")}

    def assert_consistent(self) -> None:
        """No row without its file, no file without its row, each row describes its file."""
        assert self.files() == self.rows()
        assert temp_files(self.root) == []


@contextlib.contextmanager
def avatar_server(root: Path, log: Path) -> Iterator[Server]:
    port = free_port()
    with running([sys.executable, SCRIPT, "--root", str(root), "--port", str(port)], port, log):
        yield Server(f"http://127.0.0.1:{port}", root, log)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("avatars")
    with avatar_server(base / "root", base / "server.log") as srv:
        yield srv


def put(server: Server, user: str, content: Any, **kw: Any) -> httpx.Response:
    return httpx.put(f"{server.url}/users/{user}/avatar", content=content, timeout=60, **kw)


@pytest.mark.parametrize("mime", ["image/png", "image/jpeg", "image/gif", "image/webp"])
def test_each_image_type_is_stored_with_its_row(server: Server, mime: str) -> None:
    user = "u-" + mime.split("/")[1]
    data = image(mime, 5000, seed=1)
    response = put(server, user, data)
    assert response.status_code == 200, response.text
    assert response.json() == {"user": user, "sha256": sha(data), "size": len(data),
                               "mime": mime}
    assert server.file(user) == data
    assert server.row(user) == (sha(data), len(data), mime)
    got = httpx.get(f"{server.url}/users/{user}/avatar")
    assert got.content == data and got.headers["content-type"] == mime


def test_rejected_uploads_leave_the_old_avatar_and_its_row(server: Server) -> None:
    old = image("image/png", 3000, seed=2)
    assert put(server, "bob", old).status_code == 200
    too_small = image("image/png", 99)
    not_image = b"%PDF-1.7" + bytes(5000)
    cases = [(too_small, 400), (not_image, 415), (b"", 400)]
    for body, status in cases:
        response = put(server, "bob", body)
        assert response.status_code == status, response.text
    assert put(server, "bob", image("image/png", 100)).status_code == 200  # exactly 100 B is fine
    assert put(server, "bob", old).status_code == 200
    assert server.file("bob") == old and server.row("bob") == (sha(old), len(old), "image/png")
    assert put(server, "not/a/user", old).status_code == 404
    server.assert_consistent()


def test_over_10_mib_is_413_while_streaming(server: Server) -> None:
    old = image("image/gif", 2000, seed=3)
    assert put(server, "carl", old).status_code == 200
    sent = 0

    def body() -> Iterator[bytes]:  # chunked: no size declared, the limit bites mid-stream
        nonlocal sent
        yield image("image/png", 65536)
        sent = 65536
        while sent < 12 * 2**20:
            yield bytes(65536)
            sent += 65536

    response = put(server, "carl", body())
    assert response.status_code == 413
    assert server.file("carl") == old and server.row("carl") == (sha(old), len(old), "image/gif")
    exact = image("image/png", 10 * 2**20, seed=4)
    assert put(server, "carl", exact).status_code == 200
    assert server.row("carl") == (sha(exact), len(exact), "image/png")
    server.assert_consistent()


def test_a_declared_size_over_10_mib_is_refused_before_reading(server: Server) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"PUT /users/dave/avatar HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 11000000\r\n\r\n" + image("image/png", 1000))
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")
    assert server.file("dave") is None and server.row("dave") is None


def test_progress_is_logged_every_256_kib(server: Server) -> None:
    data = image("image/jpeg", 2**20 + 5, seed=5)
    assert put(server, "erin", data).status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "avatar erin: stored" not in server.log.read_text():
        time.sleep(0.05)
    done = [int(n) for n in re.findall(r"avatar erin: (\d+) bytes received",
                                       server.log.read_text())]
    assert done[0] == 0 and done[-1] == len(data)
    steps = [b - a for a, b in itertools.pairwise(done)]
    assert all(step >= 256 * 1024 for step in steps[:-1])
    assert 4 <= len(steps) <= 5


def test_concurrent_uploads_for_one_user_keep_file_and_row_together(server: Server) -> None:
    users = ["fay", "gus"]
    uploads = {u: [image(random.choice(["image/png", "image/jpeg", "image/webp"]),
                         random.randrange(20_000, 600_000), seed=i + 100 * n)
                   for i in range(12)] for n, u in enumerate(users)}
    bad = [b"nope" * 50, image("image/png", 50)]

    async def run() -> tuple[dict[str, set[str]], list[bytes]]:
        accepted: dict[str, set[str]] = {u: set() for u in users}
        seen: list[bytes] = []
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            async def upload(user: str, data: bytes) -> None:
                r = await client.put(f"/users/{user}/avatar", content=data)
                if r.status_code == 200:
                    accepted[user].add(sha(data))
                else:
                    assert r.status_code in (400, 415), r.text

            async def reader(user: str) -> None:
                for _ in range(15):
                    r = await client.get(f"/users/{user}/avatar")
                    if r.status_code == 200:
                        seen.append(r.content)
                    await asyncio.sleep(0.01)

            jobs = [upload(u, d) for u in users for d in uploads[u] + bad]
            random.shuffle(jobs)
            await asyncio.gather(*jobs, *(reader(u) for u in users))
        return accepted, seen

    accepted, seen = asyncio.run(run())
    for user in users:
        assert accepted[user] == {sha(d) for d in uploads[user]}
        current = server.row(user)
        assert current is not None and current[0] in accepted[user]
        assert sha(server.file(user) or b"") == current[0]
    every = set().union(*accepted.values())
    assert all(sha(body) in every for body in seen)  # a reader never saw a mix
    server.assert_consistent()


# -- the ASGI app driven message by message: exact chunk patterns --------------------------


def drive(app: Any, user: str, chunks: list[bytes]) -> tuple[int, bytes]:
    """One PUT through ``app`` whose body arrives as exactly ``chunks`` (ASGI messages)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "PUT", "scheme": "http", "path": f"/users/{user}/avatar",
             "raw_path": f"/users/{user}/avatar".encode(), "query_string": b"",
             "headers": [], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_the_magic_bytes_check_survives_short_and_empty_chunks(tmp_path: Path) -> None:
    service = av.AvatarService(tmp_path / "root", durable=False)
    app = av.create_app(service)
    png = image("image/png", 1000, seed=6)
    pieces = [b"", png[:1], b"", png[1:2], png[2:5], b"", png[5:11], png[11:12], png[12:]]
    assert drive(app, "hal", pieces)[0] == 200
    assert service.row("hal")[2] == "image/png"
    webp = image("image/webp", 300, seed=7)
    assert drive(app, "hal", [bytes([b]) for b in webp])[0] == 200
    assert service.row("hal") == (sha(webp), 300, "image/webp")
    fake = b"RIFF\x00\x00\x00\x00WEBX" + bytes(200)
    status, body = drive(app, "hal", [b""] * 3 + [bytes([b]) for b in fake[:20]] + [fake[20:]])
    assert status == 415 and b"not a JPEG" in body
    assert service.row("hal") == (sha(webp), 300, "image/webp")
    assert (tmp_path / "root" / "avatars" / "hal").read_bytes() == webp


# -- a real full disk, a real crash -----------------------------------------------------------


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    where.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_is_507_and_the_old_avatar_stays(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "3m") as mnt, \
            avatar_server(mnt / "root", tmp_path / "server.log") as srv:
        old = image("image/png", 500_000, seed=8)
        assert put(srv, "ivy", old).status_code == 200
        big = image("image/png", 4 * 2**20, seed=9)
        assert put(srv, "ivy", big).status_code == 507  # declared: refused up front

        def chunked() -> Iterator[bytes]:
            for i in range(0, len(big), 65536):
                yield big[i:i + 65536]

        response = put(srv, "ivy", chunked())  # undeclared: the disk fills up mid-stream
        assert response.status_code == 507
        assert response.headers["retry-after"] == "60"
        assert srv.file("ivy") == old and srv.row("ivy") == (sha(old), len(old), "image/png")
        srv.assert_consistent()


CRASH = """
import asyncio, os, sys
sys.path.insert(0, {examples!r})
import avatar_service as av
from streamstore import Hook, SizeLimit, SniffHook, astore_from_reader

class CrashAfterRename(Hook):
    def on_commit(self, result):
        os._exit(9)  # the file is renamed into place; the row is not committed

service = av.AvatarService({root!r})
check = av.ImageCheck()
data = bytes.fromhex({data!r})
hooks = [SniffHook(12, check), CrashAfterRename(), av.AvatarRow(service.db, "jo", check)]
asyncio.run(astore_from_reader(iter([data]), service.path("jo"), overwrite=True, hooks=hooks,
                               limit=SizeLimit(min_bytes=100)))
"""


def test_reconcile_repairs_a_crash_between_the_rename_and_the_commit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    service = av.AvatarService(root)
    old, new = image("image/png", 2000, seed=10), image("image/gif", 3000, seed=11)
    assert drive(av.create_app(service), "jo", [old])[0] == 200
    child = subprocess.run([sys.executable, "-c", CRASH.format(
        examples=str(EXAMPLES), root=str(root), data=new.hex())], check=False, timeout=60)
    assert child.returncode == 9
    assert (root / "avatars" / "jo").read_bytes() == new  # the window: new file, old row
    assert service.row("jo") == (sha(old), len(old), "image/png")
    (root / "avatars" / "kim").write_bytes(image("image/jpeg", 500, seed=12))  # first avatar
    assert service.reconcile() == 2
    assert service.row("jo") == (sha(new), len(new), "image/gif")
    assert service.row("kim")[2] == "image/jpeg"
    assert service.reconcile() == 0

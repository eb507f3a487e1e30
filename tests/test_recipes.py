"""The recipes of docs/web.md (examples/recipes/*.py, quoted verbatim in the
doc) run behind real servers: upload, 413, 400, 503, download."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from webservers import aiohttp_server, uvicorn_server, werkzeug_server

ROOT = Path(__file__).parent.parent
RECIPES = {"fastapi_app": uvicorn_server, "aiohttp_app": aiohttp_server,
           "flask_app": werkzeug_server}
DATA = os.urandom(100_000)


def load(name: str, uploads: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("UPLOADS_DIR", str(uploads))
    spec = importlib.util.spec_from_file_location(f"recipe_{name}",
                                                  ROOT / "examples" / "recipes" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    module.store.backend.reserve = 0  # the recipe keeps 1 GiB free: the test disk may not
    return module


@pytest.fixture(params=sorted(RECIPES))
def recipe(request: pytest.FixtureRequest, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, httpx.Client]]:
    module = load(request.param, tmp_path / "uploads", monkeypatch)
    with RECIPES[request.param](module.app) as url, httpx.Client(base_url=url,
                                                                  timeout=30) as client:
        yield module, client


def test_the_doc_quotes_every_recipe_verbatim() -> None:
    doc = (ROOT / "docs" / "web.md").read_text()
    for name in RECIPES:
        assert (ROOT / "examples" / "recipes" / f"{name}.py").read_text() in doc, name


def test_a_recipe_uploads_and_serves(recipe: tuple[ModuleType, httpx.Client]) -> None:
    module, client = recipe
    small = DATA[:40_000]
    digest = hashlib.sha256(small).hexdigest()
    r = client.post("/files", data={"title": "t"}, files={"file": ("a.bin", small)})
    assert r.status_code == 200, r.text
    assert r.json() == {"sha256": digest, "size": len(small)}
    assert module.store.info(digest).metadata == {"title": "t", "filename": "a.bin"}
    raw = client.put("/files", content=small)
    assert raw.status_code == 200 and raw.json()["sha256"] == digest
    assert client.get(f"/files/{digest}", headers={"Range": "bytes=0-9"}).content == small[:10]
    assert client.head(f"/files/{digest}").headers["content-length"] == str(len(small))
    broken = client.post("/files", content=b"--b\r\nnope",
                         headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert broken.status_code == 400


def test_a_recipe_maps_413_and_503(recipe: tuple[ModuleType, httpx.Client]) -> None:
    module, client = recipe
    module.MAX_BYTES = 50_000
    assert client.put("/files", content=DATA).status_code == 413
    assert client.post("/files", files={"file": ("a.bin", DATA)}).status_code == 413
    assert len(module.store) == 0
    slots: Any = module.slots
    taken = 0
    if isinstance(slots, type(threading.BoundedSemaphore())):
        while slots.acquire(blocking=False):
            taken += 1
    else:
        taken = slots._value
        slots._value = 0  # an asyncio.Semaphore with every slot taken
    try:
        assert client.put("/files", content=b"x").status_code == 503
    finally:
        if isinstance(slots, type(threading.BoundedSemaphore())):
            for _ in range(taken):
                slots.release()
        else:
            slots._value = taken
    assert client.put("/files", content=b"x").status_code == 200

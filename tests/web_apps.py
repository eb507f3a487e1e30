"""The same small upload/download app written with each adapter.

Endpoints: ``POST /multipart`` (form fields become metadata, the first file
part is stored), ``POST /raw`` (the body is stored, Content-Length as its
expected size), ``GET``/``HEAD /objects/<digest>``.  ``?limit=N`` caps a store.
Every upload handler appends its outcome to ``done`` when it finishes, however
it finishes, so a test can wait for a server that lost its client.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request  # at module level: FastAPI resolves annotations here
from fastapi.responses import JSONResponse

from streamstore import ContentStore


def starlette_app(store: ContentStore, done: list[str]) -> Any:
    from streamstore.starlette import (
        add_error_handlers,
        object_response,
        request_length,
        request_parts,
    )

    app = FastAPI()
    add_error_handlers(app)

    def limit(request: Request) -> int | None:
        value = request.query_params.get("limit")
        return None if value is None else int(value)

    @app.post("/multipart")
    async def multipart(request: Request) -> Any:
        outcome = "error"
        try:
            fields: dict[str, str] = {}
            async for part in request_parts(request):
                if not part.is_file:
                    fields[part.name] = await part.text()
                    continue
                info = await store.aput(part, limit=limit(request), metadata=fields)
                outcome = "stored"
                return {"sha256": info.sha256, "size": info.size, "created": info.created,
                        "fields": fields}
            outcome = "no file"
            return JSONResponse({"detail": "no file part"}, status_code=400)
        finally:
            done.append(outcome)

    @app.post("/raw")
    async def raw(request: Request) -> Any:
        outcome = "error"
        try:
            info = await store.aput(request.stream(), limit=limit(request),
                                    expected_size=request_length(request))
            outcome = "stored"
            return {"sha256": info.sha256, "size": info.size, "created": info.created}
        finally:
            done.append(outcome)

    @app.api_route("/objects/{digest}", methods=["GET", "HEAD"])
    async def download(digest: str, request: Request) -> Any:
        return await object_response(request, store, digest)

    return app


def aiohttp_app(store: ContentStore, done: list[str]) -> Any:
    from aiohttp import web

    from streamstore.aiohttp import (
        error_middleware,
        object_response,
        request_length,
        request_parts,
    )

    def limit(request: web.Request) -> int | None:
        value = request.query.get("limit")
        return None if value is None else int(value)

    async def multipart(request: web.Request) -> web.StreamResponse:
        outcome = "error"
        try:
            fields: dict[str, str] = {}
            async for part in request_parts(request):
                if not part.is_file:
                    fields[part.name] = await part.text()
                    continue
                info = await store.aput(part, limit=limit(request), metadata=fields)
                outcome = "stored"
                return web.json_response({"sha256": info.sha256, "size": info.size,
                                          "created": info.created, "fields": fields})
            outcome = "no file"
            return web.json_response({"detail": "no file part"}, status=400)
        finally:
            done.append(outcome)

    async def raw(request: web.Request) -> web.StreamResponse:
        outcome = "error"
        try:
            info = await store.aput(request.content, limit=limit(request),
                                    expected_size=request_length(request))
            outcome = "stored"
            return web.json_response({"sha256": info.sha256, "size": info.size,
                                      "created": info.created})
        finally:
            done.append(outcome)

    async def download(request: web.Request) -> web.StreamResponse:
        return await object_response(request, store, request.match_info["digest"])

    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/multipart", multipart)
    app.router.add_post("/raw", raw)
    app.router.add_get("/objects/{digest}", download)  # also answers HEAD
    return app


def flask_app(store: ContentStore, done: list[str]) -> Any:
    import flask

    from streamstore.flask import (
        object_response,
        register_error_handlers,
        request_length,
        request_parts,
    )

    app = flask.Flask(__name__)
    register_error_handlers(app)

    def limit() -> int | None:
        value = flask.request.args.get("limit")
        return None if value is None else int(value)

    @app.post("/multipart")
    def multipart() -> Any:
        outcome = "error"
        try:
            fields: dict[str, str] = {}
            for part in request_parts():
                if not part.is_file:
                    fields[part.name] = part.text()
                    continue
                info = store.put(part, limit=limit(), metadata=fields)
                outcome = "stored"
                return {"sha256": info.sha256, "size": info.size, "created": info.created,
                        "fields": fields}
            outcome = "no file"
            return {"detail": "no file part"}, 400
        finally:
            done.append(outcome)

    @app.post("/raw")
    def raw() -> Any:
        outcome = "error"
        try:
            info = store.put(flask.request.stream, limit=limit(),
                             expected_size=request_length())
            outcome = "stored"
            return {"sha256": info.sha256, "size": info.size, "created": info.created}
        finally:
            done.append(outcome)

    @app.route("/objects/<digest>", methods=["GET", "HEAD"])
    def download(digest: str) -> Any:
        return object_response(store, digest)

    return app


APPS = {"starlette": starlette_app, "aiohttp": aiohttp_app, "flask": flask_app}

"""aiohttp recipe: multipart and raw uploads streamed into a ContentStore, errors
mapped to 400/413/507, at most 4 uploads at once (503), downloads with Range.

Run: python examples/recipes/aiohttp_app.py
"""

import asyncio
import os

from aiohttp import web

from streamstore import ContentStore
from streamstore.aiohttp import error_middleware, object_response, request_length, request_parts

MAX_BYTES = 100 * 2**20
store = ContentStore(os.environ.get("UPLOADS_DIR", "./uploads"), reserve=2**30)
slots = asyncio.Semaphore(4)


async def upload_form(request: web.Request) -> web.Response:
    if slots.locked():
        raise web.HTTPServiceUnavailable(headers={"Retry-After": "1"})
    async with slots:
        fields = {}
        async for part in request_parts(request, max_field_size=64 * 1024):
            if not part.is_file:
                fields[part.name] = await part.text()
            else:
                info = await store.aput(part, limit=MAX_BYTES,
                                        metadata={**fields, "filename": part.filename})
                return web.json_response({"sha256": info.sha256, "size": info.size})
    raise web.HTTPBadRequest(text="no file part")


async def upload_raw(request: web.Request) -> web.Response:
    if slots.locked():
        raise web.HTTPServiceUnavailable(headers={"Retry-After": "1"})
    async with slots:
        info = await store.aput(request.content, limit=MAX_BYTES,
                                expected_size=request_length(request))
        return web.json_response({"sha256": info.sha256, "size": info.size})


async def download(request: web.Request) -> web.StreamResponse:
    return await object_response(request, store, request.match_info["digest"])


app = web.Application(middlewares=[error_middleware])  # 400/413/507 for streamstore errors
app.router.add_post("/files", upload_form)
app.router.add_put("/files", upload_raw)
app.router.add_get("/files/{digest}", download)  # GET and HEAD

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=8000)

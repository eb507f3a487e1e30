"""FastAPI recipe: multipart and raw uploads streamed into a ContentStore, errors
mapped to 400/413/507, at most 4 uploads at once (503), downloads with Range.

Run: python examples/recipes/fastapi_app.py
 (or: uvicorn --app-dir examples/recipes fastapi_app:app)
"""

import asyncio
import os

from fastapi import Depends, FastAPI, HTTPException, Request

from streamstore import ContentStore
from streamstore.starlette import (
    add_error_handlers,
    object_response,
    request_length,
    request_parts,
)

MAX_BYTES = 100 * 2**20
store = ContentStore(os.environ.get("UPLOADS_DIR", "./uploads"), reserve=2**30)
slots = asyncio.Semaphore(4)
app = FastAPI()
add_error_handlers(app)  # TooLargeError 413, MultipartError 400, DiskFullError 507, ...


async def upload_slot():
    if slots.locked():  # full: answer now instead of queueing a body we cannot take
        raise HTTPException(503, "too many uploads", headers={"Retry-After": "1"})
    async with slots:
        yield


@app.post("/files", dependencies=[Depends(upload_slot)])
async def upload_form(request: Request):
    fields = {}
    async for part in request_parts(request, max_field_size=64 * 1024):
        if not part.is_file:
            fields[part.name] = await part.text()
        else:
            info = await store.aput(part, limit=MAX_BYTES,
                                    metadata={**fields, "filename": part.filename})
            return {"sha256": info.sha256, "size": info.size}
    raise HTTPException(400, "no file part")


@app.put("/files", dependencies=[Depends(upload_slot)])
async def upload_raw(request: Request):
    # Content-Length as expected_size: a body that cannot fit (with the 1 GiB
    # reserve) is refused with 507 before a byte is read.
    info = await store.aput(request.stream(), limit=MAX_BYTES,
                            expected_size=request_length(request))
    return {"sha256": info.sha256, "size": info.size}


@app.api_route("/files/{digest}", methods=["GET", "HEAD"])
async def download(digest: str, request: Request):
    return await object_response(request, store, digest)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)

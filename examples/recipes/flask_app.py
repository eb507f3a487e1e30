"""Flask (WSGI) recipe: multipart and raw uploads streamed into a ContentStore,
errors mapped to 400/413/507, at most 4 uploads at once (503), downloads with Range.

Run: flask --app examples/recipes/flask_app.py run
 (or: gunicorn --chdir examples/recipes flask_app:app)
"""

import os
import threading

from flask import Flask, abort, request

from streamstore import ContentStore
from streamstore.flask import (
    object_response,
    register_error_handlers,
    request_length,
    request_parts,
)

MAX_BYTES = 100 * 2**20
store = ContentStore(os.environ.get("UPLOADS_DIR", "./uploads"), reserve=2**30)
slots = threading.BoundedSemaphore(4)
app = Flask(__name__)
register_error_handlers(app)  # TooLargeError 413, MultipartError 400, DiskFullError 507, ...


@app.post("/files")
def upload_form():
    if not slots.acquire(blocking=False):
        abort(503)
    try:
        fields = {}
        for part in request_parts(max_field_size=64 * 1024):  # never touch request.form
            if not part.is_file:
                fields[part.name] = part.text()
            else:
                info = store.put(part, limit=MAX_BYTES,
                                 metadata={**fields, "filename": part.filename})
                return {"sha256": info.sha256, "size": info.size}
        abort(400, "no file part")
    finally:
        slots.release()


@app.put("/files")
def upload_raw():
    if not slots.acquire(blocking=False):
        abort(503)
    try:
        info = store.put(request.stream, limit=MAX_BYTES, expected_size=request_length())
        return {"sha256": info.sha256, "size": info.size}
    finally:
        slots.release()


@app.route("/files/<digest>", methods=["GET", "HEAD"])
def download(digest):
    return object_response(store, digest)

"""Runs TusApp in uvicorn in this process with an audit hook, drives every kind
of request through it, and prints (as JSON) the file-system calls Python
audits that ran on the event loop's thread.  Used by test_tus_units.

    python tests/tus_loop_audit.py ROOT
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from streamstore import ContentStore
from streamstore.tus import CompletedUpload, TusApp

WATCHED = {"open", "os.remove", "os.rename", "os.truncate", "os.scandir", "os.listdir",
           "os.mkdir", "os.link", "os.chmod", "os.utime", "shutil.rmtree"}
loop_thread: list[threading.Thread] = []
root_dir: list[str] = []
on_loop: list[str] = []
elsewhere: list[str] = []


def hook(event: str, args: tuple[Any, ...]) -> None:
    if event not in WATCHED or not loop_thread or not args:
        return
    target = args[0]
    if isinstance(target, int) or not os.fspath(target).startswith(root_dir[0]):
        return  # descriptors (dir_fd calls) and imports: not the store's files
    where = on_loop if threading.current_thread() is loop_thread[0] else elsewhere
    where.append(f"{event} {os.fspath(target)}")


def main() -> None:
    root = Path(sys.argv[1])
    root_dir.append(str(root))
    completed: list[str] = []

    async def on_complete(upload: CompletedUpload) -> None:
        completed.append(upload.sha256)

    app = TusApp(ContentStore(root / "store"), on_complete=on_complete,
                 checkpoint_every=256 * 1024, expire_after=30)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    loop_thread.append(thread)
    sys.addaudithook(hook)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/"
    tus = {"Tus-Resumable": "1.0.0"}
    octets = {**tus, "Content-Type": "application/offset+octet-stream"}
    data = os.urandom(3 * 1024 * 1024)
    with httpx.Client(timeout=60) as http:
        http.options(url)
        location = http.post(url, headers={**tus, "Upload-Length": str(len(data))}).headers[
            "Location"]
        http.patch(location, content=data[:1000], headers={**octets, "Upload-Offset": "0"})
        http.head(location, headers=tus)
        http.patch(location, content=data[1000:], headers={**octets, "Upload-Offset": "1000"})
        http.head(location, headers=tus)
        created = http.post(url, content=b"abc", headers={**octets, "Upload-Length": "10"})
        http.delete(created.headers["Location"], headers=tus)
        part = http.post(url, content=b"xyz", headers={
            **octets, "Upload-Length": "3", "Upload-Concat": "partial"}).headers["Location"]
        http.post(url, headers={**tus, "Upload-Concat": f"final;{part}"})
        http.patch(location, content=b"x", headers={**octets, "Upload-Offset": "0"})  # 409
    asyncio.run_coroutine_threadsafe(app.sweep(), server_loop(server)).result(30)
    server.should_exit = True
    thread.join(20)
    print(json.dumps({"on_loop": on_loop, "elsewhere": len(elsewhere),
                      "completed": len(completed)}))


def server_loop(server: uvicorn.Server) -> asyncio.AbstractEventLoop:
    for task_loop in (getattr(s, "_loop", None) for s in server.servers):
        if task_loop is not None:
            return task_loop  # type: ignore[no-any-return]
    raise RuntimeError("no loop")


if __name__ == "__main__":
    main()

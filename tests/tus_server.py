"""A tus server for the tests: TusApp over a local ContentStore, served by uvicorn.

    python tests/tus_server.py --fd N --root DIR [--config JSON]

``--fd`` is a listening socket inherited from the test (so a restarted server
keeps the same port).  The config is a JSON object: TusApp options, plus

- ``mounts``: ``{"/path": {options}}`` serves several TusApps mounted in a
  Starlette app (each path with its own options) instead of one bare TusApp;
- ``completions``: a file to which ``on_complete`` appends one JSON line per
  completed upload;
- ``fail_completions``: how many ``on_complete`` calls raise before they succeed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import uvicorn

from streamstore import ContentStore
from streamstore.tus import CompletedUpload, TusApp


def make_tus(store: ContentStore, options: dict[str, Any], root: Path, name: str) -> TusApp:
    options = dict(options)
    completions = options.pop("completions", None)
    failures = {"left": int(options.pop("fail_completions", 0))}
    options.setdefault("staging", str(root / f"staging-{name}"))

    def on_complete(upload: CompletedUpload) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("on_complete fails on purpose")
        line = json.dumps({"id": upload.id, "size": upload.size, "sha256": upload.sha256,
                           "metadata": upload.metadata, "created": upload.stored.created,
                           "pid": os.getpid()})
        with open(completions, "a") as f:
            f.write(line + "\n")

    return TusApp(store, on_complete=on_complete if completions else None, **options)


def build(root: Path, config: dict[str, Any]) -> Any:
    store = ContentStore(root / "store")
    mounts = config.pop("mounts", None)
    if mounts is None:
        return make_tus(store, config, root, "default")
    from starlette.applications import Starlette
    from starlette.routing import Mount

    routes = [Mount(path, app=make_tus(store, {**config, **options}, root, path.strip("/")))
              for path, options in mounts.items()]
    return Starlette(routes=routes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--config", default="{}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = build(args.root, json.loads(args.config))
    sock = socket.socket(fileno=args.fd)
    # proxy_headers=False: X-Forwarded-* reach the app as sent (TusApp decides)
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False,
                            proxy_headers=False)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()

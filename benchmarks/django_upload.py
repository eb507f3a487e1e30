#!/usr/bin/env python3
"""Django file uploads: streamstore.django against Django's own upload path.

One command (from the repository root)::

    .venv/bin/python benchmarks/django_upload.py              # 256 MiB, 3 repeats
    .venv/bin/python benchmarks/django_upload.py --size 64 --repeats 1   # a smoke run

A multipart upload of one ``--size`` MiB file over loopback (httpx, streamed
with a Content-Length) to a single-file Django app, under Django's WSGI
server (the one ``runserver`` uses) and under uvicorn (ASGI).  Contenders:

- ``drain``: the view reads the body and discards it -- the transport's ceiling;
- ``django parser``: Django's multipart parser feeding a handler that discards
  every chunk -- the ceiling of any upload handler;
- ``django default``: Django's default upload handlers (a temp file), then
  what a view needs for content addressing: hash the temp file, then
  ``FileSystemStorage.save`` (a rename, as the temp dir is on the same
  filesystem);
- ``streamstore``: ``@stream_uploads`` into a ``ContentStore`` (hash while
  streaming, fsync, link into place), and the same with ``durable=False``.

Each run starts a fresh server process; runs are interleaved.  Reported: the
client's MB/s (median), bytes the server passed to write(2) per uploaded byte
(``wchar``), and the server's RSS growth.  Output: a table on stdout and
``django_upload.json`` in ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024
BOUNDARY = "bench-boundary-5d2e9a"
CONTENDERS = {
    "drain (read, discard)": "/drain",
    "django parser, discarding handler": "/parse",
    "django default + sha256 + storage.save": "/classic",
    "streamstore.django": "/streamstore",
    "streamstore.django durable=False": "/streamstore-nofsync",
}

# -- the server (a child process) ----------------------------------------------------------


def serve(kind: str, port: int, root: Path) -> None:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False, SECRET_KEY="bench", ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"],
        MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"], INSTALLED_APPS=[],
        DATABASES={}, USE_TZ=True,
        MEDIA_ROOT=str(root / "media"), FILE_UPLOAD_TEMP_DIR=str(root / "tmp"),
        LOGGING={"version": 1, "disable_existing_loggers": True},
    )
    django.setup()
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    if kind == "wsgi":
        from django.core.servers.basehttp import run
        from django.core.wsgi import get_wsgi_application

        run("127.0.0.1", port, get_wsgi_application(), threading=True)
    else:
        import uvicorn
        from django.core.asgi import get_asgi_application

        uvicorn.run(get_asgi_application(), host="127.0.0.1", port=port, log_level="warning",
                    access_log=False)


def _views() -> list[Any]:
    from django.core.files.storage import FileSystemStorage
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.files.uploadhandler import FileUploadHandler
    from django.http import HttpRequest, HttpResponse, JsonResponse
    from django.middleware.csrf import get_token
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    from streamstore import ContentStore
    from streamstore.django import stream_uploads

    root = Path(os.environ["BENCH_ROOT"])
    durable = ContentStore(root / "cas")
    fast = ContentStore(root / "cas-nofsync", durable=False)
    media = FileSystemStorage(location=root / "media")

    def token(request: HttpRequest) -> HttpResponse:
        return HttpResponse(get_token(request))

    @csrf_exempt
    def drain(request: HttpRequest) -> JsonResponse:
        n = 0
        while chunk := request.read(256 * 1024):
            n += len(chunk)
        return JsonResponse({"size": n})

    class Discard(FileUploadHandler):  # type: ignore[misc]
        def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
            return None

        def file_complete(self, file_size: int) -> Any:
            return SimpleUploadedFile(self.file_name, b"")

    @csrf_exempt
    def parse(request: HttpRequest) -> JsonResponse:
        request.upload_handlers = [Discard(request)]
        counters = [0]

        def count(raw_data: bytes, start: int) -> None:
            counters[0] += len(raw_data)

        request.upload_handlers[0].receive_data_chunk = count
        request.FILES  # noqa: B018 - parses the body
        return JsonResponse({"size": counters[0]})

    @csrf_exempt
    def classic(request: HttpRequest) -> JsonResponse:
        upload = request.FILES["file"]
        hasher = hashlib.sha256()
        for chunk in upload.chunks(1024 * 1024):
            hasher.update(chunk)
        digest = hasher.hexdigest()
        media.save(digest, upload)
        return JsonResponse({"sha256": digest, "size": upload.size})

    def stored(request: HttpRequest) -> JsonResponse:
        upload = request.FILES["file"]
        return JsonResponse({"sha256": upload.sha256, "size": upload.size})

    return [
        path("token", token),
        path("drain", drain),
        path("parse", parse),
        path("classic", classic),
        path("streamstore", stream_uploads(store=durable)(stored)),
        path("streamstore-nofsync", stream_uploads(store=fast)(stored)),
    ]


def __getattr__(name: str) -> Any:  # Django's URL resolver reads urlpatterns lazily
    if name == "urlpatterns":
        return _views()
    raise AttributeError(name)


# -- the client ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _wchar(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("wchar")


def _body(size: int, block: bytes) -> tuple[Iterator[bytes], int]:
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"upload.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        left = size
        while left:
            piece = block[: min(left, len(block))]
            left -= len(piece)
            yield piece
        yield tail

    return chunks(), len(head) + size + len(tail)


def run_one(kind: str, url_path: str, size: int, block: bytes, digest: str,
            work: Path) -> dict[str, float]:
    import httpx

    root = work / "server"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    port = _free_port()
    env = {**os.environ, "BENCH_ROOT": str(root), "PYTHONPATH": str(HERE)}
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port),
                             "--root", str(root)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {proc.stderr.read()!r}"
                                       if proc.stderr else "server did not start") from None
                time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            client.headers["X-CSRFToken"] = client.get("/token").text
            warm, warm_len = _body(1024, block)  # imports and first-request work
            client.post(url_path, content=warm, headers={
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                "Content-Length": str(warm_len)})
            subprocess.run(["sync"], check=False)
            rss0, wchar0 = _proc(proc.pid, "VmRSS"), _wchar(proc.pid)
            body, length = _body(size, block)
            began = time.perf_counter()
            response = client.post(url_path, content=body, headers={
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                "Content-Length": str(length)})
            elapsed = time.perf_counter() - began
            wchar1, hwm = _wchar(proc.pid), _proc(proc.pid, "VmHWM")
        response.raise_for_status()
        answer = response.json()
        if answer["size"] < size or answer.get("sha256", digest) != digest:
            raise RuntimeError(f"{url_path}: wrong answer {answer}")
        return {"seconds": elapsed, "mbps": size / elapsed / 1e6,
                "written_per_byte": (wchar1 - wchar0) / size,
                "rss_growth_mib": max(0, hwm - rss0) / MiB}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="upload size in MiB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--workdir", type=Path, default=HERE / ".work" / "django")
    parser.add_argument("--serve", choices=["wsgi", "asgi"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.root)
        return
    size = args.size * MiB
    block = os.urandom(4 * MiB)
    hasher = hashlib.sha256()
    for i in range(0, size, len(block)):
        hasher.update(block[: min(len(block), size - i)])
    digest = hasher.hexdigest()
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        kind: {name: [] for name in CONTENDERS} for kind in ("wsgi", "asgi")}
    order = list(CONTENDERS)
    for r in range(args.repeats):
        for kind in ("wsgi", "asgi"):
            for name in order[r % len(order):] + order[: r % len(order)]:
                runs[kind][name].append(run_one(kind, CONTENDERS[name], size, block, digest,
                                                args.workdir))
                print(f"  {kind} {name}: {runs[kind][name][-1]['mbps']:.0f} MB/s", flush=True)
    shutil.rmtree(args.workdir, ignore_errors=True)
    summary: dict[str, Any] = {}
    for kind, by_name in runs.items():
        summary[kind] = {name: {key: statistics.median(run[key] for run in results)
                                for key in results[0]} for name, results in by_name.items()}
    ratios = {}
    for kind, s in summary.items():
        ss = s["streamstore.django"]["mbps"]
        default = s["django default + sha256 + storage.save"]["mbps"]
        parser = s["django parser, discarding handler"]["mbps"]
        ratios[kind] = {
            "streamstore / django default": ss / default,
            "streamstore / django parser alone": ss / parser,
            "streamstore / drain": ss / s["drain (read, discard)"]["mbps"],
        }
    data = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": " ".join(["python", "benchmarks/django_upload.py", *sys.argv[1:]]),
            "size_mib": args.size, "repeats": args.repeats,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "platform": platform.platform()},
            "runs": runs, "median": summary, "ratios": ratios}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "django_upload.json").write_text(json.dumps(data, indent=1) + "\n")
    for kind, s in summary.items():
        print(f"\n== {kind}: one {args.size} MiB file, multipart, median of {args.repeats}")
        print(f"  {'contender':<42} {'MB/s':>7} {'written/byte':>13} {'RSS+MiB':>8}")
        for name, m in s.items():
            print(f"  {name:<42} {m['mbps']:>7.0f} {m['written_per_byte']:>13.2f} "
                  f"{m['rss_growth_mib']:>8.1f}")
        for label, value in ratios[kind].items():
            print(f"  ratio {label}: {value:.2f}")
    print(f"\nwrote {args.out / 'django_upload.json'}")


if __name__ == "__main__":
    main()

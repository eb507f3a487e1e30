#!/usr/bin/env python3
"""Web uploads through uvicorn + httpx: streamstore.multipart and the raw-body
path against what users write today, side by side in one run.

    .venv/bin/python benchmarks/web.py                   # 512 MiB bodies, 3 repeats
    .venv/bin/python benchmarks/web.py --size 64 --repeat 1   # a smoke run
    .venv/bin/python benchmarks/web.py --memory-cgroup /sys/fs/cgroup/bench
        # run every server inside that (pre-made, memory-limited) cgroup: the
        # page cache must evict, and the spool's extra write reaches the disk

Contenders, each served by a fresh uvicorn process (default h11 protocol) so
its peak RSS is its own, and sent one body by an httpx client in this
process (the body is generated on the fly; the client never holds it):

- ``drain``: the server reads the body and discards it (the transport's ceiling).
- ``mp-streamstore``: ``aiter_parts(request.stream())`` -> ``ContentStore.aput(part)``.
- ``mp-uploadfile``: FastAPI/Starlette ``await request.form()`` (the
  ``UploadFile`` spool) -> ``ContentStore.aput(upload)``.
- ``mp-handwritten``: python-multipart's ``MultipartParser`` fed from
  ``request.stream()``, its callbacks hashing and writing a temp file on the
  event loop, fsync, rename: the glue users write by hand.
- ``raw-streamstore``: ``ContentStore.aput(request.stream(), expected_size=...)``.
- ``raw-handwritten``: ``async for chunk in request.stream()``: hash, write,
  then fsync and rename, on the event loop.
- ``limit-413``: ``mp-streamstore`` with ``limit=10 MiB``: must answer 413
  having written at most 10 MiB plus one chunk.

Reported per contender (median over repeats): MB/s of the whole request,
bytes the server wrote (``/proc/PID/io`` ``wchar``: every write() call,
spools included; ``write_bytes``: what reached the block layer), server RSS
growth during the request (peak ``VmHWM`` minus ``VmRSS`` before it) and
server CPU seconds; then ratios against ``mp-uploadfile`` and ``drain``.
Every store is durable (fsync before the rename).  Output: a table and
``benchmarks/results/web.json``.  Needs the ``test`` extra (FastAPI,
uvicorn, httpx, python-multipart).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024
BOUNDARY = "streamstore-bench-boundary"
LIMIT = 10 * MiB
CONTENDERS = ["drain", "mp-streamstore", "mp-uploadfile", "mp-handwritten",
              "raw-streamstore", "raw-handwritten", "limit-413"]


# ------------------------------------------------------------------ the server


def build_app(root: Path) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from streamstore import ContentStore, TooLargeError
    from streamstore.multipart import aiter_parts

    store = ContentStore(root)

    async def drain(request: Request) -> JSONResponse:
        n = 0
        async for chunk in request.stream():
            n += len(chunk)
        return JSONResponse({"size": n})

    async def mp_streamstore(request: Request) -> JSONResponse:
        async for part in aiter_parts(request.stream(), request.headers["content-type"]):
            if part.is_file:
                info = await store.aput(part)
                return JSONResponse({"sha256": info.sha256, "size": info.size})
        return JSONResponse({}, status_code=400)

    async def limited(request: Request) -> JSONResponse:
        try:
            async for part in aiter_parts(request.stream(), request.headers["content-type"]):
                if part.is_file:
                    info = await store.aput(part, limit=LIMIT)
                    return JSONResponse({"sha256": info.sha256, "size": info.size})
        except TooLargeError:
            return JSONResponse({"detail": "too large"}, status_code=413)
        return JSONResponse({}, status_code=400)

    async def mp_uploadfile(request: Request) -> JSONResponse:
        async with request.form() as form:
            upload = form["file"]
            info = await store.aput(upload)  # type: ignore[arg-type]
        return JSONResponse({"sha256": info.sha256, "size": info.size})

    def temp_file() -> tuple[int, str]:
        fd, name = tempfile.mkstemp(dir=root, prefix=".hand-")
        return fd, name

    def publish(fd: int, name: str, digest: str) -> None:
        os.fsync(fd)
        os.close(fd)
        final = root / f"hand-{digest}"
        os.rename(name, final)
        dir_fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def mp_handwritten(request: Request) -> JSONResponse:
        from python_multipart.multipart import MultipartParser, parse_options_header

        _, params = parse_options_header(request.headers["content-type"])
        state: dict[str, Any] = {"headers": [], "field": b"", "value": b"", "file": None}
        fd, name = temp_file()
        hasher = hashlib.sha256()
        size = 0

        def on_header_field(data: bytes, start: int, end: int) -> None:
            state["field"] += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            state["value"] += data[start:end]

        def on_header_end() -> None:
            state["headers"].append((state["field"].lower(), state["value"]))
            state["field"] = state["value"] = b""

        def on_headers_finished() -> None:
            disposition = dict(state["headers"]).get(b"content-disposition", b"")
            state["file"] = b"filename=" in disposition
            state["headers"] = []

        def on_part_data(data: bytes, start: int, end: int) -> None:
            nonlocal size
            if state["file"]:
                chunk = data[start:end]
                hasher.update(chunk)
                os.write(fd, chunk)
                size += end - start

        parser = MultipartParser(params[b"boundary"], {
            "on_header_field": on_header_field, "on_header_value": on_header_value,
            "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data})
        async for chunk in request.stream():
            parser.write(chunk)
        digest = hasher.hexdigest()
        publish(fd, name, digest)
        return JSONResponse({"sha256": digest, "size": size})

    async def raw_streamstore(request: Request) -> JSONResponse:
        length = int(request.headers["content-length"])
        info = await store.aput(request.stream(), expected_size=length)
        return JSONResponse({"sha256": info.sha256, "size": info.size})

    async def raw_handwritten(request: Request) -> JSONResponse:
        fd, name = temp_file()
        hasher = hashlib.sha256()
        size = 0
        async for chunk in request.stream():
            hasher.update(chunk)
            os.write(fd, chunk)
            size += len(chunk)
        digest = hasher.hexdigest()
        publish(fd, name, digest)
        return JSONResponse({"sha256": digest, "size": size})

    return Starlette(routes=[
        Route("/drain", drain, methods=["POST"]),
        Route("/mp-streamstore", mp_streamstore, methods=["POST"]),
        Route("/mp-uploadfile", mp_uploadfile, methods=["POST"]),
        Route("/mp-handwritten", mp_handwritten, methods=["POST"]),
        Route("/raw-streamstore", raw_streamstore, methods=["POST"]),
        Route("/raw-handwritten", raw_handwritten, methods=["POST"]),
        Route("/limit-413", limited, methods=["POST"]),
    ])


def serve(root: Path) -> None:
    import uvicorn

    uvicorn.run(build_app(root), host="127.0.0.1", port=0, log_level="info",
                access_log=False)


# ------------------------------------------------------------------ the driver


class Body:
    """A multipart (or raw) body of ``size`` data bytes, generated block by block."""

    def __init__(self, size: int, multipart: bool) -> None:
        self.size = size
        self.block = os.urandom(MiB)
        if multipart:
            self.head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
                         f"filename=\"big.bin\"\r\nContent-Type: application/octet-stream"
                         f"\r\n\r\n").encode()
            self.tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        else:
            self.head = self.tail = b""
        hasher = hashlib.sha256()
        for block in self._blocks():
            hasher.update(block)
        self.sha256 = hasher.hexdigest()

    @property
    def length(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def _blocks(self) -> Iterator[bytes]:
        left = self.size
        while left > 0:
            block = self.block[:left]
            left -= len(block)
            yield block

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        yield from self._blocks()
        yield self.tail


def proc_io(pid: int) -> dict[str, int]:
    text = Path(f"/proc/{pid}/io").read_text()
    return {k: int(v) for k, v in re.findall(r"(\w+): (\d+)", text)}


def proc_status(pid: int, key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) * 1024 if match else 0


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, root: Path, cgroup: Path | None) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(root)],
                                     stderr=subprocess.PIPE)
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(self.proc.pid))
        assert self.proc.stderr is not None
        log = b""
        deadline = time.monotonic() + 30
        while (match := re.search(rb"running on (http://\S+)", log)) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {log.decode()}")
            if select.select([self.proc.stderr], [], [], 0.1)[0]:
                log += os.read(self.proc.stderr.fileno(), 4096)
        self.url = match.group(1).decode()
        self.pid = self.proc.pid

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait()
        assert self.proc.stderr is not None
        self.proc.stderr.close()


def run_one(name: str, body: Body, root: Path, cgroup: Path | None) -> dict[str, Any]:
    import httpx

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    server = Server(root, cgroup)
    try:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            client.post("/drain", content=b"x")  # warm-up: imports, first allocations
            subprocess.run(["sync"], check=False)
            time.sleep(0.5)
            io0, rss0, cpu0 = proc_io(server.pid), proc_status(server.pid, "VmRSS"), \
                proc_cpu(server.pid)
            try:
                Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # reset VmHWM
            except OSError:
                pass
            headers = {"Content-Length": str(body.length)}
            if body.head:
                headers["Content-Type"] = f"multipart/form-data; boundary={BOUNDARY}"
            start = time.perf_counter()
            try:
                response = client.post(f"/{name}", content=iter(body), headers=headers)
                status = response.status_code
                answer = response.json()
            except httpx.HTTPError as exc:  # the server answered early and closed
                status, answer = -1, {"error": repr(exc)}
            seconds = time.perf_counter() - start
            time.sleep(0.2)
            io1, hwm, cpu1 = proc_io(server.pid), proc_status(server.pid, "VmHWM"), \
                proc_cpu(server.pid)
    finally:
        server.stop()
    if name == "limit-413":
        ok = status == 413
    elif name == "drain":
        ok = status == 200 and answer.get("size") == body.length
    else:
        ok = status == 200 and answer.get("sha256") == body.sha256
    return {
        "contender": name, "ok": ok, "status": status, "seconds": seconds,
        "mb_s": body.length / seconds / 1e6,
        "wchar": io1["wchar"] - io0["wchar"],
        "write_bytes": io1["write_bytes"] - io0["write_bytes"],
        "rss_growth": max(0, hwm - rss0), "cpu": cpu1 - cpu0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="body size in MiB (512)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=CONTENDERS, default=CONTENDERS)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where servers store (default: a temp dir under benchmarks/)")
    parser.add_argument("--memory-cgroup", type=Path, default=None,
                        help="a cgroup directory (made and memory-limited beforehand) to run "
                             "each server in")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "web.json")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    base = args.dir or Path(tempfile.mkdtemp(prefix="web-bench-", dir=HERE))
    bodies = {True: Body(args.size * MiB, True), False: Body(args.size * MiB, False)}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.only}
    try:
        for r in range(args.repeat):
            order = args.only[r % len(args.only):] + args.only[:r % len(args.only)]
            for name in order:
                body = bodies[not name.startswith("raw-")]
                result = run_one(name, body, base / "store", args.memory_cgroup)
                runs[name].append(result)
                print(f"  run {r + 1} {name:16} {result['mb_s']:7.1f} MB/s "
                      f"status {result['status']}", file=sys.stderr)
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)

    def med(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    summary = {name: {key: med(name, key) for key in
                      ("mb_s", "seconds", "wchar", "write_bytes", "rss_growth", "cpu")}
               | {"ok": all(run["ok"] for run in runs[name])} for name in runs}
    ref = summary.get("mp-uploadfile", {}).get("mb_s")
    drain = summary.get("drain", {}).get("mb_s")
    cgroup = f"; memory cgroup {args.memory_cgroup}" if args.memory_cgroup else ""
    print(f"\n{args.size} MiB body, median of {args.repeat}; uvicorn (h11) + httpx; "
          f"durable stores{cgroup}")
    print(f"{'contender':16} {'MB/s':>7} {'x UploadFile':>12} {'x drain':>8} "
          f"{'written MiB':>11} {'disk MiB':>9} {'RSS +MiB':>8} {'CPU s':>6} ok")
    for name, s in summary.items():
        vs_ref = f"{s['mb_s'] / ref:.2f}" if ref else "-"
        vs_drain = f"{s['mb_s'] / drain:.2f}" if drain else "-"
        print(f"{name:16} {s['mb_s']:7.1f} {vs_ref:>12} {vs_drain:>8} "
              f"{s['wchar'] / MiB:11.1f} {s['write_bytes'] / MiB:9.1f} "
              f"{s['rss_growth'] / MiB:8.1f} {s['cpu']:6.2f} {'yes' if s['ok'] else 'NO'}")
    if "limit-413" in summary:
        written = summary["limit-413"]["wchar"]
        print(f"\nlimit-413: {written / MiB:.2f} MiB written for a 10 MiB limit "
              f"(bound: 10 MiB + one 64 KiB chunk = {(LIMIT + 65536) / MiB:.2f} MiB)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "size_mib": args.size, "repeat": args.repeat,
        "memory_cgroup": str(args.memory_cgroup) if args.memory_cgroup else None,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "summary": summary, "runs": runs,
    }, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

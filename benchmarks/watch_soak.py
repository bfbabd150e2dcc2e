"""Soak of `commpath watch`: many rotated ring files through one watch; RSS and per-file latency over time.

Each ring file is a bundled lab capture (captures/broken, its six interface captures in turn) with every
timestamp moved on by one rotation period, so every file is new content (the watch knows files by content)
and capture time advances like a ring that rotates every ``--period`` seconds. A ring of ``--ring`` files is
kept on disk (the oldest deleted, as dumpcap's ring does). The watch runs in this process, one pass per
arriving file, /metrics rendered after each pass (as a scrape would). Prints RSS at each tenth of the run,
the ratio of the last tenth's RSS to the second tenth's (flat: about 1.0), the least-squares slope of RSS
per file from the second tenth on (flat: about 0), and decode / judge latencies.

    python benchmarks/watch_soak.py --files 1000
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "captures" / "broken"    # six small lab captures; captures/real-default: larger real ones


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def shifted(data: bytes, seconds: int) -> bytes:
    """A classic pcap with every record's timestamp moved on by ``seconds``."""
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    out = bytearray(data)
    pos = 24
    while pos + 16 <= len(out):
        ts, _frac, caplen, _wire = struct.unpack_from(endian + "IIII", out, pos)
        struct.pack_into(endian + "I", out, pos, ts + seconds)
        pos += 16 + caplen
    return bytes(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1000, help="ring files to feed")
    ap.add_argument("--ring", type=int, default=12, help="ring files kept on disk")
    ap.add_argument("--period", type=int, default=60, help="capture seconds between rotations")
    ap.add_argument("--window", type=float, default=600.0, help="the watch's --window (capture seconds)")
    ap.add_argument("--max-flows", type=int, default=5000, help="the watch's --max-flows")
    ap.add_argument("--source", type=Path, default=SOURCE,
                    help="a bundled run whose classic-pcap captures, inventory.yaml and pki/ca.crt are used")
    ap.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = ap.parse_args()

    from prometheus_client import generate_latest

    from commpath.watch import Options, Watcher

    source = args.source
    sources = sorted(source.rglob("*.pcap"))
    blobs = [(p.name, p.read_bytes()) for p in sources]
    with tempfile.TemporaryDirectory(prefix="commpath-soak-") as tmp:
        ring = Path(tmp) / "ring"
        ring.mkdir()
        opts = Options(inputs=[ring], out=Path(tmp) / "out", inventory=str(source / "inventory.yaml"),
                       ca=str(source / "pki" / "ca.crt"), window_seconds=args.window, max_flows=args.max_flows,
                       settle=0.0, quiet=True)
        devnull = open("/dev/null", "w")
        w = Watcher(opts, log=devnull)
        samples, decode, judge, step = [], [], [], []
        start = time.perf_counter()
        for i in range(args.files):
            name, blob = blobs[i % len(blobs)]
            f = ring / f"soak_{i:06d}_{name}"
            tmpf = ring / f".{f.name}.part"
            tmpf.write_bytes(shifted(blob, i * args.period))
            tmpf.rename(f)
            old = ring / f"soak_{i - args.ring:06d}_{blobs[(i - args.ring) % len(blobs)][0]}"
            if i >= args.ring:
                old.unlink()
            t0 = time.perf_counter()
            judged = w.metrics.judge_seconds.collect()[0].samples
            assert w.step() == 1
            step.append(time.perf_counter() - t0)
            generate_latest(w.metrics.registry)
            decode.append(w.window.parts[-1].seconds)
            after = w.metrics.judge_seconds.collect()[0].samples
            judge.append(next(s.value for s in after if s.name.endswith("_sum"))
                         - next(s.value for s in judged if s.name.endswith("_sum")))
            if (i + 1) % max(1, args.files // 10) == 0:
                samples.append((i + 1, rss_mb(), w.window.flows, len(w.window)))
                print(f"{i + 1:6d} files  RSS {samples[-1][1]:7.1f} MB  window {samples[-1][3]} files / "
                      f"{samples[-1][2]} flows  state {len(w.state.files)} files", flush=True)
        elapsed = time.perf_counter() - start
    q = statistics.quantiles
    timed = {"decode": decode, "judge": judge, "per_file": step}
    result = {
        "source": str(source), "bytes_per_file": round(statistics.mean(len(b) for _, b in blobs)),
        "files": args.files, "seconds": round(elapsed, 1),
        "rss_mb": [[n, round(r, 1)] for n, r, _, _ in samples],
        "rss_ratio_last_to_second_tenth": round(samples[-1][1] / samples[1][1], 3) if len(samples) > 1 else None,
        # least-squares slope of RSS over files, from the second tenth on (the first holds the warm-up)
        "rss_slope_kb_per_file": (round(statistics.linear_regression([n for n, *_ in samples[1:]],
                                                                     [r * 1024 for _, r, *_ in samples[1:]]).slope, 2)
                                  if len(samples) > 2 else None),
        **{f"{name}_ms_p50": round(1e3 * statistics.median(xs), 1) for name, xs in timed.items()},
        **{f"{name}_ms_p95": round(1e3 * q(xs, n=20)[18], 1) for name, xs in timed.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_avg_1m": open("/proc/loadavg").read().split()[0],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every report format at many connections: `commpath report CAPTURE --format F -o OUT`, one process each.

For each format (and `open`: `commpath.open` alone, the run without any output; and `analyze`), in
interleaved rounds: wall time, CPU (user + system, from wait4), the process's peak RSS, and the
size written; then each format's CPU beyond `open`, per connection. The default capture is a cut of the
million-SYN capture (one connection and one finding each), made with editcap when missing:

    python benchmarks/formats.py                                   # 200,000 connections
    python benchmarks/formats.py --connections 1000000 --formats md,sarif --rounds 1
    python benchmarks/formats.py --capture benchmarks/data/bench.pcap --inventory benchmarks/bench-inventory.yaml

The machine may be shared: the load average before each run is printed with it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FORMATS = ("open", "analyze", "json", "html", "md", "junit", "sarif", "csv", "zeek")


def capture_of(connections: int) -> Path:
    """A cut of benchmarks/data/syn-1m.pcap with this many SYN-only connections (one packet each)."""
    whole = HERE / "data" / "syn-1m.pcap"
    if not whole.is_file():
        subprocess.run([sys.executable, str(HERE / "make_syn_capture.py")], check=True)
    if connections >= 1_000_000:
        return whole
    cut = HERE / "data" / f"syn-{connections}.pcap"
    if not cut.is_file():
        subprocess.run(["editcap", "-r", str(whole), str(cut), f"1-{connections}"], check=True)
    return cut


def run_once(fmt: str, capture: Path, inventory: str | None, out: Path) -> dict:
    """One process: (wall s, CPU s, peak MB, bytes written)."""
    inv = ["--inventory", inventory] if inventory else []
    if fmt == "open":
        cmd = [sys.executable, "-c", "import sys, commpath; commpath.open(sys.argv[1], inventory=sys.argv[2] or None)",
               str(capture), inventory or ""]
    elif fmt == "analyze":
        cmd = [sys.executable, "-m", "commpath", "analyze", str(capture), *inv, "--out", str(out), "-q"]
    else:
        cmd = [sys.executable, "-m", "commpath", "report", str(capture), *inv, "--format", fmt, "-o",
               str(out / "report"), "-q"]
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1, 3):
        raise SystemExit(f"{fmt}: exit {code}: {err[-2000:]}")
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024,
            "bytes": written, "load": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", help="default: a cut of syn-1m.pcap with --connections connections")
    ap.add_argument("--connections", type=int, default=200_000)
    ap.add_argument("--inventory")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    capture = Path(args.capture) if args.capture else capture_of(args.connections)
    formats = [f for f in args.formats.split(",") if f]
    if "open" not in formats:
        formats.insert(0, "open")
    results: dict[str, list[dict]] = {f: [] for f in formats}
    scratch = Path(tempfile.mkdtemp(prefix="commpath-formats-"))
    try:
        for r in range(args.rounds):
            for fmt in formats:
                got = run_once(fmt, capture, args.inventory, scratch / f"{fmt}-{r}")
                shutil.rmtree(scratch / f"{fmt}-{r}", ignore_errors=True)
                results[fmt].append(got)
                print(f"round {r + 1} {fmt:8s} {got['wall']:7.2f} s wall {got['cpu']:7.2f} s CPU "
                      f"{got['peak_mb']:7.0f} MB peak {got['bytes'] / 1e6:9.1f} MB written (load {got['load']:.1f})",
                      flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    n = args.connections if not args.capture else None
    base = {k: statistics.median(x[k] for x in results["open"]) for k in ("cpu", "peak_mb")}
    print(f"\ncapture {capture} ({n or '?'} connections); medians of {args.rounds} rounds")
    print("| format | wall s | CPU s | peak MB | written MB | CPU beyond open | µs per connection |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for fmt in formats:
        m = {k: statistics.median(x[k] for x in results[fmt]) for k in ("wall", "cpu", "peak_mb", "bytes")}
        extra = m["cpu"] - base["cpu"] if fmt != "open" else 0.0
        per = f"{extra / n * 1e6:.1f}" if n and fmt != "open" else ""
        print(f"| {fmt} | {m['wall']:.2f} | {m['cpu']:.2f} | {m['peak_mb']:.0f} | {m['bytes'] / 1e6:.1f} | "
              f"{extra:.2f} | {per} |")


if __name__ == "__main__":
    main()

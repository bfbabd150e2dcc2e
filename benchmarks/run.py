"""Benchmark commpath against tshark, dpkt, scapy and nfstream on the same capture.

Each tool runs in its own subprocess. Wall time is measured around the whole process (start-up,
imports and JIT compilation included, as a user would experience it), peak memory is the
largest sum of RSS over the process tree sampled every 20 ms with psutil (so multi-process tools
such as nfstream are counted in full), cross-checked with the kernel's ru_maxrss of the main
process. Packets per second = the capture's packet count (capinfos) / wall seconds.

scapy runs on the first ``--scapy-sample`` packets only (it manages a few thousand packets per
second) and its rate is extrapolated to the whole file; its memory figure is for the sample.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALL_TOOLS = ["commpath", "commpath-flows", "commpath-handshakes", "tshark", "dpkt", "scapy", "nfstream"]
#: commpath's ways to run: the Python API (DataFrames), the connection-table command, API + handshakes.
COMMPATH_TOOLS = ("commpath", "commpath-flows", "commpath-handshakes")


def capture_packets(path: Path) -> int:
    out = subprocess.run(["capinfos", "-M", "-c", "-T", "-r", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split("\t")[1])


def measure(cmd: list[str], timeout: float) -> dict:
    """Run ``cmd``; return wall seconds, CPU seconds (user + system, and each), peak tree RSS (MB), ru_maxrss (MB),
    exit code, stdout, stderr tail."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    out_chunks: list[str] = []
    err_chunks: list[str] = []
    import threading

    readers = [threading.Thread(target=lambda s=s, c=c: c.append(s.read()), daemon=True)
               for s, c in ((proc.stdout, out_chunks), (proc.stderr, err_chunks))]
    for r in readers:
        r.start()
    status = None
    while status is None:
        try:
            procs = [root] + root.children(recursive=True)
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, total)
        except psutil.Error:
            pass
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == 0:
            status = None
            if time.perf_counter() - started > timeout:
                proc.kill()
            time.sleep(0.02)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join(5)
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
            "peak_mb": peak / 1e6, "maxrss_mb": usage.ru_maxrss * 1024 / 1e6,
            "exit": proc.returncode, "stdout": "".join(out_chunks), "stderr": "".join(err_chunks)[-2000:]}


def wait_idle(threshold: float, max_wait: float) -> float:
    """Wait (at most ``max_wait`` s) until the 1-minute load average is below ``threshold``; return it."""
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def command(tool: str, path: Path, args) -> list[str] | None:
    py = sys.executable
    peers = str(HERE / "_peers.py")
    if tool == "tshark":
        return ["tshark", "-n", "-r", str(path), "-q", "-z", "conv,tcp", "-z", "conv,udp"]
    if tool == "commpath-flows":       # the connection-table command, as tshark's conv table is one
        return [py, "-m", "commpath.cli", "flows", "--quiet", str(path)]
    if tool == "scapy":
        return [py, peers, "scapy", str(path), str(args.scapy_sample)]
    return [py, peers, tool, str(path)]


def available(tool: str) -> str | None:
    """None when the tool can run, else the reason it cannot."""
    if tool == "tshark":
        return None if shutil.which("tshark") else "tshark not installed (apt install tshark)"
    module = {"commpath": "commpath", "commpath-flows": "commpath", "commpath-handshakes": "commpath",
              "dpkt": "dpkt", "scapy": "scapy", "nfstream": "nfstream"}[tool]
    probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot import {module}: {probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else 'failed'}"
    return None


def child_json(cmd: list[str]) -> dict:
    """The JSON object a child benchmark process prints last; its stderr ends the benchmark if it fails."""
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"stages failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def prepare(prog: str, capture: Path, names: list[str], commpath_names) -> tuple[list[str], int] | None:
    """The common start of a peer benchmark: None (said) if ``capture`` is missing; else the names that can
    run here (the others said, with the reason) and the capture's packet count, after a header line and
    compiling commpath's bytecode (so no round pays for it)."""
    if not capture.exists():
        print(f"{prog}: {capture}: no such capture (make one with benchmarks/make_capture.py)", file=sys.stderr)
        return None
    packets = capture_packets(capture)
    print(f"capture {capture} ({packets:,} packets, {capture.stat().st_size / 1e6:.0f} MB); {os.cpu_count()} CPUs; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(HERE.parent / "commpath")], capture_output=True)
    runnable = []
    for name in [n.strip() for n in names if n.strip()]:
        reason = available("commpath" if name in commpath_names else name)
        if reason:
            print(f"{name}: not run: {reason}")
        else:
            runnable.append(name)
    return runnable, packets


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture", nargs="?", default=str(HERE / "data" / "bench.pcap"))
    ap.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma separated (default: all)")
    ap.add_argument("--scapy-sample", type=int, default=50_000, help="packets scapy reads (0: all)")
    ap.add_argument("--runs", type=int, default=1,
                    help="rounds; each runs every tool once (round robin); the fastest run and the median are reported")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--idle-load", type=float, default=0,
                    help="before each run wait (up to --idle-wait s) until the 1-min load average is below this")
    ap.add_argument("--idle-wait", type=float, default=300)
    ap.add_argument("--memory-target-mb", type=float, default=0,
                    help="fail (exit 1) if commpath's peak memory exceeds this")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args(argv)

    path = Path(args.capture).resolve()
    if not path.exists():
        print(f"run: {path}: no such capture (make one with benchmarks/make_capture.py)", file=sys.stderr)
        return 2
    total = capture_packets(path)
    size_mb = path.stat().st_size / 1e6
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    print(f"capture {path} ({total} packets, {size_mb:.1f} MB); machine: {platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}", flush=True)

    if any(t in COMMPATH_TOOLS for t in tools) and available("commpath") is None:
        # byte-compiled modules, as a regular pip install leaves them (editable checkouts run with
        # PYTHONDONTWRITEBYTECODE would otherwise compile every module at every start)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(HERE.parent / "commpath")], capture_output=True)
        # warm-up on a small public capture: the first run after installing compiles the C kernels
        warm = sorted((HERE.parents[1] / "shared/pcaps/public").rglob("*.pcap"))[:1]
        if warm:
            measure(command("commpath", warm[0], args), 600)

    results = {}
    runs: dict[str, list[dict]] = {}
    runnable = []
    for tool in tools:
        reason = available(tool)
        if reason:
            results[tool] = {"error": reason}
            print(f"{tool:9s} not run: {reason}", flush=True)
        else:
            runnable.append(tool)
    # round robin: each round runs every tool once, so drifting load on a shared machine hits all alike
    for _ in range(args.runs):
        for tool in runnable:
            if runs.get(tool) and runs[tool][-1]["exit"] != 0:
                continue
            load = wait_idle(args.idle_load, args.idle_wait) if args.idle_load else os.getloadavg()[0]
            m = measure(command(tool, path, args), args.timeout)
            m["load_before"] = load
            runs.setdefault(tool, []).append(m)
    for tool in runnable:
        done = runs[tool]
        if done[-1]["exit"] != 0:
            m = done[-1]
            best = {"error": f"exit {m['exit']}: {m['stderr'].strip().splitlines()[-1:] or ''}", **m}
        else:
            best = dict(min(done, key=lambda m: m["wall_s"]))
            best["median_wall_s"] = statistics.median(m["wall_s"] for m in done)
            best["median_cpu_s"] = statistics.median(m["cpu_s"] for m in done)
            best["runs"] = [{k: m[k] for k in ("wall_s", "cpu_s", "peak_mb", "load_before")} for m in done]
        if "error" not in best:
            info = {}
            for line in best["stdout"].splitlines()[::-1]:
                if line.startswith("{"):
                    info = json.loads(line)
                    break
            best["info"] = info
            counted = total
            if tool == "scapy" and info.get("sample"):
                counted = min(info["packets"], total)
            best["packets"] = counted
            best["pps"] = counted / best["wall_s"]
            best["extrapolated_wall_s"] = total / best["pps"]
        best.pop("stdout", None)
        results[tool] = best
        if "error" in best:
            print(f"{tool:9s} failed: {best['error']}", flush=True)
        else:
            print(f"{tool:9s} {best['wall_s']:8.2f} s (median {best['median_wall_s']:.2f} s; cpu {best['cpu_s']:.2f} s) "
                  f"{best['pps']:12,.0f} pkt/s  peak {best['peak_mb']:8.1f} MB"
                  f"  (ru_maxrss {best['maxrss_mb']:.1f} MB; load before {best['load_before']:.2f})", flush=True)

    base = results.get("commpath", {})
    tshark = results.get("tshark", {})
    print()
    print("| tool | wall s (best) | wall s (median) | CPU s | in-process s | packets/s | peak MB | commpath speed-up "
          "| memory vs commpath |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for tool, r in results.items():
        if "error" in r:
            print(f"| {tool} | – | – | – | – | – | – | not run: {r['error']} | |")
            continue
        speed = f"{base['pps'] / r['pps']:.1f}×" if "pps" in base else "–"
        mem = f"{r['peak_mb'] / base['peak_mb']:.2f}×" if "peak_mb" in base else "–"
        note = f" (first {r['packets']:,} packets, extrapolated)" if tool == "scapy" and r["packets"] < total else ""
        inproc = f"{r['info']['seconds']:.2f}" if "seconds" in r.get("info", {}) else "–"
        print(f"| {tool}{note} | {r['wall_s']:.2f} | {r['median_wall_s']:.2f} | {r['cpu_s']:.2f} | {inproc} | {r['pps']:,.0f} | {r['peak_mb']:.0f} | {speed} | {mem} |")
    if "wall_s" in tshark:
        print()
        for tool in COMMPATH_TOOLS:
            r = results.get(tool, {})
            if "wall_s" in r:
                print(f"tshark conv table / {tool}: {tshark['wall_s'] / r['wall_s']:.1f}× by wall time, "
                      f"{tshark['cpu_s'] / r['cpu_s']:.1f}× by CPU time")
    hs = results.get("commpath-handshakes", {})
    if "wall_s" in hs and "wall_s" in base:
        def pct(a, b):
            return f"{100 * (a / b - 1):+.0f}%"
        print(f"handshake analysis on top of commpath.read (target ≤ +20%): wall {pct(hs['wall_s'], base['wall_s'])} "
              f"best / {pct(hs['median_wall_s'], base['median_wall_s'])} median, CPU "
              f"{pct(hs['cpu_s'], base['cpu_s'])} best / {pct(hs['median_cpu_s'], base['median_cpu_s'])} median "
              f"({len(hs['runs'])} interleaved runs each)")
    if args.json:
        Path(args.json).write_text(json.dumps({"capture": str(path), "packets": total, "size_mb": size_mb,
                                               "results": results}, indent=2, default=str) + "\n")
    if args.memory_target_mb and "peak_mb" in base:
        ok = base["peak_mb"] <= args.memory_target_mb
        print(f"\ncommpath peak memory {base['peak_mb']:.0f} MB on {size_mb:.0f} MB: "
              f"{'within' if ok else 'OVER'} the {args.memory_target_mb:.0f} MB target")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

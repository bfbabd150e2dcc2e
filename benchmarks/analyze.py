"""Benchmark the jobs users run, `commpath analyze` and `commpath report`, against tshark and nfstream.

Whole processes, round robin (each round runs every tool once, so drifting load on a shared
machine hits all alike), median and best of the rounds, peak memory of the process tree (run.py's
``measure``). ``commpath analyze FILE --out DIR`` and ``commpath report FILE --format html
--format json -o FILE`` run without and with an inventory (``--inventory``; the default is the
benchmark capture's cluster, ``bench-inventory.yaml``); ``analyze/1-process`` is ``analyze --workers 0``,
everything in the command's process (the capture not decoded beside the imports, ``commpath._ahead``).

Then, in one fresh interpreter per variant, the share of each stage: imports, decode (the read
with the handshake analysis consuming the streams), handshakes (the analyzer's tables), classify,
check, and each output (the four Parquet files, report.json, report.html), with the CPU time
per connection of classify + check + outputs and the memory the process grew after decoding.
The stages are timed by wrapping the functions the pipeline calls; nothing else changes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import child_json, command, measure, prepare  # noqa: E402

COMMPATH = ("analyze", "analyze+inventory", "report", "report+inventory", "analyze/1-process")
#: exit 1 (findings at or above --fail-on) and 3 (inconclusive) are finished runs too
DONE = (0, 1, 3)


def commpath_command(tool: str, path: Path, inventory: Path, out: Path) -> list[str]:
    py = [sys.executable, "-m", "commpath.cli"]
    inv = ["--inventory", str(inventory)] if tool.endswith("+inventory") else []
    if tool == "analyze/1-process":      # --workers 0: the capture not decoded beside the imports (commpath._ahead)
        return [*py, "analyze", str(path), "--out", str(out / "one-process"), "-q", "--workers", "0"]
    if tool.startswith("analyze"):
        return [*py, "analyze", str(path), *inv, "--out", str(out / tool), "-q"]
    return [*py, "report", str(path), *inv, "--format", "html", "--format", "json", "-o", str(out / tool / "report"),
            "-q"]


def rounds(tools: list[str], path: Path, inventory: Path, runs: int, timeout: float) -> dict[str, list[dict]]:
    """Every tool once per round, ``runs`` rounds; a tool that fails is dropped from later rounds."""
    done: dict[str, list[dict]] = {t: [] for t in tools}
    with tempfile.TemporaryDirectory(prefix="commpath-bench-") as tmp:
        args = argparse.Namespace(scapy_sample=0)
        for i in range(runs):
            for tool in tools:
                if done[tool] and done[tool][-1]["exit"] not in DONE:
                    continue
                cmd = (commpath_command(tool, path, inventory, Path(tmp)) if tool in COMMPATH
                       else command(tool, path, args))
                m = measure(cmd, timeout)
                m["load_before"] = os.getloadavg()[0]
                m.pop("stdout", None)
                done[tool].append(m)
                print(f"round {i + 1} {tool:20s} {m['wall_s']:7.2f} s  cpu {m['cpu_s']:6.2f} s (system {m['sys_s']:5.2f})"
                      f"  peak {m['peak_mb']:7.1f} MB"
                      f"  exit {m['exit']}", flush=True)
    return done


def summary(done: dict[str, list[dict]], packets: int) -> dict[str, dict]:
    out = {}
    for tool, ms in done.items():
        ok = [m for m in ms if m["exit"] in DONE or (tool not in COMMPATH and m["exit"] == 0)]
        if not ok:
            out[tool] = {"error": ms[-1]["stderr"].strip().splitlines()[-1:] if ms else "not run"}
            continue
        out[tool] = {"median_wall_s": statistics.median(m["wall_s"] for m in ok),
                     "best_wall_s": min(m["wall_s"] for m in ok),
                     "median_cpu_s": statistics.median(m["cpu_s"] for m in ok),
                     # system time apart: on a VM whose untouched memory is slow to touch, writing report.json
                     # and fresh pages are seconds of it (benchmarks/RESULTS.md, 2026-12-07 05:34)
                     "median_sys_s": statistics.median(m["sys_s"] for m in ok),
                     "peak_mb": max(m["peak_mb"] for m in ok), "rounds": len(ok),
                     "pps": packets / statistics.median(m["wall_s"] for m in ok)}
    return out


def print_table(res: dict[str, dict]) -> None:
    ref = {k: res.get(k, {}).get("median_wall_s") for k in ("tshark", "nfstream")}
    print("\n| command | wall s (median) | wall s (best) | CPU s (median) | of which system s | packets/s | peak MB "
          "| tshark ÷ it | nfstream ÷ it |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for tool, r in res.items():
        if "error" in r:
            print(f"| {tool} | failed: {r['error']} | | | | | | | |")
            continue
        ratios = [f"{ref[k] / r['median_wall_s']:.1f}×" if ref[k] else "–" for k in ("tshark", "nfstream")]
        print(f"| {tool} | {r['median_wall_s']:.2f} | {r['best_wall_s']:.2f} | {r['median_cpu_s']:.2f} | {r['median_sys_s']:.2f} | "
              f"{r['pps']:,.0f} | {r['peak_mb']:.0f} | {ratios[0]} | {ratios[1]} |")


def stages(path: Path, inventory: Path | None, report: bool, repeat: int) -> list[dict]:
    """Stage times of ``repeat`` fresh interpreters (``_stages.py``)."""
    runs = []
    for _ in range(repeat):
        cmd = [sys.executable, str(HERE / "_stages.py"), str(path)]
        if inventory:
            cmd += ["--inventory", str(inventory)]
        if report:
            cmd.append("--html")
        runs.append(child_json(cmd))
    return runs


def print_stages(label: str, runs: list[dict]) -> dict:
    names = list(runs[0]["stages"])
    med = {n: statistics.median(r["stages"][n]["cpu_s"] for r in runs) for n in names}
    wall = {n: statistics.median(r["stages"][n]["wall_s"] for r in runs) for n in names}
    total = sum(wall.values())
    flows = runs[0]["flows"]
    print(f"\nstages of {label} (median of {len(runs)} fresh interpreters; {flows:,} connections, "
          f"{runs[0]['findings']} findings)")
    print("| stage | wall s | CPU s | share of wall | peak RSS after (MB) |")
    print("|---|---:|---:|---:|---:|")
    for n in names:
        rss = statistics.median(r["stages"][n]["maxrss_mb"] for r in runs)
        print(f"| {n} | {wall[n]:.3f} | {med[n]:.3f} | {100 * wall[n] / total:.0f} % | {rss:.0f} |")
    after = [n for n in names if n not in ("imports", "decode", "handshakes")]
    cpu_after = sum(med[n] for n in after)
    grown = statistics.median(r["stages"][names[-1]]["maxrss_mb"] - r["stages"]["handshakes"]["maxrss_mb"]
                              for r in runs)
    print(f"classify + check + outputs: {cpu_after:.3f} s CPU = {1e6 * cpu_after / max(flows, 1):.2f} µs per connection "
          f"(target ≤ 1 µs); peak grew {grown:.0f} MB after decoding = {1e6 * grown / max(flows, 1):.0f} B per "
          f"connection (target ≤ 500 B beyond the output)")
    return {"cpu_s": med, "wall_s": wall, "per_connection_us": 1e6 * cpu_after / max(flows, 1),
            "grown_bytes_per_connection": 1e6 * grown / max(flows, 1), "flows": flows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture", nargs="?", default=str(HERE / "data" / "bench.pcap"))
    ap.add_argument("--inventory", default=str(HERE / "bench-inventory.yaml"))
    ap.add_argument("--tools", default=",".join([*COMMPATH, "tshark", "nfstream"]))
    ap.add_argument("--runs", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--stage-runs", type=int, default=3, help="fresh interpreters per stage profile (0: none)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    path, inventory = Path(args.capture).resolve(), Path(args.inventory).resolve()
    started = prepare("analyze", path, args.tools.split(","), COMMPATH)
    if started is None:
        return 2
    tools, packets = started
    result = {"capture": str(path), "packets": packets}
    if args.runs:
        res = summary(rounds(tools, path, inventory, args.runs, args.timeout), packets)
        print_table(res)
        result["commands"] = res
    if args.stage_runs:
        result["stages"] = {}
        for label, inv, html in (("analyze", None, False), ("analyze --inventory", inventory, False),
                                 ("report --inventory (html + json)", inventory, True)):
            result["stages"][label] = print_stages(label, stages(path, inv, html, args.stage_runs))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

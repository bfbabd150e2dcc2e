"""Benchmark `commpath report --format html --format json` against its peers, and its stages.

    python benchmarks/report.py [CAPTURE] [--runs 3] [--stage-runs 1]

Whole processes, round robin (each round runs every command once, so drifting load on a shared
machine hits all alike): ``commpath report --format html --format json`` without and with the
capture's inventory (``bench-inventory.yaml``), ``commpath report --format md``, ``commpath
analyze``, tshark's conversation table and nfstream; median CPU (user + system) and wall time,
peak memory of the process tree (run.py's ``measure``), and each report's ratio to tshark and
nfstream by CPU and by wall. ``--baseline DIR`` (a copy of another commit's tree, e.g. ``git
archive COMMIT commpath | tar -x -C DIR``) adds the two reports run from that tree to every round,
for a before/after under the same load. Then, in one fresh interpreter per report variant (``--child``),
the CPU time of each stage: imports, decode, handshakes, classify, check, report.json, and
inside report.html the import of the figure modules and each figure's drawing (for a baseline
still drawing with matplotlib: its import, each figure and their SVG export) and the HTML text;
report.md. Stage times are exclusive (a stage inside another is not counted
twice; ``_stages.py``'s wrappers). Exit 1 (findings) and 3 (inconclusive) are finished runs.
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

#: commpath commands of this benchmark: name -> (arguments after the capture, uses the inventory)
COMMANDS = {
    "report html+json": (["--format", "html", "--format", "json"], False),
    "report html+json --inventory": (["--format", "html", "--format", "json"], True),
    "report md --inventory": (["--format", "md"], True),
    "analyze --inventory": ([], True),
}
PEERS = ("tshark", "nfstream")
DONE = (0, 1, 3)


def commpath_command(name: str, capture: Path, inventory: Path, out: Path) -> list[str]:
    extra, with_inventory = COMMANDS[name]
    inv = ["--inventory", str(inventory)] if with_inventory else []
    folder = out / name.replace(" ", "_")
    py = [sys.executable, "-m", "commpath.cli"]
    if name.startswith("analyze"):
        return [*py, "analyze", str(capture), *inv, "--out", str(folder), "-q"]
    return [*py, "report", str(capture), *inv, *extra, "-o", str(folder / "report"), "-q"]


def at_baseline(cmd: list[str], baseline: Path) -> list[str]:
    """``cmd`` run with the commpath package of the ``baseline`` tree (python -m puts the working
    folder first on the path, so it runs there)."""
    return ["env", "-C", str(baseline), f"PYTHONPATH={baseline}", *cmd]


def rounds(names: list[str], capture: Path, inventory: Path, runs: int, timeout: float,
           baseline: Path | None = None) -> dict[str, list[dict]]:
    done: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="commpath-bench-report-") as tmp:
        for i in range(runs):
            for name in names:
                if done[name] and done[name][-1]["exit"] not in DONE:
                    continue
                plain = name.removesuffix(" @baseline")
                cmd = (commpath_command(plain, capture, inventory, Path(tmp)) if plain in COMMANDS
                       else command(name, capture, argparse.Namespace(scapy_sample=0)))
                if plain != name:
                    cmd = at_baseline(cmd, baseline)
                load = os.getloadavg()[0]
                m = measure(cmd, timeout)
                m["load_before"] = load
                m.pop("stdout", None)
                done[name].append(m)
                print(f"round {i + 1} {name:30s} wall {m['wall_s']:7.2f} s  cpu {m['cpu_s']:6.2f} s  "
                      f"peak {m['peak_mb']:7.1f} MB  exit {m['exit']}  load {load:.1f}", flush=True)
    return done


def summary(done: dict[str, list[dict]]) -> dict[str, dict]:
    out = {}
    for name, ms in done.items():
        ok = [m for m in ms if m["exit"] in DONE or (name.removesuffix(" @baseline") not in COMMANDS
                                                     and m["exit"] == 0)]
        if not ok:
            out[name] = {"error": (ms[-1]["stderr"].strip().splitlines() or ["failed"])[-1] if ms else "not run"}
            continue
        out[name] = {"median_wall_s": statistics.median(m["wall_s"] for m in ok),
                     "median_cpu_s": statistics.median(m["cpu_s"] for m in ok),
                     "peak_mb": max(m["peak_mb"] for m in ok), "rounds": len(ok),
                     "load": [round(m["load_before"], 1) for m in ok]}
    return out


def print_table(res: dict[str, dict]) -> None:
    def ratio(peer: str, r: dict, key: str) -> str:
        ref = res.get(peer, {}).get(key)
        return f"{ref / r[key]:.1f}×" if ref and r.get(key) else "–"
    print("\n| command | CPU s (median) | wall s (median) | peak MB | tshark ÷ it (CPU / wall) "
          "| nfstream ÷ it (CPU / wall) | load before |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, r in res.items():
        if "error" in r:
            print(f"| {name} | failed: {r['error']} | | | | | |")
            continue
        print(f"| {name} | {r['median_cpu_s']:.2f} | {r['median_wall_s']:.2f} | {r['peak_mb']:.0f} | "
              f"{ratio('tshark', r, 'median_cpu_s')} / {ratio('tshark', r, 'median_wall_s')} | "
              f"{ratio('nfstream', r, 'median_cpu_s')} / {ratio('nfstream', r, 'median_wall_s')} | "
              f"{', '.join(f'{x:.1f}' for x in r['load'])} |")
    tshark = res.get("tshark", {}).get("median_cpu_s")
    if tshark:
        print(f"\n10× tshark by CPU needs ≤ {tshark / 10:.2f} s; 5× nfstream needs ≤ "
              f"{res.get('nfstream', {}).get('median_cpu_s', float('nan')) / 5:.2f} s")


# ------------------------------------------------------------------------- stages, in a child

def _child(argv: list[str]) -> int:
    """One `report` in this interpreter with _stages.py's wrappers plus the HTML report's own pieces."""
    import _stages
    from _stages import _enter, _leave, timed

    import commpath.present.report as report
    render = report.render

    def render_timed(analysis, fmt, *a, **k):
        if fmt == "html" and "commpath.present.html" not in sys.modules:
            import importlib.util
            if importlib.util.find_spec("commpath.present._svg_figures"):   # figures written as SVG text
                _enter("report.html: import of html + SVG figures")
                try:
                    from commpath.present import _svg_charts, _svg_map, _svg_time, html  # noqa: F401
                finally:
                    _leave()
                for module, attr in ((_svg_map, "path_map_svg"), (_svg_charts, "check_matrix_svg"),
                                     (_svg_time, "timeline_svg"), (_svg_charts, "tls_svg"), (_svg_time, "certs_svg")):
                    timed(module, attr, f"report.html: figure {attr}")
            else:                                                           # a baseline drawing with matplotlib
                _enter("report.html: import of html + plots")
                try:
                    from commpath.present import html, plots  # noqa: F401
                finally:
                    _leave()
                for attr in ("path_map", "check_matrix", "timeline", "tls_overview", "cert_validity"):
                    timed(plots, attr, f"report.html: figure {attr} (draw)")
                timed(plots, "figure_svg", "report.html: figures' SVG")
        return render(analysis, fmt, *a, **k)
    report.render = render_timed
    sys.argv = [sys.argv[0], *argv]
    return _stages.main()


def stages(capture: Path, inventory: Path | None, fmt: list[str], repeat: int,
           baseline: Path | None = None) -> list[dict]:
    runs = []
    for _ in range(repeat):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(capture)]
        if inventory:
            cmd += ["--inventory", str(inventory)]
        cmd += [*fmt]
        if baseline:
            cmd = at_baseline(cmd, baseline)
        runs.append(child_json(cmd))
    return runs


def print_stages(label: str, runs: list[dict]) -> dict:
    names = list(dict.fromkeys(n for r in runs for n in r["stages"]))
    cpu = {n: statistics.median(r["stages"].get(n, {}).get("cpu_s", 0.0) for r in runs) for n in names}
    wall = {n: statistics.median(r["stages"].get(n, {}).get("wall_s", 0.0) for r in runs) for n in names}
    total = sum(cpu.values())
    print(f"\nstages of {label} (median of {len(runs)} fresh interpreters; {runs[0]['flows']:,} connections, "
          f"{runs[0]['findings']} findings; CPU {total:.2f} s)")
    print("| stage | CPU s | share of CPU | wall s |")
    print("|---|---:|---:|---:|")
    for n in names:
        print(f"| {n} | {cpu[n]:.3f} | {100 * cpu[n] / total:.0f} % | {wall[n]:.3f} |")
    html = sum(v for n, v in cpu.items() if n.startswith("report.html"))
    print(f"report.html in all: {html:.3f} s CPU ({100 * html / total:.0f} %)")
    return {"cpu_s": cpu, "wall_s": wall, "total_cpu_s": total, "report_html_cpu_s": html}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture", nargs="?", default=str(HERE / "data" / "bench.pcap"))
    ap.add_argument("--inventory", default=str(HERE / "bench-inventory.yaml"))
    ap.add_argument("--commands", default=",".join([*COMMANDS, *PEERS]), help="comma separated")
    ap.add_argument("--runs", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--stage-runs", type=int, default=1, help="fresh interpreters per stage table (0: none)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--baseline", type=Path, metavar="DIR", help="a tree whose commpath/ runs the reports too")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    capture, inventory = Path(args.capture).resolve(), Path(args.inventory).resolve()
    started = prepare("report", capture, args.commands.split(","), COMMANDS)
    if started is None:
        return 2
    names, packets = started
    baseline = args.baseline.resolve() if args.baseline else None
    if baseline:
        names += [f"{n} @baseline" for n in COMMANDS if n.startswith("report html") and n in names]
    result: dict = {"capture": str(capture), "packets": packets}
    if args.runs:
        result["commands"] = summary(rounds(names, capture, inventory, args.runs, args.timeout, baseline))
        print_table(result["commands"])
    if args.stage_runs:
        result["stages"] = {}
        for label, inv in (("report html+json", None), ("report html+json --inventory", inventory)):
            for tree in ([None, baseline] if baseline else [None]):
                name = label + (" @baseline" if tree else "")
                result["stages"][name] = print_stages(name, stages(capture, inv, ["--html"], args.stage_runs, tree))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One `commpath analyze` (or `report --format html --format json`) in this interpreter, timed per stage.

Prints one JSON line: {"stages": {name: {wall_s, cpu_s, maxrss_mb}}, "flows", "findings"}. Stage
times are exclusive (a stage called inside another is not counted twice); "other" is what the
wrapped functions do not cover (argument parsing, the pipeline's glue, summaries).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

STAGES: dict[str, dict] = {}
_stack: list[list] = []


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _enter(name: str) -> None:
    _stack.append([name, time.perf_counter(), time.process_time(), 0.0, 0.0])


def _leave() -> None:
    name, w0, c0, inner_w, inner_c = _stack.pop()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    s = STAGES.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "maxrss_mb": 0.0})
    s["wall_s"] += wall - inner_w
    s["cpu_s"] += cpu - inner_c
    s["maxrss_mb"] = _rss_mb()
    if _stack:
        _stack[-1][3] += wall
        _stack[-1][4] += cpu


def timed(obj, attr: str, name, skip_nested: bool = False) -> None:
    """Replace ``obj.attr`` by a wrapper timing it as stage ``name`` (or ``name(*args)``)."""
    fn = getattr(obj, attr, None)
    if fn is None:
        return

    def wrapper(*args, **kwargs):
        if skip_nested and _stack and _stack[-1][0] != "decode":
            return fn(*args, **kwargs)
        _enter(name(*args, **kwargs) if callable(name) else name)
        try:
            return fn(*args, **kwargs)
        finally:
            _leave()
    setattr(obj, attr, wrapper)


def _file_label(*args, **kwargs) -> str:
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, (str, Path)) and str(a).endswith(".parquet"):
            return Path(a).name
    return "parquet"


def _finding_count(analysis) -> int:
    """How many findings, without making their texts (``findings`` would build the whole DataFrame)."""
    if analysis is None:
        return 0
    compact = getattr(analysis, "finding_set", None)
    return len(compact) if compact is not None else len(analysis.findings)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("capture")
    ap.add_argument("--inventory")
    ap.add_argument("--html", action="store_true", help="report --format html --format json instead of analyze")
    args = ap.parse_args()
    w0, c0 = time.perf_counter(), time.process_time()
    import commpath.cli
    from _setup import set_up_as_the_command
    set_up_as_the_command()
    import commpath._pipeline as pipeline
    import commpath.decode.engine as engine
    STAGES["imports"] = {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0, "maxrss_mb": _rss_mb()}

    timed(engine, "read", "decode")
    timed(pipeline, "read", "decode")
    from commpath.decode import handshakes
    timed(handshakes.HandshakeAnalyzer, "result", "handshakes")
    for attr in ("classify_with_view", "_classify_merged"):
        timed(pipeline, attr, "classify")
    for attr in ("check_evaluate", "evaluate", "coverage"):    # the pipeline's name for check.evaluate, then and now
        timed(pipeline, attr, "check")
    import pandas
    import pyarrow.parquet as pq
    timed(pandas.DataFrame, "to_parquet", _file_label, skip_nested=True)
    timed(pq, "write_table", lambda table, where, *a, **k: _file_label(where), skip_nested=True)
    from commpath import _parquet
    if hasattr(_parquet, "ParquetFrames"):     # findings.parquet in batches, written beside report.json's
        timed(_parquet.ParquetFrames, "write", "findings.parquet")
    from commpath.present import report, report_json
    timed(report_json, "write_report_json", "report.json")
    timed(report, "render", lambda analysis, fmt, *a, **k: f"report.{fmt}")

    out = tempfile.mkdtemp(prefix="commpath-stages-")
    inv = ["--inventory", args.inventory] if args.inventory else []
    if args.html:
        argv = ["report", args.capture, *inv, "--format", "html", "--format", "json", "-o", f"{out}/report", "-q"]
    else:
        argv = ["analyze", args.capture, *inv, "--out", out, "-q"]
    seen = {}
    orig_open = pipeline.open

    def keep(*a, **k):
        seen["analysis"] = orig_open(*a, **k)
        return seen["analysis"]
    pipeline.open = keep
    try:
        code = commpath.cli.main(argv)
        total_w, total_c = time.perf_counter() - w0, time.process_time() - c0
    finally:        # a million-connection run leaves 2 GB of outputs, and the disk is shared
        shutil.rmtree(out, ignore_errors=True)
    STAGES["other"] = {"wall_s": total_w - sum(s["wall_s"] for s in STAGES.values()),
                       "cpu_s": total_c - sum(s["cpu_s"] for s in STAGES.values()), "maxrss_mb": _rss_mb()}
    a = seen.get("analysis")
    print(json.dumps({"stages": STAGES, "exit": code, "flows": len(a.flows) if a is not None else 0,
                      "findings": _finding_count(a)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`commpath report --merge/--no-merge` decides whether a multi-host run is one picture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[1] / "captures" / "default"


def _report(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / ("merged" if "--no-merge" not in extra else "separate")
    proc = subprocess.run([sys.executable, "-m", "commpath", "report", str(RUN), "--inventory",
                           str(RUN / "inventory.yaml"), "--format", "json", "-o", str(out), *extra],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1, 3), proc.stderr
    assert "Traceback" not in proc.stderr
    written = out if out.exists() else out.with_suffix(".json")   # one format: -o names the file itself
    return json.loads(written.read_text())


def test_no_merge_keeps_each_vantage_point(tmp_path):
    merged = _report(tmp_path)
    separate = _report(tmp_path, "--no-merge")
    hosts = {c["host"] for c in merged["captures"]}
    assert len(hosts) == 3
    assert "clock_offsets" in merged and "clock_offsets" not in separate
    assert len(separate["flows"]) > len(merged["flows"])
    seen_twice = [f for f in merged["flows"] if len(f.get("vantage_points", [])) > 1]
    assert seen_twice, "some connections are seen from both ends"
    assert len(separate["flows"]) == sum(len(f.get("vantage_points") or [0]) for f in merged["flows"])

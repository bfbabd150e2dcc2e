"""report.json (schema ``commpath.report/v1``) exactly as the interface spec lays it out."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

SCHEMA = "commpath.report/v1"
CAPTURE_KEYS = ["file", "host", "role", "packets", "first_ts", "last_ts", "warnings"]
PATH_KEYS = ["id", "observed", "flows", "verdict"]
FLOW_KEYS = ["flow_id", "capture", "first_frame", "ts_start", "ts_end", "src_ip", "src_port", "dst_ip",
             "dst_port", "transport", "app_protocol", "path", "src_role", "dst_role", "packets", "bytes",
             "tls_version", "sni", "alpn", "cipher", "server_cert_fingerprints", "client_cert",
             "server_cert_verified"]
VANTAGE_KEYS = ["host", "capture", "flow_id", "first_frame", "ts_start"]
OFFSET_KEYS = ["host", "offset_s", "reference", "connections", "method", "spread_s"]
LIST_KEYS = {"warnings", "server_cert_fingerprints", "flow_ids", "frames"}


def _value(v, key: str | None = None):
    """A cell as JSON: NA → null, numpy scalars → Python, arrays → lists."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_value(x) for x in v]
    if v is None:
        return [] if key in LIST_KEYS and key not in ("server_cert_fingerprints",) else None
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(v) else float(v)
    try:
        if pd.isna(v):
            return [] if key in LIST_KEYS and key not in ("server_cert_fingerprints",) else None
    except (TypeError, ValueError):
        pass
    return v if isinstance(v, (int, str)) else str(v)


def _records(df: pd.DataFrame, keys: list[str]) -> list[dict]:
    cols = {k: (df[k].astype(object).tolist() if k in df else [None] * len(df)) for k in keys}
    return [{k: _value(cols[k][i], k) for k in keys} for i in range(len(df))]


def build_report(analysis) -> dict:
    """The report as a dict: captures, paths, flows and findings of ``analysis``."""
    paths = _records(analysis.paths, PATH_KEYS + (["needs"] if "needs" in analysis.paths else []))
    for p in paths:
        if p.get("needs") is None:
            p.pop("needs", None)
    findings = []
    for f in _records(analysis.findings, ["check", "severity", "path", "flow_ids", "message", "remediation",
                                          "capture", "frames", "display_filter", "reference", "fingerprint",
                                          "count"]):
        findings.append({
            "check": f["check"], "severity": f["severity"], "path": f["path"], "flow_ids": f["flow_ids"],
            "message": f["message"], "remediation": f["remediation"],
            "evidence": {"capture": f["capture"], "frames": f["frames"], "display_filter": f["display_filter"]},
            "reference": f["reference"], "fingerprint": f["fingerprint"], "count": f["count"],
        })
    flows = _records(analysis.flows, FLOW_KEYS)
    report = {
        "schema": SCHEMA,
        "captures": _records(analysis.captures, CAPTURE_KEYS),
        "paths": paths,
        "flows": flows,
        "findings": findings,
    }
    # extensions of a multi-host run (several vantage points merged into one flow per connection)
    if "vantage_points" in analysis.flows:
        for flow, vps in zip(flows, analysis.flows["vantage_points"]):
            flow["vantage_points"] = [{k: _value(vp.get(k)) for k in VANTAGE_KEYS} for vp in vps] \
                if isinstance(vps, (list, tuple)) else []
    offsets = getattr(analysis, "clock_offsets", None)
    if offsets is not None and len(offsets):
        report["clock_offsets"] = _records(offsets, OFFSET_KEYS)
    return report


def write_report_json(analysis, path: str | Path) -> Path:
    """Write :func:`build_report` as indented JSON to ``path``."""
    path = Path(path)
    try:
        path.write_text(json.dumps(build_report(analysis), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise InputError(path, f"cannot write: {exc.strerror or exc}") from None
    return path

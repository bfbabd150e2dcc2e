"""report.json (schema ``commpath.report/v1``) exactly as the interface spec lays it out.

The flow records, one per connection, are written column-wise: each column becomes JSON text in
Arrow compute kernels and the records are joined there, so no Python object is made per
connection or per cell (the json module took 1 s for 20,000 flows). The small sections (captures,
paths, findings, coverage) go through the json module. The text is the same, byte for byte, as
``json.dumps(report, indent=2, ensure_ascii=False)``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import InputError

SCHEMA = "commpath.report/v1"
CAPTURE_KEYS = ["file", "host", "role", "packets", "first_ts", "last_ts", "warnings"]
PATH_KEYS = ["id", "observed", "flows", "verdict"]
FLOW_KEYS = ["flow_id", "capture", "first_frame", "ts_start", "ts_end", "src_ip", "src_port", "dst_ip",
             "dst_port", "transport", "app_protocol", "path", "src_role", "dst_role", "packets", "bytes",
             "tls_version", "sni", "alpn", "cipher", "server_cert_fingerprints", "client_cert",
             "server_cert_verified"]
FINDING_KEYS = ["check", "severity", "path", "flow_ids", "message", "remediation", "capture", "frames",
                "display_filter", "reference", "fingerprint", "count"]
VANTAGE_KEYS = ["host", "capture", "flow_id", "first_frame", "ts_start"]
OFFSET_KEYS = ["host", "offset_s", "reference", "connections", "method", "spread_s"]
#: list cells written as [] when missing (server_cert_fingerprints stays null: no TLS facts)
LIST_KEYS = {"warnings", "flow_ids", "frames"}
#: where the flow records go in the skeleton before they are spliced in
_FLOWS_MARK = "\x00commpath-flows\x00"


def _value(v, key: str | None = None):
    """A cell as JSON: NA → null, numpy scalars → Python, arrays → lists."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_value(x) for x in v]
    if v is None:
        return [] if key in LIST_KEYS else None
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(v) else float(v)
    import pandas as pd
    try:
        if pd.isna(v):
            return [] if key in LIST_KEYS else None
    except (TypeError, ValueError):
        pass
    return v if isinstance(v, (int, str)) else str(v)


def _records(df, keys: list[str]) -> list[dict]:
    cols = {k: (df[k].astype(object).tolist() if k in df else [None] * len(df)) for k in keys}
    return [{k: _value(cols[k][i], k) for k in keys} for i in range(len(df))]


def _findings(analysis) -> list[dict]:
    return [{"check": f["check"], "severity": f["severity"], "path": f["path"], "flow_ids": f["flow_ids"],
             "message": f["message"], "remediation": f["remediation"],
             "evidence": {"capture": f["capture"], "frames": f["frames"], "display_filter": f["display_filter"]},
             "reference": f["reference"], "fingerprint": f["fingerprint"], "count": f["count"]}
            for f in _records(analysis.findings, FINDING_KEYS)]


def _skeleton(analysis, flows) -> dict:
    paths = _records(analysis.paths, PATH_KEYS + (["needs"] if "needs" in analysis.paths else []))
    for p in paths:
        if p.get("needs") is None:
            p.pop("needs", None)
    report = {"schema": SCHEMA, "captures": _records(analysis.captures, CAPTURE_KEYS), "paths": paths,
              "flows": flows, "findings": _findings(analysis)}
    offsets = getattr(analysis, "clock_offsets", None)
    if offsets is not None and len(offsets):
        report["clock_offsets"] = _records(offsets, OFFSET_KEYS)
    # extensions: the run's verdict and the evidence it had (spec section 6)
    if getattr(analysis, "coverage", None):
        report["verdict"] = analysis.verdict
        report["coverage"] = analysis.coverage
    return report


def build_report(analysis) -> dict:
    """The report as a dict: captures, paths, flows and findings of ``analysis``."""
    return json.loads(report_text(analysis))


def report_text(analysis) -> str:
    """report.json's text: ``json.dumps(report, indent=2, ensure_ascii=False)`` and a newline."""
    from ._json_columns import flow_records
    flows = analysis.flows
    if len(flows) == 0:
        return json.dumps(_skeleton(analysis, []), indent=2, ensure_ascii=False) + "\n"
    text = json.dumps(_skeleton(analysis, _FLOWS_MARK), indent=2, ensure_ascii=False)
    records = flow_records(flows, FLOW_KEYS, VANTAGE_KEYS)
    head, _, tail = text.partition(json.dumps(_FLOWS_MARK))
    return "".join((head, "[\n", records, "\n  ]", tail, "\n"))


def write_report_json(analysis, path: str | Path) -> Path:
    """Write :func:`report_text` to ``path``."""
    path = Path(path)
    try:
        with path.open("w", encoding="utf-8") as fh:
            fh.write(report_text(analysis))
    except OSError as exc:
        raise InputError(path, f"cannot write: {exc.strerror or exc}") from None
    return path


__all__ = ["SCHEMA", "build_report", "report_text", "write_report_json"]

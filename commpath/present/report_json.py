"""report.json (schema ``commpath.report/v1``) exactly as the interface spec lays it out.

The flow and finding records are written column-wise, in batches: each column becomes JSON text
in Arrow compute kernels and the records are joined there, so no Python object is made per
connection or per cell (the json module took 1 s for 20,000 flows), and the file is written batch
by batch. The small sections (captures, paths, coverage) go through the json module. The text is the same, byte for byte, as
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
VANTAGE_KEYS = ["host", "capture", "flow_id", "first_frame", "ts_start"]
OFFSET_KEYS = ["host", "offset_s", "reference", "connections", "method", "spread_s"]
#: list cells written as [] when missing (server_cert_fingerprints stays null: no TLS facts)
LIST_KEYS = {"warnings", "flow_ids", "frames"}
#: where the flow and finding records go in the skeleton before they are spliced in
_MARKS = {"flows": "\x00commpath-flows\x00", "findings": "\x00commpath-findings\x00"}


def _value(v, key: str | None = None):
    """A cell as JSON: NA → null, numpy scalars → Python, arrays → lists."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _value(x) for k, x in v.items()}
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


def _skeleton(analysis, flows, findings) -> dict:
    paths = _records(analysis.paths, PATH_KEYS + [k for k in ("needs", "evidence") if k in analysis.paths])
    for p in paths:
        if p.get("needs") is None:
            p.pop("needs", None)
        if "evidence" in p and not isinstance(p["evidence"], list):
            p["evidence"] = []
    report = {"schema": SCHEMA, "captures": _records(analysis.captures, CAPTURE_KEYS), "paths": paths,
              "flows": flows, "findings": findings}
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


def report_chunks(analysis, on_findings=None, vantage=None):
    """report.json piece by piece (text, or UTF-8 buffers of records): memory holds one batch.
    ``on_findings(batch)`` is called with each batch of findings as it is written (another writer
    then reads the findings without their texts being made twice). ``vantage``: the flows' vantage
    points as ``_json_columns.vantage_arrow_of`` converts them, when the caller has them already."""
    from ._json_columns import finding_records, flow_records
    findings = _finding_set(analysis)
    made = {"flows": lambda: flow_records(analysis.flows, FLOW_KEYS, VANTAGE_KEYS, vantage),
            "findings": lambda: finding_records(_passed(findings.batches(), on_findings))}
    sections = {"flows": _MARKS["flows"] if len(analysis.flows) else [],
                "findings": _MARKS["findings"] if len(findings) else []}
    text = json.dumps(_skeleton(analysis, sections["flows"], sections["findings"]), indent=2, ensure_ascii=False)
    for key, mark in _MARKS.items():
        if not sections[key]:
            continue
        head, _, text = text.partition(json.dumps(mark))
        yield head + "[\n"
        yield from made[key]()
        yield "\n  ]"
    yield text + "\n"


def _passed(batches, on_batch):
    """``batches``, each handed to ``on_batch`` first (when given)."""
    for batch in batches:
        if on_batch is not None:
            on_batch(batch)
        yield batch


def _finding_set(analysis):
    """The analysis's findings as batches of rows (texts made a batch at a time where the check layer
    left them unmade)."""
    findings = getattr(analysis, "finding_set", None)
    if findings is None:
        from ..check import FindingSet
        findings = FindingSet.of(analysis.findings)
    return findings


def report_text(analysis) -> str:
    """report.json's text: ``json.dumps(report, indent=2, ensure_ascii=False)`` and a newline."""
    return "".join(c if isinstance(c, str) else c.to_pybytes().decode("utf-8") for c in report_chunks(analysis))


def write_report_json(analysis, path: str | Path, on_findings=None, vantage=None) -> Path:
    """Write :func:`report_chunks` to ``path``, one piece at a time."""
    path = Path(path)
    try:
        with path.open("wb") as fh:
            for chunk in report_chunks(analysis, on_findings, vantage):
                fh.write(chunk.encode("utf-8") if isinstance(chunk, str) else memoryview(chunk))
    except OSError as exc:
        raise InputError(path, f"cannot write: {exc.strerror or exc}") from None
    return path


__all__ = ["SCHEMA", "build_report", "report_chunks", "report_text", "write_report_json"]

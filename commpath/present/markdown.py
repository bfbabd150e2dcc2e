"""The Markdown path-compliance report, for pull requests and tickets.

Each path's section lists at most ``MAX_FINDINGS`` findings (of ``_html_path``, as the HTML report),
worst first, with the count of all of them: the rest are in report.json and findings.parquet. The
counts and the verdict tables read the findings' key columns only, and the texts are made only for
the findings shown, so the report's cost does not grow with every finding's text.
"""

from __future__ import annotations

import pandas as pd

from . import _catalog, _evidence, _model, _run_view, palette, requests_view
from ._html_path import MAX_FINDINGS

VERDICT_MARK = {"pass": "✅", "fail": "❌", "warn": "⚠️", "not-observable": "🔒", "not-observed": "➖",
                "inconclusive": "❔"}


def cell(value, missing: str = "") -> str:
    """Text safe inside a Markdown table cell and free of inline HTML (strings from the wire)."""
    text = _model.text(value, missing).replace("\r", " ").replace("\n", " ")
    for ch, rep in (("\\", "\\\\"), ("|", "\\|"), ("<", "&lt;"), (">", "&gt;"), ("`", "\\`"),
                    ("*", "\\*"), ("_", "\\_"), ("[", "\\["), ("]", "\\]")):
        text = text.replace(ch, rep)
    return text


def code(value) -> str:
    """Inline code for a value (display filters): backticks widened when the value holds some."""
    text = _model.text(value).replace("\n", " ")
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def build_markdown(analysis, fail_on: str = "high", title: str = "commpath path-compliance report") -> str:
    keys = _model.finding_keys(analysis)       # no finding's text is made for counts and tables
    paths = _model.path_table(analysis)
    results = _model.check_results(analysis)
    flows = _model.frame(analysis, "flows")
    t0, t1 = _model.capture_window(analysis)
    verdict = _run_view.run_verdict(analysis, fail_on)
    from .html import utc
    out = [f"# {cell(title)}", "",
           f"{len(_model.frame(analysis, 'captures'))} captures · {len(flows)} connections · {len(keys)} findings · "
           f"window {utc(t0, '?')} → {utc(t1, '?')}", "",
           f"**{verdict['verdict'].upper()}** — {cell(verdict['reason'])}", "",
           "## Evidence of this run", "",
           "| evidence | |", "|---|---|",
           *[f"| {cell(label)} | {cell(value)} |" for label, value in _run_view.coverage_rows(analysis)], "",
           "## Verdict per documented path", "",
           "| path | verdict | observed | flows | " + " | ".join(palette.SEVERITY_ORDER[::-1]) + " |",
           "|---|---|---|--:|" + "--:|" * len(palette.SEVERITY_ORDER)]
    for p in paths.to_dict("records"):
        sev = " | ".join(str(int(p[f"findings_{s}"]) or "") for s in palette.SEVERITY_ORDER[::-1])
        out.append(f"| {cell(p['id'])} | {VERDICT_MARK.get(p['verdict'], '')} {cell(p['verdict'])} | "
                   f"{'yes' if p['observed'] else 'no'} | {int(p['flows'])} | {sev} |")
    out += clock_offsets_lines(analysis)
    out += evidence_lines(analysis, paths)
    out += ["", "## Checks per path", "", "| path | check | result | findings |", "|---|---|---|--:|"]
    for r in results.to_dict("records"):
        if r["status"] == "not-observed":
            continue
        out.append(f"| {cell(r['path'])} | {cell(r['check'])} | {VERDICT_MARK.get(r['status'], '')} {cell(r['status'])} | "
                   f"{int(r['findings']) or ''} |")
    out += ["", "## Findings", ""]
    if not len(keys):
        out.append("No finding.")
    groups = _model.worst_first(keys)
    rows = _model.rows_at(analysis, [g[:MAX_FINDINGS] for g in groups.values()])
    for pid in _model.sorted_paths(keys["path"]) if len(keys) else []:
        out += [f"### {cell(pid)}", ""]
        mine = groups.get(pid, _model.NO_POSITIONS)
        for f in (rows[i] for i in mine[:MAX_FINDINGS]):
            frames = _model.as_list(f["frames"])
            shown = ", ".join(str(int(x)) for x in frames[:20]) + (" …" if len(frames) > 20 else "")
            mark = (f" — *suppressed until {cell(f.get('suppression_expires'))}: {cell(f.get('suppression_reason'))}*"
                    if bool(f.get("suppressed", False)) else "")
            controls = "; ".join(_model.control_label(c) for c in _model.controls_of(f["check"]))
            out += [f"- **{cell(f['severity'])}** {code(f['check'])} — {cell(f['message'])}{mark}",
                    f"  - evidence: {code(f['capture'])} frames {shown or '—'}",
                    f"  - Wireshark filter: {code(f['display_filter'])}" if _model.text(f["display_filter"]) else
                    "  - Wireshark filter: —",
                    *[f"  - {cell(e.get('source'))}: {cell(e.get('said'))} ({cell(e.get('where'))})"
                      for e in _evidence.evidence_entries(f.get("evidence_sources")) if e.get("source") != "wire"],
                    f"  - remediation: {cell(f['remediation'])}",
                    f"  - reference: <{_catalog.reference_url(_model.text(f['reference']))}>",
                    *([f"  - controls: {cell(controls)}"] if controls else [])]
        if len(mine) > MAX_FINDINGS:
            out += ["", f"*First {MAX_FINDINGS} of {len(mine)} findings shown, worst first; all of them are in "
                        "report.json and findings.parquet.*"]
        out.append("")
    out += requests_view.requests_markdown(analysis)
    return "\n".join(out).rstrip() + "\n"


def evidence_lines(analysis, paths) -> list[str]:
    """What each evidence source said about each observed or judged path, side by side."""
    sources = _evidence.sources_used(analysis)
    if not sources:
        return []
    rows = []
    for p in paths.to_dict("records"):
        said = _evidence.path_evidence(analysis, str(p["id"]))
        if p["verdict"] == "not-observed" and set(said) <= {"wire"}:
            continue
        rows.append(f"| {cell(p['id'])} | " + " | ".join(
            cell("; ".join(_model.text(e.get("said")) for e in said.get(s, [])) or "—") for s in sources) + " |")
    if not rows:
        return []
    return ["", "## Evidence per path, by source", "", "| path | " + " | ".join(sources) + " |",
            "|---|" + "---|" * len(sources), *rows]


def clock_offsets_lines(analysis) -> list[str]:
    """The per-host clock offsets of a merged multi-host run (none for a single vantage point)."""
    off = getattr(analysis, "clock_offsets", None)
    if off is None or not len(off):
        return []
    flows = _model.frame(analysis, "flows")
    several = int(flows["hosts"].map(lambda h: len(_model.as_list(h)) > 1).sum()) if "hosts" in flows else 0
    out = ["", "## Clock offsets between hosts", "",
           f"{several} connections were seen on several hosts (one flow each, with its vantage points); "
           "offsets are estimated from their TCP handshakes.", "",
           "| host | offset (ms) | against | handshakes | method |", "|---|--:|---|--:|---|"]
    for r in off.itertuples():
        shown = "unknown" if pd.isna(r.offset_s) else f"{float(r.offset_s) * 1e3:+.3f}"
        out.append(f"| {cell(r.host)} | {shown} | {cell(r.reference)} | {int(r.connections)} | {cell(r.method)} |")
    return out

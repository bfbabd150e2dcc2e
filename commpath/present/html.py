"""The self-contained HTML path-compliance report (plots embedded, readable offline).

The pieces live in private modules: ``_html_style`` (CSS, script), ``_html_base`` (escaping,
badges), ``_html_path`` (one section per path); this module lays out the whole page.
"""

from __future__ import annotations

import base64
import datetime as _dt

import pandas as pd

from . import _catalog, _model, _run_view, _svg_figures, palette, requests_view
from ._html_base import esc, path_dot, severity_badge, slug, utc, verdict_badge
from ._html_path import (CONNECTION_COLUMNS, MAX_CONNECTIONS, MAX_FINDINGS, checks_table, connections_table,
                         finding_html, fixes_html, http_table, path_section)
from ._html_style import CSS, SCRIPT

# ---------------------------------------------------------------------------------------- sections

def verdict_table(analysis, table=None) -> str:
    """The verdict per documented path: id, verdict, observed, flows, findings per severity, reference
    (``table``: ``_model.path_table(analysis)`` when the caller has it already)."""
    table = _model.path_table(analysis) if table is None else table
    head = ("<tr><th>path</th><th>verdict</th><th>observed</th><th class=num>flows</th>"
            + "".join(f"<th class=num>{s}</th>" for s in palette.SEVERITY_ORDER[::-1])
            + "<th>document reference</th></tr>")
    rows = []
    for _, p in table.iterrows():
        info = _catalog.path_info(p["id"])
        anchor = (info.get("reference") or {}).get("anchor", "")
        ref = (f'<a href="{esc(_catalog.reference_url(anchor))}">#{esc(anchor)}</a>' if anchor else "")
        sev_cells = "".join(
            f'<td class="num findings-{s}">{int(p[f"findings_{s}"]) or ""}</td>' for s in palette.SEVERITY_ORDER[::-1])
        rows.append(
            f'<tr data-path="{esc(p["id"])}" data-verdict="{esc(p["verdict"])}">'
            f'<td class="path">{path_dot(p["id"])}<a href="#{slug(p["id"])}">{esc(p["id"])}</a></td>'
            f'<td class="verdict">{verdict_badge(p["verdict"])}</td>'
            f'<td class="observed">{"yes" if bool(p["observed"]) else "no"}</td>'
            f'<td class="num flows">{int(p["flows"])}</td>{sev_cells}<td>{ref}</td></tr>')
    return f'<table id="verdict-table" class="verdicts">{head}{"".join(rows)}</table>'


def figure_html(name: str, fig, caption: str, alt: str) -> str:
    """A figure as an embedded SVG image (sharp at any zoom and in print): ``fig`` is SVG text (the
    report's own figures) or a matplotlib figure (exported to SVG)."""
    if isinstance(fig, str):
        data = base64.b64encode(fig.encode("utf-8")).decode("ascii")
    else:
        from . import plots      # matplotlib only for a caller's own figure
        data = plots.figure_svg_base64(fig)
    return (f'<figure id="fig-{name}"><img class="plot" alt="{esc(alt)}" src="data:image/svg+xml;base64,{data}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def captures_table(analysis) -> str:
    caps = _model.frame(analysis, "captures")
    if not len(caps):
        return '<p class="note">no capture metadata</p>'
    rows = []
    for _, c in caps.iterrows():
        warnings = _model.as_list(c.get("warnings"))
        rows.append(f"<tr><td><code>{esc(c.get('file'))}</code></td><td>{esc(c.get('host'))}</td>"
                    f"<td>{esc(c.get('role'))}</td><td class=num>{esc(c.get('packets'))}</td>"
                    f"<td>{utc(c.get('first_ts'))}</td><td>{utc(c.get('last_ts'))}</td>"
                    f"<td>{'<br>'.join(esc(w) for w in warnings)}</td></tr>")
    return ('<table id="captures-table"><tr><th>capture</th><th>host</th><th>role</th><th class=num>packets</th>'
            f'<th>first packet</th><th>last packet</th><th>warnings</th></tr>{"".join(rows)}</table>')


def certs_table(analysis) -> str:
    certs = _model.cert_states(analysis)
    if not len(certs):
        return '<p class="note">No certificate was visible (TLS 1.3 encrypts them; give a key log to see them).</p>'
    used = _model.cert_paths(analysis)
    rows = []
    for _, c in certs.sort_values("not_after").iterrows():
        state = str(c["state"])
        rows.append(
            f'<tr data-fingerprint="{esc(c["fingerprint"])}"><td>{esc(c["subject"])}</td><td>{esc(c["issuer"])}</td>'
            f'<td>{esc(_model.text(c["not_before"])[:19])}</td><td>{esc(_model.text(c["not_after"])[:19])}</td>'
            f'<td style="color:{palette.CERT_STATE_COLORS.get(state, "#212121")};font-weight:600">{esc(state)}</td>'
            f'<td>{esc(", ".join(used.get(str(c["fingerprint"]), [])))}</td>'
            f'<td><code title="{esc(c["fingerprint"])}">{esc(_model.text(c["fingerprint"])[:16])}…</code></td></tr>')
    return ('<table id="certs-table"><tr><th>subject</th><th>issuer</th><th>not before (UTC)</th>'
            f'<th>not after (UTC)</th><th>at capture time</th><th>paths</th><th>sha256</th></tr>{"".join(rows)}</table>')


def clock_offsets_table(analysis) -> str:
    """Per-host clock offsets of a merged multi-host run ('' for a single vantage point)."""
    off = getattr(analysis, "clock_offsets", None)
    if not isinstance(off, pd.DataFrame) or not len(off):
        return ""

    def ms(v, sign: str = "+") -> str:
        return "" if v is None or pd.isna(v) else f"{float(v) * 1e3:{sign}.3f}"
    rows = "".join(f"<tr><td>{esc(r.host)}</td><td class=num>{esc(ms(r.offset_s), 'unknown')}</td><td>{esc(r.reference)}</td>"
                   f"<td class=num>{esc(r.connections)}</td><td>{esc(r.method)}</td><td class=num>{esc(ms(r.spread_s, ''))}</td></tr>"
                   for r in off.itertuples())
    return ('<h3>Clock offsets between hosts</h3><p class="note">Estimated from TCP handshakes seen on both hosts; '
            'each connection seen from several hosts is one flow with its vantage points.</p>'
            '<table id="clock-offsets"><tr><th>host</th><th class=num>offset (ms)</th><th>against</th>'
            f'<th class=num>handshakes</th><th>method</th><th class=num>spread (ms)</th></tr>{rows}</table>')


def _requests_section(analysis) -> list[str]:
    """The plot of decrypted requests per kind and path (nothing when no request was read)."""
    if not len(requests_view.request_counts(analysis)):
        return []
    out = ['<section id="requests"><h2>Requests per path</h2>',
           figure_html("requests", _svg_figures.requests_svg(analysis), "Requests read on the kubelet and proxy paths, per kind: decrypted with "
                       "the key log, hatched where they crossed the network as plain HTTP.", "requests per kind and path"),
           "</section>"]
    return out


def overall_line(analysis, fail_on: str) -> str:
    """The run verdict banner: FAIL, INCONCLUSIVE (never green) or PASS, with its reason."""
    verdict = _run_view.run_verdict(analysis, fail_on)
    v = verdict["verdict"]
    return (f'<span class="overall" id="overall" data-status="{esc(v)}" style="background:'
            f'{palette.VERDICT_BACKGROUNDS.get(v, "#F5F5F5")};color:{palette.verdict_color(v)};'
            f'border:1px solid {palette.verdict_color(v)}">{esc(v.upper())} — {esc(verdict["reason"])}</span>')


def coverage_box(analysis) -> str:
    """What evidence the run had, at the top of the report (a missing piece says what it costs)."""
    rows = "".join(f'<tr><th scope="row">{esc(label)}</th><td>{esc(value)}</td></tr>'
                   for label, value in _run_view.coverage_rows(analysis))
    return f'<table id="coverage" class="coverage"><caption>Evidence of this run</caption>{rows}</table>'


def verdict_chips(paths: pd.DataFrame) -> str:
    """How many documented paths got each verdict, as badges beside the overall line."""
    counts = paths["verdict"].astype(str).value_counts()
    chips = [f'<span class="chip" data-verdict="{esc(v)}">{verdict_badge(v)} <b>{int(counts[v])}</b></span>'
             for v in palette.VERDICT_ORDER if counts.get(v, 0)]
    return f'<span class="chips">{" ".join(chips)}</span>'


#: The report's sections before the per-path ones: (anchor, title).
SECTIONS = [("coverage", "Evidence of this run"), ("verdicts", "Verdict per documented path"), ("map", "Path map"),
            ("matrix", "Checks per path"), ("timeline", "Timeline"), ("tls", "TLS per path"),
            ("certificates", "Certificates"), ("captures", "Captures")]


def table_of_contents(path_ids) -> str:
    links = [f'<a href="#{a}">{esc(t)}</a>' for a, t in SECTIONS]
    links += [f'<a href="#{slug(p)}">{path_dot(p)}{esc(p)}</a>' for p in path_ids]
    return f'<nav class="toc" id="toc" aria-label="contents"><b>Contents</b>{"".join(links)}</nav>'


def build_html(analysis, title: str = "commpath path-compliance report", fail_on: str = "high") -> str:
    """The whole report as one HTML document (figures as base64 SVG images, no external resources)."""
    from .._version import __version__
    paths = _model.path_table(analysis)
    results = _model.check_results(analysis, paths=paths)
    flows = _model.frame(analysis, "flows")
    findings = _model.finding_keys(analysis)       # counted: their texts are made only where shown
    t0, t1 = _model.capture_window(analysis)
    n_caps = len(_model.frame(analysis, "captures"))
    policy = getattr(analysis, "policy", None)
    policy_name = getattr(policy, "name", None) or (policy.get("name") if isinstance(policy, dict) else policy)
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    figs = _svg_figures.report_figures(analysis, results=results)
    judged = [p for _, p in paths.iterrows()]
    toc = table_of_contents([p["id"] for p in judged])
    extra_paths = [p for p in _model.sorted_paths(flows["path"]) if p not in set(paths["id"])] if "path" in flows else []

    body = [
        '<header class="top">',
        f"<h1>{esc(title)}</h1>",
        f'<div class="meta">{n_caps} capture{"s" if n_caps != 1 else ""} · {len(flows)} connections · '
        f'{len(findings)} findings · window {utc(t0, "?")} → {utc(t1, "?")}<br>'
        f'policy {esc(policy_name, "default")} · fail on {esc(fail_on)} · generated {generated} by commpath {esc(__version__)}</div>',
        overall_line(analysis, fail_on), verdict_chips(paths), coverage_box(analysis),
        "</header>",
        toc,
        '<section id="verdicts"><h2>Verdict per documented path</h2>', verdict_table(analysis, paths), "</section>",
        '<section id="map"><h2>Path map</h2>',
        figure_html("path_map", figs["path_map"], "Roles as nodes (their addresses or host names below), "
                    "each documented path as an edge coloured by its verdict, labelled with its connection count. "
                    "Flows outside the control plane (path 'other') are left out.", "path map"),
        "</section>",
        '<section id="matrix"><h2>Checks per path</h2>',
        figure_html("check_matrix", figs["check_matrix"], "Each applicable check per documented path; the number "
                    "is the count of findings.", "path by check matrix"),
        "</section>",
        '<section id="timeline"><h2>Timeline</h2>',
        figure_html("timeline", figs["timeline"], "Connections as bars from their first to their last packet "
                    "(overlapping bars drawn as one, a mark where connections start); the number right of a row "
                    "counts every connection.",
                    "timeline of connections per path"),
        "</section>",
        '<section id="tls"><h2>TLS per path</h2>',
        figure_html("tls", figs["tls"], "Flow counts of negotiated TLS version, cipher suite and client-certificate "
                    "status per path.", "TLS versions, ciphers and client certificates per path"),
        "</section>",
        '<section id="certificates"><h2>Certificates</h2>',
        figure_html("certs", figs["certs"], f"Validity windows against the capture time; 'expiring' ends within "
                    f"{palette.EXPIRING_DAYS} days after the capture.", "certificate validity windows"),
        certs_table(analysis), "</section>",
        '<section id="captures"><h2>Captures</h2>', captures_table(analysis), clock_offsets_table(analysis),
        "</section>",
        *_requests_section(analysis),
    ]
    for p in judged:
        body.append(path_section(analysis, p, results))
    for pid in extra_paths:
        row = {"id": pid, "verdict": "not-observed" if pid != "other" else "other"}
        body.append(path_section(analysis, row, results))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
            + "\n".join(body) + f"</main><script>{SCRIPT}</script></body></html>\n")


def write_html(analysis, path, fail_on: str = "high") -> None:
    from pathlib import Path
    Path(path).write_text(build_html(analysis, fail_on=fail_on), encoding="utf-8")


def summary_html(analysis, fail_on: str = "high") -> str:
    """A compact HTML summary for Jupyter (``Analysis._repr_html_``): overall line and verdict table."""
    flows = _model.frame(analysis, "flows")
    findings = _model.finding_keys(analysis)
    n_caps = len(_model.frame(analysis, "captures"))
    style = ("<style>.commpath-summary table{border-collapse:collapse;font-size:12.5px}"
             ".commpath-summary th,.commpath-summary td{padding:3px 8px;border-bottom:1px solid #e0e0e0;text-align:left}"
             ".commpath-summary .badge{padding:0 6px;border-radius:8px;border:1px solid;font-size:11.5px}"
             ".commpath-summary .num{text-align:right}.commpath-summary .pathdot{display:inline-block;width:9px;"
             "height:9px;border-radius:50%;margin-right:5px}.commpath-summary a{text-decoration:none;color:inherit}</style>")
    return (f'<div class="commpath-summary">{style}<b>commpath analysis</b>: {n_caps} capture'
            f'{"s" if n_caps != 1 else ""}, {len(flows)} connections, {len(findings)} findings '
            f"{overall_line(analysis, fail_on)}{verdict_table(analysis)}</div>")


__all__ = ["CONNECTION_COLUMNS", "CSS", "MAX_CONNECTIONS", "MAX_FINDINGS", "SCRIPT", "build_html", "captures_table",
           "certs_table", "checks_table", "clock_offsets_table", "connections_table", "coverage_box", "esc",
           "figure_html", "finding_html", "fixes_html", "http_table", "overall_line", "path_dot", "path_section",
           "severity_badge", "slug", "summary_html", "table_of_contents", "utc", "verdict_badge", "verdict_chips",
           "verdict_table", "write_html"]

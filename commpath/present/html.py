"""The self-contained HTML path-compliance report (plots embedded, readable offline)."""

from __future__ import annotations

import datetime as _dt
from html import escape

import pandas as pd

from . import _catalog, _evidence, _model, palette, plots, requests_view

#: Connections listed per path section; the rest are counted and left to flows.parquet / report.json.
MAX_CONNECTIONS = 300

CSS = """
:root { --fg:#212121; --muted:#616161; --line:#E0E0E0; --bg:#FAFAFA; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", "DejaVu Sans", Roboto, Helvetica, Arial, sans-serif;
       color: var(--fg); margin: 0; background: #fff; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 64px; }
header.top { border-bottom: 3px solid #263238; padding-bottom: 12px; margin-bottom: 18px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 30px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 18px 0 8px; }
.meta { color: var(--muted); font-size: 13px; }
.overall { display: inline-block; margin-top: 8px; padding: 6px 12px; border-radius: 6px; font-weight: 600; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: #ECEFF1; font-weight: 600; position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:hover td { background: var(--bg); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
         border: 1px solid; white-space: nowrap; }
.sev { display: inline-block; padding: 0 6px; border-radius: 4px; color: #fff; font-size: 12px; font-weight: 600; }
.pathdot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 6px; vertical-align: middle; }
figure { margin: 8px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; }
section.path { border-left: 5px solid #90A4AE; padding-left: 16px; margin-top: 28px; }
.finding { border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; margin: 10px 0; background: #fff; }
.finding h4 { margin: 0 0 6px; font-size: 14.5px; }
.finding dl { display: grid; grid-template-columns: 140px 1fr; gap: 3px 10px; margin: 6px 0 0; }
.finding dt { color: var(--muted); }
.finding dd { margin: 0; }
code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; background: #F5F5F5;
       padding: 1px 4px; border-radius: 3px; word-break: break-all; }
button.copy { font-size: 11.5px; margin-left: 6px; padding: 1px 7px; cursor: pointer; border: 1px solid #B0BEC5;
              background: #fff; border-radius: 4px; }
.req { margin: 4px 0 8px 18px; padding: 0; }
blockquote { margin: 6px 0; padding: 4px 12px; border-left: 3px solid #B0BEC5; color: #455A64; font-style: italic; }
.note { color: var(--muted); font-size: 12.5px; }
.chips { margin-left: 14px; }
.scroll { max-width: 100%; }
table { table-layout: auto; }
td, th { overflow-wrap: anywhere; }
table.connections { font-size: 12px; table-layout: fixed; }
table.connections col.ep { width: 17%; }
table.connections col.ev { width: 8.5%; }
table.connections col.tls { width: 8%; }
table.connections col.sni { width: 11%; }
table.connections col.cipher { width: 14%; }
table.connections col.when { width: 7%; }
table.connections col.size { width: 7%; }
table.connections col.where { width: 11.5%; }
table.connections td { overflow-wrap: anywhere; word-break: normal; }
table.connections code { word-break: break-all; white-space: normal; }
td.bad { color: #C62828; font-weight: 600; }
td.good { color: #2E7D32; }
nav.toc { columns: 3; column-gap: 24px; margin: 8px 0 4px; font-size: 13.5px; }
nav.toc a { display: block; margin: 1px 0; }
nav.toc b { display: block; column-span: all; margin-bottom: 4px; }
ul.fix { margin: 4px 0 8px 18px; padding: 0; }
ul.fix li { margin: 3px 0; }
.controls { font-size: 12.5px; color: #37474F; }
figure img { width: 100%; }
@media print {
  body { font-size: 11px; }
  main { max-width: none; padding: 0; }
  nav.toc, button.copy { display: none; }
  th { position: static; }
  section.path, figure, .finding, table.verdicts, table.coverage { break-inside: avoid; }
  section.path { break-before: page; }
  a { color: inherit; text-decoration: none; }
  tr:hover td { background: none; }
  .overall, .badge, .sev { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
.chip { margin-right: 10px; font-size: 13px; }
table.coverage { width: auto; max-width: 100%; margin-top: 12px; }
table.coverage caption { text-align: left; font-weight: 600; padding-bottom: 4px; }
table.coverage th { position: static; background: none; font-weight: 500; color: var(--muted); white-space: nowrap; }
"""

SCRIPT = """
document.querySelectorAll('button.copy').forEach(function (b) {
  b.addEventListener('click', function () {
    var text = b.getAttribute('data-copy');
    if (navigator.clipboard && window.isSecureContext) { navigator.clipboard.writeText(text); }
    else { var t = document.createElement('textarea'); t.value = text; document.body.appendChild(t);
           t.select(); try { document.execCommand('copy'); } catch (e) {} document.body.removeChild(t); }
    b.textContent = 'copied';
  });
});
"""


def esc(value, missing: str = "") -> str:
    """Any value as escaped HTML text (every string from the wire passes through here)."""
    return escape(_model.text(value, missing), quote=True)


def verdict_badge(verdict: str) -> str:
    v = str(verdict)
    return (f'<span class="badge verdict-{esc(v)}" style="color:{palette.verdict_color(v)};'
            f'background:{palette.VERDICT_BACKGROUNDS.get(v, "#fff")};border-color:{palette.verdict_color(v)}">'
            f"{esc(v)}</span>")


def severity_badge(severity: str) -> str:
    s = str(severity)
    return f'<span class="sev sev-{esc(s)}" style="background:{palette.SEVERITY_COLORS.get(s, "#757575")}">{esc(s)}</span>'


def path_dot(path: str) -> str:
    return f'<span class="pathdot" style="background:{palette.path_color(path)}"></span>'


def utc(ts, missing: str = "") -> str:
    try:
        if ts is None or pd.isna(ts):
            return missing
        return pd.to_datetime(float(ts), unit="s", utc=True).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    except (TypeError, ValueError):
        return missing


def slug(path: str) -> str:
    return "path-" + "".join(ch if ch.isalnum() or ch == "-" else "_" for ch in str(path))


# ---------------------------------------------------------------------------------------- sections

def verdict_table(analysis) -> str:
    """The verdict per documented path: id, verdict, observed, flows, findings per severity, reference."""
    table = _model.path_table(analysis)
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
    """A figure as an embedded SVG image (sharp at any zoom and in print)."""
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


def checks_table(results: pd.DataFrame) -> str:
    if not len(results):
        return '<p class="note">No check judges this path.</p>'
    rows = []
    for _, r in results.iterrows():
        rows.append(f'<tr data-check="{esc(r["check"])}" data-status="{esc(r["status"])}"><td>{esc(r["check"])}</td>'
                    f'<td>{verdict_badge(r["status"])}</td><td class="num">{int(r["findings"]) or ""}</td>'
                    f'<td>{severity_badge(r["severity"]) if r["severity"] else ""}</td></tr>')
    return ('<table class="checks"><tr><th>check</th><th>result</th><th class=num>findings</th><th>worst severity</th></tr>'
            f'{"".join(rows)}</table>')


def finding_html(f) -> str:
    frames = _model.as_list(f.get("frames"))
    flow_ids = _model.as_list(f.get("flow_ids"))
    shown_frames = ", ".join(str(int(x)) for x in frames[:40]) + (f" … ({len(frames)} frames)" if len(frames) > 40 else "")
    shown_flows = ", ".join(str(int(x)) for x in flow_ids[:40]) + (f" … ({len(flow_ids)} flows)" if len(flow_ids) > 40 else "")
    dfilter = _model.text(f.get("display_filter"))
    reference = _model.text(f.get("reference"))
    ref_html = (f'<a href="{esc(_catalog.reference_url(reference))}">{esc(reference)}</a>' if reference else "")
    copy = (f'<code class="display-filter">{esc(dfilter)}</code>'
            f'<button class="copy" type="button" data-copy="{esc(dfilter)}">copy</button>') if dfilter else ""
    sev = str(f.get("severity"))
    listed = _model.controls_of(f.get("check"))
    controls = (f'<dt>controls</dt><dd class="controls">{"<br>".join(esc(_model.control_label(c)) for c in listed)}</dd>'
                if listed else "")
    suppressed = (f'<dt>suppressed</dt><dd class="suppressed">until {esc(f.get("suppression_expires"))}: '
                  f'{esc(f.get("suppression_reason"))} (not counted for the exit code)</dd>'
                  if bool(f.get("suppressed", False)) else "")
    return (f'<article class="finding" data-check="{esc(f.get("check"))}" data-severity="{esc(sev)}" '
            f'style="border-left:4px solid {palette.SEVERITY_COLORS.get(sev, "#757575")}">'
            f'<h4>{severity_badge(sev)} {esc(f.get("check"))}</h4>'
            f'<div class="message">{esc(f.get("message"))}</div><dl>'
            f'<dt>capture</dt><dd><code>{esc(f.get("capture"))}</code></dd>'
            f'<dt>frames</dt><dd class="frames">{esc(shown_frames)}</dd>'
            f'<dt>flows</dt><dd class="flow-ids">{esc(shown_flows)}</dd>'
            f'<dt>Wireshark filter</dt><dd>{copy}</dd>'
            f'<dt>remediation</dt><dd class="remediation">'
            f'{esc(_model.remediation_for(f.get("check"), f.get("path"), _model.text(f.get("remediation"))))}</dd>'
            f'<dt>reference</dt><dd>{ref_html}</dd>{controls}{suppressed}{_evidence.sources_html(f, esc)}</dl></article>')



#: (header, <col> class) of the connection tables: the evidence that decides the checks comes first.
CONNECTION_COLUMNS = [
    ("initiator", "ep"), ("responder", "ep"), ("client cert", "ev"), ("cert verified", "ev"), ("TLS", "tls"),
    ("SNI", "sni"), ("cipher", "cipher"), ("start (UTC)", "when"), ("packets / bytes", "size"),
    ("flow · capture · frame", "where"),
]


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


def _seen_on(r) -> str:
    hosts = _model.as_list(r.get("hosts")) if "hosts" in r else []
    return f' <span class="note">seen on {esc(", ".join(map(str, hosts)))}</span>' if len(hosts) > 1 else ""


def _evidence_cell(value, bad: bool, good: bool) -> str:
    cls = " class=bad" if bad else " class=good" if good else ""
    return f"<td{cls}>{esc(value, '—')}</td>"


def connections_table(flows: pd.DataFrame, limit: int = MAX_CONNECTIONS, analysis=None) -> str:
    """The connections of a path, evidence first, in a table that fits the page (long values wrap).

    Client-certificate and verification cells are red only where that answer fails a check of
    this path (a pod's empty client certificate is not: pods authenticate with tokens)."""
    if not len(flows):
        return '<p class="note">No connection on this path.</p>'
    shown = flows.sort_values("ts_start").head(limit)
    wants_client_cert = set(_model.client_cert_paths(analysis))
    verifies = {p for p, checks in _model.applicable_checks(analysis).items() if "server-cert-untrusted" in checks}
    cols = "".join(f'<col class="{cls}">' for _, cls in CONNECTION_COLUMNS)
    head = "".join(f"<th>{esc(label)}</th>" for label, _ in CONNECTION_COLUMNS)
    rows = []
    for _, r in shown.iterrows():
        path = _model.text(r.get("path"))
        cert = _model.text(r.get("client_cert"))
        verified = r.get("server_cert_verified")
        verified = None if verified is None or pd.isna(verified) else bool(verified)
        tls = " ".join(x for x in (_model.text(r.get("tls_version")), _model.text(r.get("alpn"))) if x)
        cells = [
            f'<td>{esc(r.get("src_ip"))}:{esc(r.get("src_port"))} <span class="note">{esc(r.get("src_role"))}</span></td>',
            f'<td>{esc(r.get("dst_ip"))}:{esc(r.get("dst_port"))} <span class="note">{esc(r.get("dst_role"))}</span></td>',
            _evidence_cell(cert, cert in ("empty", "inferred-absent") and path in wants_client_cert,
                           cert in ("presented", "inferred-presented")),
            _evidence_cell("" if verified is None else "yes" if verified else "no",
                           verified is False and path in verifies, verified is True),
            f'<td>{esc(r.get("transport"))}/{esc(r.get("app_protocol"))}{"<br>" + esc(tls) if tls else ""}</td>',
            f'<td class="sni">{esc(r.get("sni"))}</td>',
            f'<td class="cipher">{esc(r.get("cipher"))}</td>',
            f'<td>{utc(r.get("ts_start"))[11:].removesuffix(" UTC")}</td>',
            f'<td class="num">{esc(r.get("packets"))} / {esc(r.get("bytes"))}</td>',
            f'<td>{esc(r["flow_id"])} · <code>{esc(_short_capture(r.get("capture")))}</code> #{esc(r.get("first_frame"))}'
            f'{_seen_on(r)}</td>',
        ]
        rows.append(f'<tr data-flow="{esc(r["flow_id"])}">{"".join(cells)}</tr>')
    more = (f'<p class="note">First {limit} of {len(flows)} connections shown; all of them are in '
            f'report.json and flows.parquet.</p>') if len(flows) > limit else ""
    return (f'<table class="connections"><colgroup>{cols}</colgroup><tr>{head}</tr>{"".join(rows)}</table>{more}')


def _short_capture(capture) -> str:
    text = _model.text(capture)
    parts = text.replace("\\", "/").split("/")
    return "/".join(parts[-2:])


def http_table(analysis, flow_ids) -> str:
    http = getattr(analysis, "http", None)
    if not isinstance(http, pd.DataFrame) or not len(http) or "flow_id" not in http:
        return ""
    sub = http[http["flow_id"].isin(list(flow_ids))]
    if not len(sub):
        return ""
    rows = []
    for _, h in sub.head(MAX_CONNECTIONS).iterrows():
        rows.append(f"<tr><td class=num>{esc(h.get('flow_id'))}</td><td class=num>{esc(h.get('frame'))}</td>"
                    f"<td>{esc(h.get('method'))}</td><td>{esc(h.get('host'))}</td>"
                    f"<td class='http-path'><code>{esc(h.get('path'))}</code></td><td>{esc(h.get('status'))}</td>"
                    f"<td>{esc(h.get('auth'))}</td></tr>")
    more = (f'<p class="note">First {MAX_CONNECTIONS} of {len(sub)} HTTP messages shown.</p>'
            if len(sub) > MAX_CONNECTIONS else "")
    return (f"<h3>HTTP seen in clear text (<span class='http-count'>{len(sub)}</span> messages)</h3>"
            "<div class='scroll'><table class='http'><tr><th class=num>flow</th><th class=num>frame</th>"
            "<th>method</th><th>host</th><th>path (secrets redacted)</th><th>status</th><th>credentials</th></tr>"
            f"{''.join(rows)}</table></div>{more}")


def fixes_html(path: str, findings: pd.DataFrame) -> str:
    """What to change for this path: one remediation per check with findings here, in that path's
    own words (only the flags that fix this path), worst first; '' when nothing needs fixing."""
    if not len(findings):
        return ""
    live = findings[~findings.get("suppressed", pd.Series(False, index=findings.index)).fillna(False).astype(bool)]
    items = []
    for check in dict.fromkeys(live["check"].astype(str)):
        fix = _model.remediation_for(check, path, _model.text(live.loc[live["check"].astype(str) == check,
                                                                          "remediation"].iloc[0]))
        items.append(f'<li data-check="{esc(check)}"><b>{esc(check)}</b>: {esc(fix)}</li>')
    return f'<h3>How to fix this path</h3><ul class="fix">{"".join(items)}</ul>' if items else ""


def path_section(analysis, path_row, results: pd.DataFrame) -> str:
    pid = str(path_row["id"])
    info = _catalog.path_info(pid)
    flows = _model.path_flows(analysis, pid)
    findings = _model.findings_of(analysis, pid)
    parts = [f'<section class="path" id="{slug(pid)}" data-path="{esc(pid)}" '
             f'style="border-left-color:{palette.path_color(pid)}">',
             f'<h2>{path_dot(pid)}{esc(pid)} {verdict_badge(path_row["verdict"])}</h2>']
    if info:
        parts.append(f'<p><b>{esc(info.get("title"))}</b> — '
                     f'{esc(" | ".join(info.get("initiator", [])))} → {esc(" | ".join(info.get("responder", [])))}</p>')
        if info.get("requirements"):
            parts.append('<ul class="req">' + "".join(f"<li>{esc(r)}</li>" for r in info["requirements"]) + "</ul>")
        ref = info.get("reference") or {}
        if ref.get("quote"):
            parts.append(f'<blockquote>{esc(ref["quote"])} '
                         f'<a href="{esc(_catalog.reference_url(ref.get("anchor", "")))}">[document]</a></blockquote>')
    parts.append(f'<p>Connections: <b class="flow-count">{len(flows)}</b> · findings: '
                 f'<b class="finding-count">{len(findings)}</b></p>')
    parts.append(_evidence.evidence_table(analysis, pid, esc))
    parts.append("<h3>Checks</h3>" + checks_table(results[results["path"] == pid]))
    parts.append(fixes_html(pid, findings))
    if len(findings):
        parts.append("<h3>Findings</h3>" + "".join(finding_html(f) for _, f in findings.iterrows()))
    parts.append("<h3>Connections</h3>" + connections_table(flows, analysis=analysis))
    parts.append(http_table(analysis, flows["flow_id"] if len(flows) else []))
    parts.append(requests_view.requests_html(analysis, pid))
    parts.append("</section>")
    return "".join(parts)


def _requests_section(analysis) -> list[str]:
    """The plot of decrypted requests per kind and path (nothing when no request was read)."""
    if not len(requests_view.request_counts(analysis)):
        return []
    fig = requests_view.plot_requests(analysis)
    out = ['<section id="requests"><h2>Requests per path</h2>',
           figure_html("requests", fig, "Requests read on the kubelet and proxy paths, per kind: decrypted with "
                       "the key log, hatched where they crossed the network as plain HTTP.", "requests per kind and path"),
           "</section>"]
    fig.clear()
    return out


def overall_line(analysis, fail_on: str) -> str:
    """The run verdict banner: FAIL, INCONCLUSIVE (never green) or PASS, with its reason."""
    verdict = _model.run_verdict(analysis, fail_on)
    v = verdict["verdict"]
    return (f'<span class="overall" id="overall" data-status="{esc(v)}" style="background:'
            f'{palette.VERDICT_BACKGROUNDS.get(v, "#F5F5F5")};color:{palette.verdict_color(v)};'
            f'border:1px solid {palette.verdict_color(v)}">{esc(v.upper())} — {esc(verdict["reason"])}</span>')


def coverage_box(analysis) -> str:
    """What evidence the run had, at the top of the report (a missing piece says what it costs)."""
    rows = "".join(f'<tr><th scope="row">{esc(label)}</th><td>{esc(value)}</td></tr>'
                   for label, value in _model.coverage_rows(analysis))
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
    """The whole report as one HTML document (plots as base64 PNG, no external resources)."""
    from .._version import __version__
    paths = _model.path_table(analysis)
    results = _model.check_results(analysis)
    flows = _model.frame(analysis, "flows")
    findings = _model.frame(analysis, "findings")
    t0, t1 = _model.capture_window(analysis)
    n_caps = len(_model.frame(analysis, "captures"))
    policy = getattr(analysis, "policy", None)
    policy_name = getattr(policy, "name", None) or (policy.get("name") if isinstance(policy, dict) else policy)
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    figs = plots.all_figures(analysis)
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
        '<section id="verdicts"><h2>Verdict per documented path</h2>', verdict_table(analysis), "</section>",
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
        figure_html("timeline", figs["timeline"], "Every connection as a bar from its first to its last packet.",
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
    for fig in figs.values():
        fig.clear()
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
    findings = _model.frame(analysis, "findings")
    n_caps = len(_model.frame(analysis, "captures"))
    style = ("<style>.commpath-summary table{border-collapse:collapse;font-size:12.5px}"
             ".commpath-summary th,.commpath-summary td{padding:3px 8px;border-bottom:1px solid #e0e0e0;text-align:left}"
             ".commpath-summary .badge{padding:0 6px;border-radius:8px;border:1px solid;font-size:11.5px}"
             ".commpath-summary .num{text-align:right}.commpath-summary .pathdot{display:inline-block;width:9px;"
             "height:9px;border-radius:50%;margin-right:5px}.commpath-summary a{text-decoration:none;color:inherit}</style>")
    return (f'<div class="commpath-summary">{style}<b>commpath analysis</b>: {n_caps} capture'
            f'{"s" if n_caps != 1 else ""}, {len(flows)} connections, {len(findings)} findings '
            f"{overall_line(analysis, fail_on)}{verdict_table(analysis)}</div>")

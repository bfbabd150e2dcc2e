"""One section of the HTML report per path: its checks, findings, fixes, connections and HTTP seen.

Each section lists at most ``MAX_FINDINGS`` findings and ``MAX_CONNECTIONS`` connections (the
first by severity and by time) with the count of all of them: the rest are in report.json and the
Parquet tables, so the page stays readable and its cost bounded whatever the capture.
"""

from __future__ import annotations

import pandas as pd

from . import _catalog, _evidence, _model, palette, requests_view
from ._html_base import esc, path_dot, severity_badge, slug, utc_texts, verdict_badge

#: Connections listed per path section; the rest are counted and left to flows.parquet / report.json.
MAX_CONNECTIONS = 300
#: Findings shown per path section (worst first); the rest are counted and left to findings.parquet / report.json.
MAX_FINDINGS = 200
#: flow columns a path section reads (the section copies only these, not the whole flow table)
SECTION_FLOW_COLUMNS = ("flow_id", "capture", "first_frame", "ts_start", "src_ip", "src_port", "src_role", "dst_ip",
                        "dst_port", "dst_role", "transport", "app_protocol", "packets", "bytes", "path", "client_cert",
                        "server_cert_verified", "tls_version", "alpn", "sni", "cipher", "hosts")

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
    starts = utc_texts(shown["ts_start"]) if "ts_start" in shown else [""] * len(shown)
    for r, start in zip(shown.to_dict("records"), starts):  # plain dicts: a Series per row costs more than its HTML
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
            f'<td>{start[11:].removesuffix(" UTC")}</td>',
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
    for h in sub.head(MAX_CONNECTIONS).to_dict("records"):      # plain dicts, not a Series per row
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
    flows = _model.path_flows(analysis, pid, SECTION_FLOW_COLUMNS)
    # the findings listed (and each check's first, for its remediation); their texts made for these only
    findings = _model.findings_of(analysis, pid, limit=MAX_FINDINGS)
    n_findings = _model.finding_count(analysis, pid)
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
                 f'<b class="finding-count">{n_findings}</b></p>')
    parts.append(_evidence.evidence_table(analysis, pid, esc))
    parts.append("<h3>Checks</h3>" + checks_table(results[results["path"] == pid]))
    parts.append(fixes_html(pid, findings))
    if len(findings):
        shown = findings.head(MAX_FINDINGS)
        more = (f'<p class="note">First {len(shown)} of {n_findings} findings shown, worst first; all of them '
                f'are in report.json and findings.parquet.</p>') if n_findings > len(shown) else ""
        parts.append("<h3>Findings</h3>" + "".join(finding_html(f) for f in shown.to_dict("records")) + more)
    parts.append("<h3>Connections</h3>" + connections_table(flows, analysis=analysis))
    parts.append(http_table(analysis, flows["flow_id"] if len(flows) else []))
    parts.append(requests_view.requests_html(analysis, pid))
    parts.append("</section>")
    return "".join(parts)

"""The HTML report: self-contained, the numbers of the DataFrames, every wire string escaped."""

from __future__ import annotations

import base64
import dataclasses
import re
from html import escape, unescape

import pandas as pd
import pytest

from commpath.present import _model, html, palette
from test_present_data import analysis, public_analysis  # noqa: F401

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def page(analysis):  # noqa: F811
    return html.build_html(analysis)


def test_verdict_table_first_and_equal_to_paths(analysis, page):  # noqa: F811
    assert page.index('id="verdict-table"') < page.index('id="fig-path_map"') < page.index('<section class="path"')
    rows = re.findall(r'<tr data-path="([^"]+)" data-verdict="([^"]+)">(.*?)</tr>', page)
    table = _model.path_table(analysis)
    assert [(unescape(p), v) for p, v, _ in rows] == list(zip(table["id"], table["verdict"]))
    for (pid, _, cells), (_, row) in zip(rows, table.iterrows()):
        assert re.search(r'<td class="num flows">(\d+)</td>', cells).group(1) == str(int(row["flows"]))
        for sev in palette.SEVERITY_ORDER:
            shown = re.search(rf'<td class="num findings-{sev}">(\d*)</td>', cells).group(1)
            assert int(shown or 0) == row[f"findings_{sev}"]


def test_path_sections_show_connections_checks_and_findings(analysis, page):  # noqa: F811
    results = _model.check_results(analysis)
    for pid in analysis.paths["id"].astype(str):
        section = re.search(rf'<section class="path" id="{html.slug(pid)}".*?</section>', page, re.S).group(0)
        flows = analysis.flows[analysis.flows["path"].astype(str) == pid]
        findings = analysis.findings[analysis.findings["path"].astype(str) == pid]
        assert f'<b class="flow-count">{len(flows)}</b>' in section
        assert f'<b class="finding-count">{len(findings)}</b>' in section
        assert section.count('<article class="finding"') == min(len(findings), html.MAX_FINDINGS)
        assert len(re.findall(r'<tr data-flow="', section)) == min(len(flows), html.MAX_CONNECTIONS)
        mine = results[results["path"] == pid]
        cells = re.findall(r'<tr data-check="([^"]+)" data-status="([^"]+)">', section)
        assert cells == list(zip(mine["check"], mine["status"]))
        http = analysis.http[analysis.http["flow_id"].isin(flows["flow_id"])] if len(analysis.http) else []
        if len(http):
            assert f"<span class='http-count'>{len(http)}</span>" in section
            for value in http["path"].dropna().astype(str).head(html.MAX_CONNECTIONS):
                assert escape(value, quote=True) in section
        for _, f in findings.head(html.MAX_FINDINGS).iterrows():
            assert escape(str(f["display_filter"]), quote=True) in section
            assert escape(str(f["remediation"]), quote=True) in section
            frames = ", ".join(str(int(x)) for x in list(f["frames"])[:40])
            assert frames in section


def test_findings_and_connections_capped_with_their_counts(analysis):  # noqa: F811
    """A path with more findings and connections than a page shows lists the first ones (worst first)
    and says how many there are; report.json and the Parquet tables keep all of them."""
    flows = analysis.flows
    pid = str(flows["path"].astype(str).value_counts().index[0])
    many = pd.concat([flows[flows["path"].astype(str) == pid]] * (html.MAX_CONNECTIONS + 1), ignore_index=True)
    findings = analysis.findings[analysis.findings["path"].astype(str) == pid]
    if not len(findings):
        findings = analysis.findings.head(1).assign(path=pid)
    lots = pd.concat([findings] * (html.MAX_FINDINGS + 1), ignore_index=True)
    big = dataclasses.replace(analysis, flows=many, findings=lots)
    section = re.search(rf'<section class="path" id="{html.slug(pid)}".*?</section>', html.build_html(big), re.S).group(0)
    if len(lots):       # an analysis without any finding has none to multiply
        assert section.count('<article class="finding"') == html.MAX_FINDINGS
        assert f"First {html.MAX_FINDINGS} of {len(lots)} findings shown" in section
    assert len(re.findall(r'<tr data-flow="', section)) == html.MAX_CONNECTIONS
    assert f"First {html.MAX_CONNECTIONS} of {len(many)} connections shown" in section


def test_self_contained_with_plots(page):
    images = re.findall(r'<img class="plot" alt="[^"]*" src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)">', page)
    assert len(images) == 5 + ('<section id="requests">' in page)     # the requests plot when a key log read some
    import xml.etree.ElementTree as ET
    for data in images:   # vector plots: well-formed SVG documents
        assert ET.fromstring(base64.b64decode(data)).tag == "{http://www.w3.org/2000/svg}svg"
    assert not re.search(r'<(script|img|link|iframe)[^>]+(src|href)="(https?:)?//', page)
    assert "<link " not in page and "@import" not in page


def test_overall_line_and_exit_code_agree(analysis, page):  # noqa: F811
    from commpath.present.report import exit_code
    status = re.search(r'id="overall" data-status="(\w+)"', page).group(1)
    code = exit_code(analysis, "high")
    assert status in {0: ("pass", "warn"), 1: ("fail",), 3: ("inconclusive",)}[code]
    if status != "pass":   # no green banner without evidence
        assert "PASS" not in re.search(r'id="overall"[^>]*>([^<]*)<', page).group(1)


def test_wire_strings_are_escaped_and_secrets_stay_redacted():
    from commpath.decode.http import redact_path
    a = public_analysis()
    flows = a.flows.copy()
    flows["sni"] = flows["sni"].astype("string")
    flows.loc[flows.index[0], "sni"] = HOSTILE
    certs = a.certs.copy()
    certs.loc[certs.index[0], "subject"] = "CN=" + HOSTILE
    findings = a.findings.copy()
    findings["message"] = findings["message"].astype("string")
    findings.loc[findings.index[0], "message"] = HOSTILE
    secret_path = redact_path("/api/v1/namespaces/x/pods/y/proxy/?token=s3cr3t-value&q=" + HOSTILE)
    http = pd.DataFrame([{"flow_id": int(flows["flow_id"].iloc[0]), "frame": 4, "direction": "request",
                          "method": "GET", "path": secret_path, "host": HOSTILE, "status": pd.NA,
                          "connect_target": pd.NA, "version": "HTTP/1.1", "h2c": False}])
    hostile = dataclasses.replace(a, flows=flows, certs=certs, findings=findings, http=http)
    page = html.build_html(hostile)
    body = page.split("<script>")[0] + page.split("</script>")[-1]
    assert HOSTILE not in page
    assert "<img src=x" not in page and 'alert("x")</script>' not in body
    assert page.count(escape(HOSTILE, quote=True)) >= 4   # sni, certificate subject, message, http host
    assert "s3cr3t-value" not in page and "REDACTED" in page
    assert page.count("<script>") == 1   # only the report's own copy-button script


def test_repr_html_is_the_verdict_table(analysis):  # noqa: F811
    snippet = analysis._repr_html_()
    assert 'id="verdict-table"' in snippet
    assert f"{len(analysis.flows)} connections" in snippet
    assert f"{len(analysis.findings)} findings" in snippet

"""The HTML report's figures written as SVG without matplotlib: well-formed, complete, escaped, deterministic."""

from __future__ import annotations

import base64
import dataclasses
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from commpath.present import _figure_data, _model, _svg_figures, _svg_time, html
from commpath.present._svg import esc
from commpath.present._svg_time import date_ticks
from test_present_data import analysis_ids, real_analyses

NS = "{http://www.w3.org/2000/svg}"
ROOT = Path(__file__).resolve().parents[1]
#: the figures' elements: anything else in an SVG (a script, a foreign object) would be an injection
ELEMENTS = {"svg", "title", "rect", "line", "path", "text", "defs", "pattern"}
HOSTILE = '<script>a&"b\'</script>'
#: the richest analysis at hand: a bundled lab scenario when present, else the public captures
WHICH = next((a for a in analysis_ids() if a == "lab-broken"), analysis_ids()[0])


@pytest.fixture(scope="module")
def lab():
    return real_analyses(WHICH)


@pytest.fixture(scope="module")
def figures(lab):
    return {name: ET.fromstring(svg) for name, svg in _svg_figures.report_figures(lab).items()}


def texts(root) -> list[str]:
    return [t.text or "" for t in root.iter(NS + "text")]


def test_every_figure_parses_with_only_drawing_elements(figures):
    assert set(figures) == {"path_map", "check_matrix", "timeline", "tls", "certs"}
    for name, root in figures.items():
        assert root.tag == NS + "svg", name
        tags = {el.tag.removeprefix(NS) for el in root.iter()}
        assert tags <= ELEMENTS, (name, tags - ELEMENTS)
        width = float(root.get("width").removesuffix("pt"))
        assert 500 <= width <= 900 and float(root.get("height").removesuffix("pt")) > 150


def test_path_map_labels_every_edge_with_its_count(lab, figures):
    edges = _figure_data.path_map_edges(lab)
    assert len(edges)
    root = figures["path_map"]
    drawn = {(p.get("data-path"), p.get("data-src"), p.get("data-dst")): int(p.get("data-flows"))
             for p in root.iter(NS + "path") if p.get("data-flows")}
    assert drawn == {(e.path, e.src_role, e.dst_role): int(e.flows) for e in edges.itertuples()}
    words = texts(root)
    for e in edges.itertuples():
        assert e.path in words and f"{e.flows} flow{'s' if e.flows != 1 else ''}" in words
    for role in set(edges["src_role"]) | set(edges["dst_role"]):
        assert role in words


def test_check_matrix_has_every_cell_with_its_status_and_count(lab, figures):
    results = _model.check_results(lab)
    cells = {(r.get("data-path"), r.get("data-check")): (r.get("data-status"), r.get("data-findings"))
             for r in figures["check_matrix"].iter(NS + "rect") if r.get("data-check")}
    words = texts(figures["check_matrix"])
    for r in results.drop_duplicates(["path", "check"]).itertuples():
        assert cells[(r.path, r.check)] == (r.status, str(int(r.findings)))
        if r.status in ("fail", "warn") and r.findings:
            assert f"{_figure_data.STATUS_MARK[r.status]} {int(r.findings)}" in words
    assert set(results["check"]) <= set(words) and set(results["path"]) <= set(words)


def test_tls_bars_add_up_to_the_counts(lab, figures):
    counts = _figure_data.tls_counts(lab)
    root = figures["tls"]
    words = texts(root)
    segments = [r for r in root.iter(NS + "rect") if r.get("data-count")]
    for key, table in counts.items():
        for col in table.columns:
            assert str(col) in words           # the legend names every version, cipher and state
    versions = set(map(str, counts["version"].columns))
    for path, row in counts["version"].iterrows():
        drawn = {s.get("data-value"): int(s.get("data-count")) for s in segments
                 if s.get("data-row") == path and s.get("data-value") in versions}
        assert drawn == {str(v): int(n) for v, n in row.items() if n}


def test_certificates_show_every_subject_state_and_the_capture_start(lab, figures):
    certs = _model.cert_states(lab)
    root = figures["certs"]
    bars = {(b.get("data-fingerprint"), b.get("data-state")) for b in root.iter(NS + "rect") if b.get("data-state")}
    assert bars == {(str(f), str(s)) for f, s in zip(certs["fingerprint"], certs["state"])}
    words = " ".join(texts(root))
    for subject in certs["subject"]:
        assert _figure_data.short(_model.common_name(str(subject)), 30) in words
    assert "seen on the wire" in words and "capture start" in words
    for state in set(certs["state"]) - {"valid"}:
        assert state in texts(root)


def test_timeline_counts_every_connection(lab, figures):
    rows = {t.get("data-row"): int(t.get("data-connections")) for t in figures["timeline"].iter(NS + "text")
            if t.get("data-connections")}
    assert sum(rows.values()) == len(lab.flows)
    assert set(rows) == set(_figure_data.timeline_rows(lab)["row"])
    assert all(p.get("d") for p in figures["timeline"].iter(NS + "path") if p.get("data-row"))


def test_same_analysis_same_bytes(lab):
    assert _svg_figures.report_figures(lab) == _svg_figures.report_figures(lab)


def test_report_embeds_the_svg_figures(lab):
    page = html.build_html(lab)
    images = re.findall(r'<figure id="fig-([a-z_]+)"><img class="plot" alt="[^"]*" '
                        r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)">', page)
    assert [n for n, _ in images][:5] == ["path_map", "check_matrix", "timeline", "tls", "certs"]
    for _, data in images:
        assert ET.fromstring(base64.b64decode(data)).tag == NS + "svg"


def test_hostile_names_stay_text(lab):
    """Path ids, roles, host names and certificate subjects come off the wire or an inventory: in
    the SVG they are text, never markup."""
    flows = lab.flows.copy()
    first = flows.index[: max(1, len(flows) // 3)]
    for col in ("path", "src_role"):
        flows[col] = flows[col].astype("string")
        flows.loc[first, col] = HOSTILE
    certs = lab.certs.copy()
    certs["subject"] = certs["subject"].astype("string")
    certs.loc[certs.index[:1], "subject"] = "CN=" + HOSTILE
    hostile = dataclasses.replace(lab, flows=flows, certs=certs)
    figures = _svg_figures.report_figures(hostile)
    found = set()
    for name, svg in figures.items():
        assert "<script" not in svg
        root = ET.fromstring(svg)
        assert {el.tag.removeprefix(NS) for el in root.iter()} <= ELEMENTS
        assert not any(k.lower().startswith("on") for el in root.iter() for k in el.attrib)
        if any(HOSTILE in w for w in texts(root)):
            found.add(name)
    assert {"path_map", "timeline", "tls", "certs"} <= found
    page = html.build_html(hostile)
    assert HOSTILE not in page


def test_escape_keeps_xml_valid():
    text = 'a<b>&"c\x00\x1b'
    root = ET.fromstring(f'<svg xmlns="http://www.w3.org/2000/svg"><text a="{esc(text)}">{esc(text)}</text></svg>')
    el = root.find(NS + "text")
    assert el.text == el.get("a") == 'a<b>&"c\ufffd\ufffd'


def test_date_ticks_name_years_months_and_times():
    year = 365.25 * 86400
    start = 1_767_225_600          # 2026-01-01 00:00 UTC
    labels = [s for _, s in date_ticks(start - year, start + 1.5 * year)]
    assert {"2025", "2026", "2027"} <= set(labels) and len(labels) <= 8
    assert all(s.isdigit() or s in ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
               for s in labels)
    ticks = date_ticks(start + 3600, start + 5 * 3600)
    assert ticks[0][1] == "01:00" and len(ticks) <= 8


def test_report_command_never_imports_matplotlib(tmp_path):
    """`commpath report` in every single-file format plus the folders: matplotlib stays unimported."""
    lab = ROOT / "captures" / "broken"
    if not lab.is_dir():
        pytest.skip("bundled lab captures missing")
    out = tmp_path / "report"
    cmd = [sys.executable, "-X", "importtime", "-m", "commpath.cli", "report", str(lab), "--inventory",
           str(lab / "inventory.yaml"), "--keylog", str(lab / "keylog.txt"), "-o", str(out), "-q"]
    for fmt in ("html", "md", "json", "junit", "sarif", "csv", "zeek"):
        cmd += ["--format", fmt]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert proc.returncode in (0, 1, 3), proc.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert "commpath.present.html" in imported and "commpath.present._svg_map" in imported
    assert not [m for m in imported if m.split(".")[0] in ("matplotlib", "mpl_toolkits")]
    page = out.with_suffix(".html").read_text(encoding="utf-8")
    assert page.count('<img class="plot"') == 6          # the five figures and the requests the key log read


def test_requests_bars_count_every_request(lab):
    from commpath.present import requests_view
    counts = requests_view.request_counts(lab)
    if not len(counts):
        pytest.skip("this analysis read no request")
    root = ET.fromstring(_svg_figures.requests_svg(lab))
    drawn = {(r.get("data-path"), r.get("data-kind"), r.get("data-how")): int(r.get("data-count"))
             for r in root.iter(NS + "rect") if r.get("data-how")}
    expected = {(r.flow_path, r.request_kind, how): int(n) for r in counts.itertuples()
                for how, n in (("tls", r.tls), ("plain", r.plain)) if how == "tls" or n}
    assert drawn == expected
    assert "plain HTTP" in texts(root) and "decrypted TLS" in texts(root)


def test_no_data_gives_a_note_not_a_broken_figure(lab):
    bare = dataclasses.replace(lab, flows=lab.flows.iloc[:0], certs=lab.certs.iloc[:0])
    figures = {n: ET.fromstring(s) for n, s in _svg_figures.report_figures(bare).items()}
    assert "no control-plane traffic observed" in texts(figures["path_map"])
    assert "no connections" in texts(figures["timeline"])
    assert "no TLS connections" in texts(figures["tls"])
    assert any(t.startswith("no certificates observed") for t in texts(figures["certs"]))


def test_figure_html_still_embeds_a_matplotlib_figure(lab):
    """Callers with their own matplotlib figure (notebooks) keep figure_html; plots.* stay matplotlib."""
    from matplotlib.figure import Figure

    from commpath.present import plots
    fig = plots.check_matrix(lab)
    assert isinstance(fig, Figure) and fig.axes[0].patches and fig.axes[0].texts
    snippet = html.figure_html("mine", fig, "caption", "alt")
    data = re.search(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', snippet).group(1)
    assert ET.fromstring(base64.b64decode(data)).tag == NS + "svg"


def test_ticks_are_round_and_cover_the_range():
    from commpath.present._svg import nice_ticks, text_width, tick_label
    assert nice_ticks(0.0, 31.0) == [0, 5, 10, 15, 20, 25, 30]
    assert [tick_label(t) for t in nice_ticks(0.0, 1.2)] == ["0", "0.2", "0.4", "0.6", "0.8", "1", "1.2"]
    assert len(nice_ticks(0.0, 7489.0)) <= 8
    # wider for bold and for wide letters, proportional to the size
    assert text_width("etcd", 10, bold=True) > text_width("etcd", 10) > 0
    assert text_width("WWW", 10) > text_width("iii", 10)
    assert abs(text_width("konnectivity", 20) - 2 * text_width("konnectivity", 10)) < 1e-9


def test_a_certificate_without_dates_is_said_not_drawn(lab):
    certs = lab.certs.copy()
    if not len(certs):
        pytest.skip("no certificate in this analysis")
    certs.loc[certs.index[0], "not_before"] = pd.NaT
    root = ET.fromstring(_svg_time.certs_svg(dataclasses.replace(lab, certs=certs)))
    assert "validity dates unknown" in texts(root)
    bars = [b for b in root.iter(NS + "rect") if b.get("data-state")]
    assert len(bars) == len(certs) - 1 and all(float(b.get("width")) >= 0 for b in bars)

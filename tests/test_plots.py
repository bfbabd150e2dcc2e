"""Figures drawn from real analyses: what they show equals the DataFrames, colours come from the palette."""

from __future__ import annotations

import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

from commpath.present import _model, palette, plots
from test_present_data import analysis  # noqa: F401


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_path_map_labels_and_colours(analysis):  # noqa: F811
    fig = analysis.plot_path_map()
    assert isinstance(fig, Figure)
    edges = plots.path_map_edges(analysis)
    labels = [t for t in _texts(fig) if "flow" in t]
    expected = [f"{e.path}\n{e.flows} flow{'s' if e.flows != 1 else ''}" for e in edges.itertuples()]
    assert labels == expected
    arrows = [p for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == len(edges)
    assert [to_hex(a.get_edgecolor()) for a in arrows] == [palette.verdict_color(v).lower() for v in edges["verdict"]]
    roles = set(edges["src_role"]) | set(edges["dst_role"])
    assert {t.split("\n")[0] for t in _texts(fig) if "flow" not in t} >= roles


def test_check_matrix_cells(analysis):  # noqa: F811
    fig = analysis.plot_check_matrix()
    results = _model.check_results(analysis)
    ax = fig.axes[0]
    cells = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_width() < 1]
    coloured = [p for p in cells if to_hex(p.get_edgecolor()) != "#eeeeee"]
    assert len(coloured) == len(results)
    counts = {s: 0 for s in palette.VERDICT_ORDER}
    for p in coloured:
        edge = to_hex(p.get_edgecolor())
        status = next(s for s, c in palette.VERDICT_COLORS.items() if c.lower() == edge)
        counts[status] += 1
    assert counts == {s: int((results["status"] == s).sum()) for s in palette.VERDICT_ORDER}
    fails = [t for t in _texts(fig) if t.startswith("FAIL")]
    assert sorted(fails) == sorted(f"FAIL {n}" for n in results.loc[results["status"] == "fail", "findings"])


def test_timeline_one_bar_per_connection(analysis):  # noqa: F811
    fig = analysis.plot_timeline()
    ax = fig.axes[0]
    bars = sum(len(c.get_paths()) for c in ax.collections)
    assert bars == len(analysis.flows)
    rows = plots.timeline_rows(analysis)
    shown = [t.get_text() for t in ax.get_yticklabels()]
    assert sorted(shown) == sorted(set(rows["row"]))
    numbers = {t.get_text() for t in ax.texts}
    assert numbers == {str(n) for n in rows.groupby("row").size()}


def test_tls_panels_sum_to_tls_flows(analysis):  # noqa: F811
    fig = analysis.plot_tls()
    counts = plots.tls_counts(analysis)
    assert len(fig.axes) == 3
    if not counts:
        pytest.skip("no TLS in this analysis")  # conditional: only analyses without TLS
    for ax, key in zip(fig.axes, ("version", "cipher", "client_cert")):
        total = sum(p.get_width() for p in ax.patches if isinstance(p, Rectangle) and p.get_height() > 0.5)
        assert total == pytest.approx(counts[key].values.sum())


def test_cert_validity_bars_and_states(analysis):  # noqa: F811
    fig = analysis.plot_certs()
    certs = _model.cert_states(analysis)
    ax = fig.axes[0]
    if not len(certs):
        assert _texts(fig) == ["no certificates observed (TLS 1.3 hides them unless a key log is given)"]
        return
    bars = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_height() == pytest.approx(0.6)]
    assert len(bars) == min(len(certs), 40)
    colours = sorted(to_hex(b.get_facecolor()) for b in bars)
    shown = certs.sort_values("not_after").head(40)
    assert colours == sorted(palette.CERT_STATE_COLORS[s].lower() for s in shown["state"])
    marked = [t.strip() for t in _texts(fig)]
    assert sorted(marked) == sorted(s for s in shown["state"] if s != "valid")


def test_consistent_colours_between_figures(analysis):  # noqa: F811
    from matplotlib.collections import PolyCollection
    timeline = analysis.plot_timeline().axes[0]
    labels = [t.get_text() for t in timeline.get_yticklabels()]
    bars = [c for c in timeline.collections if isinstance(c, PolyCollection)]
    assert len(bars) == len(labels)
    for label, bar in zip(labels, bars):
        path = label.split(" · ")[-1]
        assert to_hex(bar.get_facecolor()[0]) == palette.path_color(path).lower()
    matrix = analysis.plot_check_matrix().axes[0]
    for label in matrix.get_yticklabels():
        assert to_hex(label.get_color()) == palette.path_color(label.get_text()).lower()

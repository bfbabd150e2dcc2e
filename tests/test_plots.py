"""Figures drawn from real analyses: what they show equals the DataFrames, colours come from the palette."""

from __future__ import annotations

import numpy as np
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


def test_timeline_bars_cover_every_connection(analysis):  # noqa: F811
    """The timeline draws aggregated data: per row, the union of its connections' bars (disjoint
    bars, each connection inside one of them) and the count of every connection beside it."""
    from commpath.present import _plot_timeline
    fig = analysis.plot_timeline()
    ax = fig.axes[0]
    rows = plots.timeline_rows(analysis)
    shown = [t.get_text() for t in ax.get_yticklabels()]
    assert sorted(shown) == sorted(set(rows["row"]))
    numbers = {t.get_text() for t in ax.texts}
    assert numbers == {str(n) for n in rows.groupby("row").size()}
    assert len(ax.collections) == len(shown)
    t0, t1 = _model.capture_window(analysis)
    origin, scale, _ = _plot_timeline.axis_units(t0, t1)
    span = max((t1 - t0) / scale, 1e-3)
    for i, (label, bars) in enumerate(zip(shown, ax.collections)):
        extents = sorted((p.vertices[:, 0].min(), p.vertices[:, 0].max()) for p in bars.get_paths())
        assert all(a_end < b_start for (_, a_end), (b_start, _) in zip(extents, extents[1:]))   # disjoint
        sub = rows[rows["row"] == label]
        raw = sub["ts_start"].to_numpy(float)
        aligned = sub["ts_start_aligned"].to_numpy(float) if "ts_start_aligned" in sub else raw
        start = (np.where(np.isfinite(aligned), aligned, raw) - origin) / scale     # merged runs: one clock
        end = start + np.maximum((sub["ts_end"].to_numpy(float) - raw) / scale,
                                 span * _plot_timeline.MIN_WIDTH)
        lo = np.array([a for a, _ in extents])
        at = np.searchsorted(lo, start + 1e-9, side="right") - 1
        assert (at >= 0).all()
        assert (end <= np.array([b for _, b in extents])[at] + 1e-6 * span).all()
        assert len(extents) <= len(sub)


def test_timeline_aggregates_a_million_connections_into_few_bars():
    from commpath.present._plot_timeline import start_marks, union_bars
    rng = np.random.default_rng(7)
    start = rng.uniform(0, 100, 1_000_000)
    bar_start, bar_width = union_bars(start, start + 0.4)
    assert len(bar_start) == 1 and bar_start[0] == start.min()
    assert bar_start[0] + bar_width[0] == pytest.approx(start.max() + 0.4)
    marks = start_marks(start, 0.0, 100.0)
    assert len(marks) <= 2000 and marks.min() == start.min()
    gaps = union_bars(np.array([0.0, 1.0, 5.0]), np.array([2.0, 3.0, 6.0]))
    assert gaps[0].tolist() == [0.0, 5.0] and gaps[1].tolist() == [3.0, 1.0]


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

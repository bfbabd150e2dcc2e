"""The HTML report at 1280 px in headless Chromium: nothing scrolls sideways, no text is drawn over
other text (boxes measured by a script injected into the page), the path map's labels do not
overlap and its edges start at their nodes; the probe itself catches both faults on a page made to
have them."""

from __future__ import annotations

import html as htmlmod
import itertools
import json
import re

import numpy as np
import pytest

from commpath.present import _browser, html, plots
from test_present_data import analysis_ids, real_analyses

needs_chromium = pytest.mark.skipif(_browser.chromium() is None, reason="Debian package chromium not installed")
WIDTH = 1280


def _layout(path) -> dict:
    dom, stderr = _browser.dump_dom(path, width=WIDTH, layout=True)
    body = re.search(r"<body([^>]*)>", dom)
    assert body, f"no DOM from chromium: {stderr[-800:]}"
    attrs = {k: htmlmod.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', body.group(1))}
    assert attrs.get("data-layout-done") == "1", stderr[-800:]
    return attrs


@needs_chromium
@pytest.mark.timeout(300)
def test_the_probe_sees_overlaps_and_sideways_scrolling(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head></head><body>"
                    "<div style='position:absolute;left:10px;top:10px'>first label</div>"
                    "<div style='position:absolute;left:14px;top:12px'>second label</div>"
                    "<div style='overflow-x:auto;width:200px'><table><tr><td style='white-space:nowrap'>"
                    + "x" * 300 + "</td></tr></table></div>"
                    "<div style='width:2000px'>wide</div></body></html>")
    attrs = _layout(page)
    assert int(attrs["data-layout-overlap-count"]) >= 1
    assert "first label | second label" in json.loads(attrs["data-layout-overlaps"])
    assert int(attrs["data-layout-scroll-width"]) > WIDTH
    assert json.loads(attrs["data-layout-inner-scrollers"])


@needs_chromium
@pytest.mark.timeout(600)
@pytest.mark.parametrize("which", [a for a in analysis_ids() if a in ("lab-broken", "lab-legacy", "public")]
                         or analysis_ids()[:1])
def test_report_fits_1280_px_without_overlapping_text(which, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(html.build_html(real_analyses(which)), encoding="utf-8")
    attrs = _layout(page)
    assert int(attrs["data-layout-viewport"]) == WIDTH
    assert int(attrs["data-layout-scroll-width"]) <= WIDTH, "the page scrolls sideways"
    assert json.loads(attrs["data-layout-inner-scrollers"]) == []
    assert int(attrs["data-layout-text-runs"]) > 200
    assert int(attrs["data-layout-overlap-count"]) == 0, json.loads(attrs["data-layout-overlaps"])


def _box_overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


@pytest.mark.parametrize("which", analysis_ids())
def test_path_map_labels_do_not_overlap_and_edges_touch_their_nodes(which):
    from matplotlib.patches import FancyArrowPatch
    analysis = real_analyses(which)
    fig = plots.path_map(analysis)
    fig.draw_without_rendering()
    ax = fig.axes[0]
    texts = [t for t in ax.texts if t.get_text()]
    if len(texts) <= 1:
        pytest.skip("no control-plane traffic in this analysis")   # only the "nothing observed" note
    boxes = [(t.get_text(), (t.get_bbox_patch() or t).get_window_extent()) for t in texts]
    legend = ax.get_legend().get_window_extent()
    boxes.append(("legend", legend))
    clashes = [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if _box_overlap(ba, bb) > 0]
    assert clashes == []
    # every edge starts and ends within a few points of a node box
    nodes = [t.get_bbox_patch().get_window_extent() for t in texts if "flow" not in t.get_text()
             and t.get_bbox_patch() is not None]
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert arrows
    for arrow in arrows:
        # the curve the arrow was made from (get_path() also holds the drawn head's outline)
        ends = ax.transData.transform(arrow._path_original.vertices[[0, -1]])
        for x, y in ends:
            gap = min(max(b.x0 - x, 0, x - b.x1) + max(b.y0 - y, 0, y - b.y1) for b in nodes)
            assert gap < 12, f"an edge ends {gap:.0f} px from any node"
    assert np.isfinite(legend.x0)

"""The HTML report as a user sees it: headless Chromium loads it without errors, with the verdict table and plots."""

from __future__ import annotations

import re
import struct

import pytest

from commpath.present import _browser, html
from test_present_data import analysis_ids, real_analyses

needs_chromium = pytest.mark.skipif(_browser.chromium() is None, reason="Debian package chromium not installed")
#: the richest analysis at hand: a bundled lab scenario when present, else the public captures
WHICH = next((a for a in analysis_ids() if a == "lab-broken"), analysis_ids()[0])


@pytest.fixture(scope="module")
def report_file(tmp_path_factory):
    analysis = real_analyses(WHICH)
    path = tmp_path_factory.mktemp("browser") / "report.html"
    path.write_text(html.build_html(analysis), encoding="utf-8")
    return analysis, path


@needs_chromium
@pytest.mark.timeout(180)
def test_chromium_loads_report_without_errors(report_file):
    analysis, path = report_file
    dom, stderr = _browser.dump_dom(path)
    body = re.search(r"<body([^>]*)>", dom)
    assert body, f"no DOM from chromium: {stderr[-800:]}"
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("data-probe-done") == "1"
    assert attrs.get("data-probe-errors") == ""
    plots = 5 + ('<section id="requests">' in path.read_text())   # the requests plot when a key log read some
    assert int(attrs["data-probe-images"]) == plots
    assert attrs["data-probe-images-ok"] == attrs["data-probe-images"]
    assert not re.search(r"Uncaught|SyntaxError|ERR_FILE_NOT_FOUND|Failed to load resource", stderr)
    rows = re.findall(r'<tr data-path="([^"]+)" data-verdict="([^"]+)"', dom)
    assert [(p, v) for p, v in rows] == list(zip(analysis.paths["id"].astype(str), analysis.paths["verdict"].astype(str)))


@needs_chromium
@pytest.mark.timeout(180)
def test_screenshot_shows_the_top_of_the_report(report_file, tmp_path):
    _, path = report_file
    png = _browser.screenshot(path, tmp_path / "report.png", width=1280, height=1400)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 1400)
    # decode and check that the page is not blank: many distinct colours (text, badges, plots)
    import matplotlib.image as mpimg
    pixels = mpimg.imread(png)[..., :3].reshape(-1, 3)
    distinct = len({tuple(p) for p in (pixels[::97] * 255).astype(int)})
    assert distinct > 50


@needs_chromium
@pytest.mark.timeout(180)
def test_svg_figures_render_in_chromium(report_file, tmp_path):
    """The report's figures alone on a page: Chromium decodes every SVG at its size and draws it."""
    _, path = report_file
    figures = re.findall(r'<figure id="fig-[a-z_]+">.*?</figure>', path.read_text(encoding="utf-8"))
    assert len(figures) >= 5
    page = tmp_path / "figures.html"
    page.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'><style>body{margin:0}img{display:block;"
                    "width:1200px}figcaption{display:none}figure{margin:0}</style></head><body>"
                    + "".join(figures) + "</body></html>", encoding="utf-8")
    dom, stderr = _browser.dump_dom(page)
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', re.search(r"<body([^>]*)>", dom).group(1)))
    assert attrs["data-probe-images"] == attrs["data-probe-images-ok"] == str(len(figures)), stderr[-800:]
    png = _browser.screenshot(page, tmp_path / "figures.png", width=1200, height=3000)
    import matplotlib.image as mpimg
    pixels = mpimg.imread(png)[..., :3]
    # every figure's band (about 600 px high at this width) holds drawing, not a blank image
    for top in range(0, 2400, 600):
        band = pixels[top:top + 600].reshape(-1, 3)
        assert len({tuple(p) for p in (band[::37] * 255).astype(int)}) > 8, top

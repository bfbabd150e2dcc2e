"""SVG drawing primitives for the HTML report's figures: escaped text, shapes, axes, ticks and legends.

Hand-written rather than matplotlib because of measurement (benchmarks/RESULTS.md, 2026-12-06 20:07):
on the 1M-packet benchmark capture, importing matplotlib (0.28-0.32 s), drawing the five figures
(0.30-0.33 s) and exporting them as SVG (0.43-0.51 s) took 1.0-1.2 s of CPU of `commpath report`'s
2.3-2.7 s; these figures are a few hundred rectangles and labels whose places follow from the
report's data, written here as text in 0.14-0.17 s (of which 0.075 s was networkx's import for the
path map's layout, since written out: ``_figure_data.node_positions``). Text is measured with DejaVu Sans's advance widths (the font matplotlib used and
the first one the SVG asks for), so labels are placed as before without a font library.
Coordinates are points (1/72 in), as in matplotlib's SVG, so the figures keep their former sizes.
"""

from __future__ import annotations

import math
import re

#: the font the figures ask for (DejaVu Sans first: the width table below is its metrics)
FONT_FAMILY = "DejaVu Sans, Verdana, Geneva, Arial, sans-serif"

# Advance widths of DejaVu Sans (regular and bold) for ASCII 32..126, in 1/1000 em: read once from
# the font's metrics; other characters count as WIDE_CHAR.
_REGULAR = (318, 401, 460, 838, 636, 950, 780, 275, 390, 390, 500, 838, 318, 361, 318, 337, 636, 636, 636, 636,
            636, 636, 636, 636, 636, 636, 337, 337, 838, 838, 838, 531, 1000, 684, 686, 698, 770, 632, 575, 775,
            752, 295, 295, 656, 557, 863, 748, 787, 603, 787, 695, 635, 611, 732, 684, 989, 685, 611, 685, 390,
            337, 390, 838, 500, 500, 613, 635, 550, 635, 615, 352, 635, 634, 278, 278, 579, 278, 974, 634, 612,
            635, 635, 411, 521, 392, 634, 592, 818, 592, 592, 525, 636, 337, 636, 838)
_BOLD = (348, 456, 521, 838, 696, 1002, 872, 306, 457, 457, 523, 838, 380, 415, 380, 365, 696, 696, 696, 696, 696,
         696, 696, 696, 696, 696, 400, 400, 838, 838, 838, 580, 1000, 774, 762, 734, 830, 683, 683, 821, 837, 372,
         372, 775, 637, 995, 837, 850, 733, 850, 770, 720, 682, 812, 774, 1103, 771, 724, 725, 457, 365, 457, 838,
         500, 500, 675, 716, 593, 716, 678, 435, 716, 712, 343, 343, 665, 343, 1042, 712, 687, 716, 716, 493, 595,
         478, 712, 652, 924, 645, 652, 582, 712, 365, 712, 838)
WIDE_CHAR = 1000
#: every figure's title, in points (as before)
TITLE_SIZE = 12.0
#: text height above the baseline and below it, as a fraction of the font size (DejaVu's ascent/descent)
ASCENT, DESCENT = 0.76, 0.24

# characters XML 1.0 cannot hold at all (a hostile host name could carry them): replaced, not dropped,
# so the reader sees something was there
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def esc(value) -> str:
    """``value`` as text safe inside an SVG element or a double-quoted attribute."""
    s = _NOT_XML.sub("\ufffd", str(value))
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def text_width(text: str, size: float, bold: bool = False) -> float:
    """Approximate width of one line of ``text`` at ``size`` points."""
    table = _BOLD if bold else _REGULAR
    units = sum(table[o - 32] if 32 <= (o := ord(c)) < 127 else WIDE_CHAR for c in str(text))
    return units * size / 1000.0


def num(v: float) -> str:
    """A coordinate with two decimals at most (shorter files, the same bytes on every run)."""
    s = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


class Canvas:
    """One SVG figure built as a list of elements, written out by ``svg()``."""

    def __init__(self, width: float, height: float, title: str = ""):
        self.width, self.height = width, height
        self.parts: list[str] = []
        self.title = title

    def rect(self, x, y, w, h, fill="none", stroke=None, stroke_width=1.0, rx=0.0, opacity=None, extra=""):
        attrs = f'x="{num(x)}" y="{num(y)}" width="{num(max(w, 0))}" height="{num(max(h, 0))}" fill="{esc(fill)}"'
        if stroke:
            attrs += f' stroke="{esc(stroke)}" stroke-width="{num(stroke_width)}"'
        if rx:
            attrs += f' rx="{num(rx)}"'
        if opacity is not None:
            attrs += f' fill-opacity="{num(opacity)}"'
        self.parts.append(f"<rect {attrs}{extra}/>")

    def line(self, x1, y1, x2, y2, stroke="#212121", width=1.0, dash=None, extra=""):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(f'<line x1="{num(x1)}" y1="{num(y1)}" x2="{num(x2)}" y2="{num(y2)}" stroke="{esc(stroke)}" '
                          f'stroke-width="{num(width)}"{d}{extra}/>')

    def path(self, d: str, fill="none", stroke=None, width=1.0, opacity=None, extra=""):
        attrs = f'd="{d}" fill="{esc(fill)}"'
        if stroke:
            attrs += f' stroke="{esc(stroke)}" stroke-width="{num(width)}"'
        if opacity is not None:
            attrs += f' opacity="{num(opacity)}"'
        self.parts.append(f"<path {attrs}{extra}/>")

    def text(self, x, y, text, size=10.0, anchor="start", color="#212121", bold=False, baseline="middle",
             rotate=None, extra=""):
        """One line of text; ``baseline`` 'middle' centres it on y, 'alphabetic' puts its baseline at y,
        'hanging' its top (given as a dy, which every SVG renderer understands)."""
        dy = {"middle": (ASCENT - DESCENT) / 2 * size, "hanging": ASCENT * size}.get(baseline, 0.0)
        attrs = f'x="{num(x)}" y="{num(y + dy)}" font-size="{num(size)}"'
        if anchor != "start":
            attrs += f' text-anchor="{anchor}"'
        if color != "#212121":
            attrs += f' fill="{esc(color)}"'
        if bold:
            attrs += ' font-weight="bold"'
        if rotate is not None:
            attrs += f' transform="rotate({num(rotate)} {num(x)} {num(y)})"'
        self.parts.append(f"<text {attrs}{extra}>{esc(text)}</text>")

    def raw(self, element: str) -> None:
        """An element built by the caller (who escaped what it holds)."""
        self.parts.append(element)

    def svg(self) -> str:
        title = f"<title>{esc(self.title)}</title>" if self.title else ""
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{num(self.width)}pt" height="{num(self.height)}pt" '
                f'viewBox="0 0 {num(self.width)} {num(self.height)}" xml:space="preserve" style="white-space:pre" '
                f'font-family="{esc(FONT_FAMILY)}" fill="#212121">'
                f'{title}<rect width="100%" height="100%" fill="white"/>' + "".join(self.parts) + "</svg>\n")


# ----------------------------------------------------------------------------------- axes helpers

def nice_ticks(lo: float, hi: float, most: int = 8) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 2.5, 5 × a power of ten), at most ``most`` of them."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(most - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + step * 1e-9:
        ticks.append(round(k * step, 12))
        k += 1
    return ticks


def tick_label(v: float) -> str:
    """A tick value as matplotlib writes it: integers without a point, others with what they need."""
    if abs(v - round(v)) < 1e-9:
        return str(int(round(v)))
    return f"{v:.6f}".rstrip("0").rstrip(".")


def x_axis(c: Canvas, x0: float, x1: float, y: float, ticks: list[tuple[float, str]], label: str = "",
           size: float = 10.0, grid_top: float | None = None, label_size: float | None = None) -> float:
    """A bottom x axis from x0 to x1 at y, ticks at the given positions (with grid lines up to
    ``grid_top`` when given), and its label below; returns the y under the label."""
    for x, text in ticks:
        if grid_top is not None:
            c.line(x, grid_top, x, y, stroke="#EEEEEE", width=0.8)
        c.line(x, y, x, y + 3.5, width=0.8)
        c.text(x, y + 5, text, size=size, anchor="middle", baseline="hanging")
    c.line(x0, y, x1, y, width=0.8)
    bottom = y + 5 + size * 1.2
    if label:
        ls = label_size or size
        c.text((x0 + x1) / 2, bottom + 3, label, size=ls, anchor="middle", baseline="hanging")
        bottom += 3 + ls * 1.2
    return bottom


LEGEND_PATCH = "patch"
LEGEND_LINE = "line"
LEGEND_DASH = "dash"
LEGEND_DIAMOND = "diamond"


def legend(c: Canvas, x: float, y: float, entries: list[tuple[str, str, str]], size: float = 9.0,
           title: str = "", edges: dict | None = None) -> float:
    """Legend entries (kind, colour, label) in a column from (x, y), top left; ``edges`` maps a
    label to its patch's edge colour. Returns the legend's width."""
    row = size * 1.45
    width = 0.0
    if title:
        c.text(x + 1.0 * size, y + row / 2, title, size=size * 1.05, anchor="start")
        width = text_width(title, size * 1.05) + 1.0 * size
        y += row
    for kind, colour, label in entries:
        mid = y + row / 2
        if kind == LEGEND_PATCH:
            c.rect(x, mid - size * 0.35, size * 2, size * 0.7, fill=colour,
                   stroke=(edges or {}).get(label), stroke_width=1.0)
        elif kind == LEGEND_DIAMOND:
            r = size * 0.35
            c.path(f"M{num(x + size)} {num(mid - r)}L{num(x + size + r)} {num(mid)}L{num(x + size)} {num(mid + r)}"
                   f"L{num(x + size - r)} {num(mid)}Z", fill=colour)
        else:
            c.line(x, mid, x + size * 2, mid, stroke=colour, width=3.0 if kind == LEGEND_LINE else 1.2,
                   dash="4 2" if kind == LEGEND_DASH else None)
        c.text(x + size * 2.8, mid, label, size=size)
        width = max(width, size * 2.8 + text_width(label, size))
        y += row
    return width


def empty(c: Canvas, message: str, top: float = 0.0) -> None:
    """The note drawn where a figure has no data."""
    c.text(c.width / 2, (top + c.height) / 2, message, size=11, anchor="middle", color="#666666")


__all__ = ["ASCENT", "Canvas", "DESCENT", "FONT_FAMILY", "LEGEND_DASH", "LEGEND_DIAMOND", "LEGEND_LINE",
           "LEGEND_PATCH", "TITLE_SIZE", "empty", "esc", "legend", "nice_ticks", "num", "text_width",
           "tick_label", "x_axis"]

"""The report's path x check matrix, TLS bars and request bars as SVG text (see ``_svg`` for why)."""

from __future__ import annotations

import math

from . import _model, palette, requests_view
from ._figure_data import STATUS_MARK, tls_counts, tls_panels
from ._svg import LEGEND_PATCH, TITLE_SIZE, Canvas, empty, esc, legend, nice_ticks, text_width, tick_label, x_axis

#: the figures' widths in points (matplotlib's 12 in and 8 in figures, kept)
WIDE, NARROW = 864.0, 576.0
#: how far the matrix's check names lean (degrees, as before)
SLANT = 40.0


def _legend_width(labels, size: float) -> float:
    return size * 2.8 + max((text_width(s, size) for s in labels), default=0.0) + 8.0


# ------------------------------------------------------------------------------ path x check matrix

def check_matrix_svg(analysis, fail_on: str | None = None, results=None) -> str:
    """Documented paths x checks, each cell pass / FAIL n / warn n / n/obs / – in its verdict's colours
    (``results``: ``_model.check_results(analysis, fail_on)`` when the caller has it already)."""
    results = _model.check_results(analysis, fail_on) if results is None else results
    paths = _model.sorted_paths(results["path"]) if len(results) else []
    checks = list(dict.fromkeys(results["check"]))      # in the order of first appearance
    height = 72 * max(3.0, 0.46 * len(paths) + 2.6)
    fail_at, warn_at = _model.thresholds(analysis, fail_on)
    title = f"Checks per path (fail at or above {fail_at}, warn at or above {warn_at})"
    c = Canvas(WIDE, height, title)
    if not len(results):
        empty(c, "no documented path")
        return c.svg()
    cells = {}
    for path, check, status, n in zip(results["path"], results["check"], results["status"], results["findings"]):
        cells.setdefault((path, check), (str(status), int(n)))
    sin, cos = math.sin(math.radians(SLANT)), math.cos(math.radians(SLANT))
    label_w = [text_width(ch, 10) for ch in checks]
    left = max(text_width(p, 10.5) for p in paths) + 10
    # the first check's slanted name reaches left of its column: the margin makes room for it
    legend_entries = [(LEGEND_PATCH, palette.VERDICT_BACKGROUNDS[s], s) for s in palette.VERDICT_ORDER
                      if s != "inconclusive"]
    right = WIDE - _legend_width([e[2] for e in legend_entries], 10) - 6
    cell_w = (right - left) / len(checks)
    left = max(left, label_w[0] * cos - cell_w / 2 + 6)
    cell_w = (right - left) / len(checks)
    top = 24.0
    bottom = height - max(w * sin + 10 * cos for w in label_w) - 10
    cell_h = (bottom - top) / len(paths)
    c.text(left, 4, title, size=TITLE_SIZE, baseline="hanging")
    for i, path in enumerate(paths):
        y = top + i * cell_h
        c.text(left - 6, y + cell_h / 2, path, size=10.5, anchor="end", color=palette.path_color(path))
        for j, check in enumerate(checks):
            x = left + j * cell_w
            where = f' data-path="{esc(path)}" data-check="{esc(check)}"'
            if (path, check) not in cells:
                c.rect(x + 0.04 * cell_w, y + 0.06 * cell_h, 0.92 * cell_w, 0.88 * cell_h, fill="#FFFFFF",
                       stroke="#EEEEEE", extra=where)
                continue
            status, n = cells[(path, check)]
            colour = palette.verdict_color(status)
            c.rect(x + 0.04 * cell_w, y + 0.06 * cell_h, 0.92 * cell_w, 0.88 * cell_h,
                   fill=palette.VERDICT_BACKGROUNDS.get(status, "#F5F5F5"), stroke=colour,
                   extra=f'{where} data-status="{esc(status)}" data-findings="{n}"')
            label = STATUS_MARK.get(status, status) + (f" {n}" if n and status in ("fail", "warn") else "")
            c.text(x + cell_w / 2, y + cell_h / 2, label, size=10, anchor="middle", color=colour,
                   bold=status == "fail")
    for j, check in enumerate(checks):
        x, y = left + (j + 0.5) * cell_w, bottom + 6
        c.text(x, y, check, size=10, anchor="end", baseline="hanging", rotate=-SLANT)
    legend(c, right + 6, top, legend_entries, size=10,
           edges={s: palette.verdict_color(s) for _, _, s in legend_entries})
    return c.svg()


# ---------------------------------------------------------------------------------- stacked bars

def _stacked_bars(c: Canvas, table, colours: dict, left: float, right: float, top: float, row_h: float,
                  most: float, bar: float = 0.7, label_size: float = 10.0, edge: str = "white",
                  label_colour=None) -> float:
    """Horizontal stacked bars, one row per index of ``table`` (a count per column); returns the
    bottom of the rows (``most``: the count at ``right``). Every segment carries its row, value and
    count as data attributes."""
    scale = (right - left) / most if most else 0.0
    for i, (row, counts) in enumerate(zip(table.index, table.to_numpy(float))):
        y = top + i * row_h
        c.text(left - 6, y + row_h / 2, row, size=label_size, anchor="end",
               color=label_colour(row) if label_colour else "#212121")
        x = left
        for col, n in zip(table.columns, counts):
            if n <= 0:
                continue
            w = n * scale
            c.rect(x, y + (1 - bar) / 2 * row_h, w, bar * row_h, fill=colours[col], stroke=edge, stroke_width=0.8,
                   extra=f' data-row="{esc(row)}" data-value="{esc(col)}" data-count="{int(n)}"')
            x += w
    bottom = top + len(table) * row_h
    c.line(left, top, left, bottom, width=0.8)
    return bottom


def tls_svg(analysis) -> str:
    """Three panels: TLS versions, cipher suites and client-certificate status per path (flow counts)."""
    counts = tls_counts(analysis)
    n_paths = len(counts["version"]) if counts else 1
    panel_h = 72 * max(1.6, 0.36 * n_paths + 1.0)
    height = 3 * panel_h + 0.6 * 72
    c = Canvas(WIDE, height, "TLS per path")
    c.text(8, 4, "TLS per path", size=TITLE_SIZE, baseline="hanging")
    if not counts:
        for k in range(3):
            c.text(WIDE / 2, 30 + (k + 0.5) * panel_h, "no TLS connections", size=11, anchor="middle", color="#666666")
        return c.svg()
    panels = tls_panels(counts)
    left = max(text_width(p, 10) for _, t, _ in panels for p in t.index) + 12
    right = WIDE - max(_legend_width([str(v) for v in t.columns], 9) for _, t, _ in panels) - 6
    top = 26.0
    for title, table, colours in panels:
        most = float(table.sum(axis=1).max()) or 1.0
        ticks = nice_ticks(0.0, most)
        c.text(left, top, title, size=11, baseline="hanging")
        rows_top = top + 18
        row_h = (panel_h - 18 - 40) / max(len(table), 1)
        bottom = _stacked_bars(c, table, colours, left, right, rows_top, row_h, most,
                               label_colour=palette.path_color)
        x_axis(c, left, right, bottom, [(left + (right - left) * t / most, tick_label(t)) for t in ticks],
               "TLS connections", size=10, label_size=9.5)
        legend(c, right + 6, rows_top, [(LEGEND_PATCH, colours[v], str(v)) for v in table.columns], size=9)
        top += panel_h
    return c.svg()


# --------------------------------------------------------------------------------------- requests

def requests_svg(analysis) -> str:
    """Requests per kind, grouped by path (path colours), hatched where they crossed as plain HTTP."""
    counts = requests_view.request_counts(analysis)
    height = 72 * max(2.2, 0.38 * max(len(counts), 1) + 1.2)
    c = Canvas(NARROW, height, "Requests per kind and path")
    if not len(counts):
        empty(c, "no request read (needs --keylog for TLS)")
        return c.svg()
    order = sorted(range(len(counts)), key=lambda i: (palette.path_sort_key(counts["flow_path"].iloc[i]),
                                                      counts["request_kind"].iloc[i]))
    counts = counts.iloc[order].reset_index(drop=True)
    labels = [f"{k}  ({p})" for p, k in zip(counts["flow_path"], counts["request_kind"])]
    left = max(text_width(s, 8) for s in labels) + 12
    right = NARROW - 12
    top, bottom = 24.0, height - 40
    row_h = (bottom - top) / len(counts)
    most = float((counts["tls"] + counts["plain"]).max()) or 1.0
    scale = (right - left) / most
    # plain HTTP: the path's colour, lighter, under one stripe pattern (a fixed id: each figure is its own image)
    c.raw('<defs><pattern id="plain-http" patternUnits="userSpaceOnUse" width="6" height="6">'
          '<path d="M0 6L6 0M-1 1L1 -1M5 7L7 5" stroke="#333333" stroke-width="0.8"/></pattern></defs>')
    c.text((left + right) / 2, 4, "Requests per kind and path", size=10, anchor="middle", baseline="hanging")
    for i, (label, path, kind, tls, plain) in enumerate(zip(labels, counts["flow_path"], counts["request_kind"],
                                                            counts["tls"], counts["plain"])):
        y = top + i * row_h + 0.1 * row_h
        colour = palette.path_color(path)
        c.text(left - 6, y + 0.4 * row_h, label, size=8, anchor="end")
        info = f' data-path="{esc(path)}" data-kind="{esc(kind)}"'
        c.rect(left, y, tls * scale, 0.8 * row_h, fill=colour, stroke="#333333", stroke_width=0.5,
               extra=f'{info} data-how="tls" data-count="{int(tls)}"')
        if plain:
            x = left + tls * scale
            c.rect(x, y, plain * scale, 0.8 * row_h, fill=colour, opacity=0.6, stroke="#333333", stroke_width=0.5,
                   extra=f'{info} data-how="plain" data-count="{int(plain)}"')
            c.rect(x, y, plain * scale, 0.8 * row_h, fill="url(#plain-http)")
    c.line(left, top, left, bottom, width=0.8)
    x_axis(c, left, right, bottom, [(left + t * scale, tick_label(t)) for t in nice_ticks(0.0, most)], "requests",
           size=9)
    lx = right - _legend_width(["decrypted TLS", "plain HTTP"], 8)
    ly = bottom - 2 * 8 * 1.45 - 4
    legend(c, lx, ly, [(LEGEND_PATCH, "#BBBBBB", "decrypted TLS"), (LEGEND_PATCH, "#BBBBBB", "plain HTTP")], size=8,
           edges={"decrypted TLS": "#333333", "plain HTTP": "#333333"})
    c.rect(lx, ly + 8 * 1.45 * 1.5 - 8 * 0.35, 16, 8 * 0.7, fill="url(#plain-http)")
    return c.svg()


__all__ = ["NARROW", "WIDE", "check_matrix_svg", "requests_svg", "tls_svg"]

"""The report's timeline and certificate-validity figures as SVG text, with UTC date ticks (see ``_svg``)."""

from __future__ import annotations

import datetime as _dt

import numpy as np
import pandas as pd

from . import _model, palette
from ._figure_data import MIN_WIDTH, TIMELINE_COLUMNS, cert_labels, row_bars, start_marks, timeline_rows, union_bars
from ._svg import (LEGEND_DASH, LEGEND_DIAMOND, LEGEND_PATCH, TITLE_SIZE, Canvas, empty, esc, legend, nice_ticks, num,
                   text_width, tick_label, x_axis)

MEDIUM = 792.0     # the figures' width in points (matplotlib's 11 in, kept)
_UTC = _dt.timezone.utc
#: fixed tick steps in seconds, smallest first (then whole months and years)
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800,
          604800, 1209600)


def _months(t0: float, t1: float, step: int) -> list[float]:
    """Starts of every ``step``-th month (counted from year 0, so the ticks line up) in [t0, t1]."""
    d = _dt.datetime.fromtimestamp(t0, _UTC)
    m = d.year * 12 + d.month - 1
    m += -m % step
    out = []
    while True:
        t = _dt.datetime(m // 12, m % 12 + 1, 1, tzinfo=_UTC).timestamp()
        if t > t1:
            return out
        if t >= t0:
            out.append(t)
        m += step


def date_ticks(t0: float, t1: float, most: int = 8) -> list[tuple[float, str]]:
    """UTC tick positions (epoch seconds) and short labels covering [t0, t1]: a year where one
    begins, a month name, a day, or a time of day, whichever the step calls for."""
    if not (np.isfinite(t0) and np.isfinite(t1)) or t1 <= t0:
        return []
    span = t1 - t0
    for step in _STEPS:
        if span // step + 1 <= most:
            first = np.ceil(t0 / step) * step
            ticks = [float(t) for t in np.arange(first, t1 + 1e-6, step)]
            return [(t, _label(t, step)) for t in ticks]
    for months in (1, 2, 3, 4, 6, 12, 24, 60, 120, 240, 600):
        ticks = _months(t0, t1, months)
        if len(ticks) <= most:
            return [(t, _label(t, months * 2_592_000)) for t in ticks]
    return []


def _label(t: float, step: float) -> str:
    d = _dt.datetime.fromtimestamp(t, _UTC)
    if step >= 2_592_000:                                # months and years
        return str(d.year) if d.month == 1 else d.strftime("%b")
    if step >= 86400 or (d.hour == 0 and d.minute == 0 and d.second == 0):
        return str(d.year) if (d.month, d.day) == (1, 1) else d.strftime("%b %d")
    return d.strftime("%H:%M:%S" if step < 60 else "%H:%M")


# ------------------------------------------------------------------------------------------- timeline

def timeline_svg(analysis) -> str:
    """Connections per path (per host and path with several captures) across the capture window:
    the union of their bars, a mark where they start, the count of connections at the right."""
    flows = timeline_rows(analysis, TIMELINE_COLUMNS)
    rows = (flows[["row", "_host", "_path"]].drop_duplicates()
            .assign(_o=lambda d: d["_path"].map(palette.path_sort_key))
            .sort_values(["_host", "_o"])["row"].tolist()) if len(flows) else []
    height = 72 * max(2.8, 0.38 * len(rows) + 1.6)
    title = "Connections per path over the capture window"
    c = Canvas(MEDIUM, height, title)
    if not len(flows):
        empty(c, "no connections")
        return c.svg()
    t0, t1 = _model.capture_window(analysis)
    if not np.isfinite(t0):
        t0, t1 = float(flows["ts_start"].min()), float(flows["ts_end"].max())
    as_dates = (t1 - t0) > 2 * 86400             # captures days apart: dates, not seconds since the start
    span = max(t1 - t0, 1e-3)
    left = max(text_width(r, 9) for r in rows) + 12
    right = MEDIUM - 10
    plot_right = right - 0.06 / 1.06 * (right - left)     # the last 6 % hold the counts
    scale = (plot_right - left) / span
    top, bottom = 24.0, height - 42
    row_h = (bottom - top) / len(rows)
    c.text(left, 4, title, size=TITLE_SIZE, baseline="hanging")
    ticks = ([(left + (t - t0) * scale, s) for t, s in date_ticks(t0, t0 + span * 1.06)] if as_dates else
             [(left + t * scale, tick_label(t)) for t in nice_ticks(0.0, span * 1.06)])
    for x, _ in ticks:
        c.line(x, top, x, bottom, stroke="#EEEEEE", width=0.8)
    min_w = span * MIN_WIDTH
    for i, (name, (at, path, aligned, width)) in enumerate(zip(rows, row_bars(flows, rows, min_w))):
        colour = palette.path_color(path)
        start = aligned - t0
        mid = top + (i + 0.5) * row_h
        c.text(left - 6, mid, name, size=9, anchor="end")
        bar_start, bar_width = union_bars(start, start + width)
        # one path element per row: its bars as sub-paths (thousands of connections stay one element)
        d = "".join(f"M{num(left + s * scale)} {num(mid - 0.32 * row_h)}h{num(w * scale)}v{num(0.64 * row_h)}"
                    f"h{num(-w * scale)}Z" for s, w in zip(bar_start, bar_width))
        c.path(d, fill=colour, opacity=0.55, extra=f' data-row="{esc(name)}" data-path="{esc(path)}"')
        marks = start_marks(start, 0.0, span)
        d = "".join(f"M{num(left + s * scale)} {num(mid - 5.5)}v11" for s in marks)
        c.path(d, stroke=colour, width=1.4, extra=f' data-marks="{len(marks)}"')
        c.text(plot_right + 0.01 * span * scale, mid, f"{len(at)}", size=8, color="#424242",
               extra=f' data-row="{esc(name)}" data-connections="{len(at)}"')
    c.line(left, top, left, bottom, width=0.8)
    start_label = pd.to_datetime(t0, unit="s", utc=True).strftime("%Y-%m-%d %H:%M:%S UTC")
    label = ("time (UTC); number right: connections" if as_dates else
             f"seconds since capture start ({start_label}); number right: connections")
    x_axis(c, left, right, bottom, ticks, label, size=10)
    return c.svg()



# -------------------------------------------------------------------------------------- certificates

def certs_svg(analysis, limit: int = 40) -> str:
    """Certificate validity windows against the capture time; expired and soon-expiring marked."""
    certs = _model.cert_states(analysis)
    shown = certs.sort_values("not_after").head(limit) if len(certs) else certs
    height = 72 * max(2.6, 0.36 * len(shown) + 1.8)
    extra = f" (first {limit} of {len(certs)} by expiry)" if len(certs) > limit else ""
    title = f"Certificate validity vs capture time{extra}"
    c = Canvas(MEDIUM, height, title)
    if not len(shown):
        empty(c, "no certificates observed (TLS 1.3 hides them unless a key log is given)")
        return c.svg()
    t0, t1 = _model.capture_window(analysis)

    def seconds(col) -> np.ndarray:         # epoch seconds, NaN where a date is missing (NaT)
        return (pd.to_datetime(shown[col], utc=True) - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(float)
    nb, na, seen = seconds("not_before"), seconds("not_after"), seconds("seen_start")
    labels = cert_labels(analysis, shown)
    states = [str(s) for s in shown["state"]]
    capture_line = bool(np.isfinite(t0) and (t1 - t0) < 60 * 86400)
    entries = [(LEGEND_PATCH, palette.CERT_STATE_COLORS[s], s) for s in palette.CERT_STATE_COLORS if s in set(states)]
    entries.append((LEGEND_DIAMOND, "#212121", "seen on the wire"))
    if capture_line:
        entries.append((LEGEND_DASH, "#212121", "capture start"))
    left = max(text_width(s, 8.5) for s in labels) + 12
    right = MEDIUM - (8.5 * 2.8 + max(text_width(e[2], 8.5) for e in entries) + 14)
    known = np.concatenate([nb, na, seen, [t0]])
    known = known[np.isfinite(known)]
    lo, hi = (float(known.min()), float(known.max())) if len(known) else (0.0, 86400.0)
    hi += 0.08 * (hi - lo or 86400)                # room for the 'expired' / 'expiring' marks
    scale = (right - left) / (hi - lo)
    top, bottom = 24.0, height - 30
    row_h = (bottom - top) / len(shown)

    def x(t: float) -> float:
        return left + (t - lo) * scale
    ticks = [(x(t), s) for t, s in date_ticks(lo, hi)]
    c.text(left, 4, title, size=TITLE_SIZE, baseline="hanging")
    for tx, _ in ticks:
        c.line(tx, top, tx, bottom, stroke="#EEEEEE", width=0.8)
    fingerprints = [_model.text(f) for f in shown["fingerprint"]]
    subjects = [_model.text(s) for s in shown["subject"]]
    for i, (label, state) in enumerate(zip(labels, states)):
        mid = top + (i + 0.5) * row_h
        colour = palette.CERT_STATE_COLORS.get(state, "#9E9E9E")
        c.text(left - 6, mid, label, size=8.5, anchor="end")
        if not (np.isfinite(nb[i]) and np.isfinite(na[i])):      # an unreadable date: no window to draw
            c.text(left + 4, mid, "validity dates unknown", size=8, color="#666666")
        else:
            c.rect(x(nb[i]), mid - 0.3 * row_h, (na[i] - nb[i]) * scale, 0.6 * row_h, fill=colour, opacity=0.8,
                   extra=f' data-subject="{esc(subjects[i])}" data-fingerprint="{esc(fingerprints[i])}" '
                         f'data-state="{esc(state)}"')
            if state != "valid":
                c.text(x(na[i]) + 4, mid, state, size=8, color=colour, bold=True)
        if not np.isfinite(seen[i]):
            continue
        r = 3.5
        sx = x(seen[i])
        c.path(f"M{num(sx)} {num(mid - r)}L{num(sx + r)} {num(mid)}L{num(sx)} {num(mid + r)}L{num(sx - r)} {num(mid)}Z",
               fill="#212121")
    if capture_line:
        c.line(x(t0), top, x(t0), bottom, width=1.2, dash="4 2")
    c.line(left, top, left, bottom, width=0.8)
    x_axis(c, left, right, bottom, ticks, size=10)
    legend(c, right + 8, top, entries, size=8.5)
    return c.svg()


__all__ = ["MEDIUM", "certs_svg", "date_ticks", "timeline_svg"]

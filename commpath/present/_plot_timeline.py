"""The timeline: connections per path (and host) across the capture window.

Drawn from aggregated data, so its cost follows the picture, not the capture: in each row the
union of the connections' bars (each at least 0.4 % of the window wide, as before) and one start
mark per 1/``MARK_BINS`` of the window; the number right of each row counts every connection.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import _model, palette
from ._figure_data import MIN_WIDTH, row_bars, start_marks, timeline_rows, union_bars
from ._figure_data import TIMELINE_COLUMNS as COLUMNS
from ._plot_common import TITLE_Y, _empty, _new_axes


def axis_units(t0: float, t1: float) -> tuple[float, float, bool]:
    """(origin, scale, as_dates): x = (epoch seconds - origin) / scale; captures days apart get a
    date axis (matplotlib's day numbers) instead of seconds since the first packet."""
    if (t1 - t0) > 2 * 86400:
        import matplotlib.dates as mdates
        return -mdates.date2num(pd.Timestamp(0, unit="s", tz="UTC")) * 86400, 86400.0, True
    return t0, 1.0, False


def timeline(analysis, ax=None) -> Figure:
    """Connections per path across the capture window (per host when several captures)."""
    flows = timeline_rows(analysis, COLUMNS)
    rows = (flows[["row", "_host", "_path"]].drop_duplicates()
            .assign(_o=lambda d: d["_path"].map(palette.path_sort_key))
            .sort_values(["_host", "_o"])["row"].tolist()) if len(flows) else []
    fig, ax = _new_axes(ax, (11, max(2.8, 0.38 * len(rows) + 1.6)))
    if not len(flows):
        _empty(ax, "no connections")
        return fig
    t0, t1 = _model.capture_window(analysis)
    if not np.isfinite(t0):
        t0, t1 = float(flows["ts_start"].min()), float(flows["ts_end"].max())
    origin, scale, as_dates = axis_units(t0, t1)
    if as_dates:
        import matplotlib.dates as mdates
    span = max((t1 - t0) / scale, 1e-3)
    left = (t0 - origin) / scale
    min_w = span * MIN_WIDTH
    for i, (at, path, aligned, width) in enumerate(row_bars(flows, rows, min_w * scale)):
        color = palette.path_color(path)
        start, width = (aligned - origin) / scale, width / scale
        bar_start, bar_width = union_bars(start, start + width)
        ax.broken_barh(list(zip(bar_start, bar_width)), (i - 0.32, 0.64), facecolors=color, alpha=0.55,
                       edgecolor="none")
        marks = start_marks(start, left, span)
        ax.plot(marks, np.full(len(marks), i), "|", color=color, ms=11, mew=1.4)
        ax.text(left + span * 1.01, i, f"{len(at)}", va="center", fontsize=8, color="#424242")
    ax.set_yticks(range(len(rows)), rows, fontsize=9)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(left, left + span * 1.06)
    if as_dates:
        ax.xaxis_date()
        locator = mdates.AutoDateLocator(maxticks=8)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.set_xlabel("time (UTC); number right: connections")
    else:
        start_label = pd.to_datetime(t0, unit="s", utc=True).strftime("%Y-%m-%d %H:%M:%S UTC")
        ax.set_xlabel(f"seconds since capture start ({start_label}); number right: connections")
    ax.grid(axis="x", color="#EEEEEE")
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title("Connections per path over the capture window", fontsize=12, loc="left", y=TITLE_Y)
    return fig

"""Matplotlib figures of an analysis: path map, path x check matrix, timeline, TLS, certificates.

The larger figures live in private modules (``_plot_map``, ``_plot_timeline``, ``_plot_tls``);
this module keeps the smaller ones, the export to PNG/SVG and the names users call.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from . import _model, palette
from ._figure_data import (CONTROL_PLANE_ROLES, ROLE_ORDER, STATUS_MARK, cert_labels, path_map_edges, timeline_rows,
                           tls_counts)
from ._plot_common import FONT, TITLE_Y, _empty, _new_axes
from ._plot_map import path_map
from ._plot_timeline import timeline
from ._plot_tls import tls_overview

# ------------------------------------------------------------------------------ path x check matrix



def check_matrix(analysis, ax=None, fail_on: str | None = None) -> Figure:
    """Documented paths x checks, each cell pass / fail / warn / not-observable / not-observed.

    Sized for the report's 12 in column so that cell text stays at 10 pt once the page shows it."""
    results = _model.check_results(analysis, fail_on)
    paths = _model.sorted_paths(results["path"]) if len(results) else []
    checks = list(dict.fromkeys(results["check"]))      # in the order of first appearance
    fig, ax = _new_axes(ax, (12, max(3.0, 0.46 * len(paths) + 2.6)))
    if not len(results):
        _empty(ax, "no documented path")
        return fig
    # one lookup per cell, not a filter of the table; the cells are added without updating the data
    # limits (set below), which is most of add_patch's cost
    cells: dict = {}
    for path, check, status, n in zip(results["path"], results["check"], results["status"], results["findings"]):
        cells.setdefault((path, check), (status, n))
    for i, path in enumerate(paths):
        for j, check in enumerate(checks):
            if (path, check) not in cells:
                ax.add_artist(_cell(j, i, "#FFFFFF", "#EEEEEE"))
                continue
            status, n = cells[(path, check)]
            n = int(n)
            ax.add_artist(_cell(j, i, palette.VERDICT_BACKGROUNDS[status], palette.verdict_color(status)))
            label = STATUS_MARK[status] + (f" {n}" if n and status in ("fail", "warn") else "")
            ax.text(j + 0.5, i + 0.5, label, ha="center", va="center", fontsize=10,
                    color=palette.verdict_color(status), fontweight="bold" if status == "fail" else "normal")
    ax.set_xlim(0, len(checks))
    ax.set_ylim(len(paths), 0)
    ax.set_xticks(np.arange(len(checks)) + 0.5, checks, rotation=40, ha="right", rotation_mode="anchor", fontsize=10)
    ax.set_yticks(np.arange(len(paths)) + 0.5, paths, fontsize=10.5)
    for tick, path in zip(ax.get_yticklabels(), paths):
        tick.set_color(palette.path_color(path))
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.legend(handles=[Patch(fc=palette.VERDICT_BACKGROUNDS[s], ec=palette.verdict_color(s), label=s)
                       for s in palette.VERDICT_ORDER if s != "inconclusive"],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=10, frameon=False)
    fail_at, warn_at = _model.thresholds(analysis, fail_on)
    ax.set_title(f"Checks per path (fail at or above {fail_at}, warn at or above {warn_at})", fontsize=12, loc="left",
                 y=TITLE_Y)
    return fig


def _cell(x, y, face, edge):
    from matplotlib.patches import Rectangle
    return Rectangle((x + 0.04, y + 0.06), 0.92, 0.88, fc=face, ec=edge, lw=1.0)


# ------------------------------------------------------------------------------------ certificates

def cert_validity(analysis, ax=None, limit: int = 40) -> Figure:
    """Certificate validity windows against the capture time; expired and soon-expiring marked."""
    certs = _model.cert_states(analysis)
    shown = certs.sort_values("not_after").head(limit) if len(certs) else certs
    fig, ax = _new_axes(ax, (11, max(2.6, 0.36 * len(shown) + 1.8)))
    if not len(shown):
        _empty(ax, "no certificates observed (TLS 1.3 hides them unless a key log is given)")
        return fig
    import matplotlib.dates as mdates
    t0, t1 = _model.capture_window(analysis)
    for i, (_, c) in enumerate(shown.iterrows()):
        nb, na = pd.Timestamp(c["not_before"]), pd.Timestamp(c["not_after"])
        state = c["state"]
        color = palette.CERT_STATE_COLORS[state]
        ax.barh(i, mdates.date2num(na) - mdates.date2num(nb), left=mdates.date2num(nb), height=0.6,
                color=color, alpha=0.8)
        if state != "valid":
            ax.text(mdates.date2num(na), i, f"  {state}", va="center", fontsize=8, color=color, fontweight="bold")
    labels = cert_labels(analysis, shown)
    ax.set_yticks(range(len(shown)), labels, fontsize=8.5)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    seen = mdates.date2num(pd.to_datetime(shown["seen_start"], utc=True))
    ax.plot(seen, np.arange(len(shown)), marker="D", ls="none", color="#212121", ms=5, zorder=3)
    if np.isfinite(t0) and (t1 - t0) < 60 * 86400:
        cap = mdates.date2num(pd.to_datetime([t0, t1], unit="s", utc=True))
        ax.axvline(cap[0], color="#212121", lw=1.2, ls="--")
    ax.xaxis_date()
    locator = mdates.AutoDateLocator(maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(axis="x", color="#EEEEEE")
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    present = [s for s in palette.CERT_STATE_COLORS if s in set(shown["state"])]
    handles = [Patch(color=palette.CERT_STATE_COLORS[s], label=s) for s in present]
    handles.append(Line2D([], [], color="#212121", marker="D", ls="none", ms=5, label="seen on the wire"))
    if np.isfinite(t0) and (t1 - t0) < 60 * 86400:
        handles.append(Line2D([], [], color="#212121", lw=1.2, ls="--", label="capture start"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, frameon=False)
    extra = f" (first {limit} of {len(certs)} by expiry)" if len(certs) > limit else ""
    ax.set_title(f"Certificate validity vs capture time{extra}", fontsize=12, loc="left", y=TITLE_Y)
    return fig


# ------------------------------------------------------------------------------------------ export

FIGURES = {
    "path_map": path_map,
    "check_matrix": check_matrix,
    "timeline": timeline,
    "tls": tls_overview,
    "certs": cert_validity,
}


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def figure_svg(fig: Figure) -> bytes:
    """The figure as SVG (text drawn as paths, so it looks the same without the fonts)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", facecolor="white", metadata={"Date": None})
    return buf.getvalue()


def figure_svg_base64(fig: Figure) -> str:
    return base64.b64encode(figure_svg(fig)).decode("ascii")


def all_figures(analysis, fail_on: str | None = None) -> dict[str, Figure]:
    """Every figure of the report, by name."""
    return {
        "path_map": path_map(analysis),
        "check_matrix": check_matrix(analysis, fail_on=fail_on),
        "timeline": timeline(analysis),
        "tls": tls_overview(analysis),
        "certs": cert_validity(analysis),
    }


__all__ = ["CONTROL_PLANE_ROLES", "FIGURES", "FONT", "ROLE_ORDER", "STATUS_MARK", "all_figures", "cert_validity",
           "check_matrix", "figure_png", "figure_svg", "figure_svg_base64", "path_map",
           "path_map_edges", "timeline", "timeline_rows", "tls_counts", "tls_overview"]

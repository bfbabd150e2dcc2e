"""TLS per path: negotiated versions, cipher suites and client-certificate states (flow counts)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import palette
from ._figure_data import tls_counts, tls_panels
from ._plot_common import TITLE_Y, _empty


def tls_overview(analysis, fail_on: str | None = None) -> Figure:
    """Three panels, one above the other: TLS versions, cipher suites and client-certificate status
    per path (flow counts), each with its full legend beside it."""
    counts = tls_counts(analysis)
    n_paths = len(counts["version"]) if counts else 1
    fig = Figure(figsize=(12, 3 * max(1.6, 0.36 * n_paths + 1.0) + 0.6), layout="constrained")
    axes = fig.subplots(3, 1, sharex=False)
    if not counts:
        for ax in axes:
            _empty(ax, "no TLS connections")
        return fig
    panels = [(title, table, colors.__getitem__) for title, table, colors in tls_panels(counts)]
    for ax, (title, table, color_of) in zip(axes, panels):
        _stacked(ax, table, color_of)
        ax.set_title(title, fontsize=11, loc="left", y=TITLE_Y)
        ax.set_xlabel("TLS connections", fontsize=9.5)
        for tick, path in zip(ax.get_yticklabels(), table.index):
            tick.set_color(palette.path_color(path))
    fig.suptitle("TLS per path", fontsize=12, x=0.01, ha="left")
    return fig


def _stacked(ax, table: pd.DataFrame, color_of) -> None:
    y = np.arange(len(table))
    left = np.zeros(len(table))
    for col in table.columns:
        values = table[col].to_numpy(float)
        ax.barh(y, values, left=left, color=color_of(col), label=str(col), edgecolor="white", height=0.7)
        left += values
    ax.set_yticks(y, list(table.index), fontsize=10)
    ax.set_ylim(len(table) - 0.5, -0.5)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _short(name: str, limit: int = 34) -> str:
    name = str(name)
    return name if len(name) <= limit else name[: limit - 1] + "…"

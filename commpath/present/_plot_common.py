"""What every matplotlib figure shares: fresh axes, the empty-figure note, the font and the titles' place."""

from __future__ import annotations

from matplotlib.figure import Figure

FONT = {"family": "DejaVu Sans"}
#: titles sit at the top of their axes: matplotlib's automatic placement only lifts a title above tick
#: labels on top (none here) and measured every tick label again on each draw (11 % of the SVG export)
TITLE_Y = 1.0


def _new_axes(ax, size, nrows=1, ncols=1, **kw):
    """The axes to draw on: the given one, or a fresh figure (not registered with pyplot)."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, **kw)
    return fig, axes


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666666", fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)



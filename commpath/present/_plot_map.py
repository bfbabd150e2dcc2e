"""The path map: roles as nodes, documented paths as edges coloured by verdict, labels kept apart."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch
from matplotlib.path import Path as MplPath

from . import _model, palette
from ._figure_data import edge_curve, is_control_plane, node_positions, path_map_edges
from ._plot_common import TITLE_Y, _empty, _new_axes


def _boxes(texts) -> list:
    """Display-space boxes (with their padding) of text artists after a layout pass."""
    out = []
    for t in texts:
        patch = t.get_bbox_patch()
        out.append(patch.get_window_extent() if patch is not None else t.get_window_extent())
    return out


def path_map(analysis, ax=None) -> Figure:
    """Hosts and roles as nodes, documented paths as edges coloured by verdict, labelled with flow counts.

    Nodes are placed in two columns (control plane left, nodes right: ``node_positions``); every edge is
    trimmed to the boxes of its two nodes, and every edge label is slid along its edge until it
    overlaps no node and no other label."""
    edges = path_map_edges(analysis)
    hosts = _model.role_hosts_scoped(analysis)
    roles = sorted(set(edges["src_role"]) | set(edges["dst_role"])) if len(edges) else []
    pos = node_positions(roles)
    rows = max([1] + [sum(1 for r in roles if is_control_plane(r) == side) for side in (True, False)])
    fig, ax = _new_axes(ax, (12, max(4.8, 1.25 * rows + 1.8)))
    if not len(edges):
        _empty(ax, "no control-plane traffic observed")
        return fig
    xs = [p[0] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.75, max(xs) + 0.75)
    ax.set_ylim(-(rows - 1) / 2 - 0.75, (rows - 1) / 2 + 0.85)
    ax.axis("off")
    used = [v for v in palette.VERDICT_ORDER if v in set(edges["verdict"])]
    ax.legend(handles=[Line2D([], [], color=palette.verdict_color(v), lw=3, label=v) for v in used],
              title="path verdict", loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, title_fontsize=9.5,
              frameon=False)
    ax.set_title("Path map: who talks to whom, per documented path", fontsize=12, loc="left", y=TITLE_Y)
    nodes = {}
    for role, (x, y) in pos.items():
        members = hosts.get(role, [])
        lines = [", ".join(members[i:i + 2]) for i in range(0, min(len(members), 4), 2)]
        shown = "\n".join(lines) + (f" +{len(members) - 4}" if len(members) > 4 else "")
        nodes[role] = ax.text(x, y, f"{role}\n{shown}" if shown else role, ha="center", va="center", fontsize=10,
                              zorder=5, fontweight="bold",
                              bbox=dict(boxstyle="round,pad=0.45", fc="#ECEFF1" if is_control_plane(role) else "#FFF8E1",
                                        ec="#455A64", lw=1.2))
    top = max(p[1] for p in pos.values()) + 0.62
    headings = []
    if any(is_control_plane(r) for r in roles):
        headings.append(ax.text(min(xs), top, "control plane", ha="center", fontsize=11, color="#455A64"))
    if any(not is_control_plane(r) for r in roles):
        headings.append(ax.text(max(xs), top, "nodes / pods", ha="center", fontsize=11, color="#455A64"))
    fig.draw_without_rendering()
    to_data = ax.transData.inverted()
    node_box = {r: to_data.transform_bbox(b) for r, b in zip(nodes, _boxes(nodes.values()))}
    taken = [b for b in _boxes(nodes.values())] + [h.get_window_extent() for h in headings]
    pair_count: dict[tuple[str, str], int] = {}
    total = float(edges["flows"].max())
    for _, e in edges.iterrows():
        a, b = e["src_role"], e["dst_role"]
        key = tuple(sorted((a, b)))
        k = pair_count.get(key, 0)
        pair_count[key] = k + 1
        curve = edge_curve(np.array(pos[a]), np.array(pos[b]), np.array(pos[key[0]]), np.array(pos[key[1]]), k)
        curve = _outside(curve, node_box[a], node_box[b])
        color = palette.verdict_color(e["verdict"])
        width = 1.5 + 3.0 * math.log1p(e["flows"]) / math.log1p(total)
        ax.add_patch(FancyArrowPatch(path=MplPath(curve), arrowstyle="-|>", mutation_scale=18, color=color,
                                     lw=width, alpha=0.9, zorder=2))
        label = ax.text(*curve[len(curve) // 2], f"{e['path']}\n{int(e['flows'])} flow{'s' if e['flows'] != 1 else ''}",
                        ha="center", va="center", fontsize=9, zorder=4, color="#212121",
                        bbox=dict(boxstyle="round,pad=0.25", fc="white", ec=palette.path_color(e["path"]), lw=1.8))
        taken.append(_place_label(label, curve, ax, taken))
    return fig


def _outside(curve: np.ndarray, box_a, box_b, margin: float = 0.012) -> np.ndarray:
    """The part of the curve outside both node boxes (data coordinates), so it starts and ends at
    their edges and its arrow head stays visible."""
    def inside(box):
        return ((curve[:, 0] > box.x0 - margin) & (curve[:, 0] < box.x1 + margin)
                & (curve[:, 1] > box.y0 - margin) & (curve[:, 1] < box.y1 + margin))
    outside = np.flatnonzero(~(inside(box_a) | inside(box_b)))
    if len(outside) < 2:
        return curve[len(curve) // 3: 2 * len(curve) // 3 + 1]
    return curve[outside[0]: outside[-1] + 1]


#: Where along its edge a label may sit (fractions of the edge), most preferred first.
LABEL_SPOTS = (0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78, 0.15, 0.85)


def _place_label(label, curve: np.ndarray, ax, taken: list):
    """Slide ``label`` along ``curve`` (and, where the edge is crowded, to either side of it) to the
    first spot where its box overlaps none of ``taken`` (display boxes); the least overlapping spot
    when none is free. Returns its box."""
    renderer = ax.figure._get_renderer()
    to_display, to_data = ax.transData, ax.transData.inverted()
    label.update_bbox_position_size(renderer)
    height = label.get_bbox_patch().get_window_extent().height + 4
    best, best_overlap = None, None
    for shift in (0.0, 1.0, -1.0, 2.0, -2.0):
        for spot in LABEL_SPOTS:
            i = min(len(curve) - 1, int(spot * (len(curve) - 1)))
            x, y = to_display.transform(curve[i])
            label.set_position(to_data.transform((x, y + shift * height)))
            label.update_bbox_position_size(renderer)
            box = label.get_bbox_patch().get_window_extent()
            overlap = sum(_overlap_area(box, other) for other in taken)
            if best_overlap is None or overlap < best_overlap:
                best, best_overlap = (label.get_position(), box), overlap
            if overlap == 0:
                label.set_position(best[0])
                return best[1]
    label.set_position(best[0])
    return best[1]


def _overlap_area(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0

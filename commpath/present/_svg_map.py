"""The report's path map as SVG text: roles as boxes, documented paths as arrows coloured by verdict (see ``_svg``)."""

from __future__ import annotations

import math

import numpy as np

from . import _model, palette
from ._figure_data import edge_curve, is_control_plane, node_positions, path_map_edges
from ._svg import LEGEND_LINE, TITLE_SIZE, Canvas, empty, esc, legend, num, text_width

WIDTH = 864.0
TITLE = "Path map: who talks to whom, per documented path"
NODE_SIZE, LABEL_SIZE = 10.0, 9.0
#: where along its edge a label may sit (fractions of the edge), most preferred first
LABEL_SPOTS = (0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78, 0.15, 0.85)
#: the arrow head: length and half width in points (matplotlib's '-|>' at mutation scale 18)
HEAD_LENGTH, HEAD_HALF = 7.2, 3.6

Box = tuple[float, float, float, float]      # x0, y0, x1, y1 in points, y down


def _text_box(cx: float, cy: float, lines: list[str], size: float, pad: float, bold: bool) -> Box:
    w = max(text_width(s, size, bold) for s in lines) + 2 * pad
    h = len(lines) * size * 1.2 + 2 * pad
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _overlap(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _draw_box_text(c: Canvas, box: Box, lines: list[str], size: float, bold: bool, fill: str, stroke: str,
                   stroke_width: float, extra: str = "") -> None:
    c.rect(box[0], box[1], box[2] - box[0], box[3] - box[1], fill=fill, stroke=stroke, stroke_width=stroke_width,
           rx=4, extra=extra)
    cx, line_h = (box[0] + box[2]) / 2, size * 1.2
    first = (box[1] + box[3]) / 2 - (len(lines) - 1) * line_h / 2
    for k, line in enumerate(lines):
        c.text(cx, first + k * line_h, line, size=size, anchor="middle", bold=bold, extra=extra)


def _outside(points: np.ndarray, a: Box, b: Box, margin: float = 2.0) -> np.ndarray:
    """The part of the curve outside both node boxes, so it starts and ends at their edges."""
    def inside(box):
        return ((points[:, 0] > box[0] - margin) & (points[:, 0] < box[2] + margin)
                & (points[:, 1] > box[1] - margin) & (points[:, 1] < box[3] + margin))
    keep = np.flatnonzero(~(inside(a) | inside(b)))
    if len(keep) < 2:
        return points[len(points) // 3: 2 * len(points) // 3 + 1]
    return points[keep[0]: keep[-1] + 1]


def _arrow(points: np.ndarray, width: float) -> tuple[str, str]:
    """(the line's path data, the head's path data): the line stops where the head begins."""
    head = HEAD_LENGTH + width
    tip = points[-1]
    dist = np.hypot(*(points - tip).T)
    back = np.flatnonzero(dist >= head)
    base = points[back[-1]] if len(back) else points[0]
    direction = tip - base
    direction = direction / (np.hypot(*direction) or 1.0)
    base = tip - direction * head
    line = points[: (back[-1] + 1) if len(back) else 1]
    d = "M" + "L".join(f"{num(x)} {num(y)}" for x, y in [*line[::3], base])
    normal = np.array([-direction[1], direction[0]]) * (HEAD_HALF + width / 2)
    corners = [tip, base + normal, base - normal]
    return d, "M" + "L".join(f"{num(x)} {num(y)}" for x, y in corners) + "Z"


def path_map_svg(analysis) -> str:
    """Roles as nodes (control plane left, nodes right: ``node_positions``), each documented path as
    an arrow coloured by its verdict, labelled with its path id and connection count; every label
    slid along its edge until it overlaps no node and no other label."""
    edges = path_map_edges(analysis)
    hosts = _model.role_hosts_scoped(analysis)
    roles = sorted(set(edges["src_role"]) | set(edges["dst_role"])) if len(edges) else []
    pos = node_positions(roles)
    rows = max([1] + [sum(1 for r in roles if is_control_plane(r) == side) for side in (True, False)])
    height = 72 * max(4.8, 1.25 * rows + 1.8)
    c = Canvas(WIDTH, height, TITLE)
    c.text(8, 4, TITLE, size=TITLE_SIZE, baseline="hanging")
    if not len(edges):
        empty(c, "no control-plane traffic observed")
        return c.svg()
    used = [v for v in palette.VERDICT_ORDER if v in set(edges["verdict"])]
    legend_w = 9 * 2.8 + max(text_width(v, 9) for v in [*used, "path verdict"]) + 12
    xs = [p[0] for p in pos.values()]
    x_lo, x_hi = min(xs) - 0.75, max(xs) + 0.75
    y_lo, y_hi = -(rows - 1) / 2 - 0.75, (rows - 1) / 2 + 0.85
    left, right, top, bottom = 8.0, WIDTH - legend_w - 8, 24.0, height - 8

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x_lo) / (x_hi - x_lo) * (right - left), top + (y_hi - y) / (y_hi - y_lo) * (bottom - top))
    legend(c, right + 4, top, [(LEGEND_LINE, palette.verdict_color(v), v) for v in used], size=9, title="path verdict")
    nodes: dict[str, tuple[Box, list[str]]] = {}
    for role, (x, y) in pos.items():
        members = hosts.get(role, [])
        lines = [role] + [", ".join(members[i:i + 2]) for i in range(0, min(len(members), 4), 2)]
        if len(members) > 4:
            lines[-1] += f" +{len(members) - 4}"
        nodes[role] = (_text_box(*at(x, y), lines, NODE_SIZE, 0.45 * NODE_SIZE, True), lines)
    taken = [box for box, _ in nodes.values()]
    heading_y = at(0, max(p[1] for p in pos.values()) + 0.62)[1]
    for side, label, column_x in ((True, "control plane", min(xs)), (False, "nodes / pods", max(xs))):
        if any(is_control_plane(r) == side for r in roles):
            hx = at(column_x, 0)[0]
            c.text(hx, heading_y, label, size=11, anchor="middle", color="#455A64")
            taken.append((hx - text_width(label, 11) / 2, heading_y - 8, hx + text_width(label, 11) / 2, heading_y + 8))
    pair_count: dict[tuple[str, str], int] = {}
    total = float(edges["flows"].max())
    labels = []
    for path, a, b, flows, verdict in zip(edges["path"], edges["src_role"], edges["dst_role"], edges["flows"],
                                          edges["verdict"]):
        key = tuple(sorted((a, b)))
        k = pair_count.get(key, 0)
        pair_count[key] = k + 1
        curve = edge_curve(np.array(pos[a]), np.array(pos[b]), np.array(pos[key[0]]), np.array(pos[key[1]]), k)
        points = np.array([at(x, y) for x, y in curve])
        points = _outside(points, nodes[a][0], nodes[b][0])
        colour = palette.verdict_color(verdict)
        width = 1.5 + 3.0 * math.log1p(flows) / math.log1p(total)
        line, head = _arrow(points, width)
        info = (f' data-path="{esc(path)}" data-src="{esc(a)}" data-dst="{esc(b)}" data-flows="{int(flows)}" '
                f'data-verdict="{esc(verdict)}"')
        c.path(line, stroke=colour, width=width, opacity=0.9, extra=info + ' stroke-linecap="round"')
        c.path(head, fill=colour, opacity=0.9)
        text = [str(path), f"{int(flows)} flow{'s' if flows != 1 else ''}"]
        box = _place(points, text, taken)
        taken.append(box)
        labels.append((box, text, path, info))
    # edges first, then labels and nodes on top of them (matplotlib's z-order, kept)
    for box, text, path, info in labels:
        _draw_box_text(c, box, text, LABEL_SIZE, False, "white", palette.path_color(path), 1.8, extra=info)
    for role, (box, lines) in nodes.items():
        _draw_box_text(c, box, lines, NODE_SIZE, True, "#ECEFF1" if is_control_plane(role) else "#FFF8E1", "#455A64",
                       1.2, extra=f' data-role="{esc(role)}"')
    return c.svg()


def _place(points: np.ndarray, text: list[str], taken: list[Box]) -> Box:
    """The label's box at the first spot along the edge (or beside it) that overlaps nothing
    taken; the least overlapping spot when none is free."""
    probe = _text_box(0.0, 0.0, text, LABEL_SIZE, 0.25 * LABEL_SIZE, False)
    height = probe[3] - probe[1] + 4
    best, best_overlap = None, None
    for shift in (0.0, 1.0, -1.0, 2.0, -2.0):
        for spot in LABEL_SPOTS:
            x, y = points[min(len(points) - 1, int(spot * (len(points) - 1)))]
            box = (probe[0] + x, probe[1] + y + shift * height, probe[2] + x, probe[3] + y + shift * height)
            overlap = sum(_overlap(box, other) for other in taken)
            if best_overlap is None or overlap < best_overlap:
                best, best_overlap = box, overlap
            if overlap == 0:
                return box
    return best


__all__ = ["path_map_svg"]

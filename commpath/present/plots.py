"""Matplotlib figures of an analysis: path map, path x check matrix, timeline, TLS, certificates."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, Patch
from matplotlib.path import Path as MplPath

from . import _model, palette

CONTROL_PLANE_ROLES = ("apiserver", "kube-apiserver", "scheduler", "kube-scheduler", "controller-manager",
                       "kube-controller-manager", "control-plane", "etcd", "konnectivity-server",
                       "cloud-controller-manager", "apiserver-service", "kubernetes-service")
FONT = {"family": "DejaVu Sans"}


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


def _is_control_plane(role: str) -> bool:
    r = role.lower()
    return r in CONTROL_PLANE_ROLES or r.startswith(("apiserver", "kube-apiserver", "etcd", "control"))


# ---------------------------------------------------------------------------------------- path map

def path_map_edges(analysis) -> pd.DataFrame:
    """Edges of the path map: one row per (path, src_role, dst_role) with its flow count and verdict."""
    flows = _model.frame(analysis, "flows")
    cols = ["path", "src_role", "dst_role", "flows", "verdict"]
    if not len(flows) or "path" not in flows:
        return pd.DataFrame(columns=cols)
    scoped = flows[flows["path"].astype(str) != "other"]
    edges = (scoped.assign(path=scoped["path"].astype(str), src_role=scoped["src_role"].astype(str),
                           dst_role=scoped["dst_role"].astype(str))
             .groupby(["path", "src_role", "dst_role"]).size().rename("flows").reset_index())
    verdicts = dict(zip(_model.frame(analysis, "paths")["id"].astype(str),
                        _model.frame(analysis, "paths")["verdict"].astype(str)))
    edges["verdict"] = edges["path"].map(verdicts).fillna("not-observed")
    edges = edges[edges["flows"] > 0]
    order = edges["path"].map(palette.path_sort_key)
    return edges.assign(_o=order).sort_values(["_o", "src_role", "dst_role"]).drop(columns="_o").reset_index(drop=True)


#: Top-to-bottom order of roles in their column, so that most edges run across, not along, the map.
ROLE_ORDER = ("control-plane", "kube-scheduler", "scheduler", "kube-controller-manager", "controller-manager",
              "apiserver", "kube-apiserver", "etcd", "kubernetes-service", "apiserver-service",
              "konnectivity-server",
              "kubelet", "node", "pod", "service", "konnectivity-agent")


def _role_rank(role: str) -> tuple[int, str]:
    try:
        return (ROLE_ORDER.index(role), role)
    except ValueError:
        return (len(ROLE_ORDER), role)


def _node_positions(roles: list[str]) -> dict[str, tuple[float, float]]:
    """Control-plane roles in the left column, node-side roles in the right one, each in ROLE_ORDER
    from the top (networkx's multipartite layout, rescaled into [-1, 1])."""
    import networkx as nx
    if len(roles) < 2:
        return {r: (0.0, 0.0) for r in roles}
    left = sorted([r for r in roles if _is_control_plane(r)], key=_role_rank)
    right = sorted([r for r in roles if not _is_control_plane(r)], key=_role_rank)
    layers = {i: column for i, column in enumerate(c for c in (left, right) if c)}
    graph = nx.Graph()
    graph.add_nodes_from(roles)
    pos = nx.multipartite_layout(graph, subset_key=layers, align="vertical", scale=1.0)
    # networkx spaces each column evenly and scales both axes alike; here the columns go to x = -1 / +1
    # and one gap between neighbours becomes one unit, with the first role of ROLE_ORDER on top
    xs = sorted({round(float(p[0]), 9) for p in pos.values()})
    x_unit = (xs[-1] - xs[0]) / 2 if len(xs) > 1 else 1.0
    gaps = [abs(float(pos[c[i]][1]) - float(pos[c[i + 1]][1])) for c in layers.values() for i in range(len(c) - 1)]
    y_unit = min(gaps) if gaps else 1.0
    centre = (xs[0] + xs[-1]) / 2
    return {r: ((float(p[0]) - centre) / x_unit, -float(p[1]) / y_unit) for r, p in pos.items()}


def _boxes(texts) -> list:
    """Display-space boxes (with their padding) of text artists after a layout pass."""
    out = []
    for t in texts:
        patch = t.get_bbox_patch()
        out.append(patch.get_window_extent() if patch is not None else t.get_window_extent())
    return out


def path_map(analysis, ax=None) -> Figure:
    """Hosts and roles as nodes, documented paths as edges coloured by verdict, labelled with flow counts.

    Nodes are placed by networkx (multipartite: control plane left, nodes right); every edge is
    trimmed to the boxes of its two nodes, and every edge label is slid along its edge until it
    overlaps no node and no other label."""
    edges = path_map_edges(analysis)
    hosts = _model.role_hosts_scoped(analysis)
    roles = sorted(set(edges["src_role"]) | set(edges["dst_role"])) if len(edges) else []
    pos = _node_positions(roles)
    rows = max([1] + [sum(1 for r in roles if _is_control_plane(r) == side) for side in (True, False)])
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
    ax.set_title("Path map: who talks to whom, per documented path", fontsize=12, loc="left")
    nodes = {}
    for role, (x, y) in pos.items():
        members = hosts.get(role, [])
        lines = [", ".join(members[i:i + 2]) for i in range(0, min(len(members), 4), 2)]
        shown = "\n".join(lines) + (f" +{len(members) - 4}" if len(members) > 4 else "")
        nodes[role] = ax.text(x, y, f"{role}\n{shown}" if shown else role, ha="center", va="center", fontsize=10,
                              zorder=5, fontweight="bold",
                              bbox=dict(boxstyle="round,pad=0.45", fc="#ECEFF1" if _is_control_plane(role) else "#FFF8E1",
                                        ec="#455A64", lw=1.2))
    top = max(p[1] for p in pos.values()) + 0.62
    headings = []
    if any(_is_control_plane(r) for r in roles):
        headings.append(ax.text(min(xs), top, "control plane", ha="center", fontsize=11, color="#455A64"))
    if any(not _is_control_plane(r) for r in roles):
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
        curve = _edge_curve(np.array(pos[a]), np.array(pos[b]), np.array(pos[key[0]]), np.array(pos[key[1]]), k)
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


def _edge_curve(p1, p2, k1, k2, k: int, samples: int = 121) -> np.ndarray:
    """Points of the k-th edge from p1 to p2, bent around the pair's canonical direction k1->k2."""
    if np.allclose(p1, p2):  # a role talking to itself: a loop beside the node
        side = -1.0 if p1[0] <= 0 else 1.0
        t = np.linspace(0.15, 1.85, samples) * np.pi
        r = 0.12 + 0.04 * k
        centre = p1 + np.array([side * (0.3 + r), 0.0])
        return np.column_stack([centre[0] - side * r * np.cos(t) * 1.6, centre[1] + r * 1.6 * np.sin(t)])
    d = k2 - k1
    normal = np.array([-d[1], d[0]]) / (np.hypot(*d) or 1.0)
    if abs(k1[0] - k2[0]) < 1e-9:  # same column: bend outwards, away from the other column
        outward = -1.0 if k1[0] <= 0 else 1.0
        normal = np.array([outward, 0.0])
        bend = 0.3 + 0.1 * k + 0.08 * abs(d[1])
    else:
        bend = 0.0 if k == 0 else (0.2 * ((k + 1) // 2)) * (1 if k % 2 else -1)
    ctrl = (k1 + k2) / 2 + normal * bend * 2
    t = np.linspace(0.0, 1.0, samples)[:, None]
    canonical = (1 - t) ** 2 * k1 + 2 * (1 - t) * t * ctrl + t ** 2 * k2
    return canonical if np.allclose(p1, k1) else canonical[::-1]


# ------------------------------------------------------------------------------ path x check matrix

STATUS_MARK = {"pass": "pass", "fail": "FAIL", "warn": "warn", "not-observable": "n/obs", "not-observed": "–"}


def check_matrix(analysis, ax=None, fail_on: str | None = None) -> Figure:
    """Documented paths x checks, each cell pass / fail / warn / not-observable / not-observed.

    Sized for the report's 12 in column so that cell text stays at 10 pt once the page shows it."""
    results = _model.check_results(analysis, fail_on)
    paths = _model.sorted_paths(results["path"]) if len(results) else []
    checks = sorted(set(results["check"]), key=lambda c: (list(results["check"]).index(c)))
    fig, ax = _new_axes(ax, (12, max(3.0, 0.46 * len(paths) + 2.6)))
    if not len(results):
        _empty(ax, "no documented path")
        return fig
    for i, path in enumerate(paths):
        for j, check in enumerate(checks):
            row = results[(results["path"] == path) & (results["check"] == check)]
            if not len(row):
                ax.add_patch(_cell(j, i, "#FFFFFF", "#EEEEEE"))
                continue
            status = row["status"].iloc[0]
            n = int(row["findings"].iloc[0])
            ax.add_patch(_cell(j, i, palette.VERDICT_BACKGROUNDS[status], palette.verdict_color(status)))
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
    ax.set_title(f"Checks per path (fail at or above {fail_at}, warn at or above {warn_at})", fontsize=12, loc="left")
    return fig


def _cell(x, y, face, edge):
    from matplotlib.patches import Rectangle
    return Rectangle((x + 0.04, y + 0.06), 0.92, 0.88, fc=face, ec=edge, lw=1.0)


# ------------------------------------------------------------------------------------------ timeline

def timeline_rows(analysis) -> pd.DataFrame:
    """Flows with the timeline row they are drawn on: the path, or "host · path" when there are several hosts."""
    flows = _model.frame(analysis, "flows")
    if not len(flows) or "path" not in flows:
        return flows.assign(row=pd.Series(dtype=str))
    hosts = _model.host_of_capture(analysis)
    host = flows["capture"].astype(str).map(hosts).fillna(flows["capture"].astype(str))
    path = flows["path"].astype(str)
    several = host.nunique() > 1
    row = (host + " · " + path) if several else path
    return flows.assign(row=row, _host=host, _path=path)


def timeline(analysis, ax=None) -> Figure:
    """Connections per path across the capture window (per host when several captures)."""
    flows = timeline_rows(analysis)
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
    as_dates = (t1 - t0) > 2 * 86400   # captures days apart: a date axis instead of seconds
    if as_dates:
        import matplotlib.dates as mdates
        origin, scale = -mdates.date2num(pd.Timestamp(0, unit="s", tz="UTC")) * 86400, 86400.0
    else:
        origin, scale = t0, 1.0
    span = max((t1 - t0) / scale, 1e-3)
    left = (t0 - origin) / scale
    min_w = span * 0.004
    for i, name in enumerate(rows):
        sub = flows[flows["row"] == name]
        color = palette.path_color(sub["_path"].iloc[0])
        raw = sub["ts_start"].to_numpy(float)
        aligned = sub["ts_start_aligned"].to_numpy(float) if "ts_start_aligned" in sub else raw
        aligned = np.where(np.isfinite(aligned), aligned, raw)      # merged runs: one clock for all hosts
        start = (aligned - origin) / scale
        width = np.maximum((sub["ts_end"].to_numpy(float) - raw) / scale, min_w)
        ax.broken_barh(list(zip(start, width)), (i - 0.32, 0.64), facecolors=color, alpha=0.55, edgecolor="none")
        ax.plot(start, np.full(len(start), i), "|", color=color, ms=11, mew=1.4)
        ax.text(left + span * 1.01, i, f"{len(sub)}", va="center", fontsize=8, color="#424242")
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
    ax.set_title("Connections per path over the capture window", fontsize=12, loc="left")
    return fig


# --------------------------------------------------------------------------------------------- TLS

def tls_counts(analysis) -> dict[str, pd.DataFrame]:
    """Flow counts per path of TLS version, cipher and client-certificate status (TLS flows only).

    A missing client certificate counts as ``empty`` / ``inferred-absent`` only on the paths whose
    policy expects one (``client-cert-missing`` judges them); elsewhere, e.g. pods that authenticate
    with tokens, it is ``… (not required)`` and drawn neutral."""
    flows = _model.frame(analysis, "flows")
    if not len(flows) or "tls_version" not in flows:
        return {}
    tls = flows[(flows["app_protocol"].astype(str) == "tls") | flows["tls_version"].notna()]
    if not len(tls):
        return {}
    path = tls["path"].astype(str)
    expects = set(_model.client_cert_paths(analysis))
    out = {}
    for key, col in (("version", "tls_version"), ("cipher", "cipher"), ("client_cert", "client_cert")):
        values = tls[col].astype("string").fillna("unknown") if col in tls else pd.Series("unknown", index=tls.index)
        if key == "client_cert":
            missing = values.isin(["empty", "inferred-absent"]) & ~path.isin(expects)
            values = values.where(~missing, values + " (not required)")
        table = pd.crosstab(path, values)
        table = table.loc[sorted(table.index, key=palette.path_sort_key)]
        out[key] = table
    return out


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
    version_order = [v for v in palette.TLS_VERSION_COLORS if v in counts["version"].columns]
    version_order += [v for v in counts["version"].columns if v not in version_order]
    cipher_cols = list(counts["cipher"].sum().sort_values(ascending=False).index)
    cipher_colors = _cipher_colors(cipher_cols)
    cert_order = [c for c in palette.CLIENT_CERT_COLORS if c in counts["client_cert"].columns]
    cert_order += [c for c in counts["client_cert"].columns if c not in cert_order]
    panels = (("TLS version", counts["version"][version_order], lambda v: palette.TLS_VERSION_COLORS.get(v, "#BDBDBD")),
              ("cipher suite", counts["cipher"][cipher_cols], lambda v: cipher_colors[v]),
              ("client certificate", counts["client_cert"][cert_order], lambda v: palette.CLIENT_CERT_COLORS.get(v, "#BDBDBD")))
    for ax, (title, table, color_of) in zip(axes, panels):
        _stacked(ax, table, color_of)
        ax.set_title(title, fontsize=11, loc="left")
        ax.set_xlabel("TLS connections", fontsize=9.5)
        for tick, path in zip(ax.get_yticklabels(), table.index):
            tick.set_color(palette.path_color(path))
    fig.suptitle("TLS per path", fontsize=12, x=0.01, ha="left")
    return fig


def _cipher_colors(ciphers: list[str]) -> dict[str, str]:
    """Cipher suites in blues and greens (no red: a cipher suite is not a failure here)."""
    from matplotlib import colormaps
    cmap = colormaps["GnBu"]
    known = [c for c in ciphers if c != "unknown"]
    shades = np.linspace(0.9, 0.35, max(len(known), 1))
    colours = {c: cmap(float(shades[i])) for i, c in enumerate(known)}
    colours["unknown"] = "#BDBDBD"
    return colours


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
    used_paths = _model.cert_paths(analysis)
    for i, (_, c) in enumerate(shown.iterrows()):
        nb, na = pd.Timestamp(c["not_before"]), pd.Timestamp(c["not_after"])
        state = c["state"]
        color = palette.CERT_STATE_COLORS[state]
        ax.barh(i, mdates.date2num(na) - mdates.date2num(nb), left=mdates.date2num(nb), height=0.6,
                color=color, alpha=0.8)
        if state != "valid":
            ax.text(mdates.date2num(na), i, f"  {state}", va="center", fontsize=8, color=color, fontweight="bold")
    labels = []
    for _, c in shown.iterrows():
        name = _model.common_name(_model.text(c["subject"])) or _model.text(c["fingerprint"])[:16]
        where = used_paths.get(_model.text(c["fingerprint"]), [])
        shown_paths = ", ".join(where[:2]) + (f" +{len(where) - 2}" if len(where) > 2 else "")
        labels.append(_short(name, 30) + (f"  [{shown_paths}]" if where else ""))
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
    ax.set_title(f"Certificate validity vs capture time{extra}", fontsize=12, loc="left")
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


def figure_png_base64(fig: Figure, dpi: int = 110) -> str:
    return base64.b64encode(figure_png(fig, dpi)).decode("ascii")


def all_figures(analysis, fail_on: str | None = None) -> dict[str, Figure]:
    """Every figure of the report, by name."""
    return {
        "path_map": path_map(analysis),
        "check_matrix": check_matrix(analysis, fail_on=fail_on),
        "timeline": timeline(analysis),
        "tls": tls_overview(analysis),
        "certs": cert_validity(analysis),
    }

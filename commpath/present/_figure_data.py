"""The data behind the report's figures (edges, layout, timeline rows, TLS counts), without matplotlib."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import _model, palette

CONTROL_PLANE_ROLES = ("apiserver", "kube-apiserver", "scheduler", "kube-scheduler", "controller-manager",
                       "kube-controller-manager", "control-plane", "etcd", "konnectivity-server",
                       "cloud-controller-manager", "apiserver-service", "kubernetes-service")


def is_control_plane(role: str) -> bool:
    r = role.lower()
    return r in CONTROL_PLANE_ROLES or r.startswith(("apiserver", "kube-apiserver", "etcd", "control"))


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


def role_rank(role: str) -> tuple[int, str]:
    try:
        return (ROLE_ORDER.index(role), role)
    except ValueError:
        return (len(ROLE_ORDER), role)


def node_positions(roles: list[str]) -> dict[str, tuple[float, float]]:
    """Control-plane roles in the left column (x = -1), node-side roles in the right one (x = +1; one
    column alone: x = 0), each in ROLE_ORDER from the top, one unit apart and centred on y = 0.

    This is networkx's multipartite layout rescaled so (``tests/test_figure_layout.py`` compares the two),
    written out because importing networkx (0.075 s on a quiet machine, 0.19 s of 0.70 s under load) was
    the largest single cost of the HTML report's figures on the 1M-packet benchmark capture, for two
    columns of evenly spaced points."""
    if len(roles) < 2:
        return {r: (0.0, 0.0) for r in roles}
    left = sorted([r for r in roles if is_control_plane(r)], key=role_rank)
    right = sorted([r for r in roles if not is_control_plane(r)], key=role_rank)
    columns = [c for c in (left, right) if c]
    xs = [0.0] if len(columns) == 1 else [-1.0, 1.0]
    return {r: (x, (len(column) - 1) / 2 - i) for x, column in zip(xs, columns) for i, r in enumerate(column)}


#: timeline: start marks per row at most: one per this fraction of the window (finer than a pixel of the report)
MARK_BINS = 2000
#: the narrowest bar, as a fraction of the window (a connection of a few milliseconds stays visible)
MIN_WIDTH = 0.004
#: flow columns the timeline reads
TIMELINE_COLUMNS = ("capture", "path", "ts_start", "ts_end", "ts_start_aligned")


def row_bars(flows: pd.DataFrame, rows: list[str], min_width: float):
    """Per timeline row of ``flows`` (``timeline_rows``), in ``rows``' order: its flows' positions,
    its path, and the start (on the run's aligned clock) and width (at least ``min_width``, seconds)
    of each connection whose start is known."""
    row_codes = pd.Categorical(flows["row"], categories=rows).codes
    by_row = np.argsort(row_codes, kind="stable")
    bounds = np.searchsorted(row_codes[by_row], np.arange(len(rows) + 1))
    raw_all = flows["ts_start"].to_numpy(float)
    end_all = flows["ts_end"].to_numpy(float)
    aligned_all = flows["ts_start_aligned"].to_numpy(float) if "ts_start_aligned" in flows else raw_all
    path_all = flows["_path"].to_numpy(object)
    for i in range(len(rows)):
        at = by_row[bounds[i]:bounds[i + 1]]
        raw = raw_all[at]
        aligned = np.where(np.isfinite(aligned_all[at]), aligned_all[at], raw)  # merged runs: one clock for all hosts
        width = np.maximum(end_all[at] - raw, min_width)
        width = np.where(np.isfinite(width), width, min_width)
        seen = np.isfinite(aligned)
        yield at, path_all[at[0]], aligned[seen], width[seen]


def timeline_rows(analysis, columns=None) -> pd.DataFrame:
    """Flows with the timeline row they are drawn on: the path, or "host · path" when there are several hosts.

    ``columns``: only these flow columns (and the row's) are kept, not the whole flow table."""
    flows = _model.frame(analysis, "flows")
    if columns is not None:
        flows = flows[[c for c in flows.columns if c in columns]]
    if not len(flows) or "path" not in flows:
        return flows.assign(row=pd.Series(dtype=str))
    hosts = _model.host_of_capture(analysis)
    cap_codes, caps = pd.factorize(flows["capture"].astype("string").fillna(""))
    host_of = np.asarray([hosts.get(str(c), str(c)) for c in caps], dtype=object)
    host = host_of[cap_codes]
    path_codes, paths = pd.factorize(flows["path"].astype("string").fillna(""))
    path = np.asarray([str(p) for p in paths], dtype=object)[path_codes]
    several = len(set(host_of[np.unique(cap_codes)])) > 1
    if several:         # each label made once per (host, path), then gathered
        host_codes, host_names = pd.factorize(host_of)
        pair_codes, pairs = pd.factorize(host_codes[cap_codes] * max(len(paths), 1) + path_codes)
        labels = np.asarray([f"{host_names[q // max(len(paths), 1)]} · {paths[q % max(len(paths), 1)]}"
                             for q in pairs], dtype=object)
        row = labels[pair_codes]
    else:
        row = path
    return flows.assign(row=pd.Series(row, index=flows.index, dtype="str"),
                        _host=pd.Series(host, index=flows.index, dtype="str"),
                        _path=pd.Series(path, index=flows.index, dtype="str"))


def union_bars(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, width) of the union of the intervals [start, end]: what bars of one colour cover."""
    order = np.argsort(start, kind="stable")
    s, e = start[order], end[order]
    reach = np.maximum.accumulate(e)
    first = np.flatnonzero(np.r_[True, s[1:] > reach[:-1]])
    last = np.r_[first[1:], len(s)] - 1
    return s[first], reach[last] - s[first]


def start_marks(start: np.ndarray, left: float, span: float) -> np.ndarray:
    """The earliest start in each 1/MARK_BINS of the window (one mark where many would overlap)."""
    bins = np.floor((start - left) / span * MARK_BINS)
    order = np.lexsort((start, bins))
    keep = np.r_[True, bins[order][1:] != bins[order][:-1]]
    return start[order][keep]


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


def edge_curve(p1, p2, k1, k2, k: int, samples: int = 121) -> np.ndarray:
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


#: the text of a path x check cell per status (fail and warn add their count of findings)
STATUS_MARK = {"pass": "pass", "fail": "FAIL", "warn": "warn", "not-observable": "n/obs", "not-observed": "–"}


def short(name, limit: int = 34) -> str:
    """``name`` cut to ``limit`` characters with an ellipsis."""
    name = str(name)
    return name if len(name) <= limit else name[: limit - 1] + "…"


def cert_labels(analysis, shown: pd.DataFrame) -> list[str]:
    """The row label of each shown certificate: its common name (or fingerprint) and the paths it was seen on."""
    used_paths = _model.cert_paths(analysis)
    labels = []
    for _, c in shown.iterrows():
        name = _model.common_name(_model.text(c["subject"])) or _model.text(c["fingerprint"])[:16]
        where = used_paths.get(_model.text(c["fingerprint"]), [])
        shown_paths = ", ".join(where[:2]) + (f" +{len(where) - 2}" if len(where) > 2 else "")
        labels.append(short(name, 30) + (f"  [{shown_paths}]" if where else ""))
    return labels


#: ColorBrewer's GnBu (matplotlib's colormap of that name samples the same nine colours)
_GNBU = ("#f7fcf0", "#e0f3db", "#ccebc5", "#a8ddb5", "#7bccc4", "#4eb3d3", "#2b8cbe", "#0868ac", "#084081")


def cipher_colors(ciphers: list[str]) -> dict[str, str]:
    """Cipher suites in blues and greens (no red: a cipher suite is not a failure here), the most
    used darkest; 'unknown' grey."""
    known = [c for c in ciphers if c != "unknown"]
    shades = np.linspace(0.9, 0.35, max(len(known), 1))
    colours = {c: _gnbu(float(shades[i])) for i, c in enumerate(known)}
    colours["unknown"] = "#BDBDBD"
    return colours


def _gnbu(x: float) -> str:
    pos = min(max(x, 0.0), 1.0) * (len(_GNBU) - 1)
    i = min(int(pos), len(_GNBU) - 2)
    a, b = _GNBU[i], _GNBU[i + 1]
    f = pos - i
    mix = [round(int(a[k:k + 2], 16) * (1 - f) + int(b[k:k + 2], 16) * f) for k in (1, 3, 5)]
    return "#" + "".join(f"{v:02x}" for v in mix)


def tls_panels(counts: dict[str, pd.DataFrame]) -> list[tuple[str, pd.DataFrame, dict[str, str]]]:
    """The TLS figure's three panels: (title, flow counts per path × value in legend order, colours)."""
    version_order = [v for v in palette.TLS_VERSION_COLORS if v in counts["version"].columns]
    version_order += [v for v in counts["version"].columns if v not in version_order]
    cipher_cols = list(counts["cipher"].sum().sort_values(ascending=False).index)
    ciphers = cipher_colors(cipher_cols)
    cert_order = [c for c in palette.CLIENT_CERT_COLORS if c in counts["client_cert"].columns]
    cert_order += [c for c in counts["client_cert"].columns if c not in cert_order]
    return [("TLS version", counts["version"][version_order],
             {v: palette.TLS_VERSION_COLORS.get(v, "#BDBDBD") for v in version_order}),
            ("cipher suite", counts["cipher"][cipher_cols], ciphers),
            ("client certificate", counts["client_cert"][cert_order],
             {v: palette.CLIENT_CERT_COLORS.get(v, "#BDBDBD") for v in cert_order})]


__all__ = ["CONTROL_PLANE_ROLES", "MARK_BINS", "MIN_WIDTH", "ROLE_ORDER", "STATUS_MARK", "TIMELINE_COLUMNS",
           "cert_labels", "cipher_colors", "edge_curve", "is_control_plane", "node_positions", "path_map_edges",
           "role_rank", "row_bars", "short", "start_marks", "timeline_rows", "tls_counts", "tls_panels", "union_bars"]

"""Many hosts, one picture: one flow per connection seen from several hosts, with clock offsets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ._distinct import per_distinct
from .schema import FLOW_COLUMNS, MERGED_FLOW_COLUMNS, OFFSET_COLUMNS, conform

#: Connections whose aligned starts differ by more than this are different connections.
MATCH_TOLERANCE_S = 2.0


#: A connection's identity across hosts; ``scope`` keeps host-local connections (loopback) apart.
_KEY = ["src_ip", "src_port", "dst_ip", "dst_port", "transport", "scope"]

#: The flow columns the merge reads (besides flow_id and first_frame for the vantage points).
_READ = ("capture", "src_ip", "src_port", "dst_ip", "dst_port", "transport", "ts_start")

#: What each vantage point records in the merged ``vantage_points`` lists.
VANTAGE_KEYS = ("host", "capture", "flow_id", "first_frame", "ts_start")


def host_addresses(captures: pd.DataFrame) -> dict[str, str]:
    """IP address -> host, from the manifest.json beside each capture file (when there is one)."""
    owner: dict[str, str] = {}
    for file, host in zip(captures["file"].astype(str), captures["host"]):
        if pd.isna(host):
            continue
        data = manifest_beside(file)
        for iface in data.get("interfaces", []):
            for cidr in iface.get("addresses", []):
                ip = cidr.split("/")[0]
                if not ip.startswith("127.") and ip != "::1":
                    owner.setdefault(ip, str(host))
    return owner


def manifest_beside(capture: str) -> dict:
    """The capture agent's manifest.json beside a capture file ({} when there is none or it is unreadable):
    a local one, or beside a URL's (``s3://...``) through fsspec, with the environment's credentials."""
    try:
        if "://" not in capture:
            text = (Path(capture).parent / "manifest.json").read_text(encoding="utf-8")
        else:
            import fsspec
            with fsspec.open(capture.rsplit("/", 1)[0] + "/manifest.json", "rt", encoding="utf-8") as f:
                text = f.read()
        data = json.loads(text)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def capture_hosts(captures: pd.DataFrame) -> list[str]:
    """The distinct hosts (from the manifests) the captures were recorded on."""
    if captures is None or captures.empty or "host" not in captures:
        return []
    return sorted(set(captures["host"].dropna().astype(str)) - {""})


def _host_local(ips: pd.Series) -> np.ndarray:
    text = ips.astype("string").fillna("")
    return (text.str.startswith("127.") | (text == "::1") | text.str.startswith("::ffff:127.")).to_numpy(bool)


def _with_hosts(flows: pd.DataFrame, captures: pd.DataFrame) -> pd.DataFrame:
    """``flows`` with each flow's ``host`` (its capture's, else the capture's folder name) and ``scope``.

    Looked up once per distinct capture file, not per flow: a join of the wide flow table would copy it."""
    hosts = captures[["file", "host"]].drop_duplicates("file").astype({"file": "string", "host": "string"})
    named = dict(zip(hosts["file"].astype(object), hosts["host"].astype(object)))
    codes, files = pd.factorize(flows["capture"].astype("string"), use_na_sentinel=False)
    per_file = [named.get(c) if isinstance(named.get(c), str) else Path(c).parent.name   # no manifest: its folder
                for c in files.astype(str)]
    f = flows.reset_index(drop=True)        # copy on write: the flows' columns are not copied
    f["host"] = pd.array(np.asarray(per_file, dtype=object)[codes], dtype="string")
    # loopback (and same-address) connections are local to their host: never the same as another host's
    local = _host_local(f["src_ip"]) | _host_local(f["dst_ip"]) | (f["src_ip"] == f["dst_ip"]).fillna(False).to_numpy(bool)
    f["scope"] = f["host"].where(local, "").astype(str)
    return f


def estimate_clock_offsets(flows: pd.DataFrame, captures: pd.DataFrame, reference: str | None = None) -> pd.DataFrame:
    """Per-host clock offset (seconds to subtract from a host's timestamps) against a reference host.

    Uses TCP connections whose handshake was seen on two hosts: the difference of the SYN times is
    offset + one-way delay in one direction and delay - offset in the other; with both directions the
    delay cancels (NTP style), with one direction it is the offset plus the (small) path delay.
    """
    return offsets_from_pairs(*clock_pairs(flows, captures), captures, reference)


def clock_pairs(flows: pd.DataFrame, captures: pd.DataFrame) -> tuple[pd.DataFrame, set[str]]:
    """What the clock offsets are estimated from: per connection seen on two hosts (TCP handshake
    seen), the hosts, the difference of their SYN times and which one initiated; and the hosts seen.

    A connection's rows share its initiator socket, so the flows split by initiator socket give
    their pairs part by part (the parts' pairs together are the run's)."""
    f = _with_hosts(flows[[c for c in (*_READ, "syn_seen") if c in flows]], captures)
    f = f[f["syn_seen"].astype(bool)] if "syn_seen" in f else f
    owner = host_addresses(captures)
    # one observation per (connection key, host): the earliest on that host (several interfaces)
    first = f.groupby(_KEY + ["host"], observed=True, dropna=False)["ts_start"].min().reset_index()
    first["initiator_host"] = first["src_ip"].astype(str).map(owner)
    pairs = first.merge(first, on=_KEY, suffixes=("_a", "_b"))
    pairs = pairs[pairs["host_a"] < pairs["host_b"]]
    # initiator side a: diff = (t_b - t_a) = off_b - off_a + delay; initiator b: diff = off_b - off_a - delay
    diff = pairs["ts_start_b"] - pairs["ts_start_a"]
    init = pairs["initiator_host_a"].fillna("").astype(str).to_numpy()
    ha, hb = pairs["host_a"].astype(str).to_numpy(), pairs["host_b"].astype(str).to_numpy()
    sign = np.where(init == ha, 1, np.where(init == hb, -1, 0))
    out = pd.DataFrame({"host_a": ha, "host_b": hb, "diff": diff.to_numpy(float), "sign": sign.astype(np.int8)})
    return out, set(f["host"].dropna().unique().astype(str))


def offsets_from_pairs(pairs: pd.DataFrame, hosts: set[str], captures: pd.DataFrame,
                       reference: str | None = None) -> pd.DataFrame:
    """The clock offset table from :func:`clock_pairs` (of all flows, or its parts' concatenated)."""
    hosts = sorted(hosts)
    if reference is None:
        roles = captures.dropna(subset=["host"]).set_index("host")["role"].astype(str).to_dict() if "role" in captures else {}
        cps = [h for h in hosts if roles.get(h) == "control-plane"]
        reference = (cps or hosts or [""])[0]
    rel: dict[tuple[str, str], tuple[float, int, str, float]] = {}
    for (a, b), g in pairs.groupby(["host_a", "host_b"], observed=True):
        fwd, rev = g.loc[g["sign"] == 1, "diff"], g.loc[g["sign"] == -1, "diff"]
        if len(fwd) and len(rev):
            est, method = (fwd.median() + rev.median()) / 2, "two-way"
        else:
            est, method = g["diff"].median(), "one-way"
        q = g["diff"].quantile([0.25, 0.75])
        rel[(str(a), str(b))] = (float(est), len(g), method, float(q.iloc[1] - q.iloc[0]))
    rows = []
    for h in hosts:
        if h == reference:
            rows.append((h, 0.0, reference, 0, "reference", 0.0))
        elif (reference, h) in rel:
            est, n, m, s = rel[(reference, h)]
            rows.append((h, est, reference, n, m, s))
        elif (h, reference) in rel:
            est, n, m, s = rel[(h, reference)]
            rows.append((h, -est, reference, n, m, s))
        else:
            rows.append((h, np.nan, reference, 0, "no shared connections", np.nan))
    return pd.DataFrame(rows, columns=list(OFFSET_COLUMNS)).astype(OFFSET_COLUMNS)


def merge_vantage_points(flows: pd.DataFrame, captures: pd.DataFrame, tolerance: float = MATCH_TOLERANCE_S,
                         preference: pd.Series | None = None, offsets: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per connection; the same connection seen by several hosts (or interfaces) is merged.

    Adds ``vantage_points`` (list of dicts: host, capture, flow_id, first_frame, ts_start),
    ``hosts`` (list of host names), ``ts_start_aligned`` (start on the reference host's clock) and
    ``dst_before_nat`` (the dialled destination when one vantage point saw it before DNAT, e.g. the
    ``kubernetes`` service VIP). The kept row is the best view: highest ``preference`` (flow_id ->
    score, e.g. how completely its handshake was captured), then after NAT, on the initiator's host,
    earliest. The clock offset table is in ``result.attrs["clock_offsets"]``. ``offsets``: the run's
    (when ``flows`` is one part of it, split by initiator socket), else estimated from ``flows``.
    """
    return _merged_views(flows, captures, tolerance, preference, offsets)[0]


def _merged_views(flows: pd.DataFrame, captures: pd.DataFrame, tolerance: float = MATCH_TOLERANCE_S,
                  preference: pd.Series | None = None, offsets: pd.DataFrame | None = None
                  ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """:func:`merge_vantage_points`, every view's flow id and the flow id of the row that stands for
    its connection (what :func:`representatives` reads from the merged rows), from the arrays the
    merge sorted (walking 206,400 vantage points' dicts again took 0.2 s)."""
    offsets = estimate_clock_offsets(flows, captures) if offsets is None else offsets
    if flows.empty:
        out = flows.copy()
        for col in ("vantage_points", "hosts", "dst_before_nat", "ts_start_aligned"):
            out[col] = pd.Series(dtype=MERGED_FLOW_COLUMNS[col])
        out.attrs["clock_offsets"] = offsets
        return out, np.zeros(0, np.int64), np.zeros(0, np.int64)
    # the columns read, and each row's position in ``flows``: the wide rows are taken once, at the end
    f = _with_hosts(flows[list(_READ) + ["flow_id", "first_frame"]].assign(_row=np.arange(len(flows))), captures)
    off = offsets.set_index("host")["offset_s"].fillna(0.0)
    f["ts_start_aligned"] = f["ts_start"] - _lookup(f["host"], off.to_dict(), 0.0)
    owner = host_addresses(captures)
    known = set(owner)

    # 1. same 5-tuple, starts within the tolerance -> one connection
    f = f.sort_values(_KEY + ["ts_start_aligned"], kind="stable").reset_index(drop=True)
    same_key = (f[_KEY].shift() == f[_KEY]).all(axis=1).to_numpy()
    close = (f["ts_start_aligned"].diff().abs() <= tolerance).to_numpy()
    f["conn"] = np.cumsum(~(same_key & close))

    # 2. the same initiator socket seen before and after DNAT (dst differs) -> one connection
    f["nat_side"] = ~f["dst_ip"].astype(str).isin(known).to_numpy() if known else False
    sock = ["src_ip", "src_port", "transport", "scope"]
    g = f.sort_values(sock + ["ts_start_aligned"], kind="stable")
    same_sock = (g[sock].shift() == g[sock]).all(axis=1).to_numpy()
    near = (g["ts_start_aligned"].diff().abs() <= tolerance).to_numpy()
    dst_diff = ((g["dst_ip"].shift() != g["dst_ip"]) | (g["dst_port"].shift() != g["dst_port"])).to_numpy()
    nat_pair = same_sock & near & dst_diff & (g["nat_side"].to_numpy() | g["nat_side"].shift(fill_value=False).to_numpy())
    g = g.assign(nat_link=nat_pair)
    link = g.loc[g["nat_link"], "conn"].to_numpy()
    prev = g["conn"].shift().loc[g["nat_link"]].to_numpy()
    if len(link):
        # links chain and can form cycles (a bridge device with br_netfilter shows a pod's requests after
        # DNAT and the replies before un-DNAT, interleaved with the veth's and the uplink's views): every
        # connected group of views is one connection, numbered by its smallest
        nodes, smallest = component_minimum(link.astype(np.int64), prev.astype(np.int64))
        conn = f["conn"].to_numpy(np.int64)
        at = np.minimum(np.searchsorted(nodes, conn), len(nodes) - 1)
        f["conn"] = np.where(nodes[at] == conn, smallest[at], conn)

    # pick the representative row: after NAT, on the initiator's host, earliest
    f["is_initiator_host"] = _lookup(f["src_ip"], owner, "") == f["host"].astype(str).to_numpy()
    f["preference"] = (f["flow_id"].map(preference).fillna(0).astype(float).to_numpy()
                       if preference is not None else 0.0)
    f = f.sort_values(["conn", "preference", "nat_side", "is_initiator_host", "ts_start_aligned"],
                      ascending=[True, False, True, False, True], kind="stable")
    vps = [{"host": h, "capture": c, "flow_id": i, "first_frame": fr, "ts_start": t}
           for h, c, i, fr, t in zip(_shared_texts(f["host"]), _shared_texts(f["capture"]),
                                     f["flow_id"].tolist(), f["first_frame"].tolist(), f["ts_start"].tolist())]
    # f is sorted by connection: each connection's vantage points are one run of rows, best first
    conns = f["conn"].to_numpy()
    starts = np.flatnonzero(np.r_[True, conns[1:] != conns[:-1]])
    ends = np.r_[starts[1:], len(conns)]
    agg = pd.DataFrame({"vantage_points": [vps[a:b] for a, b in zip(starts.tolist(), ends.tolist())]},
                       index=conns[starts])
    agg["hosts"] = _hosts_per_connection(f["host"], conns, starts, ends)
    pre_nat = f[f["nat_side"]].groupby("conn")[["dst_ip", "dst_port"]].first()
    best = f.iloc[starts]           # each connection's first row: its best view
    rep = flows.iloc[best["_row"].to_numpy()].reset_index(drop=True)
    rep["host"] = best["host"].reset_index(drop=True)
    rep["ts_start_aligned"] = best["ts_start_aligned"].to_numpy()
    rep["vantage_points"] = agg["vantage_points"].to_numpy()
    rep["hosts"] = agg["hosts"].to_numpy()
    ip, port = pre_nat["dst_ip"].astype(str), pre_nat["dst_port"].astype(str)
    bracketed = ip.str.contains(":", regex=False)
    dst_before_nat = pd.Series(np.where(bracketed, "[" + ip + "]:" + port, ip + ":" + port).astype(object),
                               index=pre_nat.index, dtype=object).reindex(conns[starts])
    dst_before_nat[best["nat_side"].to_numpy(bool)] = None    # no post-NAT view: the row itself is pre-NAT
    rep["dst_before_nat"] = dst_before_nat.to_numpy()
    rep = rep.sort_values("ts_start_aligned", kind="stable").reset_index(drop=True)
    rep.attrs["clock_offsets"] = offsets
    views = f["flow_id"].to_numpy(np.int64)
    return rep, views, np.repeat(views[starts], ends - starts)


def component_minimum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The graph of edges ``a[i]``–``b[i]``: its nodes (sorted) and, for each, the smallest node of its
    connected component.

    networkx's ``connected_components`` gave the same (``tests/test_merge_components.py`` compares
    them); this is written out because importing networkx cost a merged run 0.23 s, a quarter of what
    merging 206,400 flows of 12 hosts costs. Minimum labels are propagated along the edges, each node
    then takes its label's label (pointer jumping), until nothing changes: at most a few rounds for
    the short chains of views a connection has."""
    nodes = np.unique(np.concatenate([a, b]))
    ia, ib = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
    label = np.arange(len(nodes))
    while True:
        low = np.minimum(label[ia], label[ib])
        new = label.copy()
        np.minimum.at(new, ia, low)
        np.minimum.at(new, ib, low)
        new = new[new]
        if np.array_equal(new, label):
            return nodes, nodes[label]
        label = new


def _lookup(column: pd.Series, table: dict, default) -> np.ndarray:
    """``column``'s values (as text) looked up in ``table`` (``default`` when absent), once per distinct value."""
    found = per_distinct(column.astype(str), lambda v: table.get(v, default))
    return found.astype(float) if isinstance(default, float) else found


def _hosts_per_connection(hosts: pd.Series, conns: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[list]:
    """The sorted distinct hosts of each connection (rows ``starts[k]:ends[k]`` of ``hosts``, ``conns`` sorted)."""
    codes, names = pd.factorize(hosts.astype(str), sort=True)    # code order is the names' sort order
    names = names.tolist()
    width = len(names) + 1
    pairs = np.unique(np.repeat(np.arange(len(starts)), ends - starts) * width + codes)
    owner, code = np.divmod(pairs, width)
    bounds = np.r_[np.searchsorted(owner, np.arange(len(starts))), len(owner)].tolist()
    texts = np.asarray(names, dtype=object)[code].tolist()
    return [texts[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _shared_texts(column: pd.Series) -> list:
    """The column's values as Python objects, one object per distinct value: a host or capture name
    repeated on every vantage point of a run is one string, not one per row (0.35 KB per merged flow)."""
    codes, distinct = pd.factorize(column, use_na_sentinel=True)
    out = np.asarray(distinct.astype(object).tolist() + [None], dtype=object)[codes]
    missing = codes < 0
    if missing.any():          # as the column holds them (pd.NA, None, nan)
        out[missing] = column.astype(object).to_numpy()[missing]
    return out.tolist()


def handshake_preference(flows: pd.DataFrame, tls: pd.DataFrame | None = None) -> pd.Series:
    """flow_id -> how completely a vantage point saw the connection's start (higher is better):
    a complete TLS handshake, any TLS handshake, the TCP handshake."""
    score = pd.Series(flows["handshake_seen"].astype(bool).astype(float).to_numpy(), index=flows["flow_id"].to_numpy())
    if tls is not None and len(tls):
        t = tls.drop_duplicates("flow_id").set_index("flow_id")
        complete = t["established"].fillna(False).astype(bool) & ~t["partial"].fillna(False).astype(bool)
        score = score.add(2.0 + 4.0 * complete.astype(float), fill_value=0.0)
    return score


def merge_run(flows: pd.DataFrame, captures: pd.DataFrame, tls: pd.DataFrame | None = None,
              offsets: pd.DataFrame | None = None, preference: pd.Series | None = None
              ) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, int]]:
    """A run of several hosts' captures as one: ``(merged, clock_offsets, representative)``.

    ``merged`` has one row per connection with the columns and dtypes of FLOW_COLUMNS (the row of
    the best vantage point, so its ``flow_id``, ``capture`` and frames point into a real capture),
    then ``vantage_points`` (host, capture, flow_id, first_frame, ts_start of every view),
    ``hosts``, ``ts_start_aligned`` and ``dst_before_nat``. ``representative`` maps every input
    flow_id to the flow_id of the row that now stands for its connection. ``offsets`` and
    ``preference`` (:func:`handshake_preference`): given when ``flows`` is one part of a run.
    """
    if preference is None:
        preference = handshake_preference(flows, tls)
    merged, views, standing = _merged_views(flows, captures, preference=preference, offsets=offsets)
    offsets = merged.attrs.pop("clock_offsets")
    merged.attrs.clear()   # DataFrames in attrs break later concat/compare of the flow table
    merged = merged.drop(columns=[c for c in ("conn", "host") if c in merged])
    merged = conform(merged, FLOW_COLUMNS)
    # texts where a vantage point saw the connection before DNAT, None or NaN elsewhere
    merged["dst_before_nat"] = merged["dst_before_nat"].astype(MERGED_FLOW_COLUMNS["dst_before_nat"])
    merged = merged.sort_values(["ts_start_aligned", "flow_id"], kind="stable").reset_index(drop=True)
    return merged, offsets, dict(zip(views.tolist(), standing.tolist()))


def representatives(merged: pd.DataFrame) -> dict[int, int]:
    """Every vantage point's flow id -> the flow id of the merged row that stands for its connection."""
    return {int(vp["flow_id"]): fid for fid, vps in zip(merged["flow_id"].astype("int64").tolist(),
                                                        merged["vantage_points"].tolist()) for vp in vps}


def adopt_labels(merged: pd.DataFrame, flows: pd.DataFrame, columns, key: str = "path",
                 unknown: str = "unclassified") -> None:
    """In place: a merged row whose ``key`` is ``unknown`` takes ``columns`` from its first vantage
    point (in ``flows``, by flow id) whose ``key`` is known."""
    columns = list(columns)
    rows = (merged[key].astype("string") == unknown).to_numpy(bool)
    if not rows.any():
        return
    views = pd.DataFrame([(i, vp["flow_id"]) for i in rows.nonzero()[0]
                          for vp in merged.at[i, "vantage_points"][1:]], columns=["row", "flow_id"])
    views = views.join(flows.set_index("flow_id")[columns], on="flow_id")
    views = views[views[key].astype("string") != unknown].drop_duplicates("row")
    for col in columns:
        merged.loc[views["row"].to_numpy(), col] = views[col].to_numpy()

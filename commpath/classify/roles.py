"""Named role masks: which flow ends are an apiserver, a kubelet, a pod ... as boolean columns.

The catalog's rules (cfg/catalog.yaml, ``match``) combine these masks by name; a new path needs at
most one new mask here. Each is a column operation over all flows (numpy), never Python per flow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .view import (CONTROL_PLANE_SUBJECT, NODE_SUBJECT, ClusterView, EndpointCodes, cn_match, endpoint_keys,
                   ip_attributes, normalize_ips)


#: Masks a catalog rule may name. Initiator masks say what the flow's initiator is, responder
#: masks what its responder is, flow masks something about the flow as a whole.
INITIATOR_MASKS = ("any", "apiserver", "control-plane", "etcd", "konnectivity-server", "kubelet", "node", "pod")
RESPONDER_MASKS = ("any", "apiserver", "etcd", "konnectivity-server", "kubelet", "kubernetes-service", "node",
                   "pod", "service")
FLOW_MASKS = ("between-hosts", "control-plane-neighbour", "encrypted-underlay")


@dataclass
class RoleMasks:
    """Boolean arrays (one element per flow) by mask name, the ports, and each end's address role."""

    initiator: dict[str, np.ndarray]
    responder: dict[str, np.ndarray]
    flow: dict[str, np.ndarray]
    transport: np.ndarray
    src_port: np.ndarray
    dst_port: np.ndarray
    src_addr_role: np.ndarray       # codes into ADDR_ROLES
    dst_addr_role: np.ndarray
    #: where an inventory speaks, which flows rest on inferred facts
    inferred: np.ndarray


def _host_of(ips: pd.Series, outer: pd.Series, tunneled: np.ndarray, view: ClusterView,
             in_pods: np.ndarray) -> pd.Series:
    """The host address an end stands for: itself, the host owning a pod-network gateway address
    (bridge or tunnel device), or — inside an overlay — the outer (underlay) address."""
    host = ips.copy()
    at_gateway = ips.isin(list(view.host_gateways)).to_numpy(bool)
    if at_gateway.any():        # mapped where an address is a gateway (seldom: a dict lookup per row otherwise)
        host[at_gateway] = ips[at_gateway].map(view.host_gateways).astype("string")
    known = host.isin(view.cp_addrs | view.node_addrs).to_numpy(bool)
    use_outer = tunneled & ~known & ~in_pods & outer.notna().to_numpy(bool)
    return host.where(~use_outer, outer)


def _texts(column: pd.Series) -> np.ndarray:
    """A text column as numpy text, "" where missing: a categorical one from its few categories."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return np.array([*map(str, column.cat.categories), ""])[column.cat.codes.to_numpy()]
    return column.astype("string").fillna("").to_numpy(str)


def _loopback(ips: pd.Series) -> np.ndarray:
    text = ips.astype("string").fillna("")
    return (text.str.startswith("127.") | (text == "::1")).to_numpy(bool)


def _capture_roles(flows: pd.DataFrame, captures: pd.DataFrame | None) -> np.ndarray:
    """The role (control-plane | node | '') of the host each flow's capture was recorded on."""
    if captures is None or captures.empty or "role" not in captures:
        return np.full(len(flows), "", dtype=object)
    roles = dict(zip(captures["file"].astype(str), captures["role"].astype("string").fillna("")))
    codes, files = pd.factorize(flows["capture"].astype("string"))     # one lookup per capture file
    known = np.array([roles.get(str(f), "") for f in files] + [""], dtype=object)
    return known[codes]


#: Two flows are one connection seen before and after DNAT when they carry the same payload
#: bytes in each direction and start within this many seconds.
DNAT_MATCH_SECONDS = 1.0


def _dnat_pairs(flows: pd.DataFrame, vip: np.ndarray, candidates: np.ndarray,
                vip_flows: pd.DataFrame | None = None) -> np.ndarray:
    """Flows among ``candidates`` that are the after-DNAT side of a pod → VIP flow (of ``flows``,
    or of ``vip_flows``: the run's flows to the VIP when ``flows`` is one part of the run)."""
    out = np.zeros(len(flows), bool)
    cols = ["payload_fwd", "payload_rev", "ts_start"]
    if vip_flows is not None:
        v = vip_flows[cols].reset_index(drop=True)
        if v.empty or not candidates.any():
            return out
    elif not vip.any() or not candidates.any():
        return out
    else:
        v = flows.loc[vip, cols].reset_index(drop=True)
    c = flows.loc[candidates, cols].assign(_pos=np.flatnonzero(candidates))
    m = c.merge(v, on=["payload_fwd", "payload_rev"], suffixes=("", "_vip"))
    m = m[(m["payload_fwd"] + m["payload_rev"] > 0) & ((m["ts_start"] - m["ts_start_vip"]).abs() <= DNAT_MATCH_SECONDS)]
    out[m["_pos"].to_numpy()] = True
    return out


@dataclass
class _Ends:
    """Address facts of both ends of every flow (numpy arrays aligned with the flows)."""

    src_ip: pd.Series
    dst_ip: pd.Series
    src_host: pd.Series
    dst_host: pd.Series
    src_pod: np.ndarray
    dst_pod: np.ndarray
    dst_svc: np.ndarray
    src_cp: np.ndarray
    dst_cp: np.ndarray
    src_node: np.ndarray
    dst_node: np.ndarray
    ep: EndpointCodes       # (address, port) of each end as integers; ep.codes(a view's set) to compare


def _ends(flows: pd.DataFrame, view: ClusterView) -> _Ends:
    n = len(flows)
    src_ip, dst_ip = normalize_ips(flows["src_ip"]), normalize_ips(flows["dst_ip"])
    tunnel = _texts(flows["tunnel"]) if "tunnel" in flows else np.full(n, "")
    tunneled = tunnel != ""
    outer = {}
    for col in ("tunnel_src", "tunnel_dst"):
        t = normalize_ips(flows[col]) if col in flows else pd.Series(pd.NA, index=flows.index, dtype="string")
        outer[col] = t.where(t != "", pd.NA)
    src_pod_net = ip_attributes(src_ip, view.pod_networks)
    dst_pod_net = ip_attributes(dst_ip, view.pod_networks)
    src_host = _host_of(src_ip, outer["tunnel_src"], tunneled, view, src_pod_net)
    dst_host = _host_of(dst_ip, outer["tunnel_dst"], tunneled, view, dst_pod_net)
    gateways = list(view.host_gateways)
    return _Ends(
        src_ip=src_ip, dst_ip=dst_ip, src_host=src_host, dst_host=dst_host,
        src_pod=src_pod_net & ~src_ip.isin(gateways).to_numpy(bool),
        dst_pod=dst_pod_net & ~dst_ip.isin(gateways).to_numpy(bool),
        dst_svc=ip_attributes(dst_ip, view.service_networks),
        src_cp=src_host.isin(view.cp_addrs).to_numpy(bool), dst_cp=dst_host.isin(view.cp_addrs).to_numpy(bool),
        src_node=src_host.isin(view.node_addrs).to_numpy(bool),
        dst_node=dst_host.isin(view.node_addrs).to_numpy(bool),
        ep=EndpointCodes.of_ends(src_ip, flows["src_port"], dst_ip, flows["dst_port"]))


def role_masks(flows: pd.DataFrame, feat: pd.DataFrame, view: ClusterView,
               captures: pd.DataFrame | None = None, vip_flows: pd.DataFrame | None = None) -> RoleMasks:
    """Every named mask of every flow, from the cluster view and the handshakes' features.

    ``vip_flows``: when ``flows`` is one part of a run (one capture on a Dask worker), the run's
    flows to the kubernetes service VIP (:func:`vip_flows`), which DNAT pairing matches against."""
    n = len(flows)
    e = _ends(flows, view)
    sport, dport = flows["src_port"].to_numpy(np.int64), flows["dst_port"].to_numpy(np.int64)
    transport = _texts(flows["transport"])
    tcp = transport == "tcp"
    src_apihost = e.src_host.isin(view.apiserver_hosts).to_numpy(bool) & ~e.src_pod
    dst_api = np.isin(e.ep.dst, e.ep.codes(view.apiserver_eps)) & tcp
    # host-local connections to the apiserver's port on loopback: the apiserver itself on a
    # control-plane host, or a node-local apiserver proxy (k3s, kubespray) on a node host
    api_ports = {int(x.rsplit("|", 1)[1]) for x in view.apiserver_eps}
    loop = _loopback(e.src_ip) & _loopback(e.dst_ip) & tcp & np.isin(dport, list(api_ports))
    capture_role = _capture_roles(flows, captures)
    loop_node = loop & (capture_role == "node")
    src_cp = e.src_cp | (loop & ~loop_node)
    src_node = e.src_node | loop_node
    dst_api = dst_api | loop
    dst_vip = np.isin(e.ep.dst, e.ep.codes(view.vip_eps)) & tcp
    node_cert = cn_match(NODE_SUBJECT, feat["client_subject"])
    cp_cert = cn_match(CONTROL_PLANE_SUBJECT, feat["client_subject"])

    konn_fwd, konn_rev = _konnectivity(e, view, tcp, dport)
    etcd_ports = list(view.etcd_ports())
    loop_etcd = tcp & _loopback(e.src_ip) & _loopback(e.dst_ip) & np.isin(dport, etcd_ports) & (capture_role != "node")
    etcd = tcp & (np.isin(e.ep.dst, e.ep.codes(view.etcd_eps)) | loop_etcd
                  | (np.isin(dport, etcd_ports) & (e.dst_cp | (not view.has_inventory))))
    dnat = _dnat_pairs(flows, dst_vip, dst_api & ~e.src_pod & ~node_cert & ~cp_cert, vip_flows)
    kubelet_dst = e.dst_node | e.dst_cp | ((not view.has_inventory) & ~e.dst_pod & ~e.dst_svc)
    touches_cp = dst_api | dst_vip | src_cp | e.dst_cp | (
        tcp & np.isin(dport, [view.kubelet_port, view.readonly_port]) & kubelet_dst)
    app = _texts(flows["app_protocol"]) if "app_protocol" in flows else np.full(n, "")
    underlay = (flows["encrypted_underlay"].fillna(False).to_numpy(bool) if "encrypted_underlay" in flows
                else np.zeros(n, bool))
    everyone = np.ones(n, bool)
    initiator = {
        "any": everyone,
        # the apiserver's host, or a loopback client of etcd on a control-plane host (stacked etcd)
        "apiserver": src_apihost | loop_etcd,
        "control-plane": src_cp | cp_cert,
        "etcd": src_cp,
        "konnectivity-server": konn_rev,
        "kubelet": node_cert,
        "node": src_node & ~src_cp & ~cp_cert,
        "pod": e.src_pod | dnat,
    }
    responder = {
        "any": everyone,
        "apiserver": dst_api,
        "etcd": etcd,
        "konnectivity-server": konn_fwd,
        "kubelet": tcp & kubelet_dst,
        "kubernetes-service": dst_vip,
        "node": e.dst_node | e.dst_cp,
        "pod": e.dst_pod,
        "service": e.dst_svc,
    }
    flow = {
        "between-hosts": (e.src_host != e.dst_host).to_numpy(bool),
        "control-plane-neighbour": touches_cp & (src_cp | src_node | e.dst_cp | e.dst_node | e.src_pod | e.dst_pod
                                                 | dst_api | dst_vip),
        "encrypted-underlay": underlay | (transport == "esp") | np.isin(app, ["wireguard", "esp"]),
    }
    if not view.has_inventory:
        inferred = np.ones(n, bool)
    else:   # where an inventory speaks, only facts it lacked (or handshakes/DNAT pairing) are inferred
        inferred = dnat | (dst_api & node_cert & ~src_node) | (dst_api & cp_cert & ~src_cp)
        for name, mask in (("apiserver_eps", dst_api), ("vip_eps", dst_vip), ("etcd_eps", etcd),
                           ("konn_eps", konn_fwd | konn_rev), ("cp_addrs", src_cp | e.dst_cp),
                           ("node_addrs", src_node | e.dst_node)):
            if name in view.inferred:
                inferred |= mask
    return RoleMasks(initiator=initiator, responder=responder, flow=flow, transport=transport,
                     src_port=sport, dst_port=dport,
                     src_addr_role=_addr_role(e.src_pod, src_cp, src_node, np.zeros(n, bool)),
                     dst_addr_role=_addr_role(e.dst_pod, e.dst_cp, e.dst_node, e.dst_svc), inferred=inferred)


def _konnectivity(e: _Ends, view: ClusterView, tcp: np.ndarray, dport: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flows to the Konnectivity server, and flows its side initiated: from its listening endpoint,
    or from its host to an agent host's port of the same number."""
    konn_ips = {x.rsplit("|", 1)[0] for x in view.konn_eps}
    konn_ports = {int(x.rsplit("|", 1)[1]) for x in view.konn_eps}
    forward = np.isin(e.ep.dst, e.ep.codes(view.konn_eps)) & tcp
    reverse = tcp & ~forward & (np.isin(e.ep.src, e.ep.codes(view.konn_eps)) | (
        e.src_host.isin(konn_ips).to_numpy(bool) & np.isin(dport, list(konn_ports))
        & ~e.dst_host.isin(konn_ips).to_numpy(bool)))
    return forward, reverse


#: the roles an end has by its address alone (``RoleMasks.src_addr_role`` and ``dst_addr_role`` index them)
ADDR_ROLES = ("pod", "control-plane", "node", "service", "unknown")


def _addr_role(pod: np.ndarray, cp: np.ndarray, node: np.ndarray, svc: np.ndarray) -> np.ndarray:
    """The role an end has by its address alone, as a code into ADDR_ROLES."""
    return np.select([pod, cp, node, svc], [0, 1, 2, 3], default=4).astype(np.int8)


# The cluster view of a run from per-part summaries (one part: one capture on a Dask worker).
# build_view reads only sets of these columns' values, so the union of each part's distinct rows
# gives the view all flows give; two of its steps pair single flows and read them whole: the VIP
# found from DNAT twins (source port and start time) and DNAT pairing (payload counts, start time).

#: flow columns the cluster view reads, and the handshake features (tls_features) it reads
VIEW_FLOW_COLUMNS = ("src_ip", "dst_ip", "dst_port", "transport", "tunnel_src", "tunnel_dst")
VIEW_FEATURES = ("sni", "server_subject", "server_sans", "client_subject")
#: read from the flows that may go to the service VIP (and their DNAT twins), kept whole
WHOLE_COLUMNS = ("src_port", "ts_start", "payload_fwd", "payload_rev")


def vip_ports(inventory) -> set[int]:
    """Ports a service VIP endpoint can have: 443 (service CIDRs, inference) or the inventory's."""
    ports = {443}
    if inventory is not None and inventory.service:
        ports.add(int(inventory.service[1]))
    return ports


def view_needs_twins(inventory) -> bool:
    """Whether the view may look for the VIP among DNAT twins (the inventory names no VIP nor service CIDR)."""
    return inventory is None or not (inventory.service or inventory.service_cidrs)


def _view_frame(flows: pd.DataFrame, feat: pd.DataFrame) -> pd.DataFrame:
    cols = {c: flows[c].astype("string") for c in VIEW_FLOW_COLUMNS if c in flows and c != "dst_port"}
    cols["dst_port"] = flows["dst_port"].astype("int64")
    cols.update({c: feat[c].astype("string") for c in VIEW_FEATURES})
    return pd.DataFrame({c: s.to_numpy() for c, s in cols.items()})


def _whole(flows: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"src_port": flows["src_port"].to_numpy()[mask].astype("int64"),
                         "ts_start": flows["ts_start"].to_numpy(float)[mask],
                         "payload_fwd": flows["payload_fwd"].to_numpy()[mask].astype("int64"),
                         "payload_rev": flows["payload_rev"].to_numpy()[mask].astype("int64")})


def view_rows(flows: pd.DataFrame, feat: pd.DataFrame, ports: set[int]) -> pd.DataFrame:
    """One part's summary for :func:`view_of_parts`: the distinct rows of the columns the view reads,
    and whole rows (WHOLE_COLUMNS too) of its TCP flows to ``ports`` (:func:`vip_ports`)."""
    frame = _view_frame(flows, feat)
    tcp = (frame["transport"] == "tcp").fillna(False).to_numpy(bool)
    whole = tcp & np.isin(frame["dst_port"].to_numpy(), list(ports))
    rows = frame[~whole].drop_duplicates()
    vip = pd.concat([frame[whole].reset_index(drop=True), _whole(flows, whole)], axis=1)
    return pd.concat([rows, vip], ignore_index=True)


def twin_sources(rows: pd.DataFrame) -> set[str]:
    """Initiator endpoints (``ip|port``) of the whole rows: the sources a DNAT twin can have."""
    whole = rows[rows["src_port"].notna()] if "src_port" in rows else rows.iloc[:0]
    return set(endpoint_keys(whole["src_ip"].astype("string"), whole["src_port"]).unique())


def twin_rows(flows: pd.DataFrame, feat: pd.DataFrame, sources: set[str]) -> pd.DataFrame:
    """One part's TCP flows from ``sources`` (:func:`twin_sources` of the run), kept whole."""
    skey = endpoint_keys(flows["src_ip"].astype("string"), flows["src_port"]).to_numpy(str)
    mask = (flows["transport"].astype("string") == "tcp").fillna(False).to_numpy(bool) & np.isin(skey, list(sources))
    frame = _view_frame(flows, feat)[mask].reset_index(drop=True)
    return pd.concat([frame, _whole(flows, mask)], axis=1)


def view_of_parts(rows: list[pd.DataFrame], inventory) -> ClusterView:
    """The cluster view of a run from its parts' :func:`view_rows` (and :func:`twin_rows` when
    :func:`view_needs_twins`): the view all the run's flows give."""
    from .view import build_view
    frames = [r for r in rows if len(r)]
    if not frames:
        return build_view(pd.DataFrame(), pd.DataFrame(), inventory)
    both = pd.concat(frames, ignore_index=True)
    for c in WHOLE_COLUMNS:
        if c not in both:
            both[c] = np.nan
    both["src_port"] = both["src_port"].astype("Int64")
    return build_view(both.drop(columns=list(VIEW_FEATURES)), both[list(VIEW_FEATURES)], inventory)


def vip_flows(rows: list[pd.DataFrame], view: ClusterView) -> pd.DataFrame:
    """The run's TCP flows to the service VIP (payload counts and start) from the parts' whole rows,
    as :func:`role_masks` finds them: what each part's DNAT pairing needs."""
    frames = [r[r["src_port"].notna()] for r in rows if len(r) and "src_port" in r]
    cols = ["payload_fwd", "payload_rev", "ts_start"]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c != "ts_start" else float) for c in cols})
    whole = pd.concat(frames, ignore_index=True)
    dkey = endpoint_keys(normalize_ips(whole["dst_ip"]), whole["dst_port"]).to_numpy(str)
    hit = np.isin(dkey, list(view.vip_eps)) & (whole["transport"] == "tcp").fillna(False).to_numpy(bool)
    out = whole.loc[hit, cols].reset_index(drop=True)
    return out.astype({"payload_fwd": "int64", "payload_rev": "int64"})

"""Each flow gets exactly one path id of the catalog and the roles of its two ends (vectorized)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .catalog import path_ids
from .inventory import Inventory
from .roles import (CONTROL_PLANE_SUBJECT, NODE_SUBJECT, OVERLAY_UDP_PORTS, SSH_PORT, ClusterView,
                    _cn_match, build_view, endpoint_keys, ip_attributes, normalize_ips, tls_features)

ROLES = ["apiserver", "kubernetes-service", "kubelet", "node", "control-plane", "pod", "service",
         "etcd", "konnectivity-agent", "konnectivity-server", "unknown"]
#: Two flows are one connection seen before and after DNAT when they carry the same payload
#: bytes in each direction and start within this many seconds.
DNAT_MATCH_SECONDS = 1.0


def _host_of(ips: pd.Series, outer: pd.Series, tunneled: np.ndarray, view: ClusterView,
             in_pods: np.ndarray) -> pd.Series:
    """The host address an end stands for: itself, the host owning a pod-network gateway address
    (bridge or tunnel device), or — inside an overlay — the outer (underlay) address."""
    host = ips.copy()
    gw = ips.map(view.host_gateways)
    host = host.where(gw.isna(), gw.astype("string"))
    known = host.isin(view.cp_addrs | view.node_addrs).to_numpy(bool)
    use_outer = tunneled & ~known & ~in_pods & outer.notna().to_numpy(bool)
    return host.where(~use_outer, outer)


def _loopback(ips: pd.Series) -> np.ndarray:
    text = ips.astype("string").fillna("")
    return (text.str.startswith("127.") | (text == "::1")).to_numpy(bool)


def _capture_roles(flows: pd.DataFrame, captures: pd.DataFrame | None) -> np.ndarray:
    """The role (control-plane | node | '') of the host each flow's capture was recorded on."""
    if captures is None or captures.empty or "role" not in captures:
        return np.full(len(flows), "", dtype=object)
    roles = dict(zip(captures["file"].astype(str), captures["role"].astype("string").fillna("")))
    return flows["capture"].astype(str).map(roles).fillna("").to_numpy(object)


def _dnat_pairs(flows: pd.DataFrame, vip: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Flows among ``candidates`` that are the after-DNAT side of a pod → VIP flow."""
    out = np.zeros(len(flows), bool)
    if not vip.any() or not candidates.any():
        return out
    cols = ["payload_fwd", "payload_rev", "ts_start"]
    v = flows.loc[vip, cols].reset_index(drop=True)
    c = flows.loc[candidates, cols].assign(_pos=np.flatnonzero(candidates))
    m = c.merge(v, on=["payload_fwd", "payload_rev"], suffixes=("", "_vip"))
    m = m[(m["payload_fwd"] + m["payload_rev"] > 0) & ((m["ts_start"] - m["ts_start_vip"]).abs() <= DNAT_MATCH_SECONDS)]
    out[m["_pos"].to_numpy()] = True
    return out


def classify(flows: pd.DataFrame, tls: pd.DataFrame | None = None, inventory: Inventory | None = None,
             certs: pd.DataFrame | None = None, captures: pd.DataFrame | None = None) -> pd.DataFrame:
    """``flows`` plus ``path``, ``src_role``, ``dst_role`` (categories) and ``roles_inferred``.

    ``certs`` (CERT_COLUMNS) lets certificate subjects and SANs name roles; ``captures``
    (CAPTURE_COLUMNS, with each host's ``role`` from its manifest) tells whose loopback a
    connection to ``127.0.0.1:<apiserver port>`` ran on.
    """
    return classify_with_view(flows, tls, inventory, certs, captures)[0]


def classify_with_view(flows: pd.DataFrame, tls: pd.DataFrame | None = None, inventory: Inventory | None = None,
                       certs: pd.DataFrame | None = None, captures: pd.DataFrame | None = None
                       ) -> tuple[pd.DataFrame, ClusterView]:
    """:func:`classify` and the cluster view it used (inventory facts plus inferred ones)."""
    out = flows.copy()
    n = len(out)
    feat = tls_features(out, tls, certs)
    view = build_view(out, feat, inventory)

    src_ip, dst_ip = normalize_ips(out["src_ip"]), normalize_ips(out["dst_ip"])
    sport, dport = out["src_port"].to_numpy(np.int64), out["dst_port"].to_numpy(np.int64)
    transport = out["transport"].astype("string").fillna("").to_numpy(str)
    tcp = transport == "tcp"
    tunnel = out["tunnel"].astype("string").fillna("").to_numpy(str) if "tunnel" in out else np.full(n, "")
    tunneled = tunnel != ""
    t_src = normalize_ips(out["tunnel_src"]) if "tunnel_src" in out else pd.Series(pd.NA, index=out.index, dtype="string")
    t_dst = normalize_ips(out["tunnel_dst"]) if "tunnel_dst" in out else pd.Series(pd.NA, index=out.index, dtype="string")
    t_src = t_src.where(t_src != "", pd.NA)
    t_dst = t_dst.where(t_dst != "", pd.NA)

    src_pod_net = ip_attributes(src_ip, view.pod_networks)
    dst_pod_net = ip_attributes(dst_ip, view.pod_networks)
    src_host = _host_of(src_ip, t_src, tunneled, view, src_pod_net)
    dst_host = _host_of(dst_ip, t_dst, tunneled, view, dst_pod_net)
    src_is_gw = src_ip.isin(list(view.host_gateways)).to_numpy(bool)
    dst_is_gw = dst_ip.isin(list(view.host_gateways)).to_numpy(bool)
    src_pod = src_pod_net & ~src_is_gw
    dst_pod = dst_pod_net & ~dst_is_gw
    dst_svc = ip_attributes(dst_ip, view.service_networks)

    src_cp = src_host.isin(view.cp_addrs).to_numpy(bool)
    dst_cp = dst_host.isin(view.cp_addrs).to_numpy(bool)
    src_node = src_host.isin(view.node_addrs).to_numpy(bool)
    dst_node = dst_host.isin(view.node_addrs).to_numpy(bool)
    src_apihost = src_host.isin(view.apiserver_hosts).to_numpy(bool) & ~src_pod
    dkey = endpoint_keys(dst_ip, out["dst_port"]).to_numpy(str)
    skey = endpoint_keys(src_ip, out["src_port"]).to_numpy(str)
    dst_api = np.isin(dkey, list(view.apiserver_eps)) & tcp
    # host-local connections to the apiserver's port on loopback: the apiserver itself on a
    # control-plane host, or a node-local apiserver proxy (k3s, kubespray) on a node host
    api_ports = {int(e.rsplit("|", 1)[1]) for e in view.apiserver_eps}
    loop = _loopback(src_ip) & _loopback(dst_ip) & tcp & np.isin(dport, list(api_ports))
    capture_role = _capture_roles(out, captures)
    loop_node = loop & (capture_role == "node")
    src_cp = src_cp | (loop & ~loop_node)
    src_node = src_node | loop_node
    dst_api = dst_api | loop
    dst_vip = np.isin(dkey, list(view.vip_eps)) & tcp
    node_cert = _cn_match(NODE_SUBJECT, feat["client_subject"])
    cp_cert = _cn_match(CONTROL_PLANE_SUBJECT, feat["client_subject"])

    app = out["app_protocol"].astype("string").fillna("").to_numpy(str) if "app_protocol" in out else np.full(n, "")
    underlay = out["encrypted_underlay"].fillna(False).to_numpy(bool) if "encrypted_underlay" in out else np.zeros(n, bool)
    carrier = underlay | (transport == "esp") | np.isin(app, ["wireguard", "esp"]) | (
        (transport == "udp") & (np.isin(dport, OVERLAY_UDP_PORTS) | np.isin(sport, OVERLAY_UDP_PORTS)))

    konn_ips = {e.rsplit("|", 1)[0] for e in view.konn_eps}
    konn_ports = {int(e.rsplit("|", 1)[1]) for e in view.konn_eps}
    konn_fwd = np.isin(dkey, list(view.konn_eps)) & tcp
    # the server side initiating: from its listening endpoint, or from its host to an agent host
    konn_rev = tcp & ~konn_fwd & (np.isin(skey, list(view.konn_eps)) | (
        src_host.isin(konn_ips).to_numpy(bool) & np.isin(dport, list(konn_ports)) & ~dst_host.isin(konn_ips).to_numpy(bool)))
    etcd_ports = list(view.etcd_ports())
    loop_etcd = tcp & _loopback(src_ip) & _loopback(dst_ip) & np.isin(dport, etcd_ports) & (capture_role != "node")
    etcd = tcp & (np.isin(dkey, list(view.etcd_eps)) | loop_etcd
                  | (np.isin(dport, etcd_ports) & (dst_cp | (not view.has_inventory))))

    dnat = _dnat_pairs(out, dst_vip, dst_api & ~src_pod & ~node_cert & ~cp_cert)
    pod_api = dst_vip | (dst_api & (src_pod | dnat))
    node_api = dst_api & (node_cert | (src_node & ~src_cp & ~cp_cert))
    cp_api = dst_api & (src_cp | cp_cert)
    kubelet_dst = dst_node | dst_cp | ((not view.has_inventory) & ~dst_pod & ~dst_svc)
    readonly = tcp & (dport == view.readonly_port) & kubelet_dst
    to_kubelet = tcp & (dport == view.kubelet_port) & kubelet_dst & src_apihost
    ssh = tcp & (dport == SSH_PORT) & src_apihost & (dst_node | dst_cp) & (src_host != dst_host).to_numpy(bool)
    proxy = tcp & src_apihost & (dst_node | dst_pod | dst_svc) & ~dst_api & ~dst_vip
    cluster_end_src = src_cp | src_node
    cluster_end_dst = dst_cp | dst_node
    touches_cp = dst_api | dst_vip | src_cp | dst_cp | (tcp & np.isin(dport, [view.kubelet_port, view.readonly_port]) & kubelet_dst)
    unclassified = touches_cp & (cluster_end_src | cluster_end_dst | src_pod | dst_pod | dst_api | dst_vip)

    conditions = [carrier, konn_fwd, konn_rev, etcd, pod_api, node_api, cp_api, readonly, to_kubelet, ssh,
                  proxy, unclassified]
    choices = ["other", "konnectivity", "konnectivity", "etcd", "pod-to-apiserver", "node-to-apiserver",
               "control-plane-to-apiserver", "kubelet-readonly", "apiserver-to-kubelet", "ssh-tunnel",
               "apiserver-proxy", "unclassified"]
    path = np.select(conditions, choices, default="other")

    # roles of the ends by address, then by path
    def addr_role(pod, cp, node, svc):
        return np.select([pod, cp, node, svc], ["pod", "control-plane", "node", "service"], default="unknown")

    src_addr_role = addr_role(src_pod, src_cp, src_node, np.zeros(n, bool))
    dst_addr_role = addr_role(dst_pod, dst_cp, dst_node, dst_svc)
    src_role = np.select(
        [path == "konnectivity", path == "etcd", path == "pod-to-apiserver",
         path == "node-to-apiserver", path == "control-plane-to-apiserver",
         np.isin(path, ["apiserver-to-kubelet", "ssh-tunnel", "apiserver-proxy"])],
        [np.where(konn_rev, "konnectivity-server", "konnectivity-agent"),
         np.where((src_apihost | loop_etcd) & ~np.isin(dport, [2380]), "apiserver", np.where(src_cp, "etcd", src_addr_role)),
         "pod", np.where(node_cert, "kubelet", "node"), "control-plane", "apiserver"],
        default=src_addr_role)
    dst_role = np.select(
        [path == "konnectivity", path == "etcd", dst_vip & (path == "pod-to-apiserver"),
         np.isin(path, ["pod-to-apiserver", "node-to-apiserver", "control-plane-to-apiserver"]),
         np.isin(path, ["apiserver-to-kubelet", "kubelet-readonly"]), path == "ssh-tunnel",
         path == "apiserver-proxy"],
        [np.where(konn_rev, "konnectivity-agent", "konnectivity-server"), "etcd", "kubernetes-service",
         "apiserver", "kubelet", "node", np.where(dst_addr_role == "control-plane", "node", dst_addr_role)],
        default=dst_addr_role)
    # where an inventory speaks, only facts it lacked (or handshakes/DNAT pairing) are inferred
    if not view.has_inventory:
        inferred = np.ones(n, bool)
    else:
        inferred = dnat.copy()
        inferred |= (node_api & node_cert & ~src_node) | (cp_api & cp_cert & ~src_cp)
        for name, mask in (("apiserver_eps", dst_api), ("vip_eps", dst_vip), ("etcd_eps", etcd),
                           ("konn_eps", konn_fwd | konn_rev), ("cp_addrs", src_cp | dst_cp),
                           ("node_addrs", src_node | dst_node)):
            if name in view.inferred:
                inferred |= mask
    out["path"] = pd.Categorical(path, categories=path_ids())
    out["src_role"] = pd.Categorical(src_role, categories=ROLES)
    out["dst_role"] = pd.Categorical(dst_role, categories=ROLES)
    out["roles_inferred"] = inferred
    return out, view

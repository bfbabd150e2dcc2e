"""Who is who: the cluster view from the inventory, completed by inference from the traffic.

Without an inventory (or where it is silent) roles come from the catalog's named responder ports
(apiserver, kubelet, etcd, Konnectivity), handshakes (SNI ``kubernetes.default.svc``; certificate
SANs and subjects such as ``system:node:<name>`` or ``kube-apiserver``) and traffic shape (a VIP
never initiates); every fact found that way is marked inferred.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import ipaddress
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .catalog import default_ports
from .inventory import Inventory

APISERVER_SNI = re.compile(r"^kubernetes(\.default(\.svc(\.[a-z0-9.-]+)?)?)?$", re.I)
APISERVER_SAN = re.compile(r"DNS:kubernetes\.default\.svc", re.I)
APISERVER_SUBJECT = re.compile(r"CN=kube-apiserver(,|$)", re.I)
NODE_SUBJECT = re.compile(r"CN=system:node:([^,]+)", re.I)
CONTROL_PLANE_SUBJECT = re.compile(
    r"CN=(system:kube-scheduler|system:kube-controller-manager|kubernetes-admin|system:kube-proxy-x|"
    r"kube-apiserver-kubelet-client|kube-apiserver-etcd-client|system:konnectivity-server)(,|$)", re.I)


def cn_match(rx: re.Pattern, s: pd.Series) -> np.ndarray:
    """Boolean per element: ``rx`` matches the text (evaluated per unique value)."""
    known = s.notna().to_numpy(bool)
    out = np.zeros(len(s), bool)
    if known.any():         # most flows carry no handshake text: only the others are factorized
        codes, uniques = pd.factorize(s[known].astype("string"))
        out[known] = np.array([bool(rx.search(u)) for u in uniques], bool)[codes]
    return out


def tls_features(flows: pd.DataFrame, tls: pd.DataFrame | None, certs: pd.DataFrame | None) -> pd.DataFrame:
    """Per flow (aligned with ``flows``): sni, server leaf subject and SANs, client leaf subject."""
    out = pd.DataFrame(index=flows.index)
    out["sni"] = pd.Series(pd.NA, index=flows.index, dtype="string")
    out["server_subject"] = pd.Series(pd.NA, index=flows.index, dtype="string")
    out["server_sans"] = pd.Series(pd.NA, index=flows.index, dtype="string")
    out["client_subject"] = pd.Series(pd.NA, index=flows.index, dtype="string")
    if tls is None or tls.empty:
        return out
    t = tls.drop_duplicates("flow_id").set_index("flow_id")
    fid = flows["flow_id"]
    out["sni"] = fid.map(t["sni"]).astype("string")
    if certs is None or certs.empty:
        return out
    c = certs.drop_duplicates("fingerprint").set_index("fingerprint")

    def leaf(col: str) -> pd.Series:
        lists = t[col] if col in t else pd.Series(dtype=object)
        return fid.map(lists.map(lambda v: v[0] if isinstance(v, (list, tuple, np.ndarray)) and len(v) else None))

    s_leaf, c_leaf = leaf("server_cert_fingerprints"), leaf("client_cert_fingerprints")
    out["server_subject"] = s_leaf.map(c["subject"]).astype("string")
    out["server_sans"] = s_leaf.map(c["sans"].map(
        lambda v: ",".join(v) if isinstance(v, (list, tuple, np.ndarray)) else None)).astype("string")
    out["client_subject"] = c_leaf.map(c["subject"]).astype("string")
    return out


def ip_attributes(ips: pd.Series, networks: list) -> np.ndarray:
    """Boolean per element: the address lies in one of ``networks`` (computed per unique value)."""
    if not networks or ips.empty:
        return np.zeros(len(ips), bool)
    codes, uniques = pd.factorize(ips.astype("string").fillna(""))
    hit = np.zeros(len(uniques), bool)
    for i, u in enumerate(uniques):
        try:
            a = ipaddress.ip_address(u)
        except ValueError:
            continue
        hit[i] = any(a.version == n.version and a in n for n in networks)
    out = hit[codes]
    out[codes < 0] = False
    return out


#: dotted IPv4 text without leading zeros: already canonical (the decoder writes every IPv4 address so)
_CANONICAL_V4 = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$"


def normalize_ips(ips: pd.Series) -> pd.Series:
    """Canonical address text (per unique value), so inventory and flows compare equal."""
    import pyarrow as pa
    import pyarrow.compute as pc
    text = ips.astype("string").fillna("")
    # usually every distinct text is canonical (or no address at all): the column is its own answer,
    # with no Python string made per distinct address
    distinct = pc.unique(_arrow_text(text))
    odd = distinct.filter(pc.invert(pc.match_substring_regex(distinct, _CANONICAL_V4))).to_pylist()
    if all(_canonical(u) == u for u in odd):
        return text.rename(None)
    codes, uniques = pd.factorize(text)
    uniques = np.asarray(uniques, dtype=object)
    # one regex pass in Arrow spares ipaddress the (usually all) addresses that are canonical already
    plain = pc.match_substring_regex(pa.array(uniques, pa.string()), _CANONICAL_V4).to_numpy(zero_copy_only=False)
    canon = uniques.copy()
    for i in np.flatnonzero(~plain):
        try:
            canon[i] = str(ipaddress.ip_address(uniques[i]))
        except ValueError:
            pass
    arr = canon[np.where(codes < 0, 0, codes)] if len(canon) else np.array([], object)
    return pd.Series(arr, index=ips.index, dtype="string")


def _arrow_text(text: pd.Series):
    import pyarrow as pa
    arr = pa.array(text.array, from_pandas=True)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _canonical(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def endpoint_keys(ips: pd.Series, ports: pd.Series) -> pd.Series:
    return ips.astype("string").fillna("") + "|" + ports.astype("Int64").astype("string").fillna("")


#: While set (:func:`shared_address_codes`): the last factorization of :func:`address_codes`, with the
#: Arrow arrays it was made from. Per thread and context, so concurrent tasks never share one.
_shared_codes: contextvars.ContextVar[list | None] = contextvars.ContextVar("commpath_address_codes", default=None)


@contextlib.contextmanager
def shared_address_codes():
    """Within it, :func:`address_codes` of the same Arrow-backed columns is factorized once: a run's
    view, role masks and findings factorize the same addresses (0.4 s for each of three calls at a
    million flows). What it holds is released on leaving."""
    token = _shared_codes.set([])
    try:
        yield
    finally:
        _shared_codes.reset(token)


def address_codes(*columns: pd.Series) -> tuple[list[np.ndarray], pd.Index]:
    """Each column's address texts as codes into the distinct texts of them all (one factorization):
    role masks compare integers, not a million texts. The codes are read-only (they may be shared:
    :func:`shared_address_codes`)."""
    memo = _shared_codes.get()
    # Arrow arrays are immutable: the same array objects (held below) are the same texts. Only
    # Arrow-backed columns hand out their own array; others would make a new one on every call.
    shared = memo is not None and all(isinstance(c.array, pd.arrays.ArrowExtensionArray) for c in columns)
    if not shared:
        return _factorized(columns)
    arrays = [c.array.__arrow_array__() for c in columns]
    if memo and len(memo[0]) == len(arrays) and all(a is b for a, b in zip(arrays, memo[0])):
        return memo[1]
    memo[:] = [arrays, _factorized(columns)]
    return memo[1]


def _factorized(columns) -> tuple[list[np.ndarray], pd.Index]:
    text = pd.concat([c.astype("string") for c in columns], ignore_index=True).fillna("")
    codes, distinct = pd.factorize(text)
    codes = codes.astype(np.int64)
    codes.flags.writeable = False
    return np.split(codes, np.cumsum([len(c) for c in columns])[:-1]), pd.Index(distinct)


def endpoint_codes(codes: np.ndarray, ports) -> np.ndarray:
    """An integer per (address code, port) pair, as :func:`endpoint_keys` is a text per pair (a missing
    port, ``ip|`` there, is ``-1 - code``)."""
    p = ports.to_numpy(np.int64, na_value=-1) if hasattr(ports, "to_numpy") else np.asarray(ports, np.int64)
    return np.where(p >= 0, codes * 65536 + p, -1 - codes)


@dataclass
class EndpointCodes:
    """The flows' endpoints as :func:`endpoint_codes`, and the ``ip|port`` texts of the view's sets."""

    src: np.ndarray
    dst: np.ndarray
    distinct: pd.Index          # the address texts the codes index

    @classmethod
    def of(cls, flows: pd.DataFrame) -> EndpointCodes:
        return cls.of_ends(flows["src_ip"], flows.get("src_port"), flows["dst_ip"], flows["dst_port"])

    @classmethod
    def of_ends(cls, src_ip: pd.Series, src_port, dst_ip: pd.Series, dst_port) -> EndpointCodes:
        """From the ends' address and port columns (no source port: addresses alone, ``ip|``)."""
        (src, dst), distinct = address_codes(src_ip, dst_ip)
        return cls(endpoint_codes(src, src_port) if src_port is not None else -1 - src,
                   endpoint_codes(dst, dst_port), distinct)

    def codes(self, eps) -> np.ndarray:
        return endpoint_codes_of(eps, self.distinct)

    def texts(self, codes: np.ndarray) -> set[str]:
        """The distinct ``ip|port`` texts of ``codes``."""
        codes = np.unique(codes)
        addr = np.where(codes >= 0, codes // 65536, -1 - codes)
        used = np.unique(addr)      # only these addresses become Python strings, not every distinct one
        text = dict(zip(used.tolist(), self.distinct.take(used).to_numpy(object).tolist()))
        return {f"{text[a]}|{c % 65536}" if c >= 0 else f"{text[a]}|" for c, a in zip(codes.tolist(), addr.tolist())}


def endpoint_codes_of(eps, distinct: pd.Index) -> np.ndarray:
    """:func:`endpoint_codes` of ``ip|port`` texts over ``distinct`` (an address not there matches no code)."""
    pairs = [e.rsplit("|", 1) for e in eps if "|" in e]
    at = _positions(distinct, [ip for ip, _ in pairs]) if pairs else np.zeros(0, np.int64)
    return np.array([a * 65536 + int(port) for a, (_, port) in zip(at, pairs)
                     if a >= 0 and port.isdigit() and str(int(port)) == port and int(port) < 65536], np.int64)


def _positions(distinct: pd.Index, texts: list[str]) -> np.ndarray:
    """Where each of ``texts`` is in ``distinct`` (distinct values), -1 where it is not.

    The view's sets are a few texts and ``distinct`` may hold a million: one scan against the few
    (Arrow's ``index_in``) instead of ``get_indexer``'s hash table of the million (0.3 s, per index)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    wanted = list(dict.fromkeys(texts))
    found = pc.index_in(pa.array(distinct.to_numpy(object) if distinct.dtype == object else distinct.array,
                                 pa.string(), from_pandas=True),
                        value_set=pa.array(wanted, pa.string()))
    hit = np.flatnonzero(found.is_valid().to_numpy(zero_copy_only=False))
    where = np.full(len(wanted), -1, np.int64)
    where[found.take(pa.array(hit)).to_numpy(zero_copy_only=False)] = hit
    index = {t: i for i, t in enumerate(wanted)}
    return where[np.array([index[t] for t in texts], np.int64)]


@dataclass
class ClusterView:
    """Sets of addresses and endpoints (``"ip|port"``) per role, and which ones were inferred."""

    apiserver_eps: set[str] = field(default_factory=set)
    vip_eps: set[str] = field(default_factory=set)
    cp_addrs: set[str] = field(default_factory=set)
    node_addrs: set[str] = field(default_factory=set)
    apiserver_hosts: set[str] = field(default_factory=set)
    konn_eps: set[str] = field(default_factory=set)
    etcd_eps: set[str] = field(default_factory=set)
    pod_networks: list = field(default_factory=list)
    service_networks: list = field(default_factory=list)
    #: address that stands for a host inside the pod network (bridge / tunnel device) -> host address
    host_gateways: dict[str, str] = field(default_factory=dict)
    #: port name (the catalog's ``ports``) -> number, the inventory's values where it gives them
    ports: dict[str, int] = field(default_factory=default_ports)
    konnectivity_enabled: bool = False
    inferred: set[str] = field(default_factory=set)   # names of the fields above that were inferred
    has_inventory: bool = False

    @property
    def kubelet_port(self) -> int:
        return self.ports["kubelet_port"]

    @property
    def readonly_port(self) -> int:
        return self.ports["kubelet_readonly_port"]

    def etcd_ports(self) -> set[int]:
        return {int(e.rsplit("|", 1)[1]) for e in self.etcd_eps} | {self.ports["etcd_client_port"],
                                                                      self.ports["etcd_peer_port"]}


def _distinct(values: pd.Series) -> set:
    """``set(values)``, built from the distinct values (a million rows are seldom a million addresses)."""
    return set(values.unique())


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _ep(ip: str, port: int) -> str:
    return f"{ip}|{port}"


def _net(c: str):
    return ipaddress.ip_network(c, strict=False)


def build_view(flows: pd.DataFrame, feat: pd.DataFrame, inventory: Inventory | None) -> ClusterView:
    """The cluster view: the inventory's facts, with gaps filled in from the traffic."""
    v = _view_of_inventory(inventory)
    if flows.empty:
        return v
    dst_port = flows["dst_port"]
    # the endpoints as codes are made only when something is inferred (an inventory may say it all)
    dkey = functools.cache(lambda: EndpointCodes.of(flows))
    tcp = (flows["transport"].astype("string") == "tcp").to_numpy(bool)

    # the kubernetes service VIP: the first address of each service CIDR, port 443
    if not v.vip_eps and v.service_networks:
        v.vip_eps = {_ep(str(n.network_address + 1), 443) for n in v.service_networks}
        v.inferred.add("vip_eps")
    if not v.apiserver_eps:
        _infer_apiserver(v, flows, feat, dkey(), tcp)
    if not v.vip_eps and v.apiserver_eps:
        _infer_vip_from_dnat_twins(v, flows, dkey(), tcp)
    if not v.etcd_eps:
        etcd = tcp & np.isin(dst_port.to_numpy(), [v.ports["etcd_client_port"], v.ports["etcd_peer_port"]])
        v.etcd_eps = dkey().texts(dkey().dst[etcd]) if etcd.any() else set()
        if v.etcd_eps:
            v.inferred.add("etcd_eps")
    if not v.konn_eps:
        konn = tcp & (dst_port.to_numpy() == v.ports["konnectivity_port"])
        v.konn_eps = dkey().texts(dkey().dst[konn]) if konn.any() else set()
        if v.konn_eps:
            v.inferred.add("konn_eps")
    if not v.cp_addrs:
        v.cp_addrs = {e.rsplit("|", 1)[0] for e in v.apiserver_eps | v.etcd_eps | v.konn_eps}
        if v.cp_addrs:
            v.inferred.add("cp_addrs")
    # the apiserver runs on the hosts of its endpoints and (stacked control planes) on every
    # control-plane host; its connections to kubelets, nodes and pods start there
    v.apiserver_hosts = {e.rsplit("|", 1)[0] for e in v.apiserver_eps} | v.cp_addrs
    if not v.node_addrs:
        _infer_nodes(v, flows, feat, dkey(), tcp)
    if not v.pod_networks and v.vip_eps:
        _infer_pod_networks(v, flows, dkey())
    return v


def _view_of_inventory(inventory: Inventory | None) -> ClusterView:
    v = ClusterView(has_inventory=inventory is not None)
    inv = inventory or Inventory()
    v.ports.update({name: int(getattr(inv, name)) for name in v.ports if hasattr(inv, name)})
    v.apiserver_eps = {_ep(*e) for e in inv.apiserver_endpoints}
    if inv.service:
        v.vip_eps = {_ep(*inv.service)}
    v.cp_addrs = set(inv.control_plane_addresses)
    v.node_addrs = set(inv.node_addresses)
    v.konn_eps = {_ep(*inv.konnectivity_server)} if inv.konnectivity_server else set()
    v.konnectivity_enabled = inv.konnectivity_enabled
    v.etcd_eps = {_ep(*e) for e in inv.etcd}
    v.pod_networks = [_net(c) for c in inv.all_pod_cidrs()]
    v.service_networks = [_net(c) for c in inv.service_cidrs]
    for h in inv.control_plane + inv.nodes:
        if not h.addresses:
            continue
        for c in h.pod_cidrs:
            n = _net(c)
            v.host_gateways[str(n.network_address)] = h.addresses[0]
            if n.num_addresses > 2:
                v.host_gateways[str(n.network_address + 1)] = h.addresses[0]
    return v


def _infer_apiserver(v: ClusterView, flows: pd.DataFrame, feat: pd.DataFrame, dkey: EndpointCodes,
                     tcp: np.ndarray) -> None:
    by_port = tcp & (flows["dst_port"].to_numpy() == v.ports["apiserver_port"])
    by_sni = cn_match(APISERVER_SNI, feat["sni"])
    by_cert = cn_match(APISERVER_SAN, feat["server_sans"]) | cn_match(APISERVER_SUBJECT, feat["server_subject"])
    cand = dkey.texts(dkey.dst[tcp & (by_port | by_sni | by_cert)]) - v.vip_eps
    if not v.vip_eps and len(cand) > 1:
        # a VIP on 443 never initiates anything; the real apiserver host does (etcd, kubelet)
        on_443 = [e for e in cand if e.endswith("|443")]
        src = flows["src_ip"].astype("string")
        sources = _distinct(src[src.isin([e.rsplit("|", 1)[0] for e in on_443])])   # only the candidates'
        vips = {e for e in on_443 if e.rsplit("|", 1)[0] not in sources}
        if vips and cand - vips:
            v.vip_eps = vips
            v.inferred.add("vip_eps")
            cand -= vips
    if v.service_networks:
        in_svc = {e for e in cand if ip_attributes(pd.Series([e.rsplit("|", 1)[0]]), v.service_networks)[0]}
        v.vip_eps |= in_svc
        cand -= in_svc
    v.apiserver_eps = cand
    v.inferred.add("apiserver_eps")


def _infer_vip_from_dnat_twins(v: ClusterView, flows: pd.DataFrame, dkey: EndpointCodes, tcp: np.ndarray) -> None:
    """A pod's connection to the kubernetes service is captured before DNAT (to the VIP, on the pod's veth)
    and after (to an apiserver endpoint), from the same address and port at the same moment: the other
    destination of such a twin is the VIP. Real in-cluster clients dial the VIP by address, so no SNI names it."""
    skey, dk, start = dkey.src, dkey.dst, flows["ts_start"].to_numpy(float)
    to_api = tcp & np.isin(dk, dkey.codes(v.apiserver_eps))
    other = tcp & ~to_api & (flows["dst_port"].to_numpy() == 443)
    pairs = (pd.DataFrame({"s": skey[other], "t": start[other], "d": dk[other]})
             .merge(pd.DataFrame({"s": skey[to_api], "t_api": start[to_api]}), on="s"))
    twins = dkey.texts(pairs.loc[(pairs["t"] - pairs["t_api"]).abs() < 1.0, "d"].to_numpy(np.int64))
    if twins:
        v.vip_eps = twins
        v.inferred.add("vip_eps")


def _infer_nodes(v: ClusterView, flows: pd.DataFrame, feat: pd.DataFrame, dkey: EndpointCodes, tcp: np.ndarray) -> None:
    kubelets = tcp & np.isin(flows["dst_port"].to_numpy(), (v.kubelet_port, v.readonly_port))
    nodes = _distinct(flows["dst_ip"].astype("string")[kubelets])
    node_cert = cn_match(NODE_SUBJECT, feat["client_subject"])
    nodes |= _distinct(flows["src_ip"].astype("string")[node_cert])
    # Konnectivity agents dial from the nodes' network; overlays are carried between node hosts
    nodes |= _distinct(flows["src_ip"].astype("string")[np.isin(dkey.dst, dkey.codes(v.konn_eps))].dropna())
    if "tunnel_src" in flows:
        nodes |= _distinct(flows["tunnel_src"].dropna().astype("string")) | _distinct(flows["tunnel_dst"].dropna().astype("string"))
    v.node_addrs = nodes - v.cp_addrs if v.cp_addrs else nodes
    if v.node_addrs:
        v.inferred.add("node_addrs")


def _infer_pod_networks(v: ClusterView, flows: pd.DataFrame, dkey: EndpointCodes) -> None:
    """Pods are the clients of the kubernetes service VIP; their cluster network is taken as the /16
    (IPv6: /48) around them, kube's usual cluster CIDR size, narrowed until no host address falls inside."""
    vip_clients = _distinct(flows["src_ip"].astype("string")[np.isin(dkey.dst, dkey.codes(v.vip_eps))].dropna())
    hosts = [ipaddress.ip_address(h) for h in (v.cp_addrs | v.node_addrs) if _is_ip(h)]
    nets = set()
    for ip in vip_clients - v.cp_addrs - v.node_addrs:
        try:
            a = ipaddress.ip_address(ip)
        except ValueError:
            continue
        for prefix in ((16, 24, 32) if a.version == 4 else (48, 64, 128)):
            net = ipaddress.ip_network(f"{a}/{prefix}", strict=False)
            if not any(h.version == net.version and h in net for h in hosts):
                nets.add(net)   # the widest guess that holds no host address
                break
    if nets:
        v.pod_networks = sorted(nets, key=str)
        v.inferred.add("pod_networks")

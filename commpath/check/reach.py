"""Which catalog paths the recorded capture filters could not have seen: each path's representative
packets (its ends' addresses from the inventory or the captures, its responder ports) put to each
host's filter by libpcap."""

from __future__ import annotations

import ipaddress
import itertools

from ..capture import bpf
from ..capture.filters import UNFILTERED_PATHS, catalog_paths, role_endpoints

#: stands for any address the run does not name (TEST-NET-2, never a real host)
ELSEWHERE = "198.51.100.7"
#: responder ports tried for a path whose catalog entry names none (the apiserver proxies to any port)
ANY_PORTS = (80, 443, 8080)
EPHEMERAL = 40000
#: observed addresses tried for a role the inventory does not name (the captures' busiest first)
OBSERVED_MAX = 8


def _first_hosts(cidrs) -> list[str]:
    out = []
    for c in cidrs or []:
        try:
            net = ipaddress.ip_network(str(c), strict=False)
        except ValueError:
            continue
        out.append(str(net.network_address + 1 if net.num_addresses > 2 else net.network_address))
        if net.num_addresses > 16:
            out.append(str(net.network_address + 10))
    return out


def _observed(flows) -> list[str]:
    if flows is None or not len(flows) or "src_ip" not in flows:
        return []
    counts = flows["src_ip"].astype(str).value_counts().add(flows["dst_ip"].astype(str).value_counts(), fill_value=0)
    return [str(a) for a in counts.sort_values(ascending=False).index[:OBSERVED_MAX]]


def _role_ends(inv: dict, observed: list[str]) -> dict[str, list[tuple[str, int | None]]]:
    """(address, port or None) candidates of every catalog role."""
    where = role_endpoints(inv)
    hosts = [str(a) for group in ("control_plane", "nodes") for h in inv.get(group) or [] for a in h.get("addresses") or []]
    pods = _first_hosts(list(inv.get("pod_cidrs") or []) + [c for group in ("control_plane", "nodes")
                                                            for h in inv.get(group) or [] for c in h.get("pod_cidrs") or []])
    services = _first_hosts(inv.get("service_cidrs") or [])
    generic = list(dict.fromkeys(observed + [ELSEWHERE]))
    plain = lambda addrs: [(a, None) for a in dict.fromkeys(addrs)] or [(a, None) for a in generic]  # noqa: E731
    ends = {role: eps or [(a, None) for a in generic] for role, eps in where.items()}
    ends.update({"kubelet": plain(hosts), "node": plain(hosts), "konnectivity-agent": plain(hosts),
                 "pod": plain(pods), "service": plain(services)})
    ends["any"] = list(dict.fromkeys([e for eps in ends.values() for e in eps] + [(a, None) for a in generic]))
    return ends


def _ports(inv: dict, ports: tuple[int, ...]) -> tuple[int, ...]:
    override = {10250: inv.get("kubelet_port"), 10255: inv.get("kubelet_readonly_port")}
    return tuple(dict.fromkeys(o if isinstance(o, int) else p for p, o in ((p, override.get(p)) for p in ports))) or ANY_PORTS


def _frames(path: dict, ends: dict, inv: dict):
    """Both directions of a SYN between every initiator and responder candidate of ``path``."""
    initiators = [a for r in path["initiator"] for a, _ in ends.get(r, ends["any"])]
    responders = [(a, p) for r in path["responder"] for a, p in ends.get(r, ends["any"])]
    for src, (dst, port) in itertools.product(dict.fromkeys(initiators), dict.fromkeys(responders)):
        for dport in ((port,) if port else _ports(inv, path["ports"])):
            for frame in (bpf.tcp_syn(src, dst, EPHEMERAL, dport), bpf.tcp_syn(dst, src, dport, EPHEMERAL)):
                if frame is not None:
                    yield frame


def unseen_paths(filters: list[str], inventory: dict | None, flows=None) -> list[str] | None:
    """Catalog paths none of whose representative packets any of ``filters`` passes; None when that
    cannot be told (no filter given, libpcap missing, a filter libpcap cannot compile)."""
    if not filters or not bpf.available():
        return None
    inv = inventory or {}
    ends = _role_ends(inv, _observed(flows))
    konnectivity_off = (inv.get("konnectivity") or {}).get("enabled") is False
    try:
        matchers = [bpf.Matcher(f) for f in dict.fromkeys(filters)]
    except bpf.FilterError:
        return None
    try:
        unseen = []
        for path in catalog_paths():
            if path["id"] in UNFILTERED_PATHS or (konnectivity_off and path["id"] == "konnectivity"):
                continue
            if not any(m.passes(fr) for fr in _frames(path, ends, inv) for m in matchers):
                unseen.append(path["id"])
        return unseen
    finally:
        for m in matchers:
            m.close()


__all__ = ["ELSEWHERE", "unseen_paths"]

"""Default BPF capture filter of a host, derived from the path catalog and the cluster inventory."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import yaml

from ..errors import InputError

#: Ports of the documented paths when the catalog cannot be read: apiserver, kubelet, read-only
#: kubelet, SSH, Konnectivity, etcd (the catalog's ``ports`` say the same).
DEFAULT_PORTS = (443, 6443, 10250, 10255, 22, 8132, 2379, 2380)
#: Catalog roles whose addresses an inventory names (every other role, a node's kubelet, a pod or a
#: service, is any address: only its port narrows it, and on a node every flow is the node's anyway).
ADDRESSED_ROLES = ("apiserver", "control-plane", "kubernetes-service", "etcd", "konnectivity-server")
#: Ports much else uses too: kept only with the addresses the inventory names for a path's ends (the
#: apiserver's 6443, etcd's, Konnectivity's and the kubelet's are kept wherever they are, e.g. on loopback).
SHARED_PORTS = (22, 80, 443)
#: Paths that are not a documented flow: no filter term is made for them.
UNFILTERED_PATHS = ("unclassified", "other")


def read_inventory(path) -> dict:
    """The inventory as a plain dict (the capture agent only needs addresses and ports)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(path, exc.strerror or str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise InputError(path, f"{where}not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(path, "expected a mapping (apiVersion: commpath/v1, kind: Inventory)")
    return data


@functools.lru_cache(maxsize=1)
def catalog_paths() -> tuple[dict, ...]:
    """(id, initiator roles, responder roles, ports) of every catalog path, its named ports resolved.

    Read from the shipped ``cfg/catalog.yaml`` as plain data: the classify layer validates it, the
    capture layer below it only needs who talks to whom on which port."""
    doc = yaml.safe_load((resources.files("commpath") / "cfg" / "catalog.yaml").read_text(encoding="utf-8"))
    named = {k: int(v) for k, v in (doc.get("ports") or {}).items()}
    out = []
    for p in doc.get("paths") or []:
        ports = [named.get(x, x) if isinstance(x, str) else x for x in p.get("ports") or []]
        out.append({"id": p["id"], "initiator": tuple(p.get("initiator") or ()),
                    "responder": tuple(p.get("responder") or ()), "ports": tuple(int(x) for x in ports)})
    return tuple(out)


def _port(endpoint: str) -> int | None:
    head, _, tail = str(endpoint).rpartition(":")
    return int(tail) if head and tail.isdigit() else None


def _host(endpoint: str) -> str:
    head, sep, tail = str(endpoint).rpartition(":")
    host = head if sep and tail.isdigit() else str(endpoint)
    return host.strip("[]")


def role_endpoints(inventory: dict) -> dict[str, list[tuple[str, int | None]]]:
    """(address, port or None) of each addressed role the inventory names."""
    inv = inventory or {}
    api = inv.get("apiserver") or {}
    konn = inv.get("konnectivity") or {}
    cp = [(str(a), None) for member in inv.get("control_plane") or [] for a in member.get("addresses") or []]
    eps = lambda values: [(_host(e), _port(e)) for e in values if e]   # noqa: E731
    return {
        "apiserver": eps(api.get("endpoints") or []) + cp,
        "control-plane": cp,
        "kubernetes-service": eps([api["service"]] if api.get("service") else []),
        "etcd": eps(inv.get("etcd") or []),
        "konnectivity-server": eps([konn["server"]] if konn.get("server") else []),
    }


def _addressed(where: dict, roles: tuple[str, ...]) -> list[tuple[str, int | None]]:
    """The endpoints of ``roles`` when every one of them is an addressed role the inventory names, else []."""
    if not roles or not all(r in ADDRESSED_ROLES and where.get(r) for r in roles):
        return []
    return [ep for r in roles for ep in where[r]]


def _inventory_ports(inv: dict, path: dict) -> tuple[int, ...]:
    """A path's responder ports, with the inventory's kubelet ports where the catalog names the defaults."""
    override = {10250: inv.get("kubelet_port"), 10255: inv.get("kubelet_readonly_port")}
    return tuple(dict.fromkeys(o if isinstance(o, int) else p for p, o in
                               ((p, override.get(p)) for p in path["ports"])))


def default_filter(role: str, inventory: dict | None = None, host: str | None = None) -> str:
    """BPF keeping exactly the flows the catalog's paths can be: for every path, the addresses the
    inventory names for its ends (the apiserver's whole traffic, as the apiserver proxies to any node,
    pod or service port), else its ports.

    With Konnectivity enabled, the agents on the nodes dial the proxy targets: the pod networks are kept too.
    Without an inventory no address tells the apiserver's outgoing connections apart, and those of
    ``apiserver-proxy`` go to arbitrary pod and node ports: the default then keeps all of TCP rather
    than drop that path. ``role`` and ``host`` do not narrow it (a host sees its own flows only).
    """
    del role, host
    inv = inventory or {}
    where = role_endpoints(inv)
    konnectivity_off = (inv.get("konnectivity") or {}).get("enabled") is False
    hosts: dict[str, None] = {}
    pairs: dict[tuple[str, int], None] = {}
    ports: dict[int, None] = {}
    for path in catalog_paths():
        if path["id"] in UNFILTERED_PATHS or (konnectivity_off and any(
                r.startswith("konnectivity") for r in path["initiator"] + path["responder"])):
            continue
        path_ports = _inventory_ports(inv, path)
        ends = [ep for role_ in path["initiator"] + path["responder"] for ep in where.get(role_, [])]
        if not path_ports:
            if not ends:
                return "tcp"          # a path to any port from an unknown address: keep everything
            hosts.update((a, None) for a, _ in ends)
            continue
        responders = _addressed(where, path["responder"])
        initiators = _addressed(where, path["initiator"])
        if responders:                # (address and port) of the responding end: the tightest term
            for addr, port in responders:
                for p in [port] if port else path_ports:
                    pairs[(addr, p)] = None
        elif initiators:              # e.g. the apiserver's SSH tunnels: from its addresses to port 22
            for addr, _ in initiators:
                for p in path_ports:
                    pairs[(addr, p)] = None
        # Kubernetes' own ports wherever they are (etcd or the apiserver on loopback); shared ones by address
        ports.update((p, None) for p in path_ports if not (responders or initiators) or p not in SHARED_PORTS)
    for addr, p in list(pairs):
        if addr in hosts or p in ports:
            del pairs[(addr, p)]
    nets: dict[str, None] = {}
    if (inv.get("konnectivity") or {}).get("enabled") is True:
        # the Konnectivity agents dial the apiserver's proxy and kubelet targets themselves: pods' ports
        nets.update((str(c), None) for c in inv.get("pod_cidrs") or [])
        nets.update((str(c), None) for n in inv.get("nodes") or [] for c in n.get("pod_cidrs") or [])
    terms = [f"port {p}" for p in sorted(ports)]
    terms += [f"host {h}" for h in hosts if h]
    terms += [f"(host {a} and port {p})" for a, p in pairs if a]
    terms += [f"net {n}" for n in nets]
    return "tcp and (" + " or ".join(terms) + ")" if terms else "tcp"


def bpf_error(expr: str) -> str | None:
    """Why libpcap rejects ``expr`` (compiled for Ethernet, no privileges needed); None if valid or unknown."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("pcap")
    if not name or not expr:
        return None
    try:
        pcap = ctypes.CDLL(name)
    except OSError:
        return None

    class _Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint), ("insns", ctypes.c_void_p)]

    pcap.pcap_open_dead.restype = ctypes.c_void_p
    pcap.pcap_geterr.restype = ctypes.c_char_p
    handle = ctypes.c_void_p(pcap.pcap_open_dead(1, 262144))  # DLT_EN10MB
    prog = _Program()
    try:
        if pcap.pcap_compile(handle, ctypes.byref(prog), expr.encode(), 1, 0xFFFFFFFF) != 0:
            return (pcap.pcap_geterr(handle) or b"invalid filter").decode(errors="replace")
        pcap.pcap_freecode(ctypes.byref(prog))
        return None
    finally:
        pcap.pcap_close(handle)

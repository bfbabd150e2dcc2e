"""Default BPF capture filter of a host, derived from its role and the cluster inventory."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import InputError

#: Ports of the documented paths: apiserver, kubelet, read-only kubelet, SSH, Konnectivity, etcd.
DEFAULT_PORTS = (443, 6443, 10250, 10255, 22, 8132, 2379, 2380)


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


def _port(endpoint: str) -> int | None:
    head, _, tail = str(endpoint).rpartition(":")
    return int(tail) if head and tail.isdigit() else None


def _host(endpoint: str) -> str:
    head, sep, tail = str(endpoint).rpartition(":")
    host = head if sep and tail.isdigit() else str(endpoint)
    return host.strip("[]")


def default_filter(role: str, inventory: dict | None = None, host: str | None = None) -> str:
    """BPF keeping every documented path's port, the control plane's addresses and this node's pods.

    Everything to or from a control-plane address is kept so that apiserver proxy traffic to
    arbitrary node, pod and service ports is captured too.
    """
    inv = inventory or {}
    ports = set(DEFAULT_PORTS)
    for key in ("kubelet_port", "kubelet_readonly_port"):
        if isinstance(inv.get(key), int):
            ports.add(inv[key])
    api = inv.get("apiserver") or {}
    konn = inv.get("konnectivity") or {}
    endpoints = list(api.get("endpoints") or []) + list(inv.get("etcd") or [])
    if konn.get("server"):
        endpoints.append(konn["server"])
    ports.update(p for p in map(_port, endpoints) if p)
    hosts: list[str] = []
    for member in inv.get("control_plane") or []:
        hosts.extend(str(a) for a in member.get("addresses") or [])
    hosts.extend(_host(e) for e in endpoints)
    if api.get("service"):
        hosts.append(_host(api["service"]))
    nets: list[str] = []
    if role == "node":
        for node in inv.get("nodes") or []:
            if host is None or node.get("name") == host:
                nets.extend(str(c) for c in node.get("pod_cidrs") or [])
    terms = [f"port {p}" for p in sorted(ports)]
    terms += [f"host {h}" for h in dict.fromkeys(hosts) if h]
    terms += [f"net {n}" for n in dict.fromkeys(nets)]
    return "tcp and (" + " or ".join(terms) + ")"


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

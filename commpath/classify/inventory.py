"""The inventory file: who is who in the cluster, validated with errors naming file, line and key."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from .catalog import default_ports
from ._yamldoc import (YamlDoc, expect_bool, expect_int, expect_list, expect_mapping, expect_str,
                       load_yaml)

Endpoint = tuple[str, int]

TOP_KEYS = {"apiVersion", "kind", "cluster", "apiserver", "control_plane", "nodes", "kubelet_port",
            "kubelet_readonly_port", "pod_cidrs", "service_cidrs", "konnectivity", "etcd", "ca_bundle"}


@dataclass
class Host:
    """A control-plane or node host."""

    name: str
    addresses: list[str] = field(default_factory=list)
    pod_cidrs: list[str] = field(default_factory=list)


@dataclass
class Inventory:
    """The cluster as the classifier needs it; addresses normalised by :mod:`ipaddress`."""

    file: str | None = None
    cluster: str | None = None
    apiserver_endpoints: list[Endpoint] = field(default_factory=list)
    service: Endpoint | None = None
    control_plane: list[Host] = field(default_factory=list)
    nodes: list[Host] = field(default_factory=list)
    kubelet_port: int = field(default_factory=lambda: default_ports()["kubelet_port"])
    kubelet_readonly_port: int = field(default_factory=lambda: default_ports()["kubelet_readonly_port"])
    pod_cidrs: list[str] = field(default_factory=list)
    service_cidrs: list[str] = field(default_factory=list)
    konnectivity_enabled: bool = False
    konnectivity_server: Endpoint | None = None
    konnectivity_agents: list[str] = field(default_factory=list)   # nodes running an agent (informational)
    etcd: list[Endpoint] = field(default_factory=list)
    ca_bundle: Path | None = None

    @property
    def control_plane_addresses(self) -> set[str]:
        return {a for h in self.control_plane for a in h.addresses}

    @property
    def node_addresses(self) -> set[str]:
        return {a for h in self.nodes for a in h.addresses}

    def host_name(self, address: str) -> str | None:
        for h in self.control_plane + self.nodes:
            if address in h.addresses:
                return h.name
        return None

    def all_pod_cidrs(self) -> list[str]:
        return list(dict.fromkeys(self.pod_cidrs + [c for h in self.control_plane + self.nodes for c in h.pod_cidrs]))

    def to_dict(self) -> dict:
        """The inventory as inventory YAML (apiVersion commpath/v1, kind Inventory)."""
        def ep(e: Endpoint) -> str:
            return format_endpoint(*e)
        out: dict = {"apiVersion": "commpath/v1", "kind": "Inventory"}
        if self.cluster:
            out["cluster"] = self.cluster
        api: dict = {}
        if self.apiserver_endpoints:
            api["endpoints"] = [ep(e) for e in self.apiserver_endpoints]
        if self.service:
            api["service"] = ep(self.service)
        if api:
            out["apiserver"] = api
        def hosts(hs: list[Host]) -> list[dict]:
            res = []
            for h in hs:
                d: dict = {"name": h.name, "addresses": list(h.addresses)}
                if h.pod_cidrs:
                    d["pod_cidrs"] = list(h.pod_cidrs)
                res.append(d)
            return res
        if self.control_plane:
            out["control_plane"] = hosts(self.control_plane)
        if self.nodes:
            out["nodes"] = hosts(self.nodes)
        out["kubelet_port"] = self.kubelet_port
        out["kubelet_readonly_port"] = self.kubelet_readonly_port
        if self.pod_cidrs:
            out["pod_cidrs"] = list(self.pod_cidrs)
        if self.service_cidrs:
            out["service_cidrs"] = list(self.service_cidrs)
        konn: dict = {"enabled": self.konnectivity_enabled}
        if self.konnectivity_server:
            konn["server"] = ep(self.konnectivity_server)
        if self.konnectivity_agents:
            konn["agents"] = list(self.konnectivity_agents)
        out["konnectivity"] = konn
        if self.etcd:
            out["etcd"] = [ep(e) for e in self.etcd]
        if self.ca_bundle:
            out["ca_bundle"] = str(self.ca_bundle)
        return out


def format_endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def normalize_ip(text: str) -> str:
    """Canonical text of an address (raises ValueError)."""
    return str(ipaddress.ip_address(text.strip()))


def parse_endpoint(text: str) -> Endpoint:
    """``"192.0.2.10:6443"`` or ``"[2001:db8::1]:6443"`` → (ip, port) (raises ValueError)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError("expected [IPv6]:PORT")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError("expected IP:PORT (IPv6 as [ADDR]:PORT)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port {port!r}")
    return normalize_ip(host), int(port)


def _endpoint(doc: YamlDoc, key: str, value) -> Endpoint:
    text = expect_str(doc, key, value)
    try:
        return parse_endpoint(text)
    except ValueError as exc:
        raise doc.error(key, f"{text!r} is not an endpoint: {exc}") from None


def _address(doc: YamlDoc, key: str, value) -> str:
    text = expect_str(doc, key, value)
    try:
        return normalize_ip(text)
    except ValueError:
        raise doc.error(key, f"{text!r} is not an IP address") from None


def _cidr(doc: YamlDoc, key: str, value) -> str:
    text = expect_str(doc, key, value)
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise doc.error(key, f"{text!r} is not a CIDR") from None


def _list(doc: YamlDoc, key: str, value, item) -> list:
    return [item(doc, f"{key}[{i}]", v) for i, v in enumerate(expect_list(doc, key, value))]


def _hosts(doc: YamlDoc, key: str, value) -> list[Host]:
    hosts = []
    for i, raw in enumerate(expect_list(doc, key, value)):
        k = f"{key}[{i}]"
        expect_mapping(doc, k, raw, {"name", "addresses", "pod_cidrs", "roles", "labels"})
        if "name" not in raw:
            raise doc.error(k, "missing key 'name'")
        hosts.append(Host(
            name=str(expect_str(doc, f"{k}.name", raw["name"])),
            addresses=_list(doc, f"{k}.addresses", raw.get("addresses", []), _address),
            pod_cidrs=_list(doc, f"{k}.pod_cidrs", raw.get("pod_cidrs", []), _cidr),
        ))
    return hosts


def inventory_from_doc(doc: YamlDoc) -> Inventory:
    """Validate a parsed inventory document."""
    data = doc.data if doc.data is not None else {}
    expect_mapping(doc, "", data, TOP_KEYS)
    if "apiVersion" in data and data["apiVersion"] != "commpath/v1":
        raise doc.error("apiVersion", f"expected 'commpath/v1', got {data['apiVersion']!r}")
    if "kind" in data and data["kind"] != "Inventory":
        raise doc.error("kind", f"expected 'Inventory', got {data['kind']!r}")
    inv = Inventory(file=doc.file)
    if "cluster" in data:
        inv.cluster = str(expect_str(doc, "cluster", data["cluster"]))
    if "apiserver" in data:
        api = expect_mapping(doc, "apiserver", data["apiserver"], {"endpoints", "service"})
        inv.apiserver_endpoints = _list(doc, "apiserver.endpoints", api.get("endpoints", []), _endpoint)
        if api.get("service") is not None:
            inv.service = _endpoint(doc, "apiserver.service", api["service"])
    inv.control_plane = _hosts(doc, "control_plane", data.get("control_plane", []))
    inv.nodes = _hosts(doc, "nodes", data.get("nodes", []))
    if "kubelet_port" in data:
        inv.kubelet_port = expect_int(doc, "kubelet_port", data["kubelet_port"], 1)
    if "kubelet_readonly_port" in data:
        inv.kubelet_readonly_port = expect_int(doc, "kubelet_readonly_port", data["kubelet_readonly_port"], 0)
    inv.pod_cidrs = _list(doc, "pod_cidrs", data.get("pod_cidrs", []), _cidr)
    inv.service_cidrs = _list(doc, "service_cidrs", data.get("service_cidrs", []), _cidr)
    if "konnectivity" in data:
        konn = expect_mapping(doc, "konnectivity", data["konnectivity"], {"enabled", "server", "agents"})
        inv.konnectivity_enabled = expect_bool(doc, "konnectivity.enabled", konn.get("enabled", False))
        if konn.get("server") is not None:
            inv.konnectivity_server = _endpoint(doc, "konnectivity.server", konn["server"])
        inv.konnectivity_agents = [str(expect_str(doc, f"konnectivity.agents[{i}]", a))
                                   for i, a in enumerate(expect_list(doc, "konnectivity.agents", konn.get("agents", [])))]
        if inv.konnectivity_enabled and inv.konnectivity_server is None:
            raise doc.error("konnectivity", "enabled: true needs a 'server' endpoint")
    inv.etcd = _list(doc, "etcd", data.get("etcd", []), _endpoint)
    if data.get("ca_bundle") is not None:
        ca = Path(expect_str(doc, "ca_bundle", data["ca_bundle"]))
        if not ca.is_absolute():
            ca = Path(doc.file).resolve().parent / ca
        if not ca.is_file():
            raise doc.error("ca_bundle", f"no such file {str(ca)!r}")
        inv.ca_bundle = ca
    return inv


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory file; errors are ``InputError("file:line: key: reason")``."""
    return inventory_from_doc(load_yaml(path))

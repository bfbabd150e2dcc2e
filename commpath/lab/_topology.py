"""Network namespaces, veth pairs and the bridge of the lab; nothing touches the host's namespaces."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

from ..errors import CommpathError

HOST_NET = "10.77.0.0/24"
SERVICE_VIP = "10.96.0.1"
SERVICE_CIDR = "10.96.0.0/12"
APISERVER_PORT = 6443


@dataclass
class Pod:
    name: str
    ns: str
    ip: str
    gateway: str
    node_iface: str            # the pod's veth end inside the node namespace


@dataclass
class Host:
    name: str
    role: str                  # control-plane | node
    ns: str
    ip: str
    pod_cidr: str | None = None
    pods: list[Pod] = field(default_factory=list)

    @property
    def capture_ifaces(self) -> list[str]:
        if self.role == "control-plane":
            return ["eth0", "lo"]  # lo: components, etcd and Konnectivity frontend on the same host
        return ["eth0"] + [p.node_iface for p in self.pods]

    @property
    def addresses(self) -> list[str]:
        return [self.ip] + [p.gateway for p in self.pods]


@dataclass
class Topology:
    prefix: str
    hosts: list[Host]

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    @property
    def control_plane(self) -> Host:
        return next(h for h in self.hosts if h.role == "control-plane")

    @property
    def nodes(self) -> list[Host]:
        return [h for h in self.hosts if h.role == "node"]

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def namespaces(self) -> list[str]:
        names = [self.switch]
        for h in self.hosts:
            names.append(h.ns)
            names.extend(p.ns for p in h.pods)
        return names


def plan(prefix: str, nodes: int = 2) -> Topology:
    hosts = [Host("cp1", "control-plane", f"{prefix}-cp1", "10.77.0.10")]
    for i in range(1, nodes + 1):
        h = Host(f"node{i}", "node", f"{prefix}-node{i}", f"10.77.0.{20 + i}", pod_cidr=f"10.244.{i}.0/24")
        h.pods.append(Pod(f"pod{i}", f"{prefix}-node{i}-pod{i}", f"10.244.{i}.10", f"10.244.{i}.1", f"veth-pod{i}"))
        hosts.append(h)
    return Topology(prefix, hosts)


def sh(*cmd: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(list(cmd), capture_output=True, text=True, input=input, timeout=30)
    if check and res.returncode != 0:
        raise CommpathError(f"lab: `{' '.join(cmd)}` failed: {res.stderr.strip()}")
    return res


def nsexec(ns: str, *cmd: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *cmd, check=check, input=input)


def existing_namespaces(prefix: str) -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n == prefix or n.startswith(prefix + "-")]


def _nat_rules(node: Host, apiserver: str) -> str:
    rule = f"ip daddr {SERVICE_VIP} tcp dport 443 dnat to {apiserver}:{APISERVER_PORT}"
    return ("table ip kube-proxy-lab {\n"
            f"  chain prerouting {{ type nat hook prerouting priority -100; {rule}; }}\n"
            f"  chain output {{ type nat hook output priority -100; {rule}; }}\n"
            "}\n")


def _dnat(node: Host, apiserver: str) -> str:
    """DNAT the `kubernetes` service VIP to the apiserver (kube-proxy's job): nftables, else iptables."""
    if nsexec(node.ns, "nft", "-f", "-", check=False, input=_nat_rules(node, apiserver)).returncode == 0:
        return "nftables"
    for chain in ("PREROUTING", "OUTPUT"):
        nsexec(node.ns, "iptables", "-t", "nat", "-A", chain, "-d", SERVICE_VIP, "-p", "tcp", "--dport", "443",
               "-j", "DNAT", "--to-destination", f"{apiserver}:{APISERVER_PORT}")
    return "iptables"


def wire_hosts(topo) -> None:
    """Every namespace of ``topo`` with its loopback up, the switch's bridge, and each host's eth0 on it
    (forwarding on). Shared by the emulated lab and the real-cluster lab."""
    for ns in topo.namespaces():
        sh("ip", "netns", "add", ns)
        nsexec(ns, "ip", "link", "set", "lo", "up")
    sw = topo.switch
    nsexec(sw, "ip", "link", "add", "br0", "type", "bridge")
    nsexec(sw, "ip", "link", "set", "br0", "up")
    for h in topo.hosts:
        # both ends are created inside the switch namespace; one is moved into the host namespace
        nsexec(sw, "ip", "link", "add", h.name, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
        nsexec(sw, "ip", "link", "set", h.name, "master", "br0", "up")
        nsexec(h.ns, "ip", "addr", "add", f"{h.ip}/24", "dev", "eth0")
        nsexec(h.ns, "ip", "link", "set", "eth0", "up")
        nsexec(h.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")

def create(topo: Topology) -> dict:
    """Create every namespace and link; returns facts (e.g. which NAT tool was used)."""
    if existing_namespaces(topo.prefix):
        raise CommpathError(f"lab: namespaces with prefix {topo.prefix!r} exist already; run `commpath lab down --name {topo.prefix}`")
    wire_hosts(topo)
    cp = topo.control_plane
    for h in topo.hosts:
        for p in h.pods:
            nsexec(h.ns, "ip", "link", "add", p.node_iface, "type", "veth", "peer", "name", "eth0", "netns", p.ns)
            nsexec(h.ns, "ip", "addr", "add", f"{p.gateway}/24", "dev", p.node_iface)
            nsexec(h.ns, "ip", "link", "set", p.node_iface, "up")
            nsexec(p.ns, "ip", "addr", "add", f"{p.ip}/24", "dev", "eth0")
            nsexec(p.ns, "ip", "link", "set", "eth0", "up")
            nsexec(p.ns, "ip", "route", "add", "default", "via", p.gateway)  # inside the pod namespace only
    for h in topo.hosts:
        for other in topo.hosts:
            if other is not h and other.pod_cidr:
                nsexec(h.ns, "ip", "route", "add", other.pod_cidr, "via", other.ip)
    nat = {h.name: _dnat(h, cp.ip) for h in topo.nodes}
    return {"nat": nat}


def destroy(prefix: str) -> list[str]:
    """Delete every namespace with the prefix (their veths and the bridge go with them)."""
    removed = []
    for ns in sorted(existing_namespaces(prefix), key=len, reverse=True):
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            sh("kill", "-9", pid, check=False)
        if sh("ip", "netns", "del", ns, check=False).returncode == 0:
            removed.append(ns)
    return removed

"""The capture agent's default filter, judged by libpcap itself on packets of every catalog path."""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import pytest
import yaml
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from commpath.capture.filters import bpf_error, default_filter

INVENTORY = yaml.safe_load("""
apiVersion: commpath/v1
kind: Inventory
apiserver: {endpoints: ["10.98.0.2:6443"], service: "10.96.0.1:443"}
control_plane: [{name: cp1, addresses: ["10.98.0.2"]}]
nodes: [{name: node1, addresses: ["10.98.0.1"], pod_cidrs: ["10.244.1.0/24"]}]
konnectivity: {enabled: false}
etcd: ["10.98.0.2:2379"]
kubelet_port: 10250
""")
#: A managed cluster: no control-plane hosts, the apiserver behind an address of the provider's, etcd on loopback.
MANAGED = yaml.safe_load("""
apiserver: {endpoints: ["172.31.9.9:443"], service: "10.100.0.1:443"}
nodes: [{name: n1, addresses: ["10.0.1.5"]}]
etcd: ["127.0.0.1:2379"]
konnectivity: {enabled: true, server: "172.31.9.9:8132"}
""")

#: (what, src, sport, dst, dport) of one connection of each catalog path in INVENTORY's cluster.
PATHS = [
    ("node-to-apiserver", "10.98.0.1", 40000, "10.98.0.2", 6443),
    ("pod-to-apiserver (VIP)", "10.244.1.5", 40001, "10.96.0.1", 443),
    ("pod-to-apiserver (after DNAT)", "10.244.1.5", 40001, "10.98.0.2", 6443),
    ("apiserver-to-kubelet", "10.98.0.2", 40002, "10.98.0.1", 10250),
    ("apiserver-proxy to a pod port", "10.98.0.2", 40003, "10.244.1.5", 8080),
    ("apiserver-proxy to a host-network port", "10.98.0.2", 40004, "10.98.0.1", 18080),
    ("ssh-tunnel", "10.98.0.2", 40005, "10.98.0.1", 22),
    ("metrics-to-kubelet", "10.244.1.9", 40006, "10.98.0.1", 10250),
    ("kubelet-readonly", "10.244.1.9", 40007, "10.98.0.1", 10255),
    ("etcd", "10.98.0.2", 40008, "10.98.0.2", 2379),
]
#: Traffic no catalog path is about.
UNRELATED = [
    ("pod to pod", "10.244.1.5", 40100, "10.244.2.7", 5432),
    ("node to an outside web server", "10.98.0.1", 40101, "192.0.2.80", 443),
    ("someone's SSH to the node", "192.0.2.7", 40102, "10.98.0.1", 22),
]


@pytest.fixture(scope="module")
def pcap():
    name = ctypes.util.find_library("pcap")
    if not name:
        pytest.skip("libpcap is not installed")
    return ctypes.CDLL(name)


def _matches(pcap, expr: str, src: str, sport: int, dst: str, dport: int) -> bool:
    """Whether libpcap's compiled ``expr`` keeps a TCP SYN from src:sport to dst:dport (and its answer)."""
    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint), ("insns", ctypes.c_void_p)]

    class Header(ctypes.Structure):
        _fields_ = [("sec", ctypes.c_long), ("usec", ctypes.c_long), ("caplen", ctypes.c_uint32),
                    ("len", ctypes.c_uint32)]
    pcap.pcap_open_dead.restype = ctypes.c_void_p
    handle = ctypes.c_void_p(pcap.pcap_open_dead(1, 262144))
    prog = Program()
    assert pcap.pcap_compile(handle, ctypes.byref(prog), expr.encode(), 1, 0xFFFFFFFF) == 0, expr
    try:
        kept = []
        for a, ap, b, bp, flags in ((src, sport, dst, dport, "S"), (dst, dport, src, sport, "SA")):
            frame = bytes(Ether() / IP(src=a, dst=b) / TCP(sport=ap, dport=bp, flags=flags))
            hdr = Header(0, 0, len(frame), len(frame))
            kept.append(pcap.pcap_offline_filter(ctypes.byref(prog), ctypes.byref(hdr), frame) != 0)
        assert kept[0] == kept[1], "both directions of a connection must get the same verdict"
        return kept[0]
    finally:
        pcap.pcap_freecode(ctypes.byref(prog))
        pcap.pcap_close(handle)


def test_without_an_inventory_apiserver_proxy_traffic_to_pod_ports_is_kept(pcap):
    expr = default_filter("node")
    for what, *conn in PATHS:
        assert _matches(pcap, expr, *conn), what


def test_with_an_inventory_every_path_is_kept_and_nothing_else(pcap):
    for role, host in (("node", "node1"), ("control-plane", "cp1")):
        expr = default_filter(role, INVENTORY, host)
        assert bpf_error(expr) is None
        for what, *conn in PATHS:
            assert _matches(pcap, expr, *conn), (what, expr)
        for what, *conn in UNRELATED:
            assert not _matches(pcap, expr, *conn), (what, expr)


def test_a_managed_cluster_keeps_the_apiserver_konnectivity_and_loopback_etcd(pcap):
    expr = default_filter("node", MANAGED, "n1")
    assert _matches(pcap, expr, "10.0.1.5", 41000, "172.31.9.9", 443)          # node-to-apiserver
    assert _matches(pcap, expr, "172.31.9.9", 41001, "10.244.3.3", 9090)        # apiserver-proxy
    assert _matches(pcap, expr, "10.0.1.5", 41002, "172.31.9.9", 8132)         # konnectivity
    assert _matches(pcap, expr, "10.244.3.3", 41003, "10.100.0.1", 443)        # pod to the VIP
    assert _matches(pcap, expr, "127.0.0.1", 41004, "127.0.0.1", 2379)         # etcd on loopback
    assert not _matches(pcap, expr, "127.0.0.1", 41005, "127.0.0.1", 8080)     # other loopback traffic
    assert not _matches(pcap, expr, "10.244.3.3", 41006, "10.244.4.4", 8080)   # pod to pod


def test_the_kubelet_port_of_the_inventory_replaces_the_catalogs(pcap):
    inv = {**INVENTORY, "kubelet_port": 11250}
    expr = default_filter("node", inv, "node1")
    assert _matches(pcap, expr, "10.244.1.9", 40006, "10.98.0.1", 11250)
    assert not _matches(pcap, expr, "10.244.1.9", 40006, "10.98.0.1", 10250)


def test_with_konnectivity_the_agents_dials_to_pods_are_kept(pcap):
    inv = {**INVENTORY, "konnectivity": {"enabled": True, "server": "10.98.0.2:8132"}, "pod_cidrs": ["10.244.0.0/16"]}
    expr = default_filter("node", inv, "node1")
    assert _matches(pcap, expr, "10.244.1.1", 40200, "10.244.1.10", 9376)     # the agent dials a pod's port
    assert _matches(pcap, expr, "10.98.0.1", 40201, "10.98.0.2", 8132)        # the agent to its server
    assert not _matches(pcap, expr, "10.98.0.1", 40202, "192.0.2.80", 443)


RECORDED = sorted(p.parent.name for p in (Path(__file__).resolve().parents[1] / "captures").glob("*/ground-truth.yaml"))


@pytest.mark.parametrize("scenario", RECORDED)
def test_every_connection_of_a_recorded_lab_run_passes_its_filter(pcap, scenario):
    """Each wire connection the lab's ground truth names (before or after DNAT) passes the default filter that
    the run's own inventory gives, on a node and on a control-plane host."""
    folder = Path(__file__).resolve().parents[1] / "captures" / scenario
    truth = yaml.safe_load((folder / "ground-truth.yaml").read_text())
    inv = yaml.safe_load((folder / "inventory.yaml").read_text())
    for role, host in (("node", "node1"), ("control-plane", "cp1")):
        expr = default_filter(role, inv, host)
        for c in truth["connections"]:
            src, sport = c["src"].rsplit(":", 1)
            ends = [c["dst"]] + ([c["dst_after_nat"]] if c.get("dst_after_nat") else [])
            assert any(_matches(pcap, expr, src, int(sport), *(lambda d: (d[0], int(d[1])))(e.rsplit(":", 1)))
                       for e in ends), (role, c)


def test_kubernetes_own_ports_are_kept_on_loopback_too(pcap):
    """A hand-written inventory names etcd and the apiserver by their advertised addresses; the apiserver
    still reaches etcd, and kubeadm's components the apiserver, on loopback."""
    expr = default_filter("control-plane", INVENTORY, "cp1")
    assert _matches(pcap, expr, "127.0.0.1", 40300, "127.0.0.1", 2379)
    assert _matches(pcap, expr, "127.0.0.1", 40301, "127.0.0.1", 6443)
    assert not _matches(pcap, expr, "127.0.0.1", 40302, "127.0.0.1", 443)

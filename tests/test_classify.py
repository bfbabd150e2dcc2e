"""The classifier: exactly one path per flow, roles for both ends, on synthetic and real flows."""

from __future__ import annotations

import cProfile
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import commpath
from commpath.classify import ROLES, classify, load_inventory, path_ids
from commpath.decode.handshakes import analyze_handshakes
from commpath.decode.schema import CERT_COLUMNS, FLOW_COLUMNS, TLS_COLUMNS, conform

PUBLIC = Path(__file__).resolve().parents[1].parent / "shared/pcaps/public"
ZEEK = PUBLIC / "zeek/testing/btest/Traces"

INVENTORY = """\
apiVersion: commpath/v1
kind: Inventory
apiserver:
  endpoints: ["192.0.2.10:6443", "[2001:db8::10]:6443"]
  service: "10.96.0.1:443"
control_plane:
  - name: cp1
    addresses: ["192.0.2.10", "2001:db8::10"]
    pod_cidrs: ["10.244.0.0/24"]
nodes:
  - name: node1
    addresses: ["192.0.2.21", "2001:db8::21"]
    pod_cidrs: ["10.244.1.0/24", "fd00:10:244:1::/64"]
  - name: node2
    addresses: ["192.0.2.22"]
    pod_cidrs: ["10.244.2.0/24"]
pod_cidrs: ["10.244.0.0/16", "fd00:10:244::/56"]
service_cidrs: ["10.96.0.0/12", "fd00:10:96::/112"]
konnectivity: {enabled: true, server: "192.0.2.10:8132"}
etcd: ["192.0.2.10:2379"]
"""


def flows_frame(rows: list[dict]) -> pd.DataFrame:
    """A flow table in FLOW_COLUMNS from (src, sport, dst, dport, ...) rows."""
    out = []
    for i, r in enumerate(rows):
        payload = r.pop("payload", (300 + i, 900 + i))
        out.append({"flow_id": i, "capture": "synthetic.pcap", "first_frame": 1 + 20 * i, "last_frame": 19 + 20 * i,
                    "ts_start": 1000.0 + 10 * i, "ts_end": 1001.0 + 10 * i,
                    "ip_version": 6 if ":" in r["src_ip"] else 4, "transport": "tcp", "packets": 19,
                    "bytes": 3000, "payload_fwd": payload[0], "payload_rev": payload[1], "app_protocol": "tls",
                    "tunnel": "", "encrypted_underlay": False, "syn_seen": True, "synack_seen": True,
                    "handshake_seen": True, "http_connect": False, **r})
    return conform(pd.DataFrame(out), FLOW_COLUMNS)


def row(src, dst, app="tls", **kw):
    sip, sport = src.rsplit(":", 1) if not src.startswith("[") else (src[1:src.index("]")], src.rsplit(":", 1)[1])
    dip, dport = dst.rsplit(":", 1) if not dst.startswith("[") else (dst[1:dst.index("]")], dst.rsplit(":", 1)[1])
    return {"src_ip": sip, "src_port": int(sport), "dst_ip": dip, "dst_port": int(dport), "app_protocol": app, **kw}


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    p = tmp_path_factory.mktemp("inv") / "inventory.yaml"
    p.write_text(INVENTORY)
    return load_inventory(p)


CASES = [  # (name, flow row, path, src_role, dst_role)
    ("kubelet->apiserver", row("192.0.2.21:40001", "192.0.2.10:6443"), "node-to-apiserver", "node", "apiserver"),
    ("kubelet->apiserver v6", row("[2001:db8::21]:40002", "[2001:db8::10]:6443"), "node-to-apiserver", "node", "apiserver"),
    ("pod->VIP before DNAT", row("10.244.1.5:40003", "10.96.0.1:443"), "pod-to-apiserver", "pod", "kubernetes-service"),
    ("pod->apiserver after DNAT", row("10.244.1.5:40003", "192.0.2.10:6443"), "pod-to-apiserver", "pod", "apiserver"),
    ("pod v6->apiserver", row("[fd00:10:244:1::5]:40004", "[2001:db8::10]:6443"), "pod-to-apiserver", "pod", "apiserver"),
    ("scheduler->apiserver", row("192.0.2.10:40005", "192.0.2.10:6443"), "control-plane-to-apiserver", "control-plane", "apiserver"),
    ("apiserver->kubelet", row("192.0.2.10:40006", "192.0.2.21:10250"), "apiserver-to-kubelet", "apiserver", "kubelet"),
    ("apiserver->kubelet on cp host", row("192.0.2.10:40007", "192.0.2.10:10250"), "apiserver-to-kubelet", "apiserver", "kubelet"),
    ("apiserver->kubelet v6", row("[2001:db8::10]:40008", "[2001:db8::21]:10250"), "apiserver-to-kubelet", "apiserver", "kubelet"),
    ("apiserver->pod proxy", row("192.0.2.10:40009", "10.244.1.5:8080", "http"), "apiserver-proxy", "apiserver", "pod"),
    ("apiserver->node proxy", row("192.0.2.10:40010", "192.0.2.21:8080", "http"), "apiserver-proxy", "apiserver", "node"),
    ("apiserver->pod proxy v6", row("[2001:db8::10]:40011", "[fd00:10:244:1::5]:8443"), "apiserver-proxy", "apiserver", "pod"),
    ("apiserver->service proxy", row("192.0.2.10:40012", "10.96.12.7:80", "http"), "apiserver-proxy", "apiserver", "service"),
    ("proxy inside VXLAN from flannel.1", row("10.244.0.0:40013", "10.244.1.5:8080", "http", tunnel="vxlan",
     tunnel_src="192.0.2.10", tunnel_dst="192.0.2.21", tunnel_vni=1), "apiserver-proxy", "apiserver", "pod"),
    ("pod->pod inside VXLAN", row("10.244.1.5:40014", "10.244.2.7:80", "http", tunnel="vxlan",
     tunnel_src="192.0.2.21", tunnel_dst="192.0.2.22", tunnel_vni=1), "other", "pod", "pod"),
    ("pod->apiserver inside Geneve", row("10.244.2.7:40015", "192.0.2.10:6443", tunnel="geneve",
     tunnel_src="192.0.2.22", tunnel_dst="192.0.2.10"), "pod-to-apiserver", "pod", "apiserver"),
    ("VXLAN carrier", row("192.0.2.21:40016", "192.0.2.10:4789", "unknown", transport="udp"), "other", "node", "control-plane"),
    ("konnectivity agent->server", row("192.0.2.21:40017", "192.0.2.10:8132"), "konnectivity",
     "konnectivity-agent", "konnectivity-server"),
    ("konnectivity from the server's port", row("192.0.2.10:8132", "192.0.2.21:40018"), "konnectivity",
     "konnectivity-server", "konnectivity-agent"),
    ("konnectivity server dials agent", row("192.0.2.10:40019", "192.0.2.21:8132"), "konnectivity",
     "konnectivity-server", "konnectivity-agent"),
    ("ssh tunnel", row("192.0.2.10:40020", "192.0.2.21:22", "ssh"), "ssh-tunnel", "apiserver", "node"),
    ("read-only port", row("10.244.1.5:40021", "192.0.2.21:10255", "http"), "kubelet-readonly", "pod", "kubelet"),
    ("apiserver->etcd", row("192.0.2.10:40022", "192.0.2.10:2379"), "etcd", "apiserver", "etcd"),
    ("node->cp other port", row("192.0.2.21:40023", "192.0.2.10:9100", "http"), "unclassified", "node", "control-plane"),
    ("pod->kubelet (metrics)", row("10.244.1.5:40024", "192.0.2.22:10250"), "metrics-to-kubelet", "pod", "kubelet"),
    ("pod->pod", row("10.244.1.5:40025", "10.244.2.7:80", "http"), "other", "pod", "pod"),
    ("internet", row("198.51.100.7:40026", "93.184.216.34:443"), "other", "unknown", "unknown"),
]


def test_every_case_gets_its_path_and_roles(inventory):
    flows = flows_frame([dict(c[1]) for c in CASES])
    out = classify(flows, None, inventory)
    assert len(out) == len(flows) and out["path"].notna().all()
    assert list(out["path"].cat.categories) == path_ids()
    assert set(out["src_role"].astype(str)) | set(out["dst_role"].astype(str)) <= set(ROLES)
    got = list(zip(out["path"].astype(str), out["src_role"].astype(str), out["dst_role"].astype(str)))
    want = [c[2:] for c in CASES]
    wrong = [(c[0], g, w) for c, g, w in zip(CASES, got, want) if g != w]
    assert not wrong, wrong
    assert not out["roles_inferred"].any()       # everything here came from the inventory
    # the flow table itself is untouched
    pd.testing.assert_frame_equal(out[list(FLOW_COLUMNS)], flows)


def test_snat_after_dnat_is_paired_with_the_vip_flow(inventory):
    """kube-proxy masquerading: the post-DNAT flow leaves from the node IP; it is the pod's connection
    when a pod -> VIP flow with the same bytes each way starts at the same time."""
    flows = flows_frame([
        row("10.244.1.6:41000", "10.96.0.1:443", payload=(517, 4210)),
        row("192.0.2.21:52000", "192.0.2.10:6443", payload=(517, 4210), ts_start=1000.002),
        row("192.0.2.21:52001", "192.0.2.10:6443", payload=(900, 7000)),   # the kubelet itself
    ])
    flows.loc[1, "ts_start"] = flows.loc[0, "ts_start"] + 0.002
    out = classify(flows, None, inventory)
    assert list(out["path"].astype(str)) == ["pod-to-apiserver", "pod-to-apiserver", "node-to-apiserver"]
    assert list(out["roles_inferred"]) == [False, True, False]


def _tls_and_certs(entries: dict[int, dict]):
    """Synthetic TLS rows and certificates: flow_id -> {sni, server_subject, client_subject, server_sans}."""
    tls_rows, cert_rows = [], []
    for fid, e in entries.items():
        r = {"flow_id": fid, "tls_version": "TLS 1.2", "sni": e.get("sni"), "established": True,
             "server_cert_fingerprints": [], "client_cert_fingerprints": []}
        for side in ("server", "client"):
            if e.get(f"{side}_subject"):
                fp = f"{fid:02d}{side[0]}" + "0" * 61
                r[f"{side}_cert_fingerprints"] = [fp]
                cert_rows.append({"fingerprint": fp, "subject": e[f"{side}_subject"], "issuer": "CN=kubernetes",
                                  "sans": e.get(f"{side}_sans", []), "self_signed": False})
        tls_rows.append(r)
    tls = conform(pd.DataFrame(tls_rows), TLS_COLUMNS)
    certs = conform(pd.DataFrame(cert_rows), CERT_COLUMNS) if cert_rows else None
    return tls, certs


def test_kubelet_on_control_plane_host_by_its_client_certificate(inventory):
    flows = flows_frame([row("192.0.2.10:40100", "192.0.2.10:6443"), row("192.0.2.10:40101", "192.0.2.10:6443")])
    tls, certs = _tls_and_certs({0: {"client_subject": "CN=system:node:cp1,O=system:nodes"},
                                 1: {"client_subject": "CN=system:kube-scheduler"}})
    out = classify(flows, tls, inventory, certs)
    assert list(out["path"].astype(str)) == ["node-to-apiserver", "control-plane-to-apiserver"]
    assert list(out["src_role"].astype(str)) == ["kubelet", "control-plane"]


def test_roles_inferred_without_inventory_from_ports_sni_and_certificates():
    flows = flows_frame([
        row("10.0.0.21:40200", "10.0.0.10:6443"),            # node (it serves a kubelet below) -> apiserver
        row("10.0.0.10:40201", "10.0.0.21:10250"),           # apiserver -> kubelet
        row("10.0.0.22:40202", "10.0.0.10:6443"),            # kubelet by its client certificate
        row("10.1.0.5:40203", "10.0.0.99:443"),              # pod -> VIP: SNI kubernetes.default.svc, never a source
        row("10.0.0.23:40204", "10.0.0.11:443"),             # apiserver behind 443 by its certificate (a source too)
        row("10.0.0.11:40205", "10.0.0.23:10250"),
        row("10.0.0.21:40206", "10.0.0.10:8132"),            # Konnectivity by port
        row("10.0.0.10:40207", "10.0.0.10:2379"),            # etcd by port
        row("10.0.0.21:40208", "10.0.0.22:10255", "http"),   # read-only port
        row("192.168.1.4:40209", "151.101.1.69:443"),        # unrelated
    ])
    tls, certs = _tls_and_certs({
        2: {"client_subject": "CN=system:node:node2,O=system:nodes"},
        3: {"sni": "kubernetes.default.svc"},
        4: {"server_subject": "CN=kube-apiserver", "server_sans": ["DNS:kubernetes", "DNS:kubernetes.default.svc"]},
    })
    out = classify(flows, tls, None, certs)
    assert list(out["path"].astype(str)) == [
        "node-to-apiserver", "apiserver-to-kubelet", "node-to-apiserver", "pod-to-apiserver", "node-to-apiserver",
        "apiserver-to-kubelet", "konnectivity", "etcd", "kubelet-readonly", "other"]
    assert out.loc[2, "src_role"] == "kubelet" and out.loc[3, "dst_role"] == "kubernetes-service"
    assert out["roles_inferred"].all()


def _read(name: str):
    path = next(ZEEK.rglob(name))
    return commpath.read(path)


def _handshakes(capture):
    return analyze_handshakes(capture)


def test_real_mutual_tls_capture_with_an_inventory(tmp_path):
    """zeek's client-certificate.pcap: its server named as the apiserver, its client as a node."""
    cap = _read("client-certificate.pcap")
    flows = cap.flows
    assert len(flows) == 1
    f = flows.iloc[0]
    inv = tmp_path / "inv.yaml"
    inv.write_text(textwrap.dedent(f"""\
        apiserver: {{endpoints: ["{f.dst_ip}:{f.dst_port}"]}}
        control_plane: [{{name: cp, addresses: ["{f.dst_ip}"]}}]
        nodes: [{{name: laptop, addresses: ["{f.src_ip}"]}}]
        """))
    hs = _handshakes(cap)
    out = classify(flows, hs.tls, load_inventory(inv), hs.certs)
    assert out.loc[0, "path"] == "node-to-apiserver"
    assert (out.loc[0, "src_role"], out.loc[0, "dst_role"]) == ("node", "apiserver")
    # without an inventory nothing marks 443 with SNI certauth.idrix.fr as a cluster endpoint
    bare = classify(flows, hs.tls, None, hs.certs)
    assert bare.loc[0, "path"] == "other" and bare.loc[0, "roles_inferred"]


def test_real_geneve_overlay_flow_is_judged_by_its_inner_addresses(tmp_path):
    cap = _read("geneve-47101.pcap")
    inner = cap.flows[cap.flows["tunnel"].astype(str) == "geneve"]
    assert len(inner) == 1
    f = inner.iloc[0]
    inv = tmp_path / "inv.yaml"
    inv.write_text(textwrap.dedent(f"""\
        apiserver: {{endpoints: ["{f.dst_ip}:{f.dst_port}"]}}
        pod_cidrs: ["{f.src_ip}/24"]
        """))
    out = classify(cap.flows, None, load_inventory(inv))
    got = out[out["flow_id"] == f.flow_id].iloc[0]
    assert (got["path"], got["src_role"], got["dst_role"]) == ("pod-to-apiserver", "pod", "apiserver")


def _python_calls(fn) -> int:
    """How many Python-level function calls ``fn()`` makes (cProfile's count: no clock involved)."""
    prof = cProfile.Profile()
    prof.runcall(fn)
    return sum(s.callcount for s in prof.getstats())


def test_classifier_is_vectorized(inventory):
    """No Python loop per flow: 100x the flows makes (almost) no more Python calls. Counted, not
    timed, so a loaded machine cannot fail it."""
    rng = np.random.default_rng(7)
    base = flows_frame([dict(c[1]) for c in CASES])

    def sized(n: int) -> pd.DataFrame:
        big = base.sample(n, replace=True, random_state=1).reset_index(drop=True)
        big["flow_id"] = np.arange(len(big))
        big["src_port"] = rng.integers(30000, 60000, len(big)).astype("int32")
        big["payload_fwd"] = rng.integers(1, 10**6, len(big))
        return big

    small, large = sized(2_000), sized(200_000)
    out = classify(large, None, inventory)
    assert out["path"].notna().all()
    calls_small = _python_calls(lambda: classify(small, None, inventory))
    calls_large = _python_calls(lambda: classify(large, None, inventory))
    # distinct values (addresses, ports) may add a few calls each; 198,000 more flows may not add one each
    assert calls_large < calls_small + 20_000, (calls_small, calls_large)


def test_loopback_apiserver_and_etcd_by_the_capture_hosts_role(inventory):
    """127.0.0.1:6443 is the apiserver on a control-plane host, a node-local apiserver proxy on a node;
    127.0.0.1:2379 is kubeadm's default etcd client connection."""
    flows = flows_frame([
        row("127.0.0.1:40300", "127.0.0.1:6443", capture="cp1/lo.pcap"),
        row("127.0.0.1:40301", "127.0.0.1:6443", capture="node1/lo.pcap"),
        row("[::1]:40302", "[::1]:6443", capture="cp1/lo.pcap"),
        row("127.0.0.1:40303", "127.0.0.1:2379", capture="cp1/lo.pcap"),
        row("127.0.0.1:40304", "127.0.0.1:8080", "http", capture="cp1/lo.pcap"),
    ])
    captures = pd.DataFrame({"file": ["cp1/lo.pcap", "node1/lo.pcap"], "role": ["control-plane", "node"]})
    out = classify(flows, None, inventory, captures=captures)
    assert list(out["path"].astype(str)) == ["control-plane-to-apiserver", "node-to-apiserver",
                                             "control-plane-to-apiserver", "etcd", "other"]
    assert (out.loc[3, "src_role"], out.loc[3, "dst_role"]) == ("apiserver", "etcd")


def test_endpoint_codes_name_the_endpoints_the_texts_name():
    """Role masks compare (address, port) as integers: the same pairs as the ``ip|port`` texts."""
    from commpath.classify.view import EndpointCodes, endpoint_keys
    flows = pd.DataFrame({"src_ip": pd.array(["10.0.0.1", "fd00::1", None, "10.0.0.1"], dtype="string"),
                          "src_port": pd.array([40000, 40001, 40002, None], dtype="Int64"),
                          "dst_ip": pd.array(["192.0.2.10", "192.0.2.10", "10.0.0.1", "fd00::1"], dtype="string"),
                          "dst_port": pd.array([6443, 443, 6443, 0], dtype="int32")})
    codes = EndpointCodes.of(flows)
    src_text = endpoint_keys(flows["src_ip"], flows["src_port"]).tolist()
    dst_text = endpoint_keys(flows["dst_ip"], flows["dst_port"]).tolist()
    assert [codes.texts(np.array([c])).pop() for c in codes.src] == src_text
    assert [codes.texts(np.array([c])).pop() for c in codes.dst] == dst_text
    wanted = {"192.0.2.10|6443", "fd00::1|0", "10.0.0.1|", "10.0.0.9|6443", "192.0.2.10|06443"}
    hit = np.isin(np.r_[codes.src, codes.dst], codes.codes(wanted))
    # a set's endpoint without a port (no flow's responder has one) matches nothing
    assert hit.tolist() == [t in wanted and not t.endswith("|") for t in src_text + dst_text]
    assert hit.any()

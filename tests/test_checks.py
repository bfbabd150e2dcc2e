"""The check engine on real captures: findings, verdicts, and display filters that open exactly the packets."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import commpath
from commpath.check import display_filter, evaluate
from commpath.classify import classify, load_inventory
from commpath.check import FINDING_COLUMNS, PATH_COLUMNS
from commpath.decode.handshakes import analyze_handshakes
from commpath.decode.schema import FLOW_COLUMNS, conform

PUBLIC = Path(__file__).resolve().parents[1].parent / "shared/pcaps/public"
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")


def _pcap(name: str) -> Path:
    return next(PUBLIC.rglob(name))


def _frames(capture: str, dfilter: str) -> list[int]:
    """Frame numbers tshark shows for ``dfilter``."""
    out = subprocess.run([TSHARK, "-r", capture, "-Y", dfilter, "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [int(x) for x in out.split()]


def _inventory(tmp_path: Path, flow, client: str = "node", **extra) -> object:
    """An inventory naming a real flow's responder as the apiserver and its initiator as ``client``."""
    fmt = (lambda ip, port: f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
    lines = [f'apiserver: {{endpoints: ["{fmt(flow.dst_ip, flow.dst_port)}"]}}',
             f'control_plane: [{{name: cp, addresses: ["{flow.dst_ip}"]}}]']
    if client == "node":
        lines.append(f'nodes: [{{name: n1, addresses: ["{flow.src_ip}"]}}]')
    elif client == "pod":
        lines.append(f'pod_cidrs: ["{flow.src_ip}/{128 if ":" in flow.src_ip else 32}"]')
    for k, v in extra.items():
        lines.append(f"{k}: {v}")
    p = tmp_path / "inventory.yaml"
    p.write_text("\n".join(lines) + "\n")
    return load_inventory(p)


def _analyze(name: str, tmp_path: Path, client: str = "node", policy: str = "default", **extra):
    cap = commpath.read(_pcap(name))
    hs = analyze_handshakes(cap)
    inv = _inventory(tmp_path, cap.flows.iloc[0], client, **extra)
    flows = classify(cap.flows, hs.tls, inv, hs.certs)
    findings, paths = evaluate(flows, hs.tls, hs.certs, policy, inv)
    verdicts = dict(zip(paths["id"].astype(str), paths["verdict"].astype(str)))
    return cap, flows, findings, paths, verdicts


def test_outputs_have_the_declared_columns(tmp_path):
    _, _, findings, paths, _ = _analyze("tls-conn-with-extensions.pcap", tmp_path)
    assert list(findings.columns) == list(FINDING_COLUMNS)
    assert list(paths.columns) == list(PATH_COLUMNS)
    assert "other" not in set(paths["id"].astype(str))
    # the list columns are Arrow lists (no Python list per finding), read back as plain lists and dicts
    assert {c: str(t) for c, t in findings.dtypes.items()} == {c: t for c, t in FINDING_COLUMNS.items()}
    assert len(findings)
    for f in findings.itertuples():
        assert f.count == len(f.flow_ids) and all(type(i) is int for i in f.flow_ids + f.frames)
        wire = f.evidence_sources[0]
        assert wire["source"] == "wire" and wire["said"] == wire["says"] and str(f.frames[0]) in wire["where"]


def test_declared_arrow_dtypes_are_what_pandas_names_them():
    from commpath.decode.schema import pandas_dtype
    for declared in FINDING_COLUMNS.values():
        assert str(pd.Series(dtype=pandas_dtype(declared)).dtype) == declared


@needs_tshark
@pytest.mark.parametrize("name,version", [("tls-conn-with-extensions.pcap", "TLS 1.0"), ("tls1_1.pcap", "TLS 1.1")])
def test_weak_tls_version_fails_the_path_with_exact_evidence(tmp_path, name, version):
    cap, flows, findings, _, verdicts = _analyze(name, tmp_path)
    weak = findings[findings["check"] == "tls-version-weak"]
    assert len(weak) == 1 and verdicts["node-to-apiserver"] == "fail"
    f = weak.iloc[0]
    assert f["severity"] == "high" and f["path"] == "node-to-apiserver" and version in f["message"]
    assert "--tls-min-version" in f["remediation"]
    assert f["reference"] == "control-plane-node-communication.md#node-to-control-plane"
    flow = flows.iloc[0]
    shown = _frames(f["capture"], f["display_filter"])
    assert shown == list(range(int(flow.first_frame), int(flow.last_frame) + 1))
    assert len(shown) == int(flow.packets)
    assert set(f["frames"]) <= set(shown) and int(flow.first_frame) in f["frames"]


def test_tls13_without_key_log_is_not_observable_and_says_what_settles_it(tmp_path):
    _, _, findings, paths, verdicts = _analyze("tls13_wolfssl.pcap", tmp_path, client="pod")
    assert set(findings["check"].astype(str)) == {"cert-not-observable"}
    assert findings.iloc[0]["severity"] == "info"
    assert verdicts["pod-to-apiserver"] == "not-observable"
    needs = paths.set_index(paths["id"].astype(str)).loc["pod-to-apiserver", "needs"]
    assert "--keylog" in needs


def test_inferred_absent_client_certificate_is_a_finding(tmp_path):
    """TLS 1.3: no Certificate message inferred from record sizes; the node path expects one."""
    _, _, findings, _, verdicts = _analyze("tls13_wolfssl.pcap", tmp_path, client="node")
    miss = findings[findings["check"] == "client-cert-missing"]
    assert len(miss) == 1 and "inferred-absent" in miss.iloc[0]["message"]
    assert verdicts["node-to-apiserver"] == "fail"


def test_refused_client_without_certificate_is_not_a_finding(tmp_path):
    """certificate-request-failed.pcap (IPv6): empty client Certificate, handshake_failure: the server enforced it."""
    _, flows, findings, _, verdicts = _analyze("certificate-request-failed.pcap", tmp_path)
    assert flows.iloc[0]["path"] == "node-to-apiserver"
    assert "client-cert-missing" not in set(findings["check"].astype(str))
    assert verdicts["node-to-apiserver"] != "fail"


def test_presented_client_certificate_passes_client_check_and_needs_the_ca(tmp_path):
    _, _, findings, paths, verdicts = _analyze("client-certificate.pcap", tmp_path)
    assert findings.empty
    assert verdicts["node-to-apiserver"] == "not-observable"
    assert "--ca" in paths.set_index(paths["id"].astype(str)).loc["node-to-apiserver", "needs"]


@needs_tshark
def test_plaintext_h2c_to_the_apiserver_is_tls_required(tmp_path):
    """deepflow's h2c_ascii.pcap: cleartext HTTP/2 from a pod address to a ClusterIP."""
    cap, flows, findings, _, verdicts = _analyze("h2c_ascii.pcap", tmp_path, client="pod")
    assert flows.iloc[0]["path"] == "pod-to-apiserver"
    tr = findings[findings["check"] == "tls-required"]
    assert len(tr) == 1 and verdicts["pod-to-apiserver"] == "fail"
    assert "http2" in tr.iloc[0]["message"]
    assert len(_frames(tr.iloc[0]["capture"], tr.iloc[0]["display_filter"])) == int(flows.iloc[0]["packets"])


@needs_tshark
def test_ipv6_display_filter_opens_exactly_the_connection():
    path = _pcap("certificate-request-failed.pcap")
    f = commpath.read(path).flows.iloc[0]
    flt = display_filter(6, f.src_ip, f.dst_ip, "tcp", int(f.src_port), int(f.dst_port), int(f.first_frame), int(f.last_frame))
    assert flt.startswith("ipv6.addr==")
    assert len(_frames(str(path), flt)) == int(f.packets)


def test_without_handshake_analysis_tls_paths_are_not_observable(tmp_path):
    cap = commpath.read(_pcap("client-certificate.pcap"))
    inv = _inventory(tmp_path, cap.flows.iloc[0])
    flows = classify(cap.flows, None, inv)
    findings, paths = evaluate(flows, None, None, "default", inv, tls_known=False)
    row = paths.set_index(paths["id"].astype(str)).loc["node-to-apiserver"]
    assert findings.empty and row["verdict"] == "not-observable" and "TLS handshake" in row["needs"]


def _synthetic(rows):
    base = {"capture": "s.pcap", "ts_start": 1.0, "ts_end": 2.0, "ip_version": 4, "transport": "tcp", "packets": 9,
            "bytes": 900, "payload_fwd": 100, "payload_rev": 100, "app_protocol": "tls", "tunnel": "",
            "encrypted_underlay": False, "initiator": "syn"}
    df = pd.DataFrame([{**base, "flow_id": i, "first_frame": 1 + 10 * i, "last_frame": 9 + 10 * i, **r}
                       for i, r in enumerate(rows)])
    return conform(df, FLOW_COLUMNS)


def test_konnectivity_reverse_direction_and_bypass(tmp_path):
    inv_file = tmp_path / "inv.yaml"
    inv_file.write_text(textwrap.dedent("""\
        apiserver: {endpoints: ["192.0.2.10:6443"]}
        control_plane: [{name: cp1, addresses: ["192.0.2.10"]}]
        nodes: [{name: n1, addresses: ["192.0.2.21"]}]
        konnectivity: {enabled: true, server: "192.0.2.10:8132"}
        """))
    inv = load_inventory(inv_file)
    flows = classify(_synthetic([
        {"src_ip": "192.0.2.21", "src_port": 40000, "dst_ip": "192.0.2.10", "dst_port": 8132},
        {"src_ip": "192.0.2.10", "src_port": 40001, "dst_ip": "192.0.2.21", "dst_port": 8132},
        {"src_ip": "192.0.2.10", "src_port": 40002, "dst_ip": "192.0.2.21", "dst_port": 10250},
        # already open when the capture started: its first packet came from the server
        {"src_ip": "192.0.2.10", "src_port": 8132, "dst_ip": "192.0.2.21", "dst_port": 40003,
         "initiator": "first-packet"},
    ]), None, inv)
    assert list(flows["path"].astype(str)) == ["konnectivity", "konnectivity", "apiserver-to-kubelet", "konnectivity"]
    assert flows.loc[3, "src_role"] == "konnectivity-server"
    findings, paths = evaluate(flows, None, None, "default", inv, tls_known=False)
    got = {(r.check, r.path, tuple(r.flow_ids)) for r in findings.itertuples()}
    assert ("konnectivity-direction", "konnectivity", (1,)) in got
    assert ("konnectivity-bypass", "apiserver-to-kubelet", (2,)) in got
    verdicts = dict(zip(paths["id"].astype(str), paths["verdict"].astype(str)))
    assert verdicts["konnectivity"] == "fail" and verdicts["apiserver-to-kubelet"] == "warn"
    # Konnectivity off: a direct kubelet connection is no bypass
    inv.konnectivity_enabled = False
    findings, _ = evaluate(flows.iloc[[2]], None, None, "default", inv, tls_known=False)
    assert "konnectivity-bypass" not in set(findings["check"].astype(str))


def test_unclassified_flows_warn_and_empty_paths_are_not_observed(tmp_path):
    flows = _synthetic([{"src_ip": "192.0.2.21", "src_port": 1, "dst_ip": "192.0.2.10", "dst_port": 9100,
                         "app_protocol": "http", "path": "unclassified"}])
    flows["path"] = flows["path"].astype("category")
    findings, paths = evaluate(flows, None, None, "default", None)
    verdicts = dict(zip(paths["id"].astype(str), paths["verdict"].astype(str)))
    assert verdicts["unclassified"] == "warn" and verdicts["etcd"] == "not-observed"
    assert list(findings["check"].astype(str)) == ["unclassified-flow"]


def _write_reused_tuple_pcap(path: Path) -> None:
    """Two connections on one 5-tuple with a third connection in between, plaintext HTTP to :6443."""
    from scapy.all import IP, TCP, Raw, wrpcap

    def conn(sport, seq, t0, dport=6443):
        c, s = "192.0.2.21", "192.0.2.10"
        pk = [IP(src=c, dst=s) / TCP(sport=sport, dport=dport, flags="S", seq=seq),
              IP(src=s, dst=c) / TCP(sport=dport, dport=sport, flags="SA", seq=9000, ack=seq + 1),
              IP(src=c, dst=s) / TCP(sport=sport, dport=dport, flags="A", seq=seq + 1, ack=9001),
              IP(src=c, dst=s) / TCP(sport=sport, dport=dport, flags="PA", seq=seq + 1, ack=9001) / Raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
              IP(src=s, dst=c) / TCP(sport=dport, dport=sport, flags="PA", seq=9001, ack=seq + 36) / Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
              IP(src=c, dst=s) / TCP(sport=sport, dport=dport, flags="FA", seq=seq + 36, ack=9039),
              IP(src=s, dst=c) / TCP(sport=dport, dport=sport, flags="FA", seq=9039, ack=seq + 37),
              IP(src=c, dst=s) / TCP(sport=sport, dport=dport, flags="A", seq=seq + 37, ack=9040)]
        for i, p in enumerate(pk):
            p.time = t0 + i * 0.001
        return pk

    a, b, a2 = conn(40000, 1000, 100.0), conn(40001, 5000, 100.002), conn(40000, 70000, 101.0)
    packets = sorted(a + b + a2, key=lambda p: float(p.time))
    wrpcap(str(path), packets)


@needs_tshark
def test_display_filters_separate_connections_that_reuse_a_5_tuple(tmp_path):
    pcap = tmp_path / "reuse.pcap"
    _write_reused_tuple_pcap(pcap)
    cap = commpath.read(pcap)
    assert len(cap.flows) == 3
    inv_file = tmp_path / "inv.yaml"
    inv_file.write_text('apiserver: {endpoints: ["192.0.2.10:6443"]}\nnodes: [{name: n1, addresses: ["192.0.2.21"]}]\n')
    inv = load_inventory(inv_file)
    flows = classify(cap.flows, None, inv)
    findings, _ = evaluate(flows, None, None, "default", inv, tls_known=False)
    tr = findings[findings["check"] == "tls-required"]
    assert len(tr) == 1 and sorted(tr.iloc[0]["flow_ids"]) == [0, 1, 2]
    assert _frames(str(pcap), tr.iloc[0]["display_filter"]) == list(range(1, 25))
    for f in flows.itertuples():   # each connection alone: exactly its own packets
        flt = display_filter(4, f.src_ip, f.dst_ip, "tcp", f.src_port, f.dst_port, f.first_frame, f.last_frame)
        shown = _frames(str(pcap), flt)
        assert len(shown) == f.packets == 8 and shown[0] == f.first_frame and shown[-1] == f.last_frame


def test_inferred_roles_never_pass_and_the_run_says_what_it_had():
    """Without an inventory a path with no finding is inconclusive, not a pass; with it, the same
    evidence passes. The run verdict and coverage say why."""
    root = Path(__file__).resolve().parents[1] / "captures/hardened"
    evidence = {"ca": root / "pki/ca.crt", "keylog": root / "keylog.txt"}
    given = commpath.open(root, inventory=root / "inventory.yaml", **evidence)
    inferred = commpath.open(root, **evidence)
    v_given = dict(zip(given.paths["id"].astype(str), given.paths["verdict"].astype(str)))
    v_inferred = dict(zip(inferred.paths["id"].astype(str), inferred.paths["verdict"].astype(str)))
    passed = [p for p, v in v_given.items() if v == "pass"]
    assert passed and given.verdict == "pass"
    assert "pass" not in v_inferred.values() and inferred.verdict == "inconclusive"
    assert any(v == "inconclusive" for v in v_inferred.values())
    needs = inferred.paths.set_index(inferred.paths["id"].astype(str))["needs"]
    assert all("--inventory" in needs[p] for p, v in v_inferred.items() if v == "inconclusive")
    assert given.coverage["inventory"] == "given" and inferred.coverage["inventory"] == "inferred"
    assert inferred.coverage["roles_inferred"] and not given.coverage["roles_inferred"]
    assert given.coverage["ca_bundle"] and given.coverage["keylog"] and given.coverage["tls_analyzed"]
    assert given.coverage["hosts"] == ["cp1", "node1", "node2"] and "node1:eth0" in given.coverage["interfaces"]
    assert "port 6443" in given.coverage["capture_filter"]


def test_run_verdict_is_inconclusive_when_most_observed_paths_are_blind():
    from commpath.check import run_verdict
    paths = pd.DataFrame({"id": ["a", "b", "c"], "verdict": ["pass", "not-observable", "not-observable"]})
    assert run_verdict(paths, {"roles_inferred": False}) == "inconclusive"
    paths["verdict"] = ["pass", "pass", "not-observable"]
    assert run_verdict(paths, {"roles_inferred": False}) == "pass"
    assert run_verdict(paths, {"roles_inferred": True}) == "inconclusive"
    paths["verdict"] = ["not-observed"] * 3
    assert run_verdict(paths, {"roles_inferred": False}) == "inconclusive"
    paths["verdict"] = ["warn", "pass", "not-observable"]
    assert run_verdict(paths, {"roles_inferred": False}) == "warn"
    assert run_verdict(paths, {"roles_inferred": True}) == "inconclusive"     # findings stay listed
    paths["verdict"] = ["fail", "not-observable", "not-observable"]
    assert run_verdict(paths, {"roles_inferred": True}) == "fail"


def test_findings_parquet_reads_back_with_pandas(tmp_path):
    """The Arrow list columns are written so pandas reads them as it reads any list column."""
    from commpath._pipeline import write_outputs
    root = Path(__file__).resolve().parents[1] / "captures/default"
    a = commpath.open(root, inventory=root / "inventory.yaml")
    assert len(a.findings)
    write_outputs(a, tmp_path)
    back = pd.read_parquet(tmp_path / "findings.parquet")
    for name in ("flow_ids", "frames", "evidence_sources"):
        assert back[name].dtype == object
        assert [list(v) for v in back[name]] == a.findings[name].tolist()

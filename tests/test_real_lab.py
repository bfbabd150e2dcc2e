"""The real lab: upstream Kubernetes components in network namespaces, captured and judged by the audit log."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from _real_lab_runs import leftovers as _leftovers  # noqa: F401  (the other real-lab tests import it from here)
from _real_lab_runs import recording
from commpath.lab.real import _images, _logtruth, _truth

REPO = Path(__file__).resolve().parents[1]
TOOLS = ("ip", "nsenter", "unshare", "etcd", "containerd", "runc", "ctr", "iptables", "gcc", "tcpdump")
_real_lab_ready = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS) or not Path("/usr/lib/cni/bridge").exists()
    or not (shutil.which("go") or Path("/usr/local/go/bin/go").exists()),
    reason="the real lab needs root, Go, etcd, containerd, runc, CNI plugins and tcpdump (scripts/setup.sh)")


def needs_real_lab(test):
    """Skip without the real lab's tools; marked ``real_cluster`` so it runs after the rest of the suite,
    while the Kubernetes build that scripts/test.sh starts beside it finishes."""
    return pytest.mark.real_cluster(_real_lab_ready(test))


def test_oci_archive_is_a_valid_image_layout(tmp_path):
    payload = tmp_path / "hello"
    payload.write_bytes(b"#!/bin/sh\necho hi\n")
    archive = _images.oci_archive(tmp_path / "img.tar", "commpath.local/t:1", {"bin/hello": (payload, 0o755)},
                                  ["/bin/hello"])
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, data in files.items():      # content addressed: every blob's name is its digest
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(files["index.json"])
    desc = index["manifests"][0]
    assert desc["annotations"]["io.containerd.image.name"] == "commpath.local/t:1"
    manifest = json.loads(files["blobs/sha256/" + desc["digest"].split(":")[1]])
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    layer_digest = manifest["layers"][0]["digest"]
    assert config["rootfs"]["diff_ids"] == [layer_digest]       # uncompressed layer: diff id = digest
    with tarfile.open(fileobj=io.BytesIO(files["blobs/sha256/" + layer_digest.split(":")[1]])) as layer:
        member = layer.getmember("bin/hello")
        assert member.mode == 0o755 and layer.extractfile(member).read() == payload.read_bytes()


def _audit_line(user, source, t0, t1, resource="", subresource="", name="", x509=True):
    extra = {"authentication.kubernetes.io/credential-id": ["X509SHA256=ab" if x509 else "JTI=1"]}
    stamp = lambda t: pd.Timestamp(t, unit="s", tz="UTC").isoformat().replace("+00:00", "Z")   # noqa: E731
    return json.dumps({"auditID": secrets.token_hex(4), "stage": "ResponseComplete", "verb": "get",
                       "user": {"username": user, "extra": extra}, "sourceIPs": [source],
                       "objectRef": {"resource": resource, "subresource": subresource, "name": name},
                       "requestURI": f"/x/{name}", "requestReceivedTimestamp": stamp(t0), "stageTimestamp": stamp(t1)})


def _flow(src, sport, dst, dport, t0, t1, answered=True, sent=100):
    return {"transport": "tcp", "syn_seen": True, "src_ip": src, "src_port": sport, "dst_ip": dst, "dst_port": dport,
            "ts_start": t0, "ts_end": t1, "synack_seen": answered, "payload_fwd": sent}


def test_truth_rules_follow_the_audit_log(tmp_path):
    """The matching rules of _truth on a small audit log: identities, DNAT twins, kubelet and proxy windows."""
    t = 1_800_000_000.0
    audit = tmp_path / "audit.log"
    audit.write_text("\n".join([
        _audit_line("system:node:node1", "10.77.0.21", t + 1, t + 1.1),
        _audit_line("system:bootstrap:abcdef", "10.77.0.22", t + 1, t + 1.1, x509=False),
        _audit_line("system:serviceaccount:default:default", "10.244.1.5", t + 2, t + 2.1, x509=False),
        _audit_line("kubernetes-admin", "10.77.0.10", t + 3, t + 5, "pods", "exec", "web-1"),
        _audit_line("kubernetes-admin", "10.77.0.10", t + 6, t + 6.2, "pods", "proxy", "web-1"),
    ]) + "\n")
    flows = pd.DataFrame([
        _flow("10.77.0.21", 40000, "10.77.0.10", 6443, t, t + 10),
        _flow("10.77.0.22", 40001, "10.77.0.10", 6443, t, t + 10),
        _flow("10.244.1.5", 50000, "10.96.0.1", 443, t + 1.9, t + 2.2),
        _flow("10.244.1.5", 50000, "10.77.0.10", 6443, t + 1.9, t + 2.2),     # post-DNAT twin
        _flow("10.77.0.10", 41000, "10.77.0.21", 10250, t + 3.1, t + 4.9),
        _flow("10.77.0.10", 41001, "10.244.1.5", 8080, t + 6.05, t + 6.1),
        _flow("10.77.0.10", 41002, "10.77.0.22", 10250, t + 30, t + 31),      # nothing in the audit log then
        _flow("10.77.0.10", 41003, "10.77.0.10", 2379, t, t + 10),
        _flow("10.77.0.10", 41004, "10.77.0.10", 6443, t + 3, t + 3.00001, answered=False),   # refused
        _flow("10.77.0.21", 40005, "10.77.0.10", 6443, t + 1, t + 1.2, sent=0),     # closed before a byte
    ])
    res = _truth.build(flows, _truth.load_audit(audit), cp_ips={"10.77.0.10"},
                       nodes={"node1": "10.77.0.21", "node2": "10.77.0.22"}, pod_cidr="10.244.0.0/16",
                       pods={"web-1": {"node": "node1", "ip": "10.244.1.5"}}, apiserver="10.77.0.10:6443",
                       vip="10.96.0.1:443", etcd="10.77.0.10:2379")
    got = {(c["src"], c["dst"]): c for c in res["connections"]}
    assert got[("10.77.0.21:40000", "10.77.0.10:6443")]["path"] == "node-to-apiserver"
    assert got[("10.77.0.21:40000", "10.77.0.10:6443")]["credential"] == "x509"
    assert got[("10.77.0.22:40001", "10.77.0.10:6443")]["credential"] == "token"
    vip = got[("10.244.1.5:50000", "10.96.0.1:443")]
    assert vip["path"] == "pod-to-apiserver" and vip["dst_after_nat"] == "10.77.0.10:6443"
    assert ("10.244.1.5:50000", "10.77.0.10:6443") not in got
    assert got[("10.77.0.10:41000", "10.77.0.21:10250")]["path"] == "apiserver-to-kubelet"
    assert got[("10.77.0.10:41001", "10.244.1.5:8080")]["path"] == "apiserver-proxy"
    assert got[("10.77.0.10:41003", "10.77.0.10:2379")]["path"] == "etcd"
    # a refused connection and an empty one carried none of the requests the audit log shows in their window
    assert sorted((u["src"], u["why"]) for u in res["unattributed"]) == [
        ("10.77.0.10:41002", "no kubelet request (logs/exec/attach/portforward/nodes proxy) for this node then"),
        ("10.77.0.10:41004", "carried no request: refused or unanswered (no SYN-ACK)"),
        ("10.77.0.21:40005", "carried no request: the client sent no payload")]
    # the bootstrap token seen from a node, whichever of the node's connections carried it
    assert _truth.node_credentials_without_certificate(_truth.load_audit(audit), {"10.77.0.21", "10.77.0.22"}) == [
        "system:bootstrap:abcdef"]


def test_proxied_schemes_come_from_the_audit_log_not_from_request_windows(tmp_path):
    """Several proxy requests open at once: the https one need not be among those matched to a connection's start,
    yet the audit log says the apiserver proxied over https, so the truth expects proxy-unverified-tls."""
    t = 1_800_000_000.0
    audit = tmp_path / "audit.log"
    audit.write_text("\n".join(
        [_audit_line("kubernetes-admin", "10.77.0.10", t + i * 0.01, t + 2, "pods", "proxy", f"web-{i}") for i in range(3)]
        + [_audit_line("kubernetes-admin", "10.77.0.10", t + 0.05, t + 2, "pods", "proxy", "https:web-1:8443"),
           _audit_line("kubernetes-admin", "10.77.0.10", t + 0.06, t + 2, "nodes", "proxy", "node1"),
           _audit_line("kubernetes-admin", "10.77.0.10", t + 0.07, t + 2, "nodes", "proxy", "https:node1:10250")]) + "\n")
    loaded = _truth.load_audit(audit)
    assert _truth.proxied_schemes(loaded) == {"http", "https"}      # the kubelet's node proxies are not counted
    flows = pd.DataFrame([_flow("10.77.0.10", 41001 + i, "10.244.1.5", 8080 + i, t + 0.1, t + 1) for i in range(2)])
    res = _truth.build(flows, loaded, cp_ips={"10.77.0.10"}, nodes={"node1": "10.77.0.21"}, pod_cidr="10.244.0.0/16",
                       pods={"web-1": {"node": "node1", "ip": "10.244.1.5"}}, apiserver="10.77.0.10:6443",
                       vip="10.96.0.1:443", etcd="10.77.0.10:2379")
    assert {c["path"] for c in res["connections"]} == {"apiserver-proxy"}
    assert not any("/https:" in u for c in res["connections"] for u in c["requests"])   # the ambiguity itself
    checks = lambda found: {f["check"] for f in found}   # noqa: E731
    assert checks(_truth.expected_findings(res["connections"])) == {"plaintext-proxy"}
    assert checks(_truth.expected_findings(res["connections"], proxied=_truth.proxied_schemes(loaded))) == {
        "plaintext-proxy", "proxy-unverified-tls"}
    # proxied, but no proxy connection on the wire: nothing to judge, nothing expected
    assert checks(_truth.expected_findings([], proxied={"http", "https"})) == set()


def test_truth_from_the_kubelet_and_konnectivity_logs(tmp_path):
    """Rules 5-7 of _truth: metrics-server's scrapes from the kubelet's request log (client address and port),
    agent connections and tunnelled dials from the Konnectivity server's log; klog stamps read as UTC."""
    t = dt.datetime(2026, 12, 6, 10, 36, 1, 250000, tzinfo=dt.timezone.utc).timestamp()
    kubelet = tmp_path / "node1-kubelet.log"
    kubelet.write_text(
        'I1206 10:36:01.250000    4242 httplog.go:134] "HTTP" verb="GET" URI="/metrics/resource" latency="3.1ms" '
        'userAgent="metrics-server/v0.9.0 (linux/amd64) kubernetes/$Format" audit-ID="" srcIP="10.244.1.7:43210" '
        'resp=200\n'
        'I1206 10:36:02.000000    4242 httplog.go:134] "HTTP" verb="GET" URI="/containerLogs/default/web/web" '
        'latency="9ms" userAgent="kube-apiserver-admission" audit-ID="" srcIP="10.77.0.10:50000" resp=200\n'
        'I1206 10:36:02.500000    4242 kubelet.go:2500] "SyncLoop (PLEG)" pod="default/web"\n')
    konn = tmp_path / "konnectivity-server.log"
    konn.write_text(
        'I1206 10:36:00.900000       7 server.go:800] "Agent connected" agentID="node2" serverID="x"\n'
        'I1206 10:36:03.000000       7 server.go:579] "Received DIAL_REQ" dialID=5577006791947779410 '
        'dialAddress="10.244.2.5:8080"\n'
        'I1206 10:36:04.000000       7 tunnel.go:42] "Received request for host" method="CONNECT" '
        'host="10.77.0.21:10250" userAgent="kube-apiserver"\n')
    assert list(_logtruth.konnectivity_log(konn, 2026).dials["address"]) == ["10.244.2.5:8080", "10.77.0.21:10250"]
    req = _logtruth.kubelet_requests(kubelet, 2026)
    assert list(req["src"]) == ["10.244.1.7:43210", "10.77.0.10:50000"]
    assert abs(req["time"].iloc[0] - t) < 1e-6
    logs = _logtruth.LogTruth({"node1": req}, _logtruth.konnectivity_log(konn, 2026), "10.77.0.10:8132",
                              {"10.77.0.21", "10.77.0.22", "10.244.1.1", "10.244.2.1"})
    flows = pd.DataFrame([
        _flow("10.244.1.7", 43210, "10.77.0.21", 10250, t - 0.01, t + 0.1),      # metrics-server's scrape
        _flow("10.244.1.7", 43299, "10.77.0.21", 10250, t - 0.01, t + 0.1),      # nothing logged for this port
        _flow("10.77.0.22", 51000, "10.77.0.10", 8132, t - 0.5, t + 30),         # node2's agent
        _flow("10.244.2.1", 40000, "10.244.2.5", 8080, t + 1.8, t + 1.9),        # the agent's dial for the apiserver
    ])
    res = _truth.build(flows, pd.DataFrame(),
                       cp_ips={"10.77.0.10"}, nodes={"node1": "10.77.0.21", "node2": "10.77.0.22"},
                       pod_cidr="10.244.0.0/16", pods={}, apiserver="10.77.0.10:6443", vip="10.96.0.1:443",
                       etcd="10.77.0.10:2379", logs=logs)
    got = {(c["src"], c["dst"]): c["path"] for c in res["connections"]}
    assert got == {("10.244.1.7:43210", "10.77.0.21:10250"): "metrics-to-kubelet",
                   ("10.77.0.22:51000", "10.77.0.10:8132"): "konnectivity",
                   ("10.244.2.1:40000", "10.244.2.5:8080"): "other"}
    assert [u["src"] for u in res["unattributed"]] == ["10.244.1.7:43299"]


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")
def test_offloads_off_gives_mtu_sized_capture_frames(tmp_path):
    """_offload switches TSO, GSO and GRO off on a veth and on loopback inside a throw-away namespace (so that
    tcpdump's ring frames are MTU-sized); what each reads back afterwards is off, the machine's own untouched."""
    from _netns_pair import netns_pair

    before = subprocess.run([sys.executable, "-m", "commpath.lab.real._offload", "--show", "lo"], capture_output=True,
                            text=True, timeout=60)
    with netns_pair() as (ns_a, _ns_b, _ip_a, _ip_b):
        res = subprocess.run(["ip", "netns", "exec", ns_a, sys.executable, "-m", "commpath.lab.real._offload",
                              "lo", "eth0"], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert res.returncode == 0, res.stderr
        shown = subprocess.run(["ip", "netns", "exec", ns_a, sys.executable, "-m", "commpath.lab.real._offload",
                                "--show", "lo", "eth0"], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert json.loads(shown.stdout) == {i: {"tso": 0, "gso": 0, "gro": 0} for i in ("lo", "eth0")}
    after = subprocess.run([sys.executable, "-m", "commpath.lab.real._offload", "--show", "lo"], capture_output=True,
                           text=True, timeout=60)
    assert after.stdout == before.stdout


def _record(tmp_path_factory, scenario: str) -> tuple[Path, dict, Path]:
    """`commpath lab run --kind real --scenario S --probe DIR`, once per session (the lab leaves nothing)."""
    return recording(scenario, tmp_path_factory)


def _assert_scored(out: Path, truth: dict) -> set:
    """With the lab's inventory and the discovered one: every truth connection labelled as the truth says, every
    expected finding and no other (info aside), none of the absent ones; returns the expected findings."""
    from commpath.lab.real.score import score

    expected = {(f["check"], f["path"]) for f in truth["expected_findings"] if f["when"] in ("always", "without-keylog")}
    for inventory in ("inventory.yaml", "inventory-discovered.yaml"):   # the lab's, and discovered from the cluster
        s = score(out, out / inventory)
        assert s["wrong"] == [] and s["not_seen"] == 0, (inventory, s["wrong"][:10], truth.get("capture"))
        assert s["accuracy"] == 1.0
        cc = s["client_cert"]               # x509 vs token, from the audit log: never contradicted
        assert cc["wrong"] == [] and cc["right"] > 0, (inventory, cc["wrong"][:5])
        # "unknown" is the honest answer when a loaded machine's capture lost a flight; it stays rare
        assert len(cc["unknown"]) <= max(2, (cc["right"] + len(cc["unknown"])) // 20), (inventory, cc["unknown"][:5])
        produced = {(c, p) for c, p, _ in s["findings"]}
        assert expected <= produced, (inventory, expected - produced)
        extra = {(c, p) for c, p, sev in s["findings"] if sev != "info"} - expected
        assert not extra, (inventory, extra, truth.get("capture"))
        assert not {c for c, _ in produced} & set(truth["absent_findings"])
    return expected


@needs_real_lab
@pytest.mark.netns
@pytest.mark.timeout(3600)
def test_real_cluster_recording_scored_against_the_audit_log(tmp_path_factory):
    """Build (cached), bring the cluster up capturing, exercise, tear down; commpath labels every connection the
    audit log (and the kubelets' logs) explain as they say, with the lab's inventory and a discovered one."""
    from commpath.lab.real.score import score

    out, truth, _ = _record(tmp_path_factory, "default")
    assert {"control-plane-to-apiserver", "node-to-apiserver", "pod-to-apiserver", "apiserver-to-kubelet",
            "apiserver-proxy", "etcd", "metrics-to-kubelet"} <= set(truth["paths_observed"])
    users = set(truth["audit_users"])
    assert {"system:node:node1", "system:node:node2", "system:kube-scheduler", "system:kube-proxy",
            "system:serviceaccount:kube-system:metrics-server"} <= users
    assert any(u.startswith("system:bootstrap:") for u in users)          # node1 joined by TLS bootstrap
    assert all(c["credential"] == "x509" for c in truth["connections"]
               if c["path"] == "node-to-apiserver" and "system:node:node2" in c["users"])
    expected = _assert_scored(out, truth)
    assert ("client-cert-missing", "node-to-apiserver") in expected     # the bootstrap token, then no credentials
    # without any inventory: roles from the traffic alone (the VIP from its pre/post-DNAT twins)
    s = score(out, None)
    assert s["wrong"] == [] and s["accuracy"] == 1.0, s["wrong"][:10]


@needs_real_lab
@pytest.mark.netns
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("scenario", ["hardened", "hardened-http-connect"])
def test_real_cluster_hardened_through_konnectivity(tmp_path_factory, scenario):
    """hardened: kubelet serving certificates from the cluster CA verified by the apiserver and metrics-server, the
    apiserver's node traffic only through Konnectivity (gRPC, or HTTP-CONNECT): no direct control-plane connection
    to a kubelet or a pod, the agents' connections labelled konnectivity (truth: the Konnectivity server's log),
    scored as default."""
    out, truth, _ = _record(tmp_path_factory, scenario)
    paths = set(truth["paths_observed"])
    assert {"konnectivity", "metrics-to-kubelet", "node-to-apiserver", "pod-to-apiserver"} <= paths
    assert not paths & {"apiserver-to-kubelet", "apiserver-proxy"}       # everything went through the agents
    dialled = {d["address"] for d in truth["tunnelled_dials"]}          # the Konnectivity server's DIAL_REQs
    assert {"10.77.0.21:10250", "10.77.0.22:10250"} <= dialled
    assert any(a.startswith("10.244.") for a in dialled)                 # the apiserver proxy to a pod, tunnelled
    inv = yaml.safe_load((out / "inventory.yaml").read_text())
    assert inv["konnectivity"]["enabled"] is True
    _assert_scored(out, truth)


@needs_real_lab
@pytest.mark.netns
@pytest.mark.timeout(3600)
def test_real_cluster_broken(tmp_path_factory):
    """broken: node2's kubelet keeps its bootstrap token (audit: system:bootstrap:* from node2 all along), opens its
    read-only port (read by a pod: kubelet-readonly, truth from the kubelet's log) and serves an expired
    certificate (hidden by TLS 1.3: expected with a key log only); Konnectivity runs but the apiserver dials the
    kubelets directly (konnectivity-bypass). Scored as default."""
    out, truth, _ = _record(tmp_path_factory, "broken")
    paths = set(truth["paths_observed"])
    assert {"konnectivity", "kubelet-readonly", "apiserver-to-kubelet", "metrics-to-kubelet"} <= paths
    assert "system:node:node2" not in truth["audit_users"]           # node2's kubelet never had a certificate
    assert any(u.startswith("system:bootstrap:") for c in truth["connections"] if c["src"].startswith("10.77.0.22:")
               for u in c.get("users", []))
    expected = _assert_scored(out, truth)
    assert {("konnectivity-bypass", "apiserver-to-kubelet"), ("kubelet-readonly-port", "kubelet-readonly"),
            ("client-cert-missing", "node-to-apiserver")} <= expected

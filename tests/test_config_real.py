"""Host configuration of the real-cluster lab: the capture agents read the real components' command lines and files
from /proc, analyze joins them with the wire and a real probe; kubeadm's defaults fire what they should and
nothing else, and a planted --kubelet-certificate-authority disagrees with the kubelets' real certificates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import commpath
from _real_lab_runs import recording
from test_real_lab import needs_real_lab

REPO = Path(__file__).resolve().parents[1]
CONFIG_CHECKS = {"kubelet-serving-cert-unverified", "kubelet-cert-rotation-off", "konnectivity-not-enforced",
                 "kubelet-ca-conflict", "kubelet-anonymous-auth", "tls-min-version-weak", "tls-cipher-suites-weak"}


def _cite_config(report: dict) -> set[tuple[str, str]]:
    return {(f["check"], f["path"]) for f in report["findings"]
            if any(e["source"] == "config" for e in f.get("evidence_sources", []))}


@needs_real_lab
@pytest.mark.netns
@pytest.mark.timeout(3600)
def test_real_cluster_host_config_from_proc_joined_with_wire_and_probe(tmp_path, tmp_path_factory):
    rec, truth, probe_dir = recording("default", tmp_path_factory)   # shared with test_real_lab, test_probe_real
    inv = yaml.safe_load((rec / "inventory.yaml").read_text())
    nodes = {n["name"]: n["addresses"][0] for n in inv["nodes"]}
    cp_ip = inv["control_plane"][0]["addresses"][0]
    # node1 joined by TLS bootstrap: the audit log names its token's id, whose secret must be redacted everywhere
    token = next(u.split(":")[2] for u in truth["audit_users"] if u.startswith("system:bootstrap:"))
    ca_pem = (rec / "pki" / "ca.crt").read_text()

    # the manifests: each host's own components, read from /proc of the real processes, secrets redacted
    manifests = {h: json.loads((rec / h / "manifest.json").read_text()) for h in ("cp1", *nodes)}
    names = {h: sorted(c["name"] for c in m["host_config"]["components"]) for h, m in manifests.items()}
    assert names == {"cp1": ["etcd", "kube-apiserver"], "node1": ["kube-proxy", "kubelet"],
                     "node2": ["kube-proxy", "kubelet"]}, names
    kubelet1 = next(c for c in manifests["node1"]["host_config"]["components"] if c["name"] == "kubelet")
    assert any(p.endswith("node1/kubelet.yaml") for p in kubelet1["files"])
    bootstrap = [t for p, t in kubelet1["files"].items() if p.endswith("bootstrap.kubeconfig")]
    assert bootstrap and "token: <redacted>" in bootstrap[0]
    text = json.dumps(manifests)
    assert token and f"{token}." not in text and "PRIVATE KEY" not in text
    shown = subprocess.run([sys.executable, "-m", "commpath", "config", str(rec / "cp1"), str(rec / "node1")],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    rows = [line.split() for line in shown.stdout.splitlines()]
    assert ["cp1", "kube-apiserver", "--kubelet-certificate-authority", "(unset)", "default"] in rows
    assert ["node1", "kubelet", "rotateCertificates", "true"] in [r[:4] for r in rows]

    # kubeadm's defaults: the apiserver does not verify the kubelets' certificates; nothing else fires
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "commpath", "analyze", str(rec), "--inventory",
                          str(rec / "inventory.yaml"), "--probe", str(probe_dir), "--out", str(out), "-q"],
                         capture_output=True, text=True, timeout=900, cwd=REPO)
    assert res.returncode in (0, 1, 3), res.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert _cite_config(report) == {("kubelet-serving-cert-unverified", "apiserver-to-kubelet")}
    unverified = [f for f in report["findings"] if f["check"] == "kubelet-serving-cert-unverified"]
    assert {f["message"].split("-> ")[1].split(":")[0] for f in unverified} == set(nodes.values())
    assert not {f["check"] for f in report["findings"]} & (CONFIG_CHECKS - {"kubelet-serving-cert-unverified"})
    kubelet_path = {p["id"]: p for p in report["paths"]}["apiserver-to-kubelet"]
    assert {"wire", "probe", "config"} <= {e["source"] for e in kubelet_path["evidence"]}

    # the sources disagree: cp1 as if it trusted the cluster CA for kubelets, the probe saw self-signed ones
    cp1 = tmp_path / "cp1-with-ca" / "cp1"
    cp1.mkdir(parents=True)
    hc = manifests["cp1"]["host_config"]
    api = next(c for c in hc["components"] if c["name"] == "kube-apiserver")
    ca_path = next(a.split("=", 1)[1] for a in api["cmdline"] if a.startswith("--client-ca-file="))  # the cluster CA
    api["cmdline"].append(f"--kubelet-certificate-authority={ca_path}")
    api["files"][ca_path] = ca_pem
    (cp1 / "host_config.json").write_text(json.dumps({**hc, "addresses": [cp_ip]}))
    a = commpath.open(out, inventory=rec / "inventory.yaml", probe=probe_dir, host_config=[cp1])
    conflict = a.findings[a.findings["check"] == "kubelet-ca-conflict"]
    assert {str(m).split("-> ")[1].split(":")[0] for m in conflict["message"]} == set(nodes.values())
    for sources in conflict["evidence_sources"]:
        assert {e["source"] for e in sources} >= {"config", "probe"}
    assert not (a.findings["check"] == "kubelet-serving-cert-unverified").any()

    # cipher suites: every real TLS server (Go's defaults, no flag set) refused each suite of Go's insecure list
    # the sweep offered (a lost packet can only make a suite look refused, never accepted)
    probed = pd.read_parquet(probe_dir / "probe.parquet")
    swept = probed[probed["versions_accepted"].map(lambda v: v is not None and "TLS 1.2" in list(v))]
    assert set(swept["target"]) >= {"apiserver", "kubelet"}
    assert all(len(list(v)) == 0 for v in swept["weak_ciphers_accepted"]), swept[["target", "weak_ciphers_accepted"]]
    assert not (a.findings["check"] == "tls-cipher-suites-weak").any()
    # planted: the real apiserver's recorded command line as if --tls-cipher-suites listed an RSA key-exchange suite
    cp1c = tmp_path / "cp1-ciphers" / "cp1"
    cp1c.mkdir(parents=True)
    hc2 = json.loads(json.dumps(manifests["cp1"]["host_config"]))
    api2 = next(c for c in hc2["components"] if c["name"] == "kube-apiserver")
    api2["cmdline"].append("--tls-cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_RSA_WITH_AES_128_GCM_SHA256")
    (cp1c / "host_config.json").write_text(json.dumps({**hc2, "addresses": [cp_ip]}))
    b = commpath.open(out, inventory=rec / "inventory.yaml", probe=probe_dir, host_config=[cp1c])
    weak = b.findings[b.findings["check"] == "tls-cipher-suites-weak"]
    assert "node-to-apiserver" in set(weak["path"])
    assert set(weak["path"]) <= {"node-to-apiserver", "pod-to-apiserver", "control-plane-to-apiserver"}
    for message, sources in zip(weak["message"], weak["evidence_sources"]):
        assert "TLS_RSA_WITH_AES_128_GCM_SHA256" in message and "TLS_ECDHE_ECDSA" not in message
        assert f"{cp_ip}:6443" in message
        assert any(e["source"] == "config" and "cp1: kube-apiserver" in e["where"] for e in sources)

"""`commpath probe` inside the real-cluster lab, then `analyze --probe`: real kubelets (self-signed serving
certificates, anonymous auth off, no read-only port) settle what the recording's TLS 1.3 hides."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from test_real_lab import _leftovers, needs_real_lab

REPO = Path(__file__).resolve().parents[1]


@needs_real_lab
@pytest.mark.netns
@pytest.mark.timeout(3600)
def test_probe_inside_the_real_cluster_settles_the_kubelet_certificate(tmp_path):
    from commpath.lab.real._exercise import Exerciser
    from commpath.lab.real.cluster import RealLab

    name = f"rp{secrets.token_hex(3)}"
    rec, probe_dir = tmp_path / "rec", tmp_path / "probe"
    lab = RealLab(name)
    try:
        lab.up("default", capture_out=rec)
        done = Exerciser(lab).run()        # logs, exec, port-forward, proxy: apiserver-to-kubelet traffic
        lab.stop_capture()                 # the probe's own connections stay out of the recording
        lab.write_metadata(rec)
        cp = lab.topo.control_plane
        res = subprocess.run(["ip", "netns", "exec", cp.ns, sys.executable, "-m", "commpath", "probe",
                              "--inventory", str(rec / "inventory.yaml"), "--out", str(probe_dir), "--timeout", "10"],
                             capture_output=True, text=True, timeout=900, cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
        nodes = {n.name: n.ip for n in lab.topo.nodes}
    finally:
        lab.down()
    assert _leftovers(name) == []
    assert done["errors"] == [], done["errors"]
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ACTIVE" in res.stderr
    meta = json.loads((probe_dir / "probe.json").read_text())
    assert meta["active"] is True and meta["connections"] <= meta["max_connections"]
    table = pd.read_parquet(probe_dir / "probe.parquet")
    kubelets = table[table["target"] == "kubelet"].set_index("address")
    for node, ip in nodes.items():
        k = kubelets.loc[ip]
        assert pd.isna(k["error"]), (node, k["error"])
        # the kubelet's default serving certificate: its own CA, not the cluster's
        assert k["tls"] and k["chain_verified"] == False, (node, k["verify_error"])  # noqa: E712
        assert "self-signed" in k["verify_error"]
        assert k["client_cert_requested"] == True  # noqa: E712  (authentication.x509.clientCAFile is set)
        assert k["anonymous_pods_status"] == 401 and k["anonymous_healthz_status"] == 401   # anonymous off
        assert "TLS 1.3" in list(k["versions_accepted"])
    api = table[table["target"] == "apiserver"].iloc[0]
    assert api["chain_verified"] == True and api["names_match"] == True, api["verify_error"]  # noqa: E712
    readonly = table[table["target"] == "kubelet-readonly"]
    assert readonly["anonymous_healthz_status"].isna().all() and readonly["error"].str.contains("refused").all()

    out = tmp_path / "out"
    code = subprocess.run([sys.executable, "-m", "commpath", "analyze", str(rec), "--inventory",
                           str(rec / "inventory.yaml"), "--probe", str(probe_dir), "--out", str(out), "-q"],
                          capture_output=True, text=True, timeout=900, cwd=REPO).returncode
    assert code in (0, 1, 3)
    report = json.loads((out / "report.json").read_text())
    paths = {p["id"]: p for p in report["paths"]}
    kubelet_path = paths["apiserver-to-kubelet"]
    assert kubelet_path["verdict"] != "not-observable"
    # the capture agents recorded the hosts' configuration too (manifests' host_config)
    sources = {e["source"] for e in kubelet_path["evidence"]}
    assert sources - {"decrypted"} == {"wire", "probe", "config"}
    # the decrypted source speaks too: without a key log it says nothing was decrypted and what would show it
    assert all(e["said"].startswith("not decrypted") and "key log" in e["said"]
               for e in kubelet_path["evidence"] if e["source"] == "decrypted")
    settled = [f for f in report["findings"] if f["check"] == "server-cert-untrusted" and f["path"] == "apiserver-to-kubelet"]
    assert settled and all([e["source"] for e in f["evidence_sources"]] == ["wire", "probe"] for f in settled)
    assert {f["message"].split("-> ")[1].split(":")[0] for f in settled} <= set(nodes.values())
    # planted nowhere, so fired nowhere: anonymous access, the read-only port, old TLS versions
    fired = {f["check"] for f in report["findings"]}
    assert not fired & {"kubelet-anonymous-auth", "kubelet-read-only-port", "tls-min-version-weak"}
    # the apiserver's chain verified: the probe settles node-to-apiserver's certificate as trusted
    assert not [f for f in report["findings"] if f["check"] == "server-cert-untrusted" and f["path"] == "node-to-apiserver"]
    # pods authenticate with tokens: the probed serving certificate (trusted, valid over the capture) settles
    # the path; etcd's clients send certificates TLS 1.3 hides, and the path says what would show them
    assert paths["pod-to-apiserver"]["verdict"] != "not-observable", paths["pod-to-apiserver"]
    assert paths["etcd"]["verdict"] != "not-observable" or "a probe sees only the server's" in paths["etcd"]["needs"]

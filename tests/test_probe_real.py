"""`commpath probe` inside the real-cluster lab (run before each scenario's tear-down), then `analyze --probe`: real
kubelets settle what the recording's TLS 1.3 hides, and the joined verdicts follow what each scenario configures
(default: self-signed serving certificates; hardened: certificates from the cluster CA, verified; broken: node2's
expired certificate and open read-only port; anonymous kubelet access off in all)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from _real_lab_runs import recording
from test_real_lab import needs_real_lab

REPO = Path(__file__).resolve().parents[1]


def _analyze(rec: Path, probe_dir: Path, out: Path) -> dict:
    code = subprocess.run([sys.executable, "-m", "commpath", "analyze", str(rec), "--inventory",
                           str(rec / "inventory.yaml"), "--probe", str(probe_dir), "--out", str(out), "-q"],
                          capture_output=True, text=True, timeout=900, cwd=REPO).returncode
    assert code in (0, 1, 3)
    return json.loads((out / "report.json").read_text())


def _nodes(rec: Path) -> dict[str, str]:
    import yaml
    inv = yaml.safe_load((rec / "inventory.yaml").read_text())
    return {n["name"]: n["addresses"][0] for n in inv["nodes"]}


def _assert_probe_truth(report: dict, truth: dict) -> set[tuple[str, str]]:
    """Every finding the ground truth expects once probed (``with-probe``, on the kubelet paths its connections
    reached) fires on its path, and none of the checks a probe must not fire; returns the expected ones."""
    produced = {(f["check"], f["path"]) for f in report["findings"]}
    expected = {(f["check"], f["path"]) for f in truth["expected_findings"] if f["when"] == "with-probe"}
    assert expected <= produced, expected - produced
    assert not {c for c, _ in produced} & set(truth["absent_with_probe"]), produced
    return expected


def _anonymous_refused(kubelets: pd.DataFrame, nodes: dict[str, str]) -> None:
    """authentication.anonymous.enabled: false in every real scenario: 401 without credentials."""
    for node, ip in nodes.items():
        k = kubelets.loc[ip]
        assert (k["anonymous_pods_status"], k["anonymous_healthz_status"]) == (401, 401), node


def _probe_table(probe_dir: Path) -> tuple[dict, pd.DataFrame]:
    meta = json.loads((probe_dir / "probe.json").read_text())
    assert meta["active"] is True and meta["connections"] <= meta["max_connections"]
    return meta, pd.read_parquet(probe_dir / "probe.parquet")


def _probed(scenario: str, tmp_path_factory):
    """The session's recording of ``scenario`` with its probe: (recording, truth, probe folder, node -> address,
    the probe table, its kubelet rows by address)."""
    rec, truth, probe_dir = recording(scenario, tmp_path_factory)
    _, table = _probe_table(probe_dir)
    return rec, truth, probe_dir, _nodes(rec), table, table[table["target"] == "kubelet"].set_index("address")


@needs_real_lab
@pytest.mark.netns
@pytest.mark.timeout(3600)
def test_probe_inside_the_real_cluster_settles_the_kubelet_certificate(tmp_path, tmp_path_factory):
    # the recording scored in test_real_lab
    rec, truth, probe_dir, nodes, table, kubelets = _probed("default", tmp_path_factory)
    for node, ip in nodes.items():
        k = kubelets.loc[ip]
        assert pd.isna(k["error"]), (node, k["error"])
        # the kubelet's default serving certificate: its own CA, not the cluster's
        assert k["tls"] and k["chain_verified"] == False, (node, k["verify_error"])  # noqa: E712
        assert "self-signed" in k["verify_error"]
        assert k["client_cert_requested"] == True  # noqa: E712  (authentication.x509.clientCAFile is set)
        assert "TLS 1.3" in list(k["versions_accepted"])
    api = table[table["target"] == "apiserver"].iloc[0]
    assert api["chain_verified"] == True and api["names_match"] == True, api["verify_error"]  # noqa: E712
    readonly = table[table["target"] == "kubelet-readonly"]
    assert readonly["anonymous_healthz_status"].isna().all() and readonly["error"].str.contains("refused").all()

    _anonymous_refused(kubelets, nodes)

    report = _analyze(rec, probe_dir, tmp_path / "out")
    _assert_probe_truth(report, truth)
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
    # the path, unless a connection's handshake is missing from the captures (a pod's own capture starts after
    # the pod, so a connection it opened first shows no handshake there) and the path says so;
    # etcd's clients send certificates TLS 1.3 hides, and the path says what would show them
    pod = paths["pod-to-apiserver"]
    assert pod["verdict"] != "not-observable" or "the TLS handshake of these connections" in pod["needs"], pod
    assert "probe" in {e["source"] for e in pod["evidence"]}
    assert paths["etcd"]["verdict"] != "not-observable" or "a probe sees only the server's" in paths["etcd"]["needs"]


@needs_real_lab
@pytest.mark.netns
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("scenario", ["hardened", "hardened-http-connect"])
def test_probe_real_hardened_kubelets_serve_from_the_cluster_ca_and_refuse_anonymous(tmp_path, tmp_path_factory,
                                                                                     scenario):
    """serverTLSBootstrap (CSRs the lab approves) and --kubelet-certificate-authority: the probe verifies each
    kubelet's serving chain against the cluster CA, names included; anonymous requests get 401; no read-only port.
    Joined: no certificate, anonymous, read-only or CA-conflict finding on any kubelet path, the probe's word cited."""
    rec, truth, probe_dir, nodes, table, kubelets = _probed(scenario, tmp_path_factory)
    for node, ip in nodes.items():
        k = kubelets.loc[ip]
        assert pd.isna(k["error"]), (node, k["error"])
        assert k["chain_verified"] == True and k["names_match"] == True, (node, k["verify_error"])  # noqa: E712
        assert not {"TLS 1.0", "TLS 1.1"} & set(k["versions_accepted"])
    _anonymous_refused(kubelets, nodes)
    readonly = table[table["target"] == "kubelet-readonly"]
    assert readonly["anonymous_healthz_status"].isna().all() and readonly["error"].str.contains("refused").all()
    # the configuration the probe's verdict rests on: the apiserver names the CA it verifies kubelets with
    api = next(c for c in json.loads((rec / "cp1" / "manifest.json").read_text())["host_config"]["components"]
               if c["name"] == "kube-apiserver")
    assert any(a.startswith("--kubelet-certificate-authority=") for a in api["cmdline"])

    report = _analyze(rec, probe_dir, tmp_path / "out")
    assert _assert_probe_truth(report, truth) == set()       # nothing the probe should find
    kubelet_paths = {"apiserver-to-kubelet", "metrics-to-kubelet", "kubelet-readonly"}
    fired = {(f["check"], f["path"]) for f in report["findings"] if f["path"] in kubelet_paths}
    assert not {c for c, _ in fired} & {"server-cert-untrusted", "cert-expired", "kubelet-serving-cert-unverified",
                                        "kubelet-ca-conflict", "kubelet-anonymous-auth", "kubelet-read-only-port"}
    metrics = {p["id"]: p for p in report["paths"]}["metrics-to-kubelet"]
    said = [e["said"] for e in metrics["evidence"] if e["source"] == "probe"]
    assert said and all("serving chain verified against the cluster CA" in s for s in said
                        if "kubelet" in s and "serv" in s), said


@needs_real_lab
@pytest.mark.netns
@pytest.mark.timeout(3600)
def test_probe_real_broken_node2_expired_certificate_and_read_only_port(tmp_path, tmp_path_factory):
    """broken: node2's kubelet serves an expired certificate from the cluster CA and opens its read-only port,
    node1's serves its own self-signed one; anonymous access stays off. Joined: cert-expired on the kubelet paths
    that reached node2 (the probe settles what TLS 1.3 hid), server-cert-untrusted where node1 was reached,
    kubelet-read-only-port on node2 alone, and nothing anonymous."""
    rec, truth, probe_dir, nodes, table, kubelets = _probed("broken", tmp_path_factory)
    node1, node2 = kubelets.loc[nodes["node1"]], kubelets.loc[nodes["node2"]]
    assert node1["chain_verified"] == False and "self-signed" in node1["verify_error"]  # noqa: E712
    assert node2["chain_verified"] == False and node2["verify_error"].startswith("certificate expired")  # noqa: E712
    assert node2["leaf_not_after"] < node2["probed_at"]
    _anonymous_refused(kubelets, nodes)
    readonly = table[table["target"] == "kubelet-readonly"].set_index("address")
    assert readonly.loc[nodes["node2"], "anonymous_healthz_status"] == 200
    assert pd.isna(readonly.loc[nodes["node1"], "anonymous_healthz_status"])
    assert "refused" in readonly.loc[nodes["node1"], "error"]

    report = _analyze(rec, probe_dir, tmp_path / "out")
    expected = _assert_probe_truth(report, truth)
    assert ("kubelet-read-only-port", "kubelet-readonly") in expected
    assert ("cert-expired", "apiserver-to-kubelet") in expected     # the apiserver dials node2 directly (bypass)
    readonly_at = {f["message"].split("-> ")[1].split(":")[0] for f in report["findings"]
                   if f["check"] == "kubelet-read-only-port"}
    assert readonly_at == {nodes["node2"]}
    expired = [f for f in report["findings"] if f["check"] == "cert-expired" and f["path"] == "apiserver-to-kubelet"]
    assert {f["message"].split("-> ")[1].split(":")[0] for f in expired} == {nodes["node2"]}
    assert all("probe" in {e["source"] for e in f["evidence_sources"]} for f in expired)

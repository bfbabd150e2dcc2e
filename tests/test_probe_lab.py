"""`commpath probe` inside the emulated lab: each scenario's planted causes show in the probe's table
(self-signed or CA-issued kubelet certificates, the read-only port, the TLS versions served), and the
probe-side checks fire where the scenario plants their cause and nowhere else."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from commpath.capture.probe_table import read_probe_dir

REPO = Path(__file__).resolve().parents[1]
NODES = ("10.77.0.21", "10.77.0.22")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root and network namespaces")


def _probe_scenario(scenario: str, tmp: Path) -> tuple[pd.DataFrame, dict, list[str]]:
    """Bring the scenario up, probe it from the control-plane namespace, tear it down."""
    from commpath.lab.lab import Lab
    name = f"cpp-{secrets.token_hex(3)}"
    out, probe = tmp / "lab", tmp / "probe"
    lab = Lab(name)
    try:
        lab.up(scenario, out)
        res = subprocess.run(["ip", "netns", "exec", lab.topo.control_plane.ns, sys.executable, "-m", "commpath",
                              "probe", "--inventory", str(out / "inventory.yaml"), "--out", str(probe),
                              "--timeout", "10"], capture_output=True, text=True, timeout=900, cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
    finally:
        lab.down()
    left = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
            if n.startswith(name)]
    assert res.returncode == 0, res.stderr[-3000:]
    return read_probe_dir(probe), json.loads((probe / "probe.json").read_text()), left


def _checks_fired(probe: pd.DataFrame) -> set[tuple[str, str]]:
    """The probe-side checks over the probe's table alone (no capture): (check, address)."""
    from commpath.check import load_policy
    from commpath.check.kinds import TESTS
    from commpath.check.facts import flow_facts
    f = flow_facts(pd.DataFrame({"flow_id": pd.Series(dtype="int64")}), tables={"probe": probe})
    fired = set()
    for check in load_policy("default").enabled_checks():
        test = TESTS[check.test]
        if getattr(test, "host", False):
            hits = test(f, check.params)
            fired |= {(check.id, a) for a in hits.address}
    return fired


def _assert_probe_truth(scenario: str, fired: set[tuple[str, str]]) -> None:
    """The scenario's ground truth for what only a probe settles: each ``with-probe`` finding fires on both
    kubelets, each absent check on none."""
    from commpath.lab.scenarios import SCENARIOS
    sc = SCENARIOS[scenario]
    planted = {f.check for f in sc.expected if f.when == "with-probe"}
    for check in planted:
        assert {(check, ip) for ip in NODES} <= fired, (scenario, check, fired)
    assert not {c for c, _ in fired} & set(sc.absent), (scenario, fired)


def _assert_anonymous(by: pd.DataFrame, scenario: str) -> None:
    """GET /pods and /healthz without credentials: 200 where the scenario leaves --anonymous-auth on, 401 where
    it turns it off; the read-only port (if open) never authenticates."""
    from commpath.lab.scenarios import SCENARIOS
    want = 200 if SCENARIOS[scenario].kubelet_anonymous else 401
    for ip in NODES:
        k = by.loc[("kubelet", ip)]
        assert (k["anonymous_pods_status"], k["anonymous_healthz_status"]) == (want, want), (scenario, ip)


@pytest.mark.netns
@needs_root
def test_legacy_scenario_self_signed_kubelets_read_only_port_tls12(tmp_path):
    probe, meta, left = _probe_scenario("legacy", tmp_path)
    assert left == [] and meta["active"] is True
    by = probe.set_index(["target", "address"])
    for ip in NODES:
        k = by.loc[("kubelet", ip)]
        assert pd.isna(k["error"]) and k["self_signed"] and k["chain_verified"] == False  # noqa: E712
        assert k["client_cert_requested"] == True  # noqa: E712  (VerifyClientCertIfGiven with the cluster CA)
        assert any("kubernetes" in n for n in k["client_ca_names"])
        assert list(k["versions_accepted"]) == ["TLS 1.2"]            # --tls-max 1.2
        assert by.loc[("kubelet-readonly", ip)]["anonymous_healthz_status"] == 200
    api = by.loc[("apiserver", "10.77.0.10")]
    assert api["chain_verified"] == True and api["names_match"] == True  # noqa: E712
    _assert_anonymous(by, "legacy")      # --anonymous-auth left on: the kubelets let anyone list pods
    fired = _checks_fired(probe)
    _assert_probe_truth("legacy", fired)
    assert {("kubelet-anonymous-auth", ip) for ip in NODES} <= fired
    assert {("kubelet-read-only-port", ip) for ip in NODES} <= fired
    assert not {c for c, _ in fired} & {"tls-min-version-weak"}


@pytest.mark.netns
@needs_root
def test_hardened_scenario_ca_issued_kubelets_tls13_only_no_read_only_port(tmp_path):
    probe, meta, left = _probe_scenario("hardened", tmp_path)
    assert left == []
    by = probe.set_index(["target", "address"])
    for ip in NODES:
        k = by.loc[("kubelet", ip)]
        assert pd.isna(k["error"]) and k["chain_verified"] == True and k["names_match"] == True  # noqa: E712
        assert not k["self_signed"]
        assert list(k["versions_accepted"]) == ["TLS 1.3"] and {"TLS 1.0", "TLS 1.1", "TLS 1.2"} <= set(
            k["versions_refused"])
        ro = by.loc[("kubelet-readonly", ip)]
        assert pd.isna(ro["anonymous_healthz_status"]) and "refused" in ro["error"]
    konn = by.loc[("konnectivity-server", "10.77.0.10")]
    assert pd.isna(konn["error"]) and konn["chain_verified"] == True  # noqa: E712
    _assert_anonymous(by, "hardened")    # --anonymous-auth=false: 401 without credentials
    fired_at = _checks_fired(probe)
    _assert_probe_truth("hardened", fired_at)
    fired = {c for c, _ in fired_at}
    assert not fired & {"kubelet-read-only-port", "tls-min-version-weak", "kubelet-anonymous-auth"}


@pytest.mark.netns
@needs_root
def test_broken_scenario_node2_serves_an_expired_certificate(tmp_path):
    probe, _, left = _probe_scenario("broken", tmp_path)
    assert left == []
    by = probe.set_index(["target", "address"])
    node1, node2 = by.loc[("kubelet", NODES[0])], by.loc[("kubelet", NODES[1])]
    assert node1["chain_verified"] == True and pd.isna(node1["verify_error"])  # noqa: E712
    assert node2["chain_verified"] == False and node2["verify_error"].startswith("certificate expired")  # noqa: E712
    assert node2["leaf_not_after"] < node2["probed_at"]
    assert list(node2["versions_accepted"]) == ["TLS 1.2"]
    _assert_anonymous(by, "broken")      # the broken scenario leaves anonymous access on
    _assert_probe_truth("broken", _checks_fired(probe))

"""The lab end to end: namespaces, real peers, captures on every host, ground truth, teardown."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from commpath.lab._pki import Authority
from commpath.lab.scenarios import SCENARIOS

SPEC_CHECKS = {"tls-required", "plaintext-proxy", "proxy-unverified-tls", "client-cert-missing",
               "server-cert-untrusted", "cert-expired", "tls-version-weak", "ssh-tunnel-deprecated",
               "konnectivity-bypass", "konnectivity-direction", "kubelet-readonly-port", "cert-not-observable",
               "kubelet-anonymous-auth", "tls-cipher-suites-weak"}   # the last two: additive, docs/evidence.md
SPEC_PATHS = {"node-to-apiserver", "pod-to-apiserver", "control-plane-to-apiserver", "apiserver-to-kubelet",
              "apiserver-proxy", "ssh-tunnel", "konnectivity", "kubelet-readonly", "etcd", "unclassified", "other"}
CP, NODES = "10.77.0.10", ("10.77.0.21", "10.77.0.22")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root and network namespaces")


def _namespaces(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].startswith(prefix + "-")]


def test_pki_chains_expiry_and_self_signed(tmp_path):
    ca = Authority(tmp_path, "kubernetes")
    good = ca.issue("kubelet", "system:node:n1", server=True, sans=["10.0.0.1", "n1"])
    old = ca.issue("old", "system:node:n2", server=True, expired=True)
    own = ca.issue("self", "n1@1", server=True, self_signed=True)
    root = x509.load_pem_x509_certificate(ca.pair.cert.read_bytes())
    now = dt.datetime.now(dt.timezone.utc)
    for pair, issuer in ((good, root.subject), (old, root.subject)):
        cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
        assert cert.issuer == issuer
        cert.verify_directly_issued_by(root)
    assert x509.load_pem_x509_certificate(old.cert.read_bytes()).not_valid_after_utc < now
    selfc = x509.load_pem_x509_certificate(own.cert.read_bytes())
    assert selfc.issuer == selfc.subject
    sans = x509.load_pem_x509_certificate(good.cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert "n1" in sans.get_values_for_type(x509.DNSName)
    assert oct(good.key.stat().st_mode)[-3:] == "600"


def test_scenarios_use_spec_ids():
    assert set(SCENARIOS) == {"default", "hardened", "legacy", "broken", "verified"}
    for sc in SCENARIOS.values():
        assert {f.check for f in sc.expected} <= SPEC_CHECKS and set(sc.absent) <= SPEC_CHECKS
        assert {f.path for f in sc.expected} <= SPEC_PATHS
        assert not {f.check for f in sc.expected if f.when == "always"} & set(sc.absent)


def _run_lab(scenario: str, out: Path) -> tuple[dict, str, float]:
    prefix = f"cpt-{secrets.token_hex(3)}"
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "commpath", "lab", "run", "--scenario", scenario, "--name", prefix,
                          "--out", str(out)], capture_output=True, text=True, timeout=1200)  # a hang guard: a cold Go build
                                                                                  # on a loaded machine is slow
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    assert _namespaces(prefix) == [], "namespaces left behind"
    assert not Path(f"/run/commpath-lab/{prefix}").exists()
    return yaml.safe_load((out / "ground-truth.yaml").read_text()), prefix, elapsed


def _endpoint(ip, port) -> str:
    return f"{ip}:{int(port)}"


@pytest.mark.netns
@needs_root
@pytest.mark.parametrize("scenario", ["default", "hardened", "legacy", "broken", "verified"])
def test_lab_run_matches_ground_truth(tmp_path, scenario):
    import commpath
    from commpath.classify import load_inventory

    out = tmp_path / scenario
    truth, prefix, _ = _run_lab(scenario, out)  # how long it took is for benchmarks/, not an assertion here
    assert truth["scenario"] == scenario and truth["errors"] == []
    load_inventory(out / "inventory.yaml")
    x509.load_pem_x509_certificate((out / "pki" / "ca.crt").read_bytes())
    for host in ("cp1", "node1", "node2"):
        m = json.loads((out / host / "manifest.json").read_text())
        assert m["status"] == "complete" and m["engine"] == "tcpdump" and m["host"] == host
        assert m["packets_captured"] > 0 and m["packets_dropped"] == 0

    cap = commpath.read(out)
    flows = cap.flows
    assert set(cap.captures["host"]) == {"cp1", "node1", "node2"}
    seen: dict[tuple[str, str], list[float]] = {}
    for s, sp, d, dp, ts in zip(flows.src_ip, flows.src_port, flows.dst_ip, flows.dst_port, flows.ts_start):
        seen.setdefault((_endpoint(s, sp), _endpoint(d, dp)), []).append(ts)
    conns = truth["connections"]
    assert len(conns) >= 20
    for c in conns:  # every ground-truth connection is in the captures, with its endpoints and start time
        starts = seen.get((c["src"], c["dst"])) or seen.get((c["src"], c.get("dst_after_nat")))
        assert starts, f"not captured: {c}"
        assert min(abs(t - c["start"]) for t in starts) < 1.0
    paths = set(truth["paths_observed"])
    base = {"node-to-apiserver", "pod-to-apiserver", "control-plane-to-apiserver"}
    assert base <= paths
    vip = [c for c in conns if c["dst"] == "10.96.0.1:443"]
    assert len(vip) == 2 and all(c["dst_after_nat"] == f"{CP}:6443" for c in vip)

    direct_cp_to_node = flows[(flows.src_ip == CP) & flows.dst_ip.isin(NODES)]
    if scenario == "hardened":  # Konnectivity-only: the control plane never dials a node
        assert direct_cp_to_node.empty
        assert {"konnectivity"} <= paths and not paths & {"apiserver-to-kubelet", "apiserver-proxy"}
        konn = flows[flows.dst_port == 8132]
        assert not konn.empty and set(konn.src_ip) == set(NODES) and konn.handshake_seen.all()
        assert truth["tunnelled_requests"]
    if scenario == "default":
        assert {"apiserver-to-kubelet", "apiserver-proxy"} <= paths
        assert set(direct_cp_to_node.dst_port) >= {10250, 8080, 8443}
    if scenario == "legacy":
        assert {"ssh-tunnel", "kubelet-readonly"} <= paths and "apiserver-to-kubelet" not in paths
        assert set(direct_cp_to_node.dst_port) >= {22, 10255}
    if scenario == "broken":
        assert set(direct_cp_to_node[direct_cp_to_node.dst_port == 10250].dst_ip) == {"10.77.0.22"}
    if scenario == "verified":  # both kubelets dialled directly; the Konnectivity server dials node1's agent
        assert set(direct_cp_to_node[direct_cp_to_node.dst_port == 10250].dst_ip) == set(NODES)
        reversed_konn = [c for c in conns if c["path"] == "konnectivity" and c["src"].startswith(CP + ":")]
        assert [c["dst"] for c in reversed_konn] == ["10.77.0.21:8132"]
        assert any(c["dst"] == "127.0.0.1:2379" for c in truth["host_local_connections"])  # etcd in plain HTTP
        lo = flows[(flows.dst_ip == "127.0.0.1") & (flows.dst_port == 2379)]
        # the apiserver's request in HTTP/1.1; etcd's own gateway speaks h2c to the same listener
        assert "http" in set(lo.app_protocol.astype(str)) <= {"http", "http2"}

    versions = subprocess.run(["tshark", "-r", str(out / "cp1" / "cp1-eth0.pcap"), "-Y", "tls.handshake.type == 2",
                               "-T", "fields", "-e", "tls.handshake.extensions.supported_version",
                               "-e", "tls.handshake.version"], capture_output=True, text=True, check=True).stdout
    negotiated = {line.split("\t")[0] or line.split("\t")[1] for line in versions.splitlines() if line.strip()}
    if scenario == "hardened":
        assert negotiated == {"0x0304"}
    if scenario in ("legacy", "broken", "verified"):
        assert negotiated == {"0x0303"}

    if scenario == "hardened":  # the key log decrypts the TLS 1.3 apiserver traffic
        keylog = out / "keylog.txt"
        assert "CLIENT_TRAFFIC_SECRET_0" in keylog.read_text()
        h2 = subprocess.run(["tshark", "-r", str(out / "node1" / "node1-eth0.pcap"), "-o",
                             f"tls.keylog_file:{keylog}", "-Y", "http2.header.value contains \"/api/v1/nodes\"",
                             "-T", "fields", "-e", "frame.number"], capture_output=True, text=True, check=True)
        assert h2.stdout.split()


@pytest.mark.netns
@needs_root
def test_ctrl_c_tears_everything_down(tmp_path):
    prefix = f"cpt-{secrets.token_hex(3)}"
    proc = subprocess.Popen([sys.executable, "-m", "commpath", "lab", "run", "--scenario", "legacy", "--name", prefix,
                             "--out", str(tmp_path / "out")], stderr=subprocess.PIPE, text=True)
    # interrupt while the captures run: wait for the agents' line however long a loaded machine takes to get
    # there (a watchdog bounds it), never at a time when the run may still be starting up
    watchdog = threading.Timer(600, proc.kill)
    watchdog.start()
    seen: list[str] = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if "capturing on" in line:
                break
    finally:
        watchdog.cancel()
    assert proc.poll() is None and _namespaces(prefix), "".join(seen)[-2000:]
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode == 130, rest
    assert _namespaces(prefix) == [] and not Path(f"/run/commpath-lab/{prefix}").exists()
    manifests = list((tmp_path / "out").glob("*/manifest.json"))
    assert manifests and all(json.loads(m.read_text())["status"] == "complete" for m in manifests)


@pytest.mark.netns
@needs_root
def test_failure_in_exercise_still_tears_down_and_down_removes_strays(tmp_path, monkeypatch):
    from commpath.errors import CommpathError
    from commpath.lab.lab import Lab

    prefix = f"cpt-{secrets.token_hex(3)}"
    lab = Lab(prefix, state_root=tmp_path / "state", log=lambda _m: None)

    def boom(self, out=None):
        assert _namespaces(prefix)
        raise CommpathError("injected failure")

    monkeypatch.setattr(Lab, "exercise", boom)
    with pytest.raises(CommpathError, match="injected"):
        lab.run("default", tmp_path / "out")
    assert _namespaces(prefix) == []

    def no_servers(self, sc, topo):
        assert _namespaces(prefix)
        raise CommpathError("injected: a server did not start")

    monkeypatch.setattr(Lab, "_start_servers", no_servers)
    with pytest.raises(CommpathError, match="did not start"):
        Lab(prefix, state_root=tmp_path / "state", log=lambda _m: None).up("hardened")
    assert _namespaces(prefix) == [] and not (tmp_path / "state" / prefix).exists()

    subprocess.run(["ip", "netns", "add", f"{prefix}-stray"], check=True)  # e.g. left by a killed run
    removed = Lab(prefix, state_root=tmp_path / "state", log=lambda _m: None).down()
    assert removed == [f"{prefix}-stray"] and _namespaces(prefix) == []


@pytest.mark.netns
@needs_root
def test_step_by_step_commands(tmp_path):
    prefix = f"cpt-{secrets.token_hex(3)}"
    out = tmp_path / "steps"

    def lab(*args):
        return subprocess.run([sys.executable, "-m", "commpath", "lab", *args, "--name", prefix],
                              capture_output=True, text=True, timeout=120)

    try:
        assert lab("exercise").returncode == 2  # not up yet
        assert lab("up", "--scenario", "legacy", "--out", str(out)).returncode == 0
        assert len(_namespaces(prefix)) == 6
        again = lab("up", "--scenario", "legacy")
        assert again.returncode == 2 and "up already" in again.stderr
        assert lab("capture").returncode == 0  # into the --out given to `up`
        twice = lab("capture")
        assert twice.returncode == 2 and "capturing already" in twice.stderr
        res = lab("exercise")
        assert res.returncode == 0, res.stderr
    finally:
        down = lab("down")
    assert down.returncode == 0 and _namespaces(prefix) == []
    truth = yaml.safe_load((out / "ground-truth.yaml").read_text())
    assert {"ssh-tunnel", "kubelet-readonly"} <= set(truth["paths_observed"])
    for host in ("cp1", "node1", "node2"):
        m = json.loads((out / host / "manifest.json").read_text())
        assert m["status"] == "complete" and m["stop_reason"] == "SIGINT" and m["packets_captured"] > 0


def test_probe_option_goes_with_the_real_lab_run_only(capsys):
    """`lab ... --probe DIR` is one clear line and exit 2 where nothing would probe (before anything starts)."""
    from commpath.cli import main as cli_main
    assert cli_main(["lab", "run", "--probe", "/nonexistent/p", "--out", "/nonexistent/o", "--name", "cpnop"]) == 2
    assert cli_main(["lab", "up", "--kind", "real", "--probe", "/nonexistent/p", "--name", "cpnop"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("--probe" in line for line in err)

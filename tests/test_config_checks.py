"""Checks that read host configuration, joined with the wire of the real-cluster recording (captures/real-default):
each fires where a host folder plants its cause and nowhere else."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import commpath
from commpath.lab.real import _config

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "captures" / "real-default"
CP, NODE1, NODE2 = "10.77.0.10", "10.77.0.21", "10.77.0.22"
#: checks whose evidence is (or may be) the hosts' configuration
CONFIG_CHECKS = {"kubelet-serving-cert-unverified", "kubelet-cert-rotation-off", "konnectivity-not-enforced",
                 "kubelet-ca-conflict", "kubelet-anonymous-auth", "tls-min-version-weak", "tls-cipher-suites-weak"}


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory) -> Path:
    """The real recording analysed once; each test reopens the folder with its own host configuration."""
    out = tmp_path_factory.mktemp("real") / "an"
    res = subprocess.run([sys.executable, "-m", "commpath", "analyze", str(REAL), "--inventory",
                          str(REAL / "inventory.yaml"), "--out", str(out), "-q"], capture_output=True, text=True,
                         timeout=900)
    assert res.returncode in (0, 1, 3), res.stderr[-2000:]
    return out


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _apiserver_args(*extra: str) -> list[str]:
    """The real lab's kube-apiserver command line (cluster.py), kubeadm's defaults: no kubelet CA."""
    pki = "/etc/kubernetes/pki"
    return ["/usr/local/bin/kube-apiserver", f"--advertise-address={CP}", f"--bind-address={CP}", "--secure-port=6443",
            f"--etcd-servers=https://{CP}:2379", f"--etcd-cafile={pki}/ca.crt", f"--client-ca-file={pki}/ca.crt",
            f"--tls-cert-file={pki}/apiserver.crt", f"--tls-private-key-file={pki}/apiserver.key",
            f"--kubelet-client-certificate={pki}/apiserver-kubelet-client.crt",
            f"--kubelet-client-key={pki}/apiserver-kubelet-client.key", "--authorization-mode=Node,RBAC",
            "--enable-bootstrap-token-auth", *extra]


def _cp1(root: Path, *extra: str, egress: dict | None = None, ca: bool = False) -> Path:
    d = root / "cp1"
    _write(d / "cmdline" / "kube-apiserver", "\n".join(_apiserver_args(*extra)) + "\n")
    _write(d / "cmdline" / "etcd", " ".join(["etcd", "--name", "cp1", f"--listen-client-urls=https://{CP}:2379",
                                             "--client-cert-auth", "--peer-client-cert-auth",
                                             "--cert-file=/etc/kubernetes/pki/etcd.crt"]) + "\n")
    if egress is not None:
        _write(d / "root/etc/kubernetes/egress.yaml", yaml.safe_dump(egress))
    if ca:
        _write(d / "root/etc/kubernetes/pki/ca.crt", (REAL / "pki" / "ca.crt").read_text())
    return d


def _node(root: Path, name: str, **kubelet) -> Path:
    """A node as the real lab configures it (_config.kubelet_config), with ``kubelet`` keys changed."""
    d = root / name
    conf = d / "root/etc/kubernetes/kubelet.yaml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    _config.kubelet_config(conf, node_ip={"node1": NODE1, "node2": NODE2}[name], ca=Path("/etc/kubernetes/pki/ca.crt"),
                           runtime_sock=Path("/run/containerd.sock"), cgroup_root="/lab", pod_logs=Path("/var/log/pods"))
    doc = yaml.safe_load(conf.read_text())
    for k, v in kubelet.items():
        node = doc
        *parents, last = k.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = v
    conf.write_text(yaml.safe_dump(doc))
    _config.kubeconfig(d / "root/etc/kubernetes/kubelet.kubeconfig", f"https://{CP}:6443",
                       Path("/etc/kubernetes/pki/ca.crt"), f"system:node:{name}", token="abcdef.0123456789abcdef")
    _write(d / "cmdline" / "kubelet", "kubelet --config=/etc/kubernetes/kubelet.yaml "
                                      "--kubeconfig=/etc/kubernetes/kubelet.kubeconfig\n")
    return d


def _judge(analyzed: Path, folders: list[Path], probe=None):
    return commpath.open(analyzed, inventory=REAL / "inventory.yaml", host_config=folders, probe=probe)


def _config_findings(a) -> set[tuple[str, str, str]]:
    """(check, path, responder or initiator key) of the findings that cite the hosts' configuration."""
    out = set()
    for r in a.findings.to_dict("records"):
        if any(e["source"] == "config" for e in r["evidence_sources"]):
            key = re.search(r"\(([^()]* -> [^()]*)\)", str(r["message"]))
            out.add((str(r["check"]), str(r["path"]), key.group(1) if key else str(r["message"])))
    return out


def test_kubeadm_defaults_fire_only_the_unverified_kubelet_certificate(analyzed, tmp_path):
    a = _judge(analyzed, [_cp1(tmp_path), _node(tmp_path, "node1"), _node(tmp_path, "node2")])
    found = _config_findings(a)
    assert {(c, p) for c, p, _ in found} == {("kubelet-serving-cert-unverified", "apiserver-to-kubelet")}
    assert {k for _, _, k in found} == {f"{CP} -> {NODE1}:10250", f"{CP} -> {NODE2}:10250"}
    f = a.findings[a.findings["check"] == "kubelet-serving-cert-unverified"].iloc[0]
    sources = {e["source"]: e for e in f["evidence_sources"]}
    assert set(sources) == {"wire", "config"}
    assert "--kubelet-certificate-authority unset" in sources["config"]["said"]
    assert sources["config"]["where"].startswith("cp1: kube-apiserver")
    assert len(f["flow_ids"]) == f["count"] > 0 and f["display_filter"]
    # the path's evidence: the wire's line, then what each host's configuration says about it
    path = a.paths.set_index("id").loc["apiserver-to-kubelet"]
    said = [e["said"] for e in path["evidence"] if e["source"] == "config"]
    assert any(s.startswith("cp1 kube-apiserver: ") and "--kubelet-certificate-authority unset" in s for s in said)
    assert any(s.startswith("node1 kubelet: ") and "authentication.anonymous.enabled false" in s for s in said)
    assert "config" in a.coverage["sources"]
    assert "abcdef.0123456789abcdef" not in json.dumps(a.facts["config"]["value"].dropna().tolist())


def test_the_kubelet_certificate_authority_set_fires_nothing(analyzed, tmp_path):
    a = _judge(analyzed, [_cp1(tmp_path, "--kubelet-certificate-authority=/etc/kubernetes/pki/ca.crt", ca=True),
                          _node(tmp_path, "node1"), _node(tmp_path, "node2")])
    assert _config_findings(a) == set()
    t = a.facts["config"]
    certs = t[t["key"].str.startswith("--kubelet-certificate-authority.certificates[")]
    assert len(certs) == 1 and "CN=kubernetes" in certs["value"].iloc[0]


def test_planted_kubelet_settings_fire_on_their_host_only(analyzed, tmp_path):
    a = _judge(analyzed, [
        _cp1(tmp_path, "--kubelet-certificate-authority=/etc/kubernetes/pki/ca.crt", ca=True),
        _node(tmp_path, "node1", **{"authentication.anonymous.enabled": True, "authorization.mode": "AlwaysAllow"}),
        _node(tmp_path, "node2", rotateCertificates=False, tlsMinVersion="VersionTLS11")])
    found = _config_findings(a)
    assert found == {
        ("kubelet-anonymous-auth", "apiserver-to-kubelet", f"{CP} -> {NODE1}:10250"),
        ("kubelet-cert-rotation-off", "node-to-apiserver", f"{NODE2} -> {CP}:6443"),
        ("tls-min-version-weak", "apiserver-to-kubelet", f"{CP} -> {NODE2}:10250"),
    }, found
    anon = a.findings[a.findings["check"] == "kubelet-anonymous-auth"].iloc[0]
    assert "AlwaysAllow" in anon["message"] and "authorization.mode: Webhook" in anon["remediation"]


def test_konnectivity_agents_without_an_egress_selector(analyzed, tmp_path):
    agent = tmp_path / "node1" / "cmdline" / "konnectivity-agent"
    nodes = [_node(tmp_path, "node1"), _node(tmp_path, "node2")]
    _write(agent, f"/proxy-agent --proxy-server-host={CP} --proxy-server-port=8132 --ca-cert=/var/run/ca.crt\n")
    direct = _judge(analyzed, [_cp1(tmp_path / "a", "--kubelet-certificate-authority=/etc/kubernetes/pki/ca.crt",
                                    ca=True), *nodes])
    # the direct connections the apiserver opened: to the kubelets and through its proxy
    assert {(c, p) for c, p, _ in _config_findings(direct)} == {("konnectivity-not-enforced", "apiserver-to-kubelet"),
                                                                ("konnectivity-not-enforced", "apiserver-proxy")}
    egress = {"apiVersion": "apiserver.k8s.io/v1beta1", "kind": "EgressSelectorConfiguration", "egressSelections": [
        {"name": "cluster", "connection": {"proxyProtocol": "GRPC",
                                           "transport": {"uds": {"udsName": "/etc/kubernetes/konnectivity.socket"}}}}]}
    routed = _judge(analyzed, [_cp1(tmp_path / "b", "--kubelet-certificate-authority=/etc/kubernetes/pki/ca.crt",
                                    "--egress-selector-config-file=/etc/kubernetes/egress.yaml", egress=egress, ca=True),
                               *nodes])
    assert _config_findings(routed) == set()
    agent.unlink()                       # no agent anywhere: direct connections are the documented default
    none = _judge(analyzed, [_cp1(tmp_path / "c", "--kubelet-certificate-authority=/etc/kubernetes/pki/ca.crt",
                                  ca=True), *nodes[:1]])
    assert _config_findings(none) == set()


def test_host_config_cli_option_and_reopened_folder(analyzed, tmp_path):
    """`analyze --host-config DIR...` judges with the folders; reopening the output folder keeps config.parquet."""
    out = tmp_path / "out"
    folders = [_cp1(tmp_path), _node(tmp_path, "node1"), _node(tmp_path, "node2")]
    res = subprocess.run([sys.executable, "-m", "commpath", "analyze", str(analyzed), "--inventory",
                          str(REAL / "inventory.yaml"), "--host-config", *map(str, folders), "--out", str(out), "-q"],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode in (0, 1, 3), res.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    checks = {(f["check"], f["path"]) for f in report["findings"]}
    assert ("kubelet-serving-cert-unverified", "apiserver-to-kubelet") in checks
    assert (out / "config.parquet").is_file()
    again = commpath.open(out, inventory=REAL / "inventory.yaml")
    assert ("kubelet-serving-cert-unverified", "apiserver-to-kubelet") in {
        (str(c), str(p)) for c, p in zip(again.findings["check"], again.findings["path"])}


def test_a_host_the_captures_did_not_show_gets_one_finding(analyzed, tmp_path):
    """node3 is in no capture: its kubelet's rotation off is one finding keyed by its address, whatever its count
    of addresses, saying no connection showed it."""
    node3 = _node(tmp_path, "node1", rotateCertificates=False, address="0.0.0.0")
    node3 = node3.rename(tmp_path / "node3")
    (node3 / "addresses").write_text("10.77.0.99\n10.244.9.1\n")
    a = _judge(analyzed, [_cp1(tmp_path, "--kubelet-certificate-authority=/etc/kubernetes/pki/ca.crt", ca=True),
                          node3])
    rot = a.findings[a.findings["check"] == "kubelet-cert-rotation-off"]
    assert len(rot) == 1 and rot["count"].iloc[0] == 0 and rot["path"].iloc[0] == "node-to-apiserver"
    assert "10.77.0.99:10250" in rot["message"].iloc[0] and "no connection to it" in rot["message"].iloc[0]
    assert [e["source"] for e in rot["evidence_sources"].iloc[0]] == ["config"]


def test_commpath_config_judges_the_configuration_alone(tmp_path):
    """Without captures `commpath config` still says what the configuration fails: one finding per process."""
    folders = [_cp1(tmp_path), _node(tmp_path, "node1"), _node(tmp_path, "node2", rotateCertificates=False)]
    res = subprocess.run([sys.executable, "-m", "commpath", "config", *map(str, folders), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    tail = res.stdout.split("# findings from the host configuration alone: ")[1].splitlines()
    assert tail[0] == "2"
    assert sorted(line.split()[1] for line in tail[1:]) == ["kubelet-cert-rotation-off", "kubelet-serving-cert-unverified"]
    found = json.loads((tmp_path / "o" / "config.json").read_text())["findings"]
    rotation = next(f for f in found if f["check"] == "kubelet-cert-rotation-off")
    assert rotation["path"] == "node-to-apiserver" and f"{NODE2}:10250" in rotation["message"]
    assert [e["source"] for e in rotation["evidence_sources"]] == ["config"]


def test_conflict_with_the_wire_where_the_key_log_shows_the_kubelet_certificate(tmp_path):
    """The emulated lab's default recording (real TLS stacks, key log): its kubelets serve self-signed certificates;
    a cp1 whose --kubelet-certificate-authority is the cluster CA disagrees with the wire, once per kubelet."""
    default = REPO / "captures" / "default"
    cp1 = tmp_path / "cp1"
    _write(cp1 / "cmdline" / "kube-apiserver", "kube-apiserver\n--kubelet-certificate-authority=/pki/ca.crt\n")
    _write(cp1 / "root/pki/ca.crt", (default / "pki" / "ca.crt").read_text())
    a = commpath.open(default, inventory=default / "inventory.yaml", keylog=default / "keylog.txt", host_config=[cp1])
    conflict = a.findings[a.findings["check"] == "kubelet-ca-conflict"]
    assert len(conflict) and set(conflict["path"].astype(str)) == {"apiserver-to-kubelet"}
    for message, sources in zip(conflict["message"], conflict["evidence_sources"]):
        assert message.count("wire: the kubelet served a certificate issued by") == 1
        said = [e["said"] for e in sources if e["source"] == "wire"]
        assert any("issued by" in s for s in said) and any(e["source"] == "config" for e in sources)
    without = commpath.open(default, inventory=default / "inventory.yaml", keylog=default / "keylog.txt")
    assert not (without.findings["check"] == "kubelet-ca-conflict").any()


def test_weak_cipher_suites_configured_fire_on_the_servers_that_offer_them(analyzed, tmp_path):
    """Go's crypto/tls InsecureCipherSuites() is the definition (the probe's sweep offers the same list): the
    apiserver's --tls-cipher-suites with an RSA key-exchange suite and node2's tlsCipherSuites with 3DES fire on
    the paths each serves; etcd's --cipher-suites and node1's tlsCipherSuites with ECDHE AEAD suites only do not."""
    cp1 = _cp1(tmp_path, "--kubelet-certificate-authority=/etc/kubernetes/pki/ca.crt",
               "--tls-cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_RSA_WITH_AES_128_GCM_SHA256", ca=True)
    _write(cp1 / "cmdline" / "etcd", " ".join([
        "etcd", "--name", "cp1", f"--listen-client-urls=https://{CP}:2379", "--client-cert-auth",
        "--cert-file=/etc/kubernetes/pki/etcd.crt",
        "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"]) + "\n")
    a = _judge(analyzed, [
        cp1, _node(tmp_path, "node1", tlsCipherSuites=["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]),
        _node(tmp_path, "node2", tlsCipherSuites=["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                                                  "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"])])
    found = {(c, p, k.split(" -> ")[1]) for c, p, k in _config_findings(a) if c == "tls-cipher-suites-weak"}
    assert {(p, r) for _, p, r in found} == {
        ("node-to-apiserver", f"{CP}:6443"), ("pod-to-apiserver", f"{CP}:6443"),
        ("control-plane-to-apiserver", f"{CP}:6443"), ("apiserver-to-kubelet", f"{NODE2}:10250")}, found
    fired = a.findings[a.findings["check"] == "tls-cipher-suites-weak"]
    api = fired[fired["path"] == "node-to-apiserver"].iloc[0]
    assert "TLS_RSA_WITH_AES_128_GCM_SHA256" in api["message"] and "ECDHE_RSA_WITH_AES_128_GCM" not in api["message"]
    config = [e for e in api["evidence_sources"] if e["source"] == "config"]
    assert config and "--tls-cipher-suites" in config[0]["said"] and "cp1: kube-apiserver" in config[0]["where"]
    node2 = fired[fired["path"] == "apiserver-to-kubelet"].iloc[0]
    assert "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA" in node2["message"] and "tlsCipherSuites" in node2["remediation"]
    # Go's defaults (the setting unset) contain none of them: the kubeadm-like folders fire nothing
    plain = _judge(analyzed, [_cp1(tmp_path / "plain"), _node(tmp_path / "plain", "node1"),
                              _node(tmp_path / "plain", "node2")])
    assert not (plain.findings["check"] == "tls-cipher-suites-weak").any()

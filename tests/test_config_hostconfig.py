"""Host configuration: redaction, host folders (hostile files included), the config table and `commpath config`,
and the agent's collection from /proc of a real etcd in a network namespace of its own."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from commpath.capture import _redact, hostconfig
from commpath.decode.hostconfig import CONFIG_COLUMNS, config_table, tls_version
from commpath.lab import _pki, _procs

BOOTSTRAP = "abcdef.0123456789abcdef"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJl"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "commpath", *args], capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------ redaction

def test_redaction_removes_secret_values_and_keeps_paths():
    key_pem = ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBL4\n-----END EC PRIVATE KEY-----\n")
    text = (f"users:\n- name: u\n  user:\n    token: {BOOTSTRAP}\n    client-key-data: QUJD\n"
            f"    tokenFile: /var/run/secrets/token\n    password: 'hunter2'\n"
            f"    client-certificate: /etc/kubernetes/pki/c.crt\n"
            f"clientSecret: |\n  line-one-of-secret\n  line-two\nnext: {JWT}\n"
            f'json: {{"token": "s3cr3t", "server": "https://admin:pw@10.0.0.1:6443"}}\n'
            f"authorization: Bearer abc.def\n" + key_pem + "enabled: true\n")
    out = _redact.text(text)
    for secret in (BOOTSTRAP, "QUJD", "hunter2", "line-one-of-secret", "line-two", JWT, "s3cr3t", ":pw@", "abc.def",
                   "MHcCAQEEIBL4"):
        assert secret not in out, secret
    for kept in ("tokenFile: /var/run/secrets/token", "client-certificate: /etc/kubernetes/pki/c.crt",
                 "https://admin:<redacted>@10.0.0.1:6443", "enabled: true", "next: <redacted>"):
        assert kept in out, kept


def test_command_line_redaction():
    argv = ["kube-apiserver", "--token-auth-file=/etc/tokens.csv", "--oidc-client-secret=abc", "--password", "pw",
            "--enable-bootstrap-token-auth", "--etcd-servers=https://u:p@10.0.0.1:2379", "--anonymous-auth=false",
            f"--bootstrap-token={BOOTSTRAP}", "--tls-private-key-file=/k.key"]
    out = _redact.cmdline(argv)
    assert out == ["kube-apiserver", "--token-auth-file=/etc/tokens.csv", "--oidc-client-secret=<redacted>",
                   "--password", "<redacted>", "--enable-bootstrap-token-auth",
                   "--etcd-servers=https://u:<redacted>@10.0.0.1:2379", "--anonymous-auth=false",
                   "--bootstrap-token=<redacted>", "--tls-private-key-file=/k.key"]


# ------------------------------------------------------------------ host folders

def _kubelet_config(**extra) -> str:
    doc = {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
           "authentication": {"x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"}},
           "rotateCertificates": True, **extra}
    return yaml.safe_dump(doc)


def _host_folder(tmp: Path, name: str = "node1") -> Path:
    """A kubeadm-like node folder: the kubelet's command line, its config file and kubeconfig, and the CA."""
    d = tmp / name
    (d / "cmdline").mkdir(parents=True)
    root = d / "root"
    (root / "var/lib/kubelet").mkdir(parents=True)
    (root / "etc/kubernetes/pki").mkdir(parents=True)
    (d / "cmdline" / "kubelet").write_bytes(b"\0".join([
        b"/usr/bin/kubelet", b"--config=/var/lib/kubelet/config.yaml", b"--kubeconfig=/etc/kubernetes/kubelet.conf",
        b"--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf", b""]))
    (root / "var/lib/kubelet/config.yaml").write_text(_kubelet_config())
    (root / "etc/kubernetes/kubelet.conf").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://10.0.0.10:6443",
                                               "certificate-authority": "/etc/kubernetes/pki/ca.crt"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": BOOTSTRAP}}]}))
    (root / "etc/kubernetes/bootstrap-kubelet.conf").write_text("apiVersion: v1\nkind: Config\n")
    ca = _pki.Authority(tmp / f"pki-{name}", "kubernetes")
    (root / "etc/kubernetes/pki/ca.crt").write_bytes(Path(ca.pair.cert).read_bytes() + b"-----BEGIN PRIVATE KEY-----\n"
                                                       b"QUJDREVG\n-----END PRIVATE KEY-----\n")
    (d / "addresses").write_text("10.0.0.21\n")
    return d


def _value(facts, component: str, key: str) -> pd.Series:
    t = facts.table
    return t[(t["component"] == component) & (t["key"] == key) & t["effective"]].iloc[0]


def test_host_folder_reads_flags_config_file_kubeconfig_and_defaults(tmp_path):
    folder = _host_folder(tmp_path)
    hc = hostconfig.from_folder(folder)
    kubelet = hc["components"][0]
    assert kubelet["name"] == "kubelet" and hc["addresses"] == ["10.0.0.21"]
    assert BOOTSTRAP not in json.dumps(hc)
    ca_text = kubelet["files"]["/etc/kubernetes/pki/ca.crt"]
    assert "BEGIN CERTIFICATE" in ca_text and "PRIVATE KEY" not in ca_text and "QUJDREVG" not in ca_text
    facts = config_table([hc])
    assert list(facts.table.columns) == list(CONFIG_COLUMNS)
    assert {str(c): str(t) for c, t in facts.table.dtypes.items()} == CONFIG_COLUMNS
    # --config given: the KubeletConfiguration v1beta1 defaults apply, not the flags' legacy ones
    anon = _value(facts, "kubelet", "authentication.anonymous.enabled")
    assert anon["value"] == "false" and anon["is_default"] and anon["setting"] == "authentication.anonymous.enabled"
    assert "Kubernetes v1.36" in anon["defaults_from"]
    assert _value(facts, "kubelet", "readOnlyPort")["value"] == "0"
    rot = _value(facts, "kubelet", "rotateCertificates")
    assert rot["value"] == "true" and rot["source"] == "/var/lib/kubelet/config.yaml" and not rot["is_default"]
    assert _value(facts, "kubelet", "serverTLSBootstrap")["value"] == "false"
    server = _value(facts, "kubelet", "--kubeconfig.clusters[].cluster.server")
    assert server["value"] == "https://10.0.0.10:6443" and server["source"] == "/etc/kubernetes/kubelet.conf"
    assert facts.errors == []


def test_flag_overrides_config_file_and_without_config_the_flag_defaults_apply(tmp_path):
    folder = _host_folder(tmp_path)
    (folder / "root/var/lib/kubelet/config.yaml").write_text(_kubelet_config(readOnlyPort=10255, tlsMinVersion="VersionTLS11"))
    (folder / "cmdline" / "kubelet").write_text("/usr/bin/kubelet --config=/var/lib/kubelet/config.yaml "
                                                "--read-only-port=0\n")
    facts = config_table([hostconfig.from_folder(folder)])
    t = facts.table
    ro = t[(t["key"] == "readOnlyPort")]
    assert sorted(zip(ro["source"], ro["effective"])) == [("/var/lib/kubelet/config.yaml", False), ("cmdline", True)]
    assert tls_version(_value(facts, "kubelet", "tlsMinVersion")["value"]) == "TLS 1.1"
    (folder / "cmdline" / "kubelet").write_text("kubelet\n--kubeconfig=/etc/kubernetes/kubelet.conf\n")
    bare = config_table([hostconfig.from_folder(folder)])
    anon = _value(bare, "kubelet", "authentication.anonymous.enabled")
    assert (anon["setting"], anon["value"], anon["is_default"]) == ("--anonymous-auth", "true", True)
    assert _value(bare, "kubelet", "readOnlyPort")["value"] == "10255"


def test_static_pod_manifests_give_the_control_plane_command_lines(tmp_path):
    d = tmp_path / "cp1"
    manifests = d / "root/etc/kubernetes/manifests"
    manifests.mkdir(parents=True)
    egress = d / "root/etc/kubernetes/egress.yaml"
    egress.write_text(yaml.safe_dump({
        "apiVersion": "apiserver.k8s.io/v1beta1", "kind": "EgressSelectorConfiguration",
        "egressSelections": [{"name": "cluster", "connection": {"proxyProtocol": "GRPC",
                                                                "transport": {"uds": {"udsName": "/etc/k/k.socket"}}}}]}))
    (manifests / "kube-apiserver.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "spec": {
        "containers": [{"name": "kube-apiserver", "command": [
            "kube-apiserver", "--kubelet-client-certificate=/etc/kubernetes/pki/apiserver-kubelet-client.crt",
            "--egress-selector-config-file=/etc/kubernetes/egress.yaml", "--oidc-client-secret=abc"]}]}}))
    (manifests / "etcd.yaml").write_text("{not: [yaml")
    facts = config_table([hostconfig.from_folder(d)])
    assert _value(facts, "kube-apiserver", "--kubelet-certificate-authority")["value"] is pd.NA
    assert _value(facts, "kube-apiserver", "egressSelections[cluster].connection.proxyProtocol")["value"] == "GRPC"
    assert "abc" not in json.dumps(facts.raw)
    assert len(facts.errors) == 1 and "etcd.yaml" in facts.errors[0] and "not a pod manifest" in facts.errors[0]


def test_hostile_host_folder_one_line_per_bad_file_and_the_rest_kept(tmp_path):
    folder = _host_folder(tmp_path)
    root = folder / "root"
    (root / "etc/kubernetes/bootstrap-kubelet.conf").write_bytes(b"\x7fELF\x02\x01\x00\x00binary")
    with open(root / "var/lib/kubelet/config.yaml", "w") as fh:      # over the size limit
        fh.write(_kubelet_config())
        fh.write("# " + "x" * hostconfig.MAX_FILE_BYTES + "\n")
    (root / "etc/kubernetes/kubelet.conf").unlink()
    os.mkfifo(root / "etc/kubernetes/kubelet.conf")                   # a FIFO: never opened, never blocks
    (folder / "cmdline" / "kube-proxy").write_bytes(b"\xff\xfe\xfa not utf-8")
    (folder / "cmdline" / "notes.txt").write_text("vim /etc/hosts\n")
    res = cli("config", str(folder), "--out", str(tmp_path / "out"))
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("commpath: warning:")]
    assert len(warnings) == 5, res.stderr
    for name, reason in (("bootstrap-kubelet.conf", "binary content"), ("config.yaml", "too large"),
                         ("kubelet.conf", "not a regular file"), ("kube-proxy", "not UTF-8"),
                         ("notes.txt", "not a known component")):
        assert any(name in w and reason in w for w in warnings), (name, reason, warnings)
    # the rest is kept: the kubelet's flags, its (certificate-only) CA file, defaults; marked partial
    out = json.loads((tmp_path / "out" / "config.json").read_text())
    assert out["partial"] is True and len(out["errors"]) == 5
    assert "kubelet" in res.stdout and "--kubeconfig" in res.stdout and "/etc/kubernetes/kubelet.conf" in res.stdout
    table = pd.read_parquet(tmp_path / "out" / "config.parquet")
    assert list(table.columns) == list(CONFIG_COLUMNS) and len(table) > 10


def test_yaml_alias_bomb_is_one_error_and_other_files_are_kept(tmp_path):
    folder = _host_folder(tmp_path)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi"))
    (folder / "root/var/lib/kubelet/config.yaml").write_text(bomb)
    facts = config_table([hostconfig.from_folder(folder)])
    assert len(facts.errors) == 1 and "config.yaml" in facts.errors[0] and "refused" in facts.errors[0]
    assert _value(facts, "kubelet", "--kubeconfig.clusters[].cluster.server")["value"] == "https://10.0.0.10:6443"


def test_folders_with_nothing_usable_exit_2_with_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "host_config.json").write_text("{not json")
    for folder, reason in ((tmp_path / "missing", "no such folder"), (empty, "no host configuration in it"),
                           (broken, "not JSON")):
        res = cli("config", str(folder))
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and str(folder.name) in lines[0] and reason in lines[0], lines


def test_host_config_json_round_trip_is_redacted_again(tmp_path):
    d = tmp_path / "cp1"
    d.mkdir()
    (d / "host_config.json").write_text(json.dumps({"host": "cp1", "addresses": ["10.0.0.10"], "components": [
        {"name": "kube-apiserver", "pid": 7, "cmdline": ["kube-apiserver", f"--token={BOOTSTRAP}", "--anonymous-auth=false"],
         "files": {}}]}))
    facts = config_table([hostconfig.from_folder(d)])
    assert BOOTSTRAP not in json.dumps(facts.raw)
    assert _value(facts, "kube-apiserver", "--anonymous-auth")["value"] == "false"
    assert facts.addresses == {"cp1": ["10.0.0.10"]}


# ------------------------------------------------------------------ /proc of real processes

needs_root_etcd = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("etcd") is None or shutil.which("ip") is None,
                                     reason="needs root, ip and etcd (scripts/setup.sh)")


@needs_root_etcd
@pytest.mark.netns
def test_collect_reads_a_real_etcd_in_its_network_namespace(tmp_path):
    """A real etcd with a config file, in a namespace of its own: the collection run inside that namespace
    records its command line and config file; run from this namespace it does not see it."""
    ns = f"cph-{secrets.token_hex(3)}"
    conf = tmp_path / "etcd.yaml"
    conf.write_text(yaml.safe_dump({"name": "t", "data-dir": str(tmp_path / "data"),
                                    "listen-client-urls": "http://127.0.0.1:23790",
                                    "advertise-client-urls": "http://127.0.0.1:23790",
                                    "listen-peer-urls": "http://127.0.0.1:23800",
                                    "initial-cluster": "t=http://127.0.0.1:23800",
                                    "initial-advertise-peer-urls": "http://127.0.0.1:23800",
                                    "client-transport-security": {"client-cert-auth": False}}))
    log = tmp_path / "etcd.log"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=20)
    proc = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=20)
        with open(log, "wb") as fh:
            # with --config-file etcd ignores its other flags and ETCD_* variables: recorded, not effective
            proc = subprocess.Popen(["ip", "netns", "exec", ns, "etcd", "--config-file", str(conf), "--auto-tls"],
                                    stdout=fh, stderr=subprocess.STDOUT,
                                    env=dict(os.environ, ETCD_PEER_AUTO_TLS="true", ETCD_INITIAL_CLUSTER_TOKEN="s3cr3t"))
        _procs.wait_for(log, "ready to serve client requests", proc.pid, 120, "etcd")
        script = ("import json; from commpath.capture import hostconfig; "
                  "print(json.dumps(hostconfig.collect(host='h')))")
        inside = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", script], capture_output=True,
                                text=True, timeout=120, check=True)
        hc = json.loads(inside.stdout)
        etcd = [c for c in hc["components"] if c["name"] == "etcd"]
        assert len(etcd) == 1, hc
        assert etcd[0]["cmdline"][1:] == ["--config-file", str(conf), "--auto-tls"]
        assert etcd[0]["environ"] == {"ETCD_PEER_AUTO_TLS": "true", "ETCD_INITIAL_CLUSTER_TOKEN": "<redacted>"}
        assert "listen-client-urls: http://127.0.0.1:23790" in etcd[0]["files"][str(conf)]
        facts = config_table([hc])
        auth = _value(facts, "etcd", "client-transport-security.client-cert-auth")
        assert auth["value"] == "false" and auth["source"] == str(conf)
        for key in ("client-transport-security.auto-tls", "peer-transport-security.auto-tls"):
            assert (_value(facts, "etcd", key)["value"], _value(facts, "etcd", key)["source"]) == ("false", "default")
        outside = hostconfig.collect(host="here")
        assert not [c for c in outside["components"] if c["name"] == "etcd" and str(conf) in json.dumps(c)]
        # the capture agent records the same into its manifest, which `commpath config` reads back
        cap = tmp_path / "cap"
        res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "commpath", "capture", "--role",
                              "control-plane", "--host", "cp1", "--iface", "lo", "--engine", "tcpdump", "--duration",
                              "1", "--out", str(cap)], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        manifest = json.loads((cap / "manifest.json").read_text())
        assert [c["cmdline"] for c in manifest["host_config"]["components"] if c["name"] == "etcd"] == [
            ["etcd", "--config-file", str(conf), "--auto-tls"]]
        shown = cli("config", str(cap))
        assert shown.returncode == 0, shown.stderr
        assert any(line.split()[:4] == ["cp1", "etcd", "client-transport-security.client-cert-auth", "false"]
                   for line in shown.stdout.splitlines()), shown.stdout
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        subprocess.run(["ip", "netns", "del", ns], timeout=20)


def test_kubelet_dropins_override_the_config_file_in_lexical_order(tmp_path):
    folder = _host_folder(tmp_path)
    dropins = folder / "root/etc/kubernetes/kubelet.conf.d"
    (dropins / "sub").mkdir(parents=True)
    (dropins / "10-ro.conf").write_text("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
                                        "readOnlyPort: 10255\n")
    (dropins / "sub" / "20-ro.conf").write_text("readOnlyPort: 0\nserverTLSBootstrap: true\n")
    (dropins / "99-ignored.yaml").write_text("readOnlyPort: 1\n")          # only .conf files are drop-ins
    (folder / "cmdline" / "kubelet").write_text("kubelet --config=/var/lib/kubelet/config.yaml "
                                                "--config-dir=/etc/kubernetes/kubelet.conf.d\n")
    hc = hostconfig.from_folder(folder)
    assert sorted(p for p in hc["components"][0]["files"] if "conf.d" in p) == [
        "/etc/kubernetes/kubelet.conf.d/10-ro.conf", "/etc/kubernetes/kubelet.conf.d/sub/20-ro.conf"]
    facts = config_table([hc])
    ro = _value(facts, "kubelet", "readOnlyPort")
    assert (ro["value"], ro["source"]) == ("0", "/etc/kubernetes/kubelet.conf.d/sub/20-ro.conf")
    assert _value(facts, "kubelet", "serverTLSBootstrap")["value"] == "true"


def test_etcd_environment_variables_set_flags_below_the_command_line(tmp_path):
    d = tmp_path / "cp1"
    (d / "cmdline").mkdir(parents=True)
    (d / "environ").mkdir()
    (d / "cmdline" / "etcd").write_text("/usr/bin/etcd --client-cert-auth=false\n")
    # as /proc/PID/environ holds them: NUL-separated, other variables beside
    (d / "environ" / "etcd").write_bytes(b"PATH=/usr/bin\0ETCD_CLIENT_CERT_AUTH=true\0ETCD_AUTO_TLS=true\0"
                                         b"ETCD_INITIAL_CLUSTER_TOKEN=s3cr3t\0HOME=/root\0")
    hc = hostconfig.from_folder(d)
    env = hc["components"][0]["environ"]
    assert env == {"ETCD_CLIENT_CERT_AUTH": "true", "ETCD_AUTO_TLS": "true", "ETCD_INITIAL_CLUSTER_TOKEN": "<redacted>"}
    facts = config_table([hc])
    auth = _value(facts, "etcd", "client-transport-security.client-cert-auth")
    assert (auth["setting"], auth["value"], auth["source"]) == ("--client-cert-auth", "false", "cmdline")
    tls = _value(facts, "etcd", "client-transport-security.auto-tls")
    assert (tls["setting"], tls["value"], tls["source"]) == ("ETCD_AUTO_TLS", "true", "environ")

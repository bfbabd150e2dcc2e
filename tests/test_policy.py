"""Policies: the two built-ins, user files (with `extends`), and errors naming file, line and key."""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest

from commpath.check import builtin_policies, evaluate, load_policy
from commpath.cli import main as cli_main
from commpath.decode.schema import FLOW_COLUMNS, conform
from commpath.errors import InputError


def _flows(rows):
    base = {"capture": "x.pcap", "ts_start": 1.0, "ts_end": 2.0, "ip_version": 4, "transport": "tcp",
            "packets": 10, "bytes": 1000, "payload_fwd": 100, "payload_rev": 100, "app_protocol": "tls",
            "tunnel": "", "encrypted_underlay": False, "src_role": "apiserver", "dst_role": "node"}
    df = pd.DataFrame([{**base, "flow_id": i, "first_frame": 1 + 10 * i, "last_frame": 10 + 10 * i, **r}
                       for i, r in enumerate(rows)])
    return conform(df, FLOW_COLUMNS)


def test_builtins():
    assert builtin_policies() == ["default", "untrusted-network"]
    d, u = load_policy("default"), load_policy("untrusted-network")
    assert d.name == "default" and u.name == "untrusted-network"
    assert d.checks["ssh-tunnel-deprecated"].severity == "low"
    assert u.checks["ssh-tunnel-deprecated"].severity == "high"
    assert "control-plane-to-apiserver" in u.checks["client-cert-missing"].paths
    assert d.checks["server-cert-untrusted"].severity_for("apiserver-to-kubelet") == "medium"
    assert u.checks["server-cert-untrusted"].severity_for("apiserver-to-kubelet") == "high"


def test_untrusted_network_fails_proxy_and_ssh_that_default_only_warns():
    flows = _flows([
        {"src_ip": "192.0.2.10", "src_port": 40000, "dst_ip": "192.0.2.21", "dst_port": 22, "path": "ssh-tunnel",
         "app_protocol": "ssh"},
        {"src_ip": "192.0.2.10", "src_port": 40001, "dst_ip": "10.244.1.5", "dst_port": 8080, "path": "apiserver-proxy",
         "app_protocol": "http"},
        {"src_ip": "192.0.2.10", "src_port": 40002, "dst_ip": "10.244.1.5", "dst_port": 8443, "path": "apiserver-proxy"},
    ])
    for name, expected in (("default", "warn"), ("untrusted-network", "fail")):
        findings, paths = evaluate(flows, None, None, name, None)
        verdict = dict(zip(paths["id"].astype(str), paths["verdict"].astype(str)))
        assert verdict["ssh-tunnel"] == expected and verdict["apiserver-proxy"] == expected
        assert set(findings["check"].astype(str)) == {"ssh-tunnel-deprecated", "plaintext-proxy", "proxy-unverified-tls"}


def test_user_policy_extends_and_overrides(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text(textwrap.dedent("""\
        apiVersion: commpath/v1
        kind: Policy
        name: strict-ssh
        extends: default
        verdicts: {fail: medium}
        checks:
          ssh-tunnel-deprecated: {severity: critical}
          kubelet-readonly-port: {enabled: false}
          client-cert-missing:
            paths: [node-to-apiserver]
        """))
    pol = load_policy(str(p))
    assert pol.name == "strict-ssh" and pol.fail_at == "medium"
    assert pol.checks["ssh-tunnel-deprecated"].severity == "critical"
    assert not pol.checks["kubelet-readonly-port"].enabled
    assert pol.checks["client-cert-missing"].paths == ["node-to-apiserver"]
    assert pol.checks["plaintext-proxy"].severity == "medium"      # inherited from default


MALFORMED = [
    ("unknown check", "checks:\n  tls-requird: {severity: high}\n", 2, "checks.tls-requird", "unknown check"),
    ("severity", "checks:\n  tls-required:\n    severity: severe\n", 3, "checks.tls-required.severity", "unknown severity"),
    ("path", "checks:\n  tls-required:\n    paths: [node-to-apiserver, kubelet]\n", 3,
     "checks.tls-required.paths[1]", "unknown path 'kubelet'"),
    ("check key", "checks:\n  tls-required:\n    severty: high\n", 3, "checks.tls-required.severty", "unknown key"),
    ("top key", "name: x\nrules: []\n", 2, "rules", "unknown key"),
    ("extends", "extends: paranoid\n", 1, "extends", "unknown built-in policy"),
    ("verdicts", "verdicts:\n  fail: low\n  warn: high\n", 3, "verdicts.warn", "above verdicts.fail"),
    ("enabled", "checks:\n  tls-required: {enabled: 1}\n", 2, "checks.tls-required.enabled", "true or false"),
]


@pytest.mark.parametrize("text,line,key,reason", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_policy_names_file_line_and_key(tmp_path, text, line, key, reason):
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    with pytest.raises(InputError) as err:
        load_policy(str(p))
    msg = str(err.value)
    assert msg.startswith(f"{p}:{line}: {key}: "), msg
    assert reason in msg


def test_unknown_policy_name_and_cli_exit_2(tmp_path, capsys):
    with pytest.raises(InputError, match="built-in policies: default, untrusted-network"):
        load_policy("paranoid")
    p = tmp_path / "policy.yaml"
    p.write_text("checks:\n  tls-required:\n    severity: severe\n")
    rc = cli_main(["analyze", "/nonexistent.pcap", "--policy", str(p), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"commpath: error: {p}:3: checks.tls-required.severity: unknown severity")

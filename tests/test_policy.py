"""Policies: the two built-ins, user files (with `extends`), and errors naming file, line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

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


CHECK_ENTRY = """\
apiVersion: commpath/v1
kind: Checks
version: 1
checks:
  - id: my-check
    title: A check
    severity: high
    paths: [node-to-apiserver]
    test: {test}
    reference: {{anchor: node-to-control-plane, quote: q}}
    remediation: fix it
{extra}"""

MALFORMED_CHECKS = [
    ("kind", {"test": "plaintxt"}, 9, "checks[0].test", "unknown test kind 'plaintxt'"),
    ("key", {"extra": "    severty: high\n"}, 12, "checks[0].severty", "unknown key"),
    ("well-formed", {"extra": "    params: {}\n", "test": "plaintext"}, None, None, None),
    ("param name", {"test": "tls-version-weak", "extra": "    params: {minimun: TLS 1.2}\n"}, 12,
     "checks[0].params.minimun", "unknown key"),
    ("param value", {"test": "tls-version-weak", "extra": "    params: {minimum: TLS 1.4}\n"}, 12,
     "checks[0].params.minimum", "unknown value 'TLS 1.4'"),
    ("param of a test without params", {"extra": "    params: {minimum: TLS 1.2}\n"}, 12,
     "checks[0].params.minimum", "unknown key"),
    ("control key", {"extra": "    controls:\n      - {framework: CIS, id: '1.2.5', name: x}\n"}, 13,
     "checks[0].controls[0].name", "unknown key"),
    ("control missing", {"extra": "    controls:\n      - {framework: CIS, id: '1.2.5'}\n"}, 13,
     "checks[0].controls[0]", "missing key 'title'"),
    ("control id as number", {"extra": "    controls:\n      - {framework: CIS, id: 1.2, title: t}\n"}, 13,
     "checks[0].controls[0].id", "non-empty string"),
]


@pytest.mark.parametrize("fill,line,key,reason", [m[1:] for m in MALFORMED_CHECKS], ids=[m[0] for m in MALFORMED_CHECKS])
def test_checks_file_is_validated_when_it_loads(tmp_path, fill, line, key, reason):
    from commpath.check.policy import checks_from_doc
    from commpath.classify._yamldoc import load_yaml
    p = tmp_path / "checks.yaml"
    p.write_text(CHECK_ENTRY.format(**{"test": "plaintext", "extra": "", **fill}))
    if line is None:          # the well-formed variant loads
        assert list(checks_from_doc(load_yaml(p))) == ["my-check"]
        return
    with pytest.raises(InputError) as err:
        checks_from_doc(load_yaml(p))
    msg = str(err.value)
    assert msg.startswith(f"{p}:{line}: {key}: "), msg
    assert reason in msg


def test_unknown_path_in_checks_file(tmp_path):
    from commpath.check.policy import checks_from_doc
    from commpath.classify._yamldoc import load_yaml
    p = tmp_path / "checks.yaml"
    p.write_text(CHECK_ENTRY.format(test="plaintext", extra="").replace("[node-to-apiserver]", "[node-to-apiserver, kubelet]"))
    with pytest.raises(InputError, match=r":8: checks\[0\].paths\[1\]: unknown path 'kubelet'"):
        checks_from_doc(load_yaml(p))


def test_controls_are_kept_and_every_shipped_check_names_a_known_test():
    from commpath.check import TESTS, load_checks
    p = load_checks()
    assert all(c.test in TESTS for c in p.values())
    from commpath.check.policy import checks_from_doc
    from commpath.classify._yamldoc import load_yaml
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "checks.yaml"
        f.write_text(CHECK_ENTRY.format(test="any-flow", extra="    controls:\n      - {framework: CIS Kubernetes Benchmark v1.10, id: '1.2.5', title: kubelet CA}\n"))
        check = checks_from_doc(load_yaml(f))["my-check"]
    assert check.controls == [{"framework": "CIS Kubernetes Benchmark v1.10", "id": "1.2.5", "title": "kubelet CA"}]


def test_every_test_declares_known_inputs_and_check_functions_stay_short():
    import ast
    from commpath.check import TESTS
    from commpath.check.kinds import INPUTS
    for name, fn in TESTS.items():
        assert fn.kind == name and fn.needs <= set(INPUTS)
    for module in (Path(__file__).resolve().parents[1] / "commpath/check").glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 80, f"{module.name}:{node.name}"


def test_policy_params_are_validated_against_the_test(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text("checks:\n  tls-version-weak:\n    params: {minimum: TLS 9}\n")
    with pytest.raises(InputError, match=r":3: checks.tls-version-weak.params.minimum: unknown value"):
        load_policy(str(p))
    p.write_text("checks:\n  tls-version-weak:\n    params: {minimum: TLS 1.3}\n")
    assert load_policy(str(p)).checks["tls-version-weak"].params == {"minimum": "TLS 1.3"}

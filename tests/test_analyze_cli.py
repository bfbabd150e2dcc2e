"""`commpath analyze`: the output set of the spec and exit codes 0/1/2 by --fail-on."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import commpath
from commpath.cli import main as cli_main

PUBLIC = Path(__file__).resolve().parents[1].parent / "shared/pcaps/public"
OUTPUTS = {"flows.parquet", "tls.parquet", "certs.parquet", "findings.parquet", "report.json", "ssh.parquet",
           "http.parquet"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    if not PUBLIC.exists():
        pytest.skip("public captures not beside the checkout")
    d = tmp_path_factory.mktemp("analyze")
    pcap = next(PUBLIC.rglob("tls-conn-with-extensions.pcap"))   # TLS 1.0 -> tls-version-weak (high)
    inv = d / "inventory.yaml"
    inv.write_text('apiserver: {endpoints: ["74.125.224.79:443"]}\nnodes: [{name: n1, addresses: ["192.168.1.105"]}]\n')
    return d, pcap, inv


@pytest.mark.parametrize("fail_on,code", [("high", 1), ("critical", 0), ("info", 1)])
def test_exit_code_follows_fail_on(setup, fail_on, code):
    d, pcap, inv = setup
    out = d / f"out-{fail_on}"
    assert cli_main(["analyze", str(pcap), "--inventory", str(inv), "--out", str(out), "--fail-on", fail_on, "-q"]) == code
    assert {p.name for p in out.iterdir()} >= OUTPUTS


def test_output_set_is_readable_and_consistent(setup):
    d, pcap, inv = setup
    out = d / "out-set"
    cli_main(["analyze", str(pcap), "--inventory", str(inv), "--out", str(out), "-q"])
    flows = pd.read_parquet(out / "flows.parquet")
    for col in ("flow_id", "src_ip", "dst_port", "path", "src_role", "dst_role", "roles_inferred", "tls_version",
                "sni", "client_cert", "server_cert_fingerprints"):
        assert col in flows
    assert flows.loc[0, "path"] == "node-to-apiserver" and flows.loc[0, "tls_version"] == "TLS 1.0"
    findings = pd.read_parquet(out / "findings.parquet")
    assert "tls-version-weak" in set(findings["check"].astype(str))
    # the Arrow-backed list columns read back with plain pandas: one list per finding
    weak = findings[findings["check"].astype(str) == "tls-version-weak"].iloc[0]
    assert [int(v) for v in weak["flow_ids"]] == [0] and len(weak["frames"]) >= 1
    assert {e["source"] for e in weak["evidence_sources"]} >= {"wire"}
    assert len(pd.read_parquet(out / "tls.parquet")) == 1 and len(pd.read_parquet(out / "certs.parquet")) >= 1
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == "commpath.report/v1" and len(report["flows"]) == len(flows)


def test_analyze_output_folder_is_an_input(setup):
    d, pcap, inv = setup
    out = d / "out-reuse"
    cli_main(["analyze", str(pcap), "--inventory", str(inv), "--out", str(out), "-q"])
    again = commpath.open(out, inventory=inv)
    fresh = commpath.open(pcap, inventory=inv)
    assert list(again.flows["path"].astype(str)) == list(fresh.flows["path"].astype(str))
    assert sorted(again.findings["check"].astype(str)) == sorted(fresh.findings["check"].astype(str))
    # a different policy re-judges the stored flows
    strict = commpath.open(out, inventory=inv, policy="untrusted-network")
    assert strict.exit_code("high") == 1


def test_open_summary_and_repr(setup):
    _, pcap, inv = setup
    a = commpath.open(pcap, inventory=inv)
    s = a.summary()
    assert s["flows"] == 1 and s["verdicts"]["node-to-apiserver"] == "fail" and s["findings"]["high"] >= 1
    assert "node-to-apiserver=fail" in repr(a)
    assert a.exit_code("critical") == 0 and a.exit_code() == 1


@pytest.mark.parametrize("argv_tail,needle", [
    (["/nonexistent/capture.pcap"], "/nonexistent/capture.pcap"),
    (["{pcap}", "--policy", "paranoid"], "paranoid"),
    (["{pcap}", "--ca", "/nonexistent/ca.crt"], "/nonexistent/ca.crt"),
])
def test_bad_input_exits_2_with_one_line(setup, capsys, argv_tail, needle):
    d, pcap, _ = setup
    argv = ["analyze", *[a.format(pcap=pcap) for a in argv_tail], "--out", str(d / "bad"), "-q"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0]


def test_not_a_capture_exits_2(setup, capsys):
    d, _, inv = setup
    junk = d / "junk.pcap"
    junk.write_bytes(b"this is not a capture file at all\n" * 10)
    assert cli_main(["analyze", str(junk), "--out", str(d / "junk-out"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "junk.pcap" in err[0]


def test_ssh_and_http_tables_are_written_and_read_back(tmp_path):
    """Every table open() returns is in the output folder: ssh.parquet and http.parquet too."""
    ssh_pcap = next(PUBLIC.rglob("ssh_kex_curve25519.pcap"), None)
    http_pcap = next(PUBLIC.rglob("connect-with-header.pcap"), None)
    if ssh_pcap is None or http_pcap is None:
        pytest.skip("public captures not beside the checkout")
    for pcap, table in ((ssh_pcap, "ssh"), (http_pcap, "http")):
        out = tmp_path / table
        cli_main(["analyze", str(pcap), "--out", str(out), "-q"])
        fresh = getattr(commpath.open(pcap), table)
        written = pd.read_parquet(out / f"{table}.parquet")
        assert len(fresh) > 0 and len(written) == len(fresh)
        assert list(written.columns) == list(fresh.columns)
        again = getattr(commpath.open(out), table)
        assert again["flow_id"].tolist() == fresh["flow_id"].tolist()
    again_ssh = commpath.open(tmp_path / "ssh").ssh
    assert isinstance(again_ssh["weak_algorithms"].iloc[0], list)

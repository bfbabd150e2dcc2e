"""The evidence model on a real recording: what the wire could not settle, a probe's table settles,
and every finding and path says which source said what (report.json, Markdown, HTML)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

import commpath
from commpath.capture.probe_table import PROBE_COLUMNS, write_probe_dir
from commpath.cli import main as cli_main
from commpath.present import _model
from commpath.present.html import build_html
from commpath.present.markdown import build_markdown
from commpath.present.report_json import build_report

REC = Path(__file__).resolve().parent.parent / "captures" / "real-default"
NODE1, NODE2, GHOST = "10.77.0.21", "10.77.0.22", "10.77.0.99"


def _row(**kw) -> dict:
    base = {"target": "kubelet", "port": 10250, "active": True, "probed_at": time.time(), "connections": 12,
            "tls": True, "tls_version": "TLS 1.3", "versions_accepted": ["TLS 1.2", "TLS 1.3"],
            "versions_refused": ["TLS 1.0", "TLS 1.1"], "min_version": "TLS 1.2"}
    return {**base, **kw}


def probe_table() -> pd.DataFrame:
    """node1: the kubeadm default (self-signed, anonymous 200 as with AlwaysAllow); node2: a serving
    certificate from the cluster CA, anonymous refused, but TLS 1.1 still accepted; a kubelet no
    capture shows; its hostile host name must stay text."""
    return pd.DataFrame([
        _row(host="node1", address=NODE1, self_signed=True, chain_verified=False,
             leaf_not_before=9.0e8, leaf_not_after=1.0e9,           # expired in 2001: before any capture
             verify_error="self-signed certificate", client_cert_requested=True, client_ca_names=["CN=kubernetes"],
             anonymous_pods_status=200, anonymous_healthz_status=200),
        _row(host="node2", address=NODE2, self_signed=False, chain_verified=True, names_match=True,
             leaf_not_before=1.0e9, leaf_not_after=4.0e9,           # covers the recording
             client_cert_requested=True, client_ca_names=["CN=kubernetes"],
             versions_accepted=["TLS 1.1", "TLS 1.2", "TLS 1.3"], min_version="TLS 1.1",
             anonymous_pods_status=401, anonymous_healthz_status=401),
        _row(host="<script>ghost</script>", address=GHOST, self_signed=True, anonymous_pods_status=200),
    ])


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """The control plane's capture analysed once (no probe), as an analyze output folder."""
    out = tmp_path_factory.mktemp("analysed")
    code = cli_main(["analyze", str(REC / "cp1" / "cp1-eth0.pcap"), "--inventory", str(REC / "inventory.yaml"),
                     "--out", str(out), "-q"])
    assert code in (0, 1, 3)
    return out


@pytest.fixture(scope="module")
def probed(analysed):
    return commpath.open(analysed, probe=probe_table())


def _path(analysis, pid):
    return analysis.paths.set_index(analysis.paths["id"].astype(str)).loc[pid]


def test_without_a_probe_the_kubelet_certificate_is_not_observable_and_says_which_source_settles_it(analysed):
    a = commpath.open(analysed)
    row = _path(a, "apiserver-to-kubelet")
    assert row["verdict"] == "not-observable"
    assert "commpath probe" in row["needs"] and "--keylog" in row["needs"]
    assert [e["source"] for e in row["evidence"]] == ["wire", "decrypted"]
    assert "certificates not visible" in row["evidence"][0]["said"]
    assert row["evidence"][1]["said"].startswith("not decrypted")      # no key log: what one would show
    assert not a.findings["check"].astype(str).isin(["kubelet-anonymous-auth", "tls-min-version-weak"]).any()
    # a check that reads only the probe is not shown as passing a run that had none
    cells = _model.check_results(a)
    assert "kubelet-anonymous-auth" not in set(cells["check"])


def test_the_probe_settles_the_kubelet_certificate_per_node(probed):
    f = probed.findings
    untrusted = f[(f["check"].astype(str) == "server-cert-untrusted") & (f["path"].astype(str) == "apiserver-to-kubelet")]
    assert len(untrusted) == 1                              # node1 only: node2's chain verified
    hit = untrusted.iloc[0]
    assert f"{NODE1}:10250" in hit["message"] and "self-signed" in hit["message"] and "wire: TLS 1.3" in hit["message"]
    sources = [e["source"] for e in hit["evidence_sources"]]
    assert sources == ["wire", "probe"]
    wire, probe = hit["evidence_sources"]
    assert wire["said"] == "TLS 1.3, serving certificate not visible" and "cp1-eth0.pcap frames" in wire["where"]
    assert "(active)" in probe["where"] and probe["says"] == probe["said"]
    row = _path(probed, "apiserver-to-kubelet")
    assert row["verdict"] in ("fail", "warn")               # settled: no longer not-observable
    said = {e["source"]: e["said"] for e in row["evidence"] if NODE2 in e["said"] or e["source"] == "wire"}
    assert "serving chain verified" in said["probe"]


def test_kubelet_anonymous_auth_and_weak_versions_attach_to_the_governed_path(probed):
    f = probed.findings
    anon = f[f["check"].astype(str) == "kubelet-anonymous-auth"]
    by_end = {m.split("-> ")[1].split(")")[0] if "-> " in m else m: r for m, r in zip(anon["message"], anon.itertuples())}
    assert f"{NODE1}:10250" in by_end and not any(NODE2 in k for k in by_end)
    seen = by_end[f"{NODE1}:10250"]
    assert seen.path == "apiserver-to-kubelet" and seen.count == 4 and len(seen.flow_ids) == 4
    # the kubelet no capture showed: its own finding, keyed by its address and port, with no connection
    ghost = anon[anon["message"].str.contains(GHOST)]
    assert len(ghost) == 1 and int(ghost.iloc[0]["count"]) == 0 and list(ghost.iloc[0]["flow_ids"]) == []
    assert ghost.iloc[0]["fingerprint"] == commpath.check.fingerprint("kubelet-anonymous-auth",
                                                                       "apiserver-to-kubelet", "", GHOST, 10250)
    weak = f[f["check"].astype(str) == "tls-min-version-weak"]
    assert len(weak) == 1 and NODE2 in weak.iloc[0]["message"] and "TLS 1.1" in weak.iloc[0]["message"]
    assert "tls-min-version" in weak.iloc[0]["remediation"]


def test_the_probe_settles_the_serving_certificates_validity_not_the_clients(probed):
    f = probed.findings
    expired = f[(f["check"].astype(str) == "cert-expired") & (f["path"].astype(str) == "apiserver-to-kubelet")]
    assert len(expired) == 1 and f"{NODE1}:10250" in expired.iloc[0]["message"]
    assert "expired on 2001-09-09" in expired.iloc[0]["message"]
    assert [e["source"] for e in expired.iloc[0]["evidence_sources"]] == ["wire", "probe"]
    # node2's serving certificate covers the capture; the apiserver's client certificate (TLS 1.3)
    # is still unseen, so the path says what would show it
    node2 = probe_table().iloc[1:2].copy()
    node2["versions_accepted"] = [["TLS 1.2", "TLS 1.3"]]
    a0 = commpath.open(probed.captures["file"].iloc[0], inventory=str(REC / "inventory.yaml"), probe=node2)
    row = _path(a0, "apiserver-to-kubelet")
    assert row["verdict"] == "not-observable" and "a probe sees only the server's" in row["needs"]


def test_report_json_markdown_and_html_show_the_sources(probed):
    report = build_report(probed)
    # the apiserver proxy's plain-HTTP requests are read without a key log: "decrypted" may follow
    assert report["coverage"]["sources"][:2] == ["wire", "probe"]
    for p in report["paths"]:
        assert p["evidence"] and p["evidence"][0]["source"] == "wire"
        assert all(set(e) == {"source", "said", "says", "where"} for e in p["evidence"])
    for fnd in report["findings"]:
        assert isinstance(fnd["evidence"], dict) and "display_filter" in fnd["evidence"]   # spec's object, unchanged
        assert fnd["evidence_sources"][0]["source"] in ("wire", "probe")
    md = build_markdown(probed)
    section = md[md.index("## Evidence per path, by source"):]
    assert "| path | wire | probe |" in section and "self-signed" in section
    html = build_html(probed)
    assert 'class="evidence"' in html and 'data-source="probe"' in html
    assert "<script>ghost" not in html and "&lt;script&gt;ghost" in html


def test_analyze_probe_dir_writes_and_reloads_the_probe_table(analysed, tmp_path):
    probe_dir = tmp_path / "probe"
    write_probe_dir(probe_table(), {"active": True}, probe_dir)
    out = tmp_path / "out"
    code = cli_main(["analyze", str(analysed), "--probe", str(probe_dir), "--out", str(out), "-q"])
    assert code in (0, 1, 3)
    assert list(pd.read_parquet(out / "probe.parquet").columns)[:len(PROBE_COLUMNS)] == list(PROBE_COLUMNS)
    report = json.loads((out / "report.json").read_text())
    assert any(f["check"] == "kubelet-anonymous-auth" for f in report["findings"])
    again = commpath.open(out)         # the probe kept in the folder judges the reloaded run the same way
    assert "kubelet-anonymous-auth" in set(again.findings["check"].astype(str))


def test_a_damaged_probe_folder_is_one_line_and_exit_2(analysed, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "probe.parquet").write_bytes(b"PAR1 not really")
    assert cli_main(["analyze", str(analysed), "--probe", str(bad), "--out", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "probe" in err[0]
    assert cli_main(["analyze", str(analysed), "--probe", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2

"""Findings aggregated per connection key equal the per-row truth; fingerprints are stable."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

import commpath
from commpath.check import MAX_EXAMPLES, fingerprint

from _check_truth import ROOT, flagged, per_row, run, runs

EDITCAP = shutil.which("editcap")
CASES = runs()


@pytest.mark.parametrize("name,kwargs", CASES, ids=[c[0] for c in CASES])
def test_findings_flag_the_same_connections_as_the_per_row_engine(name, kwargs, tmp_path):
    analysis = run(kwargs, tmp_path)
    old_findings, old_paths = per_row(analysis, kwargs)
    assert flagged(analysis.findings) == flagged(old_findings)
    old_verdicts = dict(zip(old_paths["id"].astype(str), old_paths["verdict"].astype(str)))
    verdicts = dict(zip(analysis.paths["id"].astype(str), analysis.paths["verdict"].astype(str)))
    # a pass of the per-row engine on a path whose every role was inferred is now inconclusive
    flows = analysis.flows
    inferred = {p for p in verdicts if (flows["path"].astype(str) == p).any()
                and flows.loc[flows["path"].astype(str) == p, "roles_inferred"].all()}
    expected = {p: "inconclusive" if v == "pass" and p in inferred else v for p, v in old_verdicts.items()}
    assert verdicts == expected
    _assert_aggregated(analysis)


def _assert_aggregated(analysis):
    """One finding per check x path x capture x connection key, each complete and bounded."""
    f, flows = analysis.findings, analysis.flows.set_index("flow_id")
    seen = set()
    for r in f.itertuples():
        ends = flows.loc[list(r.flow_ids)]
        keys = set(zip(ends["src_ip"].astype(str), ends["dst_ip"].astype(str), ends["dst_port"].astype(int)))
        assert len(keys) == 1, r.message
        (src, dst, port), = keys
        assert (r.check, r.path, r.capture, src, dst, port) not in seen
        seen.add((r.check, r.path, r.capture, src, dst, port))
        assert r.count == len(r.flow_ids) and list(r.flow_ids) == sorted(r.flow_ids, key=lambda i: flows.at[i, "first_frame"])
        assert r.fingerprint == fingerprint(r.check, r.path, src, dst, port)
        assert r.display_filter.count("frame.number>=") == min(r.count, MAX_EXAMPLES)


def _key(flows, flow_id):
    row = flows.loc[flows["flow_id"] == flow_id].iloc[0]
    return str(row["src_ip"]), str(row["dst_ip"]), int(row["dst_port"])


def test_fingerprint_is_the_documented_digest():
    want = hashlib.sha256("tls-required\x1fnode-to-apiserver\x1f10.0.0.2\x1f10.0.0.1\x1f6443".encode()).hexdigest()[:32]
    assert fingerprint("tls-required", "node-to-apiserver", "10.0.0.2", "10.0.0.1", 6443) == want
    assert len(want) == 32 and fingerprint("tls-required", "etcd", "10.0.0.2", "10.0.0.1", 6443) != want


def _broken():
    d = ROOT / "captures/broken"
    return commpath.open(d, inventory=d / "inventory.yaml", ca=d / "pki/ca.crt")


def test_fingerprints_are_stable_across_runs():
    a, b = _broken(), _broken()
    assert len(a.findings) > 3
    assert list(a.findings["fingerprint"]) == list(b.findings["fingerprint"])
    assert a.findings["fingerprint"].is_unique or a.flows["capture"].nunique() > 1


@pytest.mark.skipif(EDITCAP is None, reason="editcap (tshark) not installed")
def test_fingerprints_are_stable_across_captures_of_one_cluster(tmp_path):
    """Two halves of one recording: other frames and flow ids, the same finding identifiers."""
    d = ROOT / "captures/legacy"
    src = d / "cp1/cp1-eth0.pcap"
    total = int(subprocess.run(["capinfos", "-M", "-c", "-T", "-r", str(src)], capture_output=True, text=True,
                               check=True).stdout.split("\t")[1])
    halves = []
    for i, frames in enumerate((f"1-{total // 2}", f"{total // 2 + 1}-{total}")):
        out = tmp_path / f"half{i}.pcap"
        subprocess.run([EDITCAP, "-r", str(src), str(out), frames], check=True, capture_output=True)
        halves.append(commpath.open(out, inventory=d / "inventory.yaml", ca=d / "pki/ca.crt"))
    first, second = ({(r.check, r.path, *_key(a.flows, r.flow_ids[0])): r for r in a.findings.itertuples()}
                     for a in halves)
    common = set(first) & set(second)
    assert common, "the halves share no finding"
    for key in common:
        assert first[key].fingerprint == second[key].fingerprint
        assert first[key].frames != second[key].frames


def test_findings_made_in_batches_of_groups_are_the_same(monkeypatch):
    from commpath.check import findings as made
    whole = _broken().findings
    monkeypatch.setattr(made, "GROUP_BATCH", 1)
    batched = _broken().findings
    assert len(whole) > 3
    assert whole.astype(str).equals(batched.astype(str))

"""The check engine driven by a small fixture policy (not the shipped ones): severities, paths,
parameters and verdict thresholds come from the policy file, and checks it leaves out stay silent."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from commpath.check import evaluate
from commpath.check.policy import load_policy
from commpath.classify import classify, load_inventory
from commpath.decode.schema import FLOW_COLUMNS, TLS_COLUMNS, conform
from commpath.errors import InputError

SMALL = Path(__file__).parent / "fixtures" / "cfg" / "policy-small.yaml"
APISERVER, ETCD, NODE, POD = "192.0.2.10", "192.0.2.11", "192.0.2.21", "10.244.1.5"


def small_policy():
    """The fixture policy with only the checks it lists turned on."""
    policy = load_policy(str(SMALL))
    listed = set(yaml.safe_load(SMALL.read_text())["checks"])
    for check in policy.checks.values():
        check.enabled = check.id in listed
    return policy


@pytest.fixture
def inventory(tmp_path):
    f = tmp_path / "inventory.yaml"
    f.write_text(textwrap.dedent(f"""\
        apiserver: {{endpoints: ["{APISERVER}:6443"]}}
        control_plane: [{{name: cp1, addresses: ["{APISERVER}", "{ETCD}"]}}]
        etcd: ["{ETCD}:2379"]
        nodes: [{{name: n1, addresses: ["{NODE}"]}}]
        pod_cidrs: ["10.244.0.0/16"]
        """))
    return load_inventory(f)


def flows_of(rows: list[dict], inventory) -> pd.DataFrame:
    base = {"capture": "small.pcap", "ts_start": 1.0, "ts_end": 2.0, "ip_version": 4, "transport": "tcp",
            "packets": 9, "bytes": 900, "payload_fwd": 100, "payload_rev": 100, "app_protocol": "tls", "tunnel": "",
            "encrypted_underlay": False, "initiator": "syn", "syn_seen": True, "synack_seen": True,
            "handshake_seen": True}
    df = pd.DataFrame([{**base, "flow_id": i, "first_frame": 1 + 10 * i, "last_frame": 9 + 10 * i, **r}
                       for i, r in enumerate(rows)])
    return classify(conform(df, FLOW_COLUMNS), None, inventory)


def tls_of(versions: dict[int, str]) -> pd.DataFrame:
    rows = [{"flow_id": fid, "tls_version": v, "established": True, "client_cert": "presented",
             "certs_visibility": "not-visible", "partial": False} for fid, v in versions.items()]
    return conform(pd.DataFrame(rows), TLS_COLUMNS)


def judge(flows, tls, inventory):
    findings, paths = evaluate(flows, tls, None, small_policy(), inventory, tls_known=tls is not None)
    got = {(r.check, r.path, r.severity, tuple(r.flow_ids)) for r in findings.itertuples()}
    return got, dict(zip(paths["id"].astype(str), paths["verdict"].astype(str)))


def test_plaintext_is_judged_only_on_the_paths_the_policy_names(inventory):
    flows = flows_of([
        {"src_ip": NODE, "src_port": 40000, "dst_ip": APISERVER, "dst_port": 6443, "app_protocol": "http"},
        {"src_ip": POD, "src_port": 40001, "dst_ip": APISERVER, "dst_port": 6443, "app_protocol": "http"},
    ], inventory)
    assert list(flows["path"].astype(str)) == ["node-to-apiserver", "pod-to-apiserver"]
    got, verdicts = judge(flows, None, inventory)
    assert got == {("tls-required", "node-to-apiserver", "medium", (0,))}
    assert verdicts["node-to-apiserver"] == "fail"          # medium reaches this policy's fail threshold
    assert verdicts["pod-to-apiserver"] != "fail" and verdicts["etcd"] == "not-observed"


def test_parameters_and_severity_by_path_come_from_the_policy(inventory):
    flows = flows_of([
        {"src_ip": NODE, "src_port": 40000, "dst_ip": APISERVER, "dst_port": 6443},
        {"src_ip": APISERVER, "src_port": 40001, "dst_ip": ETCD, "dst_port": 2379},
        {"src_ip": NODE, "src_port": 40002, "dst_ip": APISERVER, "dst_port": 6443},
    ], inventory)
    assert list(flows["path"].astype(str)) == ["node-to-apiserver", "etcd", "node-to-apiserver"]
    got, verdicts = judge(flows, tls_of({0: "TLS 1.2", 1: "TLS 1.2", 2: "TLS 1.3"}), inventory)
    # the policy's minimum is TLS 1.3: TLS 1.2 is weak here (the shipped checks say TLS 1.2 is fine)
    assert got == {("tls-version-weak", "node-to-apiserver", "low", (0,)),
                   ("tls-version-weak", "etcd", "high", (1,))}
    assert verdicts["node-to-apiserver"] == "warn" and verdicts["etcd"] == "fail"


def test_checks_the_policy_leaves_out_stay_silent(inventory):
    flows = flows_of([
        {"src_ip": APISERVER, "src_port": 40000, "dst_ip": NODE, "dst_port": 10255, "app_protocol": "http"},
        {"src_ip": NODE, "src_port": 40001, "dst_ip": APISERVER, "dst_port": 9100, "app_protocol": "http"},
    ], inventory)
    got, verdicts = judge(flows, None, inventory)
    # kubelet-readonly-port and tls-required (not on these paths here) are off; the stray flow is info
    assert {c for c, *_ in got} == {"unclassified-flow"}
    assert all(sev == "info" for _, _, sev, _ in got)
    assert verdicts["unclassified"] == "warn"                 # info reaches this policy's warn threshold


def test_the_fixture_policy_is_validated_like_any_policy(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL.read_text().replace("paths: [node-to-apiserver, etcd]", "paths: [node-to-nowhere]"))
    with pytest.raises(InputError) as exc:
        load_policy(str(bad))
    assert "bad.yaml" in str(exc.value) and "node-to-nowhere" in str(exc.value)


def test_findings_blocks_in_table_order_are_joined_whole_else_gathered():
    """The findings table joins whole blocks when its order takes each one whole and in order."""
    import numpy as np
    from commpath.check.engine import _block_order
    assert _block_order(np.array([3, 4, 0, 1, 2]), [3, 2]) == [1, 0]
    assert _block_order(np.array([0, 1, 2, 3, 4]), [3, 2]) == [0, 1]
    assert _block_order(np.array([3, 0, 1, 2, 4]), [3, 2]) is None      # a block split in two
    assert _block_order(np.array([1, 0, 2, 3, 4]), [3, 2]) is None      # a block out of its own order

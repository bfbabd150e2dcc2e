"""Path metrics-to-kubelet: a client other than the apiserver (metrics-server, a Prometheus scrape) -> the kubelet API.

Added as catalog data only (cfg/catalog.yaml, the checks' ``paths`` in cfg/checks.yaml); these
tests show it classified and judged on a synthetic flow table with the test inventory."""

from __future__ import annotations

import pandas as pd
import pytest

from commpath.check import evaluate
from commpath.classify import classify, load_inventory
from commpath.decode.schema import TLS_COLUMNS, conform

from test_classify import INVENTORY, flows_frame, row

KUBELET = "192.0.2.22:10250"


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    p = tmp_path_factory.mktemp("inv") / "inventory.yaml"
    p.write_text(INVENTORY)
    return load_inventory(p)


@pytest.mark.parametrize("name, flow, path, src_role, dst_role", [
    ("metrics-server pod", row("10.244.1.5:40000", KUBELET), "metrics-to-kubelet", "pod", "kubelet"),
    ("Prometheus on a node's host network", row("192.0.2.21:40001", KUBELET), "metrics-to-kubelet", "node", "kubelet"),
    ("v6 pod", row("[fd00:10:244:1::5]:40002", "[2001:db8::21]:10250"), "metrics-to-kubelet", "pod", "kubelet"),
    ("the apiserver stays apiserver-to-kubelet", row("192.0.2.10:40003", KUBELET), "apiserver-to-kubelet",
     "apiserver", "kubelet"),
    ("the read-only port stays kubelet-readonly", row("10.244.1.5:40004", "192.0.2.22:10255", "http"),
     "kubelet-readonly", "pod", "kubelet"),
    ("a pod's own 10250 is no kubelet", row("10.244.1.5:40005", "10.244.2.7:10250"), "other", "pod", "pod"),
])
def test_clients_other_than_the_apiserver_are_metrics_to_kubelet(inventory, name, flow, path, src_role, dst_role):
    out = classify(flows_frame([dict(flow)]), None, inventory)
    assert (out["path"].iloc[0], out["src_role"].iloc[0], out["dst_role"].iloc[0]) == (path, src_role, dst_role)


def test_an_inventory_kubelet_port_moves_the_path(tmp_path):
    p = tmp_path / "inventory.yaml"
    p.write_text(INVENTORY + "kubelet_port: 11250\n")
    out = classify(flows_frame([row("10.244.1.5:40000", "192.0.2.22:11250"), row("10.244.1.5:40001", KUBELET)]),
                   None, load_inventory(p))
    assert list(out["path"].astype(str)) == ["metrics-to-kubelet", "other"]   # 10250 is no kubelet port there


def _tls(flow_ids, version="TLS 1.3", verified=True):
    rows = [{"flow_id": f, "tls_version": version, "established": True, "server_cert_fingerprints": [],
             "client_cert_fingerprints": [], "cert_request_cas": [], "alerts": [], "handshake_frames": [],
             "server_cert_verified": verified, "client_cert": "unknown", "certs_visibility": "decrypted"}
            for f in flow_ids]
    return conform(pd.DataFrame(rows), TLS_COLUMNS)


def test_plaintext_and_weak_tls_on_the_path_are_findings(inventory):
    flows = flows_frame([row("10.244.1.5:40000", KUBELET, "http"), row("10.244.1.6:40001", KUBELET),
                         row("10.244.1.7:40002", KUBELET)])
    classified = classify(flows, None, inventory)
    assert set(classified["path"].astype(str)) == {"metrics-to-kubelet"}
    tls = pd.concat([_tls([1]), _tls([2], version="TLS 1.0")], ignore_index=True)
    findings, paths = evaluate(classified, tls, None, "default", inventory)
    on_path = findings[findings["path"].astype(str) == "metrics-to-kubelet"]
    assert {"tls-required", "tls-version-weak"} <= set(on_path["check"].astype(str))
    verdict = paths.set_index(paths["id"].astype(str)).loc["metrics-to-kubelet", "verdict"]
    assert verdict == "fail"

"""Handshakes of the lab's recorded captures (captures/<scenario>/) against their ground truth and key log.

The lab runs real Go peers (kubelet, apiserver, etcd, konnectivity stand-ins) and records each
scenario with its PKI, key log and ground-truth.yaml. These tests check the TLS 1.3 client-
certificate inference against what the key log reveals, and the certificate verdicts against
the documented truth of each scenario.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest
import yaml

CAPTURES = Path(__file__).resolve().parents[1] / "captures"
SCENARIOS = sorted(p.name for p in CAPTURES.glob("*") if (p / "ground-truth.yaml").exists()) \
    if CAPTURES.exists() else []
#: scenarios recorded with a key log (the real-* ones are not: Go components write none, so TLS 1.3
#: hides their client certificates and nothing there can check the inference against the keys)
KEYED = [s for s in SCENARIOS if (CAPTURES / s / "keylog.txt").exists()]

pytestmark = pytest.mark.skipif(not SCENARIOS, reason="no lab captures in captures/")


@lru_cache(maxsize=None)
def analysed(scenario: str):
    import commpath
    from commpath.decode.handshakes import analyze_handshakes
    d = CAPTURES / scenario
    cap = commpath.read(str(d))
    ca = d / "pki" / "ca.crt"
    keylog = d / "keylog.txt"
    plain = analyze_handshakes(cap, ca=str(ca) if ca.exists() else None)
    keyed = analyze_handshakes(cap, ca=str(ca) if ca.exists() else None,
                               keylog=str(keylog) if keylog.exists() else None)
    truth = yaml.safe_load((d / "ground-truth.yaml").read_text())
    return cap, plain, keyed, truth


def _paths(cap, truth):
    """flow_id -> documented path, by the ground truth's 5-tuples."""
    by_tuple = {(c["src"], c["dst"]): c["path"] for c in truth.get("connections", [])}
    out = {}
    for r in cap.flows.itertuples():
        key = (f"{r.src_ip}:{r.src_port}", f"{r.dst_ip}:{r.dst_port}")
        if key in by_tuple:
            out[int(r.flow_id)] = by_tuple[key]
    return out


@pytest.mark.parametrize("scenario", KEYED)
def test_inference_agrees_with_the_key_log(scenario):
    """Every TLS 1.3 connection: inferred-presented iff the decrypted flight holds a certificate."""
    _, plain, keyed, _ = analysed(scenario)
    both = plain.tls.merge(keyed.tls, on="flow_id", suffixes=("", "_k"))
    tls13 = both[(both.tls_version == "TLS 1.3") & (both.certs_visibility_k == "decrypted")]
    if tls13.empty:
        pytest.skip("no decryptable TLS 1.3 connection in this scenario")
    for r in tls13.itertuples():
        if r.client_cert == "inferred-presented":
            assert r.client_cert_k == "presented", r.client_cert_inference
        elif r.client_cert == "inferred-absent":
            assert r.client_cert_k in ("empty", "not-requested"), r.client_cert_inference
        elif r.client_cert == "not-requested":      # PSK resumption
            assert r.client_cert_k == "not-requested"
        assert r.certs_visibility == "not-visible"


@pytest.mark.parametrize("scenario", KEYED)
def test_client_certificates_by_path(scenario):
    """Kubelets, control-plane components and the apiserver's etcd client present certificates
    that chain to the cluster CA, unless the scenario documents one that does not (client-cert-
    missing); pods authenticate with tokens, not certificates."""
    cap, plain, keyed, truth = analysed(scenario)
    paths = _paths(cap, truth)
    missing = {f["path"] for f in truth.get("expected_findings", []) if f["check"] == "client-cert-missing"}
    rows = keyed.tls.set_index("flow_id")
    by_path: dict[str, list] = {}
    for fid, path in paths.items():
        if fid in rows.index and isinstance(rows.loc[fid, "tls_version"], str):
            by_path.setdefault(path, []).append(rows.loc[fid])
    checked = 0
    for path in ("node-to-apiserver", "control-plane-to-apiserver", "etcd"):
        for r in by_path.get(path, []):
            if r.client_cert == "presented":
                assert bool(r.client_cert_verified) is True, r.verify_error
                checked += 1
            else:
                assert path in missing and r.client_cert in ("empty", "not-requested"), (path, r.client_cert)
        if path in missing:
            assert any(r.client_cert != "presented" for r in by_path.get(path, []))
    for r in by_path.get("pod-to-apiserver", []):
        assert r.client_cert in ("empty", "not-requested")
        assert bool(r.server_cert_verified) is True, r.verify_error
        checked += 1
    assert checked


def _direct_kubelet(scenario: str) -> bool:
    """Whether the apiserver dials a kubelet directly (not only through SSH or Konnectivity)."""
    truth = yaml.safe_load((CAPTURES / scenario / "ground-truth.yaml").read_text())
    return any(c.get("path") == "apiserver-to-kubelet" for c in truth.get("connections", []))


def test_a_bundled_scenario_has_a_ca_verified_direct_kubelet():
    """Without one, the "trusted kubelet certificate" branch below would never run."""
    verified = [s for s in SCENARIOS if _direct_kubelet(s) and {"server-cert-untrusted", "cert-expired"}
                <= set(yaml.safe_load((CAPTURES / s / "ground-truth.yaml").read_text())["absent_findings"])]
    assert verified, "no bundled scenario dials a kubelet directly with a certificate the apiserver verifies"


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if _direct_kubelet(s)])
def test_kubelet_serving_certificate_verdicts(scenario):
    """apiserver-to-kubelet: expected findings say whether the serving certificate is trusted."""
    cap, _, keyed, truth = analysed(scenario)
    paths = _paths(cap, truth)
    checks = {(f["check"], f["path"]) for f in truth.get("expected_findings", [])}
    absent = set(truth.get("absent_findings", []))
    rows = keyed.tls.set_index("flow_id")
    kubelet = [rows.loc[fid] for fid, p in paths.items() if p == "apiserver-to-kubelet" and fid in rows.index]
    assert kubelet, "the ground truth names direct apiserver-to-kubelet connections"
    verdicts = {bool(r.server_cert_verified) for r in kubelet if r.certs_visibility in ("visible", "decrypted")}
    if ("server-cert-untrusted", "apiserver-to-kubelet") in checks:
        assert verdicts == {False}
    if ("cert-expired", "apiserver-to-kubelet") in checks:
        assert all("expired" in r.verify_error for r in kubelet)
    if "server-cert-untrusted" in absent and "cert-expired" in absent:
        assert verdicts == {True}

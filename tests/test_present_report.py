"""`commpath report`: formats in one run, -o as base name, exit codes, one-line errors."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from commpath import cli
from commpath.present.report import output_paths
from test_present_data import PUBLIC_FILES, PUBLIC_INVENTORY, lab_scenarios, public_analysis, CAPTURES


def test_output_paths():
    assert output_paths("out/report.html", []) == {"html": __import__("pathlib").Path("out/report.html")}
    assert output_paths("r.md", [])["md"].name == "r.md"
    several = output_paths("out/report.html", ["html", "md", "json", "junit"])
    assert {k: v.name for k, v in several.items()} == {"html": "report.html", "md": "report.md",
                                                       "json": "report.json", "junit": "report.xml"}
    assert output_paths("x", ["json"])["json"].name == "x.json"


def _inputs(tmp_path):
    if lab_scenarios():
        folder = CAPTURES / lab_scenarios()[0]
        return [str(folder), "--inventory", str(folder / "inventory.yaml")], None
    inv = tmp_path / "inventory.yaml"
    inv.write_text(PUBLIC_INVENTORY)
    return [*map(str, PUBLIC_FILES), "--inventory", str(inv)], public_analysis()


def test_all_formats_in_one_run(tmp_path, capsys):
    args, _ = _inputs(tmp_path)
    code = cli.main(["report", *args, "--format", "html", "--format", "md", "--format", "json",
                     "--format", "junit", "-o", str(tmp_path / "out" / "report"), "--quiet"])
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert files == {"report.html", "report.md", "report.json", "report.xml"}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["schema"] == "commpath.report/v1"
    worst = max((["info", "low", "medium", "high", "critical"].index(f["severity"]) for f in report["findings"]),
                default=-1)
    assert code == (1 if worst >= 3 else 0)
    root = ET.parse(tmp_path / "out" / "report.xml").getroot()
    assert root.tag == "testsuites" and int(root.get("tests")) > 0
    html = (tmp_path / "out" / "report.html").read_text()
    for p in report["paths"]:
        assert f'data-path="{p["id"]}" data-verdict="{p["verdict"]}"' in html


def test_fail_on_critical_passes_and_single_format_uses_the_name(tmp_path):
    args, _ = _inputs(tmp_path)
    code = cli.main(["report", *args, "-o", str(tmp_path / "only.md"), "--fail-on", "critical", "-q"])
    assert code == 0
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".md"] == ["only.md"]


def test_unreadable_input_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "broken.pcap"
    bad.write_bytes(b"this is not a capture")
    code = cli.main(["report", str(bad), "-o", str(tmp_path / "r.html"), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "broken.pcap" in err and "Traceback" not in err


def test_unwritable_output_is_one_line_exit_2(tmp_path, capsys):
    args, _ = _inputs(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = cli.main(["report", *args, "-o", str(blocker / "sub" / "r.html"), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err


def test_report_from_an_analyze_folder_keeps_the_verdicts(tmp_path):
    from commpath._pipeline import write_outputs
    from test_present_data import lab_analysis
    if not lab_scenarios():
        pytest.skip("no bundled lab captures")
    name = "broken" if "broken" in lab_scenarios() else lab_scenarios()[0]
    original = lab_analysis(name, keylog=False)
    write_outputs(original, tmp_path / "analysis")
    inventory = CAPTURES / name / "inventory.yaml"
    code = cli.main(["report", str(tmp_path / "analysis"), "--inventory", str(inventory),
                     "--format", "md", "--format", "junit", "-o", str(tmp_path / "r"), "-q"])
    assert code == original.exit_code("high")
    text = (tmp_path / "r.md").read_text()
    for _, p in original.paths.iterrows():
        row = next(line for line in text.splitlines() if line.startswith(f"| {p['id']} | "))
        assert row.split("|")[2].strip().endswith(str(p["verdict"]))
    root = ET.parse(tmp_path / "r.xml").getroot()
    assert int(root.get("failures")) >= 1


def test_capture_without_packets_gives_complete_reports(tmp_path):
    import struct
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    code = cli.main(["report", str(empty), "--format", "html", "--format", "md", "--format", "junit",
                     "--format", "json", "-o", str(tmp_path / "r"), "-q"])
    assert code == 3        # nothing observed: inconclusive, not a pass
    page = (tmp_path / "r.html").read_text()
    import re
    verdicts = re.findall(r'<tr data-path="[^"]+" data-verdict="([^"]+)">', page)
    from commpath.classify.catalog import judged_path_ids
    assert len(verdicts) == len(judged_path_ids()) and set(verdicts) == {"not-observed"}
    assert page.count("data:image/svg+xml;base64,") == 5
    root = ET.parse(tmp_path / "r.xml").getroot()
    assert int(root.get("failures")) == 1 and int(root.get("skipped")) == int(root.get("tests")) - 1
    assert root.find("testsuite").find("testcase").find("failure").get("type") == "inconclusive"
    assert json.loads((tmp_path / "r.json").read_text())["flows"] == []

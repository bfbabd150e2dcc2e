"""The Markdown report: the verdict table and findings equal the DataFrames; wire strings stay inert."""

from __future__ import annotations

import dataclasses
import re

from commpath.present import _model, markdown, palette
from test_present_data import analysis, public_analysis  # noqa: F401


def test_verdict_rows_equal_paths(analysis):  # noqa: F811
    text = markdown.build_markdown(analysis)
    table = _model.path_table(analysis)
    for _, p in table.iterrows():
        row = re.search(rf"^\| {re.escape(p['id'])} \| .*$", text, re.M).group(0)
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1].endswith(p["verdict"])
        assert cells[2] == ("yes" if p["observed"] else "no")
        assert int(cells[3]) == p["flows"]
        for i, sev in enumerate(palette.SEVERITY_ORDER[::-1]):
            assert int(cells[4 + i] or 0) == p[f"findings_{sev}"]


def test_every_finding_with_evidence_and_remediation(analysis):  # noqa: F811
    text = markdown.build_markdown(analysis)
    assert text.count("  - Wireshark filter: ") == len(analysis.findings)
    assert text.count("  - remediation: ") == len(analysis.findings)
    for _, f in analysis.findings.iterrows():
        assert f"`{f['display_filter']}`" in text
    failing = (analysis.findings["severity"].astype(str).map(palette.severity_rank) >= 3).sum()
    assert ("**FAIL**" in text) == bool(failing)


def test_checks_table_lists_observed_cells(analysis):  # noqa: F811
    text = markdown.build_markdown(analysis)
    results = _model.check_results(analysis)
    observed = results[results["status"] != "not-observed"]
    section = text.split("## Checks per path")[1].split("## Findings")[0]
    assert len(re.findall(r"^\| [a-z-]+ \| [a-z-]+ \| ", section, re.M)) - 1 == len(observed)


def test_wire_text_cannot_break_the_table():
    a = public_analysis()
    findings = a.findings.copy()
    findings["message"] = findings["message"].astype("string")
    findings.loc[findings.index[0], "message"] = "a | b <script>x</script> [link](http://evil) `code`"
    text = markdown.build_markdown(dataclasses.replace(a, findings=findings))
    line = next(l for l in text.splitlines() if "evil" in l)
    assert "<script>" not in text and "\\|" in line and "\\[link\\]" in line

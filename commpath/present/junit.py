"""JUnit XML: one test case per documented path x check, so CI systems show the verdicts natively.

A test case's failure or system-out text lists at most ``MAX_FINDINGS`` findings (of ``_html_path``,
as the HTML report), worst first, then a line counting the others (all are in report.json and
findings.parquet); counts and messages keep the totals. Texts are made only for the findings listed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from . import _catalog, _model, _run_view, palette
from ._html_path import MAX_FINDINGS


def build_junit(analysis, fail_on: str = "high") -> str:
    """testsuites > one testsuite per path > one testcase per applicable check.

    Cells that fail under the policy, or hold a finding at or above ``fail_on`` (the exit-code
    threshold), become <failure>; ``not-observed`` / ``not-observable`` cells <skipped>; other
    cells with findings pass with the findings in <system-out>.
    """
    keys = _model.finding_keys(analysis)       # no finding's text is made for counts and tables
    results = _model.check_results(analysis)
    gate = palette.severity_rank(fail_on)
    failing = (results["status"] == "fail") | (results["severity"].map(palette.severity_rank) >= gate)
    results = results.assign(status=results["status"].where(~failing, "fail"))
    root = ET.Element("testsuites", name="commpath", tests=str(len(results)),
                      failures=str(int((results["status"] == "fail").sum())), errors="0",
                      skipped=str(int(results["status"].isin(["not-observed", "not-observable"]).sum())))
    run = _run_suite(analysis, fail_on)
    root.insert(0, run)
    root.set("tests", str(int(root.get("tests")) + 1))
    root.set("failures", str(int(root.get("failures")) + int(run.get("failures"))))
    cells = _model.worst_first(keys, by_check=True)        # (path, check) -> its findings, worst first
    texts = _model.rows_at(analysis, [g[:MAX_FINDINGS] for g in cells.values()])
    for pid in _model.sorted_paths(results["path"]):
        rows = results[results["path"] == pid]
        suite = ET.SubElement(root, "testsuite", name=pid, tests=str(len(rows)),
                              failures=str(int((rows["status"] == "fail").sum())), errors="0",
                              skipped=str(int(rows["status"].isin(["not-observed", "not-observable"]).sum())))
        for r in rows.to_dict("records"):
            case = ET.SubElement(suite, "testcase", classname=f"commpath.{pid}", name=str(r["check"]))
            mine = cells.get((pid, str(r["check"])), [])
            detail = "\n\n".join(_finding_text(texts[i]) for i in mine[:MAX_FINDINGS])
            if len(mine) > MAX_FINDINGS:
                detail += (f"\n\n{len(mine) - MAX_FINDINGS} more finding(s) not listed here; all {len(mine)} are in "
                           "report.json and findings.parquet.")
            if r["status"] == "fail":
                failure = ET.SubElement(case, "failure", type=str(r["severity"]),
                                        message=f"{len(mine)} finding(s), worst {r['severity']}: "
                                                + _model.text(texts[mine[0]]["message"]))
                failure.text = detail
            elif r["status"] == "not-observed":
                ET.SubElement(case, "skipped", message="path not observed in the captures")
            elif r["status"] == "not-observable":
                ET.SubElement(case, "skipped", message="not observable: certificates encrypted (TLS 1.3) and no key log")
            elif detail:
                ET.SubElement(case, "system-out").text = detail
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _run_suite(analysis, fail_on: str) -> ET.Element:
    """The run verdict as the first test case, the run's evidence as the suite's properties: an
    inconclusive run is a failure (never a green pass without evidence)."""
    verdict = _run_view.run_verdict(analysis, fail_on)
    failed = verdict["verdict"] in ("fail", "inconclusive")
    suite = ET.Element("testsuite", name="run", tests="1", failures=str(int(failed)), errors="0", skipped="0")
    props = ET.SubElement(suite, "properties")
    for label, value in [("verdict", verdict["verdict"]), *_run_view.coverage_rows(analysis)]:
        ET.SubElement(props, "property", name=label, value=value)
    case = ET.SubElement(suite, "testcase", classname="commpath.run", name="run-verdict")
    if failed:
        ET.SubElement(case, "failure", type=verdict["verdict"], message=f"{verdict['verdict']}: {verdict['reason']}").text = \
            "\n".join(f"{label}: {value}" for label, value in _run_view.coverage_rows(analysis))
    else:
        ET.SubElement(case, "system-out").text = verdict["reason"]
    return suite


def _finding_text(f) -> str:
    frames = ", ".join(str(int(x)) for x in _model.as_list(f["frames"])[:50])
    return (f"[{_model.text(f['severity'])}] {_model.text(f['check'])}: {_model.text(f['message'])}\n"
            f"capture: {_model.text(f['capture'])}  frames: {frames}\n"
            f"display filter: {_model.text(f['display_filter'])}\n"
            f"remediation: {_model.text(f['remediation'])}\n"
            f"reference: {_catalog.reference_url(_model.text(f['reference']))}"
            + "".join(f"\ncontrol: {_model.control_label(c)}" for c in _model.controls_of(f["check"]))
            + (f"\nsuppressed until {_model.text(f.get('suppression_expires'))}: {_model.text(f.get('suppression_reason'))}"
               if bool(f.get("suppressed", False)) else ""))

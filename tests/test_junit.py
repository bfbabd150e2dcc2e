"""JUnit XML: one test case per documented path x applicable check, failures where the checks fail."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from commpath.present import _model, _run_view, junit, palette
from test_present_data import analysis  # noqa: F401

RUN = "run"


def _run_failed(root) -> int:
    run = next(s for s in root.iter("testsuite") if s.get("name") == RUN)
    return int(run.find("testcase").find("failure") is not None)


def test_one_testcase_per_path_and_check(analysis):  # noqa: F811
    root = ET.fromstring(junit.build_junit(analysis))
    results = _model.check_results(analysis)
    cases = [(s.get("name"), c.get("name")) for s in root.iter("testsuite") for c in s.iter("testcase")
             if s.get("name") != RUN]
    assert sorted(cases) == sorted(zip(results["path"], results["check"]))
    assert len(set(cases)) == len(cases)
    assert int(root.get("tests")) == len(results) + 1   # and the run verdict
    for case_suite in root.iter("testsuite"):
        assert all(c.get("classname") == f"commpath.{case_suite.get('name')}" for c in case_suite.iter("testcase"))


def test_failures_and_skips_follow_the_matrix(analysis):  # noqa: F811
    root = ET.fromstring(junit.build_junit(analysis, fail_on="high"))
    results = _model.check_results(analysis).set_index(["path", "check"])
    failures = 0
    for suite in root.iter("testsuite"):
        if suite.get("name") == RUN:
            continue
        for case in suite.iter("testcase"):
            row = results.loc[(suite.get("name"), case.get("name"))]
            failed = case.find("failure") is not None
            expected = row["status"] == "fail" or (row["severity"] and palette.severity_rank(row["severity"]) >= 3)
            assert failed == bool(expected)
            failures += failed
            if row["status"] in ("not-observed", "not-observable") and not failed:
                assert case.find("skipped") is not None
            if failed:
                f = case.find("failure")
                mine = analysis.findings[(analysis.findings["path"].astype(str) == suite.get("name"))
                                         & (analysis.findings["check"].astype(str) == case.get("name"))]
                assert f.get("type") == row["severity"]
                for _, finding in mine.iterrows():
                    assert str(finding["display_filter"]) in f.text
    assert int(root.get("failures")) == failures + _run_failed(root)


def test_fail_on_lowers_the_gate(analysis):  # noqa: F811
    strict = ET.fromstring(junit.build_junit(analysis, fail_on="info"))
    lenient = ET.fromstring(junit.build_junit(analysis, fail_on="critical"))
    assert int(strict.get("failures")) >= int(lenient.get("failures"))
    cells_with_findings = int((_model.check_results(analysis)["findings"] > 0).sum())
    assert int(strict.get("failures")) == cells_with_findings + _run_failed(strict)


def test_the_run_verdict_comes_first_with_its_evidence(analysis):  # noqa: F811
    root = ET.fromstring(junit.build_junit(analysis))
    run = root.find("testsuite")
    assert run.get("name") == RUN
    props = {p.get("name"): p.get("value") for p in run.iter("property")}
    verdict = _run_view.run_verdict(analysis)
    assert props["verdict"] == verdict["verdict"]
    assert {"inventory", "CA bundle", "TLS key log", "hosts", "capture filter"} <= set(props)
    failure = run.find("testcase").find("failure")
    # fail and inconclusive are never shown as a passing test
    assert (failure is not None) == (verdict["verdict"] in ("fail", "inconclusive"))
    if failure is not None:
        assert failure.get("type") == verdict["verdict"]

"""Markdown and JUnit list at most MAX_FINDINGS findings per path / path x check, worst first, with the
totals kept in counts and messages and a note where the rest are; the texts of all findings are never made.

The captures are written here: N SYN-only connections (one finding each), as benchmarks/make_syn_capture.py
writes them for the benchmarks.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import types
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

import commpath
from commpath.check.finding_set import FindingSet
from commpath.present import _model, junit, markdown, palette
from commpath.present._html_path import MAX_FINDINGS
from test_present_data import REPO, analysis  # noqa: F401

N = 2 * MAX_FINDINGS + 50       # more than MAX_FINDINGS on the path, and on each of two checks below
NOTE = "all of them are in report.json and findings.parquet."


def _syn_module():
    spec = importlib.util.spec_from_file_location("make_syn_capture", REPO / "benchmarks/make_syn_capture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _syn_analysis(folder, n: int = N):
    syn = _syn_module()
    path = folder / f"syn-{n}.pcap"
    syn.write_pcap(path, syn.syn_frames(n, n, "192.0.2.10", 6443))
    return commpath.open(path)


@pytest.fixture
def compact(tmp_path, monkeypatch):
    """The SYN analysis as commpath.open leaves it (findings' texts not made), and FindingSet.frame (all
    the texts at once) made to fail."""
    a = _syn_analysis(tmp_path)

    def all_texts(self):
        raise AssertionError("every finding's text was made")
    monkeypatch.setattr(FindingSet, "frame", all_texts)
    return a


@pytest.fixture
def mixed(tmp_path):
    """The SYN analysis with its findings spread over two checks (categories not in alphabetical order)
    and four severities, so that worst first is not the table's order."""
    a = _syn_analysis(tmp_path)
    f = a.findings.copy()
    i = np.arange(len(f))
    f["check"] = pd.Categorical(np.where(i % 2, "tls-required", "unclassified-flow"),
                                categories=["unclassified-flow", "tls-required"])
    levels = ["info", "low", "medium", "high"]
    f["severity"] = pd.Categorical([levels[k] for k in (i // 2) % 4], categories=f["severity"].cat.categories,
                                   ordered=True)
    return dataclasses.replace(a, findings=f)


def _listed_filters(text: str) -> list[str]:
    return re.findall(r"^  - Wireshark filter: `(.*)`$", text, re.M)


def test_markdown_lists_the_first_max_findings_of_a_path_with_the_total(compact):
    keys = _model.finding_keys(compact)
    (pid,) = set(keys["path"].astype(str))
    text = markdown.build_markdown(compact)
    assert f" · {N} findings · " in text
    row = re.search(rf"^\| {re.escape(pid)} \| .*$", text, re.M).group(0)
    assert f"| {N} |" in row                                 # the verdict table counts them all
    section = text.split(f"### {markdown.cell(pid)}\n")[1]
    assert len(_listed_filters(section)) == MAX_FINDINGS
    assert section.count("\n- **") == MAX_FINDINGS
    note = f"*First {MAX_FINDINGS} of {N} findings shown, worst first; {NOTE}*"
    # a paragraph of its own: a line right after a list item would continue the item
    assert f"\n\n{note}\n" in section
    assert text.count("First ") == 1


def test_junit_lists_the_first_max_findings_of_a_cell_with_the_total(compact):
    keys = _model.finding_keys(compact)
    (pid,) = set(keys["path"].astype(str))
    (check,) = set(keys["check"].astype(str))
    root = ET.fromstring(junit.build_junit(compact))
    suites = list(root.iter("testsuite"))
    assert int(root.get("tests")) == sum(int(s.get("tests")) for s in suites)
    case = next(c for s in suites if s.get("name") == pid for c in s.iter("testcase") if c.get("name") == check)
    out = case.find("failure") if case.find("failure") is not None else case.find("system-out")
    assert out is not None
    if out.tag == "failure":
        assert out.get("message").startswith(f"{N} finding(s), worst ")
    assert out.text.count("display filter: ") == MAX_FINDINGS
    assert out.text.endswith(f"\n\n{N - MAX_FINDINGS} more finding(s) not listed here; all {N} are in report.json "
                             "and findings.parquet.")


def test_markdown_shows_the_worst_first_as_findings_of_orders_them(mixed):
    pid = str(mixed.findings["path"].iloc[0])
    text = markdown.build_markdown(mixed)
    expected = _model.findings_of(mixed, pid).head(MAX_FINDINGS)
    assert _listed_filters(text) == [str(v) for v in expected["display_filter"]]
    severities = re.findall(r"^- \*\*(\w+)\*\* ", text, re.M)
    assert severities == [str(s) for s in expected["severity"]]
    ranks = [["info", "low", "medium", "high"].index(s) for s in severities]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] == 3 and ranks[-1] < 3
    assert f"*First {MAX_FINDINGS} of {N} findings shown, worst first; {NOTE}*" in text


def test_junit_cells_show_their_worst_first_and_keep_the_totals(mixed):
    root = ET.fromstring(junit.build_junit(mixed))
    pid = str(mixed.findings["path"].iloc[0])
    ordered = _model.findings_of(mixed, pid)
    suite = next(s for s in root.iter("testsuite") if s.get("name") == pid)
    seen = 0
    for check in ("unclassified-flow", "tls-required"):
        mine = ordered[ordered["check"].astype(str) == check]
        assert len(mine) > MAX_FINDINGS
        failure = next(c for c in suite.iter("testcase") if c.get("name") == check).find("failure")
        assert failure.get("message") == f"{len(mine)} finding(s), worst high: {mine['message'].iloc[0]}"
        listed = re.findall(r"^display filter: (.*)$", failure.text, re.M)
        assert listed == [str(v) for v in mine["display_filter"].head(MAX_FINDINGS)]
        assert failure.text.endswith(f"{len(mine) - MAX_FINDINGS} more finding(s) not listed here; all {len(mine)} "
                                     "are in report.json and findings.parquet.")
        seen += len(mine)
    assert seen == N


def test_worst_first_orders_as_findings_of(analysis):  # noqa: F811
    """The bundled and public runs: each path's positions in the order of _model.findings_of."""
    keys = _model.finding_keys(analysis)
    groups = _model.worst_first(keys)
    findings = analysis.findings
    assert set(groups) == set(findings["path"].astype(str))
    for pid in groups:
        expected = findings.index.get_indexer(_model.findings_of(analysis, pid).index)
        assert groups[pid].tolist() == expected.tolist()
    cells = _model.worst_first(keys, by_check=True)
    assert sum(len(v) for v in cells.values()) == len(findings)
    for (pid, check), positions in cells.items():
        assert set(findings["check"].astype(str).iloc[positions]) == {check}
        assert positions.tolist() == [p for p in groups[pid].tolist() if p in set(positions.tolist())]


def test_worst_first_leaves_out_findings_without_a_path_or_check():
    keys = pd.DataFrame({"check": pd.Categorical(["b", "a", None, "a", "b"], categories=["b", "a"]),
                         "severity": pd.Categorical(["low", "high", "high", "low", "low"],
                                                    categories=list(palette.SEVERITY_ORDER), ordered=True),
                         "path": ["p", None, "p", "p", "q"]})
    groups = {k: v.tolist() for k, v in _model.worst_first(keys).items()}
    # high first; among the lows, check "b" before "a" (the categories' order, as sort_values has it)
    assert groups == {"p": [2, 0, 3], "q": [4]}
    as_model = types.SimpleNamespace(findings=keys)
    assert groups["p"] == _model.findings_of(as_model, "p").index.tolist()
    cells = {k: v.tolist() for k, v in _model.worst_first(keys, by_check=True).items()}
    assert cells == {("p", "b"): [0], ("p", "a"): [3], ("q", "b"): [4]}

"""Baselines: suppressions (validated YAML, reason and expiry) honoured by report and --fail-on;
`commpath diff OLD NEW` by finding fingerprint."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from commpath import cli
from commpath._pipeline import write_outputs
from commpath.check.suppress import apply, load_suppressions
from commpath.errors import InputError
from commpath.present import _model, diff
from test_present_data import CAPTURES, lab_analysis, lab_scenarios

needs_lab = pytest.mark.skipif(not {"broken", "default"} <= set(lab_scenarios()), reason="bundled lab captures missing")
TOMORROW = (dt.date.today() + dt.timedelta(days=2)).isoformat()
YESTERDAY = (dt.date.today() - dt.timedelta(days=2)).isoformat()


def _write(tmp_path, text: str):
    path = tmp_path / "suppress.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("entry, complaint", [
    ("- {check: tls-required, expires: 2030-01-01}", "needs a reason"),
    ("- {check: tls-required, reason: ok}", "needs an expiry date"),
    ("- {check: no-such-check, reason: ok, expires: 2030-01-01}", "unknown check"),
    ("- {check: tls-required, path: nowhere, reason: ok, expires: 2030-01-01}", "unknown path"),
    ("- {fingerprint: zz, reason: ok, expires: 2030-01-01}", "hex fingerprint"),
    ("- {reason: ok, expires: 2030-01-01}", "either a fingerprint or a check"),
    ("- {check: tls-required, reason: ok, expires: soon}", "expiry date"),
    ("- {check: tls-required, reason: ok, expires: 2030-01-01, owner: me}", "owner"),
])
def test_bad_suppressions_name_file_line_and_reason(tmp_path, entry, complaint):
    path = _write(tmp_path, f"apiVersion: commpath/v1\nkind: Suppressions\nsuppressions:\n  {entry}\n")
    with pytest.raises(InputError) as exc:
        load_suppressions(path)
    assert str(exc.value).startswith(f"{path}:4") and complaint in str(exc.value)


@needs_lab
def test_suppressions_mark_but_keep_findings_and_expire(tmp_path):
    analysis = lab_analysis("broken")
    fps = _model.finding_fingerprints(analysis)
    high = [i for i, s in enumerate(analysis.findings["severity"].astype(str)) if s == "high"]
    path = _write(tmp_path, "suppressions:\n"
                  f"  - {{fingerprint: {fps[high[0]]}, reason: accepted until the kubelet CA rollout, expires: {TOMORROW}}}\n"
                  f"  - {{check: kubelet-readonly-port, reason: old entry, expires: {YESTERDAY}}}\n")
    marked, notes = apply(analysis.findings.assign(fingerprint=fps), load_suppressions(path))
    assert len(marked) == len(analysis.findings)
    assert marked["suppressed"].tolist() == [i == high[0] for i in range(len(marked))]
    assert marked["suppression_reason"].iloc[high[0]] == "accepted until the kubelet CA rollout"
    assert any("expired" in n and YESTERDAY in n for n in notes)


@needs_lab
def test_report_with_every_high_finding_suppressed_is_not_a_failure(tmp_path, capsys):
    analysis = lab_analysis("broken")
    checks = sorted({(str(f["check"]), str(f["path"])) for _, f in analysis.findings.iterrows()
                     if str(f["severity"]) in ("high", "critical")})
    path = _write(tmp_path, "suppressions:\n" + "".join(
        f"  - {{check: {c}, path: {p}, reason: risk accepted, expires: {TOMORROW}}}\n" for c, p in checks))
    folder = CAPTURES / "broken"
    code = cli.main(["report", str(folder), "--inventory", str(folder / "inventory.yaml"), "--suppress", str(path),
                     "--format", "json", "--format", "md", "--format", "sarif", "-o", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"({sum(1 for _, f in analysis.findings.iterrows() if str(f['severity']) == 'high')} suppressed)" in err
    sarif_doc = json.loads((tmp_path / "r.sarif").read_text())
    suppressed = [r for r in sarif_doc["runs"][0]["results"] if r.get("suppressions")]
    assert suppressed and all(r["suppressions"][0]["justification"].startswith("risk accepted") for r in suppressed)
    assert "suppressed" in (tmp_path / "r.md").read_text()


@needs_lab
def test_diff_of_two_runs(tmp_path, capsys):
    write_outputs(lab_analysis("default"), tmp_path / "old")
    write_outputs(lab_analysis("broken"), tmp_path / "new")
    code = cli.main(["diff", str(tmp_path / "old"), str(tmp_path / "new"), "--format", "json"])
    result = json.loads(capsys.readouterr().out)
    old = diff.load_report(tmp_path / "old")
    new = diff.load_report(tmp_path / "new")
    old_fp = {f["fingerprint"] for f in old["findings"]}
    new_fp = {f["fingerprint"] for f in new["findings"]}
    assert {f["fingerprint"] for f in result["new"]} == new_fp - old_fp
    assert {f["fingerprint"] for f in result["fixed"]} == old_fp - new_fp
    assert {f["fingerprint"] for f in result["unchanged"]} == old_fp & new_fp
    assert result["new"], "the broken run adds findings"
    changed = {c["path"]: (c["old"], c["new"]) for c in result["path_changes"]}
    old_v = {p["id"]: p["verdict"] for p in old["paths"]}
    new_v = {p["id"]: p["verdict"] for p in new["paths"]}
    assert changed == {p: (old_v.get(p), new_v.get(p)) for p in {*old_v, *new_v} if old_v.get(p) != new_v.get(p)}
    worst = max(["info", "low", "medium", "high", "critical"].index(f["severity"]) for f in result["new"])
    assert code == (1 if worst >= 3 else 0)
    # the same run against itself: nothing new, nothing fixed, exit 0; a report.json file works as well
    assert cli.main(["diff", str(tmp_path / "new" / "report.json"), str(tmp_path / "new")]) == 0
    text = capsys.readouterr().out
    assert "new: 0" in text and "fixed: 0" in text and f"unchanged: {len(new_fp)}" in text


def test_diff_of_a_non_report_is_exit_2(tmp_path, capsys):
    (tmp_path / "x.json").write_text("{}")
    assert cli.main(["diff", str(tmp_path / "x.json"), str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.json" in err[0] and "not a commpath report.json" in err[0]

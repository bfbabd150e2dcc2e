"""report.json read a key at a time, arrays an element at a time (`present/_json_stream`): what json.load reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import commpath
from commpath._pipeline import write_outputs
from commpath.present import _json_stream
from commpath.present._json_stream import read_sections
from commpath.present.diff import FINDING_KEYS, load_report

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "run"
    broken = ROOT / "captures" / "broken"
    write_outputs(commpath.open(broken, inventory=broken / "inventory.yaml"), out)
    return out


@pytest.mark.parametrize("window", [1, 7, 64, 1 << 22])
def test_every_key_read_as_json_load_reads_it_whatever_the_window(report, monkeypatch, window):
    monkeypatch.setattr(_json_stream, "WINDOW", window)       # values cut anywhere, numbers included
    want = json.loads((report / "report.json").read_text())
    assert read_sections(report / "report.json") == want
    flows = []
    got = read_sections(report / "report.json", each={"flows": lambda f: flows.append(f) or f["flow_id"]},
                        keep={"paths"})
    assert set(got) == {"flows", "paths"} and got["paths"] == want["paths"]
    assert flows == want["flows"] and got["flows"] == [f["flow_id"] for f in want["flows"]]


def test_numbers_literals_and_nesting_at_window_edges(tmp_path, monkeypatch):
    doc = {"a": 12345678901234567890, "b": [1.5e-7, -0.0, True, False, None, 'x"]y', {"c": [[], {}]}],
           "d": "é ☃ 𝄞", "e": [], "f": {}, "g": 7}
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc, indent=3, ensure_ascii=False), encoding="utf-8")
    for window in range(1, 12):
        monkeypatch.setattr(_json_stream, "WINDOW", window)
        assert read_sections(path) == doc
        assert read_sections(path, keep={"g"}) == {"g": 7}
        assert read_sections(path, each={"b": lambda v: v if v is not None else None}, keep=set()) == \
            {"b": [1.5e-7, -0.0, True, False, 'x"]y', {"c": [[], {}]}]}


@pytest.mark.parametrize("text", ['{"a": [1, 2', '{"a": 1,}', '[1, 2]', '{"a": 1} x', '{"a" 1}', '', '{"a": tru}'])
def test_what_is_not_one_json_object_is_a_value_error(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError):
        read_sections(path)


def test_diff_reads_what_the_whole_report_says_of_the_findings(report):
    whole = load_report(report)
    slim = load_report(report, whole=False)
    assert "flows" not in slim and len(slim["findings"]) == len(whole["findings"]) > 0
    assert slim["findings"] == [{k: f[k] for k in FINDING_KEYS if k in f} for f in whole["findings"]]
    assert {k: v for k, v in slim.items() if k != "findings"} == \
        {k: v for k, v in whole.items() if k not in ("findings", "flows")}

"""Findings kept compact (texts made a batch at a time) read and write exactly as the whole DataFrame does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import commpath
from commpath._pipeline import write_outputs
from commpath.check import FindingSet, findings as findings_module
from commpath.present.report_json import report_text

ROOT = Path(__file__).resolve().parents[1]
BROKEN = ROOT / "captures" / "broken"


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 3 findings: a few dozen findings make many batches, as a million do."""
    monkeypatch.setattr(findings_module, "GROUP_BATCH", 3)


def _open(**kwargs):
    return commpath.open(BROKEN, inventory=BROKEN / "inventory.yaml", ca=BROKEN / "pki/ca.crt", **kwargs)


def test_batches_put_together_are_the_whole_frame(small_blocks):
    analysis = _open()
    compact = analysis.finding_set
    batches = list(compact.batches())
    assert len(batches) > 3, "the fixture should make several batches"
    whole = compact.frame()
    joined = pd.concat(batches, ignore_index=True)
    assert list(joined.dtypes.astype(str)) == list(whole.dtypes.astype(str))
    for a, b in zip(batches, batches[1:]):          # every batch typed as the whole table
        assert a.dtypes.equals(b.dtypes)
    pd.testing.assert_frame_equal(joined, whole)
    assert len(compact) == len(whole) == int(compact.keys_frame()["count"].size)
    assert compact.keys_frame()["severity"].astype(str).tolist() == whole["severity"].astype(str).tolist()


def test_analysis_findings_are_made_once_and_replaceable(small_blocks):
    analysis = _open()
    assert len(analysis.finding_set) > 0
    counts = analysis.summary()["findings"]
    frame = analysis.findings
    assert analysis.findings is frame                       # made on first use, then kept
    assert isinstance(frame["severity"].dtype, pd.CategoricalDtype) and frame["severity"].dtype.ordered
    assert counts == analysis.summary()["findings"]
    assert len(analysis.finding_set) == len(frame)
    analysis.findings = frame.iloc[:2].copy()               # what a suppressions file does: a new frame
    assert len(analysis.findings) == 2 and len(analysis.finding_set) == 2


def test_outputs_written_in_batches_equal_those_of_the_whole_frame(small_blocks, tmp_path):
    lazy, whole = _open(), _open()
    whole.findings                                           # texts made: the writers read one DataFrame
    text = report_text(lazy)
    assert text == report_text(whole)
    assert json.loads(text)["findings"]
    write_outputs(lazy, tmp_path / "lazy")
    write_outputs(whole, tmp_path / "whole")
    assert (tmp_path / "lazy/report.json").read_bytes() == (tmp_path / "whole/report.json").read_bytes()
    batched = pq.read_table(tmp_path / "lazy/findings.parquet")
    assert pq.ParquetFile(tmp_path / "lazy/findings.parquet").metadata.num_row_groups > 1
    assert batched.equals(pq.read_table(tmp_path / "whole/findings.parquet"))
    assert batched.schema.equals(pq.read_table(tmp_path / "whole/findings.parquet").schema, check_metadata=True)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "lazy/findings.parquet"),
                                  pd.read_parquet(tmp_path / "whole/findings.parquet"))


def test_evaluate_returns_a_dataframe_unless_asked_for_the_compact_set():
    analysis = _open()
    from commpath.check import evaluate
    frame, _ = evaluate(analysis.flows, analysis.tls, analysis.certs, analysis.policy, analysis.inventory)
    compact, _ = evaluate(analysis.flows, analysis.tls, analysis.certs, analysis.policy, analysis.inventory,
                          compact=True)
    assert isinstance(frame, pd.DataFrame) and isinstance(compact, FindingSet)
    pd.testing.assert_frame_equal(compact.frame(), frame)


def test_no_findings_still_write_an_empty_findings_table(tmp_path):
    analysis = _open()
    analysis.findings = analysis.findings.iloc[:0].copy()
    write_outputs(analysis, tmp_path)
    back = pd.read_parquet(tmp_path / "findings.parquet")
    assert len(back) == 0 and list(back.columns) == list(analysis.findings.columns)
    assert json.loads((tmp_path / "report.json").read_text())["findings"] == []


def test_fingerprints_kept_as_digests_read_as_their_hex_text():
    import hashlib

    import numpy as np
    keys = [b"a", b"tls-required\x1fnode-to-apiserver\x1f10.0.0.2\x1f10.0.0.1\x1f6443", b""]
    digests = np.frombuffer(b"".join(hashlib.sha256(k).digest()[:16] for k in keys), np.uint8)
    assert findings_module._hex(digests).to_pylist() == [hashlib.sha256(k).hexdigest()[:32] for k in keys]


def _many():
    """A run with findings of several checks and severities on one path (captures/default: 23)."""
    default = ROOT / "captures" / "default"
    return commpath.open(default, inventory=default / "inventory.yaml")


def test_rows_are_those_of_the_whole_frame_made_from_their_blocks_only(small_blocks, monkeypatch):
    analysis = _many()
    compact = analysis.finding_set
    whole = compact.frame()
    assert len(whole) >= 10 and len(compact._blocks) >= 4
    made = []
    original = compact._batch
    monkeypatch.setattr(compact, "_batch", lambda i: made.append(i) or original(i))
    picked = [len(whole) - 1, 0, 4, 5]                  # any order, across blocks
    got = compact.rows(picked)
    pd.testing.assert_frame_equal(got, whole.iloc[picked])
    holding = {int(np.searchsorted(compact._stops, p, side="right")) for p in picked}
    assert sorted(made) == sorted(holding) and len(holding) < len(compact._blocks)
    assert len(compact.rows([])) == 0


@pytest.mark.parametrize("limit", [1, 2, 5, 1000])
def test_a_paths_shown_findings_are_the_head_of_all_and_each_checks_first(small_blocks, limit):
    from commpath.present import _model
    analysis = _many()
    everything_of = _many().findings                                 # every text made, then ordered per path
    whole = type("Whole", (), {"findings": everything_of})()
    paths = dict.fromkeys(p for p, _ in _model.finding_pairs(analysis))
    assert any(_model.finding_count(analysis, p) > 2 for p in paths)
    for pid in paths:
        shown = _model.findings_of(analysis, pid, limit=limit)       # texts made for these rows only
        assert analysis.finding_set.compact
        everything = _model.findings_of(whole, pid)
        assert _model.finding_count(analysis, pid) == len(everything)
        firsts = set(everything.index[~everything["check"].astype(str).duplicated().to_numpy()])
        want = [i for n, i in enumerate(everything.index) if n < limit or i in firsts]
        pd.testing.assert_frame_equal(shown, everything.loc[want])

"""Findings kept compact (texts made a batch at a time) read and write exactly as the whole DataFrame does."""

from __future__ import annotations

import json
from pathlib import Path

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

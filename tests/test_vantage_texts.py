"""report.json's vantage points written from one Arrow conversion: the same text as from the Python values."""

from __future__ import annotations

import json
import math

import pandas as pd
import pyarrow as pa
import pytest

from commpath.present import _json_columns
from commpath.present._json_columns import flow_records, vantage_arrow_of
from commpath.present.report_json import VANTAGE_KEYS


def _vp(host="node-1", capture="node-1/eth0.pcap", flow_id=7, first_frame=3, ts_start=1700000000.25):
    return {"host": host, "capture": capture, "flow_id": flow_id, "first_frame": first_frame, "ts_start": ts_start}


def _text(cells, vantage_arrow=None) -> str:
    """The records' text: from ``vantage_arrow`` when given, else from the Python values (flow_records
    would convert them to Arrow itself: that conversion is turned off here)."""
    flows = pd.DataFrame({"flow_id": range(len(cells)), "vantage_points": pd.Series(cells, dtype=object)})
    with pytest.MonkeyPatch.context() as mp:
        if vantage_arrow is None:
            mp.setattr(_json_columns, "vantage_arrow_of", lambda cells: None)
        body = b"".join(b.to_pybytes() for b in flow_records(flows, ["flow_id"], VANTAGE_KEYS, vantage_arrow))
    return body.decode("utf-8")


def _as_json(cells) -> list:
    """What the records say, read back: each vantage point as json.dumps wrote its value."""
    def clean(v):
        return None if isinstance(v, float) and math.isnan(v) else v
    return [[{k: clean(vp.get(k)) for k in VANTAGE_KEYS} for vp in (c if isinstance(c, list) else [])] for c in cells]


CASES = {
    "one and two views": [[_vp()], [_vp(), _vp("cp-1", "cp-1/eth0.pcap", 9, 4, 1700000000.5)]],
    "empty and missing cells": [[], None, [_vp()], [], None],
    "text to escape, unicode": [[_vp('nod"e\\\\1', "dir/é ☃.pcap")]],
    "a key missing in one view": [[_vp()], [{k: v for k, v in _vp().items() if k != "first_frame"}]],
    "NaN and None values": [[_vp(ts_start=float("nan"))], [_vp(host=None, flow_id=None)]],
    "every cell empty": [[], [], None],
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("batch", [1, 2, 4096])
def test_arrow_texts_are_the_python_values_texts(name, batch, monkeypatch):
    monkeypatch.setattr(_json_columns, "BATCH", batch)          # batches cut between any two cells
    cells = CASES[name]
    arrow = vantage_arrow_of(pd.Series(cells, dtype=object))
    assert arrow is not None
    by_arrow, by_python = _text(cells, arrow), _text(cells)
    assert by_arrow == by_python
    records = json.loads("[" + by_arrow + "]")
    assert [r["vantage_points"] for r in records] == _as_json(cells)


@pytest.mark.parametrize("cells", [
    [[_vp(ts_start=1.5)], [_vp(ts_start=2)]],        # an int among floats: Arrow would write 2.0
    [[_vp(ts_start=1.5)], [_vp(ts_start=True)]],     # a bool among floats
    [[_vp(flow_id=1)], [_vp(flow_id=True)]],         # Arrow refuses a bool among ints
    [[{"host": "a", "extra": {"nested": 1}}]],       # a value that is not a scalar
    [None, None],                                    # nothing to convert
])
def test_values_arrow_would_write_otherwise_stay_python(cells, monkeypatch):
    monkeypatch.setattr(_json_columns, "BATCH", 1)
    assert vantage_arrow_of(pd.Series(cells, dtype=object)) is None
    text = _text(cells)                               # the Python values' path still writes them
    assert len(json.loads("[" + text + "]")) == len(cells)


@pytest.mark.parametrize("cells", [[[_vp()], ("a", "tuple")], [[_vp()], ["not a dict"]], [[_vp(flow_id=1 << 70)]]])
def test_cells_that_are_not_lists_of_dicts_are_not_converted(cells):
    assert vantage_arrow_of(pd.Series(cells, dtype=object)) is None


def test_flows_parquet_stores_the_same_array_arrow_makes(tmp_path):
    """write_outputs hands the converted array to the Parquet writer: the file is the one Arrow's own
    conversion of the frame writes, byte for byte."""
    from commpath._pipeline import _write_parquet
    cells = CASES["one and two views"] * 50 + CASES["empty and missing cells"]
    flows = pd.DataFrame({"flow_id": range(len(cells)), "vantage_points": pd.Series(cells, dtype=object)})
    arrow = vantage_arrow_of(flows["vantage_points"])
    _write_parquet(flows, tmp_path / "own.parquet")
    _write_parquet(flows, tmp_path / "given.parquet", {"vantage_points": arrow})
    assert (tmp_path / "own.parquet").read_bytes() == (tmp_path / "given.parquet").read_bytes()
    assert isinstance(arrow, pa.Array) and pd.read_parquet(tmp_path / "given.parquet")["vantage_points"].dropna().map(len).sum() == 151

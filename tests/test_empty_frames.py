"""Empty tables: typed as declared, and each caller's own (empty_frame hands out copies of one template)."""

from __future__ import annotations

import pandas as pd

from commpath.check import FINDING_COLUMNS
from commpath.decode.schema import FLOW_COLUMNS, TLS_COLUMNS, empty_frame, pandas_dtype


def test_columns_and_dtypes_are_the_declared_ones():
    for columns in (FLOW_COLUMNS, TLS_COLUMNS, FINDING_COLUMNS):
        df = empty_frame(columns)
        assert list(df.columns) == list(columns) and len(df) == 0
        for name, dtype in columns.items():
            assert df[name].dtype == pd.Series(dtype=pandas_dtype(dtype)).dtype, name


def test_a_caller_changing_its_frame_leaves_the_next_one_alone():
    first = empty_frame(FINDING_COLUMNS)
    first["extra"] = pd.Series(dtype="int64")
    first.index.name = "renamed"
    first.columns.name = "renamed"
    first.attrs["note"] = "mine"
    del first["check"]
    second = empty_frame(FINDING_COLUMNS)
    assert list(second.columns) == list(FINDING_COLUMNS)
    assert second.index.name is None and second.columns.name is None and not second.attrs
    assert second is not empty_frame(FINDING_COLUMNS)


def test_a_declaration_made_by_a_caller_is_honoured_and_kept_apart():
    mine = {"a": "int64", "b": "string"}
    df = empty_frame(mine)
    assert list(df.columns) == ["a", "b"] and str(df["a"].dtype) == "int64"
    mine["c"] = "float64"          # the same dict changed: a new declaration, not the old template
    assert list(empty_frame(mine).columns) == ["a", "b", "c"]

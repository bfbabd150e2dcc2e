"""Reading an ``analyze --out`` folder back gives exactly the tables of the run that wrote it."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

import commpath
from commpath._pipeline import write_outputs
from commpath.classify import CLASSIFY_COLUMNS
from commpath.decode import schema

CAPTURES = Path(__file__).resolve().parents[1] / "captures"
RUNS = sorted(p.name for p in CAPTURES.iterdir() if (p / "inventory.yaml").is_file())
TABLES = ("flows", "tls", "certs", "ssh", "http", "findings", "paths", "captures")


@pytest.mark.parametrize("run", RUNS)
def test_reloaded_output_equals_the_fresh_analysis(run, tmp_path):
    folder = CAPTURES / run
    fresh = commpath.open(folder, inventory=folder / "inventory.yaml", ca=folder / "pki" / "ca.crt",
                          keylog=folder / "keylog.txt" if (folder / "keylog.txt").exists() else None)   # real-*: none
    write_outputs(fresh, tmp_path)
    again = commpath.open(tmp_path, inventory=folder / "inventory.yaml", ca=folder / "pki" / "ca.crt")
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(again, name), getattr(fresh, name), check_exact=True, obj=name)
    assert again.tls_analyzed == fresh.tls_analyzed
    assert again.summary() == fresh.summary()


def test_flow_table_columns_are_the_declared_ones_in_order():
    folder = CAPTURES / RUNS[0]
    a = commpath.open(folder, inventory=folder / "inventory.yaml")
    declared = [*schema.FLOW_COLUMNS, *CLASSIFY_COLUMNS, *schema.MERGED_FLOW_COLUMNS]
    assert list(a.flows.columns[:len(declared)]) == declared
    for name, columns in (("tls", {**schema.TLS_COLUMNS, **schema.TLS_EXTRA}), ("certs", schema.CERT_COLUMNS), ("ssh", schema.SSH_COLUMNS),
                          ("http", schema.HTTP_COLUMNS), ("captures", {**schema.CAPTURE_COLUMNS, **schema.CAPTURE_TIME_COLUMNS})):
        table = getattr(a, name)
        assert list(table.columns) == list(columns), name
        assert {c: str(t) for c, t in table.dtypes.items()} == columns, name


def test_every_declared_column_has_a_comment():
    """One line per column, and each says what the column holds (the declaration is the documentation)."""
    source = Path(schema.__file__).read_text(encoding="utf-8").splitlines()
    for table in ("FLOW_COLUMNS", "CAPTURE_COLUMNS", "FLOW_TIME_COLUMNS", "CAPTURE_TIME_COLUMNS", "TLS_COLUMNS", "TLS_EXTRA", "CERT_COLUMNS", "SSH_COLUMNS", "HTTP_COLUMNS",
                  "MERGED_FLOW_COLUMNS", "OFFSET_COLUMNS"):
        start = next(i for i, line in enumerate(source) if line.startswith(f"{table}: dict[str, str] = {{"))
        end = next(i for i in range(start, len(source)) if source[i] == "}")
        body = [line for line in source[start + 1:end] if not line.strip().startswith("#")]
        assert len(body) == len(getattr(schema, table)), table
        assert [line for line in body if not re.search(r"\S\s+# \S", line)] == [], table

"""CSV export: one file per table (flows, tls, certs, ssh, http, findings, paths, captures, requests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import _model

TABLES = ("flows", "tls", "certs", "ssh", "http", "findings", "paths", "captures", "requests")
#: what json.dumps(value, default=str) is, made once (json.dumps builds an encoder per call when given ``default``)
_ENCODER = json.JSONEncoder(default=str)
#: cells pandas' to_csv formats at once (pandas.io.formats.csvs._DEFAULT_CHUNKSIZE_CELLS): a chunk of
#: that many cells // columns rows shares one precision of its datetimes (seconds, ms, µs or ns)
CSV_CHUNK_CELLS = 100_000
#: nanoseconds per unit, coarsest first
_UNITS = ((1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us"), (1, "ns"))


def _cell(value):
    """A list or dict cell as JSON text (``json.dumps(..., default=str)``), another cell as it is."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return _ENCODER.encode(list(value))
    return _ENCODER.encode(value) if isinstance(value, dict) else value


def _utc_text(column: pd.Series, rows: int) -> pd.Series:
    """A datetime64[ns, UTC] column as the text to_csv writes for it ("2023-11-14 22:13:20.100+00:00"):
    in chunks of ``rows`` rows, each at the coarsest unit that holds all its times (pandas' rule),
    by Arrow's strftime instead of a Timestamp per cell (9 µs each)."""
    ns = column.array.asi8
    known = column.notna().to_numpy(bool)
    times = pa.array(column)
    parts = []
    for start in range(0, len(column), rows):
        values = ns[start:start + rows][known[start:start + rows]]
        unit = next((u for div, u in _UNITS if not (values % div).any()), "ns")
        part = times[start:start + rows].cast(pa.timestamp(unit, tz="UTC"))
        parts.append(pc.strftime(part, format="%Y-%m-%d %H:%M:%S+00:00"))
    return pd.Series(pd.arrays.ArrowExtensionArray(pa.chunked_array(parts, pa.string())), index=column.index)


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    """List and dict cells as JSON text, so every cell is one CSV field, and UTC datetimes as the text
    to_csv makes of them (``df`` itself when it has neither; else a shallow copy with those columns
    replaced)."""
    out = None
    for col in df.columns:
        column = df[col]
        dtype = column.dtype
        if isinstance(dtype, pd.ArrowDtype) and pa.types.is_nested(dtype.pyarrow_dtype):  # Arrow lists: Python's
            values = column.array.__arrow_array__().to_pylist()     # as Series.tolist(), not per scalar
            column = pd.Series([pd.NA if v is None else v for v in values], index=df.index, dtype=object)
        elif isinstance(dtype, pd.DatetimeTZDtype) and dtype.unit == "ns" and str(dtype.tz) == "UTC" and len(df):
            if out is None:
                out = df.copy(deep=False)
            out[col] = _utc_text(column, (CSV_CHUNK_CELLS // len(df.columns)) or 1)
            continue
        elif dtype != object:
            continue
        if out is None:
            out = df.copy(deep=False)
        out[col] = column.map(_cell)
    return df if out is None else out


def _findings_batches(analysis):
    """The findings to write, a batch at a time (``analysis.finding_set``: texts made a block at a
    time), each with its fingerprints; the whole table where the analysis has no finding set, no
    finding, or a batch without the ``fingerprint`` column."""
    findings = getattr(analysis, "finding_set", None)
    if findings is not None and len(findings):
        batches = findings.batches()
        first = next(batches)
        if "fingerprint" in first:      # then in every batch: each is conformed to FINDING_COLUMNS
            yield first
            yield from batches
            return
    df = getattr(analysis, "findings", None)
    if not isinstance(df, pd.DataFrame):
        return
    if len(df):
        df = df.assign(fingerprint=_model.finding_fingerprints(analysis)) if "fingerprint" not in df else df
    yield df


def write_csv_tables(analysis, folder: str | Path) -> dict[str, Path]:
    """``folder``/<table>.csv for each table the analysis has (UTF-8, header row, lists as JSON)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in TABLES:
        path = folder / f"{name}.csv"
        if name == "findings":
            first = True
            for batch in _findings_batches(analysis):
                _flat(batch).to_csv(path, index=False, header=first, mode="w" if first else "a")
                first = False
            if not first:
                written[name] = path
            continue
        df = getattr(analysis, name, None)
        if not isinstance(df, pd.DataFrame):
            continue
        _flat(df).to_csv(path, index=False)
        written[name] = path
    return written


__all__ = ["TABLES", "write_csv_tables"]

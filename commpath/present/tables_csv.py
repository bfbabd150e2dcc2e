"""CSV export: one file per table (flows, tls, certs, ssh, http, findings, paths, captures, requests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from . import _model

TABLES = ("flows", "tls", "certs", "ssh", "http", "findings", "paths", "captures", "requests")


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    """List and dict cells as JSON text, so every cell is one CSV field."""
    out = df.copy()
    for col in out.columns:
        dtype = out[col].dtype
        if isinstance(dtype, pd.ArrowDtype) and pa.types.is_nested(dtype.pyarrow_dtype):  # Arrow lists: Python's
            out[col] = pd.Series(out[col].tolist(), index=out.index, dtype=object)
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: json.dumps(_model.as_list(v) if isinstance(v, (list, tuple, np.ndarray))
                                                         else v, default=str)
                                    if isinstance(v, (list, tuple, np.ndarray, dict)) else v)
    return out


def write_csv_tables(analysis, folder: str | Path) -> dict[str, Path]:
    """``folder``/<table>.csv for each table the analysis has (UTF-8, header row, lists as JSON)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in TABLES:
        df = getattr(analysis, name, None)
        if not isinstance(df, pd.DataFrame):
            continue
        if name == "findings" and len(df):
            df = df.assign(fingerprint=_model.finding_fingerprints(analysis)) if "fingerprint" not in df else df
        path = folder / f"{name}.csv"
        _flat(df).to_csv(path, index=False)
        written[name] = path
    return written


__all__ = ["TABLES", "write_csv_tables"]

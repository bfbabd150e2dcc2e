"""Parquet files that plain ``pandas.read_parquet`` reads back, Arrow-backed nested columns included."""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Iterable
from typing import IO

import pandas as pd


def pandas_readable(table):
    """``table`` with pandas metadata naming ``object`` for the columns whose recorded dtype pandas cannot parse.

    ``pd.ArrowDtype`` of a nested type is recorded as e.g. ``list<item: int64>[pyarrow]``, a name
    ``pandas.read_parquet`` refuses (TypeError) however the file was written; as ``object`` it reads the
    column the way it reads any list column (one array per cell), and the Arrow data is unchanged."""
    raw = (table.schema.metadata or {}).get(b"pandas")
    if raw is None:
        return table
    meta = json.loads(raw)
    changed = False
    for col in meta.get("columns", []):
        name = col.get("numpy_type") or ""
        if not name.endswith("[pyarrow]"):
            continue
        try:
            pd.api.types.pandas_dtype(name)
        except TypeError:
            col["numpy_type"] = "object"
            changed = True
    if not changed:
        return table
    return table.replace_schema_metadata({**table.schema.metadata, b"pandas": json.dumps(meta).encode()})


def write_parquet(df: pd.DataFrame, where: str | Path | IO[bytes]) -> None:
    """``df`` (without its index) as Parquet, readable by ``pandas.read_parquet``; Arrow's conversion errors
    propagate before anything is written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pandas_readable(pa.Table.from_pandas(df, preserve_index=False))
    pq.write_table(table, where)


class ParquetFrames:
    """DataFrames of the same columns and dtypes written one after the other as one Parquet file, a
    row group each (one frame: the file :func:`write_parquet` writes). The file is opened with the
    first frame; a frame's conversion error propagates before anything of it is written."""

    def __init__(self, where: str | Path | IO[bytes]):
        self.where, self.frames, self._writer = where, 0, None

    def write(self, df: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        table = pandas_readable(pa.Table.from_pandas(df, preserve_index=False))
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.where, table.schema)
        self._writer.write_table(table)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> ParquetFrames:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_parquet_frames(frames: Iterable[pd.DataFrame], where: str | Path | IO[bytes]) -> None:
    """``frames`` as one Parquet file (:class:`ParquetFrames`)."""
    with ParquetFrames(where) as out:
        for df in frames:
            out.write(df)

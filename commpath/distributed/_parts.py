"""One capture's tables as Parquet under ``<parts>/host=<host>/capture=<n>/``, complete once ``_SUCCESS`` is there.

A task writes its tables first and the ``_SUCCESS`` marker (the capture's summary, JSON) last, so a
folder left by a worker that died mid-write never looks complete; a retried task rewrites it whole.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd

from ._files import filesystem

TABLES = ("flows", "tls", "certs", "ssh", "http")
MARKER = "_SUCCESS"
#: Hive's name for a missing partition value (captures without a manifest naming their host).
NO_HOST = "__HIVE_DEFAULT_PARTITION__"


def part_dir(parts: str, index: int, host: str | None) -> str:
    safe = str(host).replace("/", "_").replace("=", "_") if host else NO_HOST
    return f"{parts.rstrip('/')}/host={safe}/capture={index:05d}"


def write_part(parts: str, index: int, host: str | None, tables: dict[str, pd.DataFrame], summary: dict,
               storage_options: dict | None = None) -> str:
    """Write one capture's tables, then its marker; returns the folder."""
    folder = part_dir(parts, index, host)
    fs, root = filesystem(folder, storage_options)
    if fs.exists(f"{root}/{MARKER}"):
        fs.rm_file(f"{root}/{MARKER}")          # a retry: incomplete until the new marker is written
    fs.makedirs(root, exist_ok=True)
    import pyarrow as pa
    import pyarrow.parquet as pq
    for name in TABLES:
        buf = io.BytesIO()
        # what DataFrame.to_parquet writes, converted in this thread: a pool of pyarrow's own for a
        # capture's small tables cost more in locks than it saved (24 captures' 120 files: −15 %)
        pq.write_table(pa.Table.from_pandas(tables[name], preserve_index=False, nthreads=1), buf)
        fs.pipe_file(f"{root}/{name}.parquet", buf.getvalue())
    fs.pipe_file(f"{root}/{MARKER}", json.dumps(summary, default=str).encode())
    return folder


def read_part(folder: str, name: str, storage_options: dict | None = None,
              columns: dict[str, str] | None = None) -> pd.DataFrame:
    """One table of one complete capture folder (lists back as lists)."""
    fs, root = filesystem(folder, storage_options)
    if not fs.exists(f"{root}/{MARKER}"):
        raise FileNotFoundError(f"{folder}: no {MARKER} marker: the capture's tables are incomplete")
    with fs.open(f"{root}/{name}.parquet", "rb") as f:
        df = pd.read_parquet(f)
    for col in df.columns:
        if df[col].dtype == object:
            df[col] = pd.Series([v.tolist() if isinstance(v, np.ndarray) else v for v in df[col]],
                                index=df.index, dtype=object)
    return df


def complete_parts(parts: str, storage_options: dict | None = None) -> list[str]:
    """The capture folders below ``parts`` that carry the marker, in capture order."""
    fs, root = filesystem(parts, storage_options)
    protocol = parts.split("://", 1)[0] + "://" if "://" in parts else ""
    found = [p.rsplit("/", 1)[0] for p in fs.glob(f"{root.rstrip('/')}/host=*/capture=*/{MARKER}")]
    return sorted((protocol + p if protocol else p for p in found), key=lambda p: p.rsplit("capture=", 1)[1])


def clear_parts(parts: str, storage_options: dict | None = None) -> None:
    """Remove the capture folders an earlier run left under ``parts`` (only ``host=*`` folders: ours)."""
    fs, root = filesystem(parts, storage_options)
    try:
        stale = fs.glob(f"{root.rstrip('/')}/host=*")
    except (OSError, ValueError):
        return
    for p in stale:
        fs.rm(p, recursive=True)

"""The evidence sources beside the wire that `open` and `analyze` take: a probe folder, host configuration."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .capture.probe_table import PROBE_PARQUET, conform_probe, read_probe_dir
from .errors import InputError


def fact_tables(reloaded: Path | None, probe, host_config) -> dict:
    """The other sources' tables: given (a folder or a DataFrame), else those an analyze folder kept."""
    facts = {}
    if isinstance(probe, pd.DataFrame):
        facts["probe"] = conform_probe(probe)
    elif probe is not None:
        facts["probe"] = read_probe_dir(probe)
    elif reloaded is not None and (reloaded / PROBE_PARQUET).is_file():
        facts["probe"] = read_probe_dir(reloaded)
    if isinstance(host_config, pd.DataFrame):
        facts["config"] = host_config
    elif host_config is not None:
        raise InputError(str(host_config), "host configuration folders are read by `commpath config`; pass its "
                                           "table (a DataFrame) as host_config")
    return facts


__all__ = ["fact_tables"]

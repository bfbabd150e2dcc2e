"""The evidence sources beside the wire that `open` and `analyze` take: a probe folder, host configuration."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .capture.probe_table import PROBE_PARQUET, conform_probe, read_probe_dir
from ._host_config import host_config_table


def fact_tables(reloaded: Path | None, probe, host_config, captures=None, inventory=None, warn=None) -> dict:
    """The other sources' tables: given (a folder or a DataFrame), else those an analyze folder kept; the
    host configuration also from the capture agents' manifests (``captures``)."""
    facts = {}
    if isinstance(probe, pd.DataFrame):
        facts["probe"] = conform_probe(probe)
    elif probe is not None:
        facts["probe"] = read_probe_dir(probe)
    elif reloaded is not None and (reloaded / PROBE_PARQUET).is_file():
        facts["probe"] = read_probe_dir(reloaded)
    config = host_config_table(host_config, captures, reloaded, inventory, warn)
    if config is not None:
        facts["config"] = config
    return facts


__all__ = ["fact_tables"]

"""The ``config`` fact table `open` and `analyze` judge with: given, from the agents' manifests, or kept by analyze."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from .capture.hostconfig import from_folder, from_manifest
from .decode.hostconfig import CONFIG_COLUMNS, config_table
from .decode.merge import manifest_beside
from .decode.schema import conform

CONFIG_PARQUET = "config.parquet"


def _manifest_configs(captures: pd.DataFrame | None) -> list[dict]:
    """The host_config of each capture agent manifest beside the captures (one per manifest)."""
    if captures is None or not len(captures) or "file" not in captures:
        return []
    seen, out = set(), []
    for file in captures["file"].astype(str):
        folder = file.rsplit("/", 1)[0]
        if folder in seen:
            continue
        seen.add(folder)
        hc = from_manifest(manifest_beside(file))
        if hc and hc.get("components"):
            out.append(hc)
    return out


def _fill_addresses(host_configs: list[dict], inventory) -> None:
    """Hosts without addresses (a folder without an addresses file) take the inventory's, by name."""
    if inventory is None:
        return
    by_name = {}
    for h in list(getattr(inventory, "control_plane", []) or []) + list(getattr(inventory, "nodes", []) or []):
        name = getattr(h, "name", None) or (h.get("name") if isinstance(h, dict) else None)
        addrs = getattr(h, "addresses", None) or (h.get("addresses") if isinstance(h, dict) else None) or []
        if name:
            by_name[str(name)] = [str(a) for a in addrs]
    for hc in host_configs:
        if not hc.get("addresses") and str(hc.get("host")) in by_name:
            hc["addresses"] = by_name[str(hc["host"])]


def host_config_table(given, captures: pd.DataFrame | None = None, reloaded: Path | None = None, inventory=None,
                      warn=None) -> pd.DataFrame | None:
    """The config table: ``given`` (a DataFrame, or host folders as `commpath config` reads them) and the
    manifests' host_config of the other hosts; else the one an analyze folder kept. Unreadable files are
    warnings (``warn``)."""
    if isinstance(given, pd.DataFrame):
        return conform(given.copy(), CONFIG_COLUMNS)
    folders = [given] if isinstance(given, (str, Path)) else list(given or [])
    given_configs = [from_folder(f) for f in folders]
    named = {str(hc.get("host")) for hc in given_configs}
    # a host given explicitly replaces what its capture agent recorded
    host_configs = given_configs + [hc for hc in _manifest_configs(captures) if str(hc.get("host")) not in named]
    if not host_configs:
        if reloaded is not None and (reloaded / CONFIG_PARQUET).is_file():
            df = pd.read_parquet(reloaded / CONFIG_PARQUET)
            df["addresses"] = df["addresses"].map(lambda v: [str(a) for a in v] if v is not None else [])
            return conform(df, CONFIG_COLUMNS)
        return None
    _fill_addresses(host_configs, inventory)
    facts = config_table(host_configs)
    for err in facts.errors:
        (warn or (lambda m: print(f"commpath: warning: {m}", file=sys.stderr)))(err)
    return facts.table


__all__ = ["CONFIG_PARQUET", "host_config_table"]

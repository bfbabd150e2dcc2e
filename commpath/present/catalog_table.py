"""The path catalog for notebooks and scripts: one DataFrame row per path, and one path's entry."""

from __future__ import annotations

import pandas as pd

from ..classify.catalog import load_catalog
from ..classify.catalog import path_info as _lookup


def catalog() -> pd.DataFrame:
    """Every path of the catalog: id, documented, initiator, responder, title and document anchor."""
    rows = [{"path": p["id"], "documented": bool(p.get("documented", False)), "title": p.get("title", ""),
             "initiator": " | ".join(p.get("initiator", [])), "responder": " | ".join(p.get("responder", [])),
             "reference": "#" + (p.get("reference") or {}).get("anchor", "")}
            for p in load_catalog()["paths"]]
    return pd.DataFrame(rows)


def path_info(path_id: str) -> dict:
    """One path's catalog entry: title, initiator, responder, requirements, reference (quote, anchor)."""
    return dict(_lookup(str(path_id)))


__all__ = ["catalog", "path_info"]

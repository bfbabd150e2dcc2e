"""A run's table from its parts' frames, typed as one read of the whole run types it."""

from __future__ import annotations

import pandas as pd

from ..decode.schema import conform, empty_frame


def concat_parts(frames: list[pd.DataFrame], columns: dict[str, str]) -> pd.DataFrame:
    """The captures' rows of one table, typed as one read of the whole run types them: a category
    column whose categories differ between captures gets the sorted distinct values of the run
    (each capture's categories are its own sorted distinct values, so their sorted union is that)."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_frame(columns)
    cats = {c for f in frames for c in f.columns if isinstance(f[c].dtype, pd.CategoricalDtype)}
    for c in cats:
        first = frames[0][c].dtype
        if all(f[c].dtype == first for f in frames):
            continue
        values: set = set()
        for f in frames:
            values.update(f[c].cat.categories if isinstance(f[c].dtype, pd.CategoricalDtype) else f[c].dropna())
        union = pd.CategoricalDtype(sorted(values))
        for f in frames:
            f[c] = f[c].astype(union)
    return conform(pd.concat(frames, ignore_index=True), columns)

"""A function of a column's values called once per distinct value: a run repeats a few values many times."""

from __future__ import annotations

import numpy as np
import pandas as pd


def per_distinct(values: pd.Series, fn) -> np.ndarray:
    """``fn`` of each value of ``values`` as an object array, ``fn`` called once per distinct value;
    a missing value gives None."""
    codes, distinct = pd.factorize(values)
    return np.asarray([fn(v) for v in distinct.tolist()] + [None], dtype=object)[codes]

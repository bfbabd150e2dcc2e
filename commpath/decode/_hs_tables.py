"""Tables from row tuples: each column typed once as declared (categories from codes, strings by pyarrow)."""

from __future__ import annotations

from itertools import chain
from typing import TYPE_CHECKING

import numpy as np

from .schema import conform, empty_frame

if TYPE_CHECKING:
    import pandas as pd


def frame_from_rows(rows: list[tuple], columns: dict[str, str]) -> pd.DataFrame:
    """A DataFrame from rows given as tuples in the order of ``columns``."""
    import pandas as pd
    if not rows:
        return empty_frame(columns)
    n = len(rows)
    # a row may carry more items than ``columns`` (zip stops at the last column): they are left out
    data = {name: typed_column(values, dtype, n) for (name, dtype), values in zip(columns.items(), _transposed(rows))}
    df = pd.DataFrame(data)
    if list(map(str, df.dtypes)) == list(columns.values()):
        return df                                   # conform would only copy it
    return conform(df, columns)


#: items of the rows at most for :func:`_transposed`'s one list (8 bytes each: 64 MB held beside the rows)
FLAT_ITEMS = 8_000_000


def _transposed(rows: list[tuple]):
    """The rows' values column by column, as ``zip(*rows)`` gives them.

    ``zip(*rows)`` reads one item of every row per column: a pass over all the rows (scattered over
    the heap) per column, 0.32–0.54 s for 144,000 TLS rows of 36 items. When the rows are all as
    long, they are read once, in order, into one list, and each column is a strided slice of it
    (0.23 s). That list holds a reference per item beside the rows, so it is made for up to
    :data:`FLAT_ITEMS` items; more rows go through ``zip``, which holds one column at a time."""
    width = len(rows[0])
    if len(rows) * width > FLAT_ITEMS or any(len(r) != width for r in rows):
        return zip(*rows)
    flat = list(chain.from_iterable(rows))
    return (flat[j::width] for j in range(width))


def typed_column(values, dtype: str, n: int):
    """One column of :func:`frame_from_rows` from its ``n`` values."""
    import pandas as pd
    if dtype == "bool":
        return np.fromiter(map(bool, values), bool, n)
    if dtype == "category":
        return _categorical(values)
    if dtype == "object":
        return list(values)
    if dtype == "string":
        return _strings(values)
    return pd.array(values, dtype=dtype)            # typed once, here, instead of inferred then cast


_STRING_ITEMS = frozenset((str, type(None)))


def _categorical(values: tuple):
    """``pd.Categorical(values)`` (categories: the sorted distinct values, None missing), from codes."""
    import pandas as pd
    distinct = set(values)
    distinct.discard(None)
    if not distinct or not set(map(type, distinct)) <= _STRING_ITEMS:
        return list(values)                         # conform's cast decides, as before
    categories = sorted(distinct)
    code = {c: i for i, c in enumerate(categories)}
    code[None] = -1
    codes = np.fromiter(map(code.__getitem__, values), np.int64, len(values))
    return pd.Categorical.from_codes(codes, categories=pd.Index(categories))


def _strings(values: tuple) -> pd.api.extensions.ExtensionArray:
    """``pd.array(values, dtype="string")``, built by pyarrow in one go when every value is a str or None."""
    import pandas as pd
    dtype = pd.StringDtype()
    if dtype.storage == "pyarrow" and set(map(type, values)) <= _STRING_ITEMS:
        import pyarrow as pa
        try:
            out = pd.arrays.ArrowStringArray(pa.chunked_array([pa.array(values, type=pa.large_string())]))
        except (pa.ArrowException, UnicodeError):     # e.g. lone surrogates: pandas' own way decides
            out = None
        if out is not None and out.dtype == dtype:
            return out
    return pd.array(values, dtype="string")

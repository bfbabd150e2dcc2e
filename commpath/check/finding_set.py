"""A run's findings kept compact: key columns in memory, their texts made a batch at a time when asked for.

A million findings' messages, display filters, evidence and repeated remediation and reference
texts take about 740 MB as columns (and more while they are made); their keys (check, severity,
path, capture, flow ids, example frames, fingerprint, count) take about 90 MB. The writers
(report.json, findings.parquet) read :meth:`FindingSet.batches`, so no million-text column lives at
once; :meth:`FindingSet.frame` builds the whole DataFrame users get as ``Analysis.findings``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from ..decode.schema import conform, empty_frame
from .findings import RENDER, concat_column
from .tables import FINDING_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

#: columns a FindingSet keeps whole, in the table's order (the others are its blocks' texts)
KEY_COLUMNS = ("check", "severity", "path", "capture")


class FindingSet:
    """The findings (FINDING_COLUMNS) as the check layer made them: either a DataFrame, or blocks of
    key columns in the table's order whose text columns are made by :func:`~.findings.render`."""

    def __init__(self, blocks: list[dict] | None = None, keys: dict | None = None, frame=None,
                 pandas_column: Callable | None = None):
        self._blocks = blocks or []
        self._keys = keys or {}
        self._frame = frame
        self._pandas_column = pandas_column
        self._stops = np.cumsum([len(b["count"]) for b in self._blocks]) if self._blocks else np.zeros(0, np.int64)

    @classmethod
    def of(cls, frame) -> FindingSet:
        """A FindingSet holding a ready DataFrame."""
        return cls(frame=frame)

    def __len__(self) -> int:
        if self._frame is not None:
            return len(self._frame)
        return int(self._stops[-1]) if len(self._stops) else 0

    def recode(self, name: str, fn: Callable) -> None:
        """Replace key column ``name`` by ``fn(pd.Series of it)`` (e.g. ordered severities), in every
        batch and in the whole frame alike."""
        import pandas as pd
        if self._frame is not None:
            if name in self._frame:
                self._frame[name] = fn(self._frame[name])
            return
        if name in self._keys:
            self._keys[name] = fn(pd.Series(self._keys[name])).array

    def _key(self, name: str, start: int = 0, stop: int | None = None):
        """Key column ``name`` (rows ``start:stop``) as the table's pandas array: a dictionary-encoded
        Arrow column (the captures) as its texts."""
        import pandas as pd
        import pyarrow as pa
        column = self._keys[name]
        if isinstance(column, pa.DictionaryArray):
            part = column if start == 0 and stop is None else column[start:stop]
            return self._pandas_column(name, part.dictionary.take(part.indices))
        return column if start == 0 and stop is None else column[start:stop]

    def keys_frame(self):
        """check, severity, path and count of every finding (no texts): what verdicts and counts read
        (a ready DataFrame as it is: with the columns a suppressions file added)."""
        import pandas as pd
        if self._frame is not None:
            return self._frame
        if not len(self):
            return empty_frame(FINDING_COLUMNS)[["check", "severity", "path", "count"]]
        count = np.concatenate([np.asarray(b["count"], np.int64) for b in self._blocks])
        return pd.DataFrame({"check": self._keys["check"], "severity": self._keys["severity"],
                             "path": self._keys["path"], "count": count})

    def frame(self):
        """All findings as one DataFrame (FINDING_COLUMNS), texts made for all of them."""
        import pandas as pd
        if self._frame is not None:
            return self._frame
        if not self._blocks:
            return empty_frame(FINDING_COLUMNS)
        texts = [_texts(block) for block in self._blocks]
        columns = {}
        for name in _names(self._blocks[0]):
            if name in self._keys:
                columns[name] = self._key(name)
                continue
            parts = [t[name] if name in t else b[name] for b, t in zip(self._blocks, texts)]
            columns[name] = self._pandas_column(name, concat_column(parts))
            for t in texts:
                t.pop(name, None)
            del parts
        return conform(pd.DataFrame(columns), FINDING_COLUMNS)

    @property
    def compact(self) -> bool:
        """Whether the texts are still unmade (blocks), not a ready DataFrame."""
        return self._frame is None

    def batches(self) -> Iterator:
        """The findings as DataFrames of one block each, in order, typed as :meth:`frame` is (category
        columns with all the categories of the whole table)."""
        if self._frame is not None:
            yield self._frame
            return
        for i in range(len(self._blocks)):
            yield self._batch(i)

    def rows(self, positions) -> pd.DataFrame:
        """The findings at these row positions, in this order and labelled by them, typed as
        :meth:`frame` is; only the blocks holding one of them make their texts."""
        import pandas as pd
        positions = np.asarray(positions, np.int64)
        if self._frame is not None:
            return self._frame.iloc[positions]
        if not len(positions):
            return empty_frame(FINDING_COLUMNS)
        block_of = np.searchsorted(self._stops, positions, side="right")
        parts = []
        for b in np.unique(block_of):
            start = int(self._stops[b - 1]) if b else 0
            mine = positions[block_of == b]
            parts.append(self._batch(int(b)).iloc[mine - start].set_axis(mine))
        return pd.concat(parts).loc[positions]

    def _batch(self, i: int):
        """Block ``i`` as a DataFrame, its texts made."""
        import pandas as pd
        block = self._blocks[i]
        start, stop = (int(self._stops[i - 1]) if i else 0), int(self._stops[i])
        texts = _texts(block)
        columns = {}
        for name in _names(block):
            if name in self._keys:
                columns[name] = self._key(name, start, stop)
            else:
                columns[name] = self._pandas_column(name, concat_column([texts.get(name, block.get(name))]))
        del texts
        return conform(pd.DataFrame(columns), FINDING_COLUMNS)


def _texts(block: dict) -> dict:
    """The text columns of ``block`` made anew (the block keeps only its keys)."""
    make = block.get(RENDER)
    return make() if make is not None else {}


def _names(block: dict) -> list[str]:
    """The table's columns: the declared ones, then any other a block has."""
    return [*FINDING_COLUMNS, *(n for n in block if n not in FINDING_COLUMNS and n not in (RENDER, "_first"))]


__all__ = ["KEY_COLUMNS", "FindingSet"]

"""The merge of vantage points on the workers: flows shuffled by initiator address, clock offsets first.

Every view of one connection shares its initiator socket (``src_ip``, ``src_port``, ``transport``):
the same 5-tuple on several hosts, and a pod's connection before DNAT (to the service VIP) and
after it (to an apiserver). So each capture's classified flows are split by a hash of the socket's
address into P parts; part p of every capture, put together, holds whole connections. The address
alone, not the whole socket, because a finding's connection key (initiator address, responder
address and port) then lies in one part too, and the checks run per part (``_checks``) with no
finding to add up across parts. The clock offsets need all parts (a median per host pair): each
part returns its pairs of SYN times (a few numbers per connection seen twice), the driver reduces
them to the offset table, and each part is then merged with it (``decode.merge.merge_run``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..classify import CLASSIFY_COLUMNS
from ..decode.merge import adopt_labels, clock_pairs, merge_run
from ..decode.schema import FLOW_COLUMNS, concat_frames

def initiator_parts(flows: pd.DataFrame, n: int) -> np.ndarray:
    """The part (0..n-1) of each flow: a hash of its initiator address, the same in every capture."""
    key = flows["src_ip"].astype("string").fillna("")
    return (pd.util.hash_pandas_object(key, index=False).to_numpy() % np.uint64(n)).astype(np.int64)


def split(classified: tuple[pd.DataFrame, pd.Series], n: int) -> list[tuple[pd.DataFrame, pd.Series]]:
    """One capture's classified flows and their handshake preference, cut into the ``n`` parts."""
    flows, preference = classified
    part = initiator_parts(flows, n)
    out = []
    for p in range(n):
        rows = flows[part == p]
        out.append((rows, preference[preference.index.isin(rows["flow_id"].to_numpy())]))
    return out


def piece(parts: list, p: int):
    return parts[p]


def together(pieces: list[tuple[pd.DataFrame, pd.Series]]) -> tuple[pd.DataFrame, pd.Series]:
    """One part's rows of every capture, in capture order (as the whole run's rows are ordered),
    and their merge preference: the input of :func:`pairs_of` and :func:`merge_part`."""
    frames = [f.copy(deep=False) for f, _ in pieces]        # dtypes are unified in place: not the inputs'
    flows = concat_frames(frames, {**FLOW_COLUMNS, **CLASSIFY_COLUMNS})
    prefs = [s for _, s in pieces if len(s)]
    return flows, (pd.concat(prefs) if prefs else pd.Series(dtype=float))


def pairs_of(part: tuple[pd.DataFrame, pd.Series], captures: pd.DataFrame) -> tuple[pd.DataFrame, set[str]]:
    """The part's clock pairs (``decode.merge.clock_pairs``)."""
    flows, _ = part
    if flows.empty:
        return pd.DataFrame({"host_a": [], "host_b": [], "diff": [], "sign": []}), set()
    return clock_pairs(flows, captures)


def merge_part(part: tuple[pd.DataFrame, pd.Series], captures: pd.DataFrame, offsets: pd.DataFrame) -> pd.DataFrame:
    """The part's connections merged with the run's clock ``offsets``, labelled as ``_pipeline`` labels them."""
    flows, preference = part
    if flows.empty:
        return flows
    merged, _, _ = merge_run(flows, captures, offsets=offsets, preference=preference)
    adopt_labels(merged, flows, CLASSIFY_COLUMNS)
    return merged


#: vantage-point flows per merge part at most, unless one initiator address alone has more (its
#: flows are one part's: see the module's docstring; a part's merge holds its rows a few times
#: over: measured, a worker peaked at 1.9 GB merging a quarter of 60 hosts' 1 M flows)
PART_FLOWS = 100_000


def parts_count(client, units: int, flows: int = 0) -> int:
    """Two parts per worker thread (so a slow part does not hold the run up), at most one per unit
    (host), and at least one per :data:`PART_FLOWS` flows, so a worker's memory stays bounded
    whatever the run's size (save for one initiator address of more flows than that)."""
    try:
        threads = sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values())
    except Exception:   # an old scheduler: one part per unit is always right
        threads = units
    return max(1, min(units, 2 * max(threads, 1)), -(-flows // PART_FLOWS))

"""The cyclic garbage collector run less often while a run builds its tables.

CPython collects its youngest generation every 700 net allocations of container objects, and the
whole heap each time the survivors have grown by a quarter. A run makes millions of containers that
live to the end (handshake rows, vantage point lists, the objects of unpickled task results), none
of them in cycles, so most collections find nothing and the full ones walk the whole heap again:
measured on 12 hosts on Dask (benchmarks/RESULTS.md), the driver spent 1.5 s in 2,163 collections,
10 of them full (1.25 s), each worker 0.5 s; with a young threshold of 50,000, 0.3 s. Cycles are
still collected, later; the threshold is put back when the run ends.
"""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager

#: Net allocations of container objects between two collections of the youngest generation.
YOUNG_THRESHOLD = 50_000

_lock = threading.Lock()
_runs = 0
_saved: tuple[int, int, int] | None = None


@contextmanager
def fewer_collections():
    """Within the block, the youngest generation is collected every :data:`YOUNG_THRESHOLD`
    allocations, unless collection is off or already rarer; runs in several threads at once
    share one setting, put back when the last one ends."""
    global _runs, _saved
    with _lock:
        if _runs == 0:
            current = gc.get_threshold()
            _saved = current
            if 0 < current[0] < YOUNG_THRESHOLD:
                gc.set_threshold(YOUNG_THRESHOLD, *current[1:])
        _runs += 1
    try:
        yield
    finally:
        with _lock:
            _runs -= 1
            if _runs == 0 and _saved is not None:
                if gc.get_threshold()[0] == YOUNG_THRESHOLD:    # not changed by someone else meanwhile
                    gc.set_threshold(*_saved)
                _saved = None


def collect_less() -> None:
    """For a process that does nothing but runs (a local Dask worker): the threshold of
    :func:`fewer_collections`, for good."""
    current = gc.get_threshold()
    if 0 < current[0] < YOUNG_THRESHOLD:
        gc.set_threshold(YOUNG_THRESHOLD, *current[1:])

"""How a process running commpath sets up its allocator and its garbage collector."""

from __future__ import annotations

import ctypes
import gc
import os
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
    share one setting, put back when the last one ends.

    CPython collects its youngest generation every 700 net allocations of container objects, and
    the whole heap each time the survivors have grown by a quarter. A run makes millions of
    containers that live to its end (handshake rows, vantage point lists, the objects of unpickled
    task results), none in cycles: most collections find nothing, and the full ones walk the
    whole heap again. Measured on 12 hosts on Dask (benchmarks/RESULTS.md): the driver spent 1.5 s
    in 2,163 collections, 1.25 s of it in 10 full ones, each worker 0.5 s; with this threshold,
    0.4 s and 0.05 s. Cycles are still collected, later. (Reading pauses the collector
    altogether: ``decode.engine.collector_paused``.)"""
    global _runs, _saved
    with _lock:
        if _runs == 0:
            _saved = gc.get_threshold()
            collect_less()
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
    """The threshold of :func:`fewer_collections` for good, in a process of its own (the `commpath`
    command, a local Dask worker)."""
    current = gc.get_threshold()
    if 0 < current[0] < YOUNG_THRESHOLD:
        gc.set_threshold(YOUNG_THRESHOLD, *current[1:])


def usable_cores() -> int:
    """Every core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def own_process() -> None:
    """A process of commpath's own (the `commpath` command, a worker process it starts): blocks mapped
    apart only from :data:`LARGE_BLOCK` (:func:`unmap_large_blocks`) and the youngest generation
    collected less often (:func:`collect_less`)."""
    unmap_large_blocks()
    collect_less()


#: glibc's mallopt parameter of the size from which blocks are mapped apart from the heap
_M_MMAP_THRESHOLD = -3

#: The size from which a block is mapped on its own (a column of 512 Ki 8-byte values)
LARGE_BLOCK = 4 << 20


def unmap_large_blocks() -> None:
    """glibc: blocks of :data:`LARGE_BLOCK` and more are mapped on their own, so freeing one returns it at once.

    glibc's own threshold starts at 128 KiB but rises to the size of every mapped block freed (up
    to 32 MiB); from then on a million-connection run's columns (8 MB each) come from the heap and
    stay in the process when freed, between live ones: against that, on one million connections,
    the peak 1.35 → 1.16 GB, the memory after decoding 581 → 386 MB. Smaller blocks stay in the
    heap, reused once freed: with every block from 128 KiB on mapped, each column of a 200,000-flow
    run (1.6 MB) was a fresh mapping whose pages the kernel gave again, 0.9-1.8 s of system time of
    a 12-host run and 1-5 s of the million-SYN one, for 2-5 % less peak memory (benchmarks/RESULTS.md).
    For a process of its own (the `commpath` command, a local Dask worker), not a caller's
    interpreter. A no-op where the C library has no ``mallopt``."""
    try:
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK)
    except (AttributeError, OSError):
        pass

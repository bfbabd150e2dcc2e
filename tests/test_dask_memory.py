"""A local Dask worker's peak memory stays bounded as the run grows: what a worker keeps between the
stages beyond its budget goes to its local disk, and the merge's socket parts have a fixed size."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pandas.testing import assert_frame_equal

import commpath
from commpath.distributed import connect

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from dask_make_hosts import make  # noqa: E402  (the benchmark's maker of many hosts from the lab recordings)

#: Repetitions of each lab recording per capture file: ≈ 66 MB of capture and 7,600 merged flows per host.
REPEAT = 600
#: Each worker's memory budget in these runs, below what a worker of the larger run would hold: spilling
#: starts at half of it (``_cluster.LOCAL_CLUSTER_CONFIG``).
BUDGET = 400 * 2**20
#: Vantage-point flows per socket part of the merge in these runs: the small run already has parts of this size.
PART_FLOWS = 10_000
#: How much more a worker of the 4 times larger run may peak at (it fills the half of its budget kept in
#: RAM, which the small run may not; what every worker is sent grows by ≈ 17 KB per host). Measured on
#: 2 cores: +33 to +56 MiB with the budget, +166 MiB without one (benchmarks/RESULTS.md, #14 scale).
ALLOWANCE = 100 * 2**20


def _worker_memory(dask_worker) -> dict:
    """The worker process's lifetime peak RSS and the bytes it spilled to its disk (sent by value)."""
    import resource
    spilled = sum(v for k, v in dask_worker.digests_total.items()
                  if isinstance(k, tuple) and k[-2:] == ("disk-write", "bytes"))
    return {"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "spilled": spilled}


def _run(folder: Path):
    with connect(workers=2, memory_limit=BUDGET, announce=False) as client:
        analysis = commpath.open(folder, client=client)
        return analysis, list(client.run(_worker_memory).values())


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    root = tmp_path_factory.mktemp("hosts")
    make(REPO / "captures/default", root / "small", replicas=1, repeat=REPEAT)      # 3 hosts
    make(REPO / "captures/default", root / "large", replicas=4, repeat=REPEAT)      # 12 hosts
    return root


def test_worker_peak_does_not_grow_with_the_number_of_hosts(hosts, monkeypatch):
    """Two real local workers with the same budget, on 3 and on 12 hosts: the larger run spills what
    its workers keep between the stages, its results are the single process's, and its workers'
    peak stays within a fixed allowance of the small run's while more than twice that went through their disks."""
    monkeypatch.setattr("commpath.distributed._merge.PART_FLOWS", PART_FLOWS)
    small, small_mem = _run(hosts / "small")
    large, large_mem = _run(hosts / "large")
    assert len(large.flows) == 4 * len(small.flows)
    single = commpath.open(hosts / "large")
    assert_frame_equal(single.flows, large.flows, check_exact=True)
    assert_frame_equal(single.findings, large.findings, check_exact=True)
    assert single.summary() == large.summary()
    spilled = sum(m["spilled"] for m in large_mem)
    small_peak = max(m["peak"] for m in small_mem)
    large_peak = max(m["peak"] for m in large_mem)
    assert large_peak <= small_peak + ALLOWANCE, (small_peak >> 20, large_peak >> 20, spilled >> 20)
    assert spilled > 2 * ALLOWANCE, "the larger run's workers kept more than the allowance between the stages"


def test_local_worker_processes_get_the_budget_and_spill_past_half_of_it():
    """``connect``'s worker processes run with LOCAL_WORKER_MEMORY (or the machine's share) and the
    spilling thresholds; a worker in this process (threads) has dask's share of the machine ("auto")."""
    import logging

    from distributed.system import MEMORY_LIMIT
    from distributed.worker_memory import parse_memory_limit

    from commpath.distributed._cluster import LOCAL_CLUSTER_CONFIG, LOCAL_WORKER_MEMORY

    def _memory(dask_worker) -> tuple:       # nested: sent by value to the workers
        import dask
        return (dask_worker.memory_manager.memory_limit, dask.config.get("distributed.worker.memory.target"),
                dask.config.get("distributed.worker.memory.terminate"))

    with connect(workers=1, announce=False) as client:
        assert set(client.run(_memory).values()) == {
            (min(LOCAL_WORKER_MEMORY, MEMORY_LIMIT), LOCAL_CLUSTER_CONFIG["distributed.worker.memory.target"], False)}
    with connect(workers=1, processes=False, announce=False) as client:
        machine_share = parse_memory_limit("auto", 1, logger=logging.getLogger())
        assert {m[0] for m in client.run(_memory).values()} == {machine_share}

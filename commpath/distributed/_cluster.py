"""Where the tasks run: local worker processes (or threads), or an existing dask.distributed cluster."""

from __future__ import annotations

import logging
import sys
from contextlib import ExitStack, contextmanager

from .._process import usable_cores
from ..errors import InputError

#: How long to wait for a scheduler given by address before saying it cannot be reached.
CONNECT_TIMEOUT_S = 20

#: Diagnostics of the local clusters we start, slowed or off: a worker's statistical profiler samples
#: its task thread every 10 ms, and the event loops of the scheduler, nannies and workers wake every
#: 20 ms to detect a blocked loop; measured, an idle local cluster of 2 workers burnt 0.08 CPU
#: seconds per second with dask's defaults and 0.02 with these (benchmarks/RESULTS.md, #14). Memory
#: is still watched (limits, pausing, spilling), every 500 ms instead of 100 ms. Clusters that the
#: user gives (``client``, ``scheduler``) keep their own settings.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.worker.memory.monitor-interval": "500ms",
    # what a worker holds between the stages (its hosts' decoded, prepared and classified flows)
    # goes to its local disk past half its memory budget (LOCAL_WORKER_MEMORY), so its peak does not
    # grow with the run; a worker is neither paused (held memory that is not dask's would pause it
    # for good) nor killed by its nanny: one task larger than the budget still runs
    "distributed.worker.memory.target": 0.5,
    "distributed.worker.memory.spill": 0.6,
    "distributed.worker.memory.pause": False,
    "distributed.worker.memory.terminate": False,
}

#: The memory budget of each local worker process: the largest task's working set (a capture's
#: decode within the engine's budgets, a merge part of ``_merge.PART_FLOWS`` flows) plus what it
#: keeps of the stages' results before spilling them (half of it); or the machine's share per
#: worker when smaller. Measured in benchmarks/RESULTS.md (#14 scale).
LOCAL_WORKER_MEMORY = 2 * 2**30


@contextmanager
def connect(client=None, workers: int | None = None, scheduler: str | None = None, processes: bool = True,
            memory_limit: str | int | None = None, announce: bool = True):
    """A ``distributed.Client``: the one given, one to the ``scheduler`` address, or one to a local
    cluster of ``workers`` processes (``processes=False``: threads of this process) with one thread
    each, so a worker decodes one capture at a time, and a memory budget each (``memory_limit``,
    bytes or dask's "2GiB"/"auto"; by default :data:`LOCAL_WORKER_MEMORY` or the machine's share;
    with ``processes=False`` the machine's, as the worker shares this process's memory)
    past which it spills the stages' results to its local disk. The dashboard's
    address is printed on stderr when there is one (``announce``)."""
    if client is not None:
        yield client
        return
    from distributed import Client
    with ExitStack() as stack:
        if scheduler:
            try:
                client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                raise InputError(scheduler, f"cannot reach the Dask scheduler: {exc}") from None
        else:
            cluster = stack.enter_context(_local_cluster(workers or usable_cores(), processes, memory_limit))
            client = Client(cluster)
            if processes:       # worker processes of ours: those of a given cluster keep their settings
                from ._worker_setup import LocalWorker
                client.register_plugin(LocalWorker())
        stack.callback(client.close)
        if announce:
            link = dashboard_link(client)
            if link:
                print(f"commpath: Dask dashboard at {link}", file=sys.stderr)
        yield client


@contextmanager
def _local_cluster(n: int, processes: bool, memory_limit):
    """A LocalCluster started (and run) with :data:`LOCAL_CLUSTER_CONFIG`: its workers take the
    config they are started with, its scheduler (in this process) the config it runs under."""
    import dask
    from distributed import LocalCluster
    from distributed.system import MEMORY_LIMIT
    if memory_limit is None:   # threads share this whole process's memory (the run's tables too): dask's share
        memory_limit = min(LOCAL_WORKER_MEMORY, MEMORY_LIMIT // max(n, 1)) if processes else "auto"
    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        cluster = LocalCluster(n_workers=n if processes else 1, threads_per_worker=1 if processes else n,
                               processes=processes, memory_limit=memory_limit, dashboard_address=":0",
                               silence_logs=logging.ERROR)
        try:
            yield cluster
        finally:
            cluster.close()


def dashboard_link(client) -> str | None:
    """The dashboard's address, or None when the scheduler serves none (bokeh not installed)."""
    try:
        services = client.scheduler_info().get("services", {})
    except Exception:   # an old or unreachable scheduler: no address to show
        return None
    return client.dashboard_link if "dashboard" in services else None

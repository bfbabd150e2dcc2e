"""Where the tasks run: local worker processes (or threads), or an existing dask.distributed cluster."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager

from ..errors import InputError

#: How long to wait for a scheduler given by address before saying it cannot be reached.
CONNECT_TIMEOUT_S = 20


def default_workers() -> int:
    """Every core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


@contextmanager
def connect(client=None, workers: int | None = None, scheduler: str | None = None, processes: bool = True,
            memory_limit: str | int = "auto", announce: bool = True):
    """A ``distributed.Client``: the one given, one to the ``scheduler`` address, or one to a local
    cluster of ``workers`` processes (``processes=False``: threads of this process) with one thread
    each, so a worker decodes one capture at a time and its memory stays bounded. The dashboard's
    address is printed on stderr when there is one (``announce``)."""
    if client is not None:
        yield client
        return
    from distributed import Client, LocalCluster
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise InputError(scheduler, f"cannot reach the Dask scheduler: {exc}") from None
    else:
        n = workers or default_workers()
        cluster = LocalCluster(n_workers=n if processes else 1, threads_per_worker=1 if processes else n,
                               processes=processes, memory_limit=memory_limit, dashboard_address=":0",
                               silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        if announce:
            link = dashboard_link(client)
            if link:
                print(f"commpath: Dask dashboard at {link}", file=sys.stderr)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def dashboard_link(client) -> str | None:
    """The dashboard's address, or None when the scheduler serves none (bokeh not installed)."""
    try:
        services = client.scheduler_info().get("services", {})
    except Exception:   # an old or unreachable scheduler: no address to show
        return None
    return client.dashboard_link if "dashboard" in services else None

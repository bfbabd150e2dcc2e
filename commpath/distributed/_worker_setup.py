"""What the worker processes of the local clusters commpath starts set up when they start (or restart)."""

from __future__ import annotations

import logging

from distributed.diagnostics.plugin import WorkerPlugin

#: What a worker logs, with a traceback, when its heartbeat was in flight as the scheduler closed
#: (dask's noisy shutdown: a quarter of the 12-host `--workers 2` runs printed it at the end).
HEARTBEAT_LOST = "Failed to communicate with scheduler during heartbeat."


class LocalWorker(WorkerPlugin):
    """The allocator and the garbage collector of the commpath process
    (:func:`commpath._process.unmap_large_blocks`, :func:`commpath._process.collect_less`: the
    process does nothing else, and the results it unpickles and keeps are millions of objects), and
    no traceback for a heartbeat lost to the scheduler closing: the scheduler of a local cluster
    lives in the commpath process, so it goes away only when the run ends (or with that process,
    which says so itself)."""

    name = "commpath-local-worker"

    def setup(self, worker) -> None:
        from .._process import own_process
        own_process()
        log = logging.getLogger("distributed.worker")
        if not any(isinstance(f, _HeartbeatLost) for f in log.filters):
            log.addFilter(_HeartbeatLost())


class _HeartbeatLost(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != HEARTBEAT_LOST

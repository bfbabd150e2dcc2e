"""What the worker processes of the local clusters commpath starts set up when they start (or restart)."""

from __future__ import annotations

from distributed.diagnostics.plugin import WorkerPlugin


class CollectLess(WorkerPlugin):
    """The garbage collector's young threshold of a run (:func:`commpath._collector.collect_less`): the
    process does nothing else, and the results it unpickles and keeps are millions of objects."""

    name = "commpath-collect-less"

    def setup(self, worker) -> None:
        from .._collector import collect_less
        collect_less()

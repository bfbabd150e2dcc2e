"""`commpath watch`: continuous checking of the capture agent's ring files, with Prometheus metrics."""

from __future__ import annotations

__all__ = ["Options", "Watcher"]


def __getattr__(name: str):
    # the loop imports pandas and the whole pipeline: `commpath --help` only needs .cli
    if name in __all__:
        from . import _watcher
        return getattr(_watcher, name)
    raise AttributeError(name)

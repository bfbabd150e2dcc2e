"""commpath: check from the wire how a Kubernetes control plane and its nodes communicate."""

from ._version import __version__
from .decode.engine import Capture, read
from .errors import CommpathError, InputError

__all__ = ["Analysis", "Capture", "CommpathError", "InputError", "__version__", "catalog", "open", "path_info", "read"]


def __getattr__(name: str):
    """``open`` and ``Analysis`` load the analysis layers (pandas and all) when first asked for."""
    if name in ("open", "Analysis"):
        from . import _pipeline
        return getattr(_pipeline, name)
    if name in ("catalog", "path_info"):
        from .present import catalog_table
        return getattr(catalog_table, name)
    raise AttributeError(f"module 'commpath' has no attribute {name!r}")

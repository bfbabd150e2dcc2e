"""commpath: check from the wire how a Kubernetes control plane and its nodes communicate."""

from ._version import __version__
from .errors import CommpathError, InputError

__all__ = ["Analysis", "Capture", "CommpathError", "InputError", "__version__", "catalog", "open", "path_info", "read"]


def __getattr__(name: str):
    """``open`` and ``Analysis`` load the analysis layers (pandas and all) when first asked for, ``read`` and
    ``Capture`` the decoder (numpy): the capture agent imports ``commpath.capture`` without either."""
    if name in ("read", "Capture"):
        from .decode import engine
        return getattr(engine, name)
    if name in ("open", "Analysis"):
        from . import _pipeline
        return getattr(_pipeline, name)
    if name in ("catalog", "path_info"):
        from .present import catalog_table
        return getattr(catalog_table, name)
    raise AttributeError(f"module 'commpath' has no attribute {name!r}")

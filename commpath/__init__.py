"""commpath: check from the wire how a Kubernetes control plane and its nodes communicate."""

from ._version import __version__
from .decode.engine import Capture, read
from .errors import CommpathError, InputError
from ._pipeline import Analysis, open  # noqa: A004

__all__ = ["__version__", "read", "Capture", "CommpathError", "InputError", "open", "Analysis"]

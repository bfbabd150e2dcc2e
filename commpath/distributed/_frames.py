"""A run's table from its parts' frames, typed as one read of the whole run types it."""

from __future__ import annotations

from ..decode._hs_tables import concat_frames as concat_parts

__all__ = ["concat_parts"]

"""A memo that empties itself when full, so caches across connections stay bounded."""

from __future__ import annotations


class BoundedMemo(dict):
    """A dict of at most ``max_entries`` items: storing into a full one starts it afresh."""

    def __init__(self, max_entries: int):
        super().__init__()
        self.max_entries = max_entries

    def remember(self, key, value):
        """Store ``value`` under ``key`` (emptying the memo first when full); returns ``value``."""
        if len(self) >= self.max_entries:
            self.clear()
        self[key] = value
        return value

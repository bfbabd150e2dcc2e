"""The stream arena: first bytes of each direction kept in place, harvested per finished flow."""

from __future__ import annotations

import numpy as np

from . import _flowtable as ft
from .streams import FlowStreams, Stream

#: How many (offset, frame) marks a direction keeps: enough to place every handshake message.
MARKS = 64
_EMPTY = Stream()


class StreamArena:
    """Fixed-size slots (one per connection direction) that the flow kernel writes into."""

    def __init__(self, limit: int, budget: int = 48 * 1024 * 1024, slots: int = 256):
        self.limit = max(int(limit), 8)
        self.max_slots = max(64, budget // (self.limit + self.limit // 8 + MARKS * 16 + 32))
        self._alloc(min(slots, self.max_slots))
        self.done = np.zeros(4096, np.int64)
        self.ndone = 0

    def _alloc(self, slots: int) -> None:
        self.data = np.zeros((slots, self.limit), np.uint8)
        self.cov = np.zeros((slots, (self.limit + 7) // 8), np.uint8)
        self.meta = np.zeros((slots, 4), np.int64)        # contiguous, max end, marks used, owner flow
        self.marks = np.zeros((slots, MARKS, 2), np.int64)  # (offset, frame)
        self.free = np.arange(slots - 1, -1, -1, dtype=np.int64)
        self.nfree = slots

    def grow(self) -> None:
        """Double the slots; slots in use keep their index."""
        used = len(self.meta)
        old_free = self.free[: self.nfree].copy()
        old = (self.data, self.cov, self.meta, self.marks)
        self._alloc(used * 2)
        for new, prev in zip((self.data, self.cov, self.meta, self.marks), old):
            new[:used] = prev
        stack = np.concatenate([old_free, np.arange(used * 2 - 1, used - 1, -1)])
        self.free = np.zeros(used * 2, np.int64)
        self.free[: len(stack)] = stack
        self.nfree = len(stack)

    def can_grow(self) -> bool:
        return len(self.meta) * 2 <= self.max_slots

    def idle_victims(self, fi: np.ndarray, last_seen: np.ndarray, n: int) -> np.ndarray:
        """The half of the flows holding slots that were active least recently."""
        holding = self.open_flows(fi, n)
        k = max(1, len(holding) // 2)
        if len(holding) <= k:
            return holding
        return holding[np.argpartition(last_seen[holding], k)[:k]]

    def take_done(self) -> np.ndarray:
        out = self.done[: self.ndone].copy()
        self.ndone = 0
        return out

    def stream(self, slot: int, marks: bool = True) -> Stream:
        """The slot's contiguous bytes; ``marks``: also which frame carried each part."""
        contig, maxend, nmarks, _ = self.meta[slot].tolist()
        if not marks:
            return Stream(self.data[slot, :contig].tobytes(), gap=maxend > contig and contig < self.limit,
                          limited=contig >= self.limit)
        marks = self.marks[slot, :nmarks].tolist()
        if any(marks[k][0] > marks[k + 1][0] for k in range(len(marks) - 1)):
            marks.sort(key=lambda m: m[0])
        offsets = tuple(m[0] for m in marks if m[0] < contig)
        frames = tuple(m[1] for m in marks if m[0] < contig)
        return Stream(self.data[slot, :contig].tobytes(), offsets, frames,
                      gap=maxend > contig and contig < self.limit, limited=contig >= self.limit)

    def harvest(self, fi: np.ndarray, flows: np.ndarray, base: int = 0,
                marks: bool = True) -> list[tuple[int, FlowStreams]]:
        """(flow index, FlowStreams) of ``flows``; their slots go back to the free list.

        ``base`` is added to flow indices to give the flow ids of the run; without ``marks``
        the streams carry their bytes only (enough to tell the application protocol)."""
        out = []
        for f in flows.tolist():
            s0, s1 = int(fi[f, ft.SLOT0]), int(fi[f, ft.SLOT1])
            fwd = self.stream(s0, marks) if s0 >= 0 else _EMPTY
            rev = self.stream(s1, marks) if s1 >= 0 else _EMPTY
            for slot in (s0, s1):
                if slot >= 0:
                    self.free[self.nfree] = slot
                    self.nfree += 1
            fi[f, ft.SLOT0] = -1
            fi[f, ft.SLOT1] = -1
            fi[f, ft.FLAGS] |= ft.F_HARVESTED
            if s0 >= 0 or s1 >= 0:
                out.append((f, FlowStreams(base + f, fwd, rev)))
        return out

    def open_flows(self, fi: np.ndarray, n: int) -> np.ndarray:
        """Flows still holding slots (harvested at the end of a file)."""
        return np.flatnonzero((fi[:n, ft.SLOT0] >= 0) | (fi[:n, ft.SLOT1] >= 0))

"""The stream arena: first bytes of each direction kept in place, harvested per finished flow."""

from __future__ import annotations

import numpy as np

from . import _flowtable as ft
from ._native import kernels, ptr
from .streams import Stream

#: How many (offset, frame) marks a direction keeps: enough to place every handshake message.
MARKS = 64
#: Columns of a slot's meta row: contiguous bytes, highest end seen, marks used, owner flow.
META = 4
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
        self.meta = np.zeros((slots, META), np.int64)
        self.marks = np.zeros((slots, MARKS, 2), np.int64)  # (offset, frame)
        self.flat = memoryview(self.data).cast("B")          # the same bytes, for copies without numpy
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

    def harvest(self, fi: np.ndarray, flows: np.ndarray, streams: bool = True) -> list[tuple[int, Stream, Stream]]:
        """(flow index, forward stream, reverse stream) of ``flows`` holding slots; the slots are freed.

        Without ``streams`` each direction is just its contiguous bytes (enough to tell the
        application protocol)."""
        if not len(flows):
            return []
        s0, s1 = fi[flows, ft.SLOT0], fi[flows, ft.SLOT1]
        fi[flows, ft.SLOT0] = -1
        fi[flows, ft.SLOT1] = -1
        fi[flows, ft.FLAGS] |= ft.F_HARVESTED
        held = (s0 >= 0) | (s1 >= 0)
        slots = np.concatenate([s0[s0 >= 0], s1[s1 >= 0]])
        found = dict(zip(slots.tolist(), self._streams(slots) if streams else self._bytes(slots)))
        self.free[self.nfree:self.nfree + len(slots)] = slots
        self.nfree += len(slots)
        get, empty = found.get, (_EMPTY if streams else b"")
        return [(f, get(a, empty), get(b, empty))
                for f, a, b in zip(flows[held].tolist(), s0[held].tolist(), s1[held].tolist())]

    def _bytes(self, slots: np.ndarray) -> list[bytes]:
        """Each slot's contiguous bytes (one copy each, straight from the arena)."""
        flat, limit = self.flat, self.limit
        starts = slots * limit
        ends = starts + np.minimum(self.meta[slots, 0], limit)
        return [flat[a:e].tobytes() for a, e in zip(starts.tolist(), ends.tolist())]

    def _streams(self, slots: np.ndarray) -> list[Stream]:
        """Each slot's contiguous bytes, and which frame carried each part."""
        meta = self.meta[slots]
        contig, maxend = meta[:, 0], meta[:, 1]
        gap = ((maxend > contig) & (contig < self.limit)).tolist()
        limited = (contig >= self.limit).tolist()
        n = len(slots)
        size = max(int(np.minimum(meta[:, 2], MARKS).sum()), 1)
        offs, frames, mends = np.empty(size, np.int64), np.empty(size, np.int64), np.empty(n, np.int64)
        kernels().cp_pack_marks(ptr(self.marks, np.int64), MARKS, ptr(self.meta, np.int64), self.limit,
                                ptr(slots, np.int64), n, ptr(offs, np.int64), ptr(frames, np.int64),
                                ptr(mends, np.int64))
        used = int(mends[-1]) if n else 0
        offsets, frames, ends = offs[:used].tolist(), frames[:used].tolist(), mends.tolist()
        return [Stream(b, tuple(offsets[a:e]), tuple(frames[a:e]), g, li)
                for b, a, e, g, li in zip(self._bytes(slots), [0] + ends[:-1], ends, gap, limited)]

    def open_flows(self, fi: np.ndarray, n: int) -> np.ndarray:
        """Flows still holding slots (harvested at the end of a file)."""
        return np.flatnonzero((fi[:n, ft.SLOT0] >= 0) | (fi[:n, ft.SLOT1] >= 0))

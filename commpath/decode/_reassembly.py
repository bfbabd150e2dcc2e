"""The stream arena: first bytes of each direction kept in place, harvested per finished flow."""

from __future__ import annotations

import numpy as np

from . import _flowtable as ft
from ._native import kernels, ptr
from .streams import FlowStreams, Stream

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

    def holders(self) -> np.ndarray:
        """The flows holding slots (sorted), from the owners of the slots in use: a look at the slots
        only, not at every flow of the table (eviction runs often when many connections are open)."""
        used = np.ones(len(self.meta), bool)
        used[self.free[: self.nfree]] = False
        return np.unique(self.meta[used, 3])

    def idle_victims(self, last_seen: np.ndarray) -> np.ndarray:
        """The half of the flows holding slots that were active least recently."""
        holding = self.holders()
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
        s0, s1 = self.release(fi, flows)
        held = (s0 >= 0) | (s1 >= 0)
        slots = np.concatenate([s0[s0 >= 0], s1[s1 >= 0]])
        found = dict(zip(slots.tolist(), self._streams(slots) if streams else self._bytes(slots)))
        get, empty = found.get, (_EMPTY if streams else b"")
        return [(f, get(a, empty), get(b, empty))
                for f, a, b in zip(flows[held].tolist(), s0[held].tolist(), s1[held].tolist())]

    def release(self, fi: np.ndarray, flows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Free the slots of ``flows`` (their bytes stay until the next write); returns the slots they held."""
        s0, s1 = fi[flows, ft.SLOT0], fi[flows, ft.SLOT1]
        fi[flows, ft.SLOT0] = -1
        fi[flows, ft.SLOT1] = -1
        fi[flows, ft.FLAGS] |= ft.F_HARVESTED
        slots = np.concatenate([s0[s0 >= 0], s1[s1 >= 0]])
        self.free[self.nfree:self.nfree + len(slots)] = slots
        self.nfree += len(slots)
        return s0, s1

    def tls_batch(self, fi: np.ndarray, flows: np.ndarray) -> tuple[np.ndarray, "StreamBatch"]:
        """The ``flows`` that open with a TLS ClientHello from the initiator, answered by bytes that start
        like neither SSH nor HTTP/2 (appproto.detect_bytes says "tls", not turned), as their positions in
        ``flows`` and a StreamBatch of where their bytes lie (valid until the slots are released)."""
        n = len(flows)
        flows = np.ascontiguousarray(flows, np.int64)
        sel = np.empty(n, np.int64)
        start, lens, flags, mend = (np.empty(2 * n, np.int64) for _ in range(4))
        size = 2 * n * MARKS + 1
        offs, frames = np.empty(size, np.int64), np.empty(size, np.int64)
        k = kernels().cp_select_tls(ptr(fi, np.int64), ptr(flows, np.int64), n, ptr(self.data, np.uint8),
                                    self.limit, ptr(self.meta, np.int64), ptr(self.marks, np.int64), MARKS,
                                    ptr(sel, np.int64), ptr(start, np.int64), ptr(lens, np.int64),
                                    ptr(flags, np.int64), ptr(offs, np.int64), ptr(frames, np.int64),
                                    ptr(mend, np.int64))
        used = int(mend[2 * k - 1]) if k else 0
        start, lens = start[:2 * k], lens[:2 * k]
        return sel[:k], StreamBatch(k, self.data.ctypes.data + start, lens, self.flat, start.tolist(), lens.tolist(),
                                    offs[:used], frames[:used], mend[:2 * k], flags[:2 * k])

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


class StreamBatch:
    """Connections handed over straight from the stream arena, both directions of each interleaved
    (initiator's, responder's): where their bytes lie and which frames carried them. A consumer reads
    them before the slots are released; :meth:`flow_streams` builds a connection's FlowStreams on demand.
    """

    __slots__ = ("n", "pointers", "lens", "flat", "starts", "sizes", "offsets", "frames", "mark_ends", "flags",
                 "flow_ids", "ts", "app_protocol", "_addr", "_texts", "_src", "_dst")

    def __init__(self, n, pointers, lens, flat, starts, sizes, offsets, frames, mark_ends, flags):
        self.n = n
        self.pointers = pointers        # int64 array (2n): where each direction's bytes lie in memory
        self.lens = lens                # int64 array (2n): how many bytes each has
        self.flat = flat                # the arena's bytes (memoryview); starts/sizes (lists) index into it
        self.starts, self.sizes = starts, sizes
        self.offsets, self.frames = offsets, frames    # int64 arrays: every direction's marks, one after another
        self.mark_ends = mark_ends                     # int64 array (2n): where direction j's marks end in those
        self.flags = flags              # int64 array (2n): 1 a gap cut the bytes short, 2 the limit did
        self.flow_ids: list[int] = []
        self.ts: list[float] = []
        self._addr = self._texts = self._src = self._dst = None
        self.app_protocol = ""

    def ips_from(self, addr: np.ndarray, texts) -> None:
        """The connections' IP addresses: the flow table's address rows, and how (hi, lo) arrays become texts."""
        self._addr, self._texts = addr, texts

    @property
    def src_ips(self) -> list[str]:
        """Each connection's initiator address (text, formatted on first use)."""
        if self._src is None:
            self._src = self._texts(self._addr[:, ft.SRC_HI], self._addr[:, ft.SRC_LO])
        return self._src

    @property
    def dst_ips(self) -> list[str]:
        """Each connection's responder address, as dialled (text, formatted on first use)."""
        if self._dst is None:
            self._dst = self._texts(self._addr[:, ft.DST_HI], self._addr[:, ft.DST_LO])
        return self._dst

    def stream(self, j: int) -> Stream:
        """Direction ``j`` (2k: connection k's initiator, 2k + 1: its responder) as a Stream."""
        a, e = (int(self.mark_ends[j - 1]) if j else 0), int(self.mark_ends[j])
        start = self.starts[j]
        return Stream(self.flat[start:start + self.sizes[j]].tobytes(), tuple(self.offsets[a:e].tolist()),
                      tuple(self.frames[a:e].tolist()), bool(self.flags[j] & 1), bool(self.flags[j] & 2))

    def flow_streams(self, k: int) -> FlowStreams:
        """Connection ``k`` as the engine hands it to ``on_streams`` one by one."""
        return FlowStreams(self.flow_ids[k], self.stream(2 * k), self.stream(2 * k + 1), self.app_protocol,
                           self.src_ips[k], self.dst_ips[k], self.ts[k])

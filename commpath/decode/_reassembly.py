"""Payload segments kept by the flow table, put back in sequence order per direction."""

from __future__ import annotations

import numpy as np

from .streams import FlowStreams, Stream


class SegmentStore:
    """Collects the kept payload of every chunk; builds :class:`FlowStreams` at the end."""

    def __init__(self, limit: int):
        self.limit = limit
        self._meta: list[np.ndarray] = []
        self._data: list[np.ndarray] = []
        self._size = 0

    def add(self, buf: np.ndarray, pl_off: np.ndarray, pkt_flow: np.ndarray, pkt_dir: np.ndarray,
            seg_rel: np.ndarray, seg_take: np.ndarray, frame0: int) -> None:
        idx = np.flatnonzero(seg_take > 0)
        if idx.size == 0:
            return
        lens = seg_take[idx].astype(np.int64)
        starts = pl_off[idx]
        ends = np.cumsum(lens)
        positions = np.repeat(starts - (ends - lens), lens) + np.arange(int(ends[-1]), dtype=np.int64)
        self._data.append(buf[positions])
        meta = np.empty((idx.size, 6), np.int64)
        meta[:, 0] = pkt_flow[idx]
        meta[:, 1] = pkt_dir[idx]
        meta[:, 2] = seg_rel[idx]
        meta[:, 3] = lens
        meta[:, 4] = frame0 + idx
        meta[:, 5] = self._size + ends - lens      # offset in the concatenated data
        self._size += int(ends[-1])
        self._meta.append(meta)

    def streams(self, flow_id_base: int = 0) -> dict[int, FlowStreams]:
        """Reassemble each direction from offset 0 up to the first gap or the limit."""
        if not self._meta:
            return {}
        meta = np.concatenate(self._meta)
        data = np.concatenate(self._data).tobytes()
        self._meta, self._data = [], []
        order = np.lexsort((meta[:, 4], meta[:, 2], meta[:, 1], meta[:, 0]))
        meta = meta[order]
        keys = meta[:, 0] * 2 + meta[:, 1]
        bounds = np.flatnonzero(np.diff(keys)) + 1
        starts = np.concatenate(([0], bounds))
        stops = np.concatenate((bounds, [len(meta)]))
        halves: dict[int, list[Stream | None]] = {}
        rows = meta.tolist()
        for lo, hi in zip(starts.tolist(), stops.tolist()):
            flow, direction = rows[lo][0], rows[lo][1]
            pieces: list[bytes] = []
            offsets: list[int] = []
            frames: list[int] = []
            end = 0
            gap = False
            for _, _, rel, length, frame, doff in rows[lo:hi]:
                if rel > end:
                    gap = True
                    break
                if rel + length <= end:
                    continue               # retransmission of bytes we have
                skip = end - rel
                pieces.append(data[doff + skip: doff + length])
                offsets.append(end)
                frames.append(frame)
                end = rel + length
            stream = Stream(b"".join(pieces), tuple(offsets), tuple(frames), gap=gap, limited=end >= self.limit)
            halves.setdefault(flow, [None, None])[direction] = stream
        empty = Stream()
        return {flow_id_base + f: FlowStreams(flow_id_base + f, h[0] or empty, h[1] or empty)
                for f, h in halves.items()}

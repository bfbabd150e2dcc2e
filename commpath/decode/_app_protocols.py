"""Each harvested connection's application protocol from its first bytes; its streams passed on or kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import _flowtable as ft
from ._flow_columns import INIT_PAYLOAD, INIT_SYNACK, addresses
from ._reassembly import StreamArena
from .appproto import detect_bytes
from .streams import FlowStreams, Stream

StreamSink = Callable[[FlowStreams], None]

_SWAP = [("src_ip", "dst_ip"), ("src_port", "dst_port"), ("packets_fwd", "packets_rev"),
         ("bytes_fwd", "bytes_rev"), ("payload_fwd", "payload_rev"), ("tunnel_src", "tunnel_dst")]


@dataclass
class KeepBudget:
    """Bytes of streams that ``Capture.streams`` may still keep in one read."""

    total: int
    left: int = -1

    def __post_init__(self):
        self.left = self.total

    def take(self, fs: FlowStreams) -> bool:
        size = len(fs.fwd.data) + len(fs.rev.data)
        if size > self.left:
            return False
        self.left -= size
        return True


class AppProtocols:
    """Collects each harvested connection's application protocol; passes its streams on."""

    def __init__(self, base: int, budget: KeepBudget | None, sink: StreamSink | None):
        self.base = base
        self.budget = budget
        self.not_kept = 0
        self.sink = sink
        self.streams: dict[int, FlowStreams] = {}
        self.rows: list[tuple[int, str, bool, bool]] = []
        self._ips: dict[tuple[int, int], str] = {}
        self._late: list[FlowStreams] = []     # turned by their payload: sunk once the SYN has had its say
        #: the sink's door for TLS connections in batches, straight from the arena (when none are kept)
        self.tls_batch = getattr(sink, "tls_batch", None) if budget is None else None

    @property
    def wants_streams(self) -> bool:
        """Whether anyone takes the streams (else only their first bytes are looked at)."""
        return self.budget is not None or self.sink is not None

    def add_protocols(self, harvested: list[tuple[int, bytes, bytes]]) -> None:
        """The application protocol of connections whose streams nobody takes."""
        rows = self.rows
        for f, fwd, rev in harvested:
            rows.append((f, *detect_bytes(fwd, rev)))

    def add(self, harvested: list[tuple[int, Stream, Stream]], table: ft.FlowTable) -> None:
        if not harvested:
            return
        idx = np.fromiter([h[0] for h in harvested], np.int64, len(harvested))
        a, base, rows, sink_one = table.fa[idx], self.base, self.rows, self.sink_one
        for (f, fwd, rev), src, dst, ts in zip(harvested, self._ip_texts(a[:, ft.SRC_HI], a[:, ft.SRC_LO]),
                                              self._ip_texts(a[:, ft.DST_HI], a[:, ft.DST_LO]),
                                              table.ft[idx, ft.TS0].tolist()):
            proto, connect, swap = detect_bytes(fwd.data, rev.data)
            rows.append((f, proto, connect, swap))
            if swap:
                sink_one(FlowStreams(base + f, rev, fwd, proto, dst, src, ts), swap)
            else:
                sink_one(FlowStreams(base + f, fwd, rev, proto, src, dst, ts), swap)

    def add_tls_batch(self, arena: StreamArena, table: ft.FlowTable, flows: np.ndarray) -> np.ndarray:
        """Hand the TLS connections among ``flows`` to the sink's ``tls_batch`` as one StreamBatch, then
        release their slots; returns the other flows."""
        sel, batch = arena.tls_batch(table.fi, flows)
        if not len(sel):
            return flows
        taken = flows[sel]
        batch.flow_ids = (taken + self.base).tolist()
        batch.ts = table.ft[taken, ft.TS0].tolist()
        batch.ips_from(table.fa[taken], self._ip_texts)
        batch.app_protocol = "tls"
        self.tls_batch(batch)
        arena.release(table.fi, taken)
        self.rows += [(f, "tls", False, False) for f in taken.tolist()]
        return np.delete(flows, sel)

    def _ip_texts(self, hi: np.ndarray, lo: np.ndarray) -> list[str]:
        """IPv4 or IPv6 text of each (hi, lo) address (each distinct one formatted once per file)."""
        texts, ip = self._ips, self._ip
        return [texts.get(k) or ip(k) for k in zip(hi.tolist(), lo.tolist())]

    def _ip(self, key: tuple[int, int]) -> str:
        text = self._ips[key] = str(addresses(np.array([key[0]], np.uint64), np.array([key[1]], np.uint64))[0])
        return text

    def sink_one(self, fs: FlowStreams, swap: bool) -> None:
        if self.budget is not None:
            if self.budget.take(fs):
                self.streams[fs.flow_id] = fs
            else:
                self.not_kept += 1
        if self.sink is not None and not swap:
            self.sink(fs)
        elif self.sink is not None:
            self._late.append(fs)

    def apply(self, cols: dict) -> dict:
        """Set app_protocol; turn round flows whose initiator was a guess the payload contradicts."""
        if not self.rows:
            return cols
        idx, proto, connect, swap = zip(*self.rows)
        idx = np.asarray(idx, np.int64)
        cols["app_protocol"][idx] = proto
        cols["http_connect"][idx] = connect
        turn = np.zeros(len(cols["flow_id"]), bool)
        turn[idx] = swap
        guessed = cols["initiator"] > INIT_SYNACK
        for fs in self._late:                       # streams already turned; the row follows below
            if self.sink is not None:
                self.sink(fs if guessed[fs.flow_id - self.base] else fs.turned())
        undo = turn & ~guessed                      # a SYN says otherwise: keep the SYN's direction
        for f in np.flatnonzero(undo).tolist():
            fid = f + self.base
            if fid in self.streams:
                s = self.streams[fid]
                self.streams[fid] = s.turned()
        turn &= guessed
        if turn.any():
            for a, b in _SWAP:
                av = cols[a][turn]
                cols[a][turn] = cols[b][turn]
                cols[b][turn] = av
            cols["initiator"][turn] = INIT_PAYLOAD
        return cols


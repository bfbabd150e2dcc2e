"""The decode engine: capture files in, one connection record per flow out, streaming."""

from __future__ import annotations

import gc
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from ..errors import InputError
from . import _flowtable as ft
from ._app_protocols import AppProtocols, KeepBudget, StreamSink
from ._flow_columns import (ADDRESS_CODE_COLUMNS, CODE_COLUMNS, INIT_CATEGORIES, TUNNEL_CATEGORIES, UDP_PORT_PROTOCOLS,
                            flow_columns, flow_frame)
from ._packets import LINKTYPES, ST_FRAGMENT, ST_MALFORMED, ST_UNSUPPORTED_LINK, parse
from ._pcapfile import CHUNK, ReadState, iter_records
from ._reassembly import StreamArena
from .limits import MAX_PAYLOAD_LIMIT, MIN_PAYLOAD_LIMIT, PAYLOAD_LIMIT, check_payload_limit
from .schema import CAPTURE_COLUMNS, FLOW_COLUMNS, conform, empty_frame
from .streams import FlowStreams

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ADDRESS_CODE_COLUMNS", "CAPTURE_SUFFIXES", "CODE_COLUMNS", "HARVEST_BATCH", "INIT_CATEGORIES", "KEPT_STREAMS_BUDGET", "MAX_PAYLOAD_LIMIT",
    "MIN_PAYLOAD_LIMIT", "PAYLOAD_LIMIT", "STREAM_BUDGET",
    "TUNNEL_CATEGORIES", "UDP_PORT_PROTOCOLS", "UDP_TIMEOUT", "Capture", "FlowStreams", "Progress", "StreamSink",
    "capture_of", "check_payload_limit", "collector_paused", "read", "read_columns",
]

#: Memory for stream payload of connections still open (least recently active go first).
STREAM_BUDGET = 48 * 1024 * 1024
#: Completed connections wait in the arena until this many can be harvested at once (fewer, larger
#: batches); when the arena runs short of slots they go first, before any open one is evicted.
HARVEST_BATCH = 256
#: Memory for streams kept in ``Capture.streams`` (``on_streams`` consumes every one, unbounded by this).
KEPT_STREAMS_BUDGET = 16 * 1024 * 1024
#: A UDP flow idle for longer than this ends; the next datagram starts a new one.
UDP_TIMEOUT = 60.0
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz", ".cap.gz", ".dmp")

Progress = Callable[[str, int, int], None]   # (file, bytes done, bytes total)


@dataclass
class Capture:
    """What the decode layer read: connections, capture files, and the first bytes of streams."""

    flows: pd.DataFrame
    captures: pd.DataFrame
    streams: dict[int, FlowStreams] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        return bool(self.captures["partial"].any()) if len(self.captures) else False

    @property
    def warnings(self) -> list[str]:
        return [f"{row.file}: {w}" for row in self.captures.itertuples() for w in row.warnings]

    def __repr__(self) -> str:
        return f"<commpath.Capture: {len(self.captures)} capture(s), {len(self.flows)} flows>"


def read(*inputs: str | os.PathLike, payload_limit: int = PAYLOAD_LIMIT, udp_timeout: float = UDP_TIMEOUT,
         progress: Progress | None = None, strict: bool = False, keep_streams: bool = True,
         on_streams: StreamSink | None = None, chunk_size: int = CHUNK, stream_budget: int = STREAM_BUDGET,
         kept_streams_budget: int = KEPT_STREAMS_BUDGET) -> Capture:
    """Read capture files and folders of captures into a :class:`Capture`.

    The first ``payload_limit`` bytes of each direction of each TCP connection are
    reassembled; each connection's :class:`FlowStreams` is handed to ``on_streams`` as
    soon as the connection ends (bounded memory), and kept in ``Capture.streams`` when
    ``keep_streams``, up to ``kept_streams_budget`` bytes (a warning says when more were
    seen). Files that cannot be read at all are reported as warnings of the run unless
    every input is unusable (or ``strict``): then :class:`InputError` names the first.
    Python's cyclic garbage collector is paused meanwhile (``on_streams`` runs with it paused)
    and restored as it was.

    When nothing is kept and ``on_streams`` also has a ``tls_batch`` method (a
    :class:`~commpath.decode.handshakes.HandshakeAnalyzer` has), the connections that open
    with a TLS ClientHello go to ``tls_batch`` instead, as a ``StreamBatch`` that points
    into the engine's buffers (no copy per connection); every other one to ``on_streams``.
    """
    with collector_paused():
        flows, captures, streams = read_columns(inputs, payload_limit, udp_timeout, progress, strict, keep_streams,
                                             on_streams, chunk_size, stream_budget, kept_streams_budget)
        return capture_of(flows, captures, streams)


def capture_of(flows: list[dict], captures: list[dict], streams: dict) -> Capture:
    """The :class:`Capture` of what :func:`read_columns` read (``flows`` is emptied)."""
    import pandas as pd
    frames = [flow_frame(flows.pop(0)) for _ in range(len(flows))]   # each file's columns freed once framed
    flow_df = pd.concat(frames, ignore_index=True) if frames else empty_frame(FLOW_COLUMNS)
    cap_df = pd.DataFrame(captures) if captures else empty_frame(CAPTURE_COLUMNS)
    return Capture(conform(flow_df, FLOW_COLUMNS), conform(cap_df, CAPTURE_COLUMNS), streams)


@contextmanager
def collector_paused():
    """Python's cyclic garbage collector paused for a while, then as it was.

    Reading makes many small objects that hold no cycles (reference counting frees them), yet
    each collection would walk every object alive, all of pandas included. The objects made
    meanwhile that are still alive then join the oldest generation at once (a freeze and an
    unfreeze move them there without walking them): otherwise the first allocation after the
    pause would walk them all, 20-30 ms after each read. A full collection still looks at them
    when it next runs. Left alone when the program uses the permanent generation itself.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def read_columns(inputs, payload_limit: int = PAYLOAD_LIMIT, udp_timeout: float = UDP_TIMEOUT,
              progress: Progress | None = None, strict: bool = False, keep_streams: bool = True,
              on_streams: StreamSink | None = None, chunk_size: int = CHUNK, stream_budget: int = STREAM_BUDGET,
              kept_streams_budget: int = KEPT_STREAMS_BUDGET) -> tuple[list[dict], list[dict], dict]:
    """What :func:`read` reads, before pandas: flow columns (numpy) per file, capture rows, kept streams
    (`commpath flows` prints these without ever importing pandas)."""
    payload_limit = check_payload_limit(payload_limit)
    files = list(_expand(inputs))
    budget = KeepBudget(kept_streams_budget) if keep_streams else None
    flows, captures, streams, errors = [], [], {}, []
    next_id = 0
    for path, manifest in files:
        try:
            f, c, s = _read_file(path, manifest, next_id, payload_limit, udp_timeout, progress,
                                 budget, on_streams, chunk_size, stream_budget)
        except InputError as exc:
            if strict or len(files) == 1:
                raise
            errors.append(exc)
            captures.append(_capture_row(path, ReadState(str(path), partial=True, warnings=[exc.reason]),
                                         manifest, 0, 0, np.nan, np.nan))
            continue
        next_id += len(f["flow_id"])
        flows.append(f)
        captures.append(c)
        streams.update(s)
    if errors and len(errors) == len(files):
        raise errors[0]
    return flows, captures, streams


def _expand(inputs: Iterable[str | os.PathLike]):
    """(file, manifest) for every capture named or found below a named folder."""
    if not inputs:
        raise InputError("(no input)", "give at least one capture file or folder")
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(CAPTURE_SUFFIXES))
            if not found:
                raise InputError(path, "folder holds no capture files (*.pcap, *.pcapng, *.gz)")
            for p in found:
                yield p, _manifest_for(p, stop=path)
        elif path.exists():
            yield path, _manifest_for(path, stop=path.parent)
        else:
            raise InputError(path, "no such file or folder")


def _manifest_for(path: Path, stop: Path) -> dict:
    """The capture agent's manifest.json of the folder holding ``path``, if any."""
    for folder in (path.parent, path.parent.parent):
        m = folder / "manifest.json"
        if m.is_file():
            try:
                return json.loads(m.read_text())
            except (OSError, ValueError):
                return {}
        if folder == stop:
            break
    return {}


def _read_file(path: Path, manifest: dict, flow_base: int, limit: int, udp_timeout: float,
               progress: Progress | None, budget: "KeepBudget | None", on_streams: StreamSink | None,
               chunk_size: int, stream_budget: int):
    state = ReadState(str(path))
    table = ft.FlowTable()
    arena = StreamArena(limit, stream_budget)
    app = AppProtocols(flow_base, budget, on_streams)
    frame0 = 1
    packets = 0
    total_bytes = 0
    first_ts = np.inf
    last_ts = -np.inf
    unsupported: dict[int, int] = {}
    malformed = 0
    truncated = 0
    frag_first: list[np.ndarray] = []
    frag_later: list[np.ndarray] = []
    size = os.path.getsize(path)

    def harvest(flows: np.ndarray) -> None:
        if app.tls_batch is not None and len(flows):
            flows = app.add_tls_batch(arena, table, flows)
        if app.wants_streams:
            app.add(arena.harvest(table.fi, flows), table)
        else:
            app.add_protocols(arena.harvest(table.fi, flows, streams=False))

    for rec in iter_records(path, state, chunk_size):
        n = len(rec)
        h = rec.headers if rec.headers is not None else parse(rec.buf, rec.offset, rec.caplen, rec.linktype)
        pkt_flow = np.empty(n, np.int64)
        pkt_dir = np.zeros(n, np.int8)
        table.update(h, rec.wirelen, rec.caplen, rec.ts, frame0, rec.buf, limit, udp_timeout, pkt_flow, pkt_dir, arena, harvest)
        if arena.ndone >= HARVEST_BATCH:
            harvest(arena.take_done())
        packets += n
        total_bytes += int(rec.wirelen.sum())
        if n:
            lo, hi = np.nanmin(rec.ts) if not np.isnan(rec.ts).all() else np.inf, np.nanmax(rec.ts) if not np.isnan(rec.ts).all() else -np.inf
            first_ts, last_ts = min(first_ts, lo), max(last_ts, hi)
        bad_link = h.status == ST_UNSUPPORTED_LINK
        if bad_link.any():
            for lt_value, count in zip(*np.unique(rec.linktype[bad_link], return_counts=True)):
                unsupported[int(lt_value)] = unsupported.get(int(lt_value), 0) + int(count)
        malformed += int(np.count_nonzero(h.status == ST_MALFORMED))
        truncated += int(np.count_nonzero(rec.caplen < rec.wirelen))
        first = np.flatnonzero((h.frag == 1) & (pkt_flow >= 0))
        if first.size:
            frag_first.append(np.column_stack([h.src_lo[first].astype(np.int64), h.dst_lo[first].astype(np.int64),
                                               h.ip_id[first].astype(np.int64), h.proto[first].astype(np.int64),
                                               pkt_flow[first], pkt_dir[first].astype(np.int64)]))
        later = np.flatnonzero(h.status == ST_FRAGMENT)
        if later.size:
            frag_later.append(np.column_stack([h.src_lo[later].astype(np.int64), h.dst_lo[later].astype(np.int64),
                                               h.ip_id[later].astype(np.int64), h.proto[later].astype(np.int64),
                                               rec.wirelen[later].astype(np.int64), frame0 + later,
                                               h.pl_wire[later].astype(np.int64)]))
        frame0 += n
        if progress:
            progress(str(path), min(state.bytes_read, size), size)
    rec = h = pkt_flow = pkt_dir = None     # the last chunk's packets and headers: not kept while the columns are made
    harvest(arena.take_done())
    harvest(arena.open_flows(table.fi, table.n))
    if packets == 0 and state.partial:
        raise InputError(path, state.warnings[-1] if state.warnings else "no readable packet")
    if unsupported:
        names = ", ".join(f"{LINKTYPES.get(k, k)} ({v} packets)" for k, v in sorted(unsupported.items()))
        if sum(unsupported.values()) == packets:
            raise InputError(path, f"unsupported link type {names}")
        state.warnings.append(f"packets of unsupported link type skipped: {names}")
        state.partial = True
    if malformed:
        state.warnings.append(f"{malformed} packets with malformed or cut headers were not attributed to a flow")
    if truncated:
        state.warnings.append(f"{truncated} packets cut by the snaplen; payload counts use the lengths on the wire")
    n = table.n
    fi, fa, ftime = table.fi[:n], table.fa[:n], table.ft[:n]
    if frag_later:
        _attach_fragments(fi, ftime, np.concatenate(frag_first) if frag_first else np.empty((0, 6), np.int64),
                          np.concatenate(frag_later), state)
    flows = app.apply(flow_columns(fi, fa, ftime, str(path), flow_base))
    if app.not_kept:
        state.warnings.append(f"first bytes of {app.not_kept} connections not kept in Capture.streams "
                              f"(memory budget of {budget.total >> 20} MiB); on_streams= receives every one")
    cap = _capture_row(path, state, manifest, packets, total_bytes,
                       first_ts if packets else np.nan, last_ts if packets else np.nan)
    return flows, cap, app.streams


def _attach_fragments(fi, ftime, first, later, state: ReadState) -> None:
    """Count later IP fragments with the flow of their first fragment (same src, dst, id, proto)."""
    import pandas as pd
    if not len(first):
        state.warnings.append(f"{len(later)} IP fragments whose first fragment was not captured")
        return
    a = pd.DataFrame(first, columns=["s", "d", "id", "p", "flow", "dir"]).drop_duplicates(["s", "d", "id", "p"], keep="last")
    b = pd.DataFrame(later, columns=["s", "d", "id", "p", "wire", "frame", "pl"])
    m = b.merge(a, on=["s", "d", "id", "p"], how="left")
    orphan = int(m["flow"].isna().sum())
    m = m.dropna(subset=["flow"])
    if len(m):
        flow = m["flow"].to_numpy(np.int64)
        d = m["dir"].to_numpy(np.int64)
        np.add.at(fi, (flow, ft.PK0 + d), 1)
        np.add.at(fi, (flow, ft.BY0 + d), m["wire"].to_numpy(np.int64))
        tcp = m["p"].to_numpy(np.int64) == 6     # a UDP datagram's payload was counted at its first fragment
        np.add.at(fi, (flow[tcp], ft.PL0 + d[tcp]), m["pl"].to_numpy(np.int64)[tcp])
        np.add.at(fi, (flow, ft.FRAGS), 1)
        np.maximum.at(fi[:, ft.LAST_FRAME], flow, m["frame"].to_numpy(np.int64))
    if orphan:
        state.warnings.append(f"{orphan} IP fragments whose first fragment was not captured")


def _capture_row(path: Path, state: ReadState, manifest: dict, packets: int, nbytes: int,
                 first_ts: float, last_ts: float) -> dict:
    return {
        "file": str(path),
        "format": state.format or "unknown",
        "link_types": ",".join(LINKTYPES.get(t, str(t)) for t in sorted(state.linktypes)),
        "packets": packets,
        "bytes": nbytes,
        "first_ts": first_ts,
        "last_ts": last_ts,
        "partial": state.partial,
        "warnings": list(state.warnings),
        "host": manifest.get("host"),
        "role": manifest.get("role"),
    }


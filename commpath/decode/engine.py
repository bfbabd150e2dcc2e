"""The decode engine: capture files in, one connection record per flow out, streaming."""

from __future__ import annotations

import gc
import ipaddress
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from ..errors import InputError
from . import _flowtable as ft
from ._packets import LINKTYPES, ST_FRAGMENT, ST_MALFORMED, ST_UNSUPPORTED_LINK, TUNNELS, parse
from ._pcapfile import CHUNK, ReadState, iter_records
from ._reassembly import StreamArena
from .appproto import detect_bytes
from .schema import CAPTURE_COLUMNS, FLOW_COLUMNS, conform, empty_frame
from .streams import FlowStreams, Stream

if TYPE_CHECKING:
    import pandas as pd

#: Bytes kept from the start of each direction of each TCP connection.
PAYLOAD_LIMIT = 16384
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


StreamSink = Callable[[FlowStreams], None]


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
        import pandas as pd
        flow_df = pd.concat([_frame(f) for f in flows], ignore_index=True) if flows else empty_frame(FLOW_COLUMNS)
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
    files = list(_expand(inputs))
    budget = _KeepBudget(kept_streams_budget) if keep_streams else None
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
               progress: Progress | None, budget: "_KeepBudget | None", on_streams: StreamSink | None,
               chunk_size: int, stream_budget: int):
    state = ReadState(str(path))
    table = ft.FlowTable()
    arena = StreamArena(limit, stream_budget)
    app = _AppProtocols(flow_base, budget, on_streams)
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
    flows = app.apply(_flow_columns(fi, fa, ftime, str(path), flow_base))
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


def _addresses(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """IPv4 or IPv6 text for each (hi, lo) pair, formatted once per distinct address."""
    if hi.size == 0:
        return np.array([], dtype=object)
    pairs = np.stack([hi, lo], axis=1)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    texts = []
    for h, l in uniq.tolist():
        if h == 0 and (l >> 32) == 0xFFFF:
            texts.append(str(ipaddress.IPv4Address(l & 0xFFFFFFFF)))
        else:
            texts.append(str(ipaddress.IPv6Address((h << 64) | l)))
    return np.asarray(texts, dtype=object)[inverse.reshape(-1)]


def _flow_columns(fi: np.ndarray, fa: np.ndarray, ftime: np.ndarray, capture: str, base: int) -> dict:
    """The flow table of one file as numpy columns (``initiator`` and ``tunnel`` as codes, -1 for no VNI/VLAN)."""
    n = len(fi)
    flags = fi[:, ft.FLAGS]
    proto = fi[:, ft.PROTO]
    transport = np.where(proto == 6, "tcp", np.where(proto == 17, "udp", np.where(proto == 50, "esp", "other")))
    rst = (flags & ft.F_RST) != 0
    fin = (flags & (ft.F_FIN0 | ft.F_FIN1)) != 0
    end_state = np.where(proto != 6, "open", np.where(rst, "rst", np.where(fin, "fin", "open")))
    tunnel = fi[:, ft.TUNNEL]
    has_tunnel = tunnel != 0
    tun_src = np.where(has_tunnel, _addresses(fa[:, ft.TSRC_HI], fa[:, ft.TSRC_LO]), None) if n else np.array([], object)
    tun_dst = np.where(has_tunnel, _addresses(fa[:, ft.TDST_HI], fa[:, ft.TDST_LO]), None) if n else np.array([], object)
    sport = fi[:, ft.SPORT]
    dport = fi[:, ft.DPORT]
    payload_fwd, payload_rev = fi[:, ft.PL0], fi[:, ft.PL1]
    app = _udp_app_protocol(proto, sport, dport)
    encrypted_underlay = (app == "wireguard") | (app == "esp")
    app[(transport == "udp") & (payload_fwd + payload_rev > 0) & (app == "none")] = "unknown"
    return {
        "flow_id": np.arange(base, base + n, dtype=np.int64),
        "capture": capture,
        "first_frame": fi[:, ft.FIRST_FRAME],
        "last_frame": fi[:, ft.LAST_FRAME],
        "ts_start": ftime[:, ft.TS0],
        "ts_end": ftime[:, ft.TS1],
        "ip_version": fi[:, ft.IPVER].astype(np.int8),
        "src_ip": _addresses(fa[:, ft.SRC_HI], fa[:, ft.SRC_LO]),
        "src_port": sport.astype(np.int32),
        "dst_ip": _addresses(fa[:, ft.DST_HI], fa[:, ft.DST_LO]),
        "dst_port": dport.astype(np.int32),
        "transport": transport,
        "packets": fi[:, ft.PK0] + fi[:, ft.PK1],
        "bytes": fi[:, ft.BY0] + fi[:, ft.BY1],
        "packets_fwd": fi[:, ft.PK0],
        "packets_rev": fi[:, ft.PK1],
        "bytes_fwd": fi[:, ft.BY0],
        "bytes_rev": fi[:, ft.BY1],
        "payload_fwd": payload_fwd,
        "payload_rev": payload_rev,
        "syn_seen": (flags & ft.F_SYN) != 0,
        "synack_seen": (flags & ft.F_SYNACK) != 0,
        "handshake_seen": (flags & ft.F_HS_DONE) != 0,
        "end_state": end_state,
        "initiator": fi[:, ft.INIT].copy(),
        "app_protocol": app,
        "http_connect": np.zeros(n, bool),
        "tunnel": tunnel,
        "tunnel_src": tun_src,
        "tunnel_dst": tun_dst,
        "tunnel_vni": fi[:, ft.VNI],
        "vlan": fi[:, ft.VLAN],
        "fragments": fi[:, ft.FRAGS].astype(np.int32),
        "truncated_packets": fi[:, ft.TRUNC].astype(np.int32),
        "encrypted_underlay": encrypted_underlay,
    }


INIT_CATEGORIES = [ft.INIT_NAMES[i] for i in range(len(ft.INIT_NAMES))]
INIT_SYNACK, INIT_PAYLOAD = INIT_CATEGORIES.index("synack"), INIT_CATEGORIES.index("payload")
TUNNEL_CATEGORIES = [TUNNELS[i] for i in range(len(TUNNELS))]


def _frame(cols: dict) -> pd.DataFrame:
    """One file's flow columns as a DataFrame (codes become categories, -1 becomes NA)."""
    import pandas as pd
    data = dict(cols)
    data["initiator"] = pd.Categorical.from_codes(cols["initiator"], INIT_CATEGORIES)
    data["tunnel"] = pd.Categorical.from_codes(cols["tunnel"], TUNNEL_CATEGORIES)
    for name, dtype in (("tunnel_vni", np.int64), ("vlan", np.int32)):
        v = cols[name]
        data[name] = pd.arrays.IntegerArray(np.where(v >= 0, v, 0).astype(dtype), v < 0)
    return pd.DataFrame(data)


#: UDP services recognised by port: overlays and encrypted underlays.
UDP_PORT_PROTOCOLS = {51820: "wireguard", 4789: "vxlan", 8472: "vxlan", 6081: "geneve"}


def _udp_app_protocol(proto: np.ndarray, sport: np.ndarray, dport: np.ndarray) -> np.ndarray:
    app = np.where(proto == 50, "esp", "none").astype(object)
    for port, name in UDP_PORT_PROTOCOLS.items():
        app[(proto == 17) & ((sport == port) | (dport == port))] = name
    return app


_SWAP = [("src_ip", "dst_ip"), ("src_port", "dst_port"), ("packets_fwd", "packets_rev"),
         ("bytes_fwd", "bytes_rev"), ("payload_fwd", "payload_rev"), ("tunnel_src", "tunnel_dst")]


@dataclass
class _KeepBudget:
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


class _AppProtocols:
    """Collects each harvested connection's application protocol; passes its streams on."""

    def __init__(self, base: int, budget: _KeepBudget | None, sink: StreamSink | None):
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
        text = self._ips[key] = str(_addresses(np.array([key[0]], np.uint64), np.array([key[1]], np.uint64))[0])
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

"""A capture cut down to chosen TCP connections, keeping each packet's original frame number.

Only the few connections whose requests are decrypted go to tshark; the rest of a capture never
reaches a dissector. The cut is one pass of the compiled record indexer and header parser over
the file, packets picked with a vectorized key match (no Python per packet of the capture); only
the picked packets are written, one pcap per link type (pcap has one link type per file)."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._packets import IPPROTO_TCP, parse
from ._pcapfile import ReadState, iter_records

#: the most packet bytes written per capture: a bound on the slice whatever the connections carry
MAX_SLICE_BYTES = 512 * 1024 * 1024
_PCAP_NS_MAGIC = 0xA1B23C4D
_MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class Slice:
    """The pcaps written for one capture and, per pcap, the original frame number of each packet."""

    files: dict[int, Path] = field(default_factory=dict)        # link type -> pcap
    frames: dict[int, list[int]] = field(default_factory=dict)  # link type -> original frame numbers, in order
    packets: int = 0                  # packets written
    bytes: int = 0                    # packet bytes written
    scanned: int = 0                  # packets of the capture looked at
    partial: bool = False             # the capture could be read only in part, or the slice hit its bound
    warnings: list[str] = field(default_factory=list)   # the slice's own bound, when reached

    def frame_map(self, linktype: int) -> np.ndarray:
        """Original frame number of each packet of the pcap of ``linktype`` (index: its frame number - 1)."""
        return np.asarray(self.frames.get(linktype, []), dtype=np.int64)


def address_words(ip: str) -> tuple[int, int]:
    """(hi, lo) of an address as the header parser stores it (IPv4 as ::ffff:a.b.c.d)."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return 0, (0xFFFF << 32) | int(addr)
    value = int(addr)
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


def _endpoint_hash(hi: np.ndarray, lo: np.ndarray, port: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = (hi * _MIX) ^ (lo + _MIX * np.uint64(3)) ^ (port.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9))
        h ^= h >> np.uint64(31)
        return h * np.uint64(0x94D049BB133111EB)


def connection_key(hi1, lo1, p1, hi2, lo2, p2) -> np.ndarray:
    """One uint64 per connection, the same from either end (the two endpoint hashes summed)."""
    with np.errstate(over="ignore"):
        return _endpoint_hash(hi1, lo1, p1) + _endpoint_hash(hi2, lo2, p2)


def keys_of(ends: list[tuple[str, int, str, int]]) -> np.ndarray:
    """Connection keys of (src_ip, src_port, dst_ip, dst_port) tuples."""
    if not ends:
        return np.empty(0, np.uint64)
    a = np.array([address_words(s) for s, _, _, _ in ends], dtype=np.uint64).reshape(-1, 2)
    b = np.array([address_words(d) for _, _, d, _ in ends], dtype=np.uint64).reshape(-1, 2)
    sp = np.array([p for _, p, _, _ in ends], dtype=np.int64)
    dp = np.array([p for _, _, _, p in ends], dtype=np.int64)
    return np.unique(connection_key(a[:, 0], a[:, 1], sp, b[:, 0], b[:, 1], dp))


def slice_capture(capture: Path, ends: list[tuple[str, int, str, int]], out_dir: Path,
                  max_bytes: int = MAX_SLICE_BYTES) -> Slice:
    """Write the TCP packets of the connections ``ends`` (either direction) found in ``capture``."""
    wanted = keys_of(ends)
    result = Slice()
    state = ReadState(str(capture))
    handles: dict[int, object] = {}
    frame0 = 1
    try:
        for rec in iter_records(Path(capture), state):
            n = len(rec)
            h = rec.headers if rec.headers is not None else parse(rec.buf, rec.offset, rec.caplen, rec.linktype)
            key = connection_key(h.src_hi, h.src_lo, h.sport, h.dst_hi, h.dst_lo, h.dport)
            picked = np.flatnonzero((h.proto == IPPROTO_TCP) & np.isin(key, wanted))
            result.scanned += n
            if picked.size:
                if not _write(rec, picked, frame0, result, handles, out_dir, Path(capture).stem, max_bytes):
                    break
            frame0 += n
    finally:
        for fh in handles.values():
            fh.close()
    # what the reader met (a file cut mid-record ...) the decode already said; only the bound is new here
    result.partial = result.partial or state.partial
    return result


def _write(rec, picked: np.ndarray, frame0: int, result: Slice, handles: dict, out_dir: Path, stem: str,
           max_bytes: int) -> bool:
    """Append the picked records of one chunk; False once the byte bound is reached."""
    ts = rec.ts[picked]
    secs = np.floor(np.nan_to_num(ts, nan=0.0, posinf=0.0, neginf=0.0))
    nanos = np.round((np.nan_to_num(ts, nan=0.0, posinf=0.0, neginf=0.0) - secs) * 1e9)
    buf = rec.buf
    for i, s, ns in zip(picked.tolist(), secs.astype(np.int64).tolist(), nanos.astype(np.int64).tolist()):
        lt = int(rec.linktype[i])
        cap, wire, off = int(rec.caplen[i]), int(rec.wirelen[i]), int(rec.offset[i])
        if result.bytes + cap > max_bytes:
            result.partial = True
            result.warnings.append(f"slice stopped at {max_bytes >> 20} MiB of packets; later requests not read")
            return False
        fh = handles.get(lt)
        if fh is None:
            path = out_dir / f"{stem}-lt{lt}.pcap"
            fh = handles[lt] = open(path, "wb")
            fh.write(struct.pack("<IHHiIII", _PCAP_NS_MAGIC, 2, 4, 0, 0, 262144, lt))
            result.files[lt] = path
            result.frames[lt] = []
        fh.write(struct.pack("<IIII", s & 0xFFFFFFFF, min(max(ns, 0), 999_999_999), cap, wire))
        fh.write(buf[off:off + cap].tobytes())
        result.frames[lt].append(frame0 + i)
        result.packets += 1
        result.bytes += cap
    return True


__all__ = ["MAX_SLICE_BYTES", "Slice", "address_words", "connection_key", "keys_of", "slice_capture"]

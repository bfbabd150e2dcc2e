"""Write a capture of N SYN-only connections (one packet each): the worst case per connection.

Every connection is one Ethernet/IPv4/TCP SYN from its own client address (10.64.0.0 upwards,
``--clients`` distinct addresses in turn) and port to one responder (``--to``, default the
apiserver port 192.0.2.10:6443), 1 µs apart. Nothing is sent anywhere: the packets are built with
numpy and written as a classic pcap (``editcap``/``tshark`` read it). Made for issue #12's
"one million SYN-only connections end to end under 15 s and 1 GB".
"""

from __future__ import annotations

import argparse
import ipaddress
import struct
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _checksum16(words: np.ndarray) -> np.ndarray:
    """Ones' complement sums of rows of big-endian 16-bit words."""
    s = words.astype(np.uint64).sum(axis=1)
    while (s >> 16).any():
        s = (s & 0xFFFF) + (s >> 16)
    return (~s & 0xFFFF).astype(np.uint16)


def syn_frames(n: int, clients: int, dst: str, dport: int) -> np.ndarray:
    """``n`` frames of 54 bytes (Ethernet 14 + IPv4 20 + TCP 20) as an (n, 54) uint8 array."""
    f = np.zeros((n, 54), np.uint8)
    f[:, 0:6] = [2, 0, 0, 0, 0, 1]
    f[:, 6:12] = [2, 0, 0, 0, 0, 2]
    f[:, 12:14] = [0x08, 0x00]
    idx = np.arange(n, dtype=np.uint64)
    src = (int(ipaddress.IPv4Address("10.64.0.0")) + (idx % clients)).astype(np.uint32)
    dst_ip = int(ipaddress.IPv4Address(dst))
    ip = f[:, 14:34]
    ip[:, 0], ip[:, 1] = 0x45, 0
    ip[:, 2:4] = np.frombuffer(struct.pack(">H", 40), np.uint8)
    ip[:, 4:6] = (idx & 0xFFFF).astype(">u2").view(np.uint8).reshape(n, 2)
    ip[:, 6], ip[:, 8], ip[:, 9] = 0x40, 64, 6
    ip[:, 12:16] = src.astype(">u4").view(np.uint8).reshape(n, 4)
    ip[:, 16:20] = np.frombuffer(struct.pack(">I", dst_ip), np.uint8)
    ip[:, 10:12] = _checksum16(ip.view(">u2").reshape(n, 10)).astype(">u2").view(np.uint8).reshape(n, 2)
    tcp = f[:, 34:54]
    sport = (1024 + (idx // clients + idx * 7919) % 64000).astype(np.uint16)
    tcp[:, 0:2] = sport.astype(">u2").view(np.uint8).reshape(n, 2)
    tcp[:, 2:4] = np.frombuffer(struct.pack(">H", dport), np.uint8)
    tcp[:, 4:8] = (idx * 2654435761 & 0xFFFFFFFF).astype(">u4").view(np.uint8).reshape(n, 4)
    tcp[:, 12], tcp[:, 13] = 0x50, 0x02
    tcp[:, 14:16] = np.frombuffer(struct.pack(">H", 64240), np.uint8)
    pseudo = np.concatenate([ip[:, 12:20], np.tile(np.frombuffer(struct.pack(">BBH", 0, 6, 20), np.uint8), (n, 1)),
                             tcp], axis=1)
    tcp[:, 16:18] = _checksum16(pseudo.view(">u2").reshape(n, 16)).astype(">u2").view(np.uint8).reshape(n, 2)
    return f


def write_pcap(path: Path, frames: np.ndarray, t0: float = 1_765_000_000.0) -> None:
    n, size = frames.shape
    rec = np.zeros((n, 16 + size), np.uint8)
    ts = t0 + np.arange(n) * 1e-6
    sec = ts.astype(np.uint32)
    usec = np.round((ts - sec) * 1e6).astype(np.uint32)
    rec[:, 0:4] = sec.view(np.uint8).reshape(n, 4)
    rec[:, 4:8] = usec.view(np.uint8).reshape(n, 4)
    rec[:, 8:12] = np.frombuffer(struct.pack("<I", size), np.uint8)
    rec[:, 12:16] = np.frombuffer(struct.pack("<I", size), np.uint8)
    rec[:, 16:] = frames
    with path.open("wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        fh.write(rec.tobytes())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "data" / "syn-1m.pcap"))
    ap.add_argument("--connections", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=1_000_000, help="distinct client addresses (default: one each)")
    ap.add_argument("--to", default="192.0.2.10:6443", help="responder address:port")
    args = ap.parse_args(argv)
    host, _, port = args.to.rpartition(":")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_pcap(out, syn_frames(args.connections, args.clients, host, int(port)))
    print(f"{out}: {args.connections} SYN-only connections, {out.stat().st_size / 1e6:.0f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory and CPU of decoding with handshakes at several payload limits, with many connections.

    python benchmarks/payload_limit.py                          # 1,000,000 connections, limits 16K..1M
    python benchmarks/payload_limit.py --connections 100000 --limits 16384,65536

Two captures are written (numpy, nothing sent anywhere), each connection a SYN, a SYN-ACK, a
ClientHello record from the client, a ServerHello record from the server and an RST:

- ``open-together``: every connection opens, then every one sends, then every one closes, so all of
  them hold stream-arena slots at once (the arena's worst case: it must evict to stay in budget);
- ``one-by-one``: each connection's five packets in a row (slots are reused at once).

Each (capture, limit) is decoded by a fresh interpreter the way ``commpath analyze`` does it
(``read(keep_streams=False, on_streams=HandshakeAnalyzer())``), printing its CPU seconds, peak RSS
and the TLS rows it made (the same at every limit when nothing is lost to evictions).
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

def _tls_record(msg_type: int, body: bytes) -> bytes:
    hs = bytes([msg_type]) + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs


_SNI = b"\x00\x00" + (len(b"apiserver") + 5).to_bytes(2, "big") + (len(b"apiserver") + 3).to_bytes(2, "big") \
    + b"\x00" + len(b"apiserver").to_bytes(2, "big") + b"apiserver"
CLIENT_HELLO = _tls_record(1, b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
                           + len(_SNI).to_bytes(2, "big") + _SNI)
SERVER_HELLO = _tls_record(2, b"\x03\x03" + bytes(32) + b"\x00" + b"\x13\x01" + b"\x00"
                           + b"\x00\x06" + b"\x00\x2b\x00\x02\x03\x04")


def _frames(n: int, src: np.ndarray, dst: int, sport: np.ndarray, dport: int, seq: np.ndarray, ack: np.ndarray,
            flags: int, payload: bytes) -> np.ndarray:
    """``n`` Ethernet/IPv4/TCP frames (checksums left zero: the decoder does not check them)."""
    size = 54 + len(payload)
    f = np.zeros((n, size), np.uint8)
    f[:, 12:14] = [0x08, 0x00]
    ip = f[:, 14:34]
    ip[:, 0], ip[:, 8], ip[:, 9] = 0x45, 64, 6
    ip[:, 2:4] = np.frombuffer(struct.pack(">H", 40 + len(payload)), np.uint8)
    ip[:, 12:16] = src.astype(">u4").view(np.uint8).reshape(n, 4)
    ip[:, 16:20] = np.frombuffer(struct.pack(">I", dst), np.uint8)
    tcp = f[:, 34:54]
    tcp[:, 0:2] = sport.astype(">u2").view(np.uint8).reshape(n, 2)
    tcp[:, 2:4] = np.frombuffer(struct.pack(">H", dport), np.uint8)
    tcp[:, 4:8] = seq.astype(">u4").view(np.uint8).reshape(n, 4)
    tcp[:, 8:12] = ack.astype(">u4").view(np.uint8).reshape(n, 4)
    tcp[:, 12], tcp[:, 13] = 0x50, flags
    tcp[:, 14:16] = [0xFA, 0xF0]
    f[:, 54:] = np.frombuffer(payload, np.uint8)
    return f


def _records(frames: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """pcap records (16-byte header + frame) of equal-size frames, as an (n, 16 + size) array."""
    n, size = frames.shape
    rec = np.zeros((n, 16 + size), np.uint8)
    sec = ts.astype(np.uint32)
    rec[:, 0:4] = sec.view(np.uint8).reshape(n, 4)
    rec[:, 4:8] = np.round((ts - sec) * 1e6).astype(np.uint32).view(np.uint8).reshape(n, 4)
    rec[:, 8:12] = np.frombuffer(struct.pack("<I", size), np.uint8)
    rec[:, 12:16] = rec[:, 8:12]
    rec[:, 16:] = frames
    return rec


def write_capture(path: Path, n: int, together: bool) -> Path:
    """``n`` TLS-looking connections to 192.0.2.10:6443 from distinct clients (see the module docstring)."""
    idx = np.arange(n, dtype=np.uint64)
    cli = (0x0A400000 + idx).astype(np.uint32)            # 10.64.0.0 upwards
    srv, port = 0xC000020A, 6443                          # 192.0.2.10
    sport = (1024 + idx % 60000).astype(np.uint16)
    cseq = (idx * 2654435761 & 0xFFFFFFFF).astype(np.uint32)
    sseq = (idx * 40503 & 0xFFFFFFFF).astype(np.uint32)
    one = np.uint32(1)
    kinds = [(cli, srv, sport, port, cseq, np.zeros(n, np.uint32), 0x02, b""),
             (None, None, None, None, sseq, cseq + one, 0x12, b""),
             (cli, srv, sport, port, cseq + one, sseq + one, 0x18, CLIENT_HELLO),
             (None, None, None, None, sseq + one, cseq + one + np.uint32(len(CLIENT_HELLO)), 0x18, SERVER_HELLO),
             (cli, srv, sport, port, cseq + one + np.uint32(len(CLIENT_HELLO)), np.zeros(n, np.uint32), 0x04, b"")]
    groups = []
    for k, (a, b, sp, dp, seq, ack, flags, payload) in enumerate(kinds):
        if a is None:      # server to client
            frames = _frames(n, np.full(n, srv, np.uint32), 0, np.full(n, port, np.uint16), 0, seq, ack, flags, payload)
            frames[:, 30:34] = cli.astype(">u4").view(np.uint8).reshape(n, 4)
            frames[:, 36:38] = sport.astype(">u2").view(np.uint8).reshape(n, 2)
        else:
            frames = _frames(n, a, b, sp, dp, seq, ack, flags, payload)
        ts = 1_765_000_000.0 + (k * n + idx if together else idx * 5 + k) * 1e-6
        groups.append(_records(frames, ts))
    with path.open("wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        if together:
            for g in groups:
                fh.write(g.tobytes())
        else:
            step = 65536
            for lo in range(0, n, step):
                fh.write(np.concatenate([g[lo:lo + step] for g in groups], axis=1).tobytes())
    return path


RUN = """
import resource, sys, time
import commpath
from commpath.decode.handshakes import HandshakeAnalyzer
t0 = time.process_time()
analyzer = HandshakeAnalyzer()
cap = commpath.read(sys.argv[1], payload_limit=int(sys.argv[2]), keep_streams=False, on_streams=analyzer)
hs = analyzer.result()
sni = int(hs.tls["sni"].notna().sum())
print(len(cap.flows), len(hs.tls), sni, round(time.process_time() - t0, 2),
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=1_000_000)
    ap.add_argument("--limits", default="16384,65536,262144,1048576", help="payload limits to compare (bytes)")
    ap.add_argument("--shapes", default="open-together,one-by-one")
    args = ap.parse_args(argv)
    limits = [int(x) for x in args.limits.split(",")]
    print(f"{args.connections:,} connections; per run: flows, TLS rows, rows with the SNI, CPU s, peak RSS MiB")
    with tempfile.TemporaryDirectory(prefix="commpath-bench-") as tmp:
        for shape in args.shapes.split(","):
            path = write_capture(Path(tmp) / f"{shape}.pcap", args.connections, shape == "open-together")
            print(f"\n{shape}: {path.stat().st_size / 1e6:.0f} MB")
            for limit in limits:
                t0 = time.perf_counter()
                out = subprocess.run([sys.executable, "-c", RUN, str(path), str(limit)], capture_output=True,
                                     text=True, check=True).stdout.split()
                flows, tls, sni, cpu, rss = out[-5:]
                print(f"  limit {limit:>8,}: {int(flows):,} flows, {int(tls):,} TLS rows, {int(sni):,} with SNI, "
                      f"{cpu} s CPU, {int(rss):,} MiB peak ({time.perf_counter() - t0:.0f} s wall)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

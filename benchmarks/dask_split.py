"""What splitting one large capture into record-aligned byte ranges would give, from measured chunk costs.

Takes a 1M-packet capture (``--capture``; by default one lab host's recording repeated by
``dask_make_hosts.replicate`` to about a million packets), decodes it whole, then cuts it at
record boundaries into K chunks (each a valid pcap: the file header plus whole records) and
decodes each chunk alone, handshakes included. CPU seconds are measured (the machine may be
loaded, so wall times are not the measure); the parallel time on K workers is estimated as the
largest chunk plus the task overhead measured in ``dask_multihost.py``, and the seams are
counted: connections open across a cut, which a real split would have to stitch (their first
bytes on one side, the rest on the other).
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def record_offsets(data: bytes) -> list[int]:
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    pos, out = 24, []
    while pos + 16 <= len(data):
        out.append(pos)
        pos += 16 + struct.unpack(endian + "I", data[pos + 8:pos + 12])[0]
    return out


def decode_cpu(path: Path):
    from commpath.decode.engine import read
    from commpath.decode.handshakes import HandshakeAnalyzer
    c0 = time.process_time()
    analyzer = HandshakeAnalyzer()
    cap = read(path, keep_streams=False, on_streams=analyzer)
    analyzer.result()
    return time.process_time() - c0, cap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", help="a classic pcap (default: made from the lab's cp1-eth0.pcap)")
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--chunks", default="2,4,8")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="commpath-split-") as tmp:
        measure(args, Path(tmp))


def measure(args, tmp: Path) -> None:
    """Decode the whole capture, then its K record-aligned chunks, in ``tmp`` (the made capture and chunks)."""
    if args.capture:
        path = Path(args.capture)
    else:
        sys.path.insert(0, str(HERE))
        from dask_make_hosts import replicate
        src = HERE.parent / "captures/default/cp1/cp1-eth0.pcap"
        per = len(record_offsets(src.read_bytes()))
        path = tmp / "big.pcap"
        replicate(src, path, 11, -(-args.packets // per))
    data = path.read_bytes()
    offs = record_offsets(data) + [len(data)]
    n = len(offs) - 1
    print(f"{path.name}: {n} packets, {len(data) / 1e6:.0f} MB")
    whole = [decode_cpu(path) for _ in range(args.rounds)]
    whole_cpu = statistics.median(c for c, _ in whole)
    flows = whole[0][1].flows
    print(f"whole file: {whole_cpu:.2f} s CPU (median of {args.rounds}), {len(flows)} flows")
    for k in map(int, args.chunks.split(",")):
        # cut points off the even fractions: a made capture repeats a recording, and its repetitions
        # end exactly there (no connection open across)
        at = [0] + [round(i * n / k) + 307 for i in range(1, k)] + [n]
        cuts = [offs[a] for a in at]
        costs, seams = [], 0
        for i in range(k):
            chunk = tmp / f"chunk{k}-{i}.pcap"
            chunk.write_bytes(data[:24] + data[cuts[i]:cuts[i + 1]])
            costs.append(statistics.median(decode_cpu(chunk)[0] for _ in range(args.rounds)))
            chunk.unlink()
        # connections open across each cut: first frame before it, last frame after it
        for i in range(1, k):
            frame = at[i] + 1
            seams += int(((flows["first_frame"] < frame) & (flows["last_frame"] >= frame)).sum())
        print(f"K={k}: chunk CPU {', '.join(f'{c:.2f}' for c in costs)} s; sum {sum(costs):.2f} s "
              f"({sum(costs) / whole_cpu:.2f}x whole); largest {max(costs):.2f} s -> at most "
              f"{whole_cpu / max(costs):.2f}x on {k} workers before task overhead; {seams} connections "
              f"cross a cut ({100 * seams / max(len(flows), 1):.1f} % of flows) and would need stitching")


if __name__ == "__main__":
    main()

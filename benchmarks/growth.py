"""How `commpath analyze` grows with its input: 1×, 5× and 20× the benchmark capture, each copy its own hosts.

Copy ``r`` of the capture gets its IPv4 addresses ``10.x.y.z`` rewritten to ``<o_r>.x.y.z`` (a
first octet per copy), its timestamps moved past the previous copy and its ephemeral ports moved
(``dask_make_hosts.replicate``), so a K× file holds K times the packets and K times the IPv4
connections, between K times the addresses (what is not IPv4 from 10/8, the namespaces' IPv6
neighbour discovery for one, stays as it was and joins across copies). Each file is analysed by
a whole ``commpath analyze`` process (``run.measure``: wall, CPU, peak memory of the process),
``--rounds`` times in alternation.
Printed per factor: packets, connections, the medians, CPU per million packets and per
thousand connections, and each against 1× (linear time: a ratio near 1; flat memory: peak
near 1×'s). The files are deleted afterwards unless ``--keep``.

    python benchmarks/growth.py                      # 1, 5, 20 × data/bench.pcap (20×: 18 GB on disk)
    python benchmarks/growth.py --factors 1,5 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from dask_make_hosts import OCTETS, replicate  # noqa: E402
from run import measure  # noqa: E402


def packet_count(path: Path) -> int:
    from commpath.decode._pcapfile import ReadState, iter_records
    return sum(len(rec) for rec in iter_records(path, ReadState(str(path))))


def connections(out: Path) -> int:
    import pyarrow.parquet as pq
    return pq.ParquetFile(out / "flows.parquet").metadata.num_rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", default=str(HERE / "data" / "bench.pcap"), help="classic pcap, Ethernet (make_capture.py)")
    ap.add_argument("--factors", default="1,5,20")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--data", default=str(HERE / "data"), help="where the K× files are written")
    ap.add_argument("--keep", action="store_true", help="keep the K× files")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    factors = [int(f) for f in args.factors.split(",")]
    files, packets = {}, {}
    for k in factors:
        files[k] = Path(args.data) / f"growth-{k}x.pcap"
        replicate(Path(args.capture), files[k], OCTETS[:k], k)
        packets[k] = packet_count(files[k])
        print(f"{k}×: {packets[k]:,} packets, {files[k].stat().st_size / 1e9:.2f} GB", flush=True)
    runs: dict[int, list[dict]] = {k: [] for k in factors}
    flows: dict[int, int] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="commpath-growth-") as tmp:
            for i in range(args.rounds):
                for k in factors:
                    out = Path(tmp) / f"{k}x"
                    m = measure([sys.executable, "-m", "commpath.cli", "analyze", str(files[k]), "--out", str(out), "-q"],
                                args.timeout)
                    m.pop("stdout", None)
                    if m["exit"] not in (0, 1, 3):
                        raise SystemExit(f"growth: commpath analyze on {files[k]} exited {m['exit']}")
                    flows[k] = connections(out)
                    runs[k].append(m)
                    print(f"round {i + 1} {k:3d}×  {m['wall_s']:7.2f} s  cpu {m['cpu_s']:7.2f} s  peak {m['peak_mb']:7.1f} MB",
                          flush=True)
    finally:
        if not args.keep:
            for f in files.values():
                f.unlink(missing_ok=True)
    med = {k: {x: statistics.median(r[x] for r in runs[k]) for x in ("wall_s", "cpu_s", "peak_mb")} for k in factors}
    base = factors[0]
    print("\n| factor | packets | connections | wall | CPU | peak | CPU / M packets | CPU / k connections | "
          "CPU per packet ÷ 1× | peak ÷ 1× |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    per_packet = {k: med[k]["cpu_s"] / packets[k] for k in factors}
    for k in factors:
        print(f"| {k}× | {packets[k]:,} | {flows[k]:,} | {med[k]['wall_s']:.2f} s | {med[k]['cpu_s']:.2f} s | "
              f"{med[k]['peak_mb']:.0f} MB | {per_packet[k] * 1e6:.2f} s | {med[k]['cpu_s'] / flows[k] * 1e3:.3f} s | "
              f"{per_packet[k] / per_packet[base]:.2f} | {med[k]['peak_mb'] / med[base]['peak_mb']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"packets": packets, "flows": flows, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

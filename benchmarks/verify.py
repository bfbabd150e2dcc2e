"""Check that commpath's connections on the benchmark capture agree with tshark's (the tests' oracle).

Runs the differential comparison of tests/test_differential_tshark.py on a benchmark capture, or on
its first ``--first`` packets (tshark's per-frame export of a million packets takes minutes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from oracles import compare, tshark  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("capture", nargs="?", default=str(HERE / "data" / "bench.pcap"))
    ap.add_argument("--first", type=int, default=200_000, help="packets to compare (0: all)")
    ap.add_argument("--streams", action="store_true",
                    help="also compare each TCP direction's first bytes with tshark's follow,tcp,raw (slow)")
    args = ap.parse_args(argv)

    import commpath

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.capture)
        if args.first:
            cut = Path(tmp) / "head.pcap"
            subprocess.run(["editcap", "-r", str(path), str(cut), f"1-{args.first}"], check=True)
            path = cut
        started = time.perf_counter()
        cap = commpath.read(path)
        t_commpath = time.perf_counter() - started
        started = time.perf_counter()
        conv = tshark.connections(path)
        t_tshark = time.perf_counter() - started
        problems = compare.compare(cap.flows, conv)
        if args.streams:
            from commpath.decode.engine import PAYLOAD_LIMIT

            tcp = conv[conv["transport"] == "tcp"]
            followed = tshark.follow_tcp(path, tcp["stream"])
            problems += compare.compare_streams(cap, conv, followed, limit=PAYLOAD_LIMIT)
            print(f"streams compared: {len(followed)}")
    print(f"{args.capture} ({'first %d packets' % args.first if args.first else 'all packets'}): "
          f"commpath {len(cap.flows)} flows in {t_commpath:.1f} s, tshark {len(conv)} streams in {t_tshark:.1f} s; "
          f"{len(problems)} differences")
    for line in problems[:50]:
        print("  " + line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""What N processes get from this machine's cores, against one process: pure arithmetic, or the decoding of real captures.

A parallel run's speed-up (``dask_multihost.py``) can be no better than the machine gives work that
shares nothing. On a VM the cores may be hyperthreads or shared with other guests: this prints, per
round, the wall time of one process and of N at once, and the speed-up (N would be perfect).

- default: each process runs the same loop of pure Python arithmetic; speed-up ``N × one ÷ N-at-once``;
- ``--captures DIR``: the work of the Dask decode tasks, without Dask: one process decodes every
  capture under DIR with its handshakes (``decode.engine.read`` feeding a ``HandshakeAnalyzer``,
  then its typed tables, as ``distributed._decode.decode_capture`` does), against N processes each
  decoding a share of them (largest first, each to the least loaded share) at once; speed-up
  ``one ÷ N-at-once``. The processes are forked after the imports and start together, so the time
  is the decoding's alone: the ceiling of what any scheduler gets from these cores on this work.

    python benchmarks/cpu_parallel.py --processes 2 --rounds 6
    python benchmarks/cpu_parallel.py --processes 2 --rounds 3 --captures benchmarks/data/dask-hosts-big
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from pathlib import Path

#: iterations of each process's loop (about a second on this machine)
LOOP = 30_000_000


def _burn(files, start) -> None:
    start.wait()
    x = 0
    for i in range(LOOP):
        x += i


def _decode(files: list[str], start) -> None:
    from commpath.decode.engine import read
    from commpath.decode.handshakes import HandshakeAnalyzer
    from commpath.decode.limits import ANALYSIS_PAYLOAD_LIMIT
    start.wait()
    for path in files:
        analyzer = HandshakeAnalyzer()
        read(path, keep_streams=False, on_streams=analyzer, payload_limit=ANALYSIS_PAYLOAD_LIMIT)
        analyzer.unresolved_tables()


def _shares(files: list[Path], n: int) -> list[list[str]]:
    """``files`` in ``n`` shares of about equal bytes: largest first, each to the lightest share."""
    shares: list[list[str]] = [[] for _ in range(n)]
    load = [0] * n
    for f in sorted(files, key=lambda p: -p.stat().st_size):
        k = load.index(min(load))
        shares[k].append(str(f))
        load[k] += f.stat().st_size
    return shares


def _wall(target, shares: list) -> float:
    ctx = multiprocessing.get_context("fork")      # the parent's imports, not each child's
    start = ctx.Event()
    ps = [ctx.Process(target=target, args=(share, start)) for share in shares]
    for p in ps:
        p.start()
    time.sleep(0.5)                                 # every child forked and waiting
    t0 = time.perf_counter()
    start.set()
    for p in ps:
        p.join()
        if p.exitcode:
            raise SystemExit(f"a process failed (exit {p.exitcode})")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--captures", metavar="DIR", help="decode the captures (*.pcap, *.pcapng) under DIR instead")
    args = ap.parse_args()
    n = args.processes
    if args.captures:
        import commpath.decode.engine  # noqa: F401 - imported once, before the forks
        import commpath.decode.handshakes  # noqa: F401
        files = sorted(p for p in Path(args.captures).rglob("*") if p.suffix in (".pcap", ".pcapng"))
        if not files:
            raise SystemExit(f"{args.captures}: no capture")
        target, one_share, many_shares, per = _decode, [[str(f) for f in files]], _shares(files, n), 1
        print(f"{len(files)} captures, {sum(f.stat().st_size for f in files) / 1e6:.0f} MB; shares of "
              + ", ".join(f"{sum(Path(f).stat().st_size for f in s) / 1e6:.0f} MB" for s in many_shares))
    else:
        target, one_share, many_shares, per = _burn, [[]], [[]] * n, n
    ratios = []
    for r in range(args.rounds):
        one, many = _wall(target, one_share), _wall(target, many_shares)
        ratios.append(per * one / many)
        print(f"round {r + 1}: one {one:.2f} s, {n} at once {many:.2f} s, speed-up {ratios[-1]:.2f}×", flush=True)
    print(f"median speed-up {statistics.median(ratios):.2f}× of {n} (range {min(ratios):.2f}–{max(ratios):.2f})")


if __name__ == "__main__":
    main()

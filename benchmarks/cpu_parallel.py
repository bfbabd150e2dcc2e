"""What N processes of pure Python arithmetic get from this machine's cores, against one process.

A parallel run's speed-up (``dask_multihost.py``) can be no better than the machine gives work that
shares nothing. On a VM the cores may be hyperthreads or shared with other guests: this prints, per
round, the wall time of one process and of N at once (each doing the same loop), and the speed-up
``N × one ÷ N-at-once`` (N would be perfect).

    python benchmarks/cpu_parallel.py --processes 2 --rounds 6
"""

from __future__ import annotations

import argparse
import statistics
import time
from multiprocessing import Process

#: iterations of each process's loop (about a second on this machine)
LOOP = 30_000_000


def _burn(n: int = LOOP) -> None:
    x = 0
    for i in range(n):
        x += i


def _wall(processes: int) -> float:
    t0 = time.perf_counter()
    ps = [Process(target=_burn) for _ in range(processes)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    ratios = []
    for r in range(args.rounds):
        one, many = _wall(1), _wall(args.processes)
        ratios.append(args.processes * one / many)
        print(f"round {r + 1}: one {one:.2f} s, {args.processes} at once {many:.2f} s, speed-up {ratios[-1]:.2f}×")
    print(f"median speed-up {statistics.median(ratios):.2f}× of {args.processes} "
          f"(range {min(ratios):.2f}–{max(ratios):.2f})")


if __name__ == "__main__":
    main()

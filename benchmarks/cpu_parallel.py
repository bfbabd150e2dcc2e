"""What N processes get from this machine's cores, against one process: pure arithmetic, or the decoding of real captures.

A parallel run's speed-up (``dask_multihost.py``) can be no better than the machine gives work that
shares nothing. On a VM the cores may be hyperthreads or shared with other guests: this prints, per
round, the wall time of one process and of N at once, and the speed-up (N would be perfect).

- default: each process runs the same loop of pure Python arithmetic; speed-up ``N × one ÷ N-at-once``;
- ``--captures DIR``: the work of the Dask decode tasks, without Dask: one process runs the task
  (``distributed._decode.decode_capture``: a capture decoded with its handshakes, its tables typed)
  on every capture of the run DIR, against N processes each
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

#: iterations of each process's loop (about a second on this machine)
LOOP = 30_000_000


def _burn(files, start) -> None:
    start.wait()
    x = 0
    for i in range(LOOP):
        x += i


def _decode(sources: list, start) -> None:
    from commpath.distributed._decode import decode_capture
    start.wait()
    for i, source in enumerate(sources):
        decode_capture(i, source, None)


def _shares(sources: list, n: int) -> list[list]:
    """``sources`` in ``n`` shares of about equal bytes: largest first, each to the lightest share."""
    shares: list[list] = [[] for _ in range(n)]
    load = [0] * n
    for s in sorted(sources, key=lambda s: -s.size):
        k = load.index(min(load))
        shares[k].append(s)
        load[k] += s.size
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
    ap.add_argument("--captures", metavar="DIR", help="decode the captures of the run DIR instead")
    args = ap.parse_args()
    n = args.processes
    if args.captures:
        import commpath.distributed._decode  # noqa: F401 - imported once, before the forks
        from commpath.distributed._files import expand
        sources = expand([args.captures], None)      # the run's captures, as decode_run lists them
        if not sources:
            raise SystemExit(f"{args.captures}: no capture")
        target, one_share, many_shares, per = _decode, [sources], _shares(sources, n), 1
        print(f"{len(sources)} captures, {sum(s.size for s in sources) / 1e6:.0f} MB; shares of "
              + ", ".join(f"{sum(s.size for s in share) / 1e6:.0f} MB" for share in many_shares))
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

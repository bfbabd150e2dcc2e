"""Wall time and memory of a many-host run: one process against Dask (local cores, processes, threads).

Makes the hosts' captures with ``dask_make_hosts.py`` (recorded lab traffic, rewritten addresses)
unless ``--data`` already holds them, then runs the modes in interleaved rounds, each in a fresh
interpreter (``--run MODE``), and prints medians and the ratios to the single process:

- ``single``: ``commpath.open(DIR, workers=0)``, all in one process on one core (``analyze
  --workers 0``); every mode's process is set up as the command sets itself up (its allocator and
  collector);
- ``cores``: ``commpath.open(DIR)`` as ``commpath analyze`` runs it by default: the captures decoded
  on every core by dask's local process scheduler (``distributed.decode_on_cores``), the rest in
  this process;
- ``procs``: ``open(DIR, workers=N)``, a local cluster of N worker processes (start-up included);
- ``threads``: a local cluster of one worker with N threads in the driver's process.

Peak memory: the driver's own (``ru_maxrss``) and each worker process's (sampled with psutil
every 200 ms by a process of its own: a thread in the driver would keep ``cores`` from forking).
CPU: the driver's own and its child processes' (the workers, reaped when the run's pool or local
cluster closes: ``RUSAGE_CHILDREN``, the kernel's account; sampling them every 50 ms cost the
driver ≈ 1 s of a 30 s run). The machine may be shared: the load average before each run is
printed with it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = ("single", "cores", "procs", "threads")


#: The sampler's process: every 200 ms the RSS of each process below the given one (not itself),
#: until a line arrives on its stdin; then the peaks as JSON.
SAMPLER = """
import json, os, select, sys, psutil
me, parent, peaks = os.getpid(), psutil.Process(int(sys.argv[1])), {}
while not select.select([sys.stdin], [], [], 0.2)[0]:
    for child in parent.children(recursive=True):
        try:
            if child.pid != me:
                peaks[child.pid] = max(peaks.get(child.pid, 0), child.memory_info().rss)
        except psutil.Error:
            pass
print(json.dumps(peaks))
"""


def _start_sampler() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SAMPLER, str(os.getpid())], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(mode: str, data: str, workers: int, out: str) -> dict:
    """One measured run in this interpreter (called through ``--run``)."""
    import commpath
    from commpath._pipeline import write_outputs
    from _setup import set_up_as_the_command
    set_up_as_the_command()
    sampler = _start_sampler()
    c0, children0 = time.process_time(), _children_cpu()
    t0 = time.perf_counter()
    if mode == "single":
        a = commpath.open(data, workers=0)
    elif mode == "cores":
        a = commpath.open(data)
    elif mode == "procs":
        a = commpath.open(data, workers=workers)
    else:
        from commpath.distributed import connect
        with connect(workers=workers, processes=False, announce=False) as client:
            a = commpath.open(data, client=client)
    write_outputs(a, out)
    wall = time.perf_counter() - t0
    driver_cpu = time.process_time() - c0
    workers_cpu = _children_cpu() - children0   # the pool or local cluster closed inside open(): its processes reaped
    peaks = {int(k): v for k, v in json.loads(sampler.communicate("stop\n")[0]).items()}    # reaped after the count
    return {"mode": mode, "wall_s": wall, "flows": len(a.flows), "captures": len(a.captures),
            "driver_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_peak_mb": max(peaks.values()) / 2**20 if peaks else None,
            "cpu_s": driver_cpu + workers_cpu, "driver_cpu_s": driver_cpu, "load_after": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(HERE / "data/dask-hosts"), help="folder of the hosts' captures")
    ap.add_argument("--replicas", type=int, default=4, help="lab clusters (3 hosts each) to make when --data is empty")
    ap.add_argument("--repeat", type=int, default=150, help="repetitions of each recording (made data only)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--out", default="/tmp/commpath-dask-bench")
    ap.add_argument("--baseline", help="another tree's commpath folder's parent (e.g. a `git archive` copy): "
                                       "each mode also runs with it on PYTHONPATH, in alternation (MODE@base)")
    ap.add_argument("--run", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        print(json.dumps(run_once(args.run, args.data, args.workers, args.out)))
        return
    data = Path(args.data)
    if not any(data.glob("*/*.pcap")):
        sys.path.insert(0, str(HERE))
        from dask_make_hosts import make
        n = make(HERE.parent / "captures/default", data, args.replicas, args.repeat)
        print(f"made {args.replicas * 3} hosts, {n / 1e6:.0f} MB in {data}", flush=True)
    size = sum(p.stat().st_size for p in data.rglob("*.pcap"))
    hosts = len({p.parent for p in data.rglob("*.pcap")})
    print(f"{hosts} hosts, {len(list(data.rglob('*.pcap')))} captures, {size / 1e6:.0f} MB; "
          f"{args.workers} workers; {os.cpu_count()} cores", flush=True)
    modes = args.modes.split(",")
    if args.baseline:
        modes = [f"{m}{tree}" for m in modes for tree in ("@base", "")]
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for m in (modes if r % 2 == 0 else modes[::-1]):      # interleaved, alternating order
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            env = {**os.environ, "PYTHONPATH": args.baseline} if m.endswith("@base") else None
            out = subprocess.run([sys.executable, __file__, "--run", m.split("@")[0], "--data", str(data), "--workers",
                                  str(args.workers), "--out", f"{args.out}-{m}"], capture_output=True, text=True,
                                 env=env)
            if out.returncode:
                sys.exit(f"{m} failed: {out.stderr.strip().splitlines()[-1:]}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            res["process_s"], res["load"] = time.perf_counter() - t0, load
            results[m].append(res)
            print(f"round {r + 1} {m:8s} wall {res['wall_s']:6.2f} s (process {res['process_s']:6.2f} s), cpu "
                  f"{res['cpu_s']:6.2f} s (driver {res['driver_cpu_s']:5.2f} s), driver "
                  f"{res['driver_peak_mb']:5.0f} MB, worker {res['worker_peak_mb'] or 0:5.0f} MB, load {load:.1f}"
                  f" → {res['load_after']:.1f}",
                  flush=True)
    print("\nmedians (ratios: the same tree's single process ÷ this mode):")
    for m, rs in results.items():
        single = results.get("single" + m[len(m.split("@")[0]):])     # single or single@base
        wall = statistics.median(r["wall_s"] for r in rs)
        proc = statistics.median(r["process_s"] for r in rs)
        cpu = statistics.median(r["cpu_s"] for r in rs)
        dcpu = statistics.median(r["driver_cpu_s"] for r in rs)
        ratio = ""
        if single:
            ratio = (f", {statistics.median(r['wall_s'] for r in single) / wall:.2f}x single wall, "
                     f"{statistics.median(r['cpu_s'] for r in single) / cpu:.2f}x single CPU")
        print(f"  {m:11s} wall {wall:6.2f} s (process {proc:6.2f} s){ratio}; cpu {cpu:.2f} s (driver {dcpu:.2f} s); driver peak "
              f"{statistics.median(r['driver_peak_mb'] for r in rs):.0f} MB; worker peak "
              f"{max((r['worker_peak_mb'] or 0) for r in rs):.0f} MB; flows {rs[0]['flows']}")


if __name__ == "__main__":
    main()

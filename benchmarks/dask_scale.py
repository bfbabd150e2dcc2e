"""Peak memory per worker and on the driver of one Dask run on local workers, with their memory budget.

One run of ``commpath.open(DIR, client=...)`` and ``write_outputs`` on a local cluster of
``--workers`` processes started by ``commpath.distributed.connect`` (the cluster ``--workers`` of
``analyze`` starts) with ``--memory-limit`` per worker (``default``: what ``connect`` gives local
workers; ``auto``: dask's share of the machine, no spilling in practice). Printed as one JSON
line: wall and CPU seconds (driver, every worker and nanny process: psutil every 100 ms), the
driver's peak RSS, each worker's lifetime peak RSS (``ru_maxrss`` asked of each worker at the end,
and the sampled peak), the bytes the workers spilled to their local disk, the load average.
Make the hosts with ``dask_make_hosts.py``; run it with ``nice -n 10`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time


def _sample(peaks: dict, cpu: dict, loads: list, series: list, stop: threading.Event) -> None:
    import psutil
    me = psutil.Process()
    while not stop.is_set():
        now = time.time()
        for child in me.children(recursive=True):
            try:
                rss = child.memory_info().rss
                peaks[child.pid] = max(peaks.get(child.pid, 0), rss)
                series.append((now, child.pid, rss))
                t = child.cpu_times()
                cpu[child.pid] = t.user + t.system
            except psutil.Error:
                pass
        loads.append(os.getloadavg()[0])
        stop.wait(0.1)


def _worker_state(dask_worker) -> dict:
    """The worker's lifetime peak RSS and what it spilled (sent by value to the workers)."""
    import resource as r
    data = dask_worker.data
    spilled = getattr(data, "spilled_total", None)
    return {"peak_rss": r.getrusage(r.RUSAGE_SELF).ru_maxrss * 1024,
            "memory_limit": dask_worker.memory_manager.memory_limit,
            "spilled_now": spilled.disk if spilled is not None else None,
            "spill_writes": _spill_writes(dask_worker)}


def _spill_writes(dask_worker) -> dict:
    """Cumulative spill counters of the worker (bytes and seconds written/read), where dask keeps them."""
    out = {}
    for key, value in getattr(dask_worker, "digests_total", {}).items():
        if isinstance(key, tuple) and any(k in ("disk-write", "disk-read") for k in key):
            out[" ".join(map(str, key))] = value
    return out


def _by_stage(series: list, pids: dict, stream: list) -> dict:
    """Each worker's peak RSS while a task of each stage (key prefix) ran on it: which stage holds the peak."""
    import bisect
    spans: dict[str, list] = {}
    for t in stream:
        for s in t.get("startstops", ()):
            if s.get("action") == "compute":
                spans.setdefault(t["worker"], []).append((s["start"], s["stop"], _prefix(t["key"])))
    for v in spans.values():
        v.sort()
    out: dict[str, dict[str, int]] = {}
    for now, pid, rss in series:
        worker = pids.get(pid)
        if worker is None or worker not in spans:
            continue
        v = spans[worker]
        i = bisect.bisect_right(v, (now, float("inf"), "")) - 1
        stage = v[i][2] if i >= 0 and v[i][0] <= now <= v[i][1] else "between tasks"
        w = out.setdefault(worker, {})
        w[stage] = max(w.get(stage, 0), round(rss / 2**20))
    return out


def _prefix(key) -> str:
    key = key[0] if isinstance(key, tuple) else key
    return str(key).split("-")[0] if not str(key).startswith("commpath-") else "-".join(str(key).split("-")[:2])


def run(data: str, workers: int, memory_limit: str, out: str) -> dict:
    import commpath
    from commpath._pipeline import write_outputs
    from commpath.distributed import connect
    peaks: dict[int, int] = {}
    cpu: dict[int, float] = {}
    loads: list[float] = []
    series: list[tuple] = []
    stop = threading.Event()
    threading.Thread(target=_sample, args=(peaks, cpu, loads, series, stop), daemon=True).start()
    load0 = os.getloadavg()
    c0, t0 = time.process_time(), time.perf_counter()
    kwargs = {} if memory_limit == "default" else {"memory_limit": memory_limit}
    from distributed import get_task_stream
    with connect(workers=workers, announce=False, **kwargs) as client:
        t_open = time.perf_counter()
        with get_task_stream(client) as ts:
            a = commpath.open(data, client=client)
        t_opened = time.perf_counter()
        states = client.run(_worker_state)
        pids = {pid: w for w, pid in client.run(os.getpid).items()}
    t_closed = time.perf_counter()
    write_outputs(a, out)
    wall = time.perf_counter() - t0
    driver_cpu = time.process_time() - c0
    stop.set()
    hosts = a.captures["host"].nunique() if "host" in a.captures else None
    return {"data": data, "workers": workers, "memory_limit": memory_limit, "hosts": int(hosts or 0),
            "captures": len(a.captures), "merged_flows": len(a.flows),
            "wall_s": round(wall, 1), "open_s": round(t_opened - t_open, 1),
            "outputs_s": round(wall - (t_closed - t0), 1),
            "cpu_s": round(driver_cpu + sum(cpu.values()), 1), "driver_cpu_s": round(driver_cpu, 1),
            "workers_cpu_s": round(sum(cpu.values()), 1),
            "driver_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "worker_peak_mb": sorted(round(s["peak_rss"] / 2**20) for s in states.values()),
            "sampled_peak_mb": round(max(peaks.values()) / 2**20) if peaks else None,
            "worker_memory_limit_mb": sorted(round((s["memory_limit"] or 0) / 2**20) for s in states.values()),
            "spill": _spill_summary(states),
            "worker_peak_by_stage_mb": _by_stage(series, pids, ts.data),
            "load_before": round(load0[0], 1), "load_max": round(max(loads), 1) if loads else None,
            "load_mean": round(sum(loads) / len(loads), 1) if loads else None}


def _spill_summary(states: dict) -> dict:
    """Bytes, count and seconds the workers wrote to and read from their spill disk, summed by kind."""
    out: dict[str, float] = {}
    for s in states.values():
        for key, value in s["spill_writes"].items():
            kind = " ".join(key.split()[-2:])
            out[kind] = round(out.get(kind, 0) + value, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder of the hosts' captures (dask_make_hosts.py)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="default", help="per worker: default, auto, or e.g. 2GiB")
    ap.add_argument("--part-flows", type=int, help="vantage-point flows per socket part of the merge "
                    "(default: _merge's)")
    ap.add_argument("--out", default="/tmp/commpath-dask-scale")
    args = ap.parse_args()
    if args.part_flows:
        from commpath.distributed import _merge
        _merge.PART_FLOWS = args.part_flows
    print(json.dumps(run(args.data, args.workers, args.memory_limit, args.out)), flush=True)


if __name__ == "__main__":
    main()

"""Handshake analysis cost on the benchmark capture, and output equality between two implementations.

Timing (streams collected once, then fed; process time, best of ``--repeat``)::

    python benchmarks/handshakes.py                       # per-protocol µs per connection + result()
    python benchmarks/handshakes.py --ca pki/ca.crt       # with certificate verification

Output equality (run ``--save`` with the old code, ``--check`` with the new)::

    python benchmarks/handshakes.py --save /tmp/hs-baseline.pkl
    python benchmarks/handshakes.py --check /tmp/hs-baseline.pkl

The outputs compared are the ``Handshakes`` DataFrames (tls, certs, ssh, http, warnings) of the
benchmark capture's streams and of every capture under ../shared/pcaps/public and captures/
(the lab captures also with their CA bundle and key log, alone and together).
"""

from __future__ import annotations

import argparse
import gc
import pickle
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "data" / "bench.pcap"
PUBLIC = ROOT.parent / "shared" / "pcaps" / "public"
LAB = ROOT / "captures"
PCAP_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz")


def collect(path: Path, cache: Path | None = None) -> list:
    """Every connection's FlowStreams of ``path`` (pickled to ``cache`` to skip the read next time)."""
    if cache is not None and cache.exists() and cache.stat().st_mtime >= path.stat().st_mtime:
        try:
            with cache.open("rb") as fh:
                return pickle.load(fh)
        except (pickle.UnpicklingError, TypeError, AttributeError, EOFError):
            pass                        # written by another version of commpath: read again
    import commpath
    streams: list = []
    commpath.read(str(path), keep_streams=False, on_streams=streams.append)
    if cache is not None:
        with cache.open("wb") as fh:
            pickle.dump(streams, fh, protocol=5)
    return streams


def run_once(streams: list, ca=None, keylog=None) -> dict:
    """One pass: feed every stream, one protocol after the other (each timed), then take the result.

    Process seconds. Each protocol's connections are fed in capture order, in one timed loop."""
    from commpath.decode.handshakes import HandshakeAnalyzer
    a = HandshakeAnalyzer(ca, keylog)
    by_proto: dict[str, list] = {}
    for fs in streams:
        by_proto.setdefault(fs.app_protocol, []).append(fs)
    spent: dict[str, float] = {}
    clock = time.process_time
    feed = a.feed
    gc.collect()
    t_all = clock()
    for proto, group in by_proto.items():
        t = clock()
        for fs in group:
            feed(fs)
        spent[proto] = clock() - t
    t = clock()
    a.result()
    spent["result"] = clock() - t
    spent["total"] = clock() - t_all
    return {"spent": spent, "count": {p: len(g) for p, g in by_proto.items()}}


def timing(args) -> None:
    streams = collect(Path(args.pcap), Path(args.cache) if args.cache else None)
    runs = [run_once(streams, args.ca, args.keylog) for _ in range(args.repeat)]
    count = runs[0]["count"]
    print(f"{args.pcap}: {len(streams)} connections "
          + ", ".join(f"{n} {p}" for p, n in sorted(count.items())))
    for key in sorted(count) + ["result", "total"]:
        vals = [r["spent"].get(key, 0.0) for r in runs]
        if key in count:
            per = [v / count[key] * 1e6 for v in vals]
            print(f"  {key:8s} µs/conn  min {min(per):7.1f}  median {statistics.median(per):7.1f}")
        else:
            print(f"  {key:8s} s        min {min(vals):7.3f}  median {statistics.median(vals):7.3f}")
    with open("/proc/loadavg") as fh:
        print("  load average:", " ".join(fh.read().split()[:3]))


def in_engine(args) -> None:
    """Handshake work inside the engine's run: process time spent in ``feed`` and ``result``."""
    import commpath
    from commpath.decode.handshakes import HandshakeAnalyzer
    commpath.read(args.pcap, keep_streams=False)                 # warm the engine (compiled kernels)
    inside, totals, collecting = [], [], []
    clock = time.process_time
    for _ in range(args.repeat):
        a = HandshakeAnalyzer(args.ca, args.keylog)
        spent = [0.0]
        in_feed = [False]
        gc_time = [0.0, 0.0]          # collections inside feed/result: seconds, and when the current began

        def feed(fs, _feed=a.feed, _spent=spent):
            t = clock()
            in_feed[0] = True
            _feed(fs)
            in_feed[0] = False
            _spent[0] += clock() - t

        def on_gc(phase, info):
            if in_feed[0]:
                if phase == "start":
                    gc_time[1] = clock()
                else:
                    gc_time[0] += clock() - gc_time[1]

        gc.collect()
        gc.callbacks.append(on_gc)
        try:
            t0 = clock()
            commpath.read(args.pcap, keep_streams=False, on_streams=feed)
            t = clock()
            in_feed[0] = True
            a.result()
            in_feed[0] = False
            spent[0] += clock() - t
            totals.append(clock() - t0)
        finally:
            gc.callbacks.remove(on_gc)
        inside.append(spent[0])
        collecting.append(gc_time[0])
    # what the two clock reads around each feed add to the sum (measured around a no-op, same process)
    probe_spent = [0.0]

    def probe(_spent=probe_spent):
        t = clock()
        _spent[0] += clock() - t

    n_feeds = 7409 if args.pcap == str(BENCH) else 5000     # the benchmark capture's connections
    for _ in range(n_feeds):
        probe()
    timer = probe_spent[0]
    # the engine with a sink that does nothing: the difference of whole runs needs no clock around feed
    bare = []
    for _ in range(args.repeat):
        gc.collect()
        t0 = clock()
        commpath.read(args.pcap, keep_streams=False, on_streams=lambda fs: None)
        bare.append(clock() - t0)
    print(f"{args.pcap}: engine + handshakes, process s: min {min(totals):.3f} median {statistics.median(totals):.3f}")
    print(f"  engine with a no-op sink: min {min(bare):.3f} median {statistics.median(bare):.3f} "
          f"(difference of minima {min(totals) - min(bare):.3f}, of medians "
          f"{statistics.median(totals) - statistics.median(bare):.3f})")
    print(f"  clock reads around {n_feeds} feeds add ≈ {timer:.3f} s to the sums below")
    print(f"  handshake work (feed + result): min {min(inside):.3f} median {statistics.median(inside):.3f}")
    print(f"  of which garbage collection: min {min(collecting):.3f} median {statistics.median(collecting):.3f}; "
          f"without it: min {min(i - c for i, c in zip(inside, collecting)):.3f} "
          f"median {statistics.median(i - c for i, c in zip(inside, collecting)):.3f}")
    with open("/proc/loadavg") as fh:
        print("  load average:", " ".join(fh.read().split()[:3]))


# --------------------------------------------------------------------------- output equality

def _captures(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(PCAP_SUFFIXES))


def outputs(include_bench: bool = True, cache: Path | None = None) -> dict[str, dict]:
    """Name -> the Handshakes tables of every capture variant (see the module docstring)."""
    import commpath
    from commpath.decode.handshakes import HandshakeAnalyzer, analyze_handshakes
    out: dict[str, dict] = {}

    def tables(h) -> dict:
        return {"tls": h.tls, "certs": h.certs, "ssh": h.ssh, "http": h.http, "warnings": list(h.warnings)}

    if include_bench:
        a = HandshakeAnalyzer()
        for fs in collect(BENCH, cache):
            a.feed(fs)
        out["bench"] = tables(a.result())
    for pcap in _captures(PUBLIC):
        try:
            cap = commpath.read(str(pcap))
        except Exception as exc:            # noqa: BLE001 - unreadable files are not this check's business
            out[f"public/{pcap.relative_to(PUBLIC)}"] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        out[f"public/{pcap.relative_to(PUBLIC)}"] = tables(analyze_handshakes(cap))
    for pcap in _captures(LAB):
        scenario = LAB / pcap.relative_to(LAB).parts[0]
        cap = commpath.read(str(pcap))
        ca, keys = scenario / "pki" / "ca.crt", scenario / "keylog.txt"
        variants = {"": (None, None)}
        if ca.exists():
            variants["+ca"] = (str(ca), None)
        if keys.exists():
            variants["+keylog"] = (None, str(keys))
        if ca.exists() and keys.exists():
            variants["+ca+keylog"] = (str(ca), str(keys))
        for suffix, (c, k) in variants.items():
            out[f"lab/{pcap.relative_to(LAB)}{suffix}"] = tables(analyze_handshakes(cap, ca=c, keylog=k))
    return out


def _cell(value):
    """A comparable form of one cell: missing values alike, containers as tuples, types kept."""
    import numpy as np
    import pandas as pd
    if isinstance(value, (list, tuple, np.ndarray)):
        return ("seq", tuple(_cell(v) for v in value))
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ("missing", repr(value))
    return (type(value).__name__, value)


def _first_cell_difference(a, b) -> str | None:
    """The first cell whose value or Python type differs (the frames' shapes and dtypes already match)."""
    for col in a.columns:
        for i, (x, y) in enumerate(zip(a[col].astype(object), b[col].astype(object))):
            if _cell(x) != _cell(y):
                return f"row {i} column {col}: {x!r} != {y!r}"
    return None


def compare(old: dict, new: dict) -> list[str]:
    """Differences between two ``outputs()`` results (empty: identical)."""
    import pandas as pd
    problems = []
    for name in sorted(set(old) | set(new)):
        if name not in old or name not in new:
            problems.append(f"{name}: only in {'old' if name in old else 'new'}")
            continue
        for key in sorted(set(old[name]) | set(new[name])):
            a, b = old[name].get(key), new[name].get(key)
            if isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame):
                try:
                    pd.testing.assert_frame_equal(a, b, check_exact=True)
                except AssertionError as exc:
                    problems.append(f"{name} {key}: {str(exc)[:600]}")
                    continue
                diff = _first_cell_difference(a, b)
                if diff:
                    problems.append(f"{name} {key}: {diff}")
            elif a != b:
                problems.append(f"{name} {key}: {a!r} != {b!r}")
    return problems


def use_code(directory: str) -> None:
    """Import commpath from ``directory``: the editable install's finder is taken out of the way."""
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")
                        and "editable" not in type(f).__module__]
    sys.path.insert(0, str(Path(directory).resolve()))
    import commpath
    assert Path(commpath.__file__).resolve().is_relative_to(Path(directory).resolve()), commpath.__file__


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcap", default=str(BENCH))
    ap.add_argument("--cache", default="/tmp/commpath-bench-streams.pkl",
                    help="pickle of the collected streams ('' for none)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ca")
    ap.add_argument("--keylog")
    ap.add_argument("--save", metavar="FILE", help="pickle every capture's output to FILE")
    ap.add_argument("--check", metavar="FILE", help="compare every capture's output with FILE")
    ap.add_argument("--no-bench", action="store_true", help="--save/--check: leave out bench.pcap")
    ap.add_argument("--engine", action="store_true",
                    help="time the handshake work inside the engine's run (on_streams=feed) instead")
    ap.add_argument("--code", metavar="DIR", help="import commpath from DIR (e.g. an older tree, "
                    "`git archive OLD commpath | tar -x -C DIR`) instead of the installed one")
    args = ap.parse_args(argv)
    if args.code:
        use_code(args.code)
    cache = Path(args.cache) if args.cache else None
    if args.save or args.check:
        new = outputs(not args.no_bench, cache)
        if args.save:
            with open(args.save, "wb") as fh:
                pickle.dump(new, fh, protocol=5)
            print(f"saved {len(new)} outputs to {args.save}")
        if args.check:
            with open(args.check, "rb") as fh:
                old = pickle.load(fh)
            if args.no_bench:
                old.pop("bench", None)
            problems = compare(old, new)
            for p in problems:
                print(p)
            print(f"{len(new)} outputs compared: {'identical' if not problems else f'{len(problems)} differ'}")
            return 1 if problems else 0
        return 0
    if args.engine:
        in_engine(args)
    else:
        timing(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

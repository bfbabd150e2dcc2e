"""`commpath capture`: record this host's control-plane traffic with a manifest for later analysis."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import CommpathError, InputError
from . import _engines, _host, _leftovers, hostconfig
from .filters import bpf_error, default_filter, read_inventory

#: Capturing stops when less than this is left on the output file system (env COMMPATH_CAPTURE_RESERVE_MB).
DISK_RESERVE_MB = float(os.environ.get("COMMPATH_CAPTURE_RESERVE_MB", "64"))
#: The least room above the reserve a capture starts with (tcpdump rotates over at least two 1 MB files).
MIN_BUDGET_MB = 3.0
#: The running counts (packets captured and dropped so far) are rewritten in STATS_FILE this often, seconds.
STATS_SECONDS = float(os.environ.get("COMMPATH_CAPTURE_STATS_SECONDS", "5"))
STATS_FILE = "stats.json"
STATS_SCHEMA = "commpath.capture-stats/v1"


def _totals(ifstats: dict[str, dict]) -> tuple[int | None, int | None]:
    """(captured, dropped) over the interfaces; None where no interface knows it."""
    captured = [s.get("captured") for s in ifstats.values() if s.get("captured") is not None]
    dropped = [s.get("dropped") for s in ifstats.values() if s.get("dropped") is not None]
    return (sum(captured) if captured else None), (sum(dropped) if dropped else None)


def write_stats(out: Path, host: str, engine: str, ifstats: dict[str, dict] | None, running: bool) -> None:
    """STATS_FILE beside the capture files, replaced whole: the engine's counts so far, so a watch sees drops
    while the agent runs (``live`` false: this engine tells its counts only when it stops)."""
    captured, dropped = _totals(ifstats or {})
    now = time.time()
    doc = {"schema": STATS_SCHEMA, "host": host, "engine": engine, "time": _iso(now), "ts": now,
           "running": running, "live": ifstats is not None, "interfaces": ifstats or {},
           "packets_captured": captured, "packets_dropped": dropped}
    tmp = out / f".{STATS_FILE}.tmp"
    try:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, out / STATS_FILE)
    except OSError:         # a full disk: the capture goes on, the manifest has the counts at the end
        pass


@dataclass
class Options:
    role: str
    out: Path
    host: str = field(default_factory=socket.gethostname)
    ifaces: list[str] = field(default_factory=lambda: ["any"])
    bpf: str | None = None
    inventory: str | None = None
    duration: float | None = None
    max_mb: float | None = None
    ring: int | None = None
    engine: str = "auto"
    progress: bool = True
    reserve_mb: float = DISK_RESERVE_MB
    buffer_mb: int = _engines.BUFFER_MB


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds")


def _size_mb(files: list[Path]) -> float:
    return sum(f.stat().st_size for f in files if f.exists()) / 1e6


class _Stop:
    """Turns SIGINT/SIGTERM into a reason, and wakes the capture loop at once."""

    def __init__(self):
        self.reason: str | None = None
        self.wake = threading.Event()

    def __call__(self, signum, _frame):
        self.reason = signal.Signals(signum).name
        self.wake.set()

    def install(self):
        self.previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore(self):
        for s, h in self.previous.items():
            signal.signal(s, h)


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def capture(opts: Options, ready=None) -> dict:
    """Run one capture until a limit or a signal; return (and write) its manifest."""
    ok, why = _host.can_capture()
    if not ok:
        raise CommpathError(why)
    out = Path(opts.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(out, exc.strerror or str(exc)) from None
    previous = _leftovers.clean(out)
    if previous:
        _say(f"commpath capture: a previous run into {out} did not end: "
             + (f"its files moved to {previous['moved_to']}" if "moved_to" in previous else previous["note"]),
             opts.progress)
    need = opts.reserve_mb + max(MIN_BUDGET_MB, min(opts.max_mb or 0.0, 100.0))
    free = _host.free_mb(out)
    if free < need:
        raise InputError(out, f"disk full: {free:.1f} MB free, capturing needs at least {need:.0f} MB "
                              f"({opts.reserve_mb:.0f} MB reserve)")
    inventory = read_inventory(opts.inventory) if opts.inventory else None
    bpf = opts.bpf if opts.bpf is not None else default_filter(opts.role, inventory, opts.host)
    problem = bpf_error(bpf)
    if problem:
        raise CommpathError(f"capture filter {bpf!r}: {problem}")
    engine_name, reason = _engines.choose(opts.engine, opts.ifaces)
    if not engine_name:
        raise CommpathError(f"capture engine: {reason}")
    if engine_name == "tcpdump" and len(opts.ifaces) > 1 and "any" in opts.ifaces:
        raise CommpathError("--iface any cannot be combined with other interfaces")
    _say(f"commpath capture: engine {engine_name} ({reason})", opts.progress)
    _say(f"commpath capture: filter {bpf or '(none)'}", opts.progress)

    try:
        lim = _engines.limits(free - opts.reserve_mb, opts.max_mb, opts.ring, engine_name,
                              len(opts.ifaces) if engine_name == "tcpdump" else 1)
    except ValueError as exc:
        raise InputError(out, f"disk full: {free:.1f} MB free, {opts.reserve_mb:.0f} MB reserve; {engine_name}: "
                              f"{exc}") from None
    stem = f"{opts.host}"
    engine = _engines.ENGINES[engine_name](out, stem, opts.ifaces, bpf, lim, opts.buffer_mb)
    all_ifaces = _host.interfaces()
    manifest: dict = {
        "schema": "commpath.capture/v1", "host": opts.host, "role": opts.role,
        "interfaces": [{"name": i, "addresses": all_ifaces.get(i, [])} for i in
                       (sorted(all_ifaces) if opts.ifaces == ["any"] else opts.ifaces)],
        "requested_interfaces": opts.ifaces,
        "filter": bpf, "filter_source": "user" if opts.bpf is not None else "default",
        "engine": engine_name, "engine_reason": reason, "engine_version": engine.version(),
        "limits": {"duration_s": opts.duration, "max_size_mb": opts.max_mb, "ring_files": opts.ring,
                   "reserve_mb": opts.reserve_mb, "buffer_mb": opts.buffer_mb, "engine_total_mb": round(lim.total_mb, 3),
                   "engine_file_mb": round(lim.file_mb, 3), "engine_files": lim.files},
        "clock": _host.clock_source(), "status": "starting",
        "host_config": hostconfig.for_manifest(opts.host),
    }
    if previous:
        manifest["previous_run"] = previous
    stop = _Stop()
    stop.install()
    start = time.time()
    try:
        engine.start()
        _leftovers.record(out, stem, _iso(start), engine.pids())
        if not engine.wait_ready(15):
            stats = engine.stop()
            raise CommpathError(f"capture engine {engine_name} did not start: " + "; ".join(stats["errors"] or ["no reason given"]))
        start = time.time()
        manifest.update(start=_iso(start), start_ts=start, status="running")
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _say(f"commpath capture: listening on {', '.join(opts.ifaces)} -> {out}", True)
        if ready:
            ready()
        limit = f"/{opts.duration:.0f}s" if opts.duration else "s"

        def progress(now: float, size: float) -> None:
            print(f"\rcapturing {now - start:6.1f}{limit}  {size:8.2f} MB  {len(engine.files())} file(s)",
                  end="", file=sys.stderr, flush=True)
        last_line = time.time()
        if opts.progress:               # at once: a capture ended within its first second still shows one
            progress(last_line, 0.0)
        write_stats(out, opts.host, engine_name, engine.running_stats(), True)
        last_stats = time.monotonic()
        while stop.reason is None:
            stop.wake.wait(0.2)
            if stop.reason is not None:
                break
            now = time.time()
            elapsed = now - start
            size = _size_mb(engine.files())
            if opts.duration is not None and elapsed >= opts.duration:
                stop.reason = "duration"
            elif engine.full():              # the engine's own limit: it stopped, or began its last file
                stop.reason = lim.reason
            elif opts.max_mb is not None and not opts.ring and size >= opts.max_mb:
                stop.reason = "max-size"
            elif _host.free_mb(out) < opts.reserve_mb:   # someone else filled the disk
                stop.reason = "disk-full"
            elif not engine.alive():
                stop.reason = "engine-exited"
            if stop.reason is None and time.monotonic() - last_stats >= STATS_SECONDS:
                write_stats(out, opts.host, engine_name, engine.running_stats(), True)
                last_stats = time.monotonic()
            if opts.progress and now - last_line >= 1.0:
                last_line = now
                progress(now, size)
    finally:
        stop.restore()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish writing the manifest even on a second Ctrl-C
        try:
            stats = engine.stop() if manifest["status"] == "running" else {"interfaces": {}, "errors": []}
        finally:
            _leftovers.remove(out)
            signal.signal(signal.SIGINT, signal.default_int_handler)
    end = time.time()
    if opts.progress:
        print(file=sys.stderr)
    files = engine.files()
    ifstats = stats["interfaces"]
    captured = [s.get("captured") for s in ifstats.values()]
    dropped = [s.get("dropped") for s in ifstats.values()]
    if manifest["status"] == "running":
        write_stats(out, opts.host, engine_name, ifstats, False)
    manifest.update(
        status="complete" if not stats["errors"] else "error", stop=_iso(end), stop_ts=end,
        stop_reason=stop.reason, duration_s=round(end - start, 3),
        files=[{"name": f.name, "bytes": f.stat().st_size} for f in files],
        packets_captured=sum(c for c in captured if c is not None) if any(c is not None for c in captured) else None,
        packets_dropped=sum(d for d in dropped if d is not None) if any(d is not None for d in dropped) else None,
        interface_stats=ifstats, errors=stats["errors"],
        host_config=hostconfig.for_manifest(opts.host, manifest["host_config"]),   # components started meanwhile
    )
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    _say(f"commpath capture: stopped ({stop.reason}); {manifest['packets_captured']} packets captured, "
         f"{manifest['packets_dropped']} dropped, {_size_mb(files):.2f} MB in {len(files)} file(s)", opts.progress)
    return manifest


def main(args) -> int:
    opts = Options(role=args.role, out=Path(args.out), host=args.host or socket.gethostname(),
                   ifaces=list(args.iface) or ["any"], bpf=args.filter, inventory=getattr(args, "inventory", None),
                   duration=args.duration, max_mb=args.max_size, ring=args.ring,
                   engine=getattr(args, "engine", "auto") or "auto",
                   buffer_mb=getattr(args, "buffer_mb", None) or _engines.BUFFER_MB)
    if opts.ring is not None and opts.ring < 1:
        raise CommpathError("--ring must be at least 1")
    if opts.buffer_mb < 1:
        raise CommpathError("--buffer-mb must be at least 1")
    for name, value in (("--duration", opts.duration), ("--max-size", opts.max_mb)):
        if value is not None and value <= 0:
            raise CommpathError(f"{name} must be positive")
    manifest = capture(opts)
    return 0 if manifest["status"] == "complete" else 1

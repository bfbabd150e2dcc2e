"""The agent's pid file in its output folder, and the clean-up of a previous run that was killed.

A run writes ``.commpath-capture.json`` (its own and its engines' pids with their kernel start
times, so a recycled pid is never mistaken for them) and removes it when it ends. Finding one at
start means the last run did not end: its engines are stopped if any survived, and its files move
to ``interrupted-<start>/`` with their manifest marked ``interrupted``, so the new run neither
overwrites them nor mixes with them.
"""

from __future__ import annotations

import json
import os
import select
import signal
from pathlib import Path

from ..errors import InputError
from ._engines import rename_rotated

PID_FILE = ".commpath-capture.json"


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), None if it has
    exited (a zombie no one reaped yet has exited too)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _same(entry: dict) -> bool:
    return start_ticks(entry["pid"]) == entry["ticks"]


def record(out: Path, stem: str, started: str, engine_pids: list[int]) -> None:
    me = os.getpid()
    data = {"agent": {"pid": me, "ticks": start_ticks(me)}, "stem": stem, "started": started,
            "engines": [{"pid": p, "ticks": start_ticks(p)} for p in engine_pids]}
    tmp = out / (PID_FILE + ".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    tmp.replace(out / PID_FILE)


def remove(out: Path) -> None:
    (out / PID_FILE).unlink(missing_ok=True)


def _stop(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM (the engine closes its file), SIGKILL if it has not exited within ``timeout``."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        if not select.select([fd], [], [], timeout)[0]:   # the pidfd turns readable when it exits
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            select.select([fd], [], [], timeout)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def clean(out: Path) -> dict | None:
    """Clean up after a previous run into ``out`` that did not end; what was done, or None if nothing."""
    path = out / PID_FILE
    try:
        prev = json.loads(path.read_text())
        agent, stem, started = prev["agent"], prev["stem"], prev["started"]
        engines = prev["engines"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return {"note": f"unreadable {PID_FILE} removed"}
    if _same(agent):
        raise InputError(out, f"another capture (pid {agent['pid']}) is writing to this folder")
    stopped = []
    for engine in engines:
        if _same(engine):              # it outlived its agent (an engine started before this release)
            _stop(engine["pid"])
            stopped.append(engine["pid"])
    rename_rotated(out, stem)
    kept = out / ("interrupted-" + "".join(c for c in started if c.isdigit())[:14])
    kept.mkdir(exist_ok=True)
    moved = []
    for f in sorted(out.iterdir()):
        if f.is_file() and f.name.startswith(stem) and ".pcap" in f.name:
            f.rename(kept / f.name)
            moved.append({"name": f.name, "bytes": (kept / f.name).stat().st_size})
    stats = out / "stats.json"         # its last running counts (agent.STATS_FILE) go with its files
    if stats.exists():
        stats.rename(kept / stats.name)
    manifest = out / "manifest.json"
    if manifest.exists():
        try:
            m = json.loads(manifest.read_text())
        except ValueError:
            m = {}
        m.update(status="interrupted", stop_reason="agent-killed", files=moved)
        (kept / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
        manifest.unlink()
    path.unlink(missing_ok=True)
    return {"agent_pid": agent["pid"], "engines_stopped": stopped, "moved_to": kept.name,
            "files": [f["name"] for f in moved]}

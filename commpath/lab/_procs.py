"""Background processes inside the lab's namespaces, remembered by pid in the lab's state."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from ..errors import CommpathError


def spawn(ns: str, cmd: list[str], log: Path, env: dict | None = None) -> int:
    """Start ``cmd`` in namespace ``ns`` (``ip netns exec`` execs it: the pid is the command's)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, **(env or {})))
    return proc.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def wait_for(log: Path, text: str, pid: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if not alive(pid):
            break
        time.sleep(0.05)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
    raise CommpathError(f"lab: {what} did not start: {' | '.join(tail) or 'no output'} (log {log})")


def stop(pid: int, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
    """Signal one process we started and wait for it; SIGKILL after ``timeout``."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

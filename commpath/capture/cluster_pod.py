"""The agent pod of `commpath cluster capture`: capture this host, then wait to be collected.

``python -m commpath.capture.cluster_pod run`` is the container's command in the DaemonSet; the
other actions are run by ``exec`` through the API server: ``status`` (one JSON line),
``stop`` (ends the capture early, as Ctrl-C would) and ``pack`` (this host's folder as a tar
stream on stdout). Only the standard library, PyYAML and ``commpath.capture`` are imported, so
the agent image needs no analysis stack.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

from ..errors import CommpathError
from .agent import Options, capture
from .filters import read_inventory

#: Beside the hosts' folders under the captures root: the agent's pid and where it is.
PID_FILE, STATE_FILE = ".agent.pid", ".agent.state"


def role_of(node: str, inventory: dict) -> str:
    """control-plane when the inventory lists ``node`` among the control-plane hosts, else node."""
    names = {str(m.get("name")) for m in inventory.get("control_plane") or []}
    return "control-plane" if node in names else "node"


def interfaces_of(host_ip: str | None, role: str) -> list[str]:
    """The interface holding the host's address (its uplink), and ``lo`` on a control-plane host, where
    the components reach the API server and etcd on the host itself; ``any`` when the address is not found."""
    try:
        data = json.loads(subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=10,
                                         check=True).stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return ["any"]
    found = [e["ifname"] for e in data if host_ip and any(a.get("local") == host_ip for a in e.get("addr_info", []))]
    if not found:
        return ["any"]
    return found + (["lo"] if role == "control-plane" and "lo" not in found else [])


def _write_state(root: Path, **state) -> None:
    tmp = root / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(root / STATE_FILE)


def run(args) -> int:
    """Capture until the duration or `stop`, then idle (the pod must stay up to be collected) until SIGTERM."""
    root = Path(args.root)
    inventory = read_inventory(args.inventory) if args.inventory else {}
    role = role_of(args.node, inventory)
    ifaces = list(args.iface) or interfaces_of(args.host_ip, role)
    (root / PID_FILE).write_text(str(os.getpid()))
    _write_state(root, state="starting", role=role, interfaces=ifaces)
    opts = Options(role=role, out=root / args.node, host=args.node, ifaces=ifaces, inventory=args.inventory,
                   duration=args.duration, max_mb=args.max_size, engine=args.engine, progress=False)
    try:
        manifest = capture(opts, ready=lambda: _write_state(root, state="capturing", role=role, interfaces=ifaces))
        _write_state(root, state="done", role=role, interfaces=ifaces, status=manifest["status"],
                     stop_reason=manifest.get("stop_reason"))
    except Exception as exc:      # noqa: BLE001 - reported by `status`; a crash would only restart the pod
        _write_state(root, state="failed", role=role, interfaces=ifaces,
                     error=str(exc) if isinstance(exc, CommpathError) else f"{type(exc).__name__}: {exc}")
        print(f"commpath cluster agent: error: {exc}", file=sys.stderr, flush=True)
    print("commpath cluster agent: waiting to be collected", file=sys.stderr, flush=True)
    ended = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: ended.set())
    ended.wait()
    return 0


def status(args) -> int:
    """One JSON line: the agent's state, and the bytes and packets written so far."""
    root = Path(args.root)
    try:
        state = json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        state = {"state": "starting"}
    folder = root / args.node
    files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    state["bytes"] = sum(p.stat().st_size for p in files)
    state["files"] = len(files)
    print(json.dumps(state), flush=True)
    return 0


def stop(args) -> int:
    """Ask the agent to end its capture (SIGINT, as Ctrl-C) and wait until its manifest is final."""
    root = Path(args.root)
    try:
        pid = int((root / PID_FILE).read_text())
    except (OSError, ValueError):
        raise CommpathError(f"{root / PID_FILE}: no agent is running") from None
    deadline = time.monotonic() + args.timeout
    asked = False
    while time.monotonic() < deadline:
        try:
            state = json.loads((root / STATE_FILE).read_text()).get("state")
        except (OSError, ValueError):
            state = "starting"
        if state in ("done", "failed"):
            return status(args)
        if state == "capturing" and not asked:
            os.kill(pid, signal.SIGINT)
            asked = True
        time.sleep(0.1)    # polls a file another process writes; bounded by --timeout
    raise CommpathError(f"the agent (pid {pid}) did not finish within {args.timeout:.0f}s")


def pack(args) -> int:
    """This host's folder (capture files and manifest.json) as an uncompressed tar stream on stdout."""
    folder = Path(args.root) / args.node
    if not folder.is_dir():
        raise CommpathError(f"{folder}: nothing was captured")
    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                tar.add(path, arcname=f"{args.node}/{path.name}")
    sys.stdout.buffer.flush()
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m commpath.capture.cluster_pod", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["run", "status", "stop", "pack"])
    p.add_argument("--root", default="/captures", help="the captures folder (an emptyDir)")
    p.add_argument("--node", default=os.environ.get("NODE_NAME", ""), help="this host's node name")
    p.add_argument("--host-ip", default=os.environ.get("HOST_IP"), help="this host's address (the pod's hostIP)")
    p.add_argument("--inventory", help="the cluster inventory (the ConfigMap's file)")
    p.add_argument("--iface", action="append", default=[], help="interfaces ([]: the host's uplink, and lo on a "
                                                               "control-plane host)")
    p.add_argument("--duration", type=float, help="seconds to capture")
    p.add_argument("--max-size", type=float, help="MB of capture files at most")
    p.add_argument("--engine", default="auto", help="capture engine")
    p.add_argument("--timeout", type=float, default=60.0, help="stop: seconds to wait for the final manifest")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.node:
        print("commpath cluster agent: error: --node (or $NODE_NAME) is required", file=sys.stderr)
        return 2
    try:
        return {"run": run, "status": status, "stop": stop, "pack": pack}[args.action](args)
    except CommpathError as exc:
        print(f"commpath cluster agent: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

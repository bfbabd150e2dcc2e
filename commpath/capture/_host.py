"""Facts about the capturing host: privileges, interfaces and addresses, free disk, clock."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

CAP_NET_ADMIN, CAP_NET_RAW = 12, 13


def effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def can_capture() -> tuple[bool, str]:
    """Whether this process may open raw sockets (root, or CAP_NET_RAW and CAP_NET_ADMIN)."""
    caps = effective_capabilities()
    if caps >> CAP_NET_RAW & 1 and caps >> CAP_NET_ADMIN & 1:
        return True, "CAP_NET_RAW and CAP_NET_ADMIN"
    return False, (f"capturing needs root or CAP_NET_RAW and CAP_NET_ADMIN (uid {os.geteuid()} has neither); "
                   "run with sudo or grant them: setcap cap_net_raw,cap_net_admin+eip")


def interfaces() -> dict[str, list[str]]:
    """Interface name -> addresses (CIDR notation), from `ip -j addr`."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=5, check=True).stdout
        data = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {name: [] for _, name in socket.if_nameindex()}
    return {entry["ifname"]: [f"{a['local']}/{a['prefixlen']}" for a in entry.get("addr_info", [])] for entry in data}


def free_mb(path) -> float:
    return shutil.disk_usage(path).free / 1e6


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
                ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
                ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
                ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
                ("_pad", ctypes.c_int * 11)]


def clock_source() -> dict:
    """The kernel clock source and its NTP discipline state (adjtimex), for cross-host comparisons."""
    info: dict = {"clock": "CLOCK_REALTIME"}
    try:
        info["clocksource"] = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource").read_text().strip()
    except OSError:
        info["clocksource"] = None
    try:
        tx = _Timex()
        state = ctypes.CDLL(None, use_errno=True).adjtimex(ctypes.byref(tx))
        info["ntp_synchronized"] = state != 5 and not (tx.status & 0x40)  # TIME_ERROR / STA_UNSYNC
        info["max_error_us"] = int(tx.maxerror)
        info["est_error_us"] = int(tx.esterror)
    except (OSError, AttributeError):
        info["ntp_synchronized"] = None
    return info

"""Turns segmentation offloads off on a lab host's interfaces, so that capture ring frames stay MTU-sized.

tcpdump in immediate mode reads through a TPACKET_V2 ring whose frames are as large as the biggest
packet the interface may hand it: 64 KiB when TSO, GSO or GRO is on (veths and loopback have them on),
so an 8 MB buffer holds about 120 packets and a loaded machine drops the start of connections. With the
offloads off (and loopback at an Ethernet MTU) a frame is about 2 KiB and the same buffer holds 30 times
more packets. The lab's namespaces are its own: nothing outside them changes.

Run inside the host's network namespace: ``python -m commpath.lab.real._offload IFACE...`` (legacy
ethtool ioctls: no ethtool binary is needed); ``--show IFACE...`` prints each one's settings as JSON.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import socket
import struct
import sys

SIOCETHTOOL = 0x8946
#: feature -> (get, set) ethtool commands (linux/ethtool.h)
FEATURES = {"tso": (0x1E, 0x1F), "gso": (0x23, 0x24), "gro": (0x2B, 0x2C)}


def _ethtool(sock: socket.socket, iface: str, cmd: int, value: int = 0) -> int:
    buf = (ctypes.c_uint32 * 2)(cmd, value)
    fcntl.ioctl(sock, SIOCETHTOOL, struct.pack("16sP", iface.encode(), ctypes.addressof(buf)))
    return int(buf[1])


def offloads(iface: str) -> dict[str, int]:
    """What TSO, GSO and GRO read on ``iface`` (0: off)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return {name: _ethtool(sock, iface, get) for name, (get, _) in FEATURES.items()}


def offloads_off(iface: str) -> dict[str, int]:
    """Switch TSO, GSO and GRO off on ``iface``; returns what each reads afterwards."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, set_ in FEATURES.values():
            _ethtool(sock, iface, set_, 0)
    return offloads(iface)


def main(ifaces: list[str]) -> int:
    if ifaces[:1] == ["--show"]:
        print(json.dumps({i: offloads(i) for i in ifaces[1:]}))
        return 0
    left = {i: s for i in ifaces if any((s := offloads_off(i)).values())}
    if left:
        print(f"offloads still on: {left}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

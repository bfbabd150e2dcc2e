"""Packet headers of a whole chunk parsed by one compiled kernel: link, IP, TCP/UDP, overlays."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from ._native import kernels, ptr

# Link types (LINKTYPE_* of the tcpdump.org registry).
LINKTYPES = {
    0: "null", 1: "ethernet", 12: "raw", 14: "raw", 101: "raw", 108: "loop",
    113: "linux-sll", 228: "ipv4", 229: "ipv6", 276: "linux-sll2",
}

# Ethernet types.
ETH_IPV4, ETH_IPV6, ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD, ETH_TEB = 0x0800, 0x86DD, 0x8100, 0x88A8, 0x9100, 0x6558

# IP protocol numbers.
IPPROTO_HOPOPTS, IPPROTO_IPIP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_IPV6 = 0, 4, 6, 17, 41
IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_ESP, IPPROTO_AH, IPPROTO_NONE, IPPROTO_DSTOPTS = 43, 44, 50, 51, 59, 60

# Overlay ports.
VXLAN_PORTS = (4789, 8472)
GENEVE_PORT = 6081
WIREGUARD_PORT = 51820

# Tunnel kinds as stored in the per-packet ``tunnel`` column.
TUNNELS = {0: "", 1: "vxlan", 2: "geneve", 3: "ipip", 4: "6in4", 5: "4in6", 6: "ip6ip6"}

# Per-packet ``status`` values.
ST_OK, ST_NOT_IP, ST_UNSUPPORTED_LINK, ST_MALFORMED, ST_FRAGMENT, ST_OTHER_PROTO = 0, 1, 2, 3, 4, 5

@dataclass
class Headers:
    """Parsed header fields of one chunk's packets, one array per field."""

    status: np.ndarray      # int8, ST_*
    ipver: np.ndarray       # int8
    src_hi: np.ndarray      # uint64 (IPv4: 0)
    src_lo: np.ndarray      # uint64 (IPv4: ::ffff:a.b.c.d)
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    proto: np.ndarray       # uint8
    sport: np.ndarray       # int32
    dport: np.ndarray
    flags: np.ndarray       # uint8 TCP flags
    seq: np.ndarray         # uint32
    pl_off: np.ndarray      # int64 payload offset in the chunk buffer
    pl_cap: np.ndarray      # int32 payload bytes captured
    pl_wire: np.ndarray     # int32 payload bytes on the wire
    frag: np.ndarray        # int8 0 none, 1 first fragment, 2 later fragment
    ip_id: np.ndarray       # uint32
    tunnel: np.ndarray      # int8 TUNNELS key of the outermost overlay
    tun_src_hi: np.ndarray
    tun_src_lo: np.ndarray
    tun_dst_hi: np.ndarray
    tun_dst_lo: np.ndarray
    vni: np.ndarray         # int32, -1 none
    vlan: np.ndarray        # int32, -1 none
    cols: object = None     # the arrays' addresses in FIELDS order, as the kernels take them


FIELDS = [(name, dt) for name, dt in [
    ("status", np.int8), ("ipver", np.int8), ("src_hi", np.uint64), ("src_lo", np.uint64),
    ("dst_hi", np.uint64), ("dst_lo", np.uint64), ("proto", np.uint8), ("sport", np.int32),
    ("dport", np.int32), ("flags", np.uint8), ("seq", np.uint32), ("pl_off", np.int64),
    ("pl_cap", np.int32), ("pl_wire", np.int32), ("frag", np.int8), ("ip_id", np.uint32),
    ("tunnel", np.int8), ("tun_src_hi", np.uint64), ("tun_src_lo", np.uint64),
    ("tun_dst_hi", np.uint64), ("tun_dst_lo", np.uint64), ("vni", np.int32), ("vlan", np.int32),
]]


def alloc(n: int) -> tuple[dict[str, np.ndarray], ctypes.Array]:
    """Header arrays for ``n`` packets, and their addresses in FIELDS order as the kernels take them."""
    arrays = {name: np.empty(n, dt) for name, dt in FIELDS}
    return arrays, (ctypes.c_void_p * len(FIELDS))(*[ptr(arrays[name], dt) for name, dt in FIELDS])


def parse(buf: np.ndarray, off: np.ndarray, caplen: np.ndarray, linktype: np.ndarray) -> Headers:
    """Parse every packet of a chunk into header arrays (the kernel is ``cp_parse_headers``)."""
    n = len(off)
    arrays, cols = alloc(n)
    kernels().cp_parse_headers(ptr(buf, np.uint8), n, ptr(off, np.int64), ptr(caplen, np.int32),
                               ptr(linktype, np.int32), cols)
    return Headers(**arrays, cols=cols)

"""Packet headers of a whole chunk parsed by one compiled kernel: link, IP, TCP/UDP, overlays."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

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

V4_MAPPED = np.uint64(0xFFFF00000000)


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


FIELDS = [(name, dt) for name, dt in [
    ("status", np.int8), ("ipver", np.int8), ("src_hi", np.uint64), ("src_lo", np.uint64),
    ("dst_hi", np.uint64), ("dst_lo", np.uint64), ("proto", np.uint8), ("sport", np.int32),
    ("dport", np.int32), ("flags", np.uint8), ("seq", np.uint32), ("pl_off", np.int64),
    ("pl_cap", np.int32), ("pl_wire", np.int32), ("frag", np.int8), ("ip_id", np.uint32),
    ("tunnel", np.int8), ("tun_src_hi", np.uint64), ("tun_src_lo", np.uint64),
    ("tun_dst_hi", np.uint64), ("tun_dst_lo", np.uint64), ("vni", np.int32), ("vlan", np.int32),
]]


@numba.njit(cache=True, nogil=True, inline="always")
def _be16(b, p):
    return (np.int64(b[p]) << 8) | np.int64(b[p + 1])


@numba.njit(cache=True, nogil=True, inline="always")
def _be32(b, p):
    return (np.int64(b[p]) << 24) | (np.int64(b[p + 1]) << 16) | (np.int64(b[p + 2]) << 8) | np.int64(b[p + 3])


@numba.njit(cache=True, nogil=True, inline="always")
def _be64(b, p):
    v = np.uint64(0)
    for j in range(8):
        v = (v << np.uint64(8)) | np.uint64(b[p + j])
    return v


@numba.njit(cache=True, nogil=True)
def _ethertype_skip(b, p, end, vlan_out, i):
    """Walk 802.1Q/QinQ tags from the ethertype at ``p``; returns (ethertype, next offset)."""
    et = _be16(b, p)
    p += 2
    depth = 0
    while (et == 0x8100 or et == 0x88A8 or et == 0x9100) and p + 4 <= end and depth < 4:
        if vlan_out[i] < 0:
            vlan_out[i] = _be16(b, p) & 0x0FFF
        et = _be16(b, p + 2)
        p += 4
        depth += 1
    return et, p


@numba.njit(cache=True, nogil=True, inline="always")
def _enter_tunnel(i, kind, vni, sh, sl, dh, dl, h_tunnel, h_vni, h_tsh, h_tsl, h_tdh, h_tdl):
    """Remember the outermost overlay: its kind, VNI and underlay endpoints."""
    if h_tunnel[i] == 0:
        h_tunnel[i] = kind
        h_vni[i] = vni
        h_tsh[i] = sh
        h_tsl[i] = sl
        h_tdh[i] = dh
        h_tdl[i] = dl


@numba.njit(cache=True, nogil=True)
def parse_headers(buf, off, caplen, linktype, h_status, h_ipver, h_src_hi, h_src_lo, h_dst_hi, h_dst_lo,
                  h_proto, h_sport, h_dport, h_flags, h_seq, h_pl_off, h_pl_cap, h_pl_wire, h_frag,
                  h_ip_id, h_tunnel, h_tsh, h_tsl, h_tdh, h_tdl, h_vni, h_vlan):
    n = off.shape[0]
    for i in range(n):
        p = off[i]
        end = p + caplen[i]
        lt = linktype[i]
        h_status[i] = 1
        h_ipver[i] = 0
        h_proto[i] = 0
        h_sport[i] = 0
        h_dport[i] = 0
        h_flags[i] = 0
        h_seq[i] = 0
        h_pl_off[i] = 0
        h_pl_cap[i] = 0
        h_pl_wire[i] = 0
        h_frag[i] = 0
        h_ip_id[i] = 0
        h_tunnel[i] = 0
        h_tsh[i] = 0
        h_tsl[i] = 0
        h_tdh[i] = 0
        h_tdl[i] = 0
        h_vni[i] = -1
        h_vlan[i] = -1
        h_src_hi[i] = 0
        h_src_lo[i] = 0
        h_dst_hi[i] = 0
        h_dst_lo[i] = 0
        # ---- link layer -> network protocol (ethertype) at p
        et = -1
        if lt == 1:
            if p + 14 > end:
                h_status[i] = 3
                continue
            et, p = _ethertype_skip(buf, p + 12, end, h_vlan, i)
        elif lt == 113:
            if p + 16 > end:
                h_status[i] = 3
                continue
            et, p = _ethertype_skip(buf, p + 14, end, h_vlan, i)
        elif lt == 276:
            if p + 20 > end:
                h_status[i] = 3
                continue
            et = _be16(buf, p)
            p += 20
            if et == 0x8100 or et == 0x88A8:
                et, p = _ethertype_skip(buf, p - 2, end, h_vlan, i)
        elif lt == 101 or lt == 12 or lt == 14 or lt == 228 or lt == 229:
            if p >= end:
                h_status[i] = 3
                continue
            v = buf[p] >> 4
            et = 0x0800 if v == 4 else (0x86DD if v == 6 else -1)
        elif lt == 0 or lt == 108:
            if p + 4 > end:
                h_status[i] = 3
                continue
            if lt == 108:
                af = _be32(buf, p)
            else:
                af = np.int64(buf[p]) | (np.int64(buf[p + 1]) << 8) | (np.int64(buf[p + 2]) << 16) | (np.int64(buf[p + 3]) << 24)
                if af > 0xFFFF:
                    af = _be32(buf, p)
            p += 4
            et = 0x0800 if af == 2 else (0x86DD if (af == 10 or af == 24 or af == 28 or af == 30) else -1)
        else:
            h_status[i] = 2
            continue
        # ---- network and transport layers; overlays loop back here
        layers = 0
        o_ver = 0
        o_sh = np.uint64(0)
        o_sl = np.uint64(0)
        o_dh = np.uint64(0)
        o_dl = np.uint64(0)
        o_sp = 0
        o_dp = 0
        o_off = np.int64(0)
        o_cap = 0
        o_wire = 0
        o_vlan = -1
        while layers < 4:
            layers += 1
            proto = -1
            l4 = 0
            l4_end = 0
            frag = 0
            if et == 0x0800:
                if p + 20 > end or (buf[p] >> 4) != 4:
                    h_status[i] = 3
                    break
                ihl = (buf[p] & 15) * 4
                tot = _be16(buf, p + 2)
                if ihl < 20 or tot < ihl or p + ihl > end:
                    h_status[i] = 3
                    break
                fo = _be16(buf, p + 6)
                mf = (fo >> 13) & 1
                foff = fo & 0x1FFF
                if foff != 0:
                    frag = 2
                elif mf:
                    frag = 1
                proto = np.int64(buf[p + 9])
                sh = np.uint64(0)
                sl = V4_MAPPED | np.uint64(_be32(buf, p + 12))
                dh = np.uint64(0)
                dl = V4_MAPPED | np.uint64(_be32(buf, p + 16))
                ver = 4
                ipid = _be16(buf, p + 4)
                l4 = p + ihl
                l4_end = p + tot
            elif et == 0x86DD:
                if p + 40 > end or (buf[p] >> 4) != 6:
                    h_status[i] = 3
                    break
                plen = _be16(buf, p + 4)
                proto = np.int64(buf[p + 6])
                sh = _be64(buf, p + 8)
                sl = _be64(buf, p + 16)
                dh = _be64(buf, p + 24)
                dl = _be64(buf, p + 32)
                ver = 6
                ipid = 0
                l4 = p + 40
                l4_end = l4 + plen
                hops = 0
                while hops < 8 and (proto == 0 or proto == 43 or proto == 60 or proto == 44 or proto == 51):
                    hops += 1
                    if l4 + 8 > end:
                        proto = -2
                        break
                    nxt = np.int64(buf[l4])
                    if proto == 44:
                        fo = _be16(buf, l4 + 2)
                        ipid = _be32(buf, l4 + 4)
                        if (fo >> 3) != 0:
                            frag = 2
                        elif fo & 1:
                            frag = 1
                        ln = 8
                    elif proto == 51:
                        ln = (np.int64(buf[l4 + 1]) + 2) * 4
                    else:
                        ln = (np.int64(buf[l4 + 1]) + 1) * 8
                    proto = nxt
                    l4 += ln
                if proto == -2:
                    h_status[i] = 3
                    break
            else:
                h_status[i] = 1
                break
            # record the network header of this layer
            h_ipver[i] = ver
            h_src_hi[i] = sh
            h_src_lo[i] = sl
            h_dst_hi[i] = dh
            h_dst_lo[i] = dl
            h_proto[i] = proto
            h_frag[i] = frag
            h_ip_id[i] = ipid
            if l4_end > end:
                wire_end = l4_end
                l4_end = end
            else:
                wire_end = l4_end
            if frag == 2:
                h_status[i] = 4
                h_pl_wire[i] = wire_end - l4 if wire_end > l4 else 0
                break
            if proto == 4 or proto == 41:  # IP in IP
                kind = 3 if (ver == 4 and proto == 4) else (4 if ver == 4 else (5 if proto == 4 else 6))
                _enter_tunnel(i, kind, -1, sh, sl, dh, dl, h_tunnel, h_vni, h_tsh, h_tsl, h_tdh, h_tdl)
                et = 0x0800 if proto == 4 else 0x86DD
                p = l4
                continue
            if proto == 6:
                # ports, sequence number and flags suffice: a snaplen may cut the options
                if l4 + 14 > l4_end:
                    h_status[i] = 3
                    break
                doff = (buf[l4 + 12] >> 4) * 4
                if doff < 20 or l4 + doff > wire_end:
                    h_status[i] = 3
                    break
                h_sport[i] = _be16(buf, l4)
                h_dport[i] = _be16(buf, l4 + 2)
                h_seq[i] = np.uint32(_be32(buf, l4 + 4))
                h_flags[i] = buf[l4 + 13]
                h_pl_off[i] = l4 + doff
                cap = l4_end - (l4 + doff)
                h_pl_cap[i] = cap if cap > 0 else 0
                wl = wire_end - (l4 + doff)
                h_pl_wire[i] = wl if wl > 0 else 0
                h_status[i] = 0
                break
            if proto == 17:
                if l4 + 4 > end or l4 + 8 > wire_end:
                    h_status[i] = 3
                    break
                sp = _be16(buf, l4)
                dp = _be16(buf, l4 + 2)
                h_sport[i] = sp
                h_dport[i] = dp
                po = l4 + 8
                h_pl_off[i] = po
                cap = l4_end - po
                h_pl_cap[i] = cap if cap > 0 else 0
                wl = wire_end - po
                if frag == 1 and l4 + 6 <= end:   # the first fragment carries the datagram's length
                    wl = _be16(buf, l4 + 4) - 8
                h_pl_wire[i] = wl if wl > 0 else 0
                h_status[i] = 0
                if frag != 0:
                    break
                # VXLAN: flags byte 0x08, inner Ethernet after 8 bytes
                if o_ver == 0:
                    o_ver = ver
                    o_sh = sh
                    o_sl = sl
                    o_dh = dh
                    o_dl = dl
                    o_sp = sp
                    o_dp = dp
                    o_off = po
                    o_cap = h_pl_cap[i]
                    o_wire = h_pl_wire[i]
                    o_vlan = h_vlan[i]
                if (dp == 4789 or dp == 8472 or sp == 4789 or sp == 8472) and po + 8 + 14 <= end and (buf[po] & 0x08) != 0:
                    _enter_tunnel(i, 1, _be32(buf, po + 4) >> 8, sh, sl, dh, dl, h_tunnel, h_vni, h_tsh, h_tsl, h_tdh, h_tdl)
                    et, p = _ethertype_skip(buf, po + 8 + 12, end, h_vlan, i)
                    continue
                if (dp == 6081 or sp == 6081) and po + 8 <= end and (buf[po] >> 6) == 0:
                    optlen = (buf[po] & 0x3F) * 4
                    ptype = _be16(buf, po + 2)
                    inner = po + 8 + optlen
                    if inner <= end and (ptype == 0x6558 or ptype == 0x0800 or ptype == 0x86DD):
                        _enter_tunnel(i, 2, _be32(buf, po + 4) >> 8, sh, sl, dh, dl,
                                      h_tunnel, h_vni, h_tsh, h_tsl, h_tdh, h_tdl)
                        if ptype == 0x6558:
                            if inner + 14 > end:
                                h_status[i] = 3
                                break
                            et, p = _ethertype_skip(buf, inner + 12, end, h_vlan, i)
                        else:
                            et = ptype
                            p = inner
                        continue
                break
            if proto == 50:  # ESP: a flow by address pair, SPI kept as the destination "port"
                if l4 + 8 <= end:
                    h_dport[i] = 0
                h_status[i] = 0
                break
            h_status[i] = 5
            break
        if layers >= 4 and h_status[i] == 1:
            h_status[i] = 3
        if h_status[i] != 0 and h_status[i] != 4 and o_ver != 0 and h_tunnel[i] != 0 and h_tunnel[i] <= 2:
            # the overlay carries no TCP/UDP connection (ARP, ICMP, ...): the tunnel itself is the flow
            h_status[i] = 0
            h_ipver[i] = o_ver
            h_src_hi[i] = o_sh
            h_src_lo[i] = o_sl
            h_dst_hi[i] = o_dh
            h_dst_lo[i] = o_dl
            h_proto[i] = 17
            h_sport[i] = o_sp
            h_dport[i] = o_dp
            h_pl_off[i] = o_off
            h_pl_cap[i] = o_cap
            h_pl_wire[i] = o_wire
            h_frag[i] = 0
            h_flags[i] = 0
            h_vlan[i] = o_vlan
            h_tunnel[i] = 0
            h_vni[i] = -1


def parse(buf: np.ndarray, off: np.ndarray, caplen: np.ndarray, linktype: np.ndarray) -> Headers:
    """Parse every packet of a chunk into header arrays."""
    n = len(off)
    arrays = {name: np.empty(n, dt) for name, dt in FIELDS}
    parse_headers(buf, off, caplen, linktype, *arrays.values())
    return Headers(**arrays)

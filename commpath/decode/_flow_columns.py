"""One file's flow table as columns: addresses as codes into their texts, transports, end states, UDP services by port."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

import numpy as np

from . import _flowtable as ft
from ._packets import TUNNELS

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


#: addresses written per kernel call (their texts stay far below Arrow's 2 GiB of int32 offsets)
V4_TEXTS_BATCH = 1 << 24


def addresses(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """IPv4 or IPv6 text for each (hi, lo) pair as a Python object array (one string per distinct address)."""
    codes, texts = address_texts(hi, lo)
    return np.array(texts.to_pylist(), dtype=object)[codes]


def address_texts(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, "pa.Array"]:
    """Each (hi, lo) pair's index among the distinct addresses, and their texts as Arrow strings.

    IPv4 (the usual case, stored IPv4-mapped) is written in Arrow kernels: ``ipaddress`` costs
    about 4 µs per address, a million distinct clients 4 s, and a Python string per address
    58 MB. IPv6 keeps ``ipaddress``'s RFC 5952 text.
    """
    if hi.size == 0:
        return np.zeros(0, np.int64), _strings([])
    hi, lo = hi.astype(np.uint64, copy=False), lo.astype(np.uint64, copy=False)
    if not hi.any() and ((lo >> np.uint64(32)) == 0xFFFF).all():
        uniq, inverse = np.unique(lo, return_inverse=True)
        return inverse.reshape(-1), _v4_texts(uniq)
    uniq_hi, uniq_lo, inverse = _distinct_pairs(hi, lo)
    v4 = (uniq_hi == 0) & ((uniq_lo >> np.uint64(32)) == 0xFFFF)
    v6 = [str(ipaddress.IPv6Address((h << 64) | l)) for h, l in zip(uniq_hi[~v4].tolist(), uniq_lo[~v4].tolist())]
    order = np.concatenate([np.flatnonzero(v4), np.flatnonzero(~v4)])
    place = np.empty(len(order), np.int64)
    place[order] = np.arange(len(order))
    import pyarrow as pa
    texts = pa.concat_arrays([_v4_texts(uniq_lo[v4]), _strings(v6)]).take(_ints(place))
    return inverse, texts


def _ints(values: np.ndarray) -> "pa.Array":
    """An Arrow int64 array over a numpy array's buffer (``pa.array`` on numpy would import pandas)."""
    import pyarrow as pa
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def _strings(texts: list[str]) -> "pa.Array":
    """An Arrow string array of Python strings, from buffers (``pa.array`` would import pandas)."""
    import pyarrow as pa
    encoded = [t.encode() for t in texts]
    offsets = np.zeros(len(encoded) + 1, np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(encoded), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


def _distinct_pairs(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (hi, lo) pairs, sorted, and each pair's index among them.

    ``np.unique(axis=0)`` would sort the rows as 16-byte opaque values, about 20 times slower than
    this sort of two integer keys (0.9 s for a million rows)."""
    order = np.lexsort((lo, hi))
    h, l = hi[order], lo[order]
    first = np.empty(len(order), bool)
    first[:1] = True
    first[1:] = (h[1:] != h[:-1]) | (l[1:] != l[:-1])
    inverse = np.empty(len(order), np.int64)
    inverse[order] = np.cumsum(first) - 1
    return h[first], l[first], inverse


def _v4_texts(mapped: np.ndarray) -> "pa.Array":
    """Dotted quads of IPv4-mapped addresses (the low 32 bits), as Arrow strings written by a C kernel.

    The Arrow array is made from buffers: ``pa.array`` on Python or numpy values imports pandas
    (0.3 s), which ``commpath flows`` never needs."""
    import pyarrow as pa

    from ._native import kernels, ptr
    mapped = np.ascontiguousarray(mapped, dtype=np.uint64)
    pieces = []
    for at in range(0, max(len(mapped), 1), V4_TEXTS_BATCH):     # int32 offsets: 15 bytes a text at most
        part = mapped[at:at + V4_TEXTS_BATCH]
        data, offsets = np.empty(15 * len(part), np.uint8), np.empty(len(part) + 1, np.int32)
        kernels().cp_ipv4_texts(ptr(part, np.uint64), len(part), ptr(data, np.uint8), ptr(offsets, np.int32))
        pieces.append(pa.Array.from_buffers(pa.string(), len(part), [None, pa.py_buffer(offsets),
                                                                      pa.py_buffer(data[:offsets[-1]])]))
    return pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)


def flow_columns(fi: np.ndarray, fa: np.ndarray, ftime: np.ndarray, capture: str, base: int) -> dict:
    """The flow table of one file as numpy columns (``initiator`` and ``tunnel`` as codes, -1 for no VNI/VLAN).

    Every column is its own contiguous array: a column sliced out of the table would keep the
    whole table (23 integers a flow, 193 MB for a million flows) alive as long as the column."""
    n = len(fi)

    def column(matrix: np.ndarray, j: int) -> np.ndarray:
        return np.ascontiguousarray(matrix[:, j])
    flags = fi[:, ft.FLAGS]
    proto = fi[:, ft.PROTO]
    transport = np.full(n, TRANSPORTS.index("other"), np.int8)
    for number, name in ((6, "tcp"), (17, "udp"), (50, "esp")):
        transport[proto == number] = TRANSPORTS.index(name)
    rst = (flags & ft.F_RST) != 0
    fin = (flags & (ft.F_FIN0 | ft.F_FIN1)) != 0
    end_state = np.full(n, END_STATES.index("open"), np.int8)
    end_state[(proto == 6) & fin] = END_STATES.index("fin")
    end_state[(proto == 6) & rst] = END_STATES.index("rst")
    tunnel = column(fi, ft.TUNNEL)
    has_tunnel = tunnel != 0
    tun_src = _tunnel_addresses(has_tunnel, fa[:, ft.TSRC_HI], fa[:, ft.TSRC_LO])
    tun_dst = _tunnel_addresses(has_tunnel, fa[:, ft.TDST_HI], fa[:, ft.TDST_LO])
    sport = fi[:, ft.SPORT]
    dport = fi[:, ft.DPORT]
    payload_fwd, payload_rev = column(fi, ft.PL0), column(fi, ft.PL1)
    ip_codes, ip_texts = address_texts(np.concatenate([fa[:, ft.SRC_HI], fa[:, ft.DST_HI]]),
                                       np.concatenate([fa[:, ft.SRC_LO], fa[:, ft.DST_LO]]))
    app = _udp_app_protocol(proto, sport, dport, payload_fwd + payload_rev)
    wireguard = [port for port, name in UDP_PORT_PROTOCOLS.items() if name == "wireguard"]
    encrypted_underlay = (proto == 50) | ((proto == 17) & (np.isin(sport, wireguard) | np.isin(dport, wireguard)))
    return {
        "flow_id": np.arange(base, base + n, dtype=np.int64),
        "capture": capture,
        "first_frame": column(fi, ft.FIRST_FRAME),
        "last_frame": column(fi, ft.LAST_FRAME),
        "ts_start": column(ftime, ft.TS0),
        "ts_end": column(ftime, ft.TS1),
        "ip_version": fi[:, ft.IPVER].astype(np.int8),
        "src_ip": ip_codes[:n],
        "ip_texts": ip_texts,
        "src_port": sport.astype(np.int32),
        "dst_ip": ip_codes[n:],
        "dst_port": dport.astype(np.int32),
        "transport": transport,
        "packets": fi[:, ft.PK0] + column(fi, ft.PK1),
        "bytes": fi[:, ft.BY0] + column(fi, ft.BY1),
        "packets_fwd": column(fi, ft.PK0),
        "packets_rev": column(fi, ft.PK1),
        "bytes_fwd": column(fi, ft.BY0),
        "bytes_rev": column(fi, ft.BY1),
        "payload_fwd": payload_fwd,
        "payload_rev": payload_rev,
        "syn_seen": (flags & ft.F_SYN) != 0,
        "synack_seen": (flags & ft.F_SYNACK) != 0,
        "handshake_seen": (flags & ft.F_HS_DONE) != 0,
        "end_state": end_state,
        "initiator": fi[:, ft.INIT].copy(),
        "app_protocol": app,
        "http_connect": np.zeros(n, bool),
        "tunnel": tunnel,
        "tunnel_src": tun_src,
        "tunnel_dst": tun_dst,
        "tunnel_vni": column(fi, ft.VNI),
        "vlan": column(fi, ft.VLAN),
        "fragments": fi[:, ft.FRAGS].astype(np.int32),
        "truncated_packets": fi[:, ft.TRUNC].astype(np.int32),
        "encrypted_underlay": encrypted_underlay,
    }


def _tunnel_addresses(has_tunnel: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Outer addresses of the tunnelled flows, None for the others (most flows: not formatted at all)."""
    out = np.full(len(has_tunnel), None, dtype=object)
    if has_tunnel.any():
        out[has_tunnel] = addresses(hi[has_tunnel], lo[has_tunnel])
    return out


INIT_CATEGORIES = [ft.INIT_NAMES[i] for i in range(len(ft.INIT_NAMES))]
INIT_SYNACK, INIT_PAYLOAD = INIT_CATEGORIES.index("synack"), INIT_CATEGORIES.index("payload")
TUNNEL_CATEGORIES = [TUNNELS[i] for i in range(len(TUNNELS))]


#: the flow columns of addresses as codes into ``ip_texts`` (the distinct texts of the file, Arrow strings)
ADDRESS_CODE_COLUMNS = ("src_ip", "dst_ip")
#: the flow columns of address texts (object arrays, None where there is none)
ADDRESS_COLUMNS = ("tunnel_src", "tunnel_dst")
#: the names the ``transport`` and ``end_state`` codes stand for, sorted as pandas sorts categories
TRANSPORTS = ["esp", "other", "tcp", "udp"]
END_STATES = ["fin", "open", "rst"]
#: the flow columns of codes into a list of names, declared as categories of the names present
CODE_COLUMNS = {"transport": TRANSPORTS, "end_state": END_STATES}


def flow_frame(cols: dict) -> pd.DataFrame:
    """One file's flow columns as a DataFrame (codes become categories, -1 becomes NA)."""
    import pandas as pd
    import pyarrow as pa
    data = dict(cols)
    texts = data.pop("ip_texts")
    for name in ADDRESS_CODE_COLUMNS:
        data[name] = pd.arrays.ArrowStringArray(texts.take(pa.array(cols[name])))
    for name in ADDRESS_COLUMNS:   # straight to Arrow: pandas would test each object for its type first
        data[name] = pd.arrays.ArrowStringArray(pa.array(cols[name], pa.string(), from_pandas=True))
    for name, names in CODE_COLUMNS.items():
        data[name] = pd.Categorical.from_codes(cols[name], names).remove_unused_categories()
    data["app_protocol"] = pd.Categorical(cols["app_protocol"])  # a few distinct names: categories from the start
    data["initiator"] = pd.Categorical.from_codes(cols["initiator"], INIT_CATEGORIES)
    data["tunnel"] = pd.Categorical.from_codes(cols["tunnel"], TUNNEL_CATEGORIES)
    for name, dtype in (("tunnel_vni", np.int64), ("vlan", np.int32)):
        v = cols[name]
        data[name] = pd.arrays.IntegerArray(np.where(v >= 0, v, 0).astype(dtype), v < 0)
    return pd.DataFrame(data)


#: UDP services recognised by port: overlays and encrypted underlays.
UDP_PORT_PROTOCOLS = {51820: "wireguard", 4789: "vxlan", 8472: "vxlan", 6081: "geneve"}


def _udp_app_protocol(proto: np.ndarray, sport: np.ndarray, dport: np.ndarray, payload: np.ndarray) -> np.ndarray:
    """ESP, the UDP services known by port, "unknown" for other UDP with payload, else "none"."""
    app = np.empty(len(proto), dtype=object)
    app[:] = "none"            # one shared text: np.full would make a string object per flow
    app[proto == 50] = "esp"
    udp = np.flatnonzero(proto == 17)      # only the UDP flows are looked at further
    if udp.size:
        known = np.zeros(len(udp), bool)
        for port, name in UDP_PORT_PROTOCOLS.items():
            hit = (sport[udp] == port) | (dport[udp] == port)
            app[udp[hit]] = name
            known |= hit
        app[udp[~known & (payload[udp] > 0)]] = "unknown"
    return app


"""Compare commpath's flow table with tshark's connections; every difference becomes one readable line."""

from __future__ import annotations

import pandas as pd

from .tshark import connection_key

#: Differences between commpath and tshark that are right by design, and why.
#: - UDP: tshark keeps one udp.stream per 5-tuple for the whole capture; commpath starts a new
#:   flow after an idle timeout. UDP is therefore compared per 5-tuple, summed over commpath's flows.
#: - IPv4 fragments: tshark runs with IP reassembly off, so a first fragment carries the transport
#:   header in its own frame; the oracle puts each later fragment into the connection of its first
#:   fragment (same src, dst, IP id, protocol), so packets and bytes count every fragment, and the
#:   payload counts the datagram's UDP/TCP payload once (from the first fragment's header).
#: - Frames quoting a header inside an ICMP error belong to no connection in commpath.
#: - Non-TCP/UDP flows of commpath (ESP) have no tshark stream and are not compared here.
#: - The initiator is compared only where tshark knows it (a SYN, or a SYN-ACK's destination).


def _endpoint_key(ip, port) -> str:
    return connection_key("x", ip, int(port), ip, int(port)).split(" ")[1]


def _commpath_keys(flows: pd.DataFrame) -> pd.DataFrame:
    fl = flows[flows["transport"].astype(str).isin(["tcp", "udp"])].copy()
    fl["key"] = [connection_key(str(t), s, int(sp), d, int(dp)) for t, s, sp, d, dp in
                 zip(fl["transport"].astype(str), fl["src_ip"], fl["src_port"], fl["dst_ip"], fl["dst_port"])]
    fl["src_ep"] = [_endpoint_key(ip, p) for ip, p in zip(fl["src_ip"], fl["src_port"])]
    return fl


def _tshark_keys(conv: pd.DataFrame) -> pd.DataFrame:
    conv = conv.copy()
    conv["a_ep"] = [_endpoint_key(ip, p) for ip, p in zip(conv["a_ip"], conv["a_port"])]
    return conv


def compare(flows: pd.DataFrame, conv: pd.DataFrame, ts_tolerance: float = 2e-6) -> list[str]:
    """All differences between commpath ``flows`` and tshark connections ``conv`` (empty = agree)."""
    problems: list[str] = []
    fl = _commpath_keys(flows)
    if len(conv) == 0:
        conv = pd.DataFrame(columns=["transport", "stream", "first_frame", "key", "a_ip", "a_port"])
    tc = _tshark_keys(conv) if len(conv) else conv.assign(a_ep=[])
    problems += _compare_tcp(fl[fl["transport"].astype(str) == "tcp"], tc[tc["transport"] == "tcp"], ts_tolerance)
    problems += _compare_udp(fl[fl["transport"].astype(str) == "udp"], tc[tc["transport"] == "udp"])
    return problems


def _compare_tcp(fl: pd.DataFrame, tc: pd.DataFrame, ts_tolerance: float) -> list[str]:
    problems = []
    m = tc.merge(fl, on=["key", "first_frame"], how="outer", indicator="side", suffixes=("_t", ""))
    for row in m.itertuples():
        where = f"{row.key} first_frame {row.first_frame}"
        if row.side == "left_only":
            problems.append(f"{where}: tshark tcp.stream {row.stream} ({row.packets_t} packets) has no commpath flow")
            continue
        if row.side == "right_only":
            problems.append(f"{where}: commpath flow {row.flow_id} ({row.packets} packets) is no tshark tcp.stream")
            continue
        problems += _compare_pair(row, where, ts_tolerance)
        if pd.notna(row.initiator_ip):
            init = _endpoint_key(row.initiator_ip, row.initiator_port)
            if init != row.src_ep:
                problems.append(f"{where}: initiator commpath {row.src_ep} ({row.initiator}), tshark (SYN) {init}")
        if bool(row.handshake_seen) != bool(row.handshake_seen_t):
            problems.append(f"{where}: handshake_seen commpath {row.handshake_seen}, tshark {row.handshake_seen_t}")
        if str(row.end_state) != row.end_state_t:
            problems.append(f"{where}: end_state commpath {row.end_state}, tshark flags say {row.end_state_t}")
        if row.syn_seen != row.syn_seen_t or row.synack_seen != row.synack_seen_t:
            problems.append(f"{where}: syn/synack seen commpath {row.syn_seen}/{row.synack_seen}, "
                            f"tshark {row.syn_seen_t}/{row.synack_seen_t}")
    return problems


def _compare_pair(row, where: str, ts_tolerance: float) -> list[str]:
    problems = []
    for name in ("last_frame", "packets", "bytes"):
        a, b = getattr(row, f"{name}_t"), getattr(row, name)
        if int(a) != int(b):
            problems.append(f"{where}: {name} commpath {b}, tshark {a}")
    if abs(float(row.ts_start_t) - float(row.ts_start)) > ts_tolerance:
        problems.append(f"{where}: ts_start commpath {row.ts_start:.6f}, tshark {row.ts_start_t:.6f}")
    if abs(float(row.ts_end_t) - float(row.ts_end)) > ts_tolerance:
        problems.append(f"{where}: ts_end commpath {row.ts_end:.6f}, tshark {row.ts_end_t:.6f}")
    # per direction: commpath's src endpoint sent packets_fwd
    fwd_is_a = row.src_ep == row.a_ep
    for what in ("packets", "bytes", "payload"):
        t_fwd = getattr(row, f"{what}_a" if fwd_is_a else f"{what}_b")
        t_rev = getattr(row, f"{what}_b" if fwd_is_a else f"{what}_a")
        c_fwd, c_rev = getattr(row, f"{what}_fwd"), getattr(row, f"{what}_rev")
        if (int(c_fwd), int(c_rev)) != (int(t_fwd), int(t_rev)):
            problems.append(f"{where}: {what} fwd/rev commpath {c_fwd}/{c_rev}, tshark {t_fwd}/{t_rev} "
                            f"(fwd = from {row.src_ep})")
    t_tunnel = row.tunnel_t if isinstance(row.tunnel_t, str) else ""
    c_tunnel = "" if pd.isna(row.tunnel) else str(row.tunnel)
    if t_tunnel in ("vxlan", "geneve") and c_tunnel != t_tunnel:
        problems.append(f"{where}: tunnel commpath {c_tunnel!r}, tshark {t_tunnel!r}")
    if t_tunnel == "ipip" and not c_tunnel.startswith("ip"):
        problems.append(f"{where}: tunnel commpath {c_tunnel!r}, tshark IP-in-IP")
    return problems


def _compare_udp(fl: pd.DataFrame, tc: pd.DataFrame) -> list[str]:
    """UDP per 5-tuple: commpath's flows of a 5-tuple (split by idle timeout) summed."""
    problems = []
    if len(fl):
        rows = []
        for r in fl.itertuples():
            dst_ep = _endpoint_key(r.dst_ip, r.dst_port)
            rows.append((r.key, r.src_ep, r.packets_fwd, r.bytes_fwd, r.payload_fwd, r.first_frame, r.last_frame, r.tunnel))
            rows.append((r.key, dst_ep, r.packets_rev, r.bytes_rev, r.payload_rev, r.first_frame, r.last_frame, r.tunnel))
        per_ep = pd.DataFrame(rows, columns=["key", "ep", "packets", "bytes", "payload", "first_frame", "last_frame", "tunnel"])
        c_ep = per_ep.groupby(["key", "ep"])[["packets", "bytes", "payload"]].sum()
        c_key = fl.groupby("key").agg(first_frame=("first_frame", "min"), last_frame=("last_frame", "max"),
                                      packets=("packets", "sum"), bytes=("bytes", "sum"), flows=("flow_id", "size"),
                                      tunnel=("tunnel", "first"))
    else:
        c_ep = pd.DataFrame(columns=["packets", "bytes", "payload"])
        c_key = pd.DataFrame(columns=["first_frame", "last_frame", "packets", "bytes", "flows", "tunnel"])
    t_key = tc.set_index("key") if len(tc) else pd.DataFrame()
    for key in sorted(set(c_key.index) | set(t_key.index)):
        if key not in t_key.index:
            problems.append(f"{key}: commpath udp flow(s) first_frame {c_key.loc[key, 'first_frame']} no tshark udp.stream")
            continue
        if key not in c_key.index:
            t = t_key.loc[key]
            problems.append(f"{key} first_frame {t['first_frame']}: tshark udp.stream {t['stream']} "
                            f"({t['packets']} packets) has no commpath flow")
            continue
        t, c = t_key.loc[key], c_key.loc[key]
        where = f"{key} first_frame {t['first_frame']}"
        for name in ("first_frame", "last_frame", "packets", "bytes"):
            if int(t[name]) != int(c[name]):
                problems.append(f"{where}: {name} commpath {c[name]} (over {c['flows']} flow(s)), tshark {t[name]}")
        for side in ("a", "b"):
            ep = t["a_ep"] if side == "a" else _endpoint_key(t["b_ip"], t["b_port"])
            got = c_ep.loc[(key, ep)] if (key, ep) in c_ep.index else pd.Series({"packets": 0, "bytes": 0, "payload": 0})
            for what in ("packets", "bytes", "payload"):
                if int(got[what]) != int(t[f"{what}_{side}"]):
                    problems.append(f"{where}: {what} sent by {ep} commpath {got[what]}, tshark {t[f'{what}_{side}']}")
        t_tunnel = t["tunnel"] if isinstance(t["tunnel"], str) else ""
        c_tunnel = "" if pd.isna(c["tunnel"]) else str(c["tunnel"])
        if t_tunnel in ("vxlan", "geneve") and c_tunnel != t_tunnel:
            problems.append(f"{where}: tunnel commpath {c_tunnel!r}, tshark {t_tunnel!r}")
    return problems


def udp_flow_starts(frames: pd.DataFrame, timeout: float) -> set[tuple[str, int]]:
    """(5-tuple key, first frame) of each UDP flow when a flow ends after ``timeout`` seconds of silence,
    computed from tshark's per-frame table (``tshark.frames``)."""
    f = frames[(frames["transport"] == "udp") & ~frames["in_icmp"] & frames["sport"].notna()].sort_values("frame")
    starts: set[tuple[str, int]] = set()
    last_seen: dict[str, float] = {}
    for frame, ts, src, sport, dst, dport in zip(f["frame"], f["ts"], f["src"], f["sport"], f["dst"], f["dport"]):
        key = connection_key("udp", src, int(sport), dst, int(dport))
        if key not in last_seen or ts - last_seen[key] > timeout:
            starts.add((key, int(frame)))
        last_seen[key] = ts
    return starts


def compare_streams(capture, conv: pd.DataFrame, followed: dict, limit: int) -> list[str]:
    """commpath's reassembled stream starts (``capture.streams``) against tshark's follow,tcp,raw:
    each direction's bytes are the start of tshark's, all of them unless cut by a gap or the limit."""
    problems: list[str] = []
    fl = _commpath_keys(capture.flows)
    tcp = conv[conv["transport"] == "tcp"] if len(conv) else conv
    m = tcp.merge(fl[fl["transport"].astype(str) == "tcp"], on=["key", "first_frame"], suffixes=("_t", ""))
    for row in m.itertuples():
        where = f"{row.key} first_frame {row.first_frame}"
        if int(row.stream) not in followed:
            continue
        node0, data0, data1 = followed[int(row.stream)]
        node0_ep = _endpoint_key(*node0.split("|"))
        t_fwd, t_rev = (data0, data1) if node0_ep == row.src_ep else (data1, data0)
        fs = capture.streams.get(int(row.flow_id))
        if fs is None:
            if t_fwd or t_rev:
                problems.append(f"{where}: no commpath stream, tshark follows {len(t_fwd)}/{len(t_rev)} bytes")
            continue
        for name, s, t in (("fwd", fs.fwd, t_fwd), ("rev", fs.rev, t_rev)):
            if not t.startswith(s.data):
                at = next((i for i, (a, b) in enumerate(zip(s.data, t)) if a != b), min(len(s.data), len(t)))
                problems.append(f"{where}: {name} bytes differ from tshark's at offset {at} "
                                f"(commpath {len(s.data)}, tshark {len(t)} bytes)")
            elif len(s.data) < min(len(t), limit) and not s.gap:
                problems.append(f"{where}: {name} has {len(s.data)} bytes, tshark {len(t)} (limit {limit}), no gap marked")
            elif s.limited and len(s.data) != limit:
                problems.append(f"{where}: {name} marked limited at {len(s.data)} bytes, limit {limit}")
    return problems


def compare_capture(captures: pd.DataFrame, frames: pd.DataFrame, ts_tolerance: float = 2e-6) -> list[str]:
    """The capture row of one file against tshark's frames: packet count, wire bytes, first/last time."""
    if len(captures) != 1:
        return [f"expected one capture row, got {len(captures)}"]
    row = captures.iloc[0]
    problems = []
    if int(row["packets"]) != len(frames):
        problems.append(f"capture packets commpath {row['packets']}, tshark {len(frames)}")
    if int(row["bytes"]) != int(frames["len"].sum()):
        problems.append(f"capture bytes commpath {row['bytes']}, tshark {int(frames['len'].sum())}")
    for name, value in (("first_ts", frames["ts"].min()), ("last_ts", frames["ts"].max())):
        if len(frames) and abs(float(row[name]) - float(value)) > ts_tolerance:
            problems.append(f"capture {name} commpath {row[name]:.6f}, tshark {value:.6f}")
    return problems

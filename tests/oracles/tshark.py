"""tshark as an independent oracle: per-frame fields and per-connection totals grouped with pandas."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pandas as pd

TSHARK = shutil.which("tshark")

#: Decode-as rules for overlays tshark does not decode on these ports by default (Flannel/Cilium VXLAN).
DEFAULT_DECODE_AS = ("udp.port==8472,vxlan",)

_FIELDS = [
    "frame.number", "frame.len", "frame.cap_len", "frame.time_epoch", "frame.protocols",
    "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "ip.id", "ip.frag_offset", "ip.flags.mf", "ip.proto",
    "tcp.srcport", "tcp.dstport", "tcp.stream", "tcp.flags.syn", "tcp.flags.ack", "tcp.flags.fin",
    "tcp.flags.reset", "tcp.len",
    "udp.srcport", "udp.dstport", "udp.stream", "udp.length",
]


class TsharkError(RuntimeError):
    """tshark failed on a file."""


def frames(path: str | Path, decode_as=DEFAULT_DECODE_AS, defragment: bool = False) -> pd.DataFrame:
    """One row per frame with the innermost IP/transport header as tshark decodes it.

    Columns: frame, len, ts, protocols, transport (tcp|udp|''), src, dst, sport, dport, stream,
    syn, ack, fin, rst, payload. IP reassembly is off by default so that a first fragment carries
    its transport header in its own frame (as in Wireshark with "Reassemble fragmented IPv4
    datagrams" unticked); the later fragments then have no transport.
    """
    if TSHARK is None:
        raise TsharkError("tshark not installed")
    cmd = [TSHARK, "-n", "-r", str(path), "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,",
           "-o", f"ip.defragment:{'TRUE' if defragment else 'FALSE'}",
           "-o", f"ipv6.defragment:{'TRUE' if defragment else 'FALSE'}",
           "-o", "tcp.desegment_tcp_streams:FALSE"]
    for rule in decode_as:
        cmd += ["-d", rule]
    for f in _FIELDS:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and not proc.stdout:
        raise TsharkError(f"tshark failed on {path}: {proc.stderr.strip()[-500:]}")
    raw = pd.read_csv(io.StringIO(proc.stdout), sep="\t", header=None, names=_FIELDS, dtype=str,
                      keep_default_na=False, quoting=3)
    out = pd.DataFrame({
        "frame": raw["frame.number"].astype("int64"),
        "len": raw["frame.len"].astype("int64"),
        "cap_len": raw["frame.cap_len"].astype("int64"),
        "ts": pd.to_numeric(raw["frame.time_epoch"], errors="coerce"),
        "protocols": raw["frame.protocols"],
    })
    tokens = out["protocols"].str.split(":")
    layers = [_layers(t) for t in tokens]
    out["transport"] = [t for t, _, _, _, _ in layers]
    out["in_icmp"] = [q for _, _, _, q, _ in layers]
    out["tunnel"] = [tun for _, _, _, _, tun in layers]
    pick = lambda col, k: [_nth(v, i) for v, i in zip(raw[col], k)]  # noqa: E731
    ip_family = [fam for _, fam, _, _, _ in layers]
    ip_index = [i for _, _, i, _, _ in layers]
    v4_idx = [i if fam == 4 else -1 for fam, i in zip(ip_family, ip_index)]
    v6_idx = [i if fam == 6 else -1 for fam, i in zip(ip_family, ip_index)]
    v6 = pd.Series([fam == 6 for fam in ip_family], index=out.index)
    out["src"] = pd.Series(pick("ipv6.src", v6_idx), index=out.index).where(v6, pd.Series(pick("ip.src", v4_idx), index=out.index))
    out["dst"] = pd.Series(pick("ipv6.dst", v6_idx), index=out.index).where(v6, pd.Series(pick("ip.dst", v4_idx), index=out.index))
    tcp = out["transport"] == "tcp"
    last = lambda col: pd.to_numeric(raw[col].str.rsplit(",", n=1).str[-1], errors="coerce")  # noqa: E731
    out["sport"] = last("tcp.srcport").where(tcp, last("udp.srcport")).astype("Int64")
    out["dport"] = last("tcp.dstport").where(tcp, last("udp.dstport")).astype("Int64")
    out["stream"] = last("tcp.stream").where(tcp, last("udp.stream")).astype("Int64")
    for name, col in (("syn", "tcp.flags.syn"), ("ack", "tcp.flags.ack"), ("fin", "tcp.flags.fin"),
                      ("rst", "tcp.flags.reset")):
        out[name] = tcp & raw[col].str.rsplit(",", n=1).str[-1].isin(["1", "True"])
    out["payload"] = last("tcp.len").where(tcp, last("udp.length") - 8).astype("Int64")
    # IPv4 fragments: a first fragment's key (src, dst, id, proto) at the IP header of its transport;
    # a later fragment (offset > 0) is the frame's last IPv4 header, after any transport header.
    v4_key = lambda idx: [f"{_nth(s_, i)}>{_nth(d_, i)}#{_nth(id_, i)}/{_nth(p_, i)}"  # noqa: E731
                          for s_, d_, id_, p_, i in zip(raw["ip.src"], raw["ip.dst"], raw["ip.id"], raw["ip.proto"], idx)]
    first_mf = pd.Series([str(_nth(v, i)) in ("1", "True") for v, i in zip(raw["ip.flags.mf"], v4_idx)], index=out.index)
    first_off = pd.Series([str(_nth(v, i)) for v, i in zip(raw["ip.frag_offset"], v4_idx)], index=out.index)
    out["frag_key"] = pd.Series(v4_key(v4_idx), index=out.index).where(first_mf & (first_off == "0"), "")
    n_v4 = [len(v.split(",")) if v else 0 for v in raw["ip.src"]]
    last_v4 = [n - 1 for n in n_v4]
    last_off = pd.to_numeric(raw["ip.frag_offset"].str.rsplit(",", n=1).str[-1], errors="coerce").fillna(0)
    after_transport = pd.Series([_last_ip_after_transport(t) for t in tokens], index=out.index)
    cont = (last_off > 0) & after_transport
    out["frag_cont_key"] = pd.Series(v4_key(last_v4), index=out.index).where(cont, "")
    out.loc[out["transport"] == "", ["sport", "dport", "stream", "payload"]] = pd.NA
    return out


TUNNEL_TOKENS = {"vxlan": "vxlan", "geneve": "geneve"}


def _layers(tokens: list[str]) -> tuple[str, int, int, bool, str]:
    """(innermost transport, its IP family, index of that IP header among the frame's headers of
    the same family, whether an ICMP message precedes the transport, overlay name before it)."""
    t_pos = next((i for i in range(len(tokens) - 1, -1, -1) if tokens[i] in ("tcp", "udp")), -1)
    if t_pos < 0:
        return "", 0, -1, False, ""
    ip_pos = next((i for i in range(t_pos - 1, -1, -1) if tokens[i] in ("ip", "ipv6")), -1)
    if ip_pos < 0:
        return "", 0, -1, False, ""
    fam_token = tokens[ip_pos]
    index = sum(1 for tok in tokens[:ip_pos] if tok == fam_token)
    before = tokens[:t_pos]
    in_icmp = "icmp" in before or "icmpv6" in before
    tunnel = next((TUNNEL_TOKENS[tok] for tok in reversed(before) if tok in TUNNEL_TOKENS), "")
    if not tunnel and before.count("ip") + before.count("ipv6") > 1 and not in_icmp:
        tunnel = "ipip"
    return tokens[t_pos], 6 if fam_token == "ipv6" else 4, index, in_icmp, tunnel


def _last_ip_after_transport(tokens: list[str]) -> bool:
    """The frame's last IPv4 header carries no transport header of its own (a later fragment)."""
    last_ip = max((i for i, tok in enumerate(tokens) if tok == "ip"), default=-1)
    last_t = max((i for i, tok in enumerate(tokens) if tok in ("tcp", "udp")), default=-1)
    return last_ip > last_t


def _nth(value: str, index: int):
    if index < 0 or not value:
        return pd.NA
    parts = value.split(",")
    return parts[index] if index < len(parts) else pd.NA


def connections(path: str | Path, decode_as=DEFAULT_DECODE_AS, defragment: bool = False,
                table: pd.DataFrame | None = None) -> pd.DataFrame:
    """tshark's connections: one row per ``tcp.stream`` / ``udp.stream`` (innermost transport).

    Frames inside ICMP errors are left out (they quote a header of another packet; commpath does not
    count them in the connection). Columns: transport, stream, first_frame, last_frame, ts_start,
    ts_end, packets, bytes, payload, a_ip, a_port, b_ip, b_port (a = sender of the first frame), tunnel,
    packets_a, bytes_a, payload_a, packets_b, bytes_b, payload_b, initiator_ip, initiator_port
    (from the SYN, else the SYN-ACK's destination, else <NA>), syn_seen, synack_seen, handshake_seen (SYN, SYN-ACK and an ACK from
    the initiator), end_state
    (rst if any RST, else fin if any FIN, else open; udp: open), key
    (transport + sorted endpoints, to match connections regardless of direction).
    """
    f = frames(path, decode_as, defragment) if table is None else table
    f = _attribute_fragments(f)
    f = f[(f["transport"] != "") & ~f["in_icmp"] & f["stream"].notna()].copy()
    if f.empty:
        return pd.DataFrame(columns=["transport", "stream", "first_frame", "key"])
    f["ep_src"] = f["src"] + "|" + f["sport"].astype(str)
    f["ep_dst"] = f["dst"] + "|" + f["dport"].astype(str)
    g = f.sort_values("frame").groupby(["transport", "stream"], sort=False)
    first = g.first()
    conv = pd.DataFrame({
        "first_frame": g["frame"].min(), "last_frame": g["frame"].max(),
        "ts_start": g["ts"].min(), "ts_end": g["ts"].max(),
        "packets": g.size(), "bytes": g["len"].sum(), "payload": g["payload"].sum(),
        "a_ip": first["src"], "a_port": first["sport"], "b_ip": first["dst"], "b_port": first["dport"],
        "tunnel": first["tunnel"],
    })
    conv["a_ep"] = conv["a_ip"] + "|" + conv["a_port"].astype(str)
    f = f.join(conv["a_ep"], on=["transport", "stream"])
    from_a = f["ep_src"] == f["a_ep"]
    for side, mask in (("a", from_a), ("b", ~from_a)):
        sub = f[mask].groupby(["transport", "stream"])
        conv[f"packets_{side}"] = sub.size().reindex(conv.index, fill_value=0)
        conv[f"bytes_{side}"] = sub["len"].sum().reindex(conv.index, fill_value=0)
        conv[f"payload_{side}"] = sub["payload"].sum().reindex(conv.index, fill_value=0)
    syn = f[f["syn"] & ~f["ack"]].groupby(["transport", "stream"]).first()
    synack = f[f["syn"] & f["ack"]].groupby(["transport", "stream"]).first()
    flags = f.groupby(["transport", "stream"])[["rst", "fin"]].any().reindex(conv.index, fill_value=False)
    conv["end_state"] = ["rst" if r else ("fin" if fi else "open") for r, fi in zip(flags["rst"], flags["fin"])]
    conv["syn_seen"] = conv.index.isin(syn.index)
    conv["synack_seen"] = conv.index.isin(synack.index)
    init_ip = syn["src"].reindex(conv.index)
    init_port = syn["sport"].reindex(conv.index)
    init_ip = init_ip.fillna(synack["dst"].reindex(conv.index))
    init_port = init_port.fillna(synack["dport"].reindex(conv.index))
    conv["initiator_ip"] = init_ip
    conv["initiator_port"] = init_port.astype("Int64")
    init_ep = (init_ip.astype(str) + "|" + init_port.astype("Int64").astype(str)).rename("init_ep")
    f = f.join(init_ep, on=["transport", "stream"])
    acks = f[f["ack"] & ~f["syn"] & (f["ep_src"] == f["init_ep"])].groupby(["transport", "stream"]).size()
    conv["handshake_seen"] = conv["syn_seen"] & conv["synack_seen"] & conv.index.isin(acks.index)
    conv = conv.reset_index()
    conv["key"] = [connection_key(t, a, int(ap), b, int(bp)) for t, a, ap, b, bp in
                   zip(conv["transport"], conv["a_ip"], conv["a_port"], conv["b_ip"], conv["b_port"])]
    return conv.sort_values("first_frame").reset_index(drop=True)


def _attribute_fragments(f: pd.DataFrame) -> pd.DataFrame:
    """Later IPv4 fragments join the connection of their datagram's first fragment (same src, dst,
    IP id and protocol); their payload is already counted by the first fragment's UDP/TCP length."""
    cont = f["frag_cont_key"] != ""
    if not cont.any():
        return f
    heads = f[f["frag_key"] != ""].drop_duplicates("frag_key").set_index("frag_key")
    f = f.copy()
    cols = ["transport", "src", "dst", "sport", "dport", "stream", "tunnel"]
    idx = f.index[cont & f["frag_cont_key"].isin(heads.index)]
    for col in cols:
        f.loc[idx, col] = heads.loc[f.loc[idx, "frag_cont_key"], col].to_numpy()
    f.loc[idx, "payload"] = 0
    f.loc[idx, ["syn", "ack", "fin", "rst", "in_icmp"]] = False
    return f


def connection_key(transport: str, ip1: str, port1: int, ip2: str, port2: int) -> str:
    """Direction-independent name of a 5-tuple, e.g. ``tcp 10.0.0.1:80 10.0.0.2:51234``."""
    a, b = sorted([_endpoint(ip1, port1), _endpoint(ip2, port2)])
    return f"{transport} {a} {b}"


def _endpoint(ip: str, port: int) -> str:
    import ipaddress

    return f"{ipaddress.ip_address(ip).compressed}:{int(port)}"


def follow_tcp(path: str | Path, streams, decode_as=DEFAULT_DECODE_AS) -> dict[int, tuple[str, bytes, bytes]]:
    """tshark's ``-z follow,tcp,raw`` of the given tcp.stream numbers: stream -> (node 0 endpoint
    as "ip|port", bytes sent by node 0, bytes sent by node 1), each in tshark's reassembled order."""
    streams = sorted({int(s) for s in streams})
    if not streams:
        return {}
    cmd = [TSHARK, "-n", "-r", str(path), "-q"]
    for rule in decode_as:
        cmd += ["-d", rule]
    for s in streams:
        cmd += ["-z", f"follow,tcp,raw,{s}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out: dict[int, tuple[str, bytes, bytes]] = {}
    stream, node0, data = None, "", [bytearray(), bytearray()]
    for line in proc.stdout.splitlines():
        if line.startswith("Filter: tcp.stream eq "):
            stream, data = int(line.rsplit(" ", 1)[1]), [bytearray(), bytearray()]
        elif line.startswith("Node 0: "):
            host, _, port = line[8:].rpartition(":")
            node0 = f"{host.strip('[]')}|{port}"
        elif line.startswith("====="):
            if stream is not None:
                out[stream] = (node0, bytes(data[0]), bytes(data[1]))
            stream = None
        elif stream is not None and line.strip() and not line.startswith("Node 1: "):
            side = 1 if line.startswith("\t") else 0
            data[side] += bytes.fromhex(line.strip())
    return out

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
    "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
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
    cmd = [TSHARK, "-n", "-r", str(path), "-T", "fields", "-E", "separator=\t", "-E", "occurrence=l",
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
    out["transport"] = [_innermost_transport(t) for t in tokens]
    out["in_icmp"] = [("icmp" in t) or ("icmpv6" in t) for t in tokens]
    ipver = [_innermost_ip(t) for t in tokens]
    v6 = pd.Series([v == 6 for v in ipver], index=out.index)
    out["src"] = raw["ipv6.src"].where(v6, raw["ip.src"])
    out["dst"] = raw["ipv6.dst"].where(v6, raw["ip.dst"])
    tcp = out["transport"] == "tcp"
    num = lambda col: pd.to_numeric(raw[col], errors="coerce")  # noqa: E731
    out["sport"] = num("tcp.srcport").where(tcp, num("udp.srcport")).astype("Int64")
    out["dport"] = num("tcp.dstport").where(tcp, num("udp.dstport")).astype("Int64")
    out["stream"] = num("tcp.stream").where(tcp, num("udp.stream")).astype("Int64")
    for name, col in (("syn", "tcp.flags.syn"), ("ack", "tcp.flags.ack"), ("fin", "tcp.flags.fin"),
                      ("rst", "tcp.flags.reset")):
        out[name] = tcp & raw[col].isin(["1", "True"])
    out["payload"] = num("tcp.len").where(tcp, num("udp.length") - 8).astype("Int64")
    out.loc[out["transport"] == "", ["sport", "dport", "stream", "payload"]] = pd.NA
    return out


def _innermost_transport(tokens: list[str]) -> str:
    for tok in reversed(tokens):
        if tok in ("tcp", "udp"):
            return tok
    return ""


def _innermost_ip(tokens: list[str]) -> int:
    for tok in reversed(tokens):
        if tok == "ipv6":
            return 6
        if tok == "ip":
            return 4
    return 0


def connections(path: str | Path, decode_as=DEFAULT_DECODE_AS, defragment: bool = False,
                table: pd.DataFrame | None = None) -> pd.DataFrame:
    """tshark's connections: one row per ``tcp.stream`` / ``udp.stream`` (innermost transport).

    Frames inside ICMP errors are left out (they quote a header of another packet; commpath does not
    count them in the connection). Columns: transport, stream, first_frame, last_frame, ts_start,
    ts_end, packets, bytes, payload, a_ip, a_port, b_ip, b_port (a = sender of the first frame),
    packets_a, bytes_a, payload_a, packets_b, bytes_b, payload_b, initiator_ip, initiator_port
    (from the SYN, else the SYN-ACK's destination, else <NA>), syn_seen, synack_seen, key
    (transport + sorted endpoints, to match connections regardless of direction).
    """
    f = frames(path, decode_as, defragment) if table is None else table
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
    conv["syn_seen"] = conv.index.isin(syn.index)
    conv["synack_seen"] = conv.index.isin(synack.index)
    init_ip = syn["src"].reindex(conv.index)
    init_port = syn["sport"].reindex(conv.index)
    init_ip = init_ip.fillna(synack["dst"].reindex(conv.index))
    init_port = init_port.fillna(synack["dport"].reindex(conv.index))
    conv["initiator_ip"] = init_ip
    conv["initiator_port"] = init_port.astype("Int64")
    conv = conv.reset_index()
    conv["key"] = [connection_key(t, a, int(ap), b, int(bp)) for t, a, ap, b, bp in
                   zip(conv["transport"], conv["a_ip"], conv["a_port"], conv["b_ip"], conv["b_port"])]
    return conv.sort_values("first_frame").reset_index(drop=True)


def connection_key(transport: str, ip1: str, port1: int, ip2: str, port2: int) -> str:
    """Direction-independent name of a 5-tuple, e.g. ``tcp 10.0.0.1:80 10.0.0.2:51234``."""
    a, b = sorted([_endpoint(ip1, port1), _endpoint(ip2, port2)])
    return f"{transport} {a} {b}"


def _endpoint(ip: str, port: int) -> str:
    import ipaddress

    return f"{ipaddress.ip_address(ip).compressed}:{int(port)}"

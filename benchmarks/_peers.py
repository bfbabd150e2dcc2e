"""The measured programs of run.py, one per tool; each prints one JSON line {packets, flows, seconds}."""

from __future__ import annotations

import json
import sys
import time


def run_commpath(path: str) -> dict:
    import commpath

    cap = commpath.read(path)
    return {"packets": int(cap.captures["packets"].sum()), "flows": len(cap.flows),
            "partial": bool(cap.partial)}


def run_commpath_handshakes(path: str) -> dict:
    """The engine with the handshake analysis consuming each connection's streams as they are harvested."""
    import commpath
    from commpath.decode.handshakes import HandshakeAnalyzer

    analyzer = HandshakeAnalyzer()
    cap = commpath.read(path, keep_streams=False, on_streams=analyzer)
    hs = analyzer.result()
    return {"packets": int(cap.captures["packets"].sum()), "flows": len(cap.flows), "tls": len(hs.tls),
            "ssh": len(hs.ssh), "http": len(hs.http), "certs": len(hs.certs), "partial": bool(cap.partial)}


def run_dpkt(path: str) -> dict:
    """A minimal dpkt loop: Ethernet -> IPv4/IPv6 -> TCP/UDP 5-tuple counting in a dict."""
    import dpkt

    counts: dict = {}
    packets = 0
    with open(path, "rb") as fh:
        for _ts, buf in dpkt.pcap.Reader(fh):
            packets += 1
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                continue
            l4 = ip.data
            if not isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
                continue
            a, b = (ip.src, l4.sport), (ip.dst, l4.dport)
            key = (ip.p if isinstance(ip, dpkt.ip.IP) else ip.nxt,) + ((a, b) if a <= b else (b, a))
            counts[key] = counts.get(key, 0) + 1
    return {"packets": packets, "flows": len(counts)}


def run_scapy(path: str, sample: int) -> dict:
    """scapy's PcapReader over the first ``sample`` packets (0: all), 5-tuple counting."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import PcapReader

    counts: dict = {}
    packets = 0
    with PcapReader(path) as reader:
        for pkt in reader:
            packets += 1
            ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
            l4 = pkt.getlayer(TCP) or pkt.getlayer(UDP)
            if ip is not None and l4 is not None:
                a, b = (ip.src, l4.sport), (ip.dst, l4.dport)
                key = (l4.name,) + ((a, b) if a <= b else (b, a))
                counts[key] = counts.get(key, 0) + 1
            if sample and packets >= sample:
                break
    return {"packets": packets, "flows": len(counts), "sample": sample}


def run_nfstream(path: str) -> dict:
    """nfstream with its defaults (nDPI dissection of the first packets, idle/active timeouts)."""
    from nfstream import NFStreamer

    flows = 0
    packets = 0
    for flow in NFStreamer(source=path):
        flows += 1
        packets += flow.bidirectional_packets
    return {"packets": packets, "flows": flows}


def main() -> None:
    tool, path = sys.argv[1], sys.argv[2]
    import importlib

    for module in {"commpath": ["commpath"], "commpath-handshakes": ["commpath", "commpath.decode.handshakes"],
                   "dpkt": ["dpkt"], "nfstream": ["nfstream"],
                   "scapy": ["scapy.layers.inet", "scapy.layers.inet6", "scapy.utils"]}.get(tool, []):
        importlib.import_module(module)   # imports are start-up, not the measured work
    started = time.perf_counter()
    if tool == "commpath":
        out = run_commpath(path)
    elif tool == "commpath-handshakes":
        out = run_commpath_handshakes(path)
    elif tool == "dpkt":
        out = run_dpkt(path)
    elif tool == "scapy":
        out = run_scapy(path, int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    elif tool == "nfstream":
        out = run_nfstream(path)
    else:
        raise SystemExit(f"unknown tool {tool}")
    out["seconds"] = time.perf_counter() - started
    print(json.dumps(out), flush=True)
    # as the commpath command does (commpath.cli.run), for every tool alike: the interpreter's
    # teardown would walk every object still alive once more, which is not the measured work
    import gc
    gc.freeze()


if __name__ == "__main__":
    main()

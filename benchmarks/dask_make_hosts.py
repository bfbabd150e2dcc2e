"""Many hosts' captures from the recorded lab runs: each replica is the lab cluster with its own addresses.

Replica ``r`` of a lab run (``captures/<scenario>``: cp1, node1, node2 and their interfaces) gets
``10.x.y.z`` rewritten to ``<o_r>.x.y.z`` (a distinct first octet per replica; loopback untouched)
and host names ``<host>-r<r>`` in its manifests. Each capture file is the recording repeated
``--repeat`` times, every repetition shifted in time by the recording's span and with the
ephemeral ports (>= 32768) moved, so the connections stay distinct: real lab traffic, only more
of it. Classic pcap with Ethernet only (as the lab records); other packets are copied unchanged.
Offsets are located once per file and patched with numpy per repetition.
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: first octets a replica may use: not 0, 10, 127 or multicast/reserved
OCTETS = [o for o in range(11, 224) if o != 127]


def _layout(data: bytes):
    """Per record: offset of its timestamp, of IPv4 src/dst and of TCP/UDP ports (-1: none)."""
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    ts, src, dst, sport, dport = [], [], [], [], []
    pos, first, last = 24, None, None
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[pos:pos + 16])
        t = sec + frac / (1e9 if nano else 1e6)
        first = t if first is None else first
        last = t
        ts.append(pos)
        p = pos + 16
        ip = p + 14 if linktype == 1 and data[p + 12:p + 14] == b"\x08\x00" else -1
        if ip >= 0 and data[ip] >> 4 == 4:
            src.append(ip + 12)
            dst.append(ip + 16)
            ihl = (data[ip] & 15) * 4
            if data[ip + 9] in (6, 17):
                sport.append(ip + ihl)
                dport.append(ip + ihl + 2)
        pos = p + incl
    arr = {k: np.asarray(v, np.int64) for k, v in (("ts", ts), ("src", src), ("dst", dst), ("sport", sport),
                                                     ("dport", dport))}
    return endian, nano, arr, (last - first) if first is not None else 0.0


def replicate(src: Path, dst: Path, octet: int | list[int], repeat: int) -> int:
    """Write ``src`` repeated ``repeat`` times with addresses of replica ``octet`` (or of ``octet[r]`` in
    repetition r); returns bytes written."""
    data = src.read_bytes()
    endian, nano, off, span = _layout(data)
    body = np.frombuffer(data, np.uint8)[24:].copy()
    shift = {k: v - 24 for k, v in off.items()}
    ten = [shift[k][body[shift[k]] == 10] for k in ("src", "dst")]     # 10.x.y.z -> octet.x.y.z
    octets = octet if isinstance(octet, list) else [octet] * repeat
    step = int(span) + 2
    sec_idx = shift["ts"][:, None] + (np.arange(4) if endian == "<" else np.arange(3, -1, -1))
    secs = (body[sec_idx].astype(np.uint32) << (8 * np.arange(4, dtype=np.uint32))).sum(axis=1).astype(np.uint32)
    port_idx = {k: shift[k][:, None] + np.arange(2) for k in ("sport", "dport")}
    ports = {k: body[i[:, 0]].astype(np.int64) * 256 + body[i[:, 1]] for k, i in port_idx.items()}
    with dst.open("wb") as out:
        out.write(data[:24])
        for r in range(repeat):
            copy = body.copy()
            for hit in ten:
                copy[hit] = octets[r]
            s = secs + np.uint32(r * step)
            copy[sec_idx] = ((s[:, None] >> (8 * np.arange(4, dtype=np.uint32))) & 0xFF).astype(np.uint8)
            for k, i in port_idx.items():
                p = ports[k]
                moved = np.where(p >= 32768, 32768 + (p - 32768 + r * 613) % 28000, p)
                copy[i[:, 0]] = (moved >> 8).astype(np.uint8)
                copy[i[:, 1]] = (moved & 0xFF).astype(np.uint8)
            out.write(copy.tobytes())
    return 24 + len(body) * repeat


def make(scenario: Path, out: Path, replicas: int, repeat: int) -> int:
    """``replicas`` copies of a lab run under ``out`` (one folder per host); returns bytes written."""
    total = 0
    hosts = sorted(p for p in scenario.iterdir() if (p / "manifest.json").is_file())
    for r in range(replicas):
        octet = OCTETS[r % len(OCTETS)]
        for host in hosts:
            name = f"{host.name}-r{r}"
            folder = out / name
            folder.mkdir(parents=True, exist_ok=True)
            manifest = json.loads((host / "manifest.json").read_text())
            manifest["host"] = name
            for iface in manifest.get("interfaces", []):
                iface["addresses"] = [f"{octet}.{a[3:]}" if a.startswith("10.") else a for a in iface.get("addresses", [])]
            (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
            for pcap in sorted(host.glob("*.pcap")):
                total += replicate(pcap, folder / pcap.name.replace(host.name, name), octet, repeat)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default=str(HERE.parent / "captures/default"))
    ap.add_argument("--replicas", type=int, default=4, help="copies of the lab cluster (3 hosts each)")
    ap.add_argument("--repeat", type=int, default=100, help="repetitions of each recording per capture file")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    n = make(Path(args.scenario), Path(args.out), args.replicas, args.repeat)
    print(f"{args.replicas * 3} hosts, {n / 1e6:.1f} MB in {args.out}")


if __name__ == "__main__":
    main()

"""The decode engine on crafted captures: formats, link types, IP features, connections, streams."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether, Loopback
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw
from scapy.utils import PcapNgWriter, PcapWriter, wrpcap

import commpath
from commpath.decode import schema

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"
HELLO = bytes.fromhex("16030100310100002d0303") + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00"


def tcp_conversation(sport=40000, dport=443, isn_c=1000, isn_s=5000, client=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                     server=b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", src=CLIENT, dst=SERVER, t0=1_700_000_000.0,
                     close=True, ip=IP):
    """A complete TCP connection: handshake, one request, one response, FIN both ways."""
    c = ip(src=src, dst=dst)
    s = ip(src=dst, dst=src)
    pkts = [
        c / TCP(sport=sport, dport=dport, flags="S", seq=isn_c),
        s / TCP(sport=dport, dport=sport, flags="SA", seq=isn_s, ack=isn_c + 1),
        c / TCP(sport=sport, dport=dport, flags="A", seq=isn_c + 1, ack=isn_s + 1),
        c / TCP(sport=sport, dport=dport, flags="PA", seq=isn_c + 1, ack=isn_s + 1) / Raw(client),
        s / TCP(sport=dport, dport=sport, flags="PA", seq=isn_s + 1, ack=isn_c + 1 + len(client)) / Raw(server),
    ]
    if close:
        pkts += [
            c / TCP(sport=sport, dport=dport, flags="FA", seq=isn_c + 1 + len(client), ack=isn_s + 1 + len(server)),
            s / TCP(sport=dport, dport=sport, flags="FA", seq=isn_s + 1 + len(server), ack=isn_c + 2 + len(client)),
        ]
    for k, p in enumerate(pkts):
        p.time = t0 + k * 0.001
    return pkts


def write(path: Path, pkts, linktype=None, **kw) -> Path:
    wrpcap(str(path), pkts, linktype=linktype, **kw)
    return path


def eth(pkts):
    out = []
    for p in pkts:
        q = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / p
        q.time = p.time
        out.append(q)
    return out


def swap_endianness(src: Path, dst: Path) -> Path:
    """Rewrite a little-endian pcap as big-endian, byte for byte otherwise."""
    data = src.read_bytes()
    magic, vmaj, vmin, zone, sig, snap, lt = struct.unpack("<IHHiIII", data[:24])
    out = [struct.pack(">IHHiIII", magic, vmaj, vmin, zone, sig, snap, lt)]
    p = 24
    while p + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack("<IIII", data[p:p + 16])
        out.append(struct.pack(">IIII", sec, frac, incl, orig) + data[p + 16:p + 16 + incl])
        p += 16 + incl
    dst.write_bytes(b"".join(out))
    return dst


def one_flow(path, **kw):
    cap = commpath.read(path, **kw)
    assert len(cap.flows) == 1, cap.flows
    return cap, cap.flows.iloc[0]


# ---------------------------------------------------------------- formats

def test_same_flow_from_every_file_format(tmp_path):
    pkts = eth(tcp_conversation())
    le = write(tmp_path / "le.pcap", pkts)
    files = {
        "le": le,
        "be": swap_endianness(le, tmp_path / "be.pcap"),
        "nano": tmp_path / "nano.pcap",
        "ng": tmp_path / "ng.pcapng",
        "gz": tmp_path / "le.pcap.gz",
    }
    w = PcapWriter(str(files["nano"]), nano=True)
    w.write(pkts)
    w.close()
    w = PcapNgWriter(str(files["ng"]))
    w.write(pkts)
    w.close()
    files["gz"].write_bytes(gzip.compress(le.read_bytes()))
    rows = {}
    for name, path in files.items():
        cap, row = one_flow(path)
        rows[name] = row
        assert cap.captures.iloc[0]["format"].startswith("pcapng" if name == "ng" else "pcap")
    for name, row in rows.items():
        assert (row.src_ip, row.src_port, row.dst_ip, row.dst_port) == (CLIENT, 40000, SERVER, 443), name
        assert (row.packets_fwd, row.packets_rev) == (4, 3), name
        assert row.bytes == sum(len(p) for p in pkts), name
        assert row.ts_start == pytest.approx(pkts[0].time, abs=2e-6), name
        assert row.ts_end == pytest.approx(pkts[-1].time, abs=2e-6), name
        assert row.app_protocol == "http" and row.end_state == "fin" and row.handshake_seen, name
    assert rows["gz"].first_frame == 1


def _pcapng_block(btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def test_pcapng_interfaces_with_different_link_types_and_resolutions(tmp_path):
    """EPBs on an Ethernet interface (microseconds) and a raw-IP one (nanoseconds), plus an SPB."""
    conv = tcp_conversation()
    shb = _pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb_eth = _pcapng_block(1, struct.pack("<HHI", 1, 0, 65535) + struct.pack("<HHB", 9, 1, 6) + b"\x00" * 3 + b"\x00" * 4)
    idb_raw = _pcapng_block(1, struct.pack("<HHI", 101, 0, 65535) + struct.pack("<HHB", 9, 1, 9) + b"\x00" * 3 + b"\x00" * 4)
    blocks = [shb, idb_eth, idb_raw]
    for k, p in enumerate(conv):
        iface = k % 2
        raw = bytes(Ether() / p) if iface == 0 else bytes(p)
        units = int(round(p.time * (1e6 if iface == 0 else 1e9)))
        blocks.append(_pcapng_block(6, struct.pack("<IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(raw), len(raw)) + raw))
    extra = bytes(Ether() / IP(src="10.9.9.9", dst="10.9.9.8") / UDP(sport=5353, dport=5353) / Raw(b"x"))
    blocks.append(_pcapng_block(3, struct.pack("<I", len(extra)) + extra))
    path = tmp_path / "multi.pcapng"
    path.write_bytes(b"".join(blocks))
    cap = commpath.read(path)
    tcp = cap.flows[cap.flows.transport == "tcp"].iloc[0]
    assert tcp.packets == len(conv) and tcp.first_frame == 1 and tcp.last_frame == len(conv)
    assert tcp.ts_start == pytest.approx(conv[0].time, abs=1e-6)
    assert tcp.ts_end == pytest.approx(conv[-1].time, abs=1e-6)
    udp = cap.flows[cap.flows.transport == "udp"].iloc[0]
    assert udp.first_frame == len(conv) + 1          # the simple packet block counts as a frame
    assert set(cap.captures.iloc[0]["link_types"].split(",")) == {"ethernet", "raw"}


# ---------------------------------------------------------------- link types

LINKS = {
    "vlan": (lambda p: Ether() / Dot1Q(vlan=42) / p, None, 42),
    "qinq": (lambda p: Ether() / Dot1AD(vlan=7) / Dot1Q(vlan=42) / p, None, 7),
    "sll": (lambda p: CookedLinux(proto=0x0800) / p, 113, None),
    "sll2": (lambda p: CookedLinuxV2(proto=0x0800) / p, 276, None),
    "raw": (lambda p: p, 101, None),
    "null": (lambda p: Loopback(type=2) / p, 0, None),
}


@pytest.mark.parametrize("name", sorted(LINKS))
def test_link_types(tmp_path, name):
    wrap, linktype, vlan = LINKS[name]
    pkts = []
    for p in tcp_conversation():
        q = wrap(p)
        q.time = p.time
        pkts.append(q)
    cap, row = one_flow(write(tmp_path / f"{name}.pcap", pkts, linktype=linktype))
    assert (row.src_ip, row.dst_port, row.packets, row.app_protocol) == (CLIENT, 443, 7, "http")
    if vlan is None:
        assert row.vlan is pd_na()
    else:
        assert row.vlan == vlan


def pd_na():
    import pandas as pd
    return pd.NA


def test_unknown_link_type_is_one_clear_error(tmp_path):
    path = write(tmp_path / "weird.pcap", [Raw(b"\x00" * 40)], linktype=147)
    with pytest.raises(commpath.InputError) as err:
        commpath.read(path)
    assert str(path) in str(err.value) and "unsupported link type" in str(err.value)


# ---------------------------------------------------------------- IP features

def test_ipv4_options_and_ipv6_extension_headers(tmp_path):
    v4 = [IP(src=CLIENT, dst=SERVER, options=b"\x01\x01\x01\x00") / TCP(sport=1234, dport=6443, flags="S")]
    v6 = [IPv6(src="fd00::1", dst="fd00::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting()
          / TCP(sport=2345, dport=10250, flags="S")]
    cap = commpath.read(write(tmp_path / "ip.pcap", eth(v4 + v6)))
    rows = cap.flows.set_index("dst_port")
    assert rows.loc[6443, "src_port"] == 1234 and rows.loc[6443, "ip_version"] == 4
    assert rows.loc[10250, "src_ip"] == "fd00::1" and rows.loc[10250, "src_port"] == 2345
    assert rows.loc[10250, "ip_version"] == 6


def test_ip_fragments_are_counted_with_their_flow(tmp_path):
    big = IP(src=CLIENT, dst=SERVER, id=77) / UDP(sport=5000, dport=8472 + 1) / Raw(b"A" * 3000)
    frags = fragment(big, fragsize=1000)
    assert len(frags) == 4
    cap, row = one_flow(write(tmp_path / "frag.pcap", eth(frags)))
    assert row.packets == 4 and row.fragments == 4
    assert row.bytes == sum(len(Ether() / f) for f in frags)
    assert row.last_frame == 4


# ---------------------------------------------------------------- connections

def test_reused_five_tuple_is_two_connections(tmp_path):
    first = tcp_conversation(isn_c=1000, t0=1_700_000_000.0)
    second = tcp_conversation(isn_c=900_000, isn_s=777, t0=1_700_000_010.0)
    cap = commpath.read(write(tmp_path / "reuse.pcap", eth(first + second)))
    assert len(cap.flows) == 2
    assert cap.flows.first_frame.tolist() == [1, 8]
    assert cap.flows.packets.tolist() == [7, 7]


def test_syn_retransmission_stays_one_connection(tmp_path):
    conv = tcp_conversation()
    syn = conv[0].copy()
    syn.time = conv[0].time + 0.0005
    cap, row = one_flow(write(tmp_path / "synrtx.pcap", eth([conv[0], syn] + conv[1:])))
    assert row.packets == 8 and row.initiator == "syn"


def test_initiator_inferred_without_syn(tmp_path):
    conv = tcp_conversation(sport=51000, dport=6443, client=HELLO, server=b"\x16\x03\x03\x00\x04\x02\x00\x00\x00")[3:]
    cap, row = one_flow(write(tmp_path / "mid.pcap", eth(conv[::-1])))   # server's packet comes first
    assert (row.src_port, row.dst_port) == (51000, 6443)
    assert row.initiator == "port" and not row.syn_seen
    # both ports high and unknown: the ClientHello tells who the client is
    conv = tcp_conversation(sport=41000, dport=42000, client=HELLO, server=b"\x16\x03\x03\x00\x04\x02\x00\x00\x00")[3:5]
    cap, row = one_flow(write(tmp_path / "mid2.pcap", eth(conv[::-1])))
    assert (row.src_port, row.dst_port, row.initiator) == (41000, 42000, "payload")
    assert cap.streams[row.flow_id].fwd.data == HELLO


def test_udp_idle_timeout_splits_flows(tmp_path):
    pkts = []
    for k, t in enumerate([0, 1, 2, 200, 201]):
        p = IP(src=CLIENT, dst=SERVER) / UDP(sport=4000, dport=53) / Raw(b"q%d" % k)
        p.time = 1_700_000_000 + t
        pkts.append(p)
    cap = commpath.read(write(tmp_path / "udp.pcap", eth(pkts)))
    assert cap.flows.packets.tolist() == [3, 2]


# ---------------------------------------------------------------- streams

def _segments(data: bytes, isn: int, size: int, sport=40000, dport=443):
    out = []
    for off in range(0, len(data), size):
        out.append(IP(src=CLIENT, dst=SERVER) / TCP(sport=sport, dport=dport, flags="PA", seq=isn + 1 + off)
                   / Raw(data[off:off + size]))
    return out


def test_reassembly_handles_reordering_retransmission_and_gaps(tmp_path):
    data = bytes(range(256)) * 20
    hs = tcp_conversation(client=b"", server=b"", close=False)[:3]
    segs = _segments(data, 1000, 300)
    order = [0, 2, 1, 1, 3] + list(range(4, len(segs)))   # reordered and retransmitted
    cap, row = one_flow(write(tmp_path / "ooo.pcap", eth(hs + [segs[i] for i in order])))
    s = cap.streams[row.flow_id].fwd
    assert s.data == data and not s.gap
    assert s.frame_at(0) == 4 and s.frame_at(300) == 6 and s.frame_at(600) == 5
    gap = [segs[i] for i in range(len(segs)) if i != 3]
    cap, row = one_flow(write(tmp_path / "gap.pcap", eth(hs + gap)))
    s = cap.streams[row.flow_id].fwd
    assert s.data == data[:900] and s.gap


def test_payload_limit_and_memory_budget_keep_the_same_streams(tmp_path):
    pkts = []
    for k in range(300):
        conv = tcp_conversation(sport=20000 + k, client=HELLO + bytes([k % 256]) * 3000, close=k % 3 == 0,
                                t0=1_700_000_000.0 + k)
        pkts += conv
    path = write(tmp_path / "many.pcap", eth(pkts))
    full = commpath.read(path)
    tight = commpath.read(path, stream_budget=64 * 20_000, chunk_size=4096)
    assert len(full.flows) == len(tight.flows) == 300
    assert full.flows.drop(columns=[]).equals(tight.flows)
    for fid, fs in full.streams.items():
        assert tight.streams[fid].fwd.data == fs.fwd.data
        assert tight.streams[fid].rev.data == fs.rev.data
    limited = commpath.read(path, payload_limit=100)
    fs = limited.streams[0]
    assert len(fs.fwd.data) == 100 and fs.fwd.limited


def test_streams_can_be_consumed_without_keeping_them(tmp_path):
    path = write(tmp_path / "c.pcap", eth(tcp_conversation() + tcp_conversation(sport=40001)))
    seen = []
    cap = commpath.read(path, keep_streams=False, on_streams=seen.append)
    assert cap.streams == {} and sorted(fs.flow_id for fs in seen) == [0, 1]
    assert all(fs.fwd.data.startswith(b"GET /") for fs in seen)


# ---------------------------------------------------------------- overlays and app protocols

def _vxlan(p, port, vni=4242):
    return (IP(src="192.168.0.1", dst="192.168.0.2") / UDP(sport=33333, dport=port) / VXLAN(vni=vni)
            / Ether() / p)


@pytest.mark.parametrize("port", [4789, 8472])
def test_vxlan_inner_connection_is_the_flow(tmp_path, port):
    pkts = []
    for p in tcp_conversation(dport=6443):
        q = _vxlan(p, port)
        q.time = p.time
        pkts.append(q)
    cap, row = one_flow(write(tmp_path / "vx.pcap", eth(pkts)))
    assert (row.src_ip, row.dst_ip, row.dst_port, row.tunnel, row.tunnel_vni) == (CLIENT, SERVER, 6443, "vxlan", 4242)
    assert (row.tunnel_src, row.tunnel_dst) == ("192.168.0.1", "192.168.0.2")


def test_ip_in_ip_and_encrypted_underlays(tmp_path):
    pkts = []
    for p in tcp_conversation(dport=443):
        q = IP(src="192.168.1.1", dst="192.168.1.2") / p
        q.time = p.time
        pkts.append(q)
    pkts.append(IP(src="192.168.1.1", dst="192.168.1.3") / UDP(sport=51820, dport=51820) / Raw(b"\x01\x00\x00\x00" + bytes(144)))
    pkts.append(IP(src="192.168.1.1", dst="192.168.1.4", proto=50) / Raw(b"\x00\x00\x10\x01" + bytes(60)))
    cap = commpath.read(write(tmp_path / "ipip.pcap", eth(pkts)))
    tcp = cap.flows[cap.flows.transport == "tcp"].iloc[0]
    assert tcp.tunnel == "ipip" and tcp.tunnel_src == "192.168.1.1" and tcp.src_ip == CLIENT
    apps = cap.flows.set_index("transport")["app_protocol"].to_dict()
    assert apps["udp"] == "wireguard" and apps["esp"] == "esp"
    assert cap.flows.encrypted_underlay.sum() == 2


@pytest.mark.parametrize("client,server,expected", [
    (HELLO, b"", "tls"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", b"SSH-2.0-OpenSSH_9.2\r\n", "ssh"),
    (b"CONNECT 10.0.0.5:10250 HTTP/1.1\r\nHost: 10.0.0.5:10250\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n", "http"),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00", b"", "http2"),
    (b"\x00\x01binary-protocol", b"", "unknown"),
])
def test_app_protocol_from_first_bytes_not_ports(tmp_path, client, server, expected):
    conv = tcp_conversation(dport=8080, client=client, server=server or b"ok")
    cap, row = one_flow(write(tmp_path / "app.pcap", eth(conv)))
    assert row.app_protocol == expected
    assert row.http_connect == client.startswith(b"CONNECT")


def test_declared_dtypes(tmp_path):
    cap = commpath.read(write(tmp_path / "d.pcap", eth(tcp_conversation())))
    for name, dtype in schema.FLOW_COLUMNS.items():
        assert str(cap.flows[name].dtype) == dtype, name
    for name, dtype in schema.CAPTURE_COLUMNS.items():
        assert str(cap.captures[name].dtype) == dtype, name
    assert isinstance(cap.flows["first_frame"].to_numpy(), np.ndarray)


def test_folder_of_captures_is_one_run_with_distinct_flow_ids(tmp_path):
    (tmp_path / "cp1").mkdir()
    (tmp_path / "node1").mkdir()
    write(tmp_path / "cp1" / "a.pcap", eth(tcp_conversation()))
    write(tmp_path / "node1" / "b.pcap", eth(tcp_conversation(sport=40001)))
    (tmp_path / "node1" / "manifest.json").write_text('{"host": "node1", "role": "node"}')
    cap = commpath.read(tmp_path)
    assert cap.flows.flow_id.tolist() == [0, 1]
    assert sorted(cap.streams) == [0, 1]
    hosts = cap.captures.set_index(cap.captures.file.str.rsplit("/", n=1).str[-1])["host"]
    assert hosts["b.pcap"] == "node1" and hosts.isna()["a.pcap"]


def test_kept_streams_have_a_memory_budget(tmp_path):
    pkts = []
    for k in range(20):
        pkts += tcp_conversation(sport=30000 + k, client=HELLO + bytes(2000), t0=1_700_000_000.0 + k)
    path = write(tmp_path / "budget.pcap", eth(pkts))
    seen = []
    cap = commpath.read(path, kept_streams_budget=5 * 2100, on_streams=seen.append)
    assert len(cap.streams) == 5 and len(seen) == 20          # the sink still gets every connection
    assert any("not kept" in w and "15 connections" in w for w in cap.warnings)
    assert (cap.flows.app_protocol == "tls").all()            # detection does not depend on keeping
    assert not commpath.read(path).warnings

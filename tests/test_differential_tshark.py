"""commpath's connections agree with tshark's streams on public and lab-made captures."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import commpath
import commpath.decode.engine
from oracles import compare as cmp
from oracles import tshark

PUBLIC = Path(__file__).resolve().parents[1].parent / "shared/pcaps/public"
SUFFIXES = (".pcap", ".pcap.gz", ".pcapng", ".pcapng.gz", ".cap")
PUBLIC_CAPTURES = sorted(p for p in PUBLIC.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)) if PUBLIC.is_dir() else []

#: captures recorded by the project's lab (commpath lab run), shipped in the repository
LAB = Path(__file__).resolve().parents[1] / "captures"
LAB_CAPTURES = sorted(p for p in LAB.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)) if LAB.is_dir() else []

needs_tshark = pytest.mark.skipif(tshark.TSHARK is None, reason="tshark not installed")
needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("tcpdump") is None,
                                reason="needs root and tcpdump (network namespace, packet capture)")


def assert_agree(path: Path, streams: bool = True, **oracle_args) -> tuple:
    """Connections as tshark's streams; with ``streams``, also each TCP direction's first bytes as
    tshark's ``follow,tcp,raw`` (ordered by sequence number, retransmissions once)."""
    cap = commpath.read(path)
    frames = tshark.frames(path, **oracle_args)
    conv = tshark.connections(path, table=frames)
    problems = cmp.compare(cap.flows, conv) + cmp.compare_capture(cap.captures, frames)
    if streams and len(conv):
        tcp = conv[conv["transport"] == "tcp"]
        followed = tshark.follow_tcp(path, tcp["stream"])
        problems += cmp.compare_streams(cap, conv, followed, limit=commpath.decode.engine.PAYLOAD_LIMIT)
    assert not problems, f"{path}: commpath and tshark disagree:\n  " + "\n  ".join(problems)
    return cap, conv


def test_public_captures_found():
    assert len(PUBLIC_CAPTURES) >= 40, f"expected the public captures in {PUBLIC}"


@needs_tshark
@pytest.mark.parametrize("path", PUBLIC_CAPTURES, ids=lambda p: str(p.relative_to(PUBLIC)))
def test_public_capture_agrees_with_tshark(path):
    cap, conv = assert_agree(path)
    # every connection tshark sees is one commpath flow at least (UDP may split on idle timeout)
    assert len(cap.flows) >= len(conv)


@needs_tshark
@pytest.mark.parametrize("path", LAB_CAPTURES, ids=lambda p: str(p.relative_to(LAB)))
def test_lab_recorded_capture_agrees_with_tshark(path):
    assert_agree(path)


def _hole_then_past_the_limit(path: Path, hole: tuple[int, int], size: int = 20_000) -> tuple[Path, bytes]:
    """A TCP connection whose response lacks the segments covering ``hole`` (relative bytes) and whose
    segments after the hole all start beyond the per-direction payload limit."""
    from scapy.layers.inet import IP, TCP
    from scapy.packet import Raw
    from scapy.utils import wrpcap
    c, s = IP(src="10.9.0.1", dst="10.9.0.2"), IP(src="10.9.0.2", dst="10.9.0.1")
    request, response = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256)) * (size // 256 + 1)
    response = response[:size]
    pkts = [c / TCP(sport=45000, dport=2379, flags="S", seq=100),
            s / TCP(sport=2379, dport=45000, flags="SA", seq=7000, ack=101),
            c / TCP(sport=45000, dport=2379, flags="A", seq=101, ack=7001),
            c / TCP(sport=45000, dport=2379, flags="PA", seq=101, ack=7001) / Raw(request)]
    for off in range(0, size, 1000):
        if hole[0] <= off < hole[1]:
            continue
        pkts.append(s / TCP(sport=2379, dport=45000, flags="PA", seq=7001 + off, ack=101 + len(request))
                    / Raw(response[off:off + 1000]))
    pkts += [c / TCP(sport=45000, dport=2379, flags="FA", seq=101 + len(request), ack=7001 + size),
             s / TCP(sport=2379, dport=45000, flags="FA", seq=7001 + size, ack=102 + len(request))]
    for k, p in enumerate(pkts):
        p.time = 1_700_000_000 + k * 0.001
    wrpcap(str(path), pkts)
    return path, response


@needs_tshark
@pytest.mark.parametrize("hole", [(15_000, 17_000), (0, 17_000)], ids=["hole-across-limit", "nothing-before-limit"])
def test_hole_before_data_past_the_limit_is_a_gap(tmp_path, hole):
    """Segments starting past the payload limit still tell that bytes before it were not captured
    (the recorded etcd stream of real-default/cp1/cp1-lo.pcap had such a hole)."""
    path, response = _hole_then_past_the_limit(tmp_path / "hole.pcap", hole)
    cap, _ = assert_agree(path)
    rev = cap.streams[int(cap.flows.flow_id.iloc[0])].rev
    assert rev.data == response[:hole[0]] and rev.gap and not rev.limited


# ---------------------------------------------------------------- lab-made captures (namespaces)

_TRAFFIC = textwrap.dedent('''
    import socket, struct, sys, threading, time
    ROLE, V4, V6 = sys.argv[1], sys.argv[2], sys.argv[3]
    EXTRA = [a for a in sys.argv[4].split(",") if a] if len(sys.argv) > 4 else []

    def tcp_server(family, port, stop):
        srv = socket.socket(family, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        srv.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port)); srv.listen(16); srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except socket.timeout:
                continue
            threading.Thread(target=serve_conn, args=(conn,), daemon=True).start()
        srv.close()

    def serve_conn(conn):
        with conn:
            conn.settimeout(10)
            data = conn.recv(65536)
            if data.startswith(b"BULK"):
                conn.sendall(b"z" * 300000)
            else:
                conn.sendall(b"echo:" + data)
                if data.startswith(b"SLOW"):
                    while conn.recv(100):
                        conn.sendall(b"tick")

    def udp_server(stop):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 5400)); s.settimeout(0.2)
        while not stop.is_set():
            try:
                data, peer = s.recvfrom(65535)
            except socket.timeout:
                continue
            s.sendto(data[:1000], peer)
        s.close()

    def servers():
        stop = threading.Event()
        threads = [threading.Thread(target=tcp_server, args=(socket.AF_INET, 7070, stop)),
                   threading.Thread(target=tcp_server, args=(socket.AF_INET6, 7070, stop)),
                   threading.Thread(target=udp_server, args=(stop,))]
        for t in threads:
            t.start()
        return stop, threads

    def echo(addr, payload):
        with socket.create_connection((addr, 7070), timeout=5) as c:
            c.sendall(payload); c.recv(100)

    def udp(addr, sizes):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(2)
            for n in sizes:
                u.sendto(b"u" * n, (addr, 5400)); u.recvfrom(2000)

    def client():
        # a connection opened before the capture starts (no SYN in the capture)
        early = socket.create_connection((V4, 7070), timeout=5); early.sendall(b"SLOW early"); early.recv(100)
        print("ready", flush=True); sys.stdin.readline()
        # a reused 5-tuple: same source port twice (first closed by RST so the port is free at once)
        for k in range(2):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            c.settimeout(5)
            c.bind(("0.0.0.0", 45678)); c.connect((V4, 7070)); c.sendall(b"hello %d" % k); c.recv(100)
            if k == 0:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close(); time.sleep(0.05)
        for i in range(3):
            echo(V6, b"v6 %d" % i)
        with socket.create_connection((V4, 7070), timeout=5) as c:
            c.sendall(b"BULK"); n = 0
            while n < 300000:
                got = c.recv(65536)
                if not got:
                    break
                n += len(got)
        for i in range(3):
            udp(V4, [20 + i, 720 + i, 1420 + i])
        udp(V4, [4000])   # IP fragments on a 1500-byte MTU path
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:   # one 5-tuple, idle 0.4 s between uses
            u.settimeout(2)
            for k in range(3):
                u.sendto(b"idle %d" % k, (V4, 5400)); u.recvfrom(2000); time.sleep(0.4)
        for addr in EXTRA:
            echo(addr, b"extra")
            udp(addr, [30, 4000])
        early.sendall(b"more"); early.recv(100); early.close()
        time.sleep(0.3)

    if ROLE == "server":
        stop, threads = servers()
        print("ready", flush=True); sys.stdin.readline(); stop.set()
        for t in threads:
            t.join()
    elif ROLE == "client":
        client()
    else:
        stop, threads = servers(); time.sleep(0.3)
        client()
        stop.set()
        for t in threads:
            t.join()
''')


class _Netns:
    """Two namespaces joined by veth; ``run`` executes a command in one; ``close`` removes both."""

    def __init__(self):
        self.prefix = f"cpt-{secrets.token_hex(3)}"
        self.a, self.b = f"{self.prefix}-a", f"{self.prefix}-b"
        self.made: list[str] = []

    def sh(self, *cmd: str) -> None:
        subprocess.run(list(cmd), check=True, capture_output=True, text=True, timeout=30)

    def open(self) -> "_Netns":
        for ns in (self.a, self.b):
            self.sh("ip", "netns", "add", ns)
            self.made.append(ns)
        self.sh("ip", "link", "add", "eth0", "netns", self.a, "gso_max_size", "1500", "type", "veth",
                "peer", "name", "eth0", "netns", self.b, "gso_max_size", "1500")
        for ns, n in ((self.a, 1), (self.b, 2)):
            self.sh("ip", "-n", ns, "addr", "add", f"192.168.77.{n}/24", "dev", "eth0")
            self.sh("ip", "-n", ns, "addr", "add", f"fd77::{n}/64", "dev", "eth0", "nodad")
            self.sh("ip", "-n", ns, "link", "set", "eth0", "up")
            self.sh("ip", "-n", ns, "link", "set", "lo", "up")
        return self

    def close(self) -> None:
        while self.made:
            ns = self.made.pop()
            out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in out:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _start(ns: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", _TRAFFIC, *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise AssertionError(f"traffic {args[0]} did not start: {proc.stderr.read()}")
    return proc


def _record(capture_ns: str, iface: str, out: Path, client_ns: str, server_ns: str | None,
            v4: str, v6: str, extra: str = "") -> None:
    """Exchange traffic (servers in ``server_ns``, or with the client when None) while tcpdump records."""
    procs: list[subprocess.Popen] = []
    dump = None
    try:
        if server_ns:
            procs.append(_start(server_ns, "server", v4, v6))
        client = _start(client_ns, "client" if server_ns else "both", v4, v6, extra)
        procs.append(client)
        dump = subprocess.Popen(["ip", "netns", "exec", capture_ns, "tcpdump", "-i", iface, "-n", "-U", "-Z", "root",
                                 "-w", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not out.exists() or out.stat().st_size < 24:  # tcpdump has written its file header
            assert time.monotonic() < deadline, "tcpdump did not start"
            time.sleep(0.05)
        time.sleep(0.5)
        client.stdin.write("go\n")
        client.stdin.flush()
        client.wait(60)
        assert client.returncode == 0, client.stderr.read()
        time.sleep(0.3)
    finally:
        if dump is not None:
            dump.send_signal(signal.SIGINT)
            try:
                dump.wait(10)
            except subprocess.TimeoutExpired:
                dump.kill()
        for proc in procs:
            if proc.poll() is None:
                try:
                    proc.stdin.write("stop\n")
                    proc.stdin.flush()
                    proc.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    proc.kill()


@pytest.fixture
def netns():
    pair = _Netns()
    try:
        yield pair.open()
    finally:
        pair.close()


@needs_tshark
@needs_root
@pytest.mark.netns
def test_lab_loopback_capture_agrees_with_tshark(netns, tmp_path):
    """Loopback of a private namespace: reused 5-tuple, IPv6, bulk, UDP, a connection without its SYN."""
    pcap = tmp_path / "loopback.pcap"
    _record(netns.a, "lo", pcap, netns.a, None, "127.0.0.1", "::1")
    cap, conv = assert_agree(pcap)
    flows = cap.flows
    reused = flows[(flows["transport"] == "tcp") & (flows["src_port"] == 45678)]
    assert len(reused) == 2, "a reused 5-tuple is two connections"
    assert reused["handshake_seen"].all() and reused["first_frame"].is_monotonic_increasing
    early = flows[(flows["transport"] == "tcp") & ~flows["syn_seen"] & ~flows["synack_seen"]
                  & ((flows["dst_port"] == 7070) | (flows["src_port"] == 7070))]
    assert len(early) == 1, "the connection opened before the capture"
    assert early.iloc[0]["dst_port"] == 7070, "initiator inferred from the ports"
    assert (flows["ip_version"] == 6).sum() == 3
    # UDP idle timeout: with a 0.15 s timeout the flows start exactly where tshark's frames show > 0.15 s of silence
    short = commpath.read(pcap, udp_timeout=0.15).flows
    udp = short[short["transport"] == "udp"]
    got = {(cmp.connection_key("udp", r.src_ip, r.src_port, r.dst_ip, r.dst_port), int(r.first_frame))
           for r in udp.itertuples()}
    expected = cmp.udp_flow_starts(tshark.frames(pcap), 0.15)
    assert got == expected
    assert len(udp) >= len(flows[flows["transport"] == "udp"]) + 2, "the idle 5-tuple splits into three flows"


@needs_tshark
@needs_root
@pytest.mark.netns
def test_lab_overlay_capture_agrees_with_tshark(netns, tmp_path):
    """Real kernel VXLAN on 8472 (Flannel's port; tshark needs ``-d udp.port==8472,vxlan``) and IP
    fragments (inside the overlay and on the underlay), recorded on the underlay veth. (IP-in-IP and
    Geneve devices are not used: kernels built without those modules are common in CI VMs.)"""
    for ns, me, peer, n in ((netns.a, "192.168.77.1", "192.168.77.2", 1), (netns.b, "192.168.77.2", "192.168.77.1", 2)):
        netns.sh("ip", "-n", ns, "link", "add", "vx0", "type", "vxlan", "id", "42", "dstport", "8472",
                 "local", me, "remote", peer, "dev", "eth0")
        netns.sh("ip", "-n", ns, "addr", "add", f"10.244.0.{n}/24", "dev", "vx0")
        netns.sh("ip", "-n", ns, "addr", "add", f"fd44::{n}/64", "dev", "vx0", "nodad")
        netns.sh("ip", "-n", ns, "link", "set", "vx0", "up")
    pcap = tmp_path / "overlay.pcap"
    _record(netns.b, "eth0", pcap, netns.a, netns.b, "10.244.0.2", "fd44::2", "192.168.77.2")
    cap, conv = assert_agree(pcap)
    flows = cap.flows
    inner = flows[flows["dst_ip"].isin(["10.244.0.2", "fd44::2"])]
    assert len(inner) >= 8 and (inner["tunnel"] == "vxlan").all()
    assert set(inner["tunnel_vni"].dropna().astype(int)) == {42}
    assert not ((flows["dst_port"] == 8472) & (flows["tunnel"] != "vxlan") & (flows["app_protocol"] != "vxlan")).any()
    assert flows["fragments"].sum() >= 3, "the 4000-byte datagrams went out as fragments"
    # why the oracle passes -d udp.port==8472,vxlan: by default tshark sees only the outer UDP
    plain = tshark.connections(pcap, decode_as=())
    assert not plain["a_ip"].astype(str).str.startswith(("10.244.", "fd44:")).any()


# ---------------------------------------------------------------- the same traffic in every container format

FORMAT_SOURCES = [
    PUBLIC / "zeek/testing/btest/Traces/tls/client-certificate.pcap",        # Ethernet
    PUBLIC / "arkime/http2-nghttp2.pcap",                                    # BSD loopback
    PUBLIC / "zeek/testing/btest/Traces/tls/openjdk-25.0.2-zeek.org.pcap",   # Linux cooked v2 (SLL2)
    PUBLIC / "zeek/testing/btest/Traces/tunnels/geneve-47101.pcap",          # Geneve overlay
]


def _swap_pcap_byte_order(src: Path, dst: Path) -> None:
    """Rewrite a little-endian pcap as big-endian: same records, header fields byte-swapped."""
    import struct

    d = src.read_bytes()
    assert d[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
    out = bytearray(struct.pack(">IHHiIII", *struct.unpack_from("<IHHiIII", d, 0)))
    off = 24
    while off + 16 <= len(d):
        ts, frac, incl, orig = struct.unpack_from("<IIII", d, off)
        out += struct.pack(">IIII", ts, frac, incl, orig) + d[off + 16: off + 16 + incl]
        off += 16 + incl
    dst.write_bytes(bytes(out))


def _epb_to_spb(src: Path, dst: Path) -> None:
    """Rewrite a one-interface pcapng's Enhanced Packet Blocks as Simple Packet Blocks (no timestamps)."""
    import struct

    d = src.read_bytes()
    out, off = bytearray(), 0
    while off + 12 <= len(d):
        btype, blen = struct.unpack_from("<II", d, off)
        if btype == 6:
            _iface, _hi, _lo, caplen, origlen = struct.unpack_from("<IIIII", d, off + 8)
            data = d[off + 28: off + 28 + caplen]
            pad = (-len(data)) % 4
            total = 16 + len(data) + pad
            out += struct.pack("<III", 3, total, origlen) + data + b"\0" * pad + struct.pack("<I", total)
        else:
            out += d[off: off + blen]
        off += blen
    dst.write_bytes(bytes(out))


def _variants(tmp: Path) -> dict[str, Path]:
    import gzip

    out: dict[str, Path] = {}
    for i, src in enumerate(FORMAT_SOURCES):
        base = tmp / f"s{i}"
        subprocess.run(["editcap", "-F", "nsecpcap", str(src), f"{base}-ns.pcap"], check=True, capture_output=True)
        subprocess.run(["editcap", "-F", "pcapng", str(src), f"{base}.pcapng"], check=True, capture_output=True)
        _swap_pcap_byte_order(src, Path(f"{base}-be.pcap"))
        Path(f"{base}.pcapng.gz").write_bytes(gzip.compress(Path(f"{base}.pcapng").read_bytes()))
        _epb_to_spb(Path(f"{base}.pcapng"), Path(f"{base}-spb.pcapng"))
        for kind, suffix in (("nsec", "-ns.pcap"), ("pcapng", ".pcapng"), ("big-endian", "-be.pcap"),
                             ("pcapng.gz", ".pcapng.gz"), ("spb", "-spb.pcapng")):
            out[f"{src.name}:{kind}"] = Path(f"{base}{suffix}")
    merged = tmp / "three-interfaces.pcapng"      # Ethernet + NULL + SLL2 interfaces in one file
    subprocess.run(["mergecap", "-F", "pcapng", "-w", str(merged), *map(str, FORMAT_SOURCES[:3])],
                   check=True, capture_output=True)
    out["merged:pcapng-3-interfaces"] = merged
    return out


@needs_tshark
@pytest.mark.skipif(shutil.which("editcap") is None, reason="needs editcap/mergecap")
def test_container_formats_agree_with_tshark_and_each_other(tmp_path):
    """nanosecond pcap, big-endian pcap, pcapng (EPB and SPB), gzip, and a 3-interface pcapng."""
    problems = []
    for name, path in _variants(tmp_path).items():
        cap = commpath.read(path)
        conv = tshark.connections(path)
        if len(conv) == 0 or len(cap.flows) == 0:
            problems.append(f"{name}: nothing read (tshark {len(conv)}, commpath {len(cap.flows)} connections)")
        # SPBs carry no timestamp: tshark shows 0, commpath has none to compare
        tolerance = float("inf") if name.endswith(":spb") else 2e-6
        problems += [f"{name}: {p}" for p in cmp.compare(cap.flows, conv, ts_tolerance=tolerance)]
        if name.split(":")[0] != "merged":
            src = next(p for p in FORMAT_SOURCES if p.name == name.split(":")[0])
            original = commpath.read(src).flows
            cols = ["src_ip", "src_port", "dst_ip", "dst_port", "first_frame", "packets", "bytes",
                    "payload_fwd", "payload_rev", "app_protocol", "tunnel"]
            if not cap.flows[cols].astype(str).reset_index(drop=True).equals(original[cols].astype(str).reset_index(drop=True)):
                problems.append(f"{name}: flows differ from the original pcap's")
    assert not problems, "\n".join(problems)

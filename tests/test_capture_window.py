"""What the per-direction capture window (read's payload_limit) cuts is said in the record, never silently;
a ClientHello padded past it still shows its SNI."""

from __future__ import annotations

import struct
from pathlib import Path

import pandas as pd
import pytest

scapy = pytest.importorskip("scapy.all")

from test_tls_hostile import client_hello, record, server_hello, sni_ext  # noqa: E402


def _conversation(path: Path, client: bytes, server: bytes, dport: int) -> Path:
    """A TCP connection carrying ``client`` and ``server`` in 1400-byte segments."""
    IP, TCP, Raw = scapy.IP, scapy.TCP, scapy.Raw
    c, s = IP(src="10.0.0.1", dst="10.0.0.2"), IP(src="10.0.0.2", dst="10.0.0.1")
    pkts = [c / TCP(sport=40000, dport=dport, flags="S", seq=1000),
            s / TCP(sport=dport, dport=40000, flags="SA", seq=5000, ack=1001),
            c / TCP(sport=40000, dport=dport, flags="A", seq=1001, ack=5001)]
    seq = 1001
    for i in range(0, len(client), 1400):
        pkts.append(c / TCP(sport=40000, dport=dport, flags="PA", seq=seq, ack=5001) / Raw(client[i:i + 1400]))
        seq += len(client[i:i + 1400])
    sseq = 5001
    for i in range(0, len(server), 1400):
        pkts.append(s / TCP(sport=dport, dport=40000, flags="PA", seq=sseq, ack=seq) / Raw(server[i:i + 1400]))
        sseq += len(server[i:i + 1400])
    for k, p in enumerate(pkts):
        p.time = 1_700_000_000 + k * 0.001
    scapy.wrpcap(str(path), pkts)
    return path


def _analyze(path: Path, **kw):
    import commpath
    from commpath.decode.handshakes import analyze_handshakes
    return analyze_handshakes(commpath.read(str(path), **kw))


def test_client_hello_padded_past_the_window_keeps_its_sni(tmp_path):
    padding = struct.pack(">HH", 21, 20000) + bytes(20000)             # padding extension after the SNI
    hello = client_hello(sni_ext(b"hidden.example") + padding)
    records = b"".join(record(22, hello[i:i + 16384]) for i in range(0, len(hello), 16384))
    pcap = _conversation(tmp_path / "padded.pcap", records, record(22, server_hello()), 443)
    t = _analyze(pcap).tls.iloc[0]
    assert t.sni == "hidden.example"
    assert t.partial and "ClientHello incomplete (cut by the capture window" in t.parse_error
    assert pd.isna(t.ja4) and pd.isna(t.ja3)                         # no fingerprint of half a hello
    whole = _analyze(pcap, payload_limit=1 << 16).tls.iloc[0]         # a larger window reads it whole
    assert whole.sni == "hidden.example" and not whole.partial and isinstance(whole.ja4, str)


def test_long_ssh_banner_and_http_head_say_what_cut_them(tmp_path):
    ssh = _conversation(tmp_path / "ssh.pcap", b"SSH-2.0-" + b"A" * 100_000 + b"\r\n", b"SSH-2.0-OpenSSH_9.6\r\n", 22)
    s = _analyze(ssh).ssh.iloc[0]
    assert s.partial and "client cut by the capture window" in s.parse_error
    http = _conversation(tmp_path / "http.pcap", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000
                         + b"\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 80)
    rows = _analyze(http).http
    request = rows[rows.direction.astype(str) == "request"] if "direction" in rows else rows
    assert rows.partial.all() and rows.parse_error.notna().all()
    assert "header block at offset 0" in rows.parse_error.iloc[0]
    assert len(request) == 0                                          # no request row made up from half a head

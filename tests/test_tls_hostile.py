"""Hostile handshakes: lying lengths, truncation, garbage certificates, 10,000 extensions — never a crash."""

from __future__ import annotations

import random
import struct
import tracemalloc

import pytest

from commpath.decode.handshakes import analyze_handshakes
from commpath.decode.http import parse_http
from commpath.decode.ssh import parse_ssh
from commpath.decode.streams import FlowStreams, Stream
from commpath.decode.tls import MAX_EXTENSIONS, parse_tls
from conftest_handshakes import PUBLIC, ZEEK_TRACES


def flow(cli: bytes, srv: bytes = b"", fid: int = 0) -> FlowStreams:
    return FlowStreams(fid, Stream(cli, (0,), (1,)) if cli else Stream(),
                       Stream(srv, (0,), (2,)) if srv else Stream())


def record(ctype: int, body: bytes, version: int = 0x0303, length: int | None = None) -> bytes:
    return struct.pack(">BHH", ctype, version, len(body) if length is None else length) + body


def handshake(mtype: int, body: bytes, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return bytes([mtype]) + n.to_bytes(3, "big") + body


def client_hello(exts: bytes = b"", ciphers: bytes = b"\x13\x01\xc0\x2f", ext_len: int | None = None) -> bytes:
    body = (b"\x03\x03" + b"\x11" * 32 + b"\x00" + struct.pack(">H", len(ciphers)) + ciphers + b"\x01\x00"
            + struct.pack(">H", len(exts) if ext_len is None else ext_len) + exts)
    return handshake(1, body)


def server_hello(cipher: int = 0xC02F, exts: bytes = b"") -> bytes:
    body = (b"\x03\x03" + b"\x22" * 32 + b"\x00" + struct.pack(">H", cipher) + b"\x00"
            + struct.pack(">H", len(exts)) + exts)
    return handshake(2, body)


def sni_ext(name: bytes) -> bytes:
    entry = b"\x00" + struct.pack(">H", len(name)) + name
    data = struct.pack(">H", len(entry)) + entry
    return struct.pack(">HH", 0, len(data)) + data


def test_lying_record_length_is_partial():
    ch = record(22, client_hello(sni_ext(b"a.example")), length=60000)
    hs = parse_tls(flow(ch))
    assert hs.partial and "exceeds the maximum" in hs.parse_error


def test_record_longer_than_captured_is_partial():
    ch = record(22, client_hello(sni_ext(b"a.example")))
    hs = parse_tls(flow(ch[:-5]))
    assert hs.partial and hs.sni is None


def test_handshake_length_lies():
    body = client_hello(sni_ext(b"a.example"))
    lying = body[:1] + (0xFFFFFF).to_bytes(3, "big") + body[4:]
    hs = parse_tls(flow(record(22, lying)))
    assert hs.partial and "ClientHello incomplete" in hs.parse_error


def test_extension_block_length_lies():
    hs = parse_tls(flow(record(22, client_hello(sni_ext(b"x.example"), ext_len=5000))))
    assert hs.partial and "ClientHello" in hs.parse_error
    assert hs.ja4 is not None          # what was readable is kept


def test_ten_thousand_extensions_are_bounded():
    exts = b"".join(struct.pack(">HH", 0x1000 + (i % 3000), 0) for i in range(10_000))
    body = client_hello(exts)
    # one handshake message split over records of at most 2^14 bytes
    recs = b"".join(record(22, body[i:i + 16384]) for i in range(0, len(body), 16384))
    hs = parse_tls(flow(recs))                # bounded work: the count stops it, not the clock
    assert hs.partial and f"more than {MAX_EXTENSIONS} extensions" in hs.parse_error
    assert len(hs.client_hello.extensions) == MAX_EXTENSIONS


def test_certificate_that_does_not_parse():
    garbage = b"\x30\x82\x01\x00" + b"\xAB" * 256
    cert_list = len(garbage).to_bytes(3, "big") + garbage
    cert_msg = handshake(11, (len(cert_list)).to_bytes(3, "big") + cert_list)
    srv = record(22, server_hello() + cert_msg + handshake(14, b""))
    hs = parse_tls(flow(record(22, client_hello()), srv))
    assert hs.server_chain == [garbage] and not hs.partial

    class Cap:
        import pandas as pd
        flows = pd.DataFrame({"flow_id": [0], "app_protocol": ["tls"], "ts_start": [1.7e9],
                              "dst_ip": ["10.0.0.1"], "http_connect": [False]})
        streams = {0: flow(record(22, client_hello()), srv)}

    h = analyze_handshakes(Cap())
    assert len(h.certs) == 1 and "does not parse" in h.certs.iloc[0].parse_error
    assert h.tls.iloc[0].server_cert_fingerprints == [h.certs.iloc[0].fingerprint]


def test_thousands_of_tiny_records():
    body = client_hello(sni_ext(b"tiny.example"))
    recs = b"".join(record(22, body[i:i + 1]) for i in range(len(body)))
    recs += record(23, b"") * 5000
    hs = parse_tls(flow(recs))
    assert hs.sni == "tiny.example"


def test_not_tls_at_all():
    for data in (b"", b"\x16", b"\x16\x03", b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 8):
        hs = parse_tls(flow(data, data))
        assert hs.partial or hs.parse_error is not None or hs.client_hello is None


def _real_streams():
    import commpath
    out = []
    for trace in ("tls/tls1.2.pcap", "tls/client-certificate.pcap", "tls/hrr.pcap", "tls/tls13_wolfssl.pcap"):
        cap = commpath.read(str(ZEEK_TRACES / trace))
        out.extend(cap.streams.values())
    return out


@pytest.mark.skipif(not PUBLIC.exists(), reason="public captures not beside the checkout")
def test_every_truncation_of_real_handshakes():
    for fs in _real_streams():
        full = parse_tls(fs)
        assert not full.partial
        step = max(1, len(fs.rev.data) // 300)
        for cut in range(0, len(fs.rev.data), step):
            rev = Stream(fs.rev.data[:cut], fs.rev.offsets, fs.rev.frames, gap=True)
            hs = parse_tls(FlowStreams(fs.flow_id, fs.fwd, rev))
            assert hs.client_hello is not None


@pytest.mark.skipif(not PUBLIC.exists(), reason="public captures not beside the checkout")
def test_random_mutations_never_raise():
    rng = random.Random(1234)
    streams = _real_streams()
    n = damaged = 0
    for _ in range(1500):
        fs = rng.choice(streams)
        fwd, rev = bytearray(fs.fwd.data[:4096]), bytearray(fs.rev.data[:8192])
        for buf in (fwd, rev):
            for _ in range(rng.randint(1, 8)):
                if buf:
                    buf[rng.randrange(len(buf))] = rng.randrange(256)
        hs = parse_tls(flow(bytes(fwd), bytes(rev)))
        assert hs.parse_error is None or hs.partial      # an error message always marks the record partial
        damaged += hs.partial
        n += 1
    assert n == 1500 and 0 < damaged < n


def test_bounded_memory_per_connection():
    """A 1 MiB stream of lies costs a bounded amount of memory, not a multiple of its claims."""
    lies = record(22, handshake(1, b"\x03\x03" + b"\x00" * 40, length=0xFFFFFF)) * 1
    junk = lies + b"\x16\x03\x03\xff\xff" * (1 << 18)
    tracemalloc.start()
    parse_tls(flow(junk, junk))
    parse_ssh(flow(b"SSH-2.0-x\r\n" + b"\x00\x00\x7f\xff\x04\x14" + b"\xff" * (1 << 20), b"SSH-2.0-y\r\n"))
    parse_http(flow(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * 100_000))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 24 * (1 << 20)


def test_hostile_ssh():
    cases = [
        b"",
        b"SSH-2.0-OpenSSH\r\n" + b"\xff\xff\xff\xff\x04" + b"\x00" * 20,           # packet length lies
        b"SSH-2.0-OpenSSH\r\n" + struct.pack(">IB", 100, 4) + b"\x14" + b"\x00" * 16 + b"\xff\xff\xff\xff",
        b"x" * 10_000,                                                           # no banner
        b"SSH-2.0-" + b"A" * 5000,                                               # endless banner
    ]
    for data in cases:
        out = parse_ssh(flow(data, data))
        assert out.partial and out.parse_error and out.hassh is None, (data[:40], out)
        assert (out.client_banner or "").startswith("SSH-") == data.startswith(b"SSH-")


def test_hostile_http():
    cases = [
        b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 20000,
        b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x05\x01\x04\x00\x00\x00\x01" + b"\xff\xff\xff\xff\xff",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff\xff\xff\x01\x04\x00\x00\x00\x01",
    ]
    for data in cases:
        res = parse_http(flow(data, b"HTTP/1.1 200 OK\r\n\r\n"))
        assert res.partial, data[:40]                    # every one is cut or broken: never a clean read
        assert all(isinstance(r, dict) for r in res.rows)
    assert parse_http(flow(cases[0], b"")).parse_error.startswith("header block")

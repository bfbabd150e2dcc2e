"""Small TLS cases built by hand: SSLv2-framed ClientHello, JA4 ALPN rules, encrypted-flight sizes."""

from __future__ import annotations

import struct

from commpath.decode.streams import FlowStreams, Stream
from commpath.decode.tls import ClientHello, Record, ServerHello, TlsHandshake, infer_client_cert, ja4, parse_tls


def flow(cli: bytes, srv: bytes = b"") -> FlowStreams:
    return FlowStreams(0, Stream(cli, (0,), (1,)), Stream(srv, (0,), (2,)) if srv else Stream())


def test_sslv2_framed_client_hello():
    specs = bytes.fromhex("010080" "000035" "00002f" "00000a")      # one SSLv2-only spec, three TLS suites
    challenge = b"\x42" * 16
    body = b"\x01" + b"\x03\x01" + struct.pack(">HHH", len(specs), 0, len(challenge)) + specs + challenge
    data = bytes([0x80 | (len(body) >> 8), len(body) & 0xFF]) + body
    hs = parse_tls(flow(data))
    assert hs.client_hello.sslv2 and hs.client_versions == "TLS 1.0"
    assert hs.client_hello.ciphers == [0x35, 0x2F, 0x0A]
    assert hs.ja4.startswith("t10i030000")


def test_ja4_alpn_non_alphanumeric_uses_hex():
    ch = ClientHello(legacy_version=0x0303, ciphers=[0x1301], extensions=[16], alpn_raw=[b"\x00\xff"])
    assert ja4(ch).split("_")[0] == "t12i01010f"          # 0x00..0xff: first and last hex digit


def _hs_with_client_records(sizes, cipher=0x1301, exts=()):
    hs = TlsHandshake(0)
    hs.client_encrypted = [Record(i * 100, 23, 0x0303, b"\0" * n) for i, n in enumerate(sizes)]
    ch = ClientHello(extensions=list(exts))
    return hs, ch, ServerHello(cipher=cipher, selected_version=0x0304)


def test_inference_sizes():
    # Finished alone: 32 + 4 + 1 + 16 = 53 bytes (SHA-256 suites), 69 for SHA-384
    assert infer_client_cert(*_hs_with_client_records([53, 40])) == "inferred-absent"
    assert infer_client_cert(*_hs_with_client_records([69], cipher=0x1302)) == "inferred-absent"
    # an empty Certificate record (25 bytes) then Finished: no certificate
    assert infer_client_cert(*_hs_with_client_records([25, 53])) == "inferred-absent"
    # Certificate, CertificateVerify, Finished as separate records
    assert infer_client_cert(*_hs_with_client_records([612, 96, 53])) == "inferred-presented"
    # an encrypted alert instead of a flight
    assert infer_client_cert(*_hs_with_client_records([19])) == "unknown"
    # Chrome's ALPS: client EncryptedExtensions + Finished in one 63-byte record
    assert infer_client_cert(*_hs_with_client_records([63], exts=[17513])) == "inferred-absent"
    assert infer_client_cert(*_hs_with_client_records([63])) == "unknown"
    # 0-RTT early data makes the first records unreadable as a flight
    hs, ch, sh = _hs_with_client_records([612, 53])
    ch.early_data = True
    assert infer_client_cert(hs, ch, sh) == "unknown"
    # PSK resumption: the server must not request a certificate
    hs, ch, sh = _hs_with_client_records([53])
    sh.psk = True
    assert infer_client_cert(hs, ch, sh) == "not-requested"

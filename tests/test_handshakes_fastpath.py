"""The fast paths (C walk of common TLS handshakes, C chunk walk, memoized HTTP heads) agree with the careful ones."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pandas as pd
import pytest

from commpath.decode import _hs_fast, handshakes, http
from commpath.decode._cert_book import CertBook
from commpath.decode.handshakes import _TLS_NAMES, HandshakeAnalyzer, _cert_columns, _tls_row, analyze_handshakes
from commpath.decode.streams import FlowStreams, Stream
from commpath.decode.tls import parse_tls
from conftest_handshakes import PUBLIC, ZEEK_TRACES, read_capture

LAB = Path(__file__).resolve().parents[1] / "captures"
needs_walker = pytest.mark.skipif(_hs_fast.walker() is None, reason="compiled kernels not available (no C compiler)")


@pytest.fixture
def careful_only(monkeypatch):
    """Switches every fast path off: TLS, chunk lines and HTTP heads are parsed by the Python code alone."""
    def switch_off():
        monkeypatch.setattr(_hs_fast, "walker", lambda: None)
        monkeypatch.setattr(http, "_chunk_walker", lambda: None)
        monkeypatch.setattr(handshakes, "http1_rows", lambda flow: None)
        monkeypatch.setattr(http, "CACHED_HEAD_BYTES", -1)
        http._HEADS_REQUEST.clear()
        http._HEADS_RESPONSE.clear()
    return switch_off


def _tables(h) -> dict:
    return {"tls": h.tls, "certs": h.certs, "ssh": h.ssh, "http": h.http, "warnings": h.warnings}


def _same_tables(fast: dict, careful: dict, name: str) -> None:
    assert fast["warnings"] == careful["warnings"], name
    for key in ("tls", "certs", "ssh", "http"):
        pd.testing.assert_frame_equal(fast[key], careful[key], check_exact=True, obj=f"{name} {key}")
        for col in fast[key].columns:      # value and Python type of every cell (lists included)
            a = [(type(x), repr(x)) for x in fast[key][col].astype(object)]
            b = [(type(x), repr(x)) for x in careful[key][col].astype(object)]
            assert a == b, f"{name} {key}.{col}"


def _captures() -> list[tuple[str, Path, str | None, str | None]]:
    out = []
    for pcap in sorted(PUBLIC.rglob("*.pcap*")) if PUBLIC.exists() else []:
        out.append((str(pcap.relative_to(PUBLIC)), pcap, None, None))
    for pcap in sorted(LAB.rglob("*.pcap")):
        scenario = LAB / pcap.relative_to(LAB).parts[0]
        ca, keys = scenario / "pki" / "ca.crt", scenario / "keylog.txt"
        out.append((str(pcap.relative_to(LAB)), pcap, str(ca) if ca.exists() else None, None))
        if keys.exists():
            out.append((str(pcap.relative_to(LAB)) + "+keylog", pcap, None, str(keys)))
    return out


@needs_walker
def test_captures_agree_with_the_careful_parsers(careful_only):
    """Every public and lab capture (lab ones with their CA bundle, and with their key log)."""
    captures = _captures()
    assert len(captures) > 20
    fast = {}
    caps = {}
    for name, pcap, ca, keys in captures:
        caps[pcap] = caps.get(pcap) or read_capture(pcap)      # every one is readable: a refusal is a failure
        fast[name] = _tables(analyze_handshakes(caps[pcap], ca=ca, keylog=keys))
    careful_only()
    n_tls = 0
    for name, pcap, ca, keys in captures:
        careful = _tables(analyze_handshakes(caps[pcap], ca=ca, keylog=keys))
        _same_tables(fast[name], careful, name)
        n_tls += len(careful["tls"])
    assert n_tls > 100


# --------------------------------------------------------------------------- mutated handshakes

def _real_tls_streams() -> list[FlowStreams]:
    import commpath
    out = []
    traces = ("tls/tls1.2.pcap", "tls/client-certificate.pcap", "tls/hrr.pcap", "tls/tls13_wolfssl.pcap")
    for trace in traces if PUBLIC.exists() else ():
        out.extend(commpath.read(str(ZEEK_TRACES / trace)).streams.values())
    for pcap in sorted(LAB.glob("*/cp1/cp1-eth0.pcap"))[:2]:
        cap = commpath.read(str(pcap))
        out.extend(fs for fs in cap.streams.values() if fs.app_protocol == "tls")
    return out


def _rows_both_ways(flows: list[FlowStreams], max_appdata: int = 4) -> tuple[list, list, int]:
    """(rows by the fast path, rows by the careful parser, how many the walk took itself)."""
    fast_book, careful_book = CertBook(), CertBook()

    def cert_columns(flow_id, sni, server_chain, client_chain, ts, dst_ip, tunneled):
        return _cert_columns(flow_id, sni, server_chain, client_chain, ts, dst_ip, None, fast_book, tunneled)

    def careful(job, book=fast_book):
        fs, ts, dst_ip, tunneled, starttls = job
        return _tls_row(parse_tls(fs, max_appdata), ts, dst_ip, None, None, book, tunneled, starttls)

    jobs = [(fs, 0.0, "192.0.2.1", False, None) for fs in flows]
    fast = _hs_fast.rows(jobs, max_appdata, cert_columns, careful)
    slow = [careful(job, careful_book) for job in jobs]
    walked, _ = _hs_fast.walk(flows, max_appdata)
    return fast, slow, sum(1 for v in walked if v[0] == 0)


def _assert_rows_equal(fast: list, slow: list, flows: list) -> None:
    for f, s, fs in zip(fast, slow, flows):
        assert [(type(x), repr(x)) for x in f] == [(type(x), repr(x)) for x in s], \
            (fs.fwd.data[:64].hex(), fs.rev.data[:64].hex())


def _record_starts(data: bytes) -> list[int]:
    """Offsets where TLS records start (and the end of the last whole one)."""
    out, pos = [0], 0
    while pos + 5 <= len(data):
        pos += 5 + struct.unpack_from(">H", data, pos + 3)[0]
        if pos > len(data):
            break
        out.append(pos)
    return out


def _mutants(streams: list[FlowStreams], rng: random.Random, n: int) -> list[FlowStreams]:
    out = []
    for i in range(n):
        fs = rng.choice(streams)
        fwd, rev = bytearray(fs.fwd.data[:6000]), bytearray(fs.rev.data[:12000])
        how = i % 6
        if how == 0:                                 # random bytes in the first records
            for buf in (fwd, rev):
                for _ in range(rng.randint(1, 4)):
                    if buf:
                        buf[rng.randrange(min(len(buf), 600))] = rng.randrange(256)
        elif how == 1:                               # cut anywhere
            fwd = fwd[:rng.randrange(len(fwd) + 1)]
            rev = rev[:rng.randrange(len(rev) + 1)]
        elif how == 2:                               # a record length off by a little
            buf = rng.choice((fwd, rev))
            if len(buf) > 5:
                struct.pack_into(">H", buf, 3, max(0, struct.unpack_from(">H", buf, 3)[0] + rng.randint(-3, 3)))
        elif how == 3:                               # alerts (plain, encrypted, many) between records
            alert = bytes([21, 3, 3, 0, 2, rng.choice((1, 2)), rng.choice((0, 40, 42, 90))])
            enc = bytes([21, 3, 3, 0, 19]) + bytes(19)
            buf = rng.choice((fwd, rev))
            at = rng.choice(_record_starts(bytes(buf)))
            buf[at:at] = rng.choice((alert, enc)) * rng.choice((1, 1, 2, 17))
        elif how == 4:                               # the first handshake record split in two records
            buf = rng.choice((fwd, rev))
            if len(buf) > 10 and buf[0] == 22:
                length = struct.unpack_from(">H", buf, 3)[0]
                at = rng.randint(1, max(1, min(length, len(buf) - 5) - 1))
                body = bytes(buf[5:5 + length])
                buf[:5 + length] = (bytes([22, 3, 3]) + struct.pack(">H", at) + body[:at]
                                    + bytes([22, 3, 3]) + struct.pack(">H", len(body) - at) + body[at:])
        else:                                        # bytes flipped inside the ClientHello/ServerHello body
            buf = rng.choice((fwd, rev))
            if len(buf) > 50:
                buf[rng.randrange(9, min(len(buf), 300))] ^= 1 << rng.randrange(8)
        segs = fs.fwd.offsets, fs.fwd.frames, fs.rev.offsets, fs.rev.frames
        out.append(FlowStreams(i, Stream(bytes(fwd), segs[0], segs[1], gap=how == 1),
                               Stream(bytes(rev), segs[2], segs[3], gap=how == 1)))
    return out


@needs_walker
@pytest.mark.skipif(not PUBLIC.exists(), reason="public captures not beside the checkout")
def test_mutated_handshakes_agree():
    streams = _real_tls_streams()
    assert streams
    flows = _mutants(streams, random.Random(7), 3000)
    fast, slow, walked = _rows_both_ways(flows)
    _assert_rows_equal(fast, slow, flows)
    assert 300 < walked < len(flows)        # both paths really taken


@needs_walker
@pytest.mark.skipif(not PUBLIC.exists(), reason="public captures not beside the checkout")
def test_every_truncation_agrees():
    flows = []
    for fs in _real_tls_streams():
        for side in ("fwd", "rev"):
            data = getattr(fs, side).data[:4000]
            for cut in range(0, len(data), max(1, len(data) // 150)):
                cut_stream = Stream(data[:cut], getattr(fs, side).offsets, getattr(fs, side).frames, limited=True)
                flows.append(FlowStreams(fs.flow_id, cut_stream, fs.rev) if side == "fwd"
                             else FlowStreams(fs.flow_id, fs.fwd, cut_stream))
    fast, slow, walked = _rows_both_ways(flows)
    _assert_rows_equal(fast, slow, flows)
    assert walked > 100


@needs_walker
def test_max_appdata_of_key_logs_agrees():
    flows = [fs for fs in _real_tls_streams()]
    fast, slow, _ = _rows_both_ways(flows, max_appdata=32)
    _assert_rows_equal(fast, slow, flows)


# --------------------------------------------------------------------------- HTTP

def _chunked(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randint(0, 12)):
        size = rng.randint(1, 300)
        line = rng.choice((f"{size:x}", f"{size:X}", f"{size:x};ext=1", f" {size:x}", f"{size:016x}",
                           f"{size:x} ", f"0x{size:x}", f"{size:017x}"))
        parts.append(line.encode() + b"\r\n" + b"z" * size + b"\r\n")
    parts.append(rng.choice((b"0\r\n\r\n", b"0\r\nX-T: 1\r\n\r\n", b"00\r\n\r\n", b"0;a=b\r\n\r\n", b"")))
    data = b"".join(parts)
    if rng.random() < 0.3:
        data = data[:rng.randrange(len(data) + 1)]
    return data


def test_chunk_walk_agrees_with_python(monkeypatch):
    if http._chunk_walker() is None:
        pytest.skip("compiled kernels not available (no C compiler)")
    rng = random.Random(11)
    bodies = [_chunked(rng) for _ in range(3000)]
    h = {"transfer-encoding": "chunked"}
    fast = [http._body_end(b"HEAD" + body, 4, h, True, 200, "GET") for body in bodies]
    monkeypatch.setattr(http, "_chunk_walker", lambda: None)
    slow = [http._body_end(b"HEAD" + body, 4, h, True, 200, "GET") for body in bodies]
    assert fast == slow
    assert sum(x is not None for x in fast) > 500 and sum(x is None for x in fast) > 200


def test_chunk_budget_is_the_same(monkeypatch):
    if http._chunk_walker() is None:
        pytest.skip("compiled kernels not available (no C compiler)")
    body = b"1\r\nz\r\n" * (http.MAX_CHUNKS + 5) + b"0\r\n\r\n"
    h = {"transfer-encoding": "chunked"}
    assert http._body_end(body, 0, h, False, None, None) is None            # more lines than the bound
    short = b"1\r\nz\r\n" * (http.MAX_CHUNKS - 1) + b"0\r\n\r\n"
    assert http._body_end(short, 0, h, False, None, None) == len(short)
    monkeypatch.setattr(http, "_chunk_walker", lambda: None)
    assert http._body_end(body, 0, h, False, None, None) is None
    assert http._body_end(short, 0, h, False, None, None) == len(short)


def test_http_heads_memo_keeps_no_credentials():
    req = b"GET /x?token=abc HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cr3t\r\n\r\n"
    resp = b"HTTP/1.1 204 No Content\r\n\r\n"
    fs = FlowStreams(1, Stream(req, (0,), (1,)), Stream(resp, (0,), (2,)))
    first = http.parse_http(fs).rows
    again = http.parse_http(fs).rows
    assert first == again and first[0]["auth"] == "bearer" and first[0]["path"] == "/x?token=REDACTED"
    assert not any(b"s3cr3t" in head for head in http._HEADS_REQUEST)


def _http_flows(rng: random.Random, n: int) -> list[FlowStreams]:
    heads = [b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", b"POST /p?password=x HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
             b"CONNECT h:443 HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n", b"BAD LINE\r\n\r\n",
             b"HEAD /h HTTP/1.1\r\n\r\n", b"GET /b HTTP/1.1\nHost: b\n\n", b"GET /c HTTP/1.1\r\nCookie: a=b\r\n\r\n",
             b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
             ] + [b"GET /a HTTP/1.1\r\n\r\n"] * 5
    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"HTTP/1.1 101 Switching\r\nUpgrade: h2c\r\n\r\n",
               b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", b"junk\r\n\r\n",
               b"HTTP/1.1 304 Not Modified\r\n\r\n", b"HTTP/1.0 204 No Content\r\n\r\n",
               b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"] + [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"] * 5
    flows = []
    for i in range(n):
        req = b"".join(rng.choice(heads) for _ in range(rng.randint(1, 3)))
        resp = b"".join(rng.choice(answers) for _ in range(rng.randint(1, 3)))
        cut = rng.random() < 0.2
        if cut:
            req, resp = req[:rng.randrange(len(req) + 1)], resp[:rng.randrange(len(resp) + 1)]
        # frames of the two directions interleave; a first offset after 0 leaves some frames unknown
        segs, frames = ((0, 7, 30), (1, 4, 8)) if rng.random() < 0.7 else ((3,), (1,))
        flows.append(FlowStreams(i, Stream(req, segs, frames, gap=cut),
                                 Stream(resp, (0, 15, 40), (2, 5, 9)) if resp else Stream(), app_protocol="http"))
    return flows


def test_http_rows_equal_with_and_without_memo(careful_only):
    flows = _http_flows(random.Random(5), 400)
    fast = [http.parse_http(fs) for fs in flows] + [http.parse_http(fs) for fs in flows]   # second: memo warm
    careful_only()
    slow = [http.parse_http(fs) for fs in flows] * 2
    for f, s in zip(fast, slow):
        assert (f.rows, f.partial, f.parse_error) == (s.rows, s.partial, s.parse_error)
        assert (f.tunnel is None) == (s.tunnel is None)


def test_http_table_equal_with_and_without_fast_path(careful_only):
    flows = _http_flows(random.Random(9), 600)

    def table():
        a = HandshakeAnalyzer()
        for fs in flows:
            a.feed(fs)
        return _tables(a.result())

    fast = table()
    taken = sum(http.http1_rows(fs) is not None for fs in flows)
    careful_only()
    _same_tables(fast, table(), "random HTTP flows")
    assert 100 < taken < len(flows)


def test_analyzer_batches_keep_certificate_order():
    """TLS connections wait for the walk in batches; the certificate table keeps first-seen order."""
    if not PUBLIC.exists():
        pytest.skip("public captures not beside the checkout")
    cap = read_capture(ZEEK_TRACES / "tls/tls1.2.pcap")
    a = HandshakeAnalyzer()
    for _ in range(3):
        for fs in cap.streams.values():
            a.feed(fs)
    h = a.result()
    assert len(h.tls) == 3 * len(cap.streams) and h.certs["fingerprint"].is_unique


@needs_walker
@pytest.mark.skipif(not PUBLIC.exists(), reason="public captures not beside the checkout")
def test_tunnels_and_queued_flows_keep_certificate_order(careful_only):
    """TLS inside HTTP CONNECT tunnels, plain TLS and plain HTTP interleaved: same tables as fed one by one."""
    import commpath
    tls = []
    for trace in ("tls/tls1.2.pcap", "tls/client-certificate.pcap"):
        tls += [fs for fs in commpath.read(str(ZEEK_TRACES / trace)).streams.values() if fs.rev.data]
    assert len(tls) >= 2

    def tunnel(fs: FlowStreams, fid: int) -> FlowStreams:
        head, answer = b"CONNECT h.example:443 HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"
        fwd = Stream(head + fs.fwd.data, (0,) + tuple(o + len(head) for o in fs.fwd.offsets), (1,) + fs.fwd.frames)
        rev = Stream(answer + fs.rev.data, (0,) + tuple(o + len(answer) for o in fs.rev.offsets),
                     (2,) + fs.rev.frames)
        return FlowStreams(fid, fwd, rev, app_protocol="http", dst_ip="192.0.2.7", ts_start=1.6e9)

    plain_http = FlowStreams(0, Stream(b"GET / HTTP/1.1\r\n\r\n", (0,), (1,)),
                             Stream(b"HTTP/1.1 204 No Content\r\n\r\n", (0,), (2,)), app_protocol="http")
    flows = []
    for i in range(600):                        # more than one batch
        fs = tls[i % len(tls)]
        if i % 3 == 0:
            flows.append(tunnel(fs, 10_000 + i))
        elif i % 3 == 1:
            flows.append(FlowStreams(20_000 + i, fs.fwd, fs.rev, "tls", fs.src_ip, fs.dst_ip, fs.ts_start))
        else:
            flows.append(FlowStreams(30_000 + i, plain_http.fwd, plain_http.rev, "http"))

    def tables():
        a = HandshakeAnalyzer()
        for fs in flows:
            a.feed(fs)
        return _tables(a.result())

    fast = tables()
    assert fast["tls"]["tunneled"].sum() == 200 and len(fast["http"]) == 200 * 2 + 200 * 2
    careful_only()
    _same_tables(fast, tables(), "tunnels")


def test_http_streams_of_bytearrays():
    """Stream.data that is not bytes (a bytearray) parses as its bytes do."""
    body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 204 No\r\n\r\n"
    req = b"GET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"
    as_bytes = FlowStreams(1, Stream(req, (0,), (1,)), Stream(body, (0,), (2,)), app_protocol="http")
    as_array = FlowStreams(1, Stream(bytearray(req), (0,), (1,)), Stream(bytearray(body), (0,), (2,)),
                           app_protocol="http")
    a, b = http.parse_http(as_bytes), http.parse_http(as_array)
    assert (a.rows, a.partial, a.parse_error) == (b.rows, b.partial, b.parse_error) and len(a.rows) == 4
    assert http.http1_rows(as_bytes) == http.http1_rows(as_array)


class _CountingAnalyzer(HandshakeAnalyzer):
    """Counts the connections that came through the engine's TLS batches."""

    batched = 0

    def tls_batch(self, batch) -> None:
        type(self).batched += batch.n
        super().tls_batch(batch)


@needs_walker
@pytest.mark.parametrize("chunk_size", [None, 97])
def test_engine_tls_batches_agree_with_one_by_one(chunk_size):
    """Fed by the engine, TLS connections come in batches read where the engine holds their bytes:
    the tables equal those of the same connections handed over one by one (every public and lab
    capture; lab ones with their CA bundle, and with their key log)."""
    import commpath
    from commpath.errors import InputError
    extra = {"chunk_size": chunk_size} if chunk_size else {}
    _CountingAnalyzer.batched = 0
    compared = 0
    for name, pcap, ca, keys in _captures():
        try:
            one = HandshakeAnalyzer(ca, keys)
            commpath.read(str(pcap), keep_streams=False, on_streams=one.feed, **extra)
        except InputError:
            continue
        both = _CountingAnalyzer(ca, keys)
        commpath.read(str(pcap), keep_streams=False, on_streams=both, **extra)
        _same_tables(_tables(both.result()), _tables(one.result()), name)
        compared += 1
    assert compared > 20 and _CountingAnalyzer.batched > 100


@pytest.mark.skipif(not PUBLIC.exists(), reason="public captures not beside the checkout")
def test_cryptography_loads_only_for_certificates():
    """TLS 1.3 hides certificates: analysing such a capture never loads cryptography; a visible
    certificate does, for the certificate table."""
    import subprocess
    import sys
    probe = (
        "import sys, commpath\n"
        "from commpath.decode.handshakes import HandshakeAnalyzer\n"
        "a = HandshakeAnalyzer()\n"
        "commpath.read(sys.argv[1], keep_streams=False, on_streams=a)\n"
        "h = a.result()\n"
        "print(len(h.tls), len(h.certs), 'cryptography' in sys.modules)\n")

    def run(trace: str) -> list[str]:
        out = subprocess.run([sys.executable, "-c", probe, str(ZEEK_TRACES / trace)], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    n_tls, n_certs, loaded = run("tls/tls13_wolfssl.pcap")
    assert int(n_tls) >= 1 and n_certs == "0" and loaded == "False"
    n_tls, n_certs, loaded = run("tls/tls1.2.pcap")
    assert int(n_tls) >= 1 and int(n_certs) >= 1 and loaded == "True"


def test_fingerprints_of_a_crafted_hello_agree_and_match_their_definitions():
    """JA3 (GREASE left out), JA3S, JA4S, the TLS 1.3 key-share group and the ECH flag, both ways."""
    import hashlib

    from test_tls_hostile import client_hello, record, server_hello
    groups = struct.pack(">HHHH", 6, 0x0A0A, 0x11EC, 0x001D)                 # GREASE, X25519MLKEM768, x25519
    exts = (struct.pack(">HH", 0x0A0A, 0)                                     # GREASE extension
            + struct.pack(">HH", 10, len(groups)) + groups
            + struct.pack(">HHB", 11, 2, 1) + b"\x00"                         # ec_point_formats: uncompressed
            + struct.pack(">HHB", 43, 3, 2) + b"\x03\x04"                      # supported_versions: TLS 1.3
            + struct.pack(">HH", 0xFE0D, 4) + b"\x00\x00\x01\x00")            # encrypted_client_hello
    cli = record(22, client_hello(exts, ciphers=b"\x1a\x1a\x13\x01\x13\x02"))
    share = struct.pack(">HH", 0x001D, 32) + bytes(32)
    sh_exts = struct.pack(">HHH", 43, 2, 0x0304) + struct.pack(">HH", 51, len(share)) + share
    srv = record(22, server_hello(0x1301, sh_exts)) + record(20, b"\x01") + record(23, bytes(60))
    flows = [FlowStreams(1, Stream(cli + record(20, b"\x01") + record(23, bytes(53)), (0,), (1,)),
                         Stream(srv, (0,), (2,)))]
    fast, slow, walked = _rows_both_ways(flows)
    assert walked == 1
    _assert_rows_equal(fast, slow, flows)
    row = dict(zip(_TLS_NAMES, fast[0]))
    ja3 = "771,4865-4866,10-11-43-65037,4588-29,0"
    assert row["ja3"] == hashlib.md5(ja3.encode()).hexdigest()
    assert row["ja3s"] == hashlib.md5(b"771,4865,43-51").hexdigest()
    assert row["ja4s"] == "t130200_1301_" + hashlib.sha256(b"002b,0033").hexdigest()[:12]
    assert row["kex_group"] == "x25519" and row["ech"] is True

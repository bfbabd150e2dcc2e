"""Plaintext HTTP/1.x and h2c: request/status lines, CONNECT, and secrets redacted at parse time."""

from __future__ import annotations

import http.server
import os
import random
import shutil
import threading
import urllib.request

import pytest

from commpath.decode.http import parse_http, redact_path
from commpath.decode.streams import FlowStreams, Stream
from conftest_handshakes import PUBLIC, ZEEK_TRACES, start_tcpdump, stop_tcpdump

public = pytest.mark.skipif(not PUBLIC.exists(), reason="public captures not beside the checkout")

SECRET = "s3cr3t-T0KEN-4f9a"


def analyzed(path, limit=16384):
    import commpath
    from commpath.decode.handshakes import analyze_handshakes
    cap = commpath.read(str(path), payload_limit=limit)
    return cap, analyze_handshakes(cap)


def flow(cli: bytes, srv: bytes = b"") -> FlowStreams:
    return FlowStreams(0, Stream(cli, (0,), (1,)), Stream(srv, (0,), (2,)) if srv else Stream())


def _reqs(h):
    return h.http[h.http.direction == "request"]


def _resps(h):
    return h.http[h.http.direction == "response"]


# --------------------------------------------------------------------------- public captures

@public
@pytest.mark.parametrize("trace,method,path,host", [
    ("deepflow/http/h2c_ascii.pcap", "POST", "/hipstershop.CartService/GetCart", "cartservice:7070"),
    ("deepflow/http/grpc-unary.pcap", "POST", "/agent.Synchronizer/Sync", "10.1.23.21:30035"),
    ("deepflow/http/httpv1.pcap", "POST", "/query?1590632942", "rq.cct.cloud.duba.net"),
])
def test_deepflow_requests_and_status(trace, method, path, host):
    """The values deepflow's parser records in the .result file beside each capture."""
    _, h = analyzed(PUBLIC / trace)
    req, resp = _reqs(h).iloc[0], _resps(h).iloc[0]
    assert (req.method, req.path, req.host) == (method, path, host)
    assert int(resp.status) == 200
    assert bool(req.h2c) == trace.endswith(("h2c_ascii.pcap", "grpc-unary.pcap"))


@public
def test_mid_stream_h2_decodes_static_fields_like_deepflow():
    """http2-multi starts mid-connection: deepflow sees 2 POSTs without path and 2 status 200."""
    _, h = analyzed(PUBLIC / "deepflow/http/http2-multi.pcap")
    assert list(_reqs(h).method) == ["POST", "POST"]
    assert _reqs(h).path.isna().all()
    assert [int(s) for s in _resps(h).status] == [200, 200]
    assert h.http.partial.all() and "mid-connection" in h.http.parse_error.iloc[0]


@public
def test_arkime_http2_with_continuation_frames():
    """nghttp2.org: a HEADERS frame with CONTINUATION frames of long headers (needs a bigger limit)."""
    _, h = analyzed(PUBLIC / "arkime/http2-nghttp2.pcap", limit=1 << 17)
    import json
    a = json.loads((PUBLIC / "arkime/http2-nghttp2.test").read_text())["sessions3"][0]["body"]["http"]
    # Arkime lists the server-pushed /stylesheets/screen.css (a PUSH_PROMISE) among the paths
    pushed = h.http[h.http.direction == "push"]
    assert sorted(set(_reqs(h).path) | set(pushed.path)) == sorted(a["path"])
    assert set(_reqs(h).host) == set(a["host"])
    assert set(_reqs(h).method) == set(a["method"]) - {"PRI"}   # Arkime counts the preface as a method


@public
def test_suricata_connect_then_plain_http():
    _, h = analyzed(PUBLIC / "suricata-verify/tests/http-connect/http-connect-simple/input.pcap")
    outer = h.http[~h.http.tunneled]
    inner = h.http[h.http.tunneled]
    assert list(outer.method.dropna()) == ["CONNECT"] and outer.connect_target.dropna().tolist() == ["abc:443"]
    assert list(inner.method.dropna()) == ["GET"] and [int(s) for s in inner.status.dropna()] == [200]


@public
def test_suricata_connect_fail_keeps_the_connect():
    _, h = analyzed(PUBLIC / "suricata-verify/tests/http-connect/http-connect-fail/input.pcap")
    assert list(_reqs(h).method) == ["CONNECT"] and [int(s) for s in _resps(h).status] == [200]
    assert len(h.tls) == 0


@public
def test_zeek_connect_with_header():
    _, h = analyzed(ZEEK_TRACES / "http/connect-with-header.pcap")
    req = _reqs(h).iloc[0]
    assert req.method == "CONNECT" and req.connect_target == "secure.newegg.com:443"
    assert len(h.tls) == 1 and h.tls.iloc[0].sni == "secure.newegg.com"


# --------------------------------------------------------------------------- redaction

def test_redaction_http1():
    cli = (f"GET /api/v1/pods?watch=1&access_token={SECRET}&limit=5 HTTP/1.1\r\nHost: apiserver\r\n"
           f"Authorization: Bearer {SECRET}\r\nCookie: session={SECRET}\r\n\r\n"
           f"GET http://user:{SECRET}@proxy/x HTTP/1.1\r\nHost: proxy\r\n"
           f"Authorization: Basic {SECRET}\r\n\r\n").encode()
    srv = f"HTTP/1.1 200 OK\r\nSet-Cookie: id={SECRET}\r\nContent-Length: 0\r\n\r\n".encode()
    res = parse_http(flow(cli, srv))
    assert SECRET not in repr(res.rows)
    assert [r.get("auth") for r in res.rows] == ["bearer,cookie", "basic", "set-cookie"]
    assert res.rows[0]["path"] == "/api/v1/pods?watch=1&access_token=REDACTED&limit=5"
    assert res.rows[1]["path"] == "http://REDACTED@proxy/x"


def test_redaction_h2c():
    hpack = pytest.importorskip("hpack")
    enc = hpack.Encoder()
    block = enc.encode([(":method", "GET"), (":scheme", "http"), (":path", f"/x?token={SECRET}"),
                        (":authority", "kube-apiserver:6443"), ("authorization", f"Bearer {SECRET}")])
    frame = len(block).to_bytes(3, "big") + b"\x01\x05" + (1).to_bytes(4, "big") + block
    cli = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" + frame
    res = parse_http(flow(cli))
    assert SECRET not in repr(res.rows)
    (row,) = res.rows
    assert (row["method"], row["path"], row["host"], row["auth"]) == \
        ("GET", "/x?token=REDACTED", "kube-apiserver:6443", "bearer")


def test_h2c_upgrade_from_http1():
    """Upgrade: h2c, 101 Switching Protocols, then HTTP/2 frames both ways (RFC 7540 3.2)."""
    hpack = pytest.importorskip("hpack")
    req = b"GET /healthz HTTP/1.1\r\nHost: kubelet:10255\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
    block = hpack.Encoder().encode([(":status", "200"), ("content-type", "text/plain")])
    frame = len(block).to_bytes(3, "big") + b"\x01\x04" + (1).to_bytes(4, "big") + block
    settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    resp = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n" + settings + frame
    res = parse_http(flow(req + b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + settings, resp))
    kinds = [(r["direction"], r.get("version"), r.get("status")) for r in res.rows]
    assert ("request", "HTTP/1.1", None) in kinds and ("response", "HTTP/1.1", 101) in kinds
    assert ("response", "HTTP/2", 200) in kinds
    assert res.rows[0]["h2c"] is True and res.rows[0]["path"] == "/healthz"


def test_redact_path_keeps_harmless_queries():
    assert redact_path("/api/v1/namespaces?limit=500") == "/api/v1/namespaces?limit=500"
    assert redact_path("/x?sig=abc&a=1") == "/x?sig=REDACTED&a=1"


# --------------------------------------------------------------------------- real client/server on lo

needs_capture = pytest.mark.skipif(not (shutil.which("tcpdump") and os.geteuid() == 0),
                                   reason="needs tcpdump and root (capture on lo)")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):                                 # noqa: N802 - http.server's naming
        body = b"ok"
        self.send_response(200)
        self.send_header("Set-Cookie", f"sid={SECRET}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@needs_capture
def test_real_http_exchange_never_stores_the_token(tmp_path):
    port = random.randrange(20000, 32000)   # below the ephemeral range
    server = http.server.HTTPServer(("127.0.0.1", port), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    pcap = tmp_path / "http.pcap"
    dump = start_tcpdump(pcap, f"tcp port {port}")
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/nodes?access_token={SECRET}",
                                     headers={"Authorization": f"Bearer {SECRET}"})
        assert urllib.request.urlopen(req, timeout=5).read() == b"ok"
    finally:
        stop_tcpdump(dump, pcap=pcap, ended=1)
        server.shutdown()
        server.server_close()
    assert SECRET.encode() in pcap.read_bytes()       # the secret is on the wire ...
    _, h = analyzed(pcap)
    assert SECRET not in h.http.to_csv()              # ... but never in what we keep
    req, resp = _reqs(h).iloc[0], _resps(h).iloc[0]
    assert req.method == "GET" and req.path == "/api/v1/nodes?access_token=REDACTED"
    assert req.auth == "bearer" and resp.auth == "set-cookie" and int(resp.status) == 200


def _h1(req: bytes, resp: bytes = b""):
    from commpath.decode.streams import FlowStreams, Stream
    return parse_http(FlowStreams(1, Stream(req, (0,), (1,)), Stream(resp, (0,), (2,)) if resp else Stream()))


@pytest.mark.parametrize("length, body, messages", [
    (b"5", b"abcde", 2), (b"+5", b"abcde", 2), (b"1_0", b"abcdefghij", 2), (b" 3 ", b"abc", 2),
    (b"x", b"abc", 1), (b"-3", b"", 1), (b"99", b"abc", 1),
])
def test_request_bodies_by_content_length(length, body, messages):
    """Where the next message starts: int() of the Content-Length (a negative one goes back into the head)."""
    req = b"POST /u HTTP/1.1\r\nContent-Length: " + length + b"\r\n\r\n" + body + b"GET /next HTTP/1.1\r\n\r\n"
    res = _h1(req)
    assert [r["path"] for r in res.rows] == ["/u", "/next"][:messages]
    assert (res.parse_error or "").startswith("request: not a request line") == (length == b"-3")


def test_response_bodies_that_have_no_length():
    req = b"HEAD /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\nGET /d HTTP/1.1\r\n\r\n"
    resp = (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"             # HEAD: no body
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"      # 304: no body
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 99\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"                                       # chunked wins over the length
            b"HTTP/1.1 200 OK\r\n\r\nread until close")
    rows = [r for r in _h1(req, resp).rows if r["direction"] == "response"]
    assert [r["status"] for r in rows] == [200, 304, 200, 200]

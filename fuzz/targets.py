"""The fuzz targets of commpath's Python parsers: each takes one input and must return without an exception.

Inputs that carry two directions of a connection use the same framing as ``c/harness.c``: a
2-byte big-endian length (modulo the input's size) of the client bytes, the client bytes, then
the server bytes. Refusing a bad capture file with :class:`commpath.InputError` is the documented
answer to bad input and not a crash; any other exception is.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import commpath
from commpath.decode import _pcapfile
from commpath.decode import handshakes as _handshakes
from commpath.decode import http as _http
from commpath.decode import ssh as _ssh
from commpath.decode import tls as _tls
from commpath.decode import x509 as _x509
from commpath.decode.streams import FlowStreams, Stream

__all__ = ["TARGETS", "flow_of", "frame_two"]


def frame_two(client: bytes, server: bytes) -> bytes:
    """One input carrying both directions (the inverse of :func:`flow_of`)."""
    size = len(client) + len(server) + 2
    for prefix in range(len(client), 1 << 16, size - 1):  # any prefix p with p % (size - 1) == len(client)
        return prefix.to_bytes(2, "big") + client + server
    raise ValueError("client bytes longer than 64 KiB")


def flow_of(data: bytes, ts: float = 1.0) -> FlowStreams:
    """Both directions of a connection from one input; segments every 97 bytes, as frames would cut them."""
    if len(data) < 2:
        return FlowStreams(0, Stream(), Stream(), "", "10.0.0.1", "10.0.0.2", ts)
    cl = int.from_bytes(data[:2], "big") % (len(data) - 1)
    cli, srv = data[2:2 + cl], data[2 + cl:]

    def stream(b: bytes, first_frame: int) -> Stream:
        if not b:
            return Stream()
        offs = tuple(range(0, len(b), 97))
        return Stream(b, offs, tuple(first_frame + 2 * i for i in range(len(offs))))
    return FlowStreams(0, stream(cli, 1), stream(srv, 2), "", "10.0.0.1", "10.0.0.2", ts)


def tls(data: bytes) -> None:
    hs = _tls.parse_tls(flow_of(data), max_appdata=32 if data[:1] == b"\x01" else 4)
    assert hs.partial or hs.parse_error is None


def x509(data: bytes) -> None:
    try:
        _x509.parse_certificate(data)
    except ValueError:                 # not a certificate: the caller records that as the cert's error
        pass
    _x509.name_from_der(data)


def ssh(data: bytes) -> None:
    _ssh.parse_ssh(flow_of(data))


def http(data: bytes) -> None:
    fs = flow_of(data)
    _http.parse_http(fs, h2=fs.fwd.data.startswith(b"PRI * HTTP/2.0"))
    _http.http1_rows(fs)


_CA = Path(__file__).resolve().parents[1] / "captures" / "default" / "pki" / "ca.crt"


class _Analyzers:
    """Two analyzers (without and with the lab's CA bundle), their tables built every 256 inputs."""

    def __init__(self):
        self.fed = 0
        self.pair = self._fresh()

    @staticmethod
    def _fresh():
        return [_handshakes.HandshakeAnalyzer(), _handshakes.HandshakeAnalyzer(ca=str(_CA))]

    def __call__(self, data: bytes) -> None:
        options, data = data[-1:] or b"\x00", data[:-1]
        analyzer = self.pair[options[0] & 1]
        # bit 1: a connection without a time, as pcapng simple packet blocks give
        fs = flow_of(data, float("nan") if options[0] & 2 else 1.0)
        for proto in ("tls", "unknown", "ssh", "http", "http2"):
            analyzer.feed(fs, proto)
        analyzer._flush()             # the batch the engine would hand the C walk, now
        self.fed += 1
        if self.fed % 256 == 0:       # pandas would cost a hundred times the parse if done every time
            for each in self.pair:
                each.result()
            self.pair = self._fresh()


#: the analyzer as the engine feeds it: TLS through the C walk, the rest by the careful parsers; the
#: input's last byte holds options (bit 0: the analyzer that verifies certificates, bit 1: no time)
handshakes = _Analyzers()


# a file per input: in memory where the machine has a tmpfs at /dev/shm
_SCRATCH = tempfile.mkdtemp(prefix="commpath-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


def _as_file(data: bytes) -> str:
    path = os.path.join(_SCRATCH, "input")
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def pcap_reader(data: bytes) -> None:
    """The chunked reader: pcap, pcapng and gzip by their magic numbers, records indexed in C."""
    state = _pcapfile.ReadState(path="input")
    try:
        for records in _pcapfile.iter_records(Path(_as_file(data)), state, chunk=1 << 16):
            assert len(records) >= 0
    except commpath.InputError:
        pass


def engine(data: bytes) -> None:
    """The whole engine on one file: reader, headers, connection tracking, reassembly, protocols."""
    try:
        commpath.read(_as_file(data), strict=True, chunk_size=1 << 16)
    except commpath.InputError:
        pass


TARGETS = {"tls": tls, "x509": x509, "ssh": ssh, "http": http, "handshakes": handshakes,
           "pcap_reader": pcap_reader, "engine": engine}

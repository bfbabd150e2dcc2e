"""Application protocol of a connection from the first bytes of its streams, not its ports."""

from __future__ import annotations

import re

from .streams import FlowStreams

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HTTP_REQUEST = re.compile(rb"(GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH|CONNECT|TRACE|PROPFIND) [^ \r\n]{1,8192} HTTP/1\.[019]\r?\n")
HTTP_REQUEST_START = re.compile(rb"(GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH|CONNECT|TRACE|PROPFIND) [/*a-zA-Z0-9\[]")
HTTP_RESPONSE = re.compile(rb"HTTP/1\.[019] [1-5][0-9][0-9]")

#: How far into each direction a TLS hello is looked for after a clear-text STARTTLS exchange.
STARTTLS_SEARCH = 4096
_HELLO_AT = {1: re.compile(rb"\x16\x03[\x00-\x04][\x00-\x40][\x00-\xff]\x01\x00"),
             2: re.compile(rb"\x16\x03[\x00-\x04][\x00-\x40][\x00-\xff]\x02\x00")}
_PG_SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
_LDAP_STARTTLS_OID = b"1.3.6.1.4.1.1466.20037"

# Client-side and server-side signatures; each returns True when ``data`` starts like it.


def tls_client_hello(data: bytes) -> bool:
    if len(data) >= 6 and data[0] == 0x16 and data[1] == 3 and data[2] <= 4 and data[5] == 1:
        return True
    # SSLv2-framed ClientHello (old clients)
    return len(data) >= 5 and data[0] & 0x80 != 0 and data[2] == 1 and data[3] in (0, 2, 3)


def tls_server_hello(data: bytes) -> bool:
    return len(data) >= 6 and data[0] == 0x16 and data[1] == 3 and data[2] <= 4 and data[5] == 2


def tls_record(data: bytes) -> bool:
    return len(data) >= 5 and 0x14 <= data[0] <= 0x17 and data[1] == 3 and data[2] <= 4


def http_request(data: bytes) -> bool:
    return bool(HTTP_REQUEST.match(data) or (len(data) < 64 and HTTP_REQUEST_START.match(data)))


def http_response(data: bytes) -> bool:
    return bool(HTTP_RESPONSE.match(data))


def h2_frames(data: bytes, max_frames: int = 32) -> bool:
    """Bytes that parse as a run of well-formed HTTP/2 frames (a mid-stream h2c capture)."""
    pos = 0
    count = 0
    while pos + 9 <= len(data) and count < max_frames:
        length = int.from_bytes(data[pos:pos + 3], "big")
        ftype = data[pos + 3]
        stream = int.from_bytes(data[pos + 5:pos + 9], "big")
        if ftype > 9 or length > 16_777_215 or stream & 0x80000000:
            return False
        if ftype in (4, 6, 7) and stream != 0:
            return False                     # SETTINGS, PING, GOAWAY live on stream 0
        if ftype in (0, 1, 2, 3, 5, 9) and stream == 0:
            return False                     # these need a stream
        pos += 9 + length
        count += 1
    return count >= 1 and pos == len(data) or (count >= 2 and pos > len(data))


def starttls_protocol(fwd: bytes, rev: bytes) -> str | None:
    """The clear-text protocol that asked to upgrade to TLS at the start of a connection, by its own
    words (SMTP/FTP/POP3/IMAP/XMPP/LDAP/PostgreSQL); None if the bytes show none of them."""
    cli, srv = fwd[:STARTTLS_SEARCH], rev[:STARTTLS_SEARCH]
    if cli.startswith(_PG_SSL_REQUEST) and srv[:1] == b"S":
        return "postgresql"
    if cli[:1] == b"\x30" and _LDAP_STARTTLS_OID in cli:
        return "ldap"
    if srv.startswith(b"220"):
        if re.search(rb"(?im)^STARTTLS\r?$", cli) and re.search(rb"(?im)^(EHLO|HELO) ", cli):
            return "smtp"
        if re.search(rb"(?im)^AUTH (TLS|SSL|TLS-C)\r?$", cli):
            return "ftp"
    if srv.startswith(b"+OK") and re.search(rb"(?im)^STLS\r?$", cli):
        return "pop3"
    if srv.startswith(b"* OK") and re.search(rb"(?im)^[!-~]+ STARTTLS\r?$", cli):
        return "imap"
    if (cli.startswith(b"<?xml") or cli.startswith(b"<stream:stream")) and b"<starttls" in cli:
        return "xmpp"
    return None


def hello_offsets(fwd: bytes, rev: bytes) -> tuple[int, int] | None:
    """Where a TLS ClientHello record starts in ``fwd`` and a ServerHello record in ``rev``, after
    some clear text (within :data:`STARTTLS_SEARCH` bytes), both with plausible lengths; None if not."""
    starts = []
    for data, mtype in ((fwd, 1), (rev, 2)):
        m = _HELLO_AT[mtype].search(data, 1, STARTTLS_SEARCH)
        if m is None:
            return None
        pos = m.start()
        rec_len = (data[pos + 3] << 8) | data[pos + 4]
        hs_len = int.from_bytes(data[pos + 6:pos + 9], "big")
        if rec_len < 38 or hs_len + 4 > rec_len or hs_len < 34:
            return None
        starts.append(pos)
    return starts[0], starts[1]


def detect(streams: FlowStreams | None) -> tuple[str, bool, bool]:
    """(app_protocol, http_connect, swap): ``swap`` when the payload shows src is the server."""
    if streams is None:
        return "none", False, False
    return detect_bytes(streams.fwd.data, streams.rev.data)


def detect_bytes(fwd: bytes, rev: bytes) -> tuple[str, bool, bool]:
    """:func:`detect` from the first bytes of each direction (initiator's first)."""
    if not fwd and not rev:
        return "none", False, False
    if fwd.startswith(b"SSH-") or rev.startswith(b"SSH-"):
        return "ssh", False, False
    if fwd.startswith(H2_PREFACE):
        return "http2", False, False
    if rev.startswith(H2_PREFACE):
        return "http2", False, True
    if tls_client_hello(fwd):
        return "tls", False, False
    if tls_client_hello(rev) and not tls_client_hello(fwd):
        return "tls", False, True
    if http_request(fwd):
        return "http", fwd.startswith(b"CONNECT "), False
    if http_request(rev):
        return "http", rev.startswith(b"CONNECT "), True
    if http_response(rev):
        return "http", False, False
    if http_response(fwd):
        return "http", False, True
    if tls_server_hello(fwd) and not tls_server_hello(rev):
        return "tls", False, True
    if tls_record(fwd) or tls_record(rev):
        return "tls", False, False
    if (fwd and h2_frames(fwd[:16384])) or (rev and h2_frames(rev[:16384])):
        return "http2", False, False
    if starttls_protocol(fwd, rev) is not None and hello_offsets(fwd, rev) is not None:
        return "tls", False, False              # upgraded in band (STARTTLS): Zeek logs both services
    return "unknown", False, False

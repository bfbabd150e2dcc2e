"""Bounded byte readers and TLS wire-format tables shared by the TLS, SSH and key-log parsers."""

from __future__ import annotations

import struct


class Truncated(Exception):
    """A field ran past the end of its enclosing structure (internal: callers mark partial)."""


class Reader:
    """Reads big-endian fields from a bytes slice; every read is bounds-checked."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else min(end, len(data))

    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise Truncated(f"field of {n} bytes at offset {self.pos} runs past {self.end}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u24(self) -> int:
        b = self.take(3)
        return (b[0] << 16) | (b[1] << 8) | b[2]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def vec(self, len_bytes: int) -> bytes:
        """A vector with a ``len_bytes``-byte big-endian length prefix."""
        pos, data = self.pos, self.data
        start = pos + len_bytes
        if start > self.end:
            raise Truncated(f"length of {len_bytes} bytes at offset {pos} runs past {self.end}")
        n = int.from_bytes(data[pos:start], "big")
        stop = start + n
        if stop > self.end:
            raise Truncated(f"field of {n} bytes at offset {start} runs past {self.end}")
        self.pos = stop
        return data[start:stop]

    def sub(self, len_bytes: int) -> "Reader":
        body = self.vec(len_bytes)
        return Reader(body)


#: Record header (content type, legacy version, length) as a table, dpkt style.
RECORD_HEADER = (("content_type", "B"), ("version", "H"), ("length", "H"))
RECORD_HEADER_FMT = ">" + "".join(f for _, f in RECORD_HEADER)
RECORD_HEADER_LEN = struct.calcsize(RECORD_HEADER_FMT)

CONTENT_CCS, CONTENT_ALERT, CONTENT_HANDSHAKE, CONTENT_APPDATA, CONTENT_HEARTBEAT = 20, 21, 22, 23, 24
CONTENT_TYPES = frozenset((CONTENT_CCS, CONTENT_ALERT, CONTENT_HANDSHAKE, CONTENT_APPDATA, CONTENT_HEARTBEAT))
MAX_RECORD_BODY = (1 << 14) + 2048   # TLSCiphertext limit (RFC 5246 6.2.3)

HS_HELLO_REQUEST, HS_CLIENT_HELLO, HS_SERVER_HELLO, HS_NEW_SESSION_TICKET = 0, 1, 2, 4
HS_ENCRYPTED_EXTENSIONS, HS_CERTIFICATE, HS_SERVER_KEY_EXCHANGE = 8, 11, 12
HS_CERTIFICATE_REQUEST, HS_SERVER_HELLO_DONE, HS_CERTIFICATE_VERIFY = 13, 14, 15
HS_CLIENT_KEY_EXCHANGE, HS_FINISHED = 16, 20

EXT_SERVER_NAME, EXT_SUPPORTED_GROUPS, EXT_SIGNATURE_ALGORITHMS, EXT_ALPN = 0, 10, 13, 16
EXT_SESSION_TICKET, EXT_PRE_SHARED_KEY, EXT_EARLY_DATA, EXT_SUPPORTED_VERSIONS = 35, 41, 42, 43
EXT_CERTIFICATE_AUTHORITIES, EXT_KEY_SHARE, EXT_EC_POINT_FORMATS = 47, 51, 11

#: ServerHello.random of a HelloRetryRequest (RFC 8446 4.1.3).
HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")

VERSION_NAMES = {
    0x0002: "SSL 2.0", 0x0200: "SSL 2.0", 0x0300: "SSL 3.0", 0x0301: "TLS 1.0",
    0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3",
    0xFEFF: "DTLS 1.0", 0xFEFD: "DTLS 1.2", 0xFEFC: "DTLS 1.3",
}


def is_grease(value: int) -> bool:
    """GREASE values (RFC 8701): 0x?A?A with equal bytes."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


def version_name(value: int | None) -> str | None:
    if value is None:
        return None
    if value in VERSION_NAMES:
        return VERSION_NAMES[value]
    if (value >> 8) == 0x7F:           # TLS 1.3 drafts
        return "TLS 1.3"
    return f"0x{value:04x}"


def version_rank(value: int) -> int:
    """Order versions so that drafts of 1.3 sort with 1.3 and DTLS sorts sensibly."""
    if (value >> 8) == 0x7F:
        return 0x0304
    return {0xFEFF: 0x0302, 0xFEFD: 0x0303, 0xFEFC: 0x0304, 0x0002: 0x0200}.get(value, value)

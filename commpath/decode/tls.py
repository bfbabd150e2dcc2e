"""TLS handshakes from the reassembled start of a connection: hellos, certificates, alerts, JA4, TLS 1.3 inference."""

from __future__ import annotations

import hashlib
import struct
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from ._fingerprints import EXT_ECH, JA4_VERSIONS, group_name, ja3, ja3s, ja4s, key_exchange_curve, server_extensions
from ._memo import BoundedMemo
from ._tls_tables import ALERTS, CIPHER_SUITES
from ._tls_wire import (
    CONTENT_ALERT, CONTENT_APPDATA, CONTENT_CCS, CONTENT_HANDSHAKE, CONTENT_TYPES,
    EXT_ALPN, EXT_CERTIFICATE_AUTHORITIES, EXT_EARLY_DATA, EXT_EC_POINT_FORMATS, EXT_KEY_SHARE,
    EXT_PRE_SHARED_KEY, EXT_SERVER_NAME, EXT_SESSION_TICKET, EXT_SIGNATURE_ALGORITHMS, EXT_SUPPORTED_GROUPS,
    EXT_SUPPORTED_VERSIONS, HRR_RANDOM, HS_CERTIFICATE,
    HS_CERTIFICATE_REQUEST, HS_CLIENT_HELLO, HS_CLIENT_KEY_EXCHANGE, HS_NEW_SESSION_TICKET,
    HS_SERVER_HELLO, HS_SERVER_HELLO_DONE, HS_SERVER_KEY_EXCHANGE, MAX_RECORD_BODY,
    RECORD_HEADER_FMT, RECORD_HEADER_LEN, Reader, Truncated, is_grease, version_name, version_rank,
)
from .streams import FlowStreams, Stream

_RECORD_HEADER = struct.Struct(RECORD_HEADER_FMT).unpack_from
_U16_PAIR = struct.Struct(">HH").unpack_from

#: Work bounds per connection: hostile input stops here and is marked partial.
MAX_RECORDS = 4096
MAX_MESSAGES = 256
MAX_EXTENSIONS = 512
MAX_CERTS = 16
MAX_ALERTS = 16
MAX_CAS = 64

#: Hash length of each TLS 1.3 cipher suite (for the Finished size).
TLS13_HASH_LEN = {0x1301: 32, 0x1302: 48, 0x1303: 32, 0x1304: 32, 0x1305: 32}
AEAD_TAG = 16
#: Smallest plausible Certificate message with one certificate (header, lists, a ~100-byte cert).
MIN_CERTIFICATE_MESSAGE = 4 + 1 + 3 + 3 + 100 + 2
#: Chrome's ALPS (application_settings) puts a client EncryptedExtensions into the flight.
ALPS_EXTENSIONS = frozenset((17513, 17613))
ALPS_MAX_EXTRA = 64


class Record(NamedTuple):
    """One TLS record: where it starts in the stream, its type, version and body."""

    offset: int
    content_type: int
    version: int
    body: bytes
    declared: int = -1          # length in the header; > len(body) when the record was cut

    @property
    def complete(self) -> bool:
        return self.declared < 0 or self.declared == len(self.body)

    @property
    def end(self) -> int:
        return self.offset + RECORD_HEADER_LEN + len(self.body)

    @property
    def header(self) -> bytes:
        return struct.pack(RECORD_HEADER_FMT, self.content_type, self.version, len(self.body))


class Message(NamedTuple):
    """One handshake message: its type (negative when cut: ``-type - 1``) and body."""

    msg_type: int
    body: bytes


@dataclass(slots=True)
class ClientHello:
    legacy_version: int = 0
    random: bytes = b""
    session_id: bytes = b""
    ciphers: list[int] = field(default_factory=list)
    extensions: list[int] = field(default_factory=list)
    sni: str | None = None
    alpn: list[str] = field(default_factory=list)
    alpn_raw: list[bytes] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    sig_algs: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    point_formats: list[int] = field(default_factory=list)
    ticket: bytes = b""
    early_data: bool = False
    psk: bool = False
    sslv2: bool = False


@dataclass(slots=True)
class ServerHello:
    legacy_version: int = 0
    random: bytes = b""
    session_id: bytes = b""
    cipher: int = 0
    selected_version: int | None = None
    alpn: str | None = None
    alpn_raw: bytes = b""
    psk: bool = False
    hrr: bool = False
    extensions: tuple[int, ...] = ()
    key_share_group: int | None = None

    @property
    def version(self) -> int:
        return self.selected_version or self.legacy_version


@dataclass(slots=True)
class TlsHandshake:
    """What the wire shows of one TLS handshake (fields named as in TLS_COLUMNS)."""

    flow_id: int
    tls_version: str | None = None
    client_versions: str | None = None
    sni: str | None = None
    alpn_offered: str | None = None
    alpn: str | None = None
    cipher: str | None = None
    cipher_id: int | None = None
    ja4: str | None = None
    hello_retry: bool = False
    resumed: bool = False
    established: bool = False
    cert_request: bool = False
    cert_request_cas: list[str] = field(default_factory=list)
    certs_visibility: str | None = None
    client_cert: str = "unknown"
    alerts: list[str] = field(default_factory=list)
    partial: bool = False
    parse_error: str | None = None
    handshake_frames: list[int] = field(default_factory=list)
    ja3: str | None = None
    ja3s: str | None = None
    ja4s: str | None = None
    kex_group: str | None = None
    ech: bool = False
    # not columns: material for certificates, verification and decryption, and for linking a
    # resumed session to the connection that issued it: (client sid, client ticket, server sid, NewSessionTicket)
    session: tuple | None = None
    server_chain: list[bytes] = field(default_factory=list)
    client_chain: list[bytes] = field(default_factory=list)
    client_random: bytes = b""
    version_id: int | None = None
    client_hello: ClientHello | None = None
    server_hello: ServerHello | None = None
    client_encrypted: list[Record] = field(default_factory=list)
    server_encrypted: list[Record] = field(default_factory=list)
    inference: str | None = None

    def error(self, message: str) -> None:
        """Mark the record partial and keep the first error message."""
        self.partial = True
        if self.parse_error is None:
            self.parse_error = message


# --------------------------------------------------------------------------- records

def looks_like_tls(data: bytes) -> bool:
    """A TLS record header (or an SSLv2 ClientHello) at the start of ``data``."""
    if len(data) >= 3 and data[0] in CONTENT_TYPES and data[1] in (3, 0xFE) and data[2] <= 4:
        return True
    return _is_sslv2_hello(data)


def find_starttls(flow: FlowStreams) -> tuple[FlowStreams, str] | None:
    """A TLS handshake that starts after some clear-text protocol bytes (STARTTLS in LDAP, SMTP, ...):
    the TLS part of the connection and the clear-text protocol's name ("unknown" when its words are
    not recognised). A ClientHello record must lie in the client's first bytes and a ServerHello
    record in the server's, both plausible (handshake length inside the record); None if not found.
    """
    from .appproto import hello_offsets, starttls_protocol
    from .http import sub_stream
    fwd, rev = flow.fwd.data, flow.rev.data
    at = hello_offsets(fwd, rev)
    if at is None:
        return None
    inner = FlowStreams(flow.flow_id, sub_stream(flow.fwd, at[0]), sub_stream(flow.rev, at[1]))
    return inner, starttls_protocol(fwd, rev) or "unknown"


def _is_sslv2_hello(data: bytes) -> bool:
    return len(data) >= 5 and bool(data[0] & 0x80) and data[2] == 1 and data[3] in (0, 2, 3)


def read_records(data: bytes, hs: TlsHandshake | None = None, direction: str = "",
                 max_appdata: int | None = None) -> list[Record]:
    """Split ``data`` into records; stops (marking ``hs``) at garbage, a lying length or the limit.

    ``max_appdata``: stop quietly after this many application-data records (the handshake
    analysis needs only the first few encrypted records of each direction).
    """
    out: list[Record] = []
    append = out.append
    pos, n = 0, len(data)
    appdata = 0
    most_appdata = (1 << 62) if max_appdata is None else max_appdata
    unpack, new = _RECORD_HEADER, tuple.__new__
    count = 0
    while pos + 5 <= n:
        if count >= MAX_RECORDS:
            if hs:
                hs.error(f"{direction}: more than {MAX_RECORDS} records")
            break
        ctype, version, length = unpack(data, pos)
        if ctype < 20 or ctype > 24 or ((version >> 8) != 3 and (version >> 8) != 0xFE):
            if hs:
                hs.error(f"{direction}: not a TLS record at offset {pos}")
            break
        if length > MAX_RECORD_BODY:
            if hs:
                hs.error(f"{direction}: record length {length} at offset {pos} exceeds the maximum")
            break
        body_end = pos + 5 + length
        if body_end > n:
            # the rest of the record was not captured (gap, limit or a lying length)
            append(new(Record, (pos, ctype, version, data[pos + 5:n], length)))
            break
        append(new(Record, (pos, ctype, version, data[pos + 5:body_end], -1)))
        count += 1
        pos = body_end
        if ctype == 23:
            appdata += 1
            if appdata >= most_appdata:
                break
    return out


def handshake_messages(records: list[Record], hs: TlsHandshake, direction: str,
                       continue_after_ccs: bool) -> tuple[list[Message], int]:
    """Plaintext handshake messages of one direction, reassembled across records.

    Returns the messages and the index of the first record that is not plaintext
    handshake (encrypted data, or anything after ChangeCipherSpec for TLS <= 1.2).
    """
    parts = []
    stop = len(records)
    i = 0
    for rec in records:
        ctype = rec[1]
        if ctype == CONTENT_HANDSHAKE:
            parts.append(rec[3])
        elif ctype == CONTENT_CCS:
            if not continue_after_ccs:
                stop = i
                break
        elif ctype == CONTENT_APPDATA:
            stop = i
            break
        i += 1
    msgs: list[Message] = []
    append, new = msgs.append, tuple.__new__
    pos = 0
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    n = len(data)
    count = 0
    while pos + 4 <= n:
        if count >= MAX_MESSAGES:
            hs.error(f"{direction}: more than {MAX_MESSAGES} handshake messages")
            break
        mtype = data[pos]
        end = pos + 4 + ((data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3])
        if end > n:
            append(new(Message, (-mtype - 1, data[pos + 4:])))   # negative type: incomplete
            break
        append(new(Message, (mtype, data[pos + 4:end])))
        count += 1
        pos = end
    return msgs, stop


# --------------------------------------------------------------------------- hellos

def _extension_block(body: bytes, pos: int, hs: TlsHandshake, who: str, wanted: frozenset[int],
                     cut: bool = False) -> tuple[list[int], dict[int, bytes]]:
    """Extension types in order, and the bodies of the ``wanted`` ones, from the block at ``body[pos:]``
    (``cut``: the message was cut short, so the extensions captured whole are read and the rest left)."""
    end = len(body)
    if pos == end:
        return [], {}
    start = pos + 2
    if start > end:
        raise Truncated(f"length of 2 bytes at offset {pos} runs past {end}")
    n = (body[pos] << 8) | body[pos + 1]
    stop = start + n
    if stop > end:
        if not cut:
            raise Truncated(f"field of {n} bytes at offset {start} runs past {end}")
        stop = end
    types: list[int] = []
    bodies: dict[int, bytes] = {}
    append, unpack = types.append, _U16_PAIR
    p = start
    count = 0
    while p + 4 <= stop:
        etype, elen = unpack(body, p)
        append(etype)
        count += 1
        nxt = p + 4 + elen
        if etype in wanted and etype not in bodies:
            bodies[etype] = body[p + 4:nxt if nxt < stop else stop]
        p = nxt
        if count >= MAX_EXTENSIONS and p < stop:
            hs.error(f"{who}: more than {MAX_EXTENSIONS} extensions, the rest ignored")
            return types, bodies
    if p != stop:
        hs.error(f"{who}: extensions run past their block ({p - start} of {n} bytes)")
        if p > stop and types:
            bodies.pop(types[-1], None)
    return types, bodies


def _u16_list(raw: bytes) -> list[int]:
    """Big-endian 16-bit values of ``raw`` (an odd last byte ignored); lists that repeat are decoded once."""
    values = _U16_LISTS.get(raw)
    if values is None:
        k = len(raw) // 2
        values = struct.unpack(f">{k}H", raw[:k * 2])
        if len(raw) <= CACHED_ITEM_BYTES:
            _U16_LISTS.remember(raw, values)
    return list(values)


#: Caches across connections hold only items up to this size (hostile lists are not kept).
CACHED_ITEM_BYTES = 512
_U16_LISTS: BoundedMemo = BoundedMemo(4096)


_CH_PARSED = frozenset((EXT_SERVER_NAME, EXT_ALPN, EXT_SUPPORTED_VERSIONS, EXT_SIGNATURE_ALGORITHMS,
                        EXT_SUPPORTED_GROUPS, EXT_EC_POINT_FORMATS, EXT_SESSION_TICKET))


def parse_client_hello(body: bytes, hs: TlsHandshake, cut: bool = False) -> ClientHello:
    """A ClientHello's fields; of one ``cut`` short, those of the extensions captured whole (a padded
    hello past the capture window still shows its SNI)."""
    ch = ClientHello()
    n = len(body)
    try:
        if n < 35:
            raise Truncated(f"{n} bytes")
        ch.legacy_version = (body[0] << 8) | body[1]
        ch.random = body[2:34]
        pos = 35 + body[34]
        ch.session_id = body[35:pos]
        if pos + 2 > n:
            raise Truncated("cipher suites run past the message")
        cs_len = (body[pos] << 8) | body[pos + 1]
        pos += 2
        if pos + cs_len + 1 > n:
            raise Truncated(f"cipher suites of {cs_len} bytes run past {n}")
        ch.ciphers = _u16_list(body[pos:pos + cs_len])
        pos += cs_len
        pos += 1 + body[pos]                       # compression methods
        if pos > n:
            raise Truncated("compression methods run past the message")
        ch.extensions, bodies = _extension_block(body, pos, hs, "ClientHello", _CH_PARSED, cut)
    except Truncated as exc:
        hs.error(f"ClientHello: {exc}")
        return ch
    ch.ticket = bodies.pop(EXT_SESSION_TICKET, b"")
    for etype, data in bodies.items():
        if not data:
            continue
        # fast paths: the well-formed shape of each extension; anything else takes the general walk
        n = len(data)
        if etype == EXT_SERVER_NAME:
            if n >= 5 and data[2] == 0 and ((data[0] << 8) | data[1]) == n - 2 \
                    and ((data[3] << 8) | data[4]) == n - 5:
                ch.sni = data[5:].decode("ascii", "replace")
                continue
        elif etype == EXT_SUPPORTED_VERSIONS:
            if data[0] < n:
                ch.versions = _u16_list(data[1:1 + data[0]])
                continue
        elif etype == EXT_SIGNATURE_ALGORITHMS:
            if n >= 2 and ((data[0] << 8) | data[1]) <= n - 2:
                ch.sig_algs = _u16_list(data[2:2 + ((data[0] << 8) | data[1])])
                continue
        elif etype == EXT_SUPPORTED_GROUPS:
            if n >= 2 and ((data[0] << 8) | data[1]) == n - 2 and n % 2 == 0:
                ch.groups = _u16_list(data[2:])
                continue
            hs.error(f"ClientHello extension {etype}: malformed supported_groups")
            continue
        elif etype == EXT_EC_POINT_FORMATS:
            if data[0] == n - 1:
                ch.point_formats = list(data[1:])
                continue
            hs.error(f"ClientHello extension {etype}: malformed ec_point_formats")
            continue
        elif etype == EXT_ALPN:
            if n >= 2 and ((data[0] << 8) | data[1]) == n - 2:
                p, raw = 2, []
                while p < n:
                    q = p + 1 + data[p]
                    if q > n:
                        break
                    raw.append(data[p + 1:q])
                    p = q
                if p == n:
                    ch.alpn_raw = raw
                    ch.alpn = [a.decode("ascii", "replace") for a in raw]
                    continue
        try:
            e = Reader(data)
            if etype == EXT_SERVER_NAME:
                names = e.sub(2)
                while names.remaining() > 0:
                    ntype, name = names.u8(), names.vec(2)
                    if ntype == 0 and ch.sni is None:
                        ch.sni = name.decode("ascii", "replace")
            elif etype == EXT_ALPN:
                protos = e.sub(2)
                while protos.remaining() > 0:
                    p = protos.vec(1)
                    ch.alpn_raw.append(p)
                    ch.alpn.append(p.decode("ascii", "replace"))
            elif etype == EXT_SUPPORTED_VERSIONS:
                vs = e.vec(1)
                ch.versions = list(struct.unpack(f">{len(vs) // 2}H", vs[:len(vs) // 2 * 2]))
            elif etype == EXT_SIGNATURE_ALGORITHMS:
                sa = e.vec(2)
                ch.sig_algs = list(struct.unpack(f">{len(sa) // 2}H", sa[:len(sa) // 2 * 2]))
        except Truncated as exc:
            hs.error(f"ClientHello extension {etype}: {exc}")
    ch.early_data = EXT_EARLY_DATA in ch.extensions
    ch.psk = EXT_PRE_SHARED_KEY in ch.extensions
    return ch


def parse_sslv2_client_hello(data: bytes, hs: TlsHandshake) -> ClientHello:
    """An SSLv2-format ClientHello (old clients offering SSL 3.0/TLS in a v2 wrapper)."""
    ch = ClientHello(sslv2=True)
    length = ((data[0] & 0x7F) << 8) | data[1]
    r = Reader(data, 2, 2 + length)
    try:
        r.u8()
        ch.legacy_version = r.u16()
        cs_len, sid_len, chal_len = r.u16(), r.u16(), r.u16()
        specs = r.take(cs_len)
        ch.session_id = r.take(sid_len)
        challenge = r.take(chal_len)
        ch.random = challenge.rjust(32, b"\0")[-32:]
        ch.ciphers = [int.from_bytes(specs[i:i + 3], "big") for i in range(0, len(specs) - 2, 3)]
        ch.ciphers = [c for c in ch.ciphers if c <= 0xFFFF]   # v2 specs > 0xFFFF are SSLv2-only
    except Truncated as exc:
        hs.error(f"SSLv2 ClientHello: {exc}")
    return ch


_SH_PARSED = frozenset((EXT_SUPPORTED_VERSIONS, EXT_ALPN, EXT_KEY_SHARE))
_CR_PARSED = frozenset((EXT_CERTIFICATE_AUTHORITIES,))


def parse_server_hello(body: bytes, hs: TlsHandshake) -> ServerHello:
    sh = ServerHello()
    n = len(body)
    try:
        if n < 35:
            raise Truncated(f"{n} bytes")
        sh.legacy_version = (body[0] << 8) | body[1]
        sh.random = body[2:34]
        sh.hrr = sh.random == HRR_RANDOM
        sid_len = body[34]
        pos = 35 + sid_len
        if pos + 3 > n:
            raise Truncated(f"session id of {sid_len} bytes runs past {n}")
        sh.session_id = body[35:pos]
        sh.cipher = (body[pos] << 8) | body[pos + 1]
        types, bodies = _extension_block(body, pos + 3, hs, "ServerHello", _SH_PARSED)
    except Truncated as exc:
        hs.error(f"ServerHello: {exc}")
        return sh
    data = bodies.get(EXT_SUPPORTED_VERSIONS, b"")
    if len(data) >= 2:
        sh.selected_version = (data[0] << 8) | data[1]
    data = bodies.get(EXT_ALPN, b"")
    if len(data) >= 3:
        sh.alpn_raw = data[3:3 + data[2]]
        sh.alpn = sh.alpn_raw.decode("ascii", "replace")
    sh.psk = EXT_PRE_SHARED_KEY in types
    sh.extensions = tuple(types)
    data = bodies.get(EXT_KEY_SHARE, b"")
    if len(data) >= 2:
        sh.key_share_group = (data[0] << 8) | data[1]
    return sh


# --------------------------------------------------------------------------- certificates

def parse_certificate_list(body: bytes, hs: TlsHandshake, tls13: bool, who: str) -> list[bytes]:
    """DER certificates of a Certificate message (TLS 1.3 form has a context and extensions)."""
    key = (body, tls13)
    certs = _CERT_LISTS.get(key)
    if certs is None:
        certs = _well_formed_certificate_list(body, tls13)
        if certs is None:
            return _parse_certificate_list(body, hs, tls13, who)
        if len(body) <= CACHED_CERTIFICATE_MESSAGE:
            _CERT_LISTS.remember(key, certs)
    return list(certs)


#: Well-formed Certificate messages seen before: servers send the same chain on every connection,
#: and handing back the same DER objects makes later lookups by certificate cheap.
#: At most 256 messages of up to 16 KiB each are kept.
CACHED_CERTIFICATE_MESSAGE = 16384
_CERT_LISTS: BoundedMemo = BoundedMemo(256)


def _well_formed_certificate_list(body: bytes, tls13: bool) -> tuple[bytes, ...] | None:
    """The certificates of a Certificate message that has nothing to report; None otherwise."""
    n = len(body)
    p = 0
    if tls13:
        if n < 1:
            return None
        p = 1 + body[0]
    if p + 3 > n:
        return None
    stop = p + 3 + ((body[p] << 16) | (body[p + 1] << 8) | body[p + 2])
    if stop > n:
        return None
    p += 3
    certs = []
    while p < stop:
        if len(certs) >= MAX_CERTS or p + 3 > stop:
            return None
        q = p + 3 + ((body[p] << 16) | (body[p + 1] << 8) | body[p + 2])
        if q > stop:
            return None
        certs.append(body[p + 3:q])
        p = q
        if tls13:
            if p + 2 > stop:
                return None
            p += 2 + ((body[p] << 8) | body[p + 1])
            if p > stop:
                return None
    return tuple(certs)


def _parse_certificate_list(body: bytes, hs: TlsHandshake, tls13: bool, who: str) -> list[bytes]:
    r = Reader(body)
    certs: list[bytes] = []
    try:
        if tls13:
            r.vec(1)                                    # certificate_request_context
        declared = r.u24()
        lst = Reader(r.data, r.pos, r.pos + declared)   # a cut message keeps its complete certs
        if declared > r.remaining():
            hs.error(f"{who} Certificate: list of {declared} bytes, {r.remaining()} captured")
        while lst.remaining() > 0:
            if len(certs) >= MAX_CERTS:
                hs.error(f"{who} Certificate: more than {MAX_CERTS} certificates, the rest ignored")
                break
            certs.append(lst.vec(3))
            if tls13:
                lst.vec(2)                              # per-certificate extensions
    except Truncated as exc:
        hs.error(f"{who} Certificate: {exc}")
    return certs


def _dn_text(der: bytes) -> str:
    from .x509 import name_from_der
    return name_from_der(der)


def parse_certificate_request(body: bytes, hs: TlsHandshake, version: int) -> list[str]:
    """CA distinguished names listed in a CertificateRequest."""
    key = (body, version)
    names = _CERT_REQUESTS.get(key)
    if names is None:
        errors = _ErrorLog()
        names = _parse_certificate_request(body, errors, version)
        if errors.messages:
            for message in errors.messages:
                hs.error(message)
            return names
        if len(body) <= CACHED_CERTIFICATE_MESSAGE:
            _CERT_REQUESTS.remember(key, tuple(names))
    return list(names)


#: Error-free CertificateRequests seen before (servers send the same one on every connection).
_CERT_REQUESTS: BoundedMemo = BoundedMemo(256)


class _ErrorLog:
    """Collects the errors a parser reports, to pass them on."""

    __slots__ = ("messages",)

    def __init__(self):
        self.messages: list[str] = []

    def error(self, message: str) -> None:
        self.messages.append(message)


def _parse_certificate_request(body: bytes, hs: TlsHandshake, version: int) -> list[str]:
    r = Reader(body)
    names: list[bytes] = []
    try:
        if version >= 0x0304:
            r.vec(1)                                    # context
            _, bodies = _extension_block(body, r.pos, hs, "CertificateRequest", _CR_PARSED)
            if EXT_CERTIFICATE_AUTHORITIES in bodies:
                cas = Reader(bodies[EXT_CERTIFICATE_AUTHORITIES]).sub(2)
                while cas.remaining() > 0 and len(names) < MAX_CAS:
                    names.append(cas.vec(2))
        else:
            r.vec(1)                                    # certificate types
            if version >= 0x0303:
                r.vec(2)                                # signature algorithms
            cas = r.sub(2)
            while cas.remaining() > 0 and len(names) < MAX_CAS:
                names.append(cas.vec(2))
    except Truncated as exc:
        hs.error(f"CertificateRequest: {exc}")
    return [_dn_text(n) for n in names]


# --------------------------------------------------------------------------- JA4

_JA4_VERSIONS = JA4_VERSIONS


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12] if text else "000000000000"


def ja4(ch: ClientHello, transport: str = "t") -> str:
    """JA4 TLS client fingerprint (FoxIO JA4 specification)."""
    args = (tuple(ch.versions), ch.legacy_version, tuple(ch.ciphers), tuple(ch.extensions),
            ch.alpn_raw[0] if ch.alpn_raw else b"", tuple(ch.sig_algs), transport)
    if len(args[2]) + len(args[3]) + len(args[5]) + len(args[0]) > CACHED_ITEM_BYTES // 2:
        return _ja4.__wrapped__(*args)              # hostile-sized lists are not kept in the cache
    return _ja4(*args)


@lru_cache(maxsize=4096)
def _ja4(all_versions, legacy_version, all_ciphers, all_exts, first_alpn, all_sigs, transport) -> str:
    versions = [v for v in all_versions if not is_grease(v)]
    top = max(versions, key=version_rank) if versions else legacy_version
    ver = _JA4_VERSIONS.get(0x0304 if (top >> 8) == 0x7F else top, "00")
    ciphers = [c for c in all_ciphers if not is_grease(c)]
    exts = [e for e in all_exts if not is_grease(e)]
    alpn = "00"
    if first_alpn:
        a = first_alpn
        first, last = chr(a[0]), chr(a[-1])
        if first.isascii() and first.isalnum() and last.isascii() and last.isalnum():
            alpn = first + last
        else:
            h = a.hex()
            alpn = h[0] + h[-1]
    head = f"{transport}{ver}{'d' if EXT_SERVER_NAME in exts else 'i'}" \
           f"{min(len(ciphers), 99):02d}{min(len(exts), 99):02d}{alpn}"
    part_b = _sha12(",".join(f"{c:04x}" for c in sorted(ciphers)))
    ext_text = ",".join(f"{e:04x}" for e in sorted(exts) if e not in (EXT_SERVER_NAME, EXT_ALPN))
    sigs = [s for s in all_sigs if not is_grease(s)]
    if sigs and ext_text:
        ext_text += "_" + ",".join(f"{s:04x}" for s in sigs)
    return f"{head}_{part_b}_{_sha12(ext_text)}"


# --------------------------------------------------------------------------- whole handshake

def _alerts(records: list[Record], hs: TlsHandshake, who: str, encrypted_from: int) -> bool:
    """Collect clear-text alerts; returns True when a fatal alert was seen."""
    fatal = False
    for i, rec in enumerate(records):
        if rec.content_type != CONTENT_ALERT or len(hs.alerts) >= MAX_ALERTS:
            continue
        if i >= encrypted_from or len(rec.body) != 2:
            hs.alerts.append(f"encrypted:{who}")
            if i < encrypted_from:
                fatal = True
            continue
        level, desc = rec.body[0], rec.body[1]
        lvl = {1: "warning", 2: "fatal"}.get(level, str(level))
        hs.alerts.append(f"{lvl}:{ALERTS.get(desc, str(desc))}")
        fatal = fatal or level == 2 or desc not in (0, 90, 100)
    return fatal


def _add_frames(out: set[int], stream: Stream, records: list[Record], types) -> None:
    """Add to ``out`` the frames that carried the records of the given types.

    Each record covers the segments ``[i, j)`` (by index); overlapping or touching index ranges
    are merged before their frames are added, which gives the same set with fewer updates.
    """
    offs = stream.offsets
    if not offs:
        return
    frames = stream.frames
    lo = hi = -1
    for r in records:
        if r[1] in types:
            off = r[0]
            i = bisect_right(offs, off) - 1
            if i < 0:
                i = 0
            j = bisect_right(offs, off + 4 + len(r[3]))
            if lo <= i <= hi:
                if j > hi:
                    hi = j
            else:
                if hi > lo:
                    out.update(frames[lo:hi])
                lo, hi = i, j
    if hi > lo:
        out.update(frames[lo:hi])


def parse_tls(flow: FlowStreams, max_appdata: int = 4) -> TlsHandshake:
    """Parse both directions of a TLS connection; never raises on hostile input.

    ``max_appdata``: encrypted records kept per direction (more are needed to decrypt with a key log).
    """
    hs = TlsHandshake(flow_id=flow.flow_id)
    try:
        _parse(flow.fwd, flow.rev, hs, max_appdata)
    except (Truncated, ValueError, IndexError, struct.error) as exc:     # defensive: still a record
        hs.error(f"unexpected structure: {exc}")
    return hs


def _parse(cli: Stream, srv: Stream, hs: TlsHandshake, max_appdata: int = 4) -> None:
    # ---- client side: the first plaintext messages (ClientHello, possibly a second one after HRR)
    ch: ClientHello | None = None
    if _is_sslv2_hello(cli.data):
        ch = parse_sslv2_client_hello(cli.data, hs)
        length = ((cli.data[0] & 0x7F) << 8) | cli.data[1]
        crecs = read_records(cli.data[2 + length:], hs, "client", max_appdata)
        crecs = [Record(r.offset + 2 + length, r.content_type, r.version, r.body, r.declared)
                 for r in crecs]
    else:
        crecs = read_records(cli.data, hs, "client", max_appdata)
    srecs = read_records(srv.data, hs, "server", max_appdata)
    if not crecs and ch is None and not srecs:
        hs.error("no TLS records")
        return

    smsgs_all, sstop = handshake_messages(srecs, hs, "server", continue_after_ccs=False)
    hellos = _server_hellos(smsgs_all, hs)
    tls13 = bool(hellos) and version_rank(hellos[0].version) >= 0x0304
    if tls13:
        # TLS 1.3: compatibility ChangeCipherSpec records may sit between HRR and ServerHello
        more = sstop
        while more < len(srecs) and srecs[more].content_type != CONTENT_APPDATA:
            more += 1
        if any(r.content_type == CONTENT_HANDSHAKE for r in srecs[sstop:more]):
            smsgs_all, sstop = handshake_messages(srecs, hs, "server", continue_after_ccs=True)
            hellos = _server_hellos(smsgs_all, hs)
        else:
            sstop = more
    sh: ServerHello | None = None
    if hellos:
        hs.hello_retry = hellos[0].hrr
        sh = next((h for h in hellos if not h.hrr), None)
        hs.server_hello = sh or hellos[0]
    cmsgs, cstop = handshake_messages(crecs, hs, "client", continue_after_ccs=tls13)

    # ---- ClientHello
    cut_hello = False
    if ch is None:
        first = next((m for m in cmsgs if m[0] == HS_CLIENT_HELLO or m[0] == -HS_CLIENT_HELLO - 1), None)
        if first is not None:
            if first.msg_type < 0:
                hs.error("client: ClientHello incomplete" + _window_note(cli))
            ch = parse_client_hello(first.body, hs, cut=first.msg_type < 0)
            cut_hello = first.msg_type < 0
    if ch is not None:
        hs.client_hello = ch
        hs.client_random = ch.random
        hs.client_versions = _client_versions(tuple(ch.versions), ch.legacy_version)
        hs.sni = ch.sni
        hs.alpn_offered = ",".join(ch.alpn) if ch.alpn else None
        hs.ech = EXT_ECH in ch.extensions
        if not cut_hello:                            # a fingerprint of part of the hello would mislead
            hs.ja4 = ja4(ch)
        if not ch.sslv2 and not cut_hello:
            hs.ja3 = ja3(ch.legacy_version, tuple(ch.ciphers), tuple(ch.extensions), tuple(ch.groups),
                         tuple(ch.point_formats))
    elif crecs and crecs[0].content_type == CONTENT_APPDATA:
        hs.error("handshake not captured: the connection started before the capture")
    else:
        hs.error("no ClientHello")

    # ---- ServerHello
    if sh is not None:
        hs.version_id = sh.version
        hs.tls_version = version_name(sh.version)
        hs.cipher_id = sh.cipher
        hs.cipher = CIPHER_SUITES.get(sh.cipher) or f"0x{sh.cipher:04X}"
        hs.alpn = sh.alpn
        hs.ja3s = ja3s(sh.legacy_version, sh.cipher, sh.extensions)
        hs.ja4s = ja4s(sh.version, sh.cipher, sh.extensions, sh.alpn_raw)
        hs.kex_group = group_name(sh.key_share_group)
    elif hellos:                                     # HRR seen but not the real ServerHello
        hs.version_id = hellos[0].version
        hs.tls_version = version_name(hellos[0].version)
        hs.error("server: ServerHello after HelloRetryRequest not seen")
    for m in smsgs_all:
        if m[0] < 0:
            hs.error(f"server: handshake message type {-m[0] - 1} incomplete" + _window_note(srv))

    ctypes = [r[1] for r in crecs]
    stypes = [r[1] for r in srecs]
    cfatal = CONTENT_ALERT in ctypes and _alerts(crecs, hs, "client", _first_encrypted(crecs, tls13))
    sfatal = CONTENT_ALERT in stypes and _alerts(srecs, hs, "server", _first_encrypted(srecs, tls13))
    frames: set[int] = set()
    _add_frames(frames, cli, crecs, _FRAMED)
    _add_frames(frames, srv, srecs, _FRAMED)
    hs.handshake_frames = sorted(frames)
    if sh is None:
        hs.certs_visibility = None
        if ch is not None and (srv.gap or srv.limited or not srv.data):
            hs.error("server: no ServerHello captured")
        return

    if tls13:
        _finish_tls13(hs, ch, sh, crecs, srecs, cstop, sstop, cfatal or sfatal)
    else:
        _finish_tls12(hs, ch, sh, cmsgs, smsgs_all, CONTENT_CCS in ctypes, CONTENT_CCS in stypes,
                      cfatal or sfatal)


_FRAMED = frozenset((CONTENT_HANDSHAKE, CONTENT_CCS, CONTENT_ALERT))


def _window_note(stream: Stream) -> str:
    """Why a message is incomplete, when the per-direction capture window (read's payload_limit) cut it."""
    if stream.limited:
        return f" (cut by the capture window: only the first {len(stream.data)} bytes of each direction are " \
               f"kept; read(payload_limit=...) keeps more)"
    return ""


@lru_cache(maxsize=1024)
def _client_versions(versions: tuple[int, ...], legacy_version: int) -> str:
    """The offered versions as text, highest first (GREASE left out)."""
    offered = [v for v in versions if not is_grease(v)] or [legacy_version]
    offered = sorted(set(offered), key=version_rank, reverse=True)
    return ",".join(version_name(v) for v in offered)


def _server_hellos(msgs: list[Message], hs: TlsHandshake) -> list[ServerHello]:
    return [parse_server_hello(body, hs) for mtype, body in msgs if mtype == HS_SERVER_HELLO][:2]


def _first_encrypted(records: list[Record], tls13: bool) -> int:
    """Index of the first record protected by negotiated keys in this direction."""
    for i, rec in enumerate(records):
        if rec.content_type == CONTENT_APPDATA:
            return i
        if rec.content_type == CONTENT_CCS and not tls13:
            return i + 1
    return len(records)


def _finish_tls12(hs, ch, sh, cmsgs, smsgs, client_ccs: bool, server_ccs: bool, fatal: bool) -> None:
    hs.certs_visibility = "visible"
    stypes = [m[0] for m in smsgs]
    full = HS_CERTIFICATE in stypes or HS_SERVER_KEY_EXCHANGE in stypes or HS_SERVER_HELLO_DONE in stypes
    # abbreviated handshake: the server's ChangeCipherSpec follows its ServerHello directly.
    # An echoed session id alone is not proof (some servers echo it on full handshakes), so it
    # only counts when the server's flight was cut before either shape could be seen.
    hs.resumed = server_ccs and not full
    if not server_ccs and not full and ch is not None and ch.session_id and sh.session_id == ch.session_id:
        hs.resumed = True
    ticket = b""
    for mtype, body in smsgs:
        if mtype == HS_CERTIFICATE or mtype == -HS_CERTIFICATE - 1:
            hs.server_chain = parse_certificate_list(body, hs, False, "server")
        elif mtype == HS_CERTIFICATE_REQUEST:
            hs.cert_request = True
            hs.cert_request_cas = parse_certificate_request(body, hs, sh.version)
        elif mtype == HS_SERVER_KEY_EXCHANGE and hs.kex_group is None:
            hs.kex_group = group_name(key_exchange_curve(body))
        elif mtype == HS_NEW_SESSION_TICKET and not ticket:
            ticket = body
    client_cert_msg = None
    saw_cke = False
    for m in cmsgs:
        if m[0] == HS_CERTIFICATE:
            client_cert_msg = m
        elif m[0] == HS_CLIENT_KEY_EXCHANGE:
            saw_cke = True
    if client_cert_msg is not None:
        hs.client_chain = parse_certificate_list(client_cert_msg.body, hs, False, "client")
    if hs.resumed:
        hs.client_cert = "unknown"          # authentication happened in an earlier session
    elif hs.cert_request:
        if client_cert_msg is not None:
            hs.client_cert = "presented" if hs.client_chain else "empty"
        elif saw_cke:
            hs.client_cert = "empty"        # SSL 3.0 clients answer with a no_certificate alert
        else:
            hs.client_cert = "unknown"
    elif HS_SERVER_HELLO_DONE in stypes:
        hs.client_cert = "not-requested"
    else:
        hs.client_cert = "unknown"
    hs.established = server_ccs and client_ccs and not fatal
    if ch is not None:
        hs.session = (ch.session_id, ch.ticket, sh.session_id, ticket)


def _finish_tls13(hs, ch, sh, crecs, srecs, cstop, sstop, fatal: bool) -> None:
    hs.certs_visibility = "not-visible"
    hs.resumed = sh.psk
    hs.client_encrypted = [r for r in crecs[cstop:] if r.content_type == CONTENT_APPDATA][:64]
    hs.server_encrypted = [r for r in srecs[sstop:] if r.content_type == CONTENT_APPDATA][:64]
    hs.client_cert = infer_client_cert(hs, ch, sh)
    first_client = len(hs.client_encrypted[0].body) if hs.client_encrypted else None
    encrypted_alert = first_client == 2 + 1 + AEAD_TAG
    if encrypted_alert:
        hs.alerts.append("encrypted:client")
    hs.established = bool(hs.server_encrypted) and bool(hs.client_encrypted) \
        and not fatal and not encrypted_alert


def infer_client_cert(hs: TlsHandshake, ch: ClientHello | None, sh: ServerHello) -> str:
    """TLS 1.3: did the client send a certificate? Judged from its encrypted handshake flight.

    The client's flight after the server's is, in handshake-key records: [Certificate,
    CertificateVerify], Finished. Finished alone has a fixed size (hash length + 4 bytes of
    header + 1 content-type byte + 16 bytes of AEAD tag); an empty Certificate adds 8 bytes.
    Application data uses other keys, so it never shares a record with the flight.
    Chrome's ALPS adds a small client EncryptedExtensions to the flight.
    Limits: record padding, 0-RTT early data and post-handshake authentication defeat it;
    the server's CertificateRequest itself stays invisible.
    """
    alps = ch is not None and any(e in ALPS_EXTENSIONS for e in ch.extensions)
    verdict, hs.inference = client_cert_tls13(
        sh.psk, ch is not None and ch.early_data, sh.cipher, alps,
        tuple(len(r.body) for r in hs.client_encrypted[:3]), record_sizes_complete(hs.client_encrypted[:2]))
    return verdict


@lru_cache(maxsize=1024)
def client_cert_tls13(psk: bool, early_data: bool, cipher: int, alps: bool, sizes: tuple[int, ...],
                      complete: bool) -> tuple[str, str]:
    """:func:`infer_client_cert` from the facts it needs: (verdict, how it was decided).

    ``sizes``: body lengths of the client's first (up to 3) encrypted records; ``complete``:
    the first two of them were captured whole."""
    if psk:
        return "not-requested", "PSK resumption: servers must not request certificates (RFC 8446 4.3.2)"
    if early_data:
        return "unknown", "0-RTT early data offered: the flight cannot be told apart"
    hash_len = TLS13_HASH_LEN.get(cipher)
    if hash_len is None or not sizes:
        return "unknown", "client flight not seen" if hash_len else "unknown TLS 1.3 cipher"
    finished = hash_len + 4 + 1 + AEAD_TAG
    empty_cert = 8 + 1 + AEAD_TAG
    if not complete:
        return "unknown", "client flight truncated"
    first = sizes[0]
    second = sizes[1] if len(sizes) > 1 else None
    if first == 2 + 1 + AEAD_TAG:
        return "unknown", "client answered with an encrypted alert"
    if first == finished:
        return "inferred-absent", f"first client record = Finished alone ({finished} bytes)"
    if first == empty_cert and second == finished:
        return "inferred-absent", "empty Certificate record, then Finished"
    if first == finished + 8:
        return "inferred-absent", "empty Certificate and Finished in one record"
    if alps and finished < first <= finished + 8 + ALPS_MAX_EXTRA:
        return "inferred-absent", f"client EncryptedExtensions (ALPS) and Finished in {first} bytes"
    if first - 1 - AEAD_TAG >= MIN_CERTIFICATE_MESSAGE and first > finished + 8 + (ALPS_MAX_EXTRA if alps else 0):
        return "inferred-presented", \
            f"first client record {first} bytes: a Certificate message (Finished alone is {finished})"
    return "unknown", f"first client record {first} bytes fits no known flight (Finished alone is {finished})"


def record_sizes_complete(records: list[Record]) -> bool:
    return all(r.complete for r in records)

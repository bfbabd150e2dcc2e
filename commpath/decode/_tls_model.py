"""The TLS records, messages, hellos and handshake record the parsers fill in, and their work bounds."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from ._tls_wire import RECORD_HEADER_FMT, RECORD_HEADER_LEN

#: Work bounds per connection: hostile input stops here and is marked partial.
MAX_RECORDS = 4096
MAX_MESSAGES = 256
MAX_EXTENSIONS = 512
MAX_CERTS = 16
MAX_ALERTS = 16
MAX_CAS = 64


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

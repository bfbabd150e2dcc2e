"""TLS handshakes from the reassembled start of a connection: hellos, certificates, alerts, JA4, TLS 1.3 inference."""

from __future__ import annotations

import struct
from bisect import bisect_right

from ._fingerprints import EXT_ECH, group_name, ja3, ja3s, ja4s, key_exchange_curve
from ._tls13_client_cert import AEAD_TAG, client_cert_tls13, infer_client_cert, record_sizes_complete
from ._tls_certmsg import parse_certificate_list, parse_certificate_request
from ._tls_hello import client_versions, ja4, parse_client_hello, parse_server_hello, parse_sslv2_client_hello
from ._tls_model import (
    MAX_ALERTS, MAX_CAS, MAX_CERTS, MAX_EXTENSIONS, MAX_MESSAGES, MAX_RECORDS, ClientHello, Message, Record,
    ServerHello, TlsHandshake,
)
from ._tls_records import handshake_messages, is_sslv2_hello, looks_like_tls, read_records
from ._tls_tables import ALERTS, CIPHER_SUITES
from ._tls_wire import (
    CONTENT_ALERT, CONTENT_APPDATA, CONTENT_CCS, CONTENT_HANDSHAKE, HS_CERTIFICATE, HS_CERTIFICATE_REQUEST,
    HS_CLIENT_HELLO, HS_CLIENT_KEY_EXCHANGE, HS_NEW_SESSION_TICKET, HS_SERVER_HELLO, HS_SERVER_HELLO_DONE,
    HS_SERVER_KEY_EXCHANGE, Truncated, version_name, version_rank,
)
from .streams import FlowStreams, Stream

__all__ = [
    "MAX_ALERTS", "MAX_CAS", "MAX_CERTS", "MAX_EXTENSIONS", "MAX_MESSAGES", "MAX_RECORDS", "ClientHello", "Message",
    "Record", "ServerHello", "TlsHandshake", "client_cert_tls13", "find_starttls", "handshake_messages",
    "infer_client_cert", "ja4", "looks_like_tls", "parse_certificate_list", "parse_certificate_request",
    "parse_client_hello", "parse_server_hello", "parse_sslv2_client_hello", "parse_tls", "read_records",
    "record_sizes_complete",
]


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
    if is_sslv2_hello(cli.data):
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
        hs.client_versions = client_versions(tuple(ch.versions), ch.legacy_version)
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
               f"kept; --payload-limit or read(payload_limit=...) keeps more)"
    return ""


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

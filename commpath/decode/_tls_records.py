"""TLS records and the handshake messages they carry, split from one direction's bytes."""

from __future__ import annotations

import struct

from ._tls_model import MAX_MESSAGES, MAX_RECORDS, Message, Record, TlsHandshake
from ._tls_wire import CONTENT_APPDATA, CONTENT_CCS, CONTENT_HANDSHAKE, CONTENT_TYPES, MAX_RECORD_BODY, RECORD_HEADER_FMT

_RECORD_HEADER = struct.Struct(RECORD_HEADER_FMT).unpack_from


def looks_like_tls(data: bytes) -> bool:
    """A TLS record header (or an SSLv2 ClientHello) at the start of ``data``."""
    if len(data) >= 3 and data[0] in CONTENT_TYPES and data[1] in (3, 0xFE) and data[2] <= 4:
        return True
    return is_sslv2_hello(data)


def is_sslv2_hello(data: bytes) -> bool:
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

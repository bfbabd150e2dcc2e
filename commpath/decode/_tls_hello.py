"""ClientHello and ServerHello fields, and the JA4 client fingerprint."""

from __future__ import annotations

import hashlib
import struct
from functools import lru_cache

from ._fingerprints import JA4_VERSIONS
from ._memo import BoundedMemo
from ._tls_model import MAX_EXTENSIONS, ClientHello, ServerHello, TlsHandshake
from ._tls_wire import (
    EXT_ALPN, EXT_EARLY_DATA, EXT_EC_POINT_FORMATS, EXT_KEY_SHARE, EXT_PRE_SHARED_KEY, EXT_SERVER_NAME,
    EXT_SESSION_TICKET, EXT_SIGNATURE_ALGORITHMS, EXT_SUPPORTED_GROUPS, EXT_SUPPORTED_VERSIONS, HRR_RANDOM, Reader,
    Truncated, is_grease, version_name, version_rank,
)

_U16_PAIR = struct.Struct(">HH").unpack_from


def extension_block(body: bytes, pos: int, hs: TlsHandshake, who: str, wanted: frozenset[int],
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


def u16_list(raw: bytes) -> list[int]:
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
        ch.ciphers = u16_list(body[pos:pos + cs_len])
        pos += cs_len
        pos += 1 + body[pos]                       # compression methods
        if pos > n:
            raise Truncated("compression methods run past the message")
        ch.extensions, bodies = extension_block(body, pos, hs, "ClientHello", _CH_PARSED, cut)
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
                ch.versions = u16_list(data[1:1 + data[0]])
                continue
        elif etype == EXT_SIGNATURE_ALGORITHMS:
            if n >= 2 and ((data[0] << 8) | data[1]) <= n - 2:
                ch.sig_algs = u16_list(data[2:2 + ((data[0] << 8) | data[1])])
                continue
        elif etype == EXT_SUPPORTED_GROUPS:
            if n >= 2 and ((data[0] << 8) | data[1]) == n - 2 and n % 2 == 0:
                ch.groups = u16_list(data[2:])
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
        types, bodies = extension_block(body, pos + 3, hs, "ServerHello", _SH_PARSED)
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


@lru_cache(maxsize=1024)
def client_versions(versions: tuple[int, ...], legacy_version: int) -> str:
    """The offered versions as text, highest first (GREASE left out)."""
    offered = [v for v in versions if not is_grease(v)] or [legacy_version]
    offered = sorted(set(offered), key=version_rank, reverse=True)
    return ",".join(version_name(v) for v in offered)


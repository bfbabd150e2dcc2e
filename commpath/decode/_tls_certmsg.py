"""Certificate and CertificateRequest messages: the DER chain and the CA names a server asks for."""

from __future__ import annotations

from ._memo import BoundedMemo
from ._tls_hello import extension_block
from ._tls_model import MAX_CAS, MAX_CERTS, TlsHandshake
from ._tls_wire import EXT_CERTIFICATE_AUTHORITIES, Reader, Truncated

_CR_PARSED = frozenset((EXT_CERTIFICATE_AUTHORITIES,))


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
            _, bodies = extension_block(body, r.pos, hs, "CertificateRequest", _CR_PARSED)
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

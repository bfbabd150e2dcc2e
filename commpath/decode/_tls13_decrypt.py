"""TLS 1.3 handshakes revealed with a key log: certificates, CertificateRequest and ALPN of the encrypted flights."""

from __future__ import annotations

from ._tls_certmsg import parse_certificate_list, parse_certificate_request
from ._tls_model import TlsHandshake
from ._tls_wire import EXT_ALPN, HS_CERTIFICATE, HS_CERTIFICATE_REQUEST, HS_ENCRYPTED_EXTENSIONS, Reader, Truncated


def keylog_module():
    """The key-log module, loaded (with cryptography's AEAD ciphers) only when a key log is given."""
    from . import keylog
    return keylog


def decrypt_handshake(hs: TlsHandshake, secrets: dict[str, bytes]) -> None:
    """Reveal a TLS 1.3 handshake's certificates with the logged handshake traffic secrets."""
    s_secret = secrets.get("SERVER_HANDSHAKE_TRAFFIC_SECRET")
    c_secret = secrets.get("CLIENT_HANDSHAKE_TRAFFIC_SECRET")
    if s_secret is None or hs.cipher_id is None:
        return
    s_data, _, s_err = keylog_module().decrypt_flight(hs.server_encrypted, s_secret, hs.cipher_id)
    if not s_data:
        hs.error(f"key log: server flight does not decrypt ({s_err or 'no handshake data'})")
        return
    hs.certs_visibility = "decrypted"
    for mtype, body in keylog_module().split_messages(s_data):
        if mtype == HS_ENCRYPTED_EXTENSIONS:
            hs.alpn = hs.alpn or _ee_alpn(body)
        elif mtype == HS_CERTIFICATE_REQUEST:
            hs.cert_request = True
            hs.cert_request_cas = parse_certificate_request(body, hs, 0x0304)
        elif mtype == HS_CERTIFICATE:
            hs.server_chain = parse_certificate_list(body, hs, True, "server")
    if s_err:
        hs.error(f"key log: {s_err}")
    if c_secret is None:
        hs.client_cert = "unknown" if hs.cert_request else "not-requested"
        return
    c_data, _, c_err = keylog_module().decrypt_flight(hs.client_encrypted, c_secret, hs.cipher_id)
    client_msgs = keylog_module().split_messages(c_data)
    cert_msg = next((b for t, b in client_msgs if t == HS_CERTIFICATE), None)
    if not hs.cert_request:
        hs.client_cert = "not-requested"
    elif cert_msg is not None:
        hs.client_chain = parse_certificate_list(cert_msg, hs, True, "client")
        hs.client_cert = "presented" if hs.client_chain else "empty"
    else:
        hs.client_cert = "unknown"
    if hs.inference:
        hs.inference += f"; decrypted: {hs.client_cert}"
    if c_err and not c_data:
        hs.error(f"key log: client flight: {c_err}")


def _ee_alpn(body: bytes) -> str | None:
    try:
        r = Reader(body)
        exts = r.sub(2)
        while exts.remaining() > 0:
            etype, data = exts.u16(), exts.vec(2)
            if etype == EXT_ALPN:
                return Reader(data).sub(2).vec(1).decode("ascii", "replace")
    except Truncated:
        return None
    return None

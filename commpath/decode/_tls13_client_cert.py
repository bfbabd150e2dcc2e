"""TLS 1.3: whether the client sent a certificate, inferred from the sizes of its encrypted flight."""

from __future__ import annotations

from functools import lru_cache

from ._tls_model import ClientHello, Record, ServerHello, TlsHandshake

#: Hash length of each TLS 1.3 cipher suite (for the Finished size).
TLS13_HASH_LEN = {0x1301: 32, 0x1302: 48, 0x1303: 32, 0x1304: 32, 0x1305: 32}
AEAD_TAG = 16
#: Smallest plausible Certificate message with one certificate (header, lists, a ~100-byte cert).
MIN_CERTIFICATE_MESSAGE = 4 + 1 + 3 + 3 + 100 + 2
#: Chrome's ALPS (application_settings) puts a client EncryptedExtensions into the flight.
ALPS_EXTENSIONS = frozenset((17513, 17613))
ALPS_MAX_EXTRA = 64


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

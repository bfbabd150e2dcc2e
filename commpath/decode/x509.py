"""Certificates seen in handshakes: parsed and verified against a CA bundle with ``cryptography``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from ..errors import InputError

#: Attribute names as OpenSSL (and Zeek) print them, where RFC 4514 has none.
NAME_OVERRIDES = {
    NameOID.STREET_ADDRESS: "street",
    NameOID.POSTAL_CODE: "postalCode",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
}

EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}

#: cryptography's KeyUsage attributes and their RFC 5280 names.
KEY_USAGES = {"digital_signature": "digitalSignature", "content_commitment": "nonRepudiation",
              "key_encipherment": "keyEncipherment", "data_encipherment": "dataEncipherment",
              "key_agreement": "keyAgreement", "key_cert_sign": "keyCertSign", "crl_sign": "cRLSign"}

MAX_DER = 1024 * 1024   # a certificate larger than this is not parsed


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def name_text(name: x509.Name) -> str:
    """RFC 4514 text, most specific attribute first (as OpenSSL, Zeek and Go print it)."""
    try:
        return name.rfc4514_string(NAME_OVERRIDES)
    except Exception:            # noqa: BLE001 - odd encodings still give a name
        return ",".join(f"{a.oid.dotted_string}={a.value!r}" for a in name)


@dataclass
class ParsedCert:
    der: bytes
    fingerprint: str
    cert: x509.Certificate | None
    row: dict


def parse_certificate(der: bytes) -> ParsedCert:
    """One CERT_COLUMNS row (without roles/flow_ids); a certificate that does not parse keeps its
    fingerprint and gets ``parse_error``."""
    fp = fingerprint(der)
    row: dict = {"fingerprint": fp}
    if len(der) > MAX_DER:
        row["parse_error"] = f"certificate of {len(der)} bytes not parsed (limit {MAX_DER})"
        return ParsedCert(der, fp, None, row)
    warned: list[str] = []
    try:
        serial = _der_serial(der)
        if serial is not None and serial <= 0:
            warned.append(f"serial number is {'zero' if serial == 0 else 'negative'} (RFC 5280 4.1.2.2 wants "
                          f"a positive one)")
            cert, patched = _load_non_positive_serial(der)
        else:
            cert, patched = x509.load_der_x509_certificate(der), False
            serial = cert.serial_number
        row["subject"] = name_text(cert.subject)
        row["issuer"] = name_text(cert.issuer)
        text = format(serial if serial >= 0 else -serial, "X")
        row["serial"] = text if len(text) % 2 == 0 else "0" + text
        row["not_before"] = cert.not_valid_before_utc
        row["not_after"] = cert.not_valid_after_utc
    except Exception as exc:     # noqa: BLE001 - any malformed DER is reported, not raised
        row["parse_error"] = f"certificate does not parse: {exc}"
        row["warnings"] = warned
        return ParsedCert(der, fp, None, row)
    row["warnings"] = warned
    errors: list[str] = []
    try:
        key = cert.public_key()
        kind, bits = _key_kind(key)
        row["key_type"], row["key_bits"] = kind, bits
    except Exception as exc:     # noqa: BLE001
        errors.append(f"public key: {exc}")
    try:
        oid = cert.signature_algorithm_oid
        row["signature_algorithm"] = getattr(oid, "_name", None) or oid.dotted_string
        if row["signature_algorithm"] == "Unknown OID":
            row["signature_algorithm"] = oid.dotted_string
    except Exception as exc:     # noqa: BLE001
        errors.append(f"signature algorithm: {exc}")
    row["sans"] = []
    row["key_usage"] = []
    row["extended_key_usage"] = []
    try:
        for ext in cert.extensions:
            value = ext.value
            if isinstance(value, x509.SubjectAlternativeName):
                row["sans"] = _sans(value)
            elif isinstance(value, x509.BasicConstraints):
                row["is_ca"] = value.ca
            elif isinstance(value, x509.KeyUsage):
                row["key_usage"] = [name for attr, name in KEY_USAGES.items() if getattr(value, attr)]
                if value.key_agreement:
                    row["key_usage"] += [name for attr, name in (("encipher_only", "encipherOnly"),
                                                                 ("decipher_only", "decipherOnly"))
                                         if getattr(value, attr)]
            elif isinstance(value, x509.ExtendedKeyUsage):
                row["extended_key_usage"] = [EKU_NAMES.get(o, o.dotted_string) for o in value]
    except Exception as exc:     # noqa: BLE001 - a bad extension leaves the rest
        errors.append(f"extensions: {exc}")
    # a patched copy no longer carries its own signature: whether it signed itself is unknown
    row["self_signed"] = None if patched else _self_signed(cert)
    if errors:
        row["parse_error"] = "; ".join(errors)
    return ParsedCert(der, fp, cert, row)


def _der_serial(der: bytes) -> int | None:
    """The serial number read from the DER itself (Certificate → TBSCertificate → [version] → serial)."""
    try:
        (_, cert_body), = _der_items(der)
        tbs = next(_der_items(cert_body))[1]
        items = _der_items(tbs)
        tag, body = next(items)
        if tag == 0xA0:                            # explicit version
            tag, body = next(items)
        if tag != 0x02 or not body:
            return None
        return int.from_bytes(body, "big", signed=True)
    except (ValueError, StopIteration):
        return None


def _load_non_positive_serial(der: bytes) -> tuple[x509.Certificate, bool]:
    """Load a certificate whose serial is zero or negative: ``cryptography`` warns on stderr today and
    will refuse it later, so its warning is caught (the caller records its own), and if it refuses, a
    copy with the serial's first byte made positive (same length, so every other field is intact) is
    loaded instead; returns the certificate and whether it is such a patched copy."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cert = x509.load_der_x509_certificate(der)
            cert.serial_number                       # noqa: B018 - the library warns (or raises) here too
            return cert, False
        except Exception:        # noqa: BLE001 - refused: parse the patched copy below
            pass
        return x509.load_der_x509_certificate(positive_serial_copy(der)), True


def positive_serial_copy(der: bytes) -> bytes:
    """``der`` with the first byte of its serial number set to 0x01: positive, same length."""
    at = _serial_offset(der)
    return der[:at] + b"\x01" + der[at + 1:]


def _serial_offset(der: bytes) -> int:
    """Offset in ``der`` of the serial number's first content byte."""
    pos = 0
    for _ in range(2):                               # into Certificate, then TBSCertificate
        pos += _header_length(der, pos)
    if der[pos] == 0xA0:                             # skip the explicit version
        pos += _header_length(der, pos) + der[pos + 1]
    return pos + _header_length(der, pos)


def _header_length(der: bytes, pos: int) -> int:
    length = der[pos + 1]
    return 2 + (length & 0x7F if length & 0x80 else 0)


def _key_kind(key) -> tuple[str, int | None]:
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    return type(key).__name__, None


def _sans(value: x509.SubjectAlternativeName) -> list[str]:
    out = []
    for gn in value:
        if isinstance(gn, x509.DNSName):
            out.append(f"DNS:{gn.value}")
        elif isinstance(gn, x509.IPAddress):
            out.append(f"IP:{gn.value}")
        elif isinstance(gn, x509.UniformResourceIdentifier):
            out.append(f"URI:{gn.value}")
        elif isinstance(gn, x509.RFC822Name):
            out.append(f"email:{gn.value}")
    return out


#: Results of :func:`signature_check`.
SIGNED, SIGNED_LEGACY, NOT_SIGNED, UNCHECKABLE = "signed", "signed-legacy", "not-signed", "uncheckable"
#: Signature hashes ``verify_directly_issued_by`` refuses but that still identify the issuer.
LEGACY_HASHES = ("sha1", "md5")


def signature_check(child: x509.Certificate, parent: x509.Certificate) -> str:
    """Whether ``parent`` names and signs ``child``: SIGNED, SIGNED_LEGACY (a valid SHA-1 or MD5
    signature), NOT_SIGNED, or UNCHECKABLE (an algorithm or key nobody here can verify).

    ``verify_directly_issued_by`` refuses SHA-1 and MD5 signatures outright; those are verified
    here with the issuer's public key and the hash the signature OID names, because they still
    tell which certificate issued which (a SHA-1 self-signed kubelet certificate is self-signed).
    """
    if child.issuer != parent.subject:
        return NOT_SIGNED
    try:
        child.verify_directly_issued_by(parent)
        return SIGNED
    except InvalidSignature:
        return NOT_SIGNED
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass                                   # refused algorithm (or key): try the legacy ones below
    except Exception:            # noqa: BLE001 - a malformed certificate cannot be checked
        return UNCHECKABLE
    return _legacy_signature(child, parent)


def _legacy_signature(child: x509.Certificate, parent: x509.Certificate) -> str:
    try:
        digest = child.signature_hash_algorithm
    except Exception:            # noqa: BLE001 - an unknown signature OID
        return UNCHECKABLE
    if digest is None or digest.name not in LEGACY_HASHES:
        return UNCHECKABLE
    try:
        key = parent.public_key()
        sig, tbs = child.signature, child.tbs_certificate_bytes
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, tbs, padding.PKCS1v15(), digest)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(sig, tbs, ec.ECDSA(digest))
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(sig, tbs, digest)
        else:
            return UNCHECKABLE
    except InvalidSignature:
        return NOT_SIGNED
    except Exception:            # noqa: BLE001 - the backend refuses the hash or the key
        return UNCHECKABLE
    return SIGNED_LEGACY


def _self_signed(cert: x509.Certificate) -> bool | None:
    """Issued and signed by itself (a legacy signature counts); None when it cannot be checked."""
    result = signature_check(cert, cert)
    return None if result == UNCHECKABLE else result != NOT_SIGNED


# --------------------------------------------------------------------------- names in handshakes

def name_from_der(der: bytes) -> str:
    """A distinguished name (as listed in CertificateRequest) in RFC 4514 text."""
    try:
        top = list(_der_items(der))
        if len(top) != 1 or top[0][0] != 0x30:
            raise ValueError("not a SEQUENCE")
        rdns = []
        for set_tag, set_body in _der_items(top[0][1]):
            attrs = []
            for _, atv in _der_items(set_body):
                parts = list(_der_items(atv))
                if len(parts) < 2 or parts[0][0] != 0x06:
                    raise ValueError("attribute without an OID")
                oid = ObjectIdentifier(_oid_text(parts[0][1]))
                tag, raw = parts[1]
                value = raw.decode("utf-16-be" if tag == 0x1E else "utf-8", "replace")
                attrs.append(x509.NameAttribute(oid, value, _validate=False))
            rdns.append(x509.RelativeDistinguishedName(attrs))
        return name_text(x509.Name(rdns))
    except Exception:            # noqa: BLE001 - shown as hex rather than lost
        return "#" + der.hex()


def _der_items(data: bytes):
    """(tag, body) of each TLV in ``data``; raises ValueError on a lying length."""
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise ValueError("DER header past the end")
        tag = data[pos]
        length = data[pos + 1]
        pos += 2
        if length & 0x80:
            n = length & 0x7F
            if n == 0 or n > 3:
                raise ValueError("unsupported DER length")
            length = int.from_bytes(data[pos:pos + n], "big")
            pos += n
        if pos + length > len(data):
            raise ValueError("DER length past the end")
        yield tag, data[pos:pos + length]
        pos += length


def _oid_text(raw: bytes) -> str:
    first = raw[0]
    parts = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    val = 0
    for b in raw[1:]:
        val = (val << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(val)
            val = 0
    return ".".join(map(str, parts))


# --------------------------------------------------------------------------- verification

def load_ca_bundle(path) -> list[x509.Certificate]:
    """CA certificates from a PEM bundle; raises InputError naming the file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(p, f"cannot read CA bundle: {exc.strerror or exc}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except Exception:            # noqa: BLE001
        certs = []
    if not certs:
        raise InputError(p, "no PEM certificate in the CA bundle")
    return certs


# verification lives in its own module; these names stay importable from here
from ._verify import MAX_CHAIN_DEPTH, REASONS, verify_chain, verify_chain_reasons  # noqa: E402,F401

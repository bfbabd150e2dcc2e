"""Certificates seen in handshakes: parsed and verified against a CA bundle with ``cryptography``."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from ._memo import BoundedMemo
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
    try:
        cert = x509.load_der_x509_certificate(der)
        row["subject"] = name_text(cert.subject)
        row["issuer"] = name_text(cert.issuer)
        serial = cert.serial_number
        text = format(serial if serial >= 0 else -serial, "X")
        row["serial"] = text if len(text) % 2 == 0 else "0" + text
        row["not_before"] = cert.not_valid_before_utc
        row["not_after"] = cert.not_valid_after_utc
    except Exception as exc:     # noqa: BLE001 - any malformed DER is reported, not raised
        row["parse_error"] = f"certificate does not parse: {exc}"
        return ParsedCert(der, fp, None, row)
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
    row["self_signed"] = _self_signed(cert)
    if errors:
        row["parse_error"] = "; ".join(errors)
    return ParsedCert(der, fp, cert, row)


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


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """``parent`` names and signs ``child``."""
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
        return True
    except Exception:            # noqa: BLE001 - wrong key, unsupported algorithm or bad signature
        return False


def _self_signed(cert: x509.Certificate) -> bool:
    return _issued_by(cert, cert)


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


MAX_CHAIN_DEPTH = 8


def verify_chain(chain: list[ParsedCert], cas: list[x509.Certificate], at: dt.datetime,
                 server_name: str | None = None, server_ip: str | None = None,
                 client: bool = False) -> tuple[bool | None, str | None]:
    """Verify a presented chain (leaf first) against ``cas`` at time ``at``, as Go's crypto/x509 does.

    Kubernetes components verify with Go, so its rules decide: a path of valid signatures from
    the leaf through presented intermediates to a bundle certificate, every certificate within
    its validity at capture time, issuers marked as CAs, the leaf's extended key usage allowing
    serverAuth (clientAuth for client certificates), and for servers the SNI (or else the dialled
    IP address) among the leaf's subject alternative names (the Common Name is not used).
    Returns (verified, error); verified is None when nothing can be said.
    """
    if not chain or not cas:
        return None, None
    leaf = chain[0]
    if leaf.cert is None:
        return False, "leaf certificate does not parse"
    cert = leaf.cert
    err = _validity(cert, at, "certificate")
    if err:
        return False, err
    eku = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    ekus = _ext(cert, x509.ExtendedKeyUsage)
    if ekus is not None and eku not in ekus and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in ekus:
        return False, f"certificate specifies an incompatible key usage (needs {EKU_NAMES[eku]})"
    if not client:
        if server_name:
            err = _cached_name_error(cert, server_name, None)
        elif server_ip:
            err = _cached_name_error(cert, None, server_ip)
        else:
            return None, "no server name or address to check"
        if err:
            return False, err
    inters = [c.cert for c in chain[1:] if c.cert is not None]
    return _cached_path(cert, inters, cas, at)


class _PathMemo:
    """Path results of one (leaf, intermediates, bundle), by the validity state of the issuers at a time.

    The search reads the time only through the validity of the intermediates and bundle
    certificates, which is constant between consecutive validity bounds: results are kept per
    interval between bounds (except errors that quote the time).
    """

    __slots__ = ("leaf", "inters", "cas", "bounds", "results")

    def __init__(self, leaf, inters, cas):
        self.leaf, self.inters, self.cas = leaf, tuple(inters), cas
        tick = dt.timedelta(microseconds=1)
        bounds = set()
        for c in (*inters, *cas):
            bounds.add(c.not_valid_before_utc)             # valid from here (inclusive)
            bounds.add(c.not_valid_after_utc + tick)       # expired from here
        self.bounds = sorted(bounds)
        self.results: dict[int, tuple[bool, str | None]] = {}

    def same(self, leaf, inters, cas) -> bool:
        return self.leaf is leaf and self.cas is cas and len(self.inters) == len(inters) \
            and all(a is b for a, b in zip(self.inters, inters))


_PATHS_MAX = 512                     # chains remembered (their certificates are kept alive with them)
_PATHS: BoundedMemo = BoundedMemo(_PATHS_MAX)


def _cached_path(cert, inters, cas, at) -> tuple[bool, str | None]:
    """:func:`_build_path`, remembered for chains seen before (same objects, same validity state)."""
    key = (id(cert), tuple(map(id, inters)), id(cas))
    memo = _PATHS.get(key)
    if memo is None or not memo.same(cert, inters, cas):
        memo = _PATHS.remember(key, _PathMemo(cert, inters, cas))
    slot = bisect_right(memo.bounds, at)
    result = memo.results.get(slot)
    if result is None:
        result = _build_path(cert, inters, cas, at)
        if result[1] is None or "capture at" not in result[1]:
            memo.results[slot] = result
    return result


def _build_path(cert, inters, cas, at) -> tuple[bool, str | None]:
    """Depth-first search for a signature path from ``cert`` to one of ``cas``."""
    first_error: list[str] = []

    def search(current, depth: int, seen: set[bytes]) -> bool:
        if depth > MAX_CHAIN_DEPTH:
            return False
        for root in cas:
            if _same(current, root):                 # the certificate itself is trusted
                return True
            if _issued_by(current, root):
                err = _validity(root, at, "CA certificate") or _ca_error(root)
                if err:
                    first_error.append(err)
                    continue
                return True
        for parent in inters:
            fp = parent.fingerprint(hashes_sha256())
            if fp in seen or not _issued_by(current, parent):
                continue
            err = _validity(parent, at, "intermediate certificate") or _ca_error(parent)
            if err:
                first_error.append(err)
                continue
            if search(parent, depth + 1, seen | {fp}):
                return True
        return False

    if search(cert, 0, set()):
        return True, None
    if first_error:
        return False, first_error[0]
    if cert.issuer == cert.subject:
        return False, "certificate signed by unknown authority (self-signed, not in the CA bundle)"
    return False, f"certificate signed by unknown authority (issuer {name_text(cert.issuer)})"


def hashes_sha256():
    from cryptography.hazmat.primitives import hashes
    return hashes.SHA256()


def _same(a: x509.Certificate, b: x509.Certificate) -> bool:
    return a == b


def _ext(cert: x509.Certificate, kind):
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    except Exception:            # noqa: BLE001 - a malformed extension counts as absent
        return None


def _validity(cert: x509.Certificate, at: dt.datetime, what: str) -> str | None:
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    if at > na:
        return f"{what} expired ({na:%Y-%m-%d %H:%M} UTC, capture at {at:%Y-%m-%d %H:%M} UTC)"
    if at < nb:
        return f"{what} not yet valid (from {nb:%Y-%m-%d %H:%M} UTC, capture at {at:%Y-%m-%d %H:%M} UTC)"
    return None


def _ca_error(cert: x509.Certificate) -> str | None:
    if cert.version == x509.Version.v1:
        return None
    bc = _ext(cert, x509.BasicConstraints)
    if bc is None or not bc.ca:
        return f"issuer {name_text(cert.subject)} is not a CA certificate"
    return None


_NAMES: BoundedMemo = BoundedMemo(_PATHS_MAX)


def _cached_name_error(cert: x509.Certificate, name: str | None, ip: str | None) -> str | None:
    """:func:`_name_error`, remembered per (certificate object, name, address)."""
    key = (id(cert), name, ip)
    hit = _NAMES.get(key)
    if hit is not None and hit[0] is cert:
        return hit[1]
    err = _name_error(cert, name, ip)
    _NAMES.remember(key, (cert, err))
    return err


def _name_error(cert: x509.Certificate, name: str | None, ip: str | None) -> str | None:
    san = _ext(cert, x509.SubjectAlternativeName)
    dns = san.get_values_for_type(x509.DNSName) if san is not None else []
    ips = san.get_values_for_type(x509.IPAddress) if san is not None else []
    if name:
        try:
            as_ip = ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            as_ip = None
        if as_ip is not None:
            ip, name = str(as_ip), None
    if name:
        want = name.lower().rstrip(".")
        if any(_dns_match(p.lower().rstrip("."), want) for p in dns):
            return None
        listed = ", ".join(dns) or "no DNS names"
        return f"certificate is valid for {listed}, not {name}"
    try:
        want_ip = ipaddress.ip_address(str(ip))
    except ValueError:
        return f"not an IP address: {ip}"
    if any(a == want_ip for a in ips):
        return None
    listed = ", ".join(map(str, ips)) or "no IP SANs"
    return f"certificate is valid for {listed}, not {want_ip}"


def _dns_match(pattern: str, host: str) -> bool:
    if pattern == host:
        return True
    if pattern.startswith("*.") and "." in host:
        return host.split(".", 1)[1] == pattern[2:] and host.split(".", 1)[0] != ""
    return False

"""One TLS target looked at from outside: handshakes, the served chain, the CertificateRequest, versions.

Python's ``ssl`` module shows neither the chain a server sent (only the leaf, before 3.13) nor its
CertificateRequest: OpenSSL hands the CA names of that message only to a client-certificate
callback, which the module does not expose. ``openssl s_client -msg -showcerts`` prints both (every
handshake message by type, the chain as PEM, "Acceptable client certificate CA names"), so the probe
runs it once per target and parses its output; the chain is then verified with ``cryptography``'s
X.509 verification. Handshakes of our own go through a memory BIO so that what a server sent before
failing (an SSH banner, an HTTP answer) can be named.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import re
import shutil
import socket
import ssl
import subprocess
import time
import warnings
from dataclasses import dataclass, field

#: versions the sweep tries, oldest first, as the check layer names them
SWEEP_VERSIONS = (("TLS 1.0", ssl.TLSVersion.TLSv1), ("TLS 1.1", ssl.TLSVersion.TLSv1_1),
                  ("TLS 1.2", ssl.TLSVersion.TLSv1_2), ("TLS 1.3", ssl.TLSVersion.TLSv1_3))
#: what "weak" means for cipher suites, here and in the hosts' configuration (``--tls-cipher-suites``): Go's
#: crypto/tls ``InsecureCipherSuites()`` (Go 1.26, crypto/tls/cipher_suites.go: RSA key exchange, RC4, 3DES,
#: CBC-SHA256), the stack every Kubernetes component serves TLS with. IANA name (as the flags take it) ->
#: OpenSSL name (as the probe offers it).
INSECURE_CIPHER_SUITES = {
    "TLS_RSA_WITH_RC4_128_SHA": "RC4-SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": "ECDHE-ECDSA-RC4-SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": "ECDHE-RSA-RC4-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
}
#: the sweep's TLS 1.2 suites, one handshake each: Go's insecure list (those this OpenSSL lacks stay untested)
WEAK_CIPHERS = tuple(INSECURE_CIPHER_SUITES.values())
VERSION_NAMES = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1", "TLSv1.2": "TLS 1.2", "TLSv1.3": "TLS 1.3",
                 "SSLv3": "SSL 3.0"}


class TargetError(Exception):
    """The target cannot be probed further: ``str()`` is one line saying what it did."""


@dataclass
class Handshake:
    """What one handshake of ours showed."""

    ok: bool
    version: str | None = None
    cipher: str | None = None
    leaf_der: bytes | None = None
    alert: str | None = None            # the server's refusal (a TLS alert), when not ok
    received: bytes = b""               # the first bytes the server sent


def _printable(data: bytes, limit: int = 40) -> str:
    text = data[:limit].decode("latin-1")
    return "".join(c if 32 <= ord(c) < 127 else "." for c in text).strip()


def what_it_said(data: bytes) -> str:
    """One clause naming what a server that does not speak TLS sent."""
    first = _printable(data.split(b"\r\n")[0].split(b"\n")[0])
    if data.startswith(b"SSH-"):
        return f"speaks SSH, not TLS (banner {first!r})"
    if data[:5] in (b"HTTP/", b"<html", b"<!DOC"):
        return f"speaks plain HTTP, not TLS ({first!r})"
    return f"does not speak TLS (it sent {_printable(data)!r})"


def connect(address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection, or :class:`TargetError` saying why not."""
    try:
        return socket.create_connection((address, port), timeout=timeout)
    except socket.timeout:
        raise TargetError(f"no answer to the TCP handshake within {timeout:g} s (filtered or down)") from None
    except ConnectionRefusedError:
        raise TargetError("connection refused (nothing listens on the port)") from None
    except OSError as exc:
        raise TargetError(f"cannot connect: {exc.strerror or exc}") from None


def handshake(address: str, port: int, ctx: ssl.SSLContext, timeout: float, server_name: str | None = None) -> Handshake:
    """One TLS handshake over a memory BIO; a refusal (alert) is a result, anything else a TargetError."""
    sock = connect(address, port, timeout)
    deadline = time.monotonic() + timeout
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    received = bytearray()
    try:
        while True:
            try:
                tls.do_handshake()
                sock.sendall(outgoing.read())
                cipher = tls.cipher()
                return Handshake(True, VERSION_NAMES.get(tls.version() or "", tls.version()),
                                 cipher[0] if cipher else None, tls.getpeercert(binary_form=True), None, bytes(received))
            except ssl.SSLWantReadError:
                pending = outgoing.read()
                if pending:
                    sock.sendall(pending)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout
                sock.settimeout(left)
                data = sock.recv(16384)
                if not data:
                    if received:
                        raise TargetError(what_it_said(bytes(received)) + " and closed the connection")
                    raise TargetError("closed the connection without answering the TLS ClientHello")
                if len(received) < 256:
                    received += data[: 256 - len(received)]
                incoming.write(data)
            except ssl.SSLError as exc:
                if received and received[0] != 0x16 and received[0] != 0x15:
                    raise TargetError(what_it_said(bytes(received))) from None
                return Handshake(False, alert=_reason(exc), received=bytes(received))
    except socket.timeout:
        if received and received[0] not in (0x15, 0x16):
            raise TargetError(what_it_said(bytes(received))) from None
        raise TargetError(f"accepted the connection but did not finish a TLS handshake within {timeout:g} s "
                          "(hangs)") from None
    except ConnectionResetError:
        raise TargetError("reset the connection during the TLS handshake") from None
    except (BrokenPipeError, ConnectionAbortedError):
        raise TargetError("closed the connection during the TLS handshake") from None
    finally:
        sock.close()


def _reason(exc: ssl.SSLError) -> str:
    return str(getattr(exc, "reason", None) or exc).lower().replace("_", " ")


def client_context(version: ssl.TLSVersion | None = None, ciphers: str | None = None) -> ssl.SSLContext:
    """A client context that verifies nothing (the probe judges the chain itself) and can offer old
    versions and suites (security level 0) when asked to."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        with warnings.catch_warnings():     # offering TLS 1.0/1.1 is the point of the sweep
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = version
    if version is not None and version < ssl.TLSVersion.TLSv1_2 or ciphers:
        ctx.set_ciphers((ciphers or "ALL") + ":@SECLEVEL=0")
    return ctx


@dataclass
class SClient:
    """What ``openssl s_client -msg -showcerts`` showed."""

    chain_pem: list[str] = field(default_factory=list)
    client_cert_requested: bool | None = None
    client_ca_names: list[str] = field(default_factory=list)


_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def parse_s_client(text: str) -> SClient:
    """The chain, whether a CertificateRequest came, and the CA names it listed."""
    out = SClient(chain_pem=_PEM.findall(text))
    lines = text.splitlines()
    handshakes = [ln for ln in lines if ln.startswith("<<<") and "Handshake" in ln]
    if handshakes:
        out.client_cert_requested = any("CertificateRequest" in ln for ln in handshakes)
    if "Acceptable client certificate CA names" in text:
        start = lines.index("Acceptable client certificate CA names") + 1
        for ln in lines[start:]:
            if not ln.strip() or ln.startswith(("---", "Requested Signature", "Client Certificate Types",
                                                "Shared Requested")):
                break
            out.client_ca_names.append(ln.strip())
    return out


def s_client(address: str, port: int, timeout: float) -> SClient:
    """``openssl s_client`` against the target, bounded by ``timeout`` (stdin closed: no payload)."""
    exe = shutil.which("openssl")
    if exe is None:
        raise TargetError("openssl is not installed: the CertificateRequest and the chain cannot be read")
    host = f"[{address}]" if ":" in address else address
    try:
        run = subprocess.run([exe, "s_client", "-connect", f"{host}:{port}", "-showcerts", "-msg", "-noservername"],
                             stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        raise TargetError(f"openssl s_client did not finish within {timeout + 5:g} s (hangs)") from None
    return parse_s_client(run.stdout.decode("utf-8", "replace"))


def leaf_facts(der: bytes) -> dict:
    """Fingerprint, subject, issuer, SANs, notAfter and self-signedness of a DER certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    cert = x509.load_der_x509_certificate(der)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [*ext.get_values_for_type(x509.DNSName), *(str(a) for a in ext.get_values_for_type(x509.IPAddress))]
    except x509.ExtensionNotFound:
        sans = []
    self_signed = False
    if cert.issuer == cert.subject:
        try:
            cert.verify_directly_issued_by(cert)
            self_signed = True
        except Exception:   # a different key with the same name: not self-signed
            self_signed = False
    return {"leaf_fingerprint": cert.fingerprint(hashes.SHA256()).hex(), "leaf_subject": cert.subject.rfc4514_string(),
            "leaf_issuer": cert.issuer.rfc4514_string(), "leaf_sans": sans,
            "leaf_not_before": cert.not_valid_before_utc.timestamp(),
            "leaf_not_after": cert.not_valid_after_utc.timestamp(), "self_signed": self_signed}


def names_match(sans: list[str], names: list[str]) -> bool:
    """The SANs cover one of the node's names or addresses (a DNS wildcard covers one label)."""
    want = {n.lower() for n in names}
    for san in sans:
        s = san.lower()
        if s in want:
            return True
        if s.startswith("*.") and any(n.split(".", 1)[-1] == s[2:] and "." in n for n in want):
            return True
    return False


def verify_chain(chain_pem: list[str], leaf_der: bytes | None, ca_pem: bytes, address: str,
                 now: _dt.datetime | None = None) -> tuple[bool, str | None]:
    """(verified, why not) of the served chain against the CA bundle, for a name the leaf itself
    lists (the names are judged apart, by :func:`names_match`)."""
    from cryptography import x509
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
    now = now or _dt.datetime.now(_dt.timezone.utc)
    certs = [x509.load_pem_x509_certificate(p.encode()) for p in chain_pem]
    if leaf_der is not None and (not certs or certs[0].public_bytes(_der()) != leaf_der):
        certs.insert(0, x509.load_der_x509_certificate(leaf_der))
    if not certs:
        return False, "no certificate served"
    leaf = certs[0]
    if leaf.not_valid_after_utc < now:
        return False, f"certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}"
    if leaf.not_valid_before_utc > now:
        return False, f"certificate not yet valid (from {leaf.not_valid_before_utc:%Y-%m-%d})"
    try:
        roots = x509.load_pem_x509_certificates(ca_pem)
    except ValueError as exc:
        return False, f"the CA bundle cannot be read: {exc}"
    sans = leaf_facts(leaf.public_bytes(_der()))["leaf_sans"]
    if not sans:
        return False, "the serving certificate has no subjectAltName (Go clients reject it)"
    subject = _subject(address if address in sans else sans[0])
    try:
        PolicyBuilder().store(Store(roots)).time(now).build_server_verifier(subject).verify(leaf, certs[1:])
    except VerificationError as exc:
        if leaf.issuer == leaf.subject:
            return False, "self-signed certificate"
        top = certs[-1]
        if top.issuer == top.subject and top.subject != leaf.subject:
            # the kubelet's default: a leaf signed by a CA it made itself ("<node>-ca@<time>"), sent along
            return False, f"self-signed chain: issued by {top.subject.rfc4514_string()}, not by the CA bundle"
        return False, f"does not chain to the CA bundle ({exc})"
    return True, None


def _der():
    from cryptography.hazmat.primitives.serialization import Encoding
    return Encoding.DER


def _subject(name: str):
    from cryptography.x509 import DNSName, IPAddress
    try:
        return IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return DNSName(name)


__all__ = ["Handshake", "INSECURE_CIPHER_SUITES", "SClient", "SWEEP_VERSIONS", "TargetError", "WEAK_CIPHERS",
           "client_context", "connect", "handshake", "leaf_facts", "names_match", "parse_s_client", "s_client",
           "verify_chain", "what_it_said"]

"""Certificate chain verification at capture time, with Go's rules and each failure reason on its own.

Kubernetes components verify with Go's crypto/x509, so its rules decide the verdict. The chain is
built first, then the leaf's validity, usage and name are checked, and every failing reason is
reported (``REASONS``). Path building is written here because ``cryptography``'s verifier refuses
what Go accepts in Kubernetes PKIs (leaf certificates marked CA, client certificates without a
subjectAltName, CAs without keyUsage) and refuses SHA-1/MD5 signatures outright, which must still be
told apart from an unknown authority ("weak-signature"). Once a path is found, ``cryptography``'s
``ClientVerifier`` (the web PKI CA profile, any leaf) re-walks it to enforce what it does enforce
and Go also enforces: basicConstraints path length, name constraints, and keyCertSign.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from bisect import bisect_right

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ._memo import BoundedMemo
from .x509 import EKU_NAMES, SIGNED, SIGNED_LEGACY, ParsedCert, name_text, signature_check

MAX_CHAIN_DEPTH = 8

#: Reason codes of a failed verification, in the order they are checked.
REASONS = {
    "unparsable": "the leaf certificate does not parse",
    "weak-signature": "a signature on the path uses SHA-1 or MD5 (Go: insecure algorithm)",
    "missing-intermediate": "the chain stops at a certificate whose issuer was not presented nor is in the bundle",
    "unknown-authority": "the chain ends at a self-signed certificate that is not in the bundle",
    "issuer-invalid": "an intermediate or CA on the path is expired, not yet valid or not a CA",
    "issuer-usage": "an intermediate or CA on the path does not allow the purpose (extended key usage)",
    "ca-constraints": "path length, name constraints or keyCertSign of a CA on the path are violated",
    "expired": "the leaf certificate expired before the capture",
    "not-yet-valid": "the leaf certificate was not yet valid at the capture",
    "incompatible-usage": "the leaf's extended key usage does not allow serverAuth/clientAuth",
    "name-mismatch": "the server name (SNI or dialled address) is not among the leaf's subjectAltNames",
}


def verify_chain(chain: list[ParsedCert], cas: list[x509.Certificate], at: dt.datetime,
                 server_name: str | None = None, server_ip: str | None = None,
                 client: bool = False) -> tuple[bool | None, str | None]:
    """(verified, first error) of :func:`verify_chain_reasons`."""
    ok, error, _ = verify_chain_reasons(chain, cas, at, server_name, server_ip, client)
    return ok, error


def verify_chain_reasons(chain: list[ParsedCert], cas: list[x509.Certificate], at: dt.datetime,
                         server_name: str | None = None, server_ip: str | None = None,
                         client: bool = False) -> tuple[bool | None, str | None, list[str]]:
    """Verify a presented chain (leaf first) against ``cas`` at time ``at``, as Go's crypto/x509 does.

    A path of valid signatures from the leaf through presented intermediates to a bundle
    certificate, every issuer on it a CA valid at capture time allowing the purpose; then the leaf
    within its validity, its extended key usage allowing serverAuth (clientAuth for client
    certificates), and for servers the SNI (or else the dialled IP address) among its subject
    alternative names (the Common Name is not used). Returns (verified, the first error in that
    order, every failing reason code of ``REASONS``); verified is None when nothing can be said.
    """
    if not chain or not cas:
        return None, None, []
    leaf = chain[0]
    if leaf.cert is None:
        return False, "leaf certificate does not parse", ["unparsable"]
    cert = leaf.cert
    eku = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    inters = [c.cert for c in chain[1:] if c.cert is not None]
    errors: list[str] = []
    reasons: list[str] = []
    ok, err, reason = _cached_path(cert, inters, cas, at, eku)
    if not ok:
        errors.append(err)
        reasons.append(reason)
    err = _validity(cert, at, "certificate")
    if err:
        errors.append(err)
        reasons.append("expired" if "expired" in err else "not-yet-valid")
    ekus = _ext(cert, x509.ExtendedKeyUsage)
    if ekus is not None and eku not in ekus and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in ekus:
        errors.append(f"certificate specifies an incompatible key usage (needs {EKU_NAMES[eku]})")
        reasons.append("incompatible-usage")
    if not client:
        err = None
        if server_name:
            err = _cached_name_error(cert, server_name, None)
        elif server_ip:
            err = _cached_name_error(cert, None, server_ip)
        elif not errors:
            return None, "no server name or address to check", []
        if err:
            errors.append(err)
            reasons.append("name-mismatch")
    if errors:
        return False, errors[0], reasons
    return True, None, []


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


#: chains remembered (their certificates are kept alive with them); keyed by content (certificates compare
#: and hash by their DER), so a caller that parses the same certificates again (a watch judging its window
#: after every file) finds its entries instead of filling the memo with copies until it is cleared
_PATHS_MAX = 512
_PATHS: BoundedMemo = BoundedMemo(_PATHS_MAX)


def _cached_path(cert, inters, cas, at, eku) -> tuple[bool, str | None, str | None]:
    """:func:`_build_path`, remembered for chains seen before (same certificates, same validity state)."""
    key = (cert, tuple(inters), tuple(cas), eku.dotted_string)
    memo = _PATHS.get(key)
    if memo is None:
        memo = _PATHS.remember(key, _PathMemo(cert, inters, cas))
    slot = bisect_right(memo.bounds, at)
    result = memo.results.get(slot)
    if result is None:
        result = _build_path(cert, inters, cas, at, eku)
        if result[1] is None or "capture at" not in result[1]:
            memo.results[slot] = result
    return result


def _build_path(cert, inters, cas, at, eku) -> tuple[bool, str | None, str | None]:
    """Depth-first search for a signature path from ``cert`` to one of ``cas``: (found, error, reason)."""
    first_error: list[tuple[str, str]] = []

    def issuer_error(issuer, what: str) -> tuple[str, str] | None:
        err = _validity(issuer, at, what) or _ca_error(issuer)
        if err:
            return err, "issuer-invalid"
        ekus = _ext(issuer, x509.ExtendedKeyUsage)
        if ekus is not None and eku not in ekus and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in ekus:
            return f"{what} {name_text(issuer.subject)} does not allow {EKU_NAMES[eku]}", "issuer-usage"
        return None

    def search(current, depth: int, seen: set[bytes], path: list) -> list | None:
        if depth > MAX_CHAIN_DEPTH:
            return None
        for root in cas:
            if _same(current, root):                 # the certificate itself is trusted
                return path
            signed = signature_check(current, root)
            if signed == SIGNED_LEGACY:
                first_error.append((_weak_signature(current), "weak-signature"))
            if signed == SIGNED:
                err = issuer_error(root, "CA certificate")
                if err:
                    first_error.append(err)
                    continue
                return path
        for parent in inters:
            fp = parent.fingerprint(hashes_sha256())
            if fp in seen:
                continue
            signed = signature_check(current, parent)
            if signed == SIGNED_LEGACY:
                first_error.append((_weak_signature(current), "weak-signature"))
            if signed != SIGNED:
                continue
            err = issuer_error(parent, "intermediate certificate")
            if err:
                first_error.append(err)
                continue
            found = search(parent, depth + 1, seen | {fp}, path + [parent])
            if found is not None:
                return found
        return None

    path = search(cert, 0, set(), [])
    if path is not None:
        err = _ca_constraints(cert, path, cas, at)
        return (True, None, None) if err is None else (False, err, "ca-constraints")
    if first_error:
        return False, *first_error[0]
    if cert.issuer == cert.subject:
        return False, "certificate signed by unknown authority (self-signed, not in the CA bundle)", \
            "unknown-authority"
    top = _chain_top(cert, inters)
    if top.issuer == top.subject:
        return False, f"certificate signed by unknown authority (root {name_text(top.subject)} not in the CA " \
                      f"bundle)", "unknown-authority"
    return False, f"certificate signed by unknown authority (issuer {name_text(cert.issuer)})", \
        "missing-intermediate"


def _chain_top(cert: x509.Certificate, inters: list[x509.Certificate]) -> x509.Certificate:
    """The last certificate reached by following issuer names through the presented ones."""
    top, seen = cert, {id(cert)}
    for _ in range(MAX_CHAIN_DEPTH):
        nxt = next((c for c in inters if c.subject == top.issuer and id(c) not in seen), None)
        if nxt is None:
            break
        top = nxt
        seen.add(id(nxt))
    return top


#: cryptography's messages for the CA rules Go enforces too; its other web PKI rules are not Go's
_CONSTRAINT_MESSAGES = ("path length", "name constraint", "keyCertSign")


def _ca_constraints(cert, path: list, cas, at) -> str | None:
    """Path length, name constraints and keyCertSign along a found path, by ``cryptography``'s verifier."""
    from cryptography.x509 import verification as v
    moment = min(max(at, cert.not_valid_before_utc), cert.not_valid_after_utc)   # the leaf's dates are not this
    try:
        verifier = (v.PolicyBuilder().store(v.Store(list(cas))).time(moment).max_chain_depth(MAX_CHAIN_DEPTH)
                    .extension_policies(ca_policy=v.ExtensionPolicy.webpki_defaults_ca(),
                                        ee_policy=v.ExtensionPolicy.permit_all())
                    .build_client_verifier())
        verifier.verify(cert, path)
    except v.VerificationError as exc:
        text = str(exc)
        if any(m in text for m in _CONSTRAINT_MESSAGES):
            return f"chain violates a CA constraint: {text.split(': ', 1)[-1].split(' (encountered', 1)[0]}"
    except Exception:            # noqa: BLE001 - what cryptography cannot load, Go's rules above decided
        return None
    return None


def _weak_signature(cert: x509.Certificate) -> str:
    """Go refuses SHA-1 and MD5 signatures on certificates ("insecure algorithm")."""
    oid = cert.signature_algorithm_oid
    return f"certificate signed with an insecure algorithm ({getattr(oid, '_name', None) or oid.dotted_string}) " \
           f"by {name_text(cert.issuer)}"


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
    """:func:`_name_error`, remembered per (certificate, name, address), the certificate by content."""
    key = (cert, name, ip)
    if key in _NAMES:
        return _NAMES[key]
    return _NAMES.remember(key, _name_error(cert, name, ip))


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

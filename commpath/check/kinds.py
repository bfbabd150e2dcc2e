"""The test kinds checks.yaml names: ``TESTS = {kind: function}``, each declaring what it needs.

A test is a vectorized predicate over the flows: it returns an :class:`Outcome` of boolean masks
(the check fires; the flow cannot be judged) and text columns (what would settle it; what was
seen). What a test reads beyond the flow table is declared with it (``needs``), and the engine
derives its rules from the declaration: with ``tls`` a TLS flow without TLS facts cannot be
judged; with ``keylog`` the wording of what would settle it names the key log that was given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .facts import FlowFacts

#: what a test may declare it reads beyond the classified flows
INPUTS = {
    "tls": "TLS facts from the handshake analysis",
    "certs": "the certificate table",
    "ca": "the cluster CA bundle (--ca)",
    "keylog": "a TLS key log (--keylog)",
    "inventory": "the cluster inventory (--inventory)",
    "probe": "an active probe of the inventory's endpoints (commpath probe, then --probe DIR)",
    "config": "the hosts' configuration (agent manifests, or --host-config DIR)",
    "requests": "requests decrypted from key-logged TLS (--keylog)",
}
TLS_ORDER = ["SSL 2.0", "SSL 3.0", "TLS 1.0", "TLS 1.1", "TLS 1.2", "TLS 1.3"]
NO_CLIENT_CERT = ["empty", "not-requested", "inferred-absent"]
ENCRYPTED = ["tls", "ssh", "wireguard", "esp"]
VALIDITY_ERRORS = ("certificate expired", "certificate not yet valid")

NEEDS = {
    "no-tls": "the TLS handshake of these connections (not captured, or the handshake analysis is unavailable)",
    "client-cert": "the client's Certificate message: a capture of the full handshake (TLS 1.2), or --keylog FILE for TLS 1.3",
    "ca": "--ca FILE (or ca_bundle in the inventory) with the cluster CA bundle, to verify the serving certificates",
    "certs": ("the certificates: --keylog FILE with the TLS key log, because TLS 1.3 encrypts them, or a probe "
              "of the servers (commpath probe, then --probe DIR)"),
    "client-cert-expiry": ("the client's certificate, to judge its validity: --keylog FILE, because TLS 1.3 "
                           "encrypts it (a probe sees only the server's)"),
    "certs-keylog": "the certificates: the session keys of these connections in the key log (it has none for them)",
    "version": "the ServerHello of these connections (not captured)",
    "no-handshake": "the TLS handshake of these connections (they started before the capture, or it was not captured)",
    "handshake": "the TCP handshake of these connections (they were already open when the capture started)",
    "stream-start": ("the first bytes of these connections (they were already open when the capture started, "
                     "or their first segments were not captured), to tell TLS from clear text"),
    "payload": "a connection on this path that carries data (only empty connections were captured)",
    "inventory": ("an inventory (--inventory) naming the cluster's hosts and endpoints: every role on this path "
                  "was inferred from ports and handshakes"),
}


@dataclass
class Outcome:
    """A test's answer for every flow."""

    fires: np.ndarray                   # bool: the check fires on the flow
    unknown: np.ndarray                 # bool: the flow cannot be judged with the evidence given
    needs: np.ndarray                   # object: what would settle an unknown flow (else None)
    detail: np.ndarray                  # object: what was seen on a flow the check fires on (else None)
    wire_said: np.ndarray | None = None  # object: what the wire alone showed, where detail joins other sources
    sources: np.ndarray | None = None   # object: evidence entries of other sources (probe, config ...) or None


def _outcome(f: FlowFacts, fires=None, unknown=None) -> Outcome:
    n = f.n
    return Outcome(np.zeros(n, bool) if fires is None else fires, np.zeros(n, bool) if unknown is None else unknown,
                   np.full(n, None, object), np.full(n, None, object))


TESTS: dict = {}


def kind(name: str, needs: tuple[str, ...] = (), params: dict[str, list] | None = None, host: bool = False):
    """Register a test kind; ``needs`` ⊆ INPUTS, ``params``: name → allowed values. A ``host`` test
    judges hosts, not flows: it returns :class:`~commpath.check.evidence.HostHits`, which the engine
    attaches to the flows answered by those hosts (else to the path the host governs)."""
    unknown = set(needs) - set(INPUTS)
    if unknown:
        raise ValueError(f"test {name}: unknown inputs {sorted(unknown)}")

    def register(fn):
        fn.kind, fn.needs, fn.params, fn.host = name, frozenset(needs), dict(params or {}), host
        TESTS[name] = fn
        return fn
    return register


def _hidden_certs_need(f: FlowFacts) -> np.ndarray:
    """What would show each flow's certificates: a key log (TLS 1.3) or the handshake itself."""
    # filled with the two texts themselves: np.where of two texts makes a text per flow (0.14 s a call on 206,400)
    out = np.full(f.n, NEEDS["no-handshake"], dtype=object)
    out[f.visibility.eq("not-visible")] = NEEDS["certs"]
    return out


@kind("plaintext")
def plaintext(f: FlowFacts, params: dict) -> Outcome:
    """Payload that is neither TLS, SSH nor an encrypted underlay."""
    clear = (f.payload > 0) & ~f.app.isin(ENCRYPTED) & ~f.underlay
    # Payload whose start was never read (its first segments were lost: app "none"), or unrecognized
    # bytes of a connection joined mid-stream (they may begin inside a TLS record), shows nothing
    # either way: clear text must be seen from the stream's start to be a finding.
    unseen = clear & (f.app.eq("none") | (f.app.eq("unknown") & ~f.initiator_seen))
    out = _outcome(f, clear & ~unseen, unseen)
    out.needs[unseen] = NEEDS["stream-start"]
    out.detail[out.fires] = f.app.map(lambda a: f"{a or 'unknown'} payload in clear").text(
        "unknown payload in clear")[out.fires]
    return out


@kind("tls")
def tls(f: FlowFacts, params: dict) -> Outcome:
    """Any TLS flow (where TLS itself, without verification or credentials, is the finding)."""
    out = _outcome(f, f.is_tls.copy())
    out.detail[out.fires] = "TLS without certificate verification or client credentials"
    return out


@kind("client-cert-missing", needs=("tls", "keylog"))
def client_cert_missing(f: FlowFacts, params: dict) -> Outcome:
    """An established TLS flow whose client sent no certificate (seen or inferred)."""
    cc = f.client_cert
    out = _outcome(f, f.is_tls & f.has_tls_row & cc.isin(NO_CLIENT_CERT) & f.established)
    out.detail[out.fires] = cc.map(lambda c: f"client certificate: {c}").text()[out.fires]
    out.unknown = (f.is_tls & f.established & ~out.fires & ~cc.isin(["presented", "inferred-presented"])
                   & ~cc.isin(NO_CLIENT_CERT))
    out.needs[out.unknown] = NEEDS["client-cert"]
    return out


def _server_error(text: str) -> str:
    """The server part of a verify error ``"server: ...; client: ..."``."""
    for part in text.split("; client: ")[:1]:
        if part.startswith("server: "):
            return part[len("server: "):]
    return ""


def _self_signed_leaf(f: FlowFacts) -> np.ndarray:
    """The flow's leaf certificate is self-signed and no CA."""
    out = np.zeros(f.n, bool)
    if f.certs is None or "self_signed" not in f.certs or f.tls is None:
        return out
    leaf = f.tls["server_cert_fingerprints"].map(
        lambda v: v[0] if isinstance(v, (list, tuple, np.ndarray)) and len(v) else None)
    ss = f.certs["self_signed"].fillna(False).astype(bool)
    if "is_ca" in f.certs:
        ss &= ~f.certs["is_ca"].fillna(False).astype(bool)
    per_row = leaf.map(ss).fillna(False).to_numpy(bool)
    rows = f.tls_row
    return np.where(rows >= 0, per_row[np.maximum(rows, 0)], False)


@kind("server-cert-untrusted", needs=("tls", "certs", "ca", "keylog", "probe"))
def server_cert_untrusted(f: FlowFacts, params: dict) -> Outcome:
    """A serving certificate that failed verification against the CA, or a self-signed leaf; where
    the wire cannot tell, the probe of the responder settles it."""
    error = f.verify_error.map(_server_error)
    # a chain that fails only for its validity period is cert-expired's finding, not this one
    only_validity = error.map(lambda e: e.startswith(VALIDITY_ERRORS)).text(False).astype(bool)
    bad = f.verified_known & ~f.verified
    out = _outcome(f, f.is_tls & ((bad & ~only_validity) | (~f.verified_known & _self_signed_leaf(f))))
    text = error.map(lambda e: e or "self-signed serving certificate").text("self-signed serving certificate")
    out.detail[out.fires] = text[out.fires]
    out.unknown = f.is_tls & ~out.fires & ~f.verified_known
    out.needs[out.unknown] = np.where(f.certs_visible(), NEEDS["ca"], _hidden_certs_need(f))[out.unknown]
    from ._probe_kinds import settle_serving_cert
    return settle_serving_cert(f, out)


@kind("cert-expired", needs=("tls", "certs", "keylog", "probe"))
def cert_expired(f: FlowFacts, params: dict) -> Outcome:
    """A certificate the flow carried was outside its validity at the flow's start; where the wire
    cannot see the certificates, the probe of the responder settles the serving certificate's."""
    from ._probe_kinds import settle_cert_expiry
    return settle_cert_expiry(f, _cert_expired_on_the_wire(f))


def _cert_expired_on_the_wire(f: FlowFacts) -> Outcome:
    import pandas as pd
    visible = f.certs_visible()
    out = _outcome(f, unknown=f.is_tls & ~visible)
    out.needs[out.unknown] = _hidden_certs_need(f)[out.unknown]
    if f.certs is None or "not_after" not in f.certs:
        return out
    pos = np.flatnonzero(visible & f.is_tls)
    fps = [a + b for a, b in zip(f.tls_list("server_cert_fingerprints", pos), f.tls_list("client_cert_fingerprints", pos))]
    pairs = pd.DataFrame({"pos": pos, "fp": fps}).explode("fp").dropna()
    pairs = pairs.join(f.certs[["not_before", "not_after"]], on="fp", how="inner")
    if not len(pairs):
        return out
    at = pd.to_datetime(f.ts[pairs["pos"].to_numpy(int)], unit="s", utc=True)
    bad = pairs[(pairs["not_before"].to_numpy() > at) | (pairs["not_after"].to_numpy() < at)].drop_duplicates("pos")
    where = bad["pos"].to_numpy(int)
    out.fires[where] = True
    out.detail[where] = [f"certificate {fp[:16]}… valid {a:%Y-%m-%d} .. {b:%Y-%m-%d}"
                         for fp, a, b in zip(bad["fp"], bad["not_before"], bad["not_after"])]
    out.unknown &= ~out.fires
    return out


@kind("tls-version-weak", needs=("tls",), params={"minimum": TLS_ORDER})
def tls_version_weak(f: FlowFacts, params: dict) -> Outcome:
    """A TLS flow that negotiated a version below ``minimum`` (default TLS 1.2)."""
    minimum = params.get("minimum", "TLS 1.2")
    weak = TLS_ORDER[: TLS_ORDER.index(minimum)]
    out = _outcome(f, f.is_tls & f.version.isin(weak))
    out.detail[out.fires] = f.version.text()[out.fires]
    out.unknown = f.is_tls & f.version.missing()
    out.needs[out.unknown] = NEEDS["version"]
    return out


@kind("any-flow")
def any_flow(f: FlowFacts, params: dict) -> Outcome:
    """Every flow on the check's paths (the path itself is the finding)."""
    return _outcome(f, np.ones(f.n, bool))


@kind("konnectivity-bypass", needs=("inventory",))
def konnectivity_bypass(f: FlowFacts, params: dict) -> Outcome:
    """A direct control-plane to node flow while Konnectivity is enabled (inventory, or agents seen)."""
    out = _outcome(f, np.full(f.n, f.konnectivity_enabled))
    out.detail[out.fires] = "direct control-plane to node connection while Konnectivity is enabled"
    return out


@kind("konnectivity-reversed")
def konnectivity_reversed(f: FlowFacts, params: dict) -> Outcome:
    """A Konnectivity flow dialled by the server side."""
    reversed_ = f.src_role.eq("konnectivity-server")
    # only a captured handshake proves who dialled; a connection already open when the capture
    # started shows its first packet, not its initiator
    out = _outcome(f, reversed_ & f.initiator_seen)
    out.detail[out.fires] = "initiated by the Konnectivity server side (SYN seen)"
    out.unknown = reversed_ & ~out.fires
    out.needs[out.unknown] = NEEDS["handshake"]
    return out


@kind("certs-not-visible", needs=("tls", "keylog"))
def certs_not_visible(f: FlowFacts, params: dict) -> Outcome:
    """TLS flows whose certificates are encrypted (TLS 1.3 without the session keys)."""
    out = _outcome(f, f.is_tls & f.has_tls_row & f.visibility.eq("not-visible"))
    why = "no keys for them in the key log" if f.keylog_given else "no key log"
    out.detail[out.fires] = f.version.map(lambda v: f"{v or 'TLS'} certificates encrypted; {why}").text(
        f"TLS certificates encrypted; {why}")[out.fires]
    return out


def run_test(test, f: FlowFacts, params: dict) -> Outcome:
    """Run one test and apply the rules its declared needs imply."""
    out = test(f, params)
    if "keylog" in test.needs and f.keylog_given:
        out.needs = np.where(out.needs == NEEDS["certs"], NEEDS["certs-keylog"], out.needs)
    if "tls" in test.needs:
        # without any TLS facts for a TLS flow, a test that reads them cannot judge it
        blind = f.is_tls & ~f.has_tls_row & ~out.fires
        out.unknown = out.unknown | blind
        out.needs[blind] = NEEDS["no-tls"]
    out.unknown &= ~out.fires
    return out


from . import _probe_kinds  # noqa: E402,F401  (registers the probe's tests)
from . import _config_kinds, _config_sources  # noqa: E402,F401  (registers the host configuration's tests)

__all__ = ["INPUTS", "NEEDS", "Outcome", "TESTS", "TLS_ORDER", "kind", "run_test"]

"""Tests that read the active probe's table: anonymous kubelet access, the read-only port, weak TLS
versions a server accepts, and the serving certificate where the wire cannot see it."""

from __future__ import annotations

import numpy as np

from .evidence import HostHits, certificate_said, entry, no_hits, probe_hits, probe_said, probe_where, target_name
from .facts import FlowFacts
from .kinds import NEEDS, NO_CLIENT_CERT, TLS_ORDER, VALIDITY_ERRORS, Outcome, kind


def _probe(f: FlowFacts):
    probe = f.tables.get("probe")
    return probe if probe is not None and len(probe) else None


def _flags(probe, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(value, known) of a nullable boolean column of the probe table."""
    col = probe[name]
    return col.fillna(False).to_numpy(bool), col.notna().to_numpy(bool)


def settle_serving_cert(f: FlowFacts, out: Outcome) -> Outcome:
    """Flows whose serving certificate the wire could not judge, settled by the probe of their
    responder: a self-signed or unverifiable certificate fires (wire and probe both cited), a
    verified chain passes; a probe that saw no certificate leaves the flow unknown."""
    probe = _probe(f)
    if probe is None or not out.unknown.any():
        return out
    rows = f.fact_rows("probe")
    candidates = out.unknown & (rows >= 0)
    if not candidates.any():
        return out
    self_signed, _ = _flags(probe, "self_signed")
    verified, verified_known = _flags(probe, "chain_verified")
    errors = probe["verify_error"].astype("string").fillna("").to_numpy(object)
    validity_only = np.array([str(e).startswith(VALIDITY_ERRORS) for e in errors], bool)
    bad_row = self_signed | (verified_known & ~verified & ~validity_only)
    settled_row = self_signed | verified_known
    r = np.maximum(rows, 0)
    fires = candidates & bad_row[r]
    settled = candidates & settled_row[r]
    records = probe.to_dict("records")
    said_row = np.array([f"{target_name(x)} {certificate_said(x)}" for x in records], object)
    entries = [[entry("probe", probe_said(x), probe_where(x))] for x in records]
    wire = f.version.map(lambda v: f"{v or 'TLS'}, serving certificate not visible").text(
        "TLS, serving certificate not visible")
    out.fires = out.fires | fires
    out.unknown = out.unknown & ~settled
    out.detail[fires] = [f"wire: {w}; probe: {p}" for w, p in zip(wire[fires], said_row[r[fires]])]
    out.wire_said = np.full(f.n, None, object) if out.wire_said is None else out.wire_said
    out.wire_said[fires] = wire[fires]
    out.sources = np.full(f.n, None, object) if out.sources is None else out.sources
    out.sources[np.flatnonzero(fires)] = [entries[i] for i in r[fires]]
    return out


def settle_cert_expiry(f: FlowFacts, out: Outcome) -> Outcome:
    """Flows whose certificates the wire could not see, judged by the probe of their responder: the
    serving certificate probed covers the connection's start (valid), or had expired before it
    (fires: a certificate probed later cannot have been replaced by an older one). A certificate
    issued after the connection says nothing about it. The client's certificate stays unknown where
    the client sent one (TLS 1.3 encrypts it; the probe sees only the server's)."""
    probe = _probe(f)
    if probe is None or not out.unknown.any() or "leaf_not_after" not in probe:
        return out
    rows = f.fact_rows("probe")
    r = np.maximum(rows, 0)
    before = probe["leaf_not_before"].to_numpy(float, na_value=np.nan) if "leaf_not_before" in probe else \
        np.full(len(probe), np.nan)
    after = probe["leaf_not_after"].to_numpy(float, na_value=np.nan)
    known = out.unknown & (rows >= 0) & ~np.isnan(after[r]) & ~np.isnan(f.ts)
    expired = known & (f.ts > after[r])
    covered = known & ~expired & (before[r] <= f.ts)
    records = probe.to_dict("records")
    entries = [[entry("probe", probe_said(x), probe_where(x))] for x in records]
    client_hidden = ~f.client_cert.isin(NO_CLIENT_CERT)
    out.fires = out.fires | expired
    out.detail[expired] = [f"probe: {target_name(records[i])} serves a certificate that expired on "
                           f"{_day(after[i])}, before this connection" for i in r[expired]]
    out.sources = np.full(f.n, None, object) if out.sources is None else out.sources
    out.sources[np.flatnonzero(expired)] = [entries[i] for i in r[expired]]
    out.wire_said = np.full(f.n, None, object) if out.wire_said is None else out.wire_said
    out.wire_said[expired] = "certificates not visible (encrypted)"
    server_settled = covered | expired
    out.unknown = out.unknown & ~expired & ~(covered & ~client_hidden)
    still = server_settled & out.unknown          # the server's is settled, the client's is not
    out.needs[still] = NEEDS["client-cert-expiry"]
    return out


def _day(ts: float) -> str:
    import datetime as _dt
    return _dt.datetime.fromtimestamp(float(ts), _dt.timezone.utc).strftime("%Y-%m-%d")


def _status_2xx(probe, name: str) -> np.ndarray:
    status = probe[name].astype("Int64")
    return ((status >= 200) & (status < 300)).fillna(False).to_numpy(bool)


@kind("probe-kubelet-anonymous", needs=("probe",), host=True)
def probe_kubelet_anonymous(f: FlowFacts, params: dict) -> HostHits:
    """A kubelet that answered GET /pods without credentials with 2xx (anonymous auth and AlwaysAllow)."""
    probe = _probe(f)
    if probe is None:
        return no_hits()
    hit = probe["target"].astype("string").eq("kubelet").fillna(False).to_numpy(bool) & _status_2xx(
        probe, "anonymous_pods_status")
    status = probe["anonymous_pods_status"][hit]
    return probe_hits(probe, hit, [f"probe: GET /pods without credentials answered {int(s)}" for s in status])


@kind("probe-readonly-port", needs=("probe",), host=True)
def probe_readonly_port(f: FlowFacts, params: dict) -> HostHits:
    """A kubelet read-only port that answered plain HTTP."""
    probe = _probe(f)
    if probe is None:
        return no_hits()
    hit = (probe["target"].astype("string").eq("kubelet-readonly").fillna(False).to_numpy(bool)
           & probe["anonymous_healthz_status"].notna().to_numpy(bool))
    status = probe["anonymous_healthz_status"][hit]
    return probe_hits(probe, hit, [f"probe: GET /healthz over plain HTTP answered {int(s)}" for s in status])


@kind("probe-tls-version-weak", needs=("probe",), host=True, params={"minimum": TLS_ORDER})
def probe_tls_version_weak(f: FlowFacts, params: dict) -> HostHits:
    """A TLS server that completed a handshake with a version below ``minimum`` (default TLS 1.2)."""
    probe = _probe(f)
    if probe is None:
        return no_hits()
    weak = set(TLS_ORDER[: TLS_ORDER.index(params.get("minimum", "TLS 1.2"))])
    accepted = [list(v) if v is not None and not isinstance(v, float) else [] for v in probe["versions_accepted"]]
    below = [[v for v in a if v in weak] for a in accepted]
    hit = np.array([bool(b) for b in below], bool)
    return probe_hits(probe, hit, [f"probe: the server accepts {', '.join(b)}" for b, h in zip(below, hit) if h])


__all__ = ["probe_kubelet_anonymous", "probe_readonly_port", "probe_tls_version_weak", "settle_serving_cert"]

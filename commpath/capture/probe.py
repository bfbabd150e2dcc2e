"""The active probe: each inventory endpoint looked at from inside the cluster, with bounded connections.

Per TLS target: one handshake (version, cipher, leaf), one ``openssl s_client`` (chain and
CertificateRequest), a sweep of four versions and at most twelve weak TLS 1.2 suites (Go's insecure
list); per kubelet two GETs without credentials (``/pods``, ``/healthz``); per read-only port one
``GET /healthz``. Only the addresses given are contacted, every connection has a timeout, the run
stops opening connections at ``max_connections``, and a target that hangs, resets or speaks something
else gets one line and is left; the others are kept.
"""

from __future__ import annotations

import http.client
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .probe_table import conform_probe, empty_probe
from .probe_tls import (SWEEP_VERSIONS, WEAK_CIPHERS, TargetError, client_context, handshake, leaf_facts,
                        names_match, s_client, verify_chain)

#: what an inventory endpoint is
TARGETS = ("apiserver", "kubelet", "kubelet-readonly", "konnectivity-server", "etcd")


@dataclass(frozen=True)
class Target:
    """One endpoint to probe: what it is, whose it is, and the names its certificate should carry."""

    target: str
    host: str
    address: str
    port: int
    names: tuple[str, ...] = ()


class Budget:
    """The connections the run may still open, shared by the targets' threads."""

    def __init__(self, left: int):
        self.left, self.used = left, 0
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            if self.left <= 0:
                raise TargetError("connection budget exhausted (--max-connections): not probed further")
            self.left -= 1
            self.used += 1


class Tally:
    """One target's connections, each taken from the run's budget."""

    def __init__(self, budget: Budget):
        self.budget, self.used = budget, 0

    def take(self) -> None:
        self.budget.take()
        self.used += 1


@dataclass
class Settings:
    timeout: float = 5.0
    ca_pem: bytes | None = None         # cluster CA bundle
    etcd_ca_pem: bytes | None = None    # etcd's own CA (kubeadm: /etc/kubernetes/pki/etcd/ca.crt)
    sweep: bool = True
    warnings: list[str] = field(default_factory=list)


def _status(address: str, port: int, path: str, timeout: float, tls: bool) -> int:
    """HTTP status of a GET without credentials (the body is not read)."""
    conn = (http.client.HTTPSConnection(address, port, timeout=timeout, context=client_context()) if tls
            else http.client.HTTPConnection(address, port, timeout=timeout))
    try:
        conn.request("GET", path, headers={"Accept": "application/json", "User-Agent": "commpath-probe"})
        return conn.getresponse().status
    except TimeoutError:
        raise TargetError(f"GET {path}: no answer within {timeout:g} s (hangs)") from None
    except ConnectionRefusedError:
        raise TargetError("connection refused (nothing listens on the port)") from None
    except ConnectionResetError:
        raise TargetError(f"GET {path}: connection reset") from None
    except (http.client.HTTPException, OSError) as exc:
        text = str(exc) or type(exc).__name__
        if isinstance(exc, http.client.BadStatusLine) or "wrong version" in text.lower():
            raise TargetError(f"GET {path}: does not speak {'HTTPS' if tls else 'HTTP'} ({text[:60]!r})") from None
        raise TargetError(f"GET {path}: {text[:80]}") from None
    finally:
        conn.close()


#: how a server may turn down an offer it does not take, besides a TLS alert
_REFUSALS = ("reset", "closed", "version", "protocol")


def _accepted(t: Target, ctx, s: Settings) -> bool:
    """One handshake of the sweep: completed, or turned down (an alert, a reset, a close); a target
    that hangs stops the sweep."""
    try:
        return handshake(t.address, t.port, ctx, s.timeout).ok
    except TargetError as exc:
        if any(word in str(exc) for word in _REFUSALS):
            return False
        raise


def _tls_facts(t: Target, row: dict, budget: Tally, s: Settings) -> None:
    """Handshake, chain, CertificateRequest and the version/cipher sweep of one TLS target."""
    budget.take()
    first = handshake(t.address, t.port, client_context(), s.timeout)
    if not first.ok:
        raise TargetError(f"refused our TLS handshake ({first.alert})")
    row.update(tls=True, tls_version=first.version, cipher=first.cipher)
    budget.take()
    sc = s_client(t.address, t.port, s.timeout)
    row.update(client_cert_requested=sc.client_cert_requested, client_ca_names=sc.client_ca_names)
    if first.leaf_der:
        row.update(leaf_facts(first.leaf_der))
        row["names_match"] = names_match(row["leaf_sans"], [*t.names, t.address])
        ca = s.etcd_ca_pem if t.target == "etcd" and s.etcd_ca_pem else s.ca_pem
        if ca is not None:
            ok, why = verify_chain(sc.chain_pem, first.leaf_der, ca, t.address)
            row.update(chain_verified=ok, verify_error=why)
    if not s.sweep:
        return
    accepted, refused = [], []
    for name, version in SWEEP_VERSIONS:
        try:
            ctx = client_context(version)
        except (ValueError, OSError):
            continue        # this OpenSSL cannot offer the version: untested, not refused
        budget.take()
        (accepted if _accepted(t, ctx, s) else refused).append(name)
    row.update(versions_accepted=accepted, versions_refused=refused, min_version=accepted[0] if accepted else None)
    weak = []
    if "TLS 1.2" in accepted:
        for suite in WEAK_CIPHERS:
            try:
                ctx = client_context(SWEEP_VERSIONS[2][1], suite)
            except Exception:   # ssl.SSLError: this OpenSSL has no such suite: untested
                continue
            budget.take()
            if _accepted(t, ctx, s):
                weak.append(suite)
    row["weak_ciphers_accepted"] = weak


def probe_target(t: Target, run_budget: Budget, s: Settings) -> dict:
    """One row of the probe table; ``error`` says in one line why it stopped early."""
    row: dict = {"target": t.target, "host": t.host, "address": t.address, "port": t.port, "active": True,
                 "probed_at": time.time()}
    budget = Tally(run_budget)
    try:
        if t.target == "kubelet-readonly":
            budget.take()
            row["anonymous_healthz_status"] = _status(t.address, t.port, "/healthz", s.timeout, tls=False)
        else:
            _tls_facts(t, row, budget, s)
            if t.target == "kubelet":
                for path, col in (("/pods", "anonymous_pods_status"), ("/healthz", "anonymous_healthz_status")):
                    budget.take()
                    row[col] = _status(t.address, t.port, path, s.timeout, tls=True)
    except TargetError as exc:
        row["error"] = str(exc)
        if row.get("tls") is None and t.target != "kubelet-readonly":
            row["tls"] = False if "speaks" in str(exc) or "not speak" in str(exc) else None
    row["connections"] = budget.used
    return row


def run_probe(targets: list[Target], settings: Settings, *, max_connections: int = 400, parallel: int = 4,
              on_row=None):
    """Probe every target (``parallel`` at a time, each target's connections one after another):
    the probe table and the number of connections made."""
    import pandas as pd
    budget = Budget(max_connections)
    rows: list[dict] = []
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for row in pool.map(lambda t: probe_target(t, budget, settings), targets):
            rows.append(row)
            if on_row is not None:
                on_row(row)
    table = conform_probe(pd.DataFrame(rows)) if rows else empty_probe()
    return table, budget.used


__all__ = ["Budget", "Settings", "TARGETS", "Target", "probe_target", "run_probe"]

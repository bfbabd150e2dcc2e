"""Tests that read the hosts' configuration (the ``config`` table): what the components were told to do.

Each test is a host test (:class:`~commpath.check.evidence.HostHits`). A setting of the connecting
side (the apiserver's ``--kubelet-certificate-authority``, a kubelet's client certificate rotation)
is a hit on the *initiator* address: the engine attaches it to the flows that host opened on the
check's paths. A setting of the serving side (a kubelet's anonymous access, a server's minimum TLS
version) is a hit on the *responder* address and port. A host the captures did not show still gets
its finding, on the path its target governs.
"""

from __future__ import annotations

import json
import re

import numpy as np

from ..capture.probe_tls import INSECURE_CIPHER_SUITES
from ..decode.hostconfig import tls_version
from .evidence import HostHits, entry, no_hits, probe_hits
from .facts import FlowFacts
from .kinds import TLS_ORDER, kind

#: proxy protocols of an egress selection that route through Konnectivity
_KONNECTIVITY_PROTOCOLS = {"grpc", "httpconnect"}


def _config(f: FlowFacts):
    t = f.tables.get("config")
    return t if t is not None and len(t) else None


def _effective(config):
    """One row per process and setting: the value each component uses, as plain records."""
    eff = config[config["effective"].fillna(False).astype(bool)]
    return eff.to_dict("records")


def _processes(config) -> dict[tuple, dict]:
    """(host, component, pid) -> {"host", "component", "pid", "addresses", "settings": {key: record}}."""
    out: dict[tuple, dict] = {}
    for r in _effective(config):
        pid = None if r["pid"] is None or r["pid"] != r["pid"] or str(r["pid"]) == "<NA>" else int(r["pid"])
        k = (str(r["host"]), str(r["component"]), pid)
        addresses = [str(a) for a in (r.get("addresses") if r.get("addresses") is not None else [])]
        # a host whose addresses nobody gave is named instead: its findings say no connection showed it
        p = out.setdefault(k, {"host": k[0], "component": k[1], "pid": pid, "settings": {},
                               "addresses": addresses or [k[0]]})
        p["settings"][str(r["key"])] = r
    return out


def _value(p: dict, key: str) -> str | None:
    r = p["settings"].get(key)
    v = None if r is None else r["value"]
    return None if v is None or v != v or str(v) == "<NA>" else str(v)


def _is_true(v: str | None) -> bool:
    return (v or "").strip().lower() in ("true", "1", "yes")


def said(p: dict, key: str) -> str:
    """``--kubelet-certificate-authority unset (default: Kubernetes v1.36)`` / ``readOnlyPort 0 (from FILE)``."""
    r = p["settings"].get(key)
    if r is None:
        return f"{key} not recorded"
    v = _value(p, key)
    shown = "unset" if v is None else v
    if bool(r["is_default"]):
        release = str(r.get("defaults_from") or "").split(":")[0]
        return f"{r['setting']} {shown} (default{': ' + release if release else ''})"
    return f"{r['setting']} {shown} ({'command line' if r['source'] == 'cmdline' else 'in ' + str(r['source'])})"


def where(p: dict, keys: list[str]) -> str:
    """``cp1: kube-apiserver (pid 812) command line, /etc/kubernetes/kubelet.yaml``."""
    sources = []
    for k in keys:
        r = p["settings"].get(k)
        if r is not None:
            s = "defaults" if bool(r["is_default"]) else ("command line" if r["source"] == "cmdline" else str(r["source"]))
            if s not in sources:
                sources.append(s)
    pid = f" (pid {p['pid']})" if p["pid"] is not None else ""
    return f"{p['host']}: {p['component']}{pid} {', '.join(sources) or 'configuration'}"


def config_entry(p: dict, keys: list[str], extra: str = "") -> dict:
    return entry("config", f"{p['host']} {p['component']}: " + "; ".join(said(p, k) for k in keys) + extra,
                 where(p, keys))


class _Hits:
    """Collects hits, one per (side, address, port), merging the evidence of several sources."""

    def __init__(self):
        self.rows: dict[tuple, dict] = {}

    def add(self, target: str, side: str, address: str, port: int, detail: str, evidence: list[dict],
            group: str | None = None) -> None:
        k = (side, address, int(port))
        if k in self.rows:
            row = self.rows[k]
            if detail not in row["detail"]:
                row["detail"] += f"; {detail}"
            row["evidence"] += [e for e in evidence if e not in row["evidence"]]
        else:
            self.rows[k] = {"target": target, "side": side, "address": address, "port": int(port), "detail": detail,
                            "evidence": list(evidence), "group": group or f"{address}:{port}"}

    def add_hits(self, hits: HostHits, side: str = "responder") -> None:
        for i in range(len(hits)):
            self.add(hits.target[i], side, hits.address[i], hits.port[i], hits.detail[i], hits.evidence[i])

    def result(self) -> HostHits:
        rows = list(self.rows.values())
        return HostHits(target=[r["target"] for r in rows], address=[r["address"] for r in rows],
                        port=[r["port"] for r in rows], detail=[r["detail"] for r in rows],
                        evidence=[r["evidence"] for r in rows], side=[r["side"] for r in rows],
                        group=[r["group"] for r in rows])


def _group(p: dict) -> str:
    """One process's hits (one per address of its host) make one finding where no flow showed any."""
    return f"{p['host']}/{p['component']}/{p['pid']}"


def _kubelet_endpoints(p: dict) -> list[tuple[str, int]]:
    """Where a kubelet serves: its ``address`` (all the host's addresses for 0.0.0.0) and ``port``."""
    port = int(_value(p, "port") or 10250)
    addr = _value(p, "address") or "0.0.0.0"
    addrs = p["addresses"] if addr in ("0.0.0.0", "::", "") else [addr]
    return [(a, port) for a in addrs]


def _apiserver_endpoints(p: dict) -> list[tuple[str, int]]:
    port = int(_value(p, "--secure-port") or 6443)
    return [(a, port) for a in p["addresses"]]


_URL = re.compile(r"^[a-z]+://\[?([^\]/]+?)\]?:(\d+)$", re.I)


def _etcd_endpoints(p: dict) -> list[tuple[str, int]]:
    out = []
    for url in (_value(p, "listen-client-urls") or "").split(","):
        m = _URL.match(url.strip())
        if m:
            host, port = m.group(1), int(m.group(2))
            for a in (p["addresses"] if host in ("0.0.0.0", "::") else [host]):
                out.append((a, port))
    return out


# ------------------------------------------------------------------ connecting side

@kind("config-kubelet-ca-unset", needs=("config",), host=True)
def kubelet_ca_unset(f: FlowFacts, params: dict) -> HostHits:
    """An apiserver without ``--kubelet-certificate-authority``: it does not verify kubelets' serving certificates."""
    config = _config(f)
    hits = _Hits()
    for p in (_processes(config) if config is not None else {}).values():
        if p["component"] != "kube-apiserver" or _value(p, "--kubelet-certificate-authority") is not None:
            continue
        ev = [config_entry(p, ["--kubelet-certificate-authority"],
                           ": the kubelets' serving certificates are not verified")]
        for a, port in _apiserver_endpoints(p):
            hits.add("apiserver", "initiator", a, port,
                     f"config: {p['host']} kube-apiserver has no --kubelet-certificate-authority", ev, _group(p))
    return hits.result()


@kind("config-kubelet-rotation-off", needs=("config",), host=True)
def kubelet_rotation_off(f: FlowFacts, params: dict) -> HostHits:
    """A kubelet whose client certificate is not rotated (``rotateCertificates`` false)."""
    config = _config(f)
    hits = _Hits()
    for p in (_processes(config) if config is not None else {}).values():
        if p["component"] != "kubelet" or _is_true(_value(p, "rotateCertificates")):
            continue
        ev = [config_entry(p, ["rotateCertificates"], ": its client certificate expires without renewal")]
        for a, port in _kubelet_endpoints(p):
            hits.add("kubelet", "initiator", a, port, f"config: {p['host']} kubelet rotateCertificates false", ev,
                     _group(p))
    return hits.result()


def _egress_to_konnectivity(p: dict) -> bool:
    proto = _value(p, "egressSelections[cluster].connection.proxyProtocol")
    return _value(p, "--egress-selector-config-file") is not None and (proto or "").lower() in _KONNECTIVITY_PROTOCOLS


@kind("config-konnectivity-not-enforced", needs=("config",), host=True)
def konnectivity_not_enforced(f: FlowFacts, params: dict) -> HostHits:
    """An apiserver whose egress selector does not send ``cluster`` traffic through Konnectivity while
    Konnectivity agents connect (seen on the wire) or run (host configuration)."""
    config = _config(f)
    if config is None:
        return no_hits()
    procs = _processes(config)
    agents_config = sorted({p["host"] for p in procs.values() if p["component"] == "konnectivity-agent"})
    agents_wire = bool((f.path.eq("konnectivity") & f.src_role.eq("konnectivity-agent")).any())
    if not agents_config and not agents_wire:
        return no_hits()
    why = "Konnectivity agents " + " and ".join(
        ([f"connect (wire: {int(f.path.eq('konnectivity').sum())} konnectivity connections)"] if agents_wire else [])
        + ([f"run on {', '.join(agents_config)} (config)"] if agents_config else []))
    hits = _Hits()
    for p in procs.values():
        if p["component"] != "kube-apiserver" or _egress_to_konnectivity(p):
            continue
        keys = ["--egress-selector-config-file"]
        if _value(p, "--egress-selector-config-file") is not None:
            keys.append("egressSelections[cluster].connection.proxyProtocol")
        ev = [config_entry(p, keys, f": its cluster traffic goes direct while {why}")]
        for a, port in _apiserver_endpoints(p):
            hits.add("konnectivity-server", "initiator", a, port,
                     f"config: {p['host']} kube-apiserver sends cluster traffic direct; {why}", ev, _group(p))
    return hits.result()


# ------------------------------------------------------------------ serving side (joined with the probe)

def _config_anonymous(config) -> _Hits:
    hits = _Hits()
    for p in (_processes(config) if config is not None else {}).values():
        if p["component"] != "kubelet" or not _is_true(_value(p, "authentication.anonymous.enabled")):
            continue
        mode = _value(p, "authorization.mode") or "?"
        ev = [config_entry(p, ["authentication.anonymous.enabled", "authorization.mode"])]
        detail = (f"config: {p['host']} kubelet accepts anonymous requests"
                  + (" and authorizes every request (AlwaysAllow)" if mode == "AlwaysAllow" else f" (authorization {mode})"))
        for a, port in _kubelet_endpoints(p):
            hits.add("kubelet", "responder", a, port, detail, ev, _group(p))
    return hits


@kind("kubelet-anonymous", needs=("probe", "config"), host=True)
def kubelet_anonymous(f: FlowFacts, params: dict) -> HostHits:
    """A kubelet whose API answered GET /pods without credentials (probe), or that is configured to accept
    anonymous requests (config: ``authentication.anonymous.enabled`` / ``--anonymous-auth``)."""
    from ._probe_kinds import probe_kubelet_anonymous
    hits = _config_anonymous(_config(f))
    hits.add_hits(probe_kubelet_anonymous(f, params))
    return hits.result()


def _config_tls_weak(config, minimum: str) -> _Hits:
    weak = set(TLS_ORDER[: TLS_ORDER.index(minimum)])
    hits = _Hits()
    servers = {"kube-apiserver": ("--tls-min-version", "apiserver", _apiserver_endpoints),
               "kubelet": ("tlsMinVersion", "kubelet", _kubelet_endpoints),
               "etcd": ("tls-min-version", "etcd", _etcd_endpoints)}
    for p in (_processes(config) if config is not None else {}).values():
        if p["component"] not in servers:
            continue
        key, target, endpoints = servers[p["component"]]
        version = tls_version(_value(p, key))
        if version not in weak:
            continue
        ev = [config_entry(p, [key])]
        for a, port in endpoints(p):
            hits.add(target, "responder", a, port, f"config: {p['host']} {p['component']} allows {version}", ev,
                     _group(p))
    return hits


@kind("tls-min-version-weak", needs=("probe", "config"), host=True, params={"minimum": TLS_ORDER})
def tls_min_version_weak(f: FlowFacts, params: dict) -> HostHits:
    """A server that accepted a version below ``minimum`` (probe), or whose minimum TLS version is set below
    it (config: kube-apiserver ``--tls-min-version``, kubelet ``tlsMinVersion``, etcd ``--tls-min-version``)."""
    from ._probe_kinds import probe_tls_version_weak
    hits = _config_tls_weak(_config(f), params.get("minimum", "TLS 1.2"))
    hits.add_hits(probe_tls_version_weak(f, params))
    return hits.result()


def _suites(value: str | None) -> list[str]:
    """A cipher-suite setting as names: a comma-separated flag or a config file's list (kept as JSON)."""
    v = (value or "").strip()
    if v.startswith("["):
        try:
            return [str(x).strip() for x in json.loads(v)]
        except ValueError:
            pass
    return [x.strip() for x in v.strip("[]").split(",") if x.strip()]


@kind("config-cipher-suites-weak", needs=("probe", "config"), host=True)
def cipher_suites_weak(f: FlowFacts, params: dict) -> HostHits:
    """A server configured to offer a suite of Go's crypto/tls ``InsecureCipherSuites()`` (config: kube-apiserver
    ``--tls-cipher-suites``, kubelet ``tlsCipherSuites``, etcd ``--cipher-suites``), or that completed a TLS 1.2
    handshake offering only one of them (probe: its sweep offers the same list). Unset means Go's defaults,
    which contain none of them."""
    config = _config(f)
    hits = _Hits()
    servers = {"kube-apiserver": ("--tls-cipher-suites", "apiserver", _apiserver_endpoints),
               "kubelet": ("tlsCipherSuites", "kubelet", _kubelet_endpoints),
               "etcd": ("cipher-suites", "etcd", _etcd_endpoints)}
    insecure = {k.upper() for k in INSECURE_CIPHER_SUITES}
    for p in (_processes(config) if config is not None else {}).values():
        if p["component"] not in servers:
            continue
        key, target, endpoints = servers[p["component"]]
        weak = [s for s in _suites(_value(p, key)) if s.upper() in insecure]
        if not weak:
            continue
        ev = [config_entry(p, [key], f": {', '.join(weak)} on Go's insecure list")]
        for a, port in endpoints(p):
            hits.add(target, "responder", a, port, f"config: {p['host']} {p['component']} offers {', '.join(weak)}",
                     ev, _group(p))
    probe = f.tables.get("probe")
    if probe is not None and len(probe) and "weak_ciphers_accepted" in probe:
        by_openssl = {v: k for k, v in INSECURE_CIPHER_SUITES.items()}
        accepted = [[by_openssl.get(str(x), str(x)) for x in v] if v is not None and not isinstance(v, float) else []
                    for v in probe["weak_ciphers_accepted"]]
        mask = np.array([bool(a) for a in accepted], bool)
        hits.add_hits(probe_hits(probe, mask, [f"probe: the server accepts {', '.join(a)} (Go's insecure list)"
                                               for a in accepted if a]))
    return hits.result()


__all__ = ["cipher_suites_weak", "config_entry", "konnectivity_not_enforced", "kubelet_anonymous", "kubelet_ca_unset",
           "kubelet_rotation_off", "said", "tls_min_version_weak", "where"]

"""Host configuration against the other sources: the CA conflict finding, and what config says per path.

The conflict: an apiserver's ``--kubelet-certificate-authority`` names a CA bundle, yet a kubelet
serves a certificate outside it, as the probe saw it or the wire showed it (TLS 1.2, or a key log).
"Outside" is judged by names and fingerprints, which is what the probe table and the certificate
table keep: the leaf is self-signed and not itself in the bundle, or its issuer is none of the
bundle's subjects. The apiserver will then refuse that kubelet (exec, logs, port-forward fail), or
the bundle is not the one the operator thinks it is: either way the sources disagree.
"""

from __future__ import annotations

import json

import numpy as np

from ..capture.host_settings import load as load_settings
from ._config_kinds import _Hits, _processes, _value, config_entry, said, where
from .evidence import PATH_SAYERS, HostHits, entry, no_hits, probe_said, probe_where
from .facts import FlowFacts
from .kinds import kind

_CA = "--kubelet-certificate-authority"


def _bundle(p: dict) -> tuple[set[str], set[str]] | None:
    """(fingerprints, subjects) of the certificates an apiserver's --kubelet-certificate-authority holds."""
    fps, subjects = set(), set()
    for key, r in p["settings"].items():
        if key.startswith(f"{_CA}.certificates["):
            try:
                fact = json.loads(str(r["value"]))
            except ValueError:
                continue
            fps.add(str(fact.get("sha256", "")).lower())
            subjects.update(str(s) for s in fact.get("subject") or [])
    return (fps, subjects) if fps else None


def _outside(bundle, fingerprint, issuer, self_signed) -> bool:
    fps, subjects = bundle
    if fingerprint and str(fingerprint).lower() in fps:
        return False
    if self_signed is True:
        return True
    return bool(issuer) and str(issuer) not in subjects


def _known(v) -> bool:
    return v is not None and v == v and str(v) != "<NA>"


def _probe_conflicts(f: FlowFacts, p: dict, bundle, ev_config, hits: _Hits) -> None:
    probe = f.tables.get("probe")
    if probe is None or not len(probe):
        return
    for r in probe.to_dict("records"):
        if str(r["target"]) != "kubelet" or not _known(r.get("leaf_fingerprint")):
            continue
        self_signed = bool(r["self_signed"]) if _known(r.get("self_signed")) else None
        if _outside(bundle, r["leaf_fingerprint"], r.get("leaf_issuer"), self_signed):
            hits.add("kubelet", "responder", str(r["address"]), int(r["port"]),
                     f"config: {p['host']} kube-apiserver trusts its {_CA} bundle; probe: the kubelet's serving "
                     f"certificate is issued by {r.get('leaf_issuer') or '?'}, outside it",
                     [ev_config, entry("probe", probe_said(r), probe_where(r))])


def _wire_conflicts(f: FlowFacts, p: dict, bundle, ev_config, hits: _Hits) -> None:
    """Flows on apiserver-to-kubelet from this apiserver whose visible leaf is outside the bundle."""
    if f.tls is None or f.certs is None or f.dst is None or not len(f.certs):
        return
    on = f.path.eq("apiserver-to-kubelet") & f.has_tls_row
    if not on.any():
        return
    pos = np.flatnonzero(on)
    leaves = f.tls_list("server_cert_fingerprints", pos)
    dst = f.dst.text("")
    certs = f.certs
    for i, chain in zip(pos, leaves):
        if not chain:
            continue
        leaf = str(chain[0])
        if leaf not in certs.index:
            continue
        c = certs.loc[leaf]
        self_signed = bool(c["self_signed"]) if _known(c.get("self_signed")) else None
        if _outside(bundle, leaf, c.get("issuer"), self_signed):
            hits.add("kubelet", "responder", str(dst[i]), int(f.dst_port[i]),
                     f"config: {p['host']} kube-apiserver trusts its {_CA} bundle; wire: the kubelet served a "
                     f"certificate issued by {c.get('issuer') or '?'}, outside it",
                     [ev_config, entry("wire", f"serving certificate {leaf[:16]}… issued by {c.get('issuer') or '?'}",
                                       "the captures (its handshake)")])


@kind("config-kubelet-ca-conflict", needs=("config", "probe", "tls", "certs"), host=True)
def kubelet_ca_conflict(f: FlowFacts, params: dict) -> HostHits:
    """An apiserver whose --kubelet-certificate-authority is set, and a kubelet serving certificate outside
    that bundle, seen by the probe or on the wire."""
    config = f.tables.get("config")
    if config is None or not len(config):
        return no_hits()
    hits = _Hits()
    for p in _processes(config).values():
        if p["component"] != "kube-apiserver" or _value(p, _CA) is None:
            continue
        bundle = _bundle(p)
        if bundle is None:          # the bundle was not recorded (unreadable): nothing to compare
            continue
        ev = config_entry(p, [_CA], f" ({len(bundle[0])} certificate{'s' if len(bundle[0]) != 1 else ''})")
        _probe_conflicts(f, p, bundle, ev, hits)
        _wire_conflicts(f, p, bundle, ev, hits)
    return hits.result()


def config_path_entries(config, path: str) -> list[dict]:
    """What the hosts' configuration says about ``path``: per process, the settings that govern it."""
    if config is None or not len(config):
        return []
    governing = {(c.name, s.name) for c in load_settings().components.values() for s in c.settings if path in s.paths}
    out = []
    for p in _processes(config).values():
        keys = [k for (comp, k) in sorted(governing) if comp == p["component"] and k in p["settings"]]
        if keys:
            out.append(entry("config", f"{p['host']} {p['component']}: " + "; ".join(said(p, k) for k in keys),
                             where(p, keys)))
    return out


PATH_SAYERS["config"] = config_path_entries

__all__ = ["config_path_entries", "kubelet_ca_conflict"]

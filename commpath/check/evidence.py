"""Where each verdict's evidence came from: the wire, an active probe, host configuration, decrypted requests.

Every finding and every path carries a list of evidence entries ``{"source", "said", "where"}``
(``says`` repeats ``said`` under the name the interface spec plans). The wire's entry is made from
what the check read (capture, frames, the flow facts); the other sources are fact tables declared
once (``FACT_TABLES``: column -> dtype) and passed to :func:`commpath.check.evaluate` as ``facts``.

Host-level facts (a kubelet's serving certificate, its anonymous access) are keyed by the host's
address and port. They are attached to the paths they govern (``TARGET_PATHS``) and to the flows
whose responder is that address and port; a fact with no such flow becomes a finding of its own
whose connection key is ``("", address, port)``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import numpy as np

from ..capture.probe_table import PROBE_COLUMNS
from ..decode.hostconfig import CONFIG_COLUMNS
from ..decode.requests import REQUEST_COLUMNS
from .decrypted import decrypted_path_entries

#: where evidence comes from
SOURCES = ("wire", "probe", "config", "decrypted")

#: fact tables the check layer takes beside the flows, each declared once (column -> dtype)
FACT_TABLES: dict[str, dict[str, str]] = {
    "probe": PROBE_COLUMNS,
    "config": CONFIG_COLUMNS,
    "requests": REQUEST_COLUMNS,        # decrypted requests (--keylog), or read in clear: check/decrypted.py
}

#: the paths a probed target governs: a kubelet's serving certificate is what apiserver-to-kubelet
#: (and a metrics scrape) meets; an apiserver's is what every client of the API meets
TARGET_PATHS: dict[str, tuple[str, ...]] = {
    "apiserver": ("node-to-apiserver", "control-plane-to-apiserver", "pod-to-apiserver"),
    "kubelet": ("apiserver-to-kubelet", "metrics-to-kubelet"),
    "kubelet-readonly": ("kubelet-readonly",),
    "konnectivity-server": ("konnectivity",),
    "etcd": ("etcd",),
}


def entry(source: str, said: str, where: str) -> dict:
    """One evidence entry: which source, what it said (one line), where to look."""
    if source not in SOURCES:
        raise ValueError(f"unknown evidence source {source!r} (one of: {', '.join(SOURCES)})")
    said = " ".join(str(said).split())
    return {"source": source, "said": said, "says": said, "where": " ".join(str(where).split())}


def fact_tables(**tables) -> dict:
    """The fact tables given (``probe=DataFrame`` ...), conformed to their declared columns; None dropped."""
    from ..decode.schema import conform
    out = {}
    for name, df in tables.items():
        if df is None:
            continue
        declared = FACT_TABLES.get(name)
        out[name] = conform(df.copy(), declared) if declared else df
    return out


# --- the wire ------------------------------------------------------------------------------------

def wire_entries(said: list[str], capture, frames: list[list[int]]) -> list[list[dict]]:
    """The wire's entry of each finding: what was seen, in which capture and frames (one dict per
    finding, made without per-entry checks: this runs once per finding)."""
    out = []
    for s, c, fr in zip(said, capture, frames):
        shown = ", ".join(map(str, fr[:8])) + (", ..." if len(fr) > 8 else "")
        out.append([{"source": "wire", "said": s, "says": s, "where": f"{c} frames {shown}" if shown else str(c)}])
    return out


def wire_path_said(count: int, versions: list[str], visibility: list[str]) -> str:
    """The wire's one line about a path: connections, TLS versions, whether certificates showed."""
    if count == 0:
        return "not observed in the captures"
    text = f"{count} connection{'s' if count != 1 else ''}"
    if versions:
        text += ", " + "/".join(versions)
    if "not-visible" in visibility and not {"visible", "decrypted"} & set(visibility):
        text += ", certificates not visible (encrypted)"
    elif {"visible", "decrypted"} & set(visibility):
        text += ", certificates visible"
    return text


# --- the probe -----------------------------------------------------------------------------------

def _when(ts) -> str:
    try:
        return _dt.datetime.fromtimestamp(float(ts), _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def _known(v) -> bool:
    import pandas as pd
    return v is not None and not (isinstance(v, float) and np.isnan(v)) and v is not pd.NA


def target_name(row) -> str:
    """``node1 (10.0.0.2:10250)`` or ``10.0.0.2:10250``."""
    addr = f"[{row['address']}]" if ":" in str(row["address"]) else str(row["address"])
    end = f"{addr}:{int(row['port'])}"
    host = row.get("host")
    return f"{host} ({end})" if _known(host) and str(host) not in ("", str(row["address"])) else end


def probe_where(row) -> str:
    return f"probe of {row['target']} {target_name(row)} at {_when(row.get('probed_at'))} (active)"


def certificate_said(row) -> str:
    """What the probe found of the serving certificate, in one clause."""
    if _known(row.get("self_signed")) and bool(row["self_signed"]):
        return "serves a self-signed certificate"
    if _known(row.get("chain_verified")):
        if bool(row["chain_verified"]):
            names = "" if not _known(row.get("names_match")) or bool(row["names_match"]) else \
                " (its names do not cover the node)"
            return "serving chain verified against the cluster CA" + names
        why = str(row.get("verify_error") or "no reason given")
        if why.startswith("self-signed chain"):
            return f"serves a certificate from its own self-signed CA ({why})"
        return f"serving certificate does not verify against the cluster CA ({why})"
    if _known(row.get("tls")) and bool(row["tls"]):
        return "serving certificate not verified (no CA bundle given to the probe)"
    return "no serving certificate seen"


def probe_said(row) -> str:
    """Everything one probe row says, in one line."""
    name = target_name(row)
    if _known(row.get("error")) and row["error"]:
        return f"{name}: {row['error']}"
    parts = []
    if row["target"] == "kubelet-readonly":
        status = row.get("anonymous_healthz_status")
        parts.append(f"read-only port answers (GET /healthz: {int(status)})" if _known(status)
                     else "read-only port does not answer")
    elif _known(row.get("tls")) and bool(row["tls"]):
        parts.append(certificate_said(row))
        req = row.get("client_cert_requested")
        if _known(req):
            cas = [str(c) for c in (row.get("client_ca_names") if row.get("client_ca_names") is not None else [])]
            parts.append(("asks for a client certificate" + (f" (CAs: {', '.join(cas)})" if cas else ""))
                         if bool(req) else "does not ask for a client certificate")
        accepted = list(row.get("versions_accepted") if row.get("versions_accepted") is not None else [])
        if accepted:
            parts.append("accepts " + ", ".join(accepted))
        for path, col in (("/pods", "anonymous_pods_status"), ("/healthz", "anonymous_healthz_status")):
            if row["target"] == "kubelet" and _known(row.get(col)):
                parts.append(f"GET {path} without credentials: {int(row[col])}")
    return f"{name}: " + "; ".join(parts) if parts else f"{name}: probed"


def probe_path_entries(probe, path: str) -> list[dict]:
    """The probe's entries about ``path``: one per probed target that governs it."""
    if probe is None or not len(probe):
        return []
    targets = [t for t, paths in TARGET_PATHS.items() if path in paths]
    rows = probe[probe["target"].astype("string").isin(targets)]
    return [entry("probe", probe_said(r), probe_where(r)) for r in rows.to_dict("records")]


#: per fact table, the entries it adds to a path's evidence: ``fn(table, path) -> [entry]``
PATH_SAYERS = {"probe": probe_path_entries, "requests": decrypted_path_entries}


def path_entries(tables: dict, path: str) -> list[dict]:
    """Every fact table's entries about ``path``."""
    out = []
    for name, fn in PATH_SAYERS.items():
        if name in tables:
            out.extend(fn(tables[name], path))
    return out


@dataclass
class HostHits:
    """What a host-level test found: one row per (address, port) it fires on."""

    target: list[str]
    address: list[str]
    port: list[int]
    detail: list[str]
    evidence: list[list[dict]]
    #: per hit, "responder" (the default: flows answered by address:port) or "initiator" (flows the
    #: host at address opened, whatever their ports: a setting of the connecting side)
    side: list[str] | None = None
    #: per hit, a group name (the host): hits of one group make one finding where no flow showed any of them
    group: list[str] | None = None

    def __len__(self) -> int:
        return len(self.address)


def probe_hits(probe, mask: np.ndarray, detail: list[str]) -> HostHits:
    """The probe rows at ``mask`` as hits with their ``detail`` (aligned with the masked rows)."""
    rows = probe[mask].to_dict("records")
    return HostHits(target=[str(r["target"]) for r in rows], address=[str(r["address"]) for r in rows],
                    port=[int(r["port"]) for r in rows], detail=list(detail),
                    evidence=[[entry("probe", probe_said(r), probe_where(r))] for r in rows])


def no_hits() -> HostHits:
    return HostHits([], [], [], [], [])


def endpoint_keys(addresses: list[str], codes: np.ndarray, ports: np.ndarray, wanted_addr: list[str],
                  wanted_port: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(key per flow, key per wanted endpoint): equal keys name the same address and port; an address
    no flow has gets a key no flow has."""
    index = {a: i for i, a in enumerate(addresses)}
    n = len(addresses)
    flow_key = np.where(codes >= 0, codes, n + 1).astype(np.int64) * 65536 + ports.astype(np.int64)
    want = np.array([index.get(a, n + 2) for a in wanted_addr], np.int64) * 65536 + np.asarray(wanted_port, np.int64)
    return flow_key, want


def orphan_finding(check, path: str, hits: HostHits, at: np.ndarray) -> dict:
    """Findings (as :func:`~commpath.check.findings.aggregate`'s columns) for host-level hits no flow showed."""
    from .findings import fingerprint
    n = len(at)
    addr = [hits.address[i] for i in at]
    port = [hits.port[i] for i in at]

    def end(a, p):
        return f"[{a}]:{p}" if ":" in a else f"{a}:{p}"
    message = [f"{check.title}: {end(a, p)} on {path} (no connection to it in the captures): {hits.detail[i]}"
               for a, p, i in zip(addr, port, at)]
    return {
        "check": np.full(n, check.id, object), "severity": np.full(n, check.severity_for(path), object),
        "path": np.full(n, path, object), "flow_ids": [[] for _ in at], "message": np.array(message, object),
        "remediation": np.full(n, " ".join(check.remediation_for(path).split()), object),
        "capture": np.full(n, "", object), "frames": [[] for _ in at], "display_filter": np.full(n, "", object),
        "reference": np.full(n, check.reference_link, object),
        "fingerprint": [fingerprint(check.id, path, "", a, p) for a, p in zip(addr, port)],
        "count": np.zeros(n, np.int64), "evidence_sources": [list(hits.evidence[i]) for i in at],
        "_first": np.zeros(n, np.int64),
    }


__all__ = ["FACT_TABLES", "HostHits", "PATH_SAYERS", "SOURCES", "TARGET_PATHS", "certificate_said",
           "endpoint_keys", "entry", "fact_tables", "no_hits", "orphan_finding", "path_entries",
           "probe_hits", "probe_path_entries", "probe_said", "probe_where", "target_name", "wire_entries",
           "wire_path_said"]

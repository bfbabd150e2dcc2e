"""Findings as an auditor reads them: one per check × path × connection key × capture.

The connection key is (initiator address, responder address, responder port): ephemeral ports,
frame numbers and flow ids change from one capture to the next, the key does not. Each finding
lists every connection it stands for (``flow_ids``, ``count``) and opens the first
``MAX_EXAMPLES`` of them in Wireshark (``frames``, ``display_filter``); the per-connection
detail stays in the flow table. Grouping is one sort over the flagged rows; Python runs once per
finding, not once per connection.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

#: example connections per finding: the display filter stays short enough to paste
MAX_EXAMPLES = 16


def display_filter(ip_version: int, a: str, b: str, transport: str, p: int, q: int, f1: int, f2: int) -> str:
    """A Wireshark display filter that opens exactly the packets of one connection."""
    ipf = "ipv6.addr" if ip_version == 6 or ":" in str(a) else "ip.addr"
    tp = "udp" if transport == "udp" else "tcp"
    return (f"{ipf}=={a} && {ipf}=={b} && {tp}.port=={p} && {tp}.port=={q} "
            f"&& frame.number>={f1} && frame.number<={f2}")


def fingerprint(check: str, path: str, initiator: str, responder: str, port: int) -> str:
    """Stable id of a finding: SHA-256 (first 128 bits, hex) of check, path and connection key."""
    key = "\x1f".join((check, path, initiator, responder, str(int(port))))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _ep(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


@dataclass
class FlowKeys:
    """The flow columns findings are grouped and described by, as numpy arrays."""

    capture: np.ndarray         # int codes into capture_names
    capture_names: list[str]
    src: np.ndarray             # int codes into addresses
    dst: np.ndarray
    addresses: list[str]
    dst_port: np.ndarray
    src_port: np.ndarray
    first_frame: np.ndarray
    last_frame: np.ndarray
    flow_id: np.ndarray
    ip_version: np.ndarray
    transport: np.ndarray       # object: "tcp" | "udp" | ...


def flow_keys(flows) -> FlowKeys:
    """The grouping keys of ``flows`` (a classified flow DataFrame)."""
    import pandas as pd
    cap_codes, cap_names = pd.factorize(flows["capture"].astype("string").fillna(""), sort=True)
    both = pd.concat([flows["src_ip"], flows["dst_ip"]], ignore_index=True).astype("string").fillna("")
    ip_codes, ips = pd.factorize(both)
    n = len(flows)

    def ints(name, dtype=np.int64):
        return flows[name].to_numpy(dtype=dtype, na_value=0) if name in flows else np.zeros(n, dtype)
    return FlowKeys(capture=cap_codes, capture_names=[str(c) for c in cap_names], src=ip_codes[:n],
                    dst=ip_codes[n:], addresses=[str(a) for a in ips], dst_port=ints("dst_port"),
                    src_port=ints("src_port"), first_frame=ints("first_frame"), last_frame=ints("last_frame"),
                    flow_id=ints("flow_id"), ip_version=ints("ip_version"),
                    transport=flows["transport"].astype("string").fillna("").to_numpy(object))


def _details(detail: np.ndarray, group: np.ndarray, n_groups: int) -> list[list[str]]:
    """Distinct non-empty details of each group, sorted."""
    out: list[list[str]] = [[] for _ in range(n_groups)]
    import pandas as pd
    has = pd.notna(detail) & (detail != "")
    if not has.any():
        return out
    codes, uniq = pd.factorize(detail[has])
    pairs = np.unique(np.stack([group[has], codes]), axis=1)
    for g, c in pairs.T:
        out[g].append(str(uniq[c]))
    return [sorted(d) for d in out]


def aggregate(check, path: str, rows: np.ndarray, detail: np.ndarray, keys: FlowKeys, frames_of) -> list[dict]:
    """The findings of ``check`` on ``path`` for the flagged flows at positions ``rows``.

    ``detail``: what was seen on each flagged flow (aligned with ``rows``); ``frames_of(positions)``
    gives each example flow's handshake frames.
    """
    order = np.lexsort((keys.first_frame[rows], keys.dst_port[rows], keys.dst[rows], keys.src[rows],
                        keys.capture[rows]))
    rows, detail = rows[order], detail[order]
    k = np.stack([keys.capture[rows], keys.src[rows], keys.dst[rows], keys.dst_port[rows]])
    starts = np.flatnonzero(np.r_[True, (k[:, 1:] != k[:, :-1]).any(axis=0)])
    ends = np.r_[starts[1:], len(rows)]
    group = np.repeat(np.arange(len(starts)), ends - starts)
    details = _details(detail, group, len(starts))
    severity = check.severity_for(path)
    remediation = " ".join(check.remediation.split())
    out = []
    for g, (a, b) in enumerate(zip(starts, ends)):
        members = rows[a:b]
        examples = members[:MAX_EXAMPLES]
        out.append(_finding(check, path, severity, remediation, keys, members, examples, details[g],
                            frames_of(examples)))
    return out


def _finding(check, path, severity, remediation, keys, members, examples, details, hs_frames) -> dict:
    src, dst = keys.addresses[keys.src[members[0]]], keys.addresses[keys.dst[members[0]]]
    port = int(keys.dst_port[members[0]])
    clauses = [display_filter(int(keys.ip_version[i]), src, dst, str(keys.transport[i]), int(keys.src_port[i]),
                              port, int(keys.first_frame[i]), int(keys.last_frame[i])) for i in examples]
    frames = set(int(x) for x in keys.first_frame[examples])
    for extra in hs_frames:
        frames.update(int(x) for x in extra)
    n = len(members)
    msg = f"{check.title}: {n} connection{'s' if n != 1 else ''} on {path} ({_ep(src)} -> {_ep(dst)}:{port})"
    if details:
        msg += f": {'; '.join(details[:2])}"
    return {
        "check": check.id, "severity": severity, "path": path,
        "flow_ids": keys.flow_id[members].tolist(), "message": msg, "remediation": remediation,
        "capture": keys.capture_names[keys.capture[members[0]]], "frames": sorted(frames),
        "display_filter": clauses[0] if len(clauses) == 1 else " || ".join(f"({c})" for c in clauses),
        "reference": check.reference_link, "fingerprint": fingerprint(check.id, path, src, dst, port), "count": n,
    }


__all__ = ["MAX_EXAMPLES", "FlowKeys", "aggregate", "display_filter", "fingerprint", "flow_keys"]

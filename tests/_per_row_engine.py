"""The per-row check engine as it was before findings were aggregated: the oracle of test_check_findings.

Kept verbatim apart from its imports (the finding and path tables moved to the check layer);
it groups flagged connections in chunks of 16 per check, path and capture with itertuples, row by
row: the per-row truth the column-wise engine is compared with.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from commpath.check.policy import SEVERITY_RANK, Check, Policy, load_policy
from commpath.classify.catalog import judged_path_ids, reference_link
from commpath.decode.schema import TLS_COLUMNS, conform, empty_frame

FINDING_COLUMNS = {"check": "category", "severity": "category", "path": "category", "flow_ids": "object",
                   "message": "string", "remediation": "string", "capture": "string", "frames": "object",
                   "display_filter": "string", "reference": "string"}
PATH_COLUMNS = {"id": "category", "observed": "bool", "flows": "int64", "verdict": "category"}

WEAK_TLS = ["SSL 2.0", "SSL 3.0", "TLS 1.0", "TLS 1.1"]
NO_CLIENT_CERT = ["empty", "not-requested", "inferred-absent"]
#: flows per finding: the display filter stays short enough to paste
MAX_FLOWS_PER_FINDING = 16
PATH_EXTRA_COLUMNS = {"needs": "string"}

NEEDS = {
    "no-tls": "the TLS handshake of these connections (not captured, or the handshake analysis is unavailable)",
    "client-cert": "the client's Certificate message: a capture of the full handshake (TLS 1.2), or --keylog FILE for TLS 1.3",
    "ca": "--ca FILE (or ca_bundle in the inventory) with the cluster CA bundle, to verify the serving certificates",
    "certs": ("the certificates: --keylog FILE with the TLS key log, because TLS 1.3 encrypts them, or a probe "
              "of the servers (commpath probe, then --probe DIR)"),
    "certs-keylog": "the certificates: the session keys of these connections in the key log (it has none for them)",
    "version": "the ServerHello of these connections (not captured)",
    "no-handshake": "the TLS handshake of these connections (they started before the capture, or it was not captured)",
    "handshake": "the TCP handshake of these connections (they were already open when the capture started)",
    "payload": "a connection on this path that carries data (only empty connections were captured)",
}


VALIDITY_ERRORS = ("certificate expired", "certificate not yet valid")


def _server_error(text: str) -> str:
    """The server part of a verify error ``"server: ...; client: ..."``."""
    for part in text.split("; client: ")[:1]:
        if part.startswith("server: "):
            return part[len("server: "):]
    return ""


def _list_col(s: pd.Series) -> list:
    return [list(v) if isinstance(v, (list, tuple, np.ndarray)) else [] for v in s]


class _FlowFacts:
    """Per-flow facts the tests read, aligned with the classified flows."""

    def __init__(self, flows: pd.DataFrame, tls: pd.DataFrame | None, certs: pd.DataFrame | None,
                 tls_known: bool):
        n = len(flows)
        self.n = n
        self.tls_known = tls_known
        self.app = flows["app_protocol"].astype("string").fillna("").to_numpy(str)
        self.payload = (flows["payload_fwd"].fillna(0) + flows["payload_rev"].fillna(0)).to_numpy(np.int64)
        self.underlay = flows["encrypted_underlay"].fillna(False).to_numpy(bool) if "encrypted_underlay" in flows else np.zeros(n, bool)
        self.is_tls = self.app == "tls"
        t = (tls if tls is not None and not tls.empty else empty_frame(TLS_COLUMNS)).drop_duplicates("flow_id").set_index("flow_id")
        fid = flows["flow_id"]
        self.has_tls_row = fid.isin(t.index).to_numpy(bool)

        def col(name, default=pd.NA):
            return fid.map(t[name]) if name in t else pd.Series(default, index=flows.index)

        self.version = col("tls_version").astype("string")
        self.client_cert = col("client_cert").astype("string")
        self.verified = col("server_cert_verified").astype("boolean")
        self.verify_error = col("verify_error").astype("string")
        self.visibility = col("certs_visibility").astype("string")
        self.established = col("established").astype("boolean")
        self.hs_frames = _list_col(col("handshake_frames", None))
        self.server_fps = _list_col(col("server_cert_fingerprints", None))
        self.client_fps = _list_col(col("client_cert_fingerprints", None))
        self.ts = flows["ts_start"].to_numpy(float)
        self.certs = certs.drop_duplicates("fingerprint").set_index("fingerprint") if certs is not None and not certs.empty else None

    def certs_visible(self) -> np.ndarray:
        vis = self.visibility.fillna("").to_numpy(str)
        return self.has_tls_row & np.isin(vis, ["visible", "decrypted"])


def _hidden_certs_need(f: _FlowFacts) -> np.ndarray:
    """What would show the certificates of each flow: a key log (TLS 1.3) or the handshake itself."""
    vis = f.visibility.fillna("").to_numpy(str)
    return np.where(vis == "not-visible", NEEDS["certs"], NEEDS["no-handshake"]).astype(object)


# -- tests: each returns (fires, unknown, needs, detail) arrays over the flows -----------------

def _test(kind: str, f: _FlowFacts, check: Check, ctx: dict):
    n = f.n
    fires = np.zeros(n, bool)
    unknown = np.zeros(n, bool)
    needs = np.full(n, None, object)
    detail = np.full(n, None, object)
    data = f.payload > 0
    tls_unknown = f.is_tls & ~f.has_tls_row
    if kind == "plaintext":
        fires = data & ~np.isin(f.app, ["tls", "ssh", "wireguard", "esp"]) & ~f.underlay
        detail[fires] = [f"{a or 'unknown'} payload in clear" for a in f.app[fires]]
    elif kind == "tls":
        fires = f.is_tls
        detail[fires] = "TLS without certificate verification or client credentials"
    elif kind == "client-cert-missing":
        cc = f.client_cert.fillna("").to_numpy(str)
        est = f.established.fillna(True).to_numpy(bool)
        fires = f.is_tls & f.has_tls_row & np.isin(cc, NO_CLIENT_CERT) & est
        detail[fires] = [f"client certificate: {c}" for c in cc[fires]]
        unknown = f.is_tls & est & ~fires & ~np.isin(cc, ["presented", "inferred-presented"]) & ~np.isin(cc, NO_CLIENT_CERT)
        needs[unknown] = NEEDS["client-cert"]
    elif kind == "server-cert-untrusted":
        verified = f.verified
        bad = (verified == False).fillna(False).to_numpy(bool)  # noqa: E712
        selfsigned = np.zeros(n, bool)
        if f.certs is not None and "self_signed" in f.certs:
            ss = f.certs["self_signed"].fillna(False)
            ca = f.certs["is_ca"].fillna(False) if "is_ca" in f.certs else pd.Series(False, index=f.certs.index)
            leafs = [fps[0] if fps else None for fps in f.server_fps]
            selfsigned = np.array([bool(l is not None and l in ss.index and ss[l] and not ca[l]) for l in leafs])
        err = np.array([_server_error(e) for e in f.verify_error.fillna("").to_numpy(str)], object)
        # a chain that fails only for its validity period is cert-expired's finding, not this one
        only_validity = np.array([e.startswith(VALIDITY_ERRORS) for e in err], bool)
        fires = f.is_tls & ((bad & ~only_validity) | (verified.isna().to_numpy(bool) & selfsigned))
        detail[fires] = [e or "self-signed serving certificate" for e in err[fires]]
        vis = f.certs_visible()
        unknown = f.is_tls & ~fires & verified.isna().to_numpy(bool)
        needs[unknown] = np.where(vis[unknown], NEEDS["ca"], _hidden_certs_need(f)[unknown])
    elif kind == "cert-expired":
        vis = f.certs_visible()
        if f.certs is not None and "not_after" in f.certs:
            # one row per (flow, certificate) it carried, joined to the validity of each certificate
            pos = np.flatnonzero(vis & f.is_tls)
            pairs = pd.DataFrame({"pos": pos, "fp": [f.server_fps[i] + f.client_fps[i] for i in pos]}).explode("fp")
            pairs = pairs.dropna().join(f.certs[["not_before", "not_after"]], on="fp", how="inner")
            if len(pairs):
                at = pd.to_datetime(f.ts[pairs["pos"].to_numpy(int)], unit="s", utc=True)
                bad = pairs[(pairs["not_before"].to_numpy() > at) | (pairs["not_after"].to_numpy() < at)]
                bad = bad.drop_duplicates("pos")
                bpos = bad["pos"].to_numpy(int)
                fires[bpos] = True
                detail[bpos] = [f"certificate {fp[:16]}… valid {a:%Y-%m-%d} .. {b:%Y-%m-%d}"
                                for fp, a, b in zip(bad["fp"], bad["not_before"], bad["not_after"])]
        unknown = f.is_tls & ~vis
        needs[unknown] = _hidden_certs_need(f)[unknown]
    elif kind == "tls-version-weak":
        ver = f.version.fillna("").to_numpy(str)
        weak = WEAK_TLS
        minimum = check.params.get("minimum")
        if minimum in WEAK_TLS + ["TLS 1.2", "TLS 1.3"]:
            order = WEAK_TLS + ["TLS 1.2", "TLS 1.3"]
            weak = order[: order.index(minimum)]
        fires = f.is_tls & np.isin(ver, weak)
        detail[fires] = ver[fires]
        unknown = f.is_tls & (ver == "")
        needs[unknown] = NEEDS["version"]
    elif kind == "any-flow":
        fires = np.ones(n, bool)
    elif kind == "konnectivity-bypass":
        fires = np.full(n, bool(ctx.get("konnectivity_enabled")))
        if fires.any():
            detail[:] = "direct control-plane to node connection while Konnectivity is enabled"
    elif kind == "konnectivity-reversed":
        reversed_ = ctx["src_role"] == "konnectivity-server"
        # only a captured handshake proves who dialled; a connection already open when the capture
        # started shows its first packet, not its initiator
        fires = reversed_ & ctx["initiator_seen"]
        detail[fires] = "initiated by the Konnectivity server side (SYN seen)"
        unknown = reversed_ & ~fires
        needs[unknown] = NEEDS["handshake"]
    elif kind == "certs-not-visible":
        vis = f.visibility.fillna("").to_numpy(str)
        fires = f.is_tls & f.has_tls_row & (vis == "not-visible")
        why = "no keys for them in the key log" if ctx.get("keylog_given") else "no key log"
        detail[fires] = [f"{v or 'TLS'} certificates encrypted; {why}" for v in f.version.fillna("").to_numpy(str)[fires]]
    elif kind.startswith(("probe-", "config-")) or kind in ("kubelet-anonymous", "tls-min-version-weak"):
        pass        # reads only a probe's or the hosts' configuration's table: these runs have none
    else:
        raise ValueError(f"unknown test kind {kind!r} in check {check.id}")
    if ctx.get("keylog_given"):
        needs = np.where(needs == NEEDS["certs"], NEEDS["certs-keylog"], needs)
    if kind not in ("plaintext", "any-flow", "konnectivity-bypass", "konnectivity-reversed", "tls"):
        # without any TLS facts for a TLS flow, TLS-based checks cannot be judged
        unknown = (unknown | (tls_unknown & ~fires))
        needs[tls_unknown & ~fires] = NEEDS["no-tls"]
    return fires, unknown & ~fires, needs, detail


def display_filter(ip_version: int, a: str, b: str, transport: str, p: int, q: int, f1: int, f2: int) -> str:
    """A Wireshark display filter that opens exactly the packets of one connection."""
    ipf = "ipv6.addr" if ip_version == 6 or ":" in str(a) else "ip.addr"
    tp = "udp" if transport == "udp" else "tcp"
    return (f"{ipf}=={a} && {ipf}=={b} && {tp}.port=={p} && {tp}.port=={q} "
            f"&& frame.number>={f1} && frame.number<={f2}")


def _ep(ip) -> str:
    return f"[{ip}]" if ":" in str(ip) else str(ip)


def _findings_for(check: Check, path: str, rows: pd.DataFrame, detail: np.ndarray, f: _FlowFacts,
                  positions: np.ndarray) -> list[dict]:
    out = []
    sev = check.severity_for(path)
    rows = rows.assign(_detail=detail, rowpos_=positions)
    for capture, grp in rows.groupby("capture", sort=True, observed=True, dropna=False):
        grp = grp.sort_values("first_frame")
        for start in range(0, len(grp), MAX_FLOWS_PER_FINDING):
            g = grp.iloc[start:start + MAX_FLOWS_PER_FINDING]
            clauses = [display_filter(int(r.ip_version), r.src_ip, r.dst_ip, str(r.transport), int(r.src_port),
                                      int(r.dst_port), int(r.first_frame), int(r.last_frame)) for r in g.itertuples()]
            dfilter = clauses[0] if len(clauses) == 1 else " || ".join(f"({c})" for c in clauses)
            frames = set()
            for r in g.itertuples():
                frames.add(int(r.first_frame))
                frames.update(int(x) for x in f.hs_frames[r.rowpos_])
            details = sorted({d for d in g["_detail"] if d})
            pairs = list(dict.fromkeys(f"{_ep(r.src_ip)} -> {_ep(r.dst_ip)}:{int(r.dst_port)}" for r in g.itertuples()))
            pair_txt = ", ".join(pairs[:3]) + (f" and {len(pairs) - 3} more" if len(pairs) > 3 else "")
            n = len(g)
            msg = f"{check.title}: {n} connection{'s' if n != 1 else ''} on {path} ({pair_txt})"
            if details:
                msg += f": {'; '.join(details[:2])}"
            out.append({
                "check": check.id, "severity": sev, "path": path,
                "flow_ids": [int(x) for x in g["flow_id"]], "message": msg,
                "remediation": " ".join(check.remediation.split()), "capture": str(capture),
                "frames": sorted(frames), "display_filter": dfilter,
                "reference": reference_link(check.reference["anchor"]),
            })
    return out


def evaluate(flows: pd.DataFrame, tls: pd.DataFrame | None = None, certs: pd.DataFrame | None = None,
             policy: Policy | str = "default", inventory=None, *, tls_known: bool = True,
             keylog_given: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Findings (FINDING_COLUMNS) and one verdict per judged path (PATH_COLUMNS + ``needs``).

    ``tls_known=False`` says the handshakes were not analysed at all: TLS-based checks then
    leave their paths not-observable instead of passing them. ``keylog_given`` words what
    would settle encrypted certificates (a key log, or keys for these connections in it).
    """
    policy = load_policy(policy)
    if not tls_known:
        tls = None
    f = _FlowFacts(flows, tls, certs, tls_known)
    paths = flows["path"].astype("string").fillna("other").to_numpy(str)
    src_role = (flows["src_role"].astype("string").fillna("").to_numpy(str) if "src_role" in flows
                else np.full(len(flows), ""))
    konn_enabled = bool(getattr(inventory, "konnectivity_enabled", False)) or bool(
        ((paths == "konnectivity") & (src_role == "konnectivity-agent")).any())
    initiator = (flows["initiator"].astype("string").fillna("").to_numpy(str) if "initiator" in flows
                 else np.full(len(flows), "syn"))
    ctx = {"src_role": src_role, "konnectivity_enabled": konn_enabled, "keylog_given": keylog_given,
           "initiator_seen": np.isin(initiator, ["syn", "synack"])}

    findings: list[dict] = []
    unknown_needs: dict[str, list[str]] = {}
    for check in policy.enabled_checks():
        applies = np.isin(paths, check.paths)
        if not applies.any():
            continue
        fires, unknown, needs, detail = _test(check.test, f, check, ctx)
        for p in check.paths:
            on_path = paths == p
            hit = on_path & fires
            if hit.any():
                pos = np.flatnonzero(hit)
                findings.extend(_findings_for(check, p, flows.iloc[pos], detail[pos], f, pos))
            if check.scored and (on_path & unknown).any():
                unknown_needs.setdefault(p, []).extend(n for n in needs[on_path & unknown] if n)

    fdf = pd.DataFrame(findings) if findings else empty_frame(FINDING_COLUMNS)
    if findings:
        fdf["_rank"] = fdf["severity"].map(SEVERITY_RANK)
        fdf = fdf.sort_values(["_rank", "check", "path", "capture"], ascending=[False, True, True, True],
                              kind="stable").drop(columns="_rank").reset_index(drop=True)
    fdf = conform(fdf, FINDING_COLUMNS)

    rows = []
    for p in judged_path_ids():
        on_path = paths == p
        count = int(on_path.sum())
        needs = None
        if count == 0:
            verdict = "not-observed"
        else:
            sev = fdf.loc[fdf["path"].astype("string") == p, "severity"].astype("string")
            worst = max((SEVERITY_RANK[s] for s in sev), default=-1)
            if worst >= SEVERITY_RANK[policy.fail_at]:
                verdict = "fail"
            elif worst >= SEVERITY_RANK[policy.warn_at]:
                verdict = "warn"
            elif p in unknown_needs:
                verdict = "not-observable"
                needs = "; ".join(dict.fromkeys(unknown_needs[p]))
            elif not (f.payload[on_path] > 0).any() and p != "unclassified":
                verdict = "not-observable"
                needs = NEEDS["payload"]
            else:
                verdict = "pass"
        rows.append({"id": p, "observed": count > 0, "flows": count, "verdict": verdict, "needs": needs})
    pdf = conform(pd.DataFrame(rows), {**PATH_COLUMNS, **PATH_EXTRA_COLUMNS})
    return fdf, pdf

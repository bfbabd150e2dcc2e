"""Derived views of an analysis shared by plots and reports, so every output shows the same numbers."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import pandas as pd

from ..check import FINDING_COLUMNS, PATH_COLUMNS, catalog_checks, load_policy
from ..decode import schema
from . import _evidence, palette

CERT_CHECKS = ("client-cert-missing", "server-cert-untrusted", "cert-expired")

STATUS_ORDER = ("fail", "warn", "pass", "not-observable", "not-observed")


def frame(analysis, name: str) -> pd.DataFrame:
    """``analysis.<name>`` as a DataFrame (an empty, schema-shaped one when missing)."""
    df = getattr(analysis, name, None)
    if isinstance(df, pd.DataFrame):
        return df
    declared = {"flows": schema.FLOW_COLUMNS, "tls": schema.TLS_COLUMNS,
                "certs": schema.CERT_COLUMNS, "findings": FINDING_COLUMNS,
                "paths": PATH_COLUMNS, "captures": schema.CAPTURE_COLUMNS}.get(name)
    return schema.empty_frame(declared) if declared else pd.DataFrame()


def str_array(column: pd.Series) -> np.ndarray:
    """``column.astype(str).to_numpy(object)``: for a categorical through its categories (one text per
    category, not one per row; a missing value stays NaN, as astype(str) leaves it there)."""
    if isinstance(column.dtype, pd.CategoricalDtype) and all(isinstance(c, str) for c in column.cat.categories):
        texts = np.array([*column.cat.categories, np.nan], dtype=object)
        return texts[column.cat.codes.to_numpy()]          # code -1 (missing) reads the trailing NaN
    return column.astype(str).to_numpy(object)


def as_list(value) -> list:
    """A list from a list-like cell (list, tuple, ndarray) or [] for missing values."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        return list(value)
    try:
        if pd.isna(value):
            return []
    except (TypeError, ValueError):
        pass
    return [value]


def text(value, missing: str = "") -> str:
    """A cell as text; missing values become ``missing``."""
    if value is None:
        return missing
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(text(v) for v in value)
    try:
        if pd.isna(value):
            return missing
    except (TypeError, ValueError):
        pass
    return str(value)


def sorted_paths(ids) -> list[str]:
    return sorted({str(i) for i in ids}, key=palette.path_sort_key)


def path_table(analysis) -> pd.DataFrame:
    """The documented paths (analysis.paths) in catalog order, with findings counted per severity."""
    paths = frame(analysis, "paths").copy()
    paths["id"] = paths["id"].astype(str)
    paths["verdict"] = paths["verdict"].astype(str)
    paths = paths.iloc[sorted(range(len(paths)), key=lambda i: palette.path_sort_key(paths["id"].iloc[i]))]
    findings = finding_keys(analysis)      # counted from their keys: no finding's text is made
    counts = (pd.DataFrame({"path": str_array(findings["path"]),
                            "severity": str_array(findings["severity"])})
              .groupby(["path", "severity"]).size().unstack(fill_value=0)
              if len(findings) else pd.DataFrame())
    for sev in palette.SEVERITY_ORDER:
        col = counts[sev] if sev in counts.columns else pd.Series(dtype="int64")
        paths[f"findings_{sev}"] = paths["id"].map(col).fillna(0).astype("int64").to_numpy()
    paths["findings"] = paths[[f"findings_{s}" for s in palette.SEVERITY_ORDER]].sum(axis=1)
    return paths.reset_index(drop=True)


def capture_window(analysis) -> tuple[float, float]:
    """First and last packet time over all captures (epoch seconds); falls back to the flows."""
    caps = frame(analysis, "captures")
    first = pd.to_numeric(caps.get("first_ts"), errors="coerce") if len(caps) else pd.Series(dtype=float)
    last = pd.to_numeric(caps.get("last_ts"), errors="coerce") if len(caps) else pd.Series(dtype=float)
    if first.notna().any() and last.notna().any():
        return float(first.min()), float(last.max())
    flows = frame(analysis, "flows")
    if len(flows):
        return float(flows["ts_start"].min()), float(flows["ts_end"].max())
    return float("nan"), float("nan")


def host_of_capture(analysis) -> dict[str, str]:
    """capture file -> host name (from manifest.json), else the file's stem."""
    caps = frame(analysis, "captures")
    hosts = {}
    for _, row in caps.iterrows():
        file = text(row.get("file"))
        hosts[file] = text(row.get("host")) or Path(file).stem
    return hosts


def policy_of(analysis):
    """The analysis' policy (commpath.check.Policy), or the one it names, or the built-in default."""
    policy = getattr(analysis, "policy", None)
    if hasattr(policy, "enabled_checks"):
        return policy
    return load_policy(policy if isinstance(policy, str) else "default")


def applicable_checks(analysis=None) -> dict[str, tuple[str, ...]]:
    """path -> check ids that judge it (the policy's enabled checks), plus any check that has
    findings on the path."""
    table: dict[str, list[str]] = {}
    from ..check import TESTS
    given = set(getattr(analysis, "facts", None) or {})
    for check in policy_of(analysis).enabled_checks():
        test = TESTS.get(check.test)
        if getattr(test, "host", False) and not (test.needs & given):
            continue    # judges only another source's facts (a probe ...), and the run has none
        for path in check.paths:
            table.setdefault(str(path), []).append(str(check.id))
    if analysis is not None:
        for path, check in finding_pairs(analysis):
            if check not in table.setdefault(path, []):
                table[path].append(check)
    return {p: tuple(c) for p, c in table.items()}


def finding_pairs(analysis) -> list[tuple[str, str]]:
    """The distinct (path, check) of the findings, in the order they first appear (their keys only:
    no finding's texts are made)."""
    keys = finding_keys(analysis)
    if not len(keys):
        return []
    pairs = pd.DataFrame({"path": str_array(keys["path"]),
                          "check": str_array(keys["check"])}).drop_duplicates()
    return list(zip(pairs["path"].tolist(), pairs["check"].tolist()))


def thresholds(analysis, fail_on: str | None = None) -> tuple[str, str]:
    """(fail, warn) severities of the verdicts: the policy's, else ``fail_on`` and "low"."""
    policy = policy_of(analysis)
    if fail_on is None:
        return str(policy.fail_at), str(policy.warn_at)
    return (fail_on or "high"), "low"


#: What a path's "needs" text (check layer, not-observable verdicts) says about single checks.
NEEDS_TO_CHECKS = {
    "client's Certificate message": ("client-cert-missing",),
    "--ca FILE": ("server-cert-untrusted",),
    "TLS 1.3 encrypts them": ("server-cert-untrusted", "cert-expired"),
    "ServerHello": ("tls-version-weak",),
    "a probe sees only the server's": ("cert-expired",),
    "TLS handshake of these connections": ("client-cert-missing", "server-cert-untrusted", "cert-expired",
                                           "tls-version-weak"),
}


def check_results(analysis, fail_on: str | None = None, paths: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per documented path x applicable check: status, findings, worst severity, flows.

    status: ``not-observed`` when the path carried no flow; ``fail`` / ``warn`` when a finding is at
    or above the policy's fail / warn severity (``fail_on`` overrides the fail severity);
    ``not-observable`` when the check could not be judged (certificates encrypted, handshake or
    data not captured); else ``pass``. ``paths``: ``path_table(analysis)`` when the caller has it already.
    """
    fail_at, warn_at = thresholds(analysis, fail_on)
    fail_rank, warn_rank = palette.severity_rank(fail_at), palette.severity_rank(warn_at)
    paths = path_table(analysis) if paths is None else paths
    cells = _finding_cells(analysis)
    blind_paths = {path for path, check in cells if check == "cert-not-observable"}
    applicable = applicable_checks(analysis)
    rows = []
    for _, p in paths.iterrows():
        pid = p["id"]
        observed = bool(p["observed"]) and int(p["flows"]) > 0
        blind = set()
        if pid in blind_paths:
            blind.update(CERT_CHECKS)
        needs = text(p.get("needs"))
        for phrase, checks in NEEDS_TO_CHECKS.items():
            if phrase in needs:
                blind.update(checks)
        no_payload = "carries data" in needs
        heard = set(_evidence.path_evidence(analysis, pid))
        checks = policy_of(analysis).checks
        for check in applicable.get(pid, ()):
            n, worst = cells.get((pid, check), (0, -1))
            if not observed:
                status = "not-observed"
            elif n and worst >= fail_rank:
                status = "fail"
            elif n and check == "cert-not-observable":
                status = "not-observable"
            elif n and worst >= warn_rank:
                status = "warn"
            elif not n and (check in blind or no_payload or _evidence.unheard(checks.get(check), heard)):
                status = "not-observable"
            else:
                status = "pass"
            rows.append({"path": pid, "check": check, "status": status, "findings": n,
                         "severity": palette.SEVERITY_ORDER[worst] if worst >= 0 else "",
                         "flows": int(p["flows"])})
    return pd.DataFrame(rows, columns=["path", "check", "status", "findings", "severity", "flows"])


def _finding_cells(analysis) -> dict[tuple[str, str], tuple[int, int]]:
    """(path, check) -> (findings that count, worst severity rank among them, -1 when none count):
    suppressed findings are listed but do not decide a cell."""
    keys = finding_keys(analysis)
    if not len(keys):
        return {}
    rank = severity_ranks(keys["severity"])
    rank[suppressed_mask(analysis).to_numpy(bool)] = -1
    cells = pd.DataFrame({"path": str_array(keys["path"]),
                          "check": str_array(keys["check"]), "rank": rank,
                          "counts": rank >= 0})
    grouped = cells.groupby(["path", "check"], sort=False).agg(n=("counts", "sum"), worst=("rank", "max"))
    return {key: (int(n), int(worst) if n else -1)
            for key, n, worst in zip(grouped.index, grouped["n"], grouped["worst"])}


def is_value(column: pd.Series, value: str) -> np.ndarray:
    """``column.astype(str) == value`` as a boolean array, compared once per distinct value."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    hit = np.array([str(u) == value for u in uniques] + [False], bool)
    return hit[codes]                   # code -1 (missing) reads the trailing False


def severity_ranks(column: pd.Series) -> np.ndarray:
    """:func:`palette.severity_rank` of every cell, computed once per distinct value."""
    codes, uniques = pd.factorize(column.astype(object), use_na_sentinel=True)
    ranks = np.array([palette.severity_rank(u) for u in uniques] + [palette.severity_rank(None)], np.int64)
    return ranks[codes]


def path_flows(analysis, path: str, columns=None) -> pd.DataFrame:
    """The flows of ``path`` (only ``columns`` of them, when given)."""
    flows = frame(analysis, "flows")
    if columns is not None:
        flows = flows[[c for c in flows.columns if c in columns]]
    if not len(flows) or "path" not in flows:
        return flows.iloc[0:0]
    return flows[is_value(flows["path"], path)]


def findings_of(analysis, path: str, limit: int | None = None) -> pd.DataFrame:
    """The findings of ``path``, worst first, then by check. With ``limit``: the first ``limit`` of them
    and the first one of each check that is not suppressed (what a report lists, and where it reads
    each check's remediation), in the same order, their texts made only for those rows while the
    check layer still holds them unmade; :func:`finding_count` says how many there are in all."""
    findings = getattr(analysis, "finding_set", None)
    if limit is None or findings is None or not findings.compact:
        whole = frame(analysis, "findings")
        sub = whole[is_value(whole["path"], path)]
        rank = severity_ranks(sub["severity"])
        ordered = sub.assign(_rank=rank).sort_values(["_rank", "check"], ascending=[False, True]).drop(columns="_rank")
        return ordered if limit is None else _shown(ordered, limit, suppressed_mask(analysis))
    keys = findings.keys_frame()
    sub = keys[is_value(keys["path"], path)]
    if not len(sub):            # most paths of a report have none
        return findings.rows(sub.index.to_numpy())
    rank = severity_ranks(sub["severity"])
    ordered = sub.assign(_rank=rank).sort_values(["_rank", "check"], ascending=[False, True])
    picked = _shown(ordered, limit, suppressed_mask(analysis))
    return findings.rows(picked.index.to_numpy())


def _shown(ordered: pd.DataFrame, limit: int, suppressed: pd.Series) -> pd.DataFrame:
    """The first ``limit`` rows of ``ordered`` and the first live row of each of its checks, in its order."""
    live = ordered[~suppressed.reindex(ordered.index, fill_value=False).to_numpy(bool)]
    firsts = live.index[~live["check"].astype(str).duplicated().to_numpy()]
    keep = np.zeros(len(ordered), bool)
    keep[:limit] = True
    keep |= ordered.index.isin(firsts)
    return ordered[keep]


#: no finding positions
NO_POSITIONS = np.zeros(0, np.int64)


def worst_first(keys: pd.DataFrame, by_check: bool = False) -> dict:
    """Positions (0-based rows of ``keys``, the findings' order) of each path's findings, worst first in
    the order of ``findings_of`` (severity rank descending, then check, ties in table order): one
    sort of all findings, then one group per path, or per (path, check) with ``by_check``, keyed by
    their texts (``str``). Findings without a path (or a check, with ``by_check``) belong to none, as in
    ``is_value``."""
    if not len(keys):
        return {}
    path, paths = _text_codes(keys["path"])
    check, checks = _text_codes(keys["check"])
    table = pd.DataFrame({"_path": path, "_rank": severity_ranks(keys["severity"]),
                          "check": keys["check"].reset_index(drop=True)})
    order = table.sort_values(["_path", "_rank", "check"], ascending=[True, False, True]).index.to_numpy()
    order = order[(path[order] >= 0) & ((check[order] >= 0) if by_check else True)]
    if not by_check:
        groups = pd.Series(path[order]).groupby(path[order], sort=False).indices
        return {paths[p]: order[idx] for p, idx in groups.items()}
    groups = pd.DataFrame({"p": path[order], "c": check[order]}).groupby(["p", "c"], sort=False).indices
    return {(paths[p], checks[c]): order[idx] for (p, c), idx in groups.items()}


def _text_codes(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """One code per cell for ``str(cell)`` (-1 when missing) and the texts of the codes: computed once
    per distinct value, not per cell."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    texts, same = pd.factorize(np.array([str(u) for u in uniques] + [""], object))
    return np.where(codes >= 0, texts[codes], -1), [str(t) for t in same]


def rows_at(analysis, positions) -> dict[int, dict]:
    """position -> the finding there as a record (all columns, texts included), for ``positions`` only
    (rows of ``finding_keys``): while the check layer holds the texts unmade, only the blocks
    holding one of them make theirs (``FindingSet.rows``)."""
    wanted = np.unique(np.concatenate([np.asarray(p, np.int64) for p in positions])) if len(positions) else NO_POSITIONS
    if not len(wanted):
        return {}
    findings = getattr(analysis, "finding_set", None)
    rows = findings.rows(wanted) if findings is not None else frame(analysis, "findings").iloc[wanted]
    return dict(zip(wanted.tolist(), rows.to_dict("records")))


def finding_count(analysis, path: str) -> int:
    """How many findings ``path`` has (counted from their keys)."""
    keys = finding_keys(analysis)
    return int(is_value(keys["path"], path).sum()) if len(keys) else 0


def role_hosts(analysis) -> dict[str, list[str]]:
    """role -> the addresses seen in it (inventory names when known), for the path map's nodes."""
    flows = frame(analysis, "flows")
    names = inventory_names(analysis)
    out: dict[str, set[str]] = {}
    if not len(flows) or "src_role" not in flows:
        return {}
    for ip_col, role_col in (("src_ip", "src_role"), ("dst_ip", "dst_role")):
        # the distinct (address, role) pairs first: a few per host, not one per connection (a scan:
        # one per connection, so they are grouped by role as columns, not walked in Python)
        pairs = pd.DataFrame({"ip": str_array(flows[ip_col]),
                              "role": str_array(flows[role_col])}).drop_duplicates()
        shown = pairs["ip"].map(names).fillna(pairs["ip"]) if names else pairs["ip"]
        for role, hosts in shown.groupby(pairs["role"].to_numpy(object), sort=False):
            out.setdefault(role, set()).update(hosts.tolist())
    return {r: sorted(v) for r, v in out.items()}


def inventory_names(analysis) -> dict[str, str]:
    """address -> host name from the analysis' inventory, when it has one."""
    inv = getattr(analysis, "inventory", None)
    names: dict[str, str] = {}
    if inv is None:
        return names
    for group in ("control_plane", "nodes"):
        members = getattr(inv, group, None)
        if members is None and isinstance(inv, dict):
            members = inv.get(group)
        for m in members or []:
            name = getattr(m, "name", None) if not isinstance(m, dict) else m.get("name")
            addrs = getattr(m, "addresses", None) if not isinstance(m, dict) else m.get("addresses")
            for a in addrs or []:
                if name:
                    names[str(a)] = str(name)
    return names


def cert_states(analysis) -> pd.DataFrame:
    """Certificates with ``seen_start`` / ``seen_end`` (when the connections carrying them ran; the
    capture window if unknown) and their validity ``state`` then: valid | expiring | expired |
    not-yet-valid ("expiring": ends within EXPIRING_DAYS after it was seen)."""
    certs = frame(analysis, "certs").copy()
    t0, t1 = capture_window(analysis)
    if not len(certs):
        for col in ("seen_start", "seen_end"):
            certs[col] = pd.Series(dtype="datetime64[ns, UTC]")
        certs["state"] = pd.Series(dtype="string")
        return certs
    flows = frame(analysis, "flows")
    start_of = dict(zip(flows["flow_id"].astype("int64"), flows["ts_start"].astype(float)))
    end_of = dict(zip(flows["flow_id"].astype("int64"), flows["ts_end"].astype(float)))
    seen_start, seen_end = [], []
    for ids in certs["flow_ids"]:
        ids = [int(i) for i in as_list(ids) if int(i) in start_of]
        seen_start.append(min((start_of[i] for i in ids), default=t0))
        seen_end.append(max((end_of[i] for i in ids), default=t1))
    certs["seen_start"] = pd.to_datetime(np.array(seen_start, dtype=float), unit="s", utc=True)
    certs["seen_end"] = pd.to_datetime(np.array(seen_end, dtype=float), unit="s", utc=True)
    nb = pd.to_datetime(certs["not_before"], utc=True)
    na = pd.to_datetime(certs["not_after"], utc=True)
    soon = certs["seen_end"] + pd.Timedelta(days=palette.EXPIRING_DAYS)
    certs["state"] = np.where(na < certs["seen_start"], "expired",
                              np.where(nb > certs["seen_end"], "not-yet-valid",
                                       np.where(na < soon, "expiring", "valid")))
    return certs


def cert_paths(analysis) -> dict[str, list[str]]:
    """certificate fingerprint -> paths of the flows it was seen on."""
    flows = frame(analysis, "flows")
    certs = frame(analysis, "certs")
    if not len(certs) or "path" not in flows:
        return {}
    path_of_flow = dict(zip(flows["flow_id"].astype("int64"), flows["path"].astype(str)))
    out = {}
    for fp, ids in zip(certs["fingerprint"].astype(str), certs["flow_ids"]):
        out[fp] = sorted({path_of_flow[i] for i in as_list(ids) if i in path_of_flow}, key=palette.path_sort_key)
    return out


def role_hosts_scoped(analysis) -> dict[str, list[str]]:
    """Like role_hosts, over the flows of the path map (path other than "other")."""
    flows = frame(analysis, "flows")
    if not len(flows) or "path" not in flows:
        return {}
    scoped = type("Scoped", (), {})()
    scoped.flows = flows[flows["path"].astype(str) != "other"]
    scoped.inventory = getattr(analysis, "inventory", None)
    return role_hosts(scoped)


def common_name(subject: str) -> str:
    """The CN of an RFC 4514 subject, else the subject itself."""
    for part in subject.split(","):
        key, _, value = part.strip().partition("=")
        if key.upper() == "CN" and value:
            return value
    return subject


def finding_keys(analysis) -> pd.DataFrame:
    """The findings' check, severity, path and count (and suppression columns where a suppressions
    file added them), without making their texts (check layer: ``FindingSet``)."""
    findings = getattr(analysis, "finding_set", None)
    return findings.keys_frame() if findings is not None else frame(analysis, "findings")


def suppressed_mask(analysis) -> pd.Series:
    """True for findings a suppressions file silenced (column ``suppressed``; none without one)."""
    findings = finding_keys(analysis)
    if "suppressed" not in findings:
        return pd.Series(False, index=findings.index)
    return findings["suppressed"].fillna(False).astype(bool)


def gating_findings(analysis, fail_on: str) -> pd.DataFrame:
    """The findings at or above ``fail_on`` that count for the exit code (suppressed ones do not)."""
    findings = finding_keys(analysis)
    ranks = severity_ranks(findings["severity"])
    return findings[(ranks >= palette.severity_rank(fail_on)) & ~suppressed_mask(analysis).to_numpy(bool)]


def finding_fingerprints(analysis) -> list[str]:
    """Each finding's stable fingerprint: the check layer's ``fingerprint`` column when present, else a
    SHA-256 of check, path and the sorted connection keys (initiator, responder, responder port) of
    its flows: never frame numbers, ephemeral ports or flow ids."""
    findings = frame(analysis, "findings")
    if "fingerprint" in findings and findings["fingerprint"].notna().all():
        return [str(v) for v in findings["fingerprint"]]
    return fallback_fingerprints(findings, connection_keys(analysis))


def connection_keys(analysis) -> dict[int, tuple[str, str, int]]:
    """flow id -> (initiator, responder, responder port): what a fallback fingerprint names a flow by."""
    flows = frame(analysis, "flows")
    if not len(flows):
        return {}
    return dict(zip(flows["flow_id"].astype("int64"),
                    zip(flows["src_ip"].astype(str), flows["dst_ip"].astype(str), flows["dst_port"].astype(int))))


def fallback_fingerprints(findings: pd.DataFrame, keys: dict) -> list[str]:
    """:func:`fallback_fingerprint` of each finding of ``findings``, its flows named by ``keys``
    (:func:`connection_keys`)."""
    return [fallback_fingerprint(check, path, [keys[int(i)] for i in as_list(ids) if int(i) in keys])
            for check, path, ids in zip(findings["check"].astype(str), findings["path"].astype(str),
                                        findings["flow_ids"])]


def fallback_fingerprint(check: str, path: str, connections) -> str:
    """SHA-256 (32 hex digits) of check, path and the sorted (initiator, responder, responder port) keys."""
    import hashlib
    conns = sorted({f"{a}>{b}:{int(p)}" for a, b, p in connections})
    return hashlib.sha256("|".join([str(check), str(path), *conns]).encode()).hexdigest()[:32]


def check_catalog() -> dict[str, dict]:
    """check id -> its entry of cfg/checks.yaml (title, reference, remediation, controls ...)."""
    return {str(c["id"]): c for c in catalog_checks()}


@functools.cache
def _catalog_read_only() -> dict[str, dict]:
    """check_catalog() made once per process, for the readers below (a copy per finding and path
    was most of the HTML report's time outside its figures); never handed out."""
    return check_catalog()


def controls_of(check: str) -> list[dict]:
    """The benchmark recommendations a check evidences: [{framework, id, title}] from checks.yaml."""
    return copy.deepcopy(list(_catalog_read_only().get(str(check), {}).get("controls") or []))


def control_label(control: dict) -> str:
    """``CIS Kubernetes Benchmark v1.10 1.2.5: Ensure that ...`` in one line."""
    ident = f" {control['id']}" if control.get("id") else ""
    return f"{control.get('framework', '')}{ident}: {control.get('title', '')}".strip()


def client_cert_paths(analysis=None) -> tuple[str, ...]:
    """The paths whose policy expects a client certificate (those ``client-cert-missing`` judges)."""
    return tuple(p for p, checks in applicable_checks(analysis).items() if "client-cert-missing" in checks)


def remediation_for(check: str, path: str, fallback: str = "") -> str:
    """What fixes ``check`` on ``path``: the check's ``remediation_by_path`` entry for that path
    (only the flags of that path), else its general remediation, else ``fallback``."""
    entry = _catalog_read_only().get(str(check), {})
    by_path = entry.get("remediation_by_path") or {}
    text_ = by_path.get(str(path)) or entry.get("remediation") or fallback
    return " ".join(str(text_).split())

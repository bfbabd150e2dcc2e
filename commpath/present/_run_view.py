"""The run's verdict and evidence as every report states them at the top (coverage, reasons, banner)."""

from __future__ import annotations

import pandas as pd

from ._model import as_list, finding_keys, frame, gating_findings, suppressed_mask, text


def coverage(analysis) -> dict:
    """What evidence the run had: the check layer's ``coverage`` when it computed one, else what the
    analysis itself shows (inventory given or inferred, hosts, capture files)."""
    given = getattr(analysis, "coverage", None)
    if isinstance(given, dict) and given:
        return given
    flows = frame(analysis, "flows")
    caps = frame(analysis, "captures")
    inferred = bool(flows["roles_inferred"].fillna(True).astype(bool).all()) if "roles_inferred" in flows and len(flows) \
        else getattr(analysis, "inventory", None) is None
    hosts = sorted({text(h) for h in caps.get("host", pd.Series(dtype=str)) if text(h)})
    return {
        "inventory": "inferred" if getattr(analysis, "inventory", None) is None else "given",
        "roles_inferred": inferred,
        "ca_bundle": None, "keylog": None,
        "hosts": hosts, "interfaces": [], "capture_filter": None, "unseen_paths": [],
    }


def _inconclusive_reasons(analysis, cov: dict) -> list[str]:
    """Why the evidence cannot support a pass, in words (empty when it can)."""
    paths = frame(analysis, "paths")
    verdicts = paths["verdict"].astype(str) if len(paths) else pd.Series(dtype=str)
    observed = verdicts[verdicts != "not-observed"]
    blind = int(observed.isin(["not-observable", "inconclusive"]).sum())
    reasons = []
    if not len(observed):
        reasons.append("no documented path was observed")
    if cov.get("inventory") != "given":
        reasons.append("no inventory: every role was inferred from ports and handshakes")
    if len(observed) and blind * 2 > len(observed):
        missing = [what for key, what in (("ca_bundle", "--ca"), ("keylog", "--keylog")) if cov.get(key) is False]
        reasons.append(f"{blind} of {len(observed)} observed paths are not observable from these captures"
                       + (f" (not given: {', '.join(missing)})" if missing else ""))
    if len(observed) and "pass" not in set(observed) and not reasons and not (observed.isin(["fail", "warn"]).any()):
        reasons.append("no observed path could be judged")
    return reasons


def run_verdict(analysis, fail_on: str = "high") -> dict:
    """The run's answer for a banner and the exit code: ``fail`` (unsuppressed findings at or above
    ``fail_on``), ``warn`` (findings, but none at or above it, or all of those suppressed),
    ``inconclusive`` (the evidence cannot support a pass) or ``pass``; with the reason in words.

    ``fail_on`` and suppressions decide what counts as failing; the check layer's run verdict
    (``analysis.verdict``) and its coverage decide whether the evidence supports a pass."""
    failing = len(gating_findings(analysis, fail_on))
    if failing:
        return {"verdict": "fail", "failing": failing,
                "reason": f"{failing} finding{'s' if failing != 1 else ''} at or above {fail_on}"}
    cov = coverage(analysis)
    layer = getattr(analysis, "verdict", None)
    layer = layer if isinstance(layer, str) and layer else None
    reasons = _inconclusive_reasons(analysis, cov)
    findings = finding_keys(analysis)
    muted = int(suppressed_mask(analysis).sum())
    # the rule: mostly blind or all-inferred evidence is inconclusive even when some path
    # warns (the check layer's run verdict ranks warn first; nothing fails at --fail-on here)
    if layer == "inconclusive" or reasons:
        below = len(findings) - muted
        extra = [f"{below} finding{'s' if below != 1 else ''} below {fail_on}"] if below else []
        return {"verdict": "inconclusive", "failing": 0,
                "reason": "; ".join(reasons + extra) or "the evidence given cannot support a pass"}
    if layer in ("fail", "warn") or (layer is None and len(findings)):
        below = len(findings) - muted
        parts = [f"{below} finding{'s' if below != 1 else ''} below {fail_on}"] if below else []
        parts += [f"{muted} suppressed"] if muted else []
        return {"verdict": "warn", "failing": 0, "reason": "; ".join(parts) or f"nothing at or above {fail_on}"}
    observed = int((frame(analysis, "paths")["verdict"].astype(str) != "not-observed").sum())
    return {"verdict": "pass", "failing": 0,
            "reason": f"no finding on {observed} observed path{'s' if observed != 1 else ''}, "
                      "with the evidence listed below"}


def coverage_rows(analysis) -> list[tuple[str, str]]:
    """The coverage as (label, text) rows for every report format, in one order."""
    cov = coverage(analysis)

    def listed(values, none: str = "none recorded") -> str:
        values = [text(v) for v in as_list(values) if text(v)]
        return ", ".join(values) if values else none

    def given(value, what: str) -> str:
        if value in (None, ""):
            return "not recorded"
        if isinstance(value, bool):
            return "given" if value else f"not given: {what}"
        return text(value)
    inventory = text(cov.get("inventory"), "unknown")
    if inventory != "given":
        inventory = "not given: roles inferred from ports and handshakes"
    elif cov.get("roles_inferred"):
        inventory = "given; where it is silent, roles were inferred from ports and handshakes"
    unseen = as_list(cov.get("unseen_paths") or cov.get("paths_filtered_out"))
    handshakes = ([("TLS handshakes", "not analysed: TLS-based checks are not observable")]
                  if cov.get("tls_analyzed") is False else [])
    return [
        ("inventory", inventory),
        *handshakes,
        ("CA bundle", given(cov.get("ca_bundle"), "serving certificates cannot be verified")),
        ("TLS key log", given(cov.get("keylog"), "TLS 1.3 certificates stay encrypted")),
        ("hosts", listed(cov.get("hosts"))),
        ("interfaces", listed(cov.get("interfaces"))),
        ("capture filter", text(cov.get("capture_filter"), "none recorded")),
        ("paths the filter could not have seen",
         listed(unseen) if unseen else "none: every catalog path passes the recorded filters"
         if cov.get("unseen_paths_evaluated") else "unknown: no capture filter recorded" if not cov.get("capture_filter")
         else "not evaluated: a capture without a recorded filter, or one libpcap cannot compile"),
    ]


__all__ = ["coverage", "coverage_rows", "run_verdict"]

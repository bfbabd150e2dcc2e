"""SARIF 2.1.0 export: checks as rules (with help, remediation and control mappings), findings as results."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import _catalog, _model, _run_view

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
INFORMATION_URI = "https://kubernetes.io/docs/concepts/architecture/control-plane-node-communication/"
#: finding severity -> SARIF level
LEVELS = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
#: finding severity -> the CVSS-like score that code-scanning services sort by
SECURITY_SEVERITY = {"critical": "9.5", "high": "7.5", "medium": "5.0", "low": "3.0", "info": "0.0"}
FINGERPRINT_KEY = "commpath/v1"


def _rule_name(check_id: str) -> str:
    return "".join(part.capitalize() for part in check_id.split("-"))


def _artifact_uri(capture: str) -> str:
    path = Path(capture)
    return path.as_uri() if path.is_absolute() else path.as_posix()


def _taxonomies(catalog: dict[str, dict]) -> list[dict]:
    """One SARIF taxonomy per control framework named in checks.yaml, its taxa the recommendations."""
    frameworks: dict[str, dict[str, str]] = {}
    for entry in catalog.values():
        for c in entry.get("controls") or []:
            frameworks.setdefault(str(c["framework"]), {})[str(c.get("id") or c["title"])] = str(c["title"])
    return [{"name": name, "organization": name.split(" ")[0],
             "shortDescription": {"text": name},
             "taxa": [{"id": ident, "name": title, "shortDescription": {"text": title}}
                      for ident, title in sorted(taxa.items())]}
            for name, taxa in sorted(frameworks.items())]


def _rule(check_id: str, entry: dict) -> dict:
    ref = entry.get("reference") or {}
    quote = " ".join(str(ref.get("quote", "")).split())
    remediation = " ".join(str(entry.get("remediation", "")).split())
    controls = list(entry.get("controls") or [])
    control_lines = [f"- {_model.control_label(c)}" for c in controls]
    help_text = f"Remediation: {remediation}" + (f"\nControls:\n" + "\n".join(control_lines) if controls else "")
    help_md = (f"**Remediation.** {remediation}\n\n> {quote}\n\n[Kubernetes document]"
               f"({_catalog.reference_url(str(ref.get('anchor', '')))})"
               + ("\n\n**Controls.**\n" + "\n".join(control_lines) if controls else ""))
    severity = str(entry.get("severity", "medium"))
    return {
        "id": check_id,
        "name": _rule_name(check_id),
        "shortDescription": {"text": str(entry.get("title", check_id))},
        "fullDescription": {"text": quote or str(entry.get("title", check_id))},
        "help": {"text": help_text, "markdown": help_md},
        "helpUri": _catalog.reference_url(str(ref.get("anchor", ""))),
        "defaultConfiguration": {"level": LEVELS.get(severity, "warning")},
        "relationships": [{"target": {"id": str(c.get("id") or c["title"]),
                                      "toolComponent": {"name": str(c["framework"])}},
                           "kinds": ["relevant"]} for c in controls],
        "properties": {"tags": ["security", "kubernetes", *entry.get("paths", [])],
                       "security-severity": SECURITY_SEVERITY.get(severity, "5.0"),
                       "controls": controls},
    }


def build_sarif(analysis, fail_on: str = "high") -> dict:
    """The SARIF log of ``analysis`` as a dict (one run)."""
    from .._version import __version__
    catalog = _model.check_catalog()
    findings = _model.frame(analysis, "findings").reset_index(drop=True)
    used = [str(c) for c in dict.fromkeys(findings["check"].astype(str))]
    rule_ids = list(catalog) + [c for c in used if c not in catalog]
    rules = [_rule(cid, catalog.get(cid, {"title": cid})) for cid in rule_ids]
    index = {cid: i for i, cid in enumerate(rule_ids)}
    captures = _model.frame(analysis, "captures")
    artifacts = [{"location": {"uri": _artifact_uri(_model.text(c.get("file")))},
                  "description": {"text": f"capture of host {_model.text(c.get('host'), '?')} "
                                          f"({_model.text(c.get('role'), 'role unknown')}), "
                                          f"{_model.text(c.get('packets'), '?')} packets"},
                  "mimeType": "application/vnd.tcpdump.pcap"} for _, c in captures.iterrows()]
    art_index = {_artifact_uri(_model.text(c.get("file"))): i for i, (_, c) in enumerate(captures.iterrows())}
    fingerprints = _model.finding_fingerprints(analysis)
    suppressed = _model.suppressed_mask(analysis).reset_index(drop=True)
    results = []
    for i, f in findings.iterrows():
        check, sev = str(f["check"]), str(f["severity"])
        uri = _artifact_uri(_model.text(f.get("capture")))
        location = {"artifactLocation": {"uri": uri, **({"index": art_index[uri]} if uri in art_index else {})}}
        frames = [int(x) for x in _model.as_list(f.get("frames"))]
        result = {
            "ruleId": check, "ruleIndex": index[check], "level": LEVELS.get(sev, "warning"),
            "message": {"text": _model.text(f.get("message"))},
            "locations": [{"physicalLocation": location,
                           "logicalLocations": [{"name": str(f["path"]), "kind": "module",
                                                 "fullyQualifiedName": f"kubernetes/{f['path']}"}],
                           "message": {"text": f"frames {', '.join(map(str, frames[:20]))}"
                                               + (" …" if len(frames) > 20 else "")}}],
            "partialFingerprints": {FINGERPRINT_KEY: fingerprints[i]},
            "properties": {"severity": sev, "path": str(f["path"]),
                           "security-severity": SECURITY_SEVERITY.get(sev, "5.0"),
                           "count": int(f["count"]) if "count" in f and pd.notna(f["count"]) else
                           len(_model.as_list(f.get("flow_ids"))),
                           "flow_ids": [int(x) for x in _model.as_list(f.get("flow_ids"))],
                           "frames": frames, "display_filter": _model.text(f.get("display_filter")),
                           "remediation": _model.text(f.get("remediation")),
                           "reference": _catalog.reference_url(_model.text(f.get("reference")))},
        }
        if bool(suppressed.iloc[i]):
            result["suppressions"] = [{"kind": "external", "status": "accepted",
                                       "justification": f"{_model.text(f.get('suppression_reason'))} "
                                                        f"(until {_model.text(f.get('suppression_expires'))})"}]
        results.append(result)
    verdict = _run_view.run_verdict(analysis, fail_on)
    paths = _model.frame(analysis, "paths")
    taxonomies = _taxonomies(catalog)
    run = {
        "tool": {"driver": {"name": "commpath", "version": __version__, "semanticVersion": __version__,
                            "informationUri": INFORMATION_URI, "rules": rules,
                            "supportedTaxonomies": [{"name": t["name"], "index": i} for i, t in enumerate(taxonomies)]}},
        "taxonomies": taxonomies,
        "artifacts": artifacts,
        "invocations": [{"executionSuccessful": True,
                         "toolExecutionNotifications": [{"level": "warning", "message": {"text": w}}
                                                        for w in getattr(analysis, "warnings", [])]}],
        "results": results,
        "properties": {
            "verdict": verdict["verdict"], "verdictReason": verdict["reason"], "failOn": fail_on,
            "coverage": json.loads(json.dumps(_run_view.coverage(analysis), default=str)),
            "paths": [{"id": str(p["id"]), "verdict": str(p["verdict"]), "flows": int(p["flows"])}
                      for _, p in paths.iterrows()],
        },
    }
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}


def build_sarif_text(analysis, fail_on: str = "high") -> str:
    return json.dumps(build_sarif(analysis, fail_on), indent=2, ensure_ascii=False) + "\n"


__all__ = ["build_sarif", "build_sarif_text"]

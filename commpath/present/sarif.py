"""SARIF 2.1.0 export: checks as rules (with help, remediation and control mappings), findings as results."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
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


def _run(analysis, fail_on: str, checks, results) -> tuple[dict, dict[str, int], dict[str, int]]:
    """The SARIF log with ``results`` as its run's results; the rule index of each check id (the
    catalog's, then ``checks`` not in it, in order) and the artifact index of each capture uri."""
    from .._version import __version__
    catalog = _model.check_catalog()
    used = [str(c) for c in dict.fromkeys(checks)]
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
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}, index, art_index


def build_sarif(analysis, fail_on: str = "high") -> dict:
    """The SARIF log of ``analysis`` as a dict (one run), made whole in memory: the reference
    :func:`sarif_chunks` writes the text of, a batch of results at a time."""
    findings = _model.frame(analysis, "findings").reset_index(drop=True)
    results: list[dict] = []
    doc, index, art_index = _run(analysis, fail_on, findings["check"].astype(str), results)
    fingerprints = _model.finding_fingerprints(analysis)
    suppressed = _model.suppressed_mask(analysis).reset_index(drop=True)
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
    return doc


#: rows of a findings batch made into result texts at once (bounds the texts held while writing)
SLICE = 8192
_encode = json.encoder.encode_basestring    # the string encoder of json.dumps(..., ensure_ascii=False)


class _Refingerprint(Exception):
    """A later batch lacks the check layer's fingerprints after earlier ones used theirs: every
    finding then takes the fallback fingerprint, as :func:`_model.finding_fingerprints` gives them."""


def _texts(rows: pd.DataFrame, name: str, missing: str = "") -> list[str]:
    """``_model.text`` of each cell of column ``name`` (``missing`` for all when the column is absent)."""
    if name not in rows:
        return [missing] * len(rows)
    text = _model.text
    return [v if type(v) is str else text(v, missing) for v in _values(rows[name])]


def _int_lists(rows: pd.DataFrame, name: str) -> list[list[int]]:
    if name not in rows:
        return [[] for _ in range(len(rows))]
    as_list = _model.as_list
    return [[int(x) for x in as_list(v)] for v in _values(rows[name])]


def _values(column: pd.Series) -> list:
    """``column.tolist()``, an Arrow column's through pyarrow (pandas makes a scalar per cell; its nulls
    come as None here, as pd.NA there: the same to ``_model.text`` and ``_model.as_list``)."""
    if isinstance(column.dtype, pd.ArrowDtype):
        return column.array.__arrow_array__().to_pylist()
    return column.tolist()


def _ints(values: list[int], indent: str) -> str:
    """A list of ints as json.dumps(indent=2) writes it with its items at ``indent``."""
    if not values:
        return "[]"
    return "[\n" + indent + (",\n" + indent).join(map(str, values)) + "\n" + indent[:-2] + "]"


class _Fingerprints:
    """Each batch's fingerprints as ``_model.finding_fingerprints`` gives them for the whole table:
    the ``fingerprint`` column when every finding has one, else the fallback hash of each."""

    def __init__(self, analysis, fallback: bool = False):
        self.analysis, self.fallback, self.used_column, self._keys = analysis, fallback, False, None

    def __call__(self, rows: pd.DataFrame) -> list[str]:
        if not self.fallback and "fingerprint" in rows and rows["fingerprint"].notna().all():
            self.used_column = True
            return [str(v) for v in rows["fingerprint"]]
        if self.used_column:
            raise _Refingerprint
        self.fallback = True
        if self._keys is None:
            self._keys = _model.connection_keys(self.analysis)
        return _model.fallback_fingerprints(rows, self._keys)


def _finding_batches(analysis):
    """The findings a batch at a time (``analysis.finding_set`` where the analysis has one: texts made
    a block at a time), each cut into slices of at most SLICE rows."""
    findings = getattr(analysis, "finding_set", None)
    batches = findings.batches() if findings is not None else [_model.frame(analysis, "findings")]
    for batch in batches:
        batch = batch.reset_index(drop=True)
        for start in range(0, len(batch), SLICE):
            yield batch.iloc[start:start + SLICE] if len(batch) > SLICE else batch


def _result_texts(analysis, index: dict, art_index: dict, fingerprint_of) -> Iterator[str]:
    """The text of each result as ``json.dumps(build_sarif(...), indent=2, ensure_ascii=False)``
    writes it inside the run's results (8 spaces in), a slice of findings at a time: strings by the
    C encoder, the fixed structure by hand."""
    suppressed = _model.suppressed_mask(analysis).to_numpy(bool)
    uris: dict[str, str] = {}
    references: dict[str, str] = {}
    e = _encode
    done = 0
    for rows in _finding_batches(analysis):
        n = len(rows)
        checks = rows["check"].astype(str).tolist()
        severities = rows["severity"].astype(str).tolist()
        paths = rows["path"].astype(str).tolist()
        captures = _texts(rows, "capture")
        messages = _texts(rows, "message")
        filters = _texts(rows, "display_filter")
        remediations = _texts(rows, "remediation")
        refs = _texts(rows, "reference")
        frames_of = _int_lists(rows, "frames")
        flows_of = _int_lists(rows, "flow_ids")
        if "count" in rows:
            counts = rows["count"].tolist()
            missing = rows["count"].isna().to_numpy(bool)
        else:
            counts, missing = [None] * n, np.ones(n, bool)
        fingerprints = fingerprint_of(rows)
        muted = suppressed[done:done + n]
        if muted.any():
            reasons = _texts(rows, "suppression_reason")
            expiries = _texts(rows, "suppression_expires")
        out = []
        for j in range(n):
            check, sev, path, frames, flow_ids = checks[j], severities[j], paths[j], frames_of[j], flows_of[j]
            capture = captures[j]
            uri = uris.get(capture)
            if uri is None:
                uri = uris[capture] = _artifact_uri(capture)
            ref = references.get(refs[j])
            if ref is None:
                ref = references[refs[j]] = _catalog.reference_url(refs[j])
            at = art_index.get(uri)
            count = len(flow_ids) if missing[j] else int(counts[j])
            shown = f"frames {', '.join(map(str, frames[:20]))}" + (" …" if len(frames) > 20 else "")
            text = (
                '        {\n'
                f'          "ruleId": {e(check)},\n'
                f'          "ruleIndex": {index[check]},\n'
                f'          "level": {e(LEVELS.get(sev, "warning"))},\n'
                '          "message": {\n'
                f'            "text": {e(messages[j])}\n'
                '          },\n'
                '          "locations": [\n'
                '            {\n'
                '              "physicalLocation": {\n'
                '                "artifactLocation": {\n'
                f'                  "uri": {e(uri)}'
                + ('\n' if at is None else f',\n                  "index": {at}\n') +
                '                }\n'
                '              },\n'
                '              "logicalLocations": [\n'
                '                {\n'
                f'                  "name": {e(path)},\n'
                '                  "kind": "module",\n'
                f'                  "fullyQualifiedName": {e("kubernetes/" + path)}\n'
                '                }\n'
                '              ],\n'
                '              "message": {\n'
                f'                "text": {e(shown)}\n'
                '              }\n'
                '            }\n'
                '          ],\n'
                '          "partialFingerprints": {\n'
                f'            {e(FINGERPRINT_KEY)}: {e(fingerprints[j])}\n'
                '          },\n'
                '          "properties": {\n'
                f'            "severity": {e(sev)},\n'
                f'            "path": {e(path)},\n'
                f'            "security-severity": {e(SECURITY_SEVERITY.get(sev, "5.0"))},\n'
                f'            "count": {count},\n'
                f'            "flow_ids": {_ints(flow_ids, " " * 14)},\n'
                f'            "frames": {_ints(frames, " " * 14)},\n'
                f'            "display_filter": {e(filters[j])},\n'
                f'            "remediation": {e(remediations[j])},\n'
                f'            "reference": {e(ref)}\n'
                '          }'
            )
            if muted[j]:
                text += (',\n'
                         '          "suppressions": [\n'
                         '            {\n'
                         '              "kind": "external",\n'
                         '              "status": "accepted",\n'
                         f'              "justification": {e(f"{reasons[j]} (until {expiries[j]})")}\n'
                         '            }\n'
                         '          ]')
            out.append(text + '\n        }')
        done += n
        yield ",\n".join(out)


def sarif_chunks(analysis, fail_on: str = "high", _fallback: bool = False) -> Iterator[str]:
    """The text of :func:`build_sarif_text`, piece by piece: the run's header, its results a slice of
    findings at a time (never all in memory), then the run's tail."""
    keys = _model.finding_keys(analysis)
    mark = f"commpath-sarif-results-{uuid.uuid4().hex}"
    doc, index, art_index = _run(analysis, fail_on, keys["check"].astype(str), mark)
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    head, _, tail = text.partition(json.dumps(mark))
    if not len(keys):
        yield head + "[]" + tail
        return
    yield head + "[\n"
    first = True
    for part in _result_texts(analysis, index, art_index, _Fingerprints(analysis, _fallback)):
        if part:
            yield part if first else ",\n" + part
            first = False
    yield "\n      ]" + tail


def _chunks(analysis, fail_on: str) -> Iterator[str]:
    """:func:`sarif_chunks`, started again with fallback fingerprints for all when a batch lacks the
    check layer's (callers restart their output on the first chunk of the second pass)."""
    try:
        yield from sarif_chunks(analysis, fail_on)
    except _Refingerprint:
        yield None
        yield from sarif_chunks(analysis, fail_on, _fallback=True)


def build_sarif_text(analysis, fail_on: str = "high") -> str:
    """``json.dumps(build_sarif(analysis, fail_on), indent=2, ensure_ascii=False)`` and a newline,
    made without building the document (see :func:`sarif_chunks`)."""
    parts: list[str] = []
    for chunk in _chunks(analysis, fail_on):
        if chunk is None:
            parts.clear()
        else:
            parts.append(chunk)
    return "".join(parts)


def write_sarif(analysis, path: str | Path, fail_on: str = "high") -> Path:
    """Write :func:`build_sarif_text` to ``path`` (UTF-8) a piece at a time."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as fh:
        for chunk in _chunks(analysis, fail_on):
            if chunk is None:
                fh.seek(0)
                fh.truncate()
            else:
                fh.write(chunk)
    return path


__all__ = ["build_sarif", "build_sarif_text", "sarif_chunks", "write_sarif"]

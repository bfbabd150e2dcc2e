"""`commpath diff OLD NEW`: new, fixed and unchanged findings by fingerprint, and path verdict changes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import InputError
from . import _model, palette

#: exit codes of `commpath diff`: 0 no new finding at or above --fail-on, 1 some, 2 bad input.
EXIT_CLEAN, EXIT_NEW = 0, 1


#: what `commpath diff` reads of each finding (the rest of a million findings' texts is not kept)
FINDING_KEYS = ("fingerprint", "check", "severity", "path", "message", "count", "flow_ids", "suppressed",
                "suppression_reason")


def load_report(source: str | Path, whole: bool = True) -> dict:
    """report.json of an analyze output folder, or a report.json file, with every finding's fingerprint.

    ``whole=False`` (what `commpath diff` reads): no ``flows`` and only :data:`FINDING_KEYS` of each
    finding, read element by element (``_json_stream``): a run of a million connections is never
    held as a million flow and finding dicts (the flows only give the connection keys of findings
    written without a fingerprint)."""
    path = Path(source)
    file = path / "report.json" if path.is_dir() else path
    if not file.is_file():
        raise InputError(source, "not an analyze output folder or report.json file")
    try:
        if whole:
            report = json.loads(file.read_text(encoding="utf-8"))
        else:
            from ._json_stream import read_sections
            report = read_sections(file, each={"flows": _flow_key, "findings": _slim_finding})
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(file, f"cannot read report.json: {exc}") from None
    if not isinstance(report, dict) or not str(report.get("schema", "")).startswith("commpath.report/"):
        raise InputError(file, "not a commpath report.json (no 'schema': 'commpath.report/v1')")
    flows = report.get("flows", []) if whole else report.pop("flows", [])
    keys = dict(_connection_key(f) for f in flows if (f.get("flow_id") if isinstance(f, dict) else f[0]) is not None)
    for f in report.get("findings", []):
        if not f.get("fingerprint"):
            f["fingerprint"] = _model.fallback_fingerprint(
                f["check"], f["path"], [keys[int(i)] for i in f.get("flow_ids") or [] if int(i) in keys])
    return report


def _flow_key(flow):
    """A flow record as (flow id, initiator, responder, responder port)."""
    if not isinstance(flow, dict):
        raise ValueError("a flow record is not an object")
    return (flow.get("flow_id"), flow.get("src_ip"), flow.get("dst_ip"), flow.get("dst_port"))


def _slim_finding(finding):
    """A finding with :data:`FINDING_KEYS` only."""
    if not isinstance(finding, dict):
        raise ValueError("a finding is not an object")
    return {k: finding[k] for k in FINDING_KEYS if k in finding}


def _connection_key(flow) -> tuple[int, tuple]:
    """flow id -> (initiator, responder, responder port), of a flow record or its slim tuple."""
    if isinstance(flow, dict):
        return int(flow["flow_id"]), (flow["src_ip"], flow["dst_ip"], flow["dst_port"])
    return int(flow[0]), tuple(flow[1:])


def _key(f: dict) -> str:
    return str(f["fingerprint"])


def compare(old: dict, new: dict, suppressions=None) -> dict:
    """The comparison of two reports: findings new / fixed / unchanged (one entry per fingerprint,
    the same fingerprint seen in several captures counted once), and paths whose verdict changed."""
    def by_fp(report):
        out: dict[str, dict] = {}
        for f in report.get("findings", []):
            out.setdefault(_key(f), {**f, "count": 0})["count"] += int(f.get("count") or len(f.get("flow_ids") or []) or 1)
        return out
    before, after = by_fp(old), by_fp(new)
    notes: list[str] = []
    if suppressions is not None:
        import pandas as pd
        from ..check.suppress import apply
        fps = list(after)
        frame = pd.DataFrame({"fingerprint": fps, "check": [after[k]["check"] for k in fps],
                              "path": [after[k]["path"] for k in fps]})
        marked, notes = apply(frame, suppressions)
        for k, s, reason in zip(fps, marked["suppressed"], marked["suppression_reason"]):
            after[k]["suppressed"] = bool(s)
            if s:
                after[k]["suppression_reason"] = str(reason)

    def brief(f):
        return {k: f.get(k) for k in ("fingerprint", "check", "severity", "path", "message", "count", "suppressed",
                                      "suppression_reason") if f.get(k) is not None}

    def order(items):
        return sorted(items, key=lambda f: (-palette.severity_rank(f["severity"]), f["check"], f["path"]))
    old_paths = {p["id"]: p["verdict"] for p in old.get("paths", [])}
    new_paths = {p["id"]: p["verdict"] for p in new.get("paths", [])}
    changes = [{"path": pid, "old": old_paths.get(pid), "new": new_paths.get(pid)}
               for pid in _model.sorted_paths({*old_paths, *new_paths}) if old_paths.get(pid) != new_paths.get(pid)]
    return {
        "schema": "commpath.diff/v1",
        "new": order(brief(after[k]) for k in after if k not in before),
        "fixed": order(brief(before[k]) for k in before if k not in after),
        "unchanged": order(brief(after[k]) for k in after if k in before),
        "path_changes": changes,
        "verdict": {"old": old.get("verdict"), "new": new.get("verdict")},
        "notes": notes,
    }


def exit_code(result: dict, fail_on: str = "high") -> int:
    """1 when a new, unsuppressed finding is at or above ``fail_on``, else 0."""
    gate = palette.severity_rank(fail_on)
    return EXIT_NEW if any(palette.severity_rank(f["severity"]) >= gate and not f.get("suppressed")
                           for f in result["new"]) else EXIT_CLEAN


def _line(f: dict) -> str:
    mark = " [suppressed: " + f["suppression_reason"] + "]" if f.get("suppressed") else ""
    return f"  {f['severity']:8s} {f['check']} on {f['path']} ({f.get('count', 1)} conn.) {f['fingerprint'][:16]}{mark}"


def as_text(result: dict) -> str:
    out = []
    for title, key in (("new", "new"), ("fixed", "fixed"), ("unchanged", "unchanged")):
        out.append(f"{title}: {len(result[key])}")
        out.extend(_line(f) for f in result[key])
    out.append(f"path verdict changes: {len(result['path_changes'])}")
    out.extend(f"  {c['path']:28s} {c['old'] or '-'} -> {c['new'] or '-'}" for c in result["path_changes"])
    v = result["verdict"]
    if v["old"] or v["new"]:
        out.append(f"run verdict: {v['old'] or '-'} -> {v['new'] or '-'}")
    out.extend(f"note: {n}" for n in result["notes"])
    return "\n".join(out) + "\n"


def as_markdown(result: dict) -> str:
    from .markdown import cell
    out = ["# commpath diff", ""]
    for title, key in (("New findings", "new"), ("Fixed findings", "fixed"), ("Unchanged findings", "unchanged")):
        out += [f"## {title} ({len(result[key])})", ""]
        if result[key]:
            out += ["| severity | check | path | connections | fingerprint |", "|---|---|---|--:|---|"]
            out += [f"| {cell(f['severity'])} | {cell(f['check'])} | {cell(f['path'])} | {f.get('count', 1)} | "
                    f"`{f['fingerprint'][:16]}`{' (suppressed)' if f.get('suppressed') else ''} |" for f in result[key]]
            out.append("")
    out += [f"## Path verdict changes ({len(result['path_changes'])})", ""]
    out += [f"- {cell(c['path'])}: {cell(c['old'] or '-')} → {cell(c['new'] or '-')}" for c in result["path_changes"]]
    return "\n".join(out).rstrip() + "\n"


def main(args) -> int:
    """Handler of `commpath diff OLD NEW`: exit 0, or 1 with a new finding at or above --fail-on; 2 on bad input."""
    suppressions = None
    if getattr(args, "suppress", None):
        from ..check.suppress import load_suppressions
        suppressions = load_suppressions(args.suppress)
    result = compare(load_report(args.old, whole=False), load_report(args.new, whole=False), suppressions)
    text = {"json": lambda r: json.dumps(r, indent=2, ensure_ascii=False) + "\n",
            "md": as_markdown, "text": as_text}[args.format](result)
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(args.output, f"cannot write: {exc.strerror or exc}") from None
    return exit_code(result, args.fail_on)


__all__ = ["compare", "exit_code", "load_report", "main"]

"""Suppressions (YAML): accepted findings, by fingerprint or check+path, each with a reason and an expiry date."""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..classify._yamldoc import YamlDoc, expect_list, expect_mapping, expect_str, load_yaml
from ..classify.catalog import path_ids
from .policy import load_checks

DOC_KEYS = {"apiVersion", "kind", "suppressions"}
ENTRY_KEYS = {"fingerprint", "check", "path", "reason", "expires"}
FINGERPRINT = re.compile(r"^[0-9a-f]{8,128}$")
#: columns a suppressions file adds to the findings.
SUPPRESSION_COLUMNS = {"suppressed": "bool", "suppression_reason": "string", "suppression_expires": "string"}


@dataclass(frozen=True)
class Suppression:
    """One accepted finding: ``fingerprint``, or ``check`` with an optional ``path``."""

    reason: str
    expires: _dt.date
    fingerprint: str | None = None
    check: str | None = None
    path: str | None = None
    where: str = ""   # file:line, for messages

    def describe(self) -> str:
        what = f"fingerprint {self.fingerprint}" if self.fingerprint else \
            f"check {self.check}" + (f" on {self.path}" if self.path else "")
        return f"{self.where}: {what}"


def suppressions_from_doc(doc: YamlDoc) -> list[Suppression]:
    """Validate a parsed suppressions document: unknown keys, checks or paths, a missing reason or
    an unreadable expiry date are errors naming the file and line."""
    data = doc.data if doc.data is not None else {}
    expect_mapping(doc, "", data, DOC_KEYS)
    if data.get("apiVersion", "commpath/v1") != "commpath/v1":
        raise doc.error("apiVersion", f"expected 'commpath/v1', got {data['apiVersion']!r}")
    if data.get("kind", "Suppressions") != "Suppressions":
        raise doc.error("kind", f"expected 'Suppressions', got {data['kind']!r}")
    checks, paths = set(load_checks()), set(path_ids())
    out = []
    for i, raw in enumerate(expect_list(doc, "suppressions", data.get("suppressions", []))):
        key = f"suppressions[{i}]"
        expect_mapping(doc, key, raw, ENTRY_KEYS)
        fingerprint = raw.get("fingerprint")
        check = raw.get("check")
        path = raw.get("path")
        if (fingerprint is None) == (check is None):
            raise doc.error(key, "give either a fingerprint or a check (with an optional path)")
        if fingerprint is not None:
            fingerprint = expect_str(doc, f"{key}.fingerprint", fingerprint).lower()
            if not FINGERPRINT.match(fingerprint):
                raise doc.error(f"{key}.fingerprint", "expected the hex fingerprint of a finding (report.json)")
            if path is not None:
                raise doc.error(f"{key}.path", "a fingerprint already names its path; drop path or use check")
        if check is not None and expect_str(doc, f"{key}.check", check) not in checks:
            raise doc.error(f"{key}.check", f"unknown check {check!r} (known: {', '.join(sorted(checks))})")
        if path is not None and expect_str(doc, f"{key}.path", path) not in paths:
            raise doc.error(f"{key}.path", f"unknown path {path!r} (see `commpath paths`)")
        reason = raw.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise doc.error(f"{key}.reason", "every suppression needs a reason")
        expires = raw.get("expires")
        if isinstance(expires, str):
            try:
                expires = _dt.date.fromisoformat(expires)
            except ValueError:
                expires = None
        if isinstance(expires, _dt.datetime):
            expires = expires.date()
        if not isinstance(expires, _dt.date):
            raise doc.error(f"{key}.expires", "every suppression needs an expiry date (YYYY-MM-DD)")
        out.append(Suppression(reason=" ".join(reason.split()), expires=expires, fingerprint=fingerprint,
                               check=check, path=path, where=f"{doc.file}:{doc.line(key)}"))
    return out


def load_suppressions(path: str | Path) -> list[Suppression]:
    """The suppressions of a YAML file, validated."""
    return suppressions_from_doc(load_yaml(path))


def apply(findings: pd.DataFrame, suppressions: list[Suppression],
          today: _dt.date | None = None) -> tuple[pd.DataFrame, list[str]]:
    """``findings`` with ``suppressed``, ``suppression_reason`` and ``suppression_expires``; and the
    notes to show: expired entries (they no longer suppress) and entries that matched nothing.

    An entry is in force through its expiry date (UTC)."""
    today = today or _dt.datetime.now(_dt.timezone.utc).date()
    out = findings.copy()
    n = len(out)
    suppressed = [False] * n
    reasons: list[str | None] = [None] * n
    expiry: list[str | None] = [None] * n
    fps = out["fingerprint"].astype("string").fillna("").str.lower().tolist() if "fingerprint" in out else [""] * n
    checks = out["check"].astype(str).tolist() if n else []
    paths = out["path"].astype(str).tolist() if n else []
    notes = []
    for s in suppressions:
        hits = [i for i in range(n)
                if (s.fingerprint and fps[i] == s.fingerprint)
                or (s.check and checks[i] == s.check and (s.path is None or paths[i] == s.path))]
        if s.expires < today:
            notes.append(f"suppression expired on {s.expires.isoformat()} and no longer applies "
                         f"({s.describe()}; {len(hits)} finding{'s' if len(hits) != 1 else ''})")
            continue
        if not hits:
            notes.append(f"suppression matched no finding ({s.describe()})")
        for i in hits:
            if not suppressed[i]:
                suppressed[i], reasons[i], expiry[i] = True, s.reason, s.expires.isoformat()
    out["suppressed"] = pd.Series(suppressed, index=out.index, dtype="bool")
    out["suppression_reason"] = pd.Series(reasons, index=out.index, dtype="string")
    out["suppression_expires"] = pd.Series(expiry, index=out.index, dtype="string")
    return out, notes


__all__ = ["SUPPRESSION_COLUMNS", "Suppression", "apply", "load_suppressions", "suppressions_from_doc"]

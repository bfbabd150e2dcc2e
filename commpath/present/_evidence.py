"""What each evidence source (wire, probe, config, decrypted) said, as the reports show it side by side."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: evidence sources in the order reports show them (check/evidence.py SOURCES)
EVIDENCE_SOURCES = ("wire", "probe", "config", "decrypted")


def evidence_entries(value) -> list[dict]:
    """A finding's ``evidence_sources`` or a path's ``evidence`` cell as a list of entries."""
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        return [dict(e) for e in value if isinstance(e, dict) or hasattr(e, "keys")]
    return []


def _paths(analysis) -> pd.DataFrame:
    paths = getattr(analysis, "paths", None)
    return paths if isinstance(paths, pd.DataFrame) else pd.DataFrame()


def path_evidence(analysis, path: str) -> dict[str, list[dict]]:
    """What each source said about ``path``: source -> entries, in EVIDENCE_SOURCES order (sources
    with nothing to say are left out)."""
    paths = _paths(analysis)
    if "evidence" not in paths or not len(paths):
        return {}
    row = paths[paths["id"].astype(str) == path]
    out: dict[str, list[dict]] = {}
    for e in evidence_entries(row["evidence"].iloc[0]) if len(row) else []:
        out.setdefault(str(e.get("source")), []).append(e)
    return {s: out[s] for s in (*EVIDENCE_SOURCES, *[k for k in out if k not in EVIDENCE_SOURCES]) if s in out}


def sources_used(analysis) -> list[str]:
    """The sources any path's evidence cites, in EVIDENCE_SOURCES order."""
    paths = _paths(analysis)
    seen = {str(e.get("source")) for v in (paths["evidence"] if "evidence" in paths else [])
            for e in evidence_entries(v)}
    return [s for s in EVIDENCE_SOURCES if s in seen] + sorted(seen - set(EVIDENCE_SOURCES))


def unheard(check, heard: set[str]) -> bool:
    """A check that judges only another source's facts, and that source said nothing about the path."""
    from ..check import TESTS
    test = TESTS.get(check.test) if check is not None else None
    if not getattr(test, "host", False):
        return False
    wanted = {{"requests": "decrypted"}.get(n, n) for n in test.needs}
    return not (wanted & heard)


def evidence_table(analysis, pid: str, esc) -> str:
    """HTML: what each source said about the path, one column per source (``esc`` escapes text)."""
    said = path_evidence(analysis, pid)
    if not said:
        return ""
    cells = "".join(
        f'<td data-source="{esc(s)}"><ul>' + "".join(
            f'<li>{esc(e.get("said"))}<br><small class="where">{esc(e.get("where"))}</small></li>' for e in entries)
        + "</ul></td>" for s, entries in said.items())
    heads = "".join(f"<th>{esc(s)}</th>" for s in said)
    return f'<h3>Evidence by source</h3><table class="evidence"><tr>{heads}</tr><tr>{cells}</tr></table>'


def sources_html(finding, esc) -> str:
    """HTML: a finding's entries by source ('' when the wire is its only source)."""
    entries = evidence_entries(finding.get("evidence_sources"))
    if not any(e.get("source") != "wire" for e in entries):
        return ""
    items = "".join(f'<li data-source="{esc(e.get("source"))}"><b>{esc(e.get("source"))}</b>: {esc(e.get("said"))} '
                    f'<small class="where">{esc(e.get("where"))}</small></li>' for e in entries)
    return f'<dt>sources</dt><dd><ul class="sources">{items}</ul></dd>'


__all__ = ["EVIDENCE_SOURCES", "evidence_entries", "evidence_table", "path_evidence", "sources_html", "sources_used",
           "unheard"]

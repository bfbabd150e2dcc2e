"""What evidence a run had (``coverage``) and the run's verdict: never a pass without evidence.

The capture filters come from the capture agent's ``manifest.json`` beside each capture; a
path none of whose responder ports the filters let through could not have been seen.
"""

from __future__ import annotations

from pathlib import Path

from ..decode.merge import manifest_beside
from .reach import unseen_paths as _unseen_paths

#: run-level verdicts, worst first
RUN_VERDICTS = ("fail", "inconclusive", "warn", "pass")
BLIND = ("not-observable", "inconclusive")


def _manifest(capture_file: str) -> dict:
    return manifest_beside(capture_file)   # local, or beside a URL's capture (s3://...)


def _capture_facts(captures) -> tuple[list[str], list[str], list[tuple[str, str]], bool]:
    """(hosts, host:interface names, (host, filter), whether every capture recorded its filter) of the
    captures' manifests."""
    hosts, interfaces, filters = [], [], []
    unfiltered = 0
    files = [str(f) for f in captures["file"]] if captures is not None and len(captures) else []
    for file in files:
        m = _manifest(file)
        host = str(m.get("host") or Path(file).stem)
        hosts.append(host)
        for iface in m.get("interfaces") or []:
            name = iface.get("name") if isinstance(iface, dict) else iface
            if name:
                interfaces.append(f"{host}:{name}")
        if m.get("filter"):
            filters.append((host, str(m["filter"])))
        else:
            unfiltered += 1
    every = bool(files) and not unfiltered
    return list(dict.fromkeys(hosts)), list(dict.fromkeys(interfaces)), list(dict.fromkeys(filters)), every


def _filter_text(filters: list[tuple[str, str]]) -> str | None:
    distinct = list(dict.fromkeys(f for _, f in filters))
    if not distinct:
        return None
    if len(distinct) == 1:
        return distinct[0]
    return "; ".join(f"{h}: {f}" for h, f in filters)


def coverage(paths, flows, captures, *, inventory_given: bool, ca_given: bool, keylog_given: bool,
             tls_analyzed: bool, inventory: dict | None = None) -> dict:
    """The evidence a run had, for report.json's ``coverage`` and every report's header.

    ``unseen_paths`` lists the catalog paths that no capture's recorded filter could have kept (with
    ``inventory``, the dict form, for the ends' addresses); it is evaluated only when every capture
    recorded its filter (``unseen_paths_evaluated``)."""
    hosts, interfaces, filters, every_filtered = _capture_facts(captures)
    unseen = _unseen_paths([f for _, f in filters], inventory, flows) if every_filtered else None
    if unseen:          # what was captured in spite of the recorded filter was seen
        seen = set(paths.loc[paths["observed"].astype(bool), "id"].astype(str)) if "observed" in paths else set()
        unseen = [p for p in unseen if p not in seen]
    inferred = flows["roles_inferred"].fillna(True).astype(bool) if "roles_inferred" in flows else None
    verdicts = [str(v) for v in paths["verdict"]]
    observed = [v for v in verdicts if v != "not-observed"]
    return {
        "inventory": "given" if inventory_given else "inferred",
        "roles_inferred": bool(inferred.all()) if inferred is not None and len(inferred) else not inventory_given,
        "ca_bundle": ca_given,
        "keylog": keylog_given,
        "tls_analyzed": tls_analyzed,
        "hosts": hosts,
        "interfaces": interfaces,
        "capture_filter": _filter_text(filters),
        "capture_filters": [{"host": h, "filter": f} for h, f in filters],
        "unseen_paths": list(unseen or []),
        "unseen_paths_evaluated": unseen is not None,
        "paths_observed": len(observed),
        "paths_not_observable": sum(v in BLIND for v in observed),
    }


def note_unseen(paths, cov: dict):
    """``paths`` with what would settle each path the filters could not have seen (still not-observed:
    nothing was seen; the filter, not the cluster, may be why)."""
    unseen = set(cov.get("unseen_paths") or [])
    if not unseen or paths is None or not len(paths):
        return paths
    paths = paths.copy()
    hit = paths["id"].astype(str).isin(unseen) & paths["verdict"].astype(str).eq("not-observed")
    paths.loc[hit, "needs"] = ("a capture whose filter keeps this path: the recorded filter drops every packet "
                               "it can have (its ports and its ends' addresses)")
    return paths


def run_verdict(paths, cov: dict) -> str:
    """fail when a path fails; else inconclusive when the evidence cannot support a pass (nothing
    documented observed, every role inferred, most observed paths not observable); else warn when
    a path warns; else pass."""
    verdicts = [str(v) for v in paths["verdict"]]
    if "fail" in verdicts:
        return "fail"
    observed = [v for v in verdicts if v != "not-observed"]
    blind = sum(v in BLIND for v in observed)
    if not observed or cov.get("roles_inferred") or blind * 2 > len(observed):
        return "inconclusive"
    if "warn" in verdicts:
        return "warn"
    return "pass" if "pass" in observed else "inconclusive"


__all__ = ["RUN_VERDICTS", "coverage", "note_unseen", "run_verdict"]

"""The checks of a run over parts of its flows: each part's findings and path facts, put together as one evaluation.

A run on Dask keeps its merged flows in parts on the workers (``commpath/distributed``); each part is
judged there (:func:`~commpath.check.engine.evaluate_part`) and the driver receives only the part's
findings and its :class:`PathFacts`, which add up: counts, any/all flags, the distinct values a
path's evidence names (capped as the evidence caps them), each with the first flow that showed it.

Findings need no adding up when every part holds whole connection keys (initiator address,
responder address and port): the parts are cut by initiator address (``distributed/_merge.py``), so
each finding's connections, its examples and its details lie in one part. :func:`combine_findings`
checks that, and puts the parts' findings in the findings table's order (worst first, then check,
path, capture and first frame). A host-level finding that no connection showed (a probed or
configured host, connection key ``("", address, port)``) is made by every part that did not see
the host: the run has it when every part has it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..classify.catalog import judged_path_ids
from ..decode.schema import conform, empty_frame
from .evidence import entry, path_entries, wire_path_said
from .policy import SEVERITY_RANK, Policy
from .tables import FINDING_COLUMNS, PATH_COLUMNS

#: distinct responders and ports a part keeps per path: the evidence names four and says "..." past them
KEPT_ENDS = 5


@dataclass
class PathFacts:
    """What each judged path's verdict and wire evidence read of a part's flows.

    ``needs``: per path, (check index, first flow, what would settle it) for each distinct answer of
    a scored check that could not judge some flows (the answer None: nothing to name); ``visibility``:
    (first flow, value) of each certificate visibility seen. A first flow is a row of the part until
    :meth:`in_order` gives it a key that sorts as the run's flows do."""

    flows: dict[str, int] = field(default_factory=dict)
    payload: dict[str, bool] = field(default_factory=dict)
    inferred: dict[str, bool] = field(default_factory=dict)
    needs: dict[str, list] = field(default_factory=dict)
    versions: dict[str, set] = field(default_factory=dict)
    visibility: dict[str, list] = field(default_factory=dict)
    responders: dict[str, list] = field(default_factory=dict)
    ports: dict[str, list] = field(default_factory=dict)

    def in_order(self, key) -> PathFacts:
        """The same facts with each first flow (a row) replaced by ``key(row)``."""
        return PathFacts(self.flows, self.payload, self.inferred,
                         {p: [(c, key(r), n) for c, r, n in v] for p, v in self.needs.items()},
                         self.versions, {p: [(key(r), s) for r, s in v] for p, v in self.visibility.items()},
                         self.responders, self.ports)


def needs_seen(check_index: int, needs: np.ndarray, blind: np.ndarray) -> list[tuple[int, int, str | None]]:
    """(check index, first row, answer) of each distinct answer ``needs`` gives at the rows ``blind``
    (in the order of their first rows, as ``pd.unique`` lists them); a falsy answer is None."""
    import pandas as pd
    rows = np.flatnonzero(blind)
    codes, uniques = pd.factorize(needs[rows], use_na_sentinel=False)
    _, first = np.unique(codes, return_index=True)
    return [(check_index, int(rows[i]), str(uniques[codes[i]]) if uniques[codes[i]] else None) for i in sorted(first)]


def path_facts(f, unknown_needs: dict[str, list]) -> PathFacts:
    """The facts of ``f`` (check/facts.py FlowFacts) each judged path's verdict reads;
    ``unknown_needs``: path -> :func:`needs_seen` entries of every scored check."""
    import pandas as pd
    out = PathFacts()
    versions, visibility = f.version.text(""), f.visibility.text("")
    dst = f.dst.text("") if f.dst is not None else None
    for p in judged_path_ids():
        on_path = f.path.eq(p)
        rows = np.flatnonzero(on_path)
        out.flows[p] = len(rows)
        out.payload[p] = bool((f.payload[rows] > 0).any())
        out.inferred[p] = bool(f.roles_inferred[rows].all())
        out.needs[p] = list(unknown_needs.get(p, ()))
        out.versions[p] = {str(v) for v in pd.unique(versions[rows]) if v}
        seen = visibility[rows]
        codes, uniques = pd.factorize(seen)
        _, first = np.unique(codes, return_index=True)
        out.visibility[p] = [(int(rows[i]), str(seen[i])) for i in sorted(first) if seen[i]]
        out.responders[p] = sorted(map(str, pd.unique(dst[rows])))[:KEPT_ENDS] if dst is not None else None
        out.ports[p] = sorted(pd.unique(f.dst_port[rows]).tolist())[:KEPT_ENDS] if f.dst_port is not None else []
    return out


def path_table(policy: Policy, parts: list[PathFacts], worst: dict[str, int], tables: dict):
    """One verdict per judged path of the catalog from the parts' facts and ``worst``, the rank of
    the worst finding's severity on each path (:func:`worst_severity`: it fails or warns the path);
    ``tables``: the fact tables of other sources (their own entries about each path)."""
    import pandas as pd
    from .kinds import NEEDS
    rows = []
    for p in judged_path_ids():
        count = sum(part.flows.get(p, 0) for part in parts)
        entries = sorted((e for part in parts for e in part.needs.get(p, ())), key=lambda e: (e[0], e[1]))
        needs = None
        rank = worst.get(p, -1)
        # a finding of another source (a probe of the host) decides a path the captures did not show
        if rank >= SEVERITY_RANK[policy.fail_at]:
            verdict = "fail"
        elif rank >= SEVERITY_RANK[policy.warn_at]:
            verdict = "warn"
        elif count == 0:
            verdict = "not-observed"
        elif entries:
            verdict, needs = "not-observable", "; ".join(dict.fromkeys(n for _, _, n in entries if n))
        elif not any(part.payload.get(p, False) for part in parts) and p != "unclassified":
            verdict, needs = "not-observable", NEEDS["payload"]
        elif all(part.inferred.get(p, True) for part in parts):
            # no finding, but nothing says these hosts are who the ports suggest: not a pass
            verdict, needs = "inconclusive", NEEDS["inventory"]
        else:
            verdict = "pass"
        rows.append({"id": p, "observed": count > 0, "flows": count, "verdict": verdict, "needs": needs,
                     "evidence": [entry("wire", _wire_said(parts, p, count), _wire_where(parts, p, count)),
                                  *path_entries(tables, p)]})
    return conform(pd.DataFrame(rows), PATH_COLUMNS)


def worst_severity(findings) -> dict[str, int]:
    """Path -> the rank (SEVERITY_RANK) of its worst finding in ``findings`` (FINDING_COLUMNS)."""
    if findings is None or not len(findings):
        return {}
    severity, path = findings["severity"].astype("category"), findings["path"].astype("category")
    rank = np.array([SEVERITY_RANK[str(s)] for s in severity.cat.categories], np.int64)[severity.cat.codes.to_numpy()]
    worst = np.full(len(path.cat.categories), -1, np.int64)
    np.maximum.at(worst, path.cat.codes.to_numpy(), rank)      # per category, not per finding in Python
    return {str(p): int(r) for p, r in zip(path.cat.categories, worst) if r >= 0}


def _wire_said(parts: list[PathFacts], p: str, count: int) -> str:
    versions = sorted(set().union(*(part.versions.get(p, set()) for part in parts)))
    seen = sorted((e for part in parts for e in part.visibility.get(p, ())), key=lambda e: e[0])
    return wire_path_said(count, versions, list(dict.fromkeys(s for _, s in seen)))


def _wire_where(parts: list[PathFacts], p: str, count: int) -> str:
    if count == 0 or any(part.responders.get(p, ()) is None for part in parts):    # no responder column
        return "the captures"
    ends = sorted(set().union(*(part.responders.get(p, ()) for part in parts)))
    ports = sorted(set().union(*(part.ports.get(p, ()) for part in parts)))
    return f"the captures: responders {', '.join(ends[:4])}{' ...' if len(ends) > 4 else ''}" \
           f" port{'s' if len(ports) > 1 else ''} {', '.join(map(str, ports[:4]))}"


def combine_findings(parts: list):
    """The run's findings table (FINDING_COLUMNS) from the parts' findings, each with a ``_first``
    column (the first frame of its first connection; 0 for a finding without connections), in the
    order :func:`~commpath.check.evaluate` gives them. Raises ValueError when two parts hold
    connections of one finding (parts must hold whole connection keys)."""
    import pandas as pd
    parts = [p for p in parts if p is not None]
    if not parts:
        return empty_frame(FINDING_COLUMNS)
    # connectionless findings (a host no flow showed): the run has those every part has
    def ident(df):
        return list(zip(df["fingerprint"].astype(str), df["message"].astype(str)))
    alone = [df[df["count"].to_numpy() == 0] for df in parts]
    common = set(ident(alone[0]))
    for df in alone[1:]:
        common &= set(ident(df))
    kept = [alone[0][[i in common for i in ident(alone[0])]]]
    kept += [df[df["count"].to_numpy() > 0] for df in parts]
    kept = [df for df in kept if len(df)]
    if not kept:
        return empty_frame(FINDING_COLUMNS)
    table = pd.concat([_plain(df) for df in kept], ignore_index=True)
    key = table[["check", "path", "capture", "fingerprint"]].astype(str)
    shared = key[table["count"].to_numpy() > 0].duplicated()
    if shared.any():
        raise ValueError(f"findings of one connection key in two parts ({key[shared].iloc[0].tolist()}): "
                         "the parts must hold whole connection keys")
    rank = -np.array([SEVERITY_RANK[s] for s in table["severity"].astype(str)], np.int64)
    order = np.lexsort((table["_first"].to_numpy(np.int64),) + tuple(
        pd.factorize(key[c], sort=True)[0] for c in ("capture", "path", "check")) + (rank,))
    table = table.take(order).reset_index(drop=True).drop(columns="_first")
    for name in ("check", "severity", "path"):      # sorted categories of the values present, as evaluate makes them
        table[name] = pd.Categorical(table[name].astype(str).to_numpy(object))
    return conform(table, FINDING_COLUMNS)


def _plain(df):
    """A part's findings with its category columns as text, so parts of other categories concatenate."""
    df = df.copy(deep=False)
    for name in ("check", "severity", "path"):
        df[name] = df[name].astype(str).to_numpy(object)
    return df


__all__ = ["KEPT_ENDS", "PathFacts", "combine_findings", "needs_seen", "path_facts", "path_table", "worst_severity"]

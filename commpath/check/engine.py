"""Applies the checks of a policy to classified flows: findings with evidence, a verdict per path."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..classify.catalog import judged_path_ids
from ..decode.schema import conform, empty_frame
from .facts import FlowFacts, flow_facts
from .findings import aggregate, concat_column, display_filter, flow_keys
from .kinds import NEEDS, TESTS, run_test
from .policy import SEVERITY_RANK, Policy, load_policy
from .tables import FINDING_COLUMNS, PATH_COLUMNS


def _judge(policy: Policy, f: FlowFacts, flows) -> tuple[list[dict], dict[str, list[str]]]:
    """Every enabled check on every flow of its paths: the findings, and per path what would
    settle the flows a scored check could not judge."""
    keys = flow_keys(flows)
    findings: list[dict] = []
    unknown_needs: dict[str, list[str]] = {}
    for check in policy.enabled_checks():
        if not f.path.isin(check.paths).any():
            continue
        out = run_test(TESTS[check.test], f, check.params)
        for p in check.paths:
            on_path = f.path.eq(p)
            hit = on_path & out.fires
            if hit.any():
                findings.append(aggregate(check, p, np.flatnonzero(hit), out.detail[hit], keys, f.handshake_frames))
            blind = on_path & out.unknown
            if check.scored and blind.any():
                import pandas as pd
                unknown_needs.setdefault(p, []).extend(str(n) for n in pd.unique(out.needs[blind]) if n)
    return findings, unknown_needs


def _finding_table(findings: list[dict]):
    """The findings (column blocks of :func:`aggregate`) as one DataFrame (FINDING_COLUMNS), worst
    first, then check, path, capture and the first frame of each finding's first connection."""
    import pandas as pd
    if not findings:
        return empty_frame(FINDING_COLUMNS)
    columns = {name: concat_column([block[name] for block in findings]) for name in findings[0]}
    for name, values in columns.items():
        if isinstance(values, pa.Array):         # text made in Arrow stays there (no object per finding)
            columns[name] = pd.array(values, dtype=FINDING_COLUMNS.get(name, "string"))
    fdf = pd.DataFrame(columns)
    rank = -fdf["severity"].map(SEVERITY_RANK).to_numpy()
    order = np.lexsort((fdf["_first"].to_numpy(), _sort_codes(fdf["capture"]), _sort_codes(fdf["path"]),
                        _sort_codes(fdf["check"]), rank))
    fdf = fdf.iloc[order].drop(columns=["_first"]).reset_index(drop=True)
    return conform(fdf, FINDING_COLUMNS)


def _sort_codes(column) -> np.ndarray:
    """Integer codes of a text column that sort as its texts do."""
    import pandas as pd
    codes, _ = pd.factorize(column.astype(object), sort=True)
    return codes


def _path_table(policy: Policy, f: FlowFacts, findings: list[dict], unknown_needs: dict[str, list[str]]):
    """One verdict per judged path of the catalog."""
    import pandas as pd
    worst: dict[str, int] = {}
    for block in findings:
        for p, sev in set(zip(block["path"], block["severity"])):
            worst[p] = max(worst.get(p, -1), SEVERITY_RANK[sev])
    rows = []
    for p in judged_path_ids():
        on_path = f.path.eq(p)
        count = int(on_path.sum())
        needs = None
        rank = worst.get(p, -1)
        if count == 0:
            verdict = "not-observed"
        elif rank >= SEVERITY_RANK[policy.fail_at]:
            verdict = "fail"
        elif rank >= SEVERITY_RANK[policy.warn_at]:
            verdict = "warn"
        elif p in unknown_needs:
            verdict, needs = "not-observable", "; ".join(dict.fromkeys(unknown_needs[p]))
        elif not (f.payload[on_path] > 0).any() and p != "unclassified":
            verdict, needs = "not-observable", NEEDS["payload"]
        elif f.roles_inferred[on_path].all():
            # no finding, but nothing says these hosts are who the ports suggest: not a pass
            verdict, needs = "inconclusive", NEEDS["inventory"]
        else:
            verdict = "pass"
        rows.append({"id": p, "observed": count > 0, "flows": count, "verdict": verdict, "needs": needs})
    return conform(pd.DataFrame(rows), PATH_COLUMNS)


def evaluate(flows, tls=None, certs=None, policy: Policy | str = "default", inventory=None, *,
             tls_known: bool = True, keylog_given: bool = False):
    """Findings (FINDING_COLUMNS) and one verdict per judged path (PATH_COLUMNS).

    ``tls_known=False`` says the handshakes were not analysed at all: TLS-based checks then
    leave their paths not-observable instead of passing them. ``keylog_given`` words what
    would settle encrypted certificates (a key log, or keys for these connections in it).
    """
    policy = load_policy(policy)
    f = flow_facts(flows, tls, certs, tls_known=tls_known, keylog_given=keylog_given,
                   konnectivity_enabled=bool(getattr(inventory, "konnectivity_enabled", False)))
    findings, unknown_needs = _judge(policy, f, flows)
    return _finding_table(findings), _path_table(policy, f, findings, unknown_needs)


__all__ = ["display_filter", "evaluate"]

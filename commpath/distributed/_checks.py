"""The checks on the workers: each merged part judged where it lies, its findings and path facts reduced on the driver.

The merged parts (``_merge``) hold whole connection keys (they are cut by initiator address), and so
do a run's hosts when their flows are not merged (a finding's key names its capture), so each
part's findings are the run's findings of its connections; the driver puts them in order and adds
up the parts' path facts (``check.reduce``). What a part's checks read beyond its flows is sent
once: each part's own TLS rows, and to every worker the certificates, the fact tables (probe,
host configuration, decrypted requests) and whether the run showed a Konnectivity agent (which
makes every direct control-plane-to-node connection a finding, in every part).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: the order of the run's merged flows (``_run._merged_on_workers`` sorts them so)
FLOW_ORDER = ["ts_start_aligned", "flow_id"]


@dataclass(frozen=True)
class RunScope:
    """What the checks of one part must know of the whole run (``check.evaluate``'s ``inventory``
    is read for this alone)."""

    konnectivity_enabled: bool = False


def part_outline(part: pd.DataFrame) -> tuple[np.ndarray, bool]:
    """The part's flow ids (for the driver to send it its TLS rows) and whether a Konnectivity agent
    dialled its server in it."""
    if part is None or part.empty:
        return np.zeros(0, np.int64), False
    agent = (part["path"].astype("string").eq("konnectivity")
             & part["src_role"].astype("string").eq("konnectivity-agent")).fillna(False)
    return part["flow_id"].to_numpy(np.int64), bool(agent.any())


def judge_part(part: pd.DataFrame, tls: pd.DataFrame, certs: pd.DataFrame, policy, scope: RunScope,
               tls_known: bool, keylog_given: bool, facts: dict, position: int | None = None):
    """The part's findings (with ``_first``: the first frame of each one's first connection) and its
    path facts, their first flows as keys that sort as the run's flows are sorted: merged flows by
    :data:`FLOW_ORDER`, or (``position``: the part's place among parts put together in order, as
    each host's unmerged flows are) by part and row; (None, no facts) for a part without flows (it
    can add no finding the others do not make)."""
    from ..check.engine import evaluate_part
    from ..check.reduce import PathFacts
    if part is None or part.empty:
        return None, PathFacts()
    flows = (part.sort_values(FLOW_ORDER, kind="stable") if position is None else part).reset_index(drop=True)
    findings, facts_ = evaluate_part(flows, tls, certs, policy, scope, tls_known=tls_known,
                                     keylog_given=keylog_given, facts=facts)
    findings["_first"] = _first_frames(findings, flows)
    if position is not None:
        return findings, facts_.in_order(lambda row: (position, row))
    ts = flows["ts_start_aligned"].to_numpy(np.float64, na_value=np.nan)
    ids = flows["flow_id"].to_numpy(np.int64)

    def key(row: int) -> tuple:       # as sort_values orders them: missing times last, then flow id
        return (bool(np.isnan(ts[row])), 0.0 if np.isnan(ts[row]) else float(ts[row]), int(ids[row]))
    return findings, facts_.in_order(key)


def _first_frames(findings: pd.DataFrame, flows: pd.DataFrame) -> np.ndarray:
    """The first frame of each finding's first connection (0 for a finding without connections)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    out = np.zeros(len(findings), np.int64)
    if not len(findings):
        return out
    lists = pa.array(findings["flow_ids"], type=pa.large_list(pa.int64()), from_pandas=True)
    heads = pc.list_slice(lists, 0, 1)
    where = pc.list_parent_indices(heads).to_numpy(zero_copy_only=False)
    first = pc.list_flatten(heads).to_numpy(zero_copy_only=False)
    ids = flows["flow_id"].to_numpy(np.int64)
    order = np.argsort(ids, kind="stable")
    at = order[np.searchsorted(ids[order], first)]
    out[where] = flows["first_frame"].to_numpy(np.int64, na_value=0)[at]
    return out


def checks_on_parts(client, parts: list, shared, merged: bool = True, shown=None):
    """A function with :func:`commpath.check.evaluate`'s arguments that evaluates the run's checks on
    the workers, over the ``parts`` (futures of ``_merge.merge_part``; ``merged=False``: of each
    host's classified flows, in the run's order), and reduces the parts' findings and path facts on
    the driver. Its ``flows`` must be the parts' flows put together (the driver's copy is only
    counted: the parts are judged where they lie). ``shared(value)``: the value sent once to every
    worker, as a future. ``shown``: the run's ``present.progress.StageBar``, counting the parts' tasks."""
    def evaluate(flows, tls=None, certs=None, policy="default", inventory=None, *, tls_known: bool = True,
                 keylog_given: bool = False, facts: dict | None = None, compact: bool = False):
        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker
        try:
            return on_parts(flows, tls, certs, policy, inventory, tls_known, keylog_given, facts)
        except (FutureCancelledError, KilledWorker, OSError) as exc:
            # a part lost with its worker cannot always be made again (the stages before the merge
            # were released to bound the workers' memory): the driver has the same flows
            if flows is None:
                from ..errors import CommpathError
                raise CommpathError(f"the Dask workers judging the run's parts were lost: {exc}") from None
            from ..check import evaluate as in_process
            return in_process(flows, tls, certs, policy, inventory, tls_known=tls_known, keylog_given=keylog_given,
                              facts=facts, compact=compact)

    def on_parts(flows, tls, certs, policy, inventory, tls_known, keylog_given, facts):
        from ..check import load_policy
        from ..check.reduce import combine_findings, path_table, worst_severity
        from ..check.evidence import fact_tables
        from ..check.facts import tls_read
        policy = load_policy(policy)
        outlines = _gathered(client, [client.submit(part_outline, m, pure=False) for m in parts], shown)
        if flows is not None and len(flows) != sum(len(ids) for ids, _ in outlines):
            raise ValueError("the flows to judge are not the merged parts' flows")
        scope = RunScope(bool(getattr(inventory, "konnectivity_enabled", False))
                         or any(seen for _, seen in outlines))
        tables = fact_tables(**(facts or {}))
        certs_f, facts_f, policy_f = (shared(x) for x in (certs, tables, policy))
        # the columns the checks read, not the whole table: 7 of 60 MB pickled on 12 hosts' 144,000 rows
        rows = _tls_by_part(tls_read(tls), [ids for ids, _ in outlines])
        # each part's rows to a worker in one exchange (one scatter each was a round trip each)
        rows_f = client.scatter(rows, hash=False) if tls is not None else rows
        judged = [client.submit(judge_part, m, t, certs_f, policy_f, scope, tls_known, keylog_given, facts_f,
                                None if merged else k, pure=False)
                  for k, (m, t) in enumerate(zip(parts, rows_f))]
        results = _gathered(client, judged, shown)
        findings = combine_findings([f for f, _ in results])
        return findings, path_table(policy, [p for _, p in results], worst_severity(findings), tables)
    return evaluate


def _gathered(client, futures: list, shown) -> list:
    """``client.gather(futures)``, each counted on ``shown`` (when given) as it completes."""
    if shown is not None:
        from distributed import as_completed
        shown.stage("checks", len(futures))
        for _ in as_completed(futures):
            shown.update(1)
    return client.gather(futures)


def _tls_by_part(tls: pd.DataFrame | None, parts: list[np.ndarray]) -> list[pd.DataFrame | None]:
    """The rows of ``tls`` of each part's flows, in the table's order."""
    if tls is None:
        return [None] * len(parts)
    if not len(parts):
        return []
    ids = np.concatenate(parts)
    label = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    order = np.argsort(ids, kind="stable")
    tid = tls["flow_id"].to_numpy(np.int64)
    at = np.minimum(np.searchsorted(ids[order], tid), max(len(ids) - 1, 0))
    found = (len(ids) > 0) & (ids[order][at] == tid) if len(ids) else np.zeros(len(tid), bool)
    of_row = np.where(found, label[order][at] if len(ids) else -1, -1)
    return [tls[of_row == p].reset_index(drop=True) for p in range(len(parts))]


__all__ = ["FLOW_ORDER", "RunScope", "checks_on_parts", "judge_part", "part_outline"]

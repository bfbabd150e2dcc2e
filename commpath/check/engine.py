"""Applies the checks of a policy to classified flows: findings with evidence, a verdict per path."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..decode.schema import conform, empty_frame, pandas_dtype
from .evidence import TARGET_PATHS, endpoint_keys, fact_tables, orphan_finding
from .facts import FlowFacts, flow_facts
from .finding_set import FindingSet
from .findings import aggregate, concat_column, display_filter, flow_keys, render
from .kinds import TESTS, run_test
from .policy import SEVERITY_RANK, Policy, load_policy
from .reduce import needs_seen, path_facts, path_table, worst_severity
from .tables import FINDING_COLUMNS


def _judge(policy: Policy, f: FlowFacts, flows) -> tuple[list[dict], dict[str, list]]:
    """Every enabled check on every flow of its paths: the findings, and per path what would
    settle the flows a scored check could not judge (``reduce.needs_seen`` entries)."""
    keys = flow_keys(flows)
    findings: list[dict] = []
    unknown_needs: dict[str, list[str]] = {}
    for index, check in enumerate(policy.enabled_checks()):
        if not f.path.isin(check.paths).any() and not getattr(TESTS[check.test], "host", False):
            continue
        test = TESTS[check.test]
        if getattr(test, "host", False):
            findings.extend(_host_findings(check, test(f, check.params), f, keys))
            continue
        out = run_test(test, f, check.params)
        for p in check.paths:
            on_path = f.path.eq(p)
            hit = on_path & out.fires
            if hit.any():
                findings.extend(aggregate(check, p, np.flatnonzero(hit), out.detail[hit], keys, f.handshake_frames,
                                          None if out.wire_said is None else out.wire_said[hit],
                                          None if out.sources is None else out.sources[hit]))
            blind = on_path & out.unknown
            if check.scored and blind.any():
                unknown_needs.setdefault(p, []).extend(needs_seen(index, out.needs, blind))
    return findings, unknown_needs


def _host_findings(check, hits, f: FlowFacts, keys) -> list[dict]:
    """A host-level test's hits as findings: on the flows its hosts answered (each path of the check),
    and, for a host no such flow showed, on the first of the check's paths the host governs."""
    if not len(hits):
        return []
    initiator = np.array([s == "initiator" for s in (hits.side or ["responder"] * len(hits))], bool)
    hit_of_flow = _match(keys.addresses, keys.dst, keys.dst_port, hits, ~initiator)
    # a setting of the connecting side: the flows its host opened, whatever their ports
    by_src = _match(keys.addresses, keys.src, np.zeros(len(keys.src), np.int64), hits, initiator, any_port=True)
    hit_of_flow = np.where(hit_of_flow >= 0, hit_of_flow, by_src)
    detail = np.array(hits.detail, object)
    sources = np.empty(len(hits), object)
    sources[:] = [list(e) for e in hits.evidence]
    out, seen = [], np.zeros(len(hits), bool)
    for p in check.paths:
        rows = np.flatnonzero(f.path.eq(p) & (hit_of_flow >= 0))
        if len(rows):
            h = hit_of_flow[rows]
            seen[h] = True
            out.extend(aggregate(check, p, rows, detail[h], keys, f.handshake_frames, _flow_said(f, rows), sources[h]))
    # hits of one group (one host's addresses) need one finding: none more once one of them was seen
    done = {hits.group[i] for i in np.flatnonzero(seen)} if hits.group else set()
    for i in np.flatnonzero(~seen):
        if hits.group:
            if hits.group[i] in done:
                continue
            done.add(hits.group[i])
        governed = [p for p in TARGET_PATHS.get(hits.target[i], ()) if p in check.paths] or list(check.paths[:1])
        out.append(orphan_finding(check, governed[0], hits, np.array([i])))
    return out


def _flow_said(f: FlowFacts, rows: np.ndarray) -> np.ndarray:
    """What the wire showed of each flow a host-level finding lands on: its TLS version, whether its
    certificates were visible."""
    versions, visibility = f.version.text("")[rows], f.visibility.text("")[rows]
    return np.array([(f"{v} connection" if v else "connection without a TLS handshake seen")
                     + (", certificates not visible (encrypted)" if s == "not-visible" else "")
                     for v, s in zip(versions, visibility)], object)


def _match(addresses, codes, ports, hits, use: np.ndarray, any_port: bool = False) -> np.ndarray:
    """Per flow, the index of the hit among those at ``use`` whose address (and port) the flow's end has; -1."""
    idx = np.flatnonzero(use)
    if not len(idx):
        return np.full(len(codes), -1, np.int64)
    wanted_port = [0 if any_port else hits.port[i] for i in idx]
    flow_key, want = endpoint_keys(addresses, codes, ports, [hits.address[i] for i in idx], wanted_port)
    order = np.argsort(want, kind="stable")
    at = np.minimum(np.searchsorted(want[order], flow_key), len(want) - 1)
    return np.where(want[order][at] == flow_key, idx[order[at]], -1)


def _finding_table(findings: list[dict]) -> FindingSet:
    """The findings (column blocks of :func:`aggregate`) as one table (FINDING_COLUMNS), worst first,
    then check, path, capture and the first frame of each finding's first connection.

    The order comes first, from the key columns. When it takes aggregate's blocks whole (the usual
    case), the blocks stay as they are and their texts are made when the table is written or asked
    for (:class:`FindingSet`); otherwise each column is gathered once in that order and its blocks
    let go: the findings are in memory once more at most by one column."""
    if not findings:
        return FindingSet.of(empty_frame(FINDING_COLUMNS))
    keys = {name: _pandas_column(name, concat_column([block[name] for block in findings]))
            for name in ("capture", "_first")}
    keys.update({name: _categorical([block[name] for block in findings]) for name in ("check", "severity", "path")})
    order = _table_order(keys)
    blocks = _block_order(order, [len(block["_first"]) for block in findings])
    keys.pop("_first")
    keys = {name: column.take(order) for name, column in keys.items()}
    if blocks is not None:      # whole blocks in order (aggregate's usual case): their texts made when read
        kept = [findings[b] for b in blocks]
        for block in kept:
            for name in (*keys, "_first"):
                block.pop(name, None)
        # a capture name per finding as a code into the few names (turned into text when read)
        capture = pa.array(keys["capture"], pa.large_string(), from_pandas=True)
        keys["capture"] = pc.dictionary_encode(capture.combine_chunks() if isinstance(capture, pa.ChunkedArray)
                                               else capture)
        return FindingSet(kept, keys, pandas_column=_pandas_column)
    import pandas as pd
    columns = dict(keys)
    for block in findings:
        render(block)
    for name in list(findings[0]):
        if name in columns or name == "_first":
            continue
        parts = [block.pop(name) for block in findings]
        columns[name] = _pandas_column(name, _gathered(parts, order))
        del parts
    return FindingSet.of(conform(pd.DataFrame(columns), FINDING_COLUMNS))


def _table_order(keys: dict) -> np.ndarray:
    """The findings' order: worst severity first, then check, path, capture and first frame."""
    import pandas as pd
    severity = keys["severity"]
    rank = -np.array([SEVERITY_RANK[s] for s in severity.categories], np.int64)[np.asarray(severity.codes)]
    return np.lexsort((np.asarray(keys["_first"]), _sort_codes(pd.Series(keys["capture"])),
                       _sort_codes(pd.Series(keys["path"])), _sort_codes(pd.Series(keys["check"])), rank))


def _block_order(order: np.ndarray, sizes: list[int]) -> list[int] | None:
    """The blocks in table order when ``order`` takes each block whole and in its own order, else None."""
    starts = np.r_[0, np.cumsum(sizes)]
    block = np.repeat(np.arange(len(sizes)), sizes)[order]
    change = np.flatnonzero(np.r_[True, block[1:] != block[:-1]])
    if len(change) != len(sizes) or not (order[change] == starts[:-1][block[change]]).all():
        return None
    steps = np.diff(order)
    return block[change].tolist() if (steps[block[1:] == block[:-1]] == 1).all() else None


def _gathered(parts: list, order: np.ndarray):
    """The blocks of one column, concatenated and taken in ``order`` (Arrow blocks without a combined copy)."""
    whole = concat_column(parts, combine=False)
    if isinstance(whole, pa.ChunkedArray):
        return whole.take(pa.array(order)).combine_chunks()
    return whole[order] if isinstance(whole, np.ndarray) else [whole[i] for i in order]


def _pandas_column(name: str, values):
    """A finding column as its declared pandas array (Arrow data stays in Arrow)."""
    import pandas as pd
    declared = FINDING_COLUMNS.get(name, "string")
    if declared.endswith("[pyarrow]"):          # lists and evidence entries in Arrow: no Python list per finding
        arrow = pandas_dtype(declared)
        return pd.arrays.ArrowExtensionArray(
            values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(list(values), arrow.pyarrow_dtype))
    if isinstance(values, (pa.Array, pa.ChunkedArray)):     # text made in Arrow stays there (no object per finding)
        return pd.array(values, dtype=declared)
    if declared == "category":                  # sorted categories, as astype("category") makes them
        return pd.Categorical(values)
    return values


def _categorical(parts: list[np.ndarray]):
    """The blocks of a text column as one ``pd.Categorical`` (sorted categories, as of their
    concatenation), without an object array of all rows: a block of one value (aggregate's) is its code
    repeated."""
    import pandas as pd
    distinct = [pd.unique(part) for part in parts]
    categories = sorted({v for values in distinct for v in values if isinstance(v, str)})
    if len(categories) != len({v for values in distinct for v in values}):     # a missing or odd value
        return pd.Categorical(concat_column(parts))
    index = {v: i for i, v in enumerate(categories)}
    codes = [np.full(len(part), index[values[0]], np.int32) if len(values) == 1
             else np.array([index[v] for v in part], np.int32) for part, values in zip(parts, distinct)]
    return pd.Categorical.from_codes(np.concatenate(codes), categories=pd.Index(categories))


def _sort_codes(column) -> np.ndarray:
    """Integer codes of a text column that sort as its texts do (-1 for a missing text): the codes of
    sorted categories, or the rank of each distinct value of the Arrow dictionary encoding."""
    import pandas as pd
    if isinstance(column.dtype, pd.CategoricalDtype) and column.cat.categories.is_monotonic_increasing:
        return column.cat.codes.to_numpy(np.int64)
    arr = pa.array(column, from_pandas=True)
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    encoded = pc.dictionary_encode(pc.cast(arr, pa.large_string()))
    distinct = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    rank = np.empty(len(distinct) + 1, np.int64)
    rank[np.argsort(distinct, kind="stable")] = np.arange(len(distinct))
    rank[-1] = -1
    return rank[pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)]


def evaluate(flows, tls=None, certs=None, policy: Policy | str = "default", inventory=None, *,
             tls_known: bool = True, keylog_given: bool = False, facts: dict | None = None, compact: bool = False):
    """Findings (FINDING_COLUMNS) and one verdict per judged path (PATH_COLUMNS).

    ``tls_known=False`` says the handshakes were not analysed at all: TLS-based checks then
    leave their paths not-observable instead of passing them. ``keylog_given`` words what
    would settle encrypted certificates (a key log, or keys for these connections in it).
    ``facts``: fact tables of other sources by name (``probe``, ``config``, ``requests``;
    check/evidence.py declares them), which checks that need them read and cite.
    ``compact=True`` returns the findings as a :class:`FindingSet` (texts made when read) instead of
    a DataFrame.
    """
    policy, f, findings, unknown_needs = _judged(flows, tls, certs, policy, inventory, tls_known, keylog_given, facts)
    table = _finding_table(findings)
    paths = path_table(policy, [path_facts(f, unknown_needs)], worst_severity(table.keys_frame()), f.tables)
    return (table if compact else table.frame()), paths


def evaluate_part(flows, tls=None, certs=None, policy: Policy | str = "default", inventory=None, *,
                  tls_known: bool = True, keylog_given: bool = False, facts: dict | None = None):
    """:func:`evaluate` over one part of a run's flows (whole connection keys): the part's findings
    (a DataFrame) and its path facts (``reduce.PathFacts``, first flows as rows of ``flows``), which
    ``reduce.combine_findings`` and ``reduce.path_table`` put together with the other parts'.
    ``inventory``'s ``konnectivity_enabled`` must say what the whole run says."""
    _, f, findings, unknown_needs = _judged(flows, tls, certs, policy, inventory, tls_known, keylog_given, facts)
    return _finding_table(findings).frame(), path_facts(f, unknown_needs)


def _judged(flows, tls, certs, policy, inventory, tls_known: bool, keylog_given: bool, facts: dict | None):
    """The policy, the flows' facts, and :func:`_judge`'s findings and unknown needs."""
    policy = load_policy(policy)
    f = flow_facts(flows, tls, certs, tls_known=tls_known, keylog_given=keylog_given,
                   konnectivity_enabled=bool(getattr(inventory, "konnectivity_enabled", False)),
                   tables=fact_tables(**(facts or {})))
    return (policy, f, *_judge(policy, f, flows))


__all__ = ["display_filter", "evaluate", "evaluate_part"]

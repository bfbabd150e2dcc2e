"""The driver of a run on Dask: one decode task per capture, one progress bar, then the run's tables."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..decode.limits import ANALYSIS_PAYLOAD_LIMIT
from ..decode.schema import (CAPTURE_COLUMNS, CERT_COLUMNS, FLOW_COLUMNS, HTTP_COLUMNS, SSH_COLUMNS, TLS_COLUMNS, concat_frames,
                             conform, empty_frame)
from ..errors import CommpathError, InputError
from ._cluster import connect
from ._decode import decode_capture
from ._files import expand
from ._parts import TABLES, clear_parts, read_part


@dataclass
class Decoded:
    """What the decode layer gives a run (as ``commpath.read`` plus a HandshakeAnalyzer would), and
    the per-capture summaries of the tasks (costs, Parquet folders)."""

    flows: pd.DataFrame
    captures: pd.DataFrame
    tls: pd.DataFrame
    certs: pd.DataFrame
    ssh: pd.DataFrame
    http: pd.DataFrame
    summaries: list[dict] = field(default_factory=list)
    parts: str | None = None
    #: the cluster view the workers classified ``flows`` with (``classify=True``), else None
    view: object = None
    #: the hosts' clock offsets when the workers merged the vantage points (``flows`` merged), else None
    offsets: pd.DataFrame | None = None

    @property
    def warnings(self) -> list[str]:
        return [f"{row.file}: {w}" for row in self.captures.itertuples() for w in row.warnings]


def decode_run(inputs, ca=None, keylog=None, *, client=None, workers: int | None = None, scheduler: str | None = None,
               parts: str | None = None, storage_options: dict | None = None, progress: bool = False,
               strict: bool = False, processes: bool = True, payload_limit: int = ANALYSIS_PAYLOAD_LIMIT,
               classify: bool = False, inventory=None, merge: bool | None = None, then=None):
    """Decode every capture of ``inputs`` (paths or fsspec URLs) as one Dask task each.

    Each task returns its capture's tables and a summary, and writes the tables under ``parts``
    when given (a path or URL every worker can write: the run's Parquet dataset, by host); the
    tables are put together in capture order with flow ids counted across the run, exactly as
    ``commpath.read`` numbers them. ``client``, ``scheduler`` or ``workers``: see :func:`connect`.
    ``classify``: the flows are classified on the workers (with ``inventory``), each capture's in
    its own task, with the cluster view of the whole run (``Decoded.view``): see ``_classify``; and
    ``merge`` (as ``commpath.open``'s) merges the vantage points on the workers (``_merge``).
    ``then(decoded, evaluate)``: called while the cluster still holds the classified flows (merged
    parts, or each host's), its result returned instead of the Decoded; ``evaluate`` is
    ``check.evaluate`` run over those parts on the workers (``_checks.checks_on_parts``), or None
    when there were none.
    """
    sources = expand(inputs, storage_options)
    ca_pem = _read_small(ca, "--ca")
    keylog_bytes = _read_small(keylog, "--keylog")
    if parts is not None:
        clear_parts(parts, storage_options)
    from ..present.progress import StageBar
    with connect(client, workers, scheduler, processes=processes, announce=progress) as c, \
            StageBar(enabled=progress) as shown:       # one bar over every stage's tasks
        summaries, results = _run_tasks(c, sources, parts, ca_pem, keylog_bytes, storage_options, shown,
                                        payload_limit, keep=classify)
        failed = [s for s in summaries if s["error"]]
        if failed and (strict or len(failed) == len(summaries)):
            raise InputError(failed[0]["name"], failed[0]["error"])
        if classify:
            held: list = []
            try:
                run = _classified_run(c, summaries, results, parts, ca, keylog, inventory, shown, merge, held)
                if then is None:
                    return run
                from ._checks import checks_on_parts
                evaluate = checks_on_parts(c, held, lambda x: _shared(c, x), merged=run.offsets is not None,
                                           shown=shown)
                return then(run, evaluate if held else None)
            finally:
                _cancel(c, [f for f in results if f is not None] + held)
    tables = [s.pop("tables", None) for s in summaries]
    return _assemble_run(summaries, tables, parts, ca, keylog)


def _read_small(path, option: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read ({option}): {exc.strerror or exc}") from None


def _run_tasks(client, sources, parts, ca_pem, keylog, storage_options, shown,
               payload_limit: int = ANALYSIS_PAYLOAD_LIMIT, keep: bool = False) -> tuple[list[dict], list]:
    """One task per capture, largest first (the long ones start early), counted on the run's bar
    (``shown``, a ``present.progress.StageBar``).

    ``keep``: the tasks' flows stay on the workers (the summaries carry the handshake rows only) and
    their results' futures are returned beside the summaries; otherwise the futures list is empty."""
    run = uuid.uuid4().hex[:8]
    order = sorted(range(len(sources)), key=lambda i: -sources[i].size)
    ca_f = client.scatter(ca_pem, broadcast=True) if ca_pem else None
    kl_f = client.scatter(keylog, broadcast=True) if keylog else None
    decoded = {i: client.submit(decode_capture, i, sources[i], parts, ca_f, kl_f, storage_options, payload_limit,
                                key=f"commpath-decode-{run}-{i:05d}", pure=False) for i in order}
    if keep:
        from ._classify import decoded_light
        futures = {client.submit(decoded_light, decoded[i], key=f"commpath-light-{run}-{i:05d}"): i for i in order}
    else:
        futures = {f: i for i, f in decoded.items()}
    summaries = _collect(client, futures, [s.name for s in sources], "decoding it", shown, "decode")
    results = [None if s["error"] else decoded[i] for i, s in enumerate(summaries)] if keep else []
    return summaries, results


def _collect(client, futures: dict, names: list[str], doing: str, shown, stage: str) -> list:
    """The results of ``futures`` (future -> index) by index as they complete, counted on the run's
    bar (``shown``) as its stage ``stage``; one clear error naming the capture when its task cannot
    finish."""
    from distributed import as_completed
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker
    out: list = [None] * len(names)
    shown.stage(stage, len(futures))
    for fut in as_completed(futures):
        i = futures[fut]
        try:
            out[i] = fut.result()
        except KilledWorker:
            _cancel(client, futures)
            raise CommpathError(f"{names[i]}: the Dask workers {doing} died repeatedly "
                                "(out of memory? see the workers' logs)") from None
        except (FutureCancelledError, OSError) as exc:
            _cancel(client, futures)
            raise CommpathError(f"{names[i]}: the Dask task was lost: {exc}") from None
        shown.update(1)
    return out


def _classified_run(client, summaries: list[dict], results: list, parts, ca, keylog, inventory,
                    shown, merge: bool | None = None, held: list | None = None) -> Decoded:
    """Handshakes resolved over the run on the driver (as :func:`_assemble_run`), then each capture's
    flows classified in a task on the worker holding them, with the view of the whole run built
    from the captures' summaries (``classify.roles.view_of_parts``). ``held``: the futures of the
    merged parts (or, unmerged, of each host's classified flows) are appended to it, and stay on
    the workers until the caller cancels them."""
    from ..classify import CLASSIFY_COLUMNS
    from ..classify.roles import twin_sources, view_needs_twins, view_of_parts, vip_flows, vip_ports
    from ..decode.handshakes import HandshakeAnalyzer
    from ..decode.merge import capture_hosts
    from ._classify import classify_part, host_groups, prepare_host, summary_rows, task_certs, twins
    from ._merge import piece
    analyzer = HandshakeAnalyzer(ca, keylog)
    bases, base = [], 0
    for s in summaries:
        bases.append(base)
        handshakes = s.pop("handshakes", None)
        if s["error"]:
            continue
        analyzer.absorb(handshakes, base)
        base += s["flows"]
    hs = analyzer.result()
    tls, certs = conform(hs.tls.copy(), TLS_COLUMNS), conform(hs.certs.copy(), CERT_COLUMNS)
    captures = conform(pd.DataFrame([s["capture"] for s in summaries]) if summaries else empty_frame(CAPTURE_COLUMNS),
                       CAPTURE_COLUMNS)
    names = [s["name"] for s in summaries]
    live = [i for i, s in enumerate(summaries) if not s["error"]]
    certs_f = _shared(client, task_certs(certs))
    groups = host_groups(summaries, live)
    units = list(range(len(groups)))
    unit_names = [names[g[0]] for g in groups]
    # each host's TLS rows from its own decode results, on the worker holding them: the columns the
    # classification reads are not changed by resolving over the run, so they need not come back
    prepared = {u: client.submit(prepare_host, [results[i] for i in g], [bases[i] for i in g], certs_f, pure=False)
                for u, g in enumerate(groups)}

    def each(fn, *args) -> list:
        futures = {client.submit(fn, prepared[u], *args, pure=False): u for u in units}
        return _collect(client, futures, unit_names, "classifying it", shown, "view")

    rows = each(summary_rows, vip_ports(inventory))
    # every host's flows are prepared now: the decoded tables leave the workers' memory (dask
    # recomputes them from the graph should a worker holding a prepared table die)
    results[:] = [None] * len(results)
    view_input = list(rows)
    if view_needs_twins(inventory):
        sources = set().union(*(twin_sources(r) for r in rows)) if rows else set()
        if sources:
            view_input += each(twins, _shared(client, sources))
    view = view_of_parts(view_input, inventory)
    vip = vip_flows(rows, view)
    view_f, vip_f, captures_f = (_shared(client, x) for x in (view, vip, captures))
    classified = {u: client.submit(classify_part, prepared[u], view_f, vip_f, captures_f, pure=False) for u in units}
    offsets = None
    if merge is not False and sum(summaries[i]["flows"] for i in live) and (
            merge or len(capture_hosts(captures)) > 1):
        def release() -> None:        # the merge parts hold the classified rows now
            prepared.clear()
            classified.clear()
        flows, offsets = _merged_on_workers(client, classified, units, unit_names, captures, captures_f, shown,
                                            sum(summaries[i]["flows"] for i in live), release, held)
    else:
        futures = {client.submit(piece, classified[u], 0, pure=False): u for u in units}
        got = _collect(client, futures, unit_names, "classifying it", shown, "classify")
        flows = concat_frames(got, {**FLOW_COLUMNS, **CLASSIFY_COLUMNS})
        if held is not None:        # each host's classified flows, kept for the checks
            held.extend(sorted(futures, key=futures.get))
    if held:        # released, not cancelled: a cancel reaches the parts made from them
        prepared.clear()
        classified.clear()
    _cancel(client, [*prepared.values(), *classified.values()])
    return Decoded(flows=flows, captures=captures, tls=tls, certs=certs, ssh=hs.ssh, http=hs.http,
                   summaries=summaries, parts=parts, view=view, offsets=offsets)


def _merged_on_workers(client, classified: dict, units: list[int], names: list[str], captures: pd.DataFrame,
                       captures_f, shown, total_flows: int = 0,
                       release=None, held: list | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's connections merged part by part (``_merge``): split by initiator address, clock
    pairs reduced to the offsets on the driver, each part merged; the merged rows sorted as
    ``decode.merge.merge_run`` sorts them. ``held``: the merged parts' futures are appended to it
    (kept for the checks), else released."""
    from ..decode.merge import offsets_from_pairs
    from ._merge import merge_part, pairs_of, parts_count, piece, split, together
    n = parts_count(client, len(units), total_flows)
    cut = {u: client.submit(split, classified[u], n, pure=False) for u in units}
    # a host's pieces run right after its split (before other hosts' splits: a higher priority), so
    # its list of parts is read while still in memory, not from the worker's spill disk once per part
    by_host = [[client.submit(piece, cut[u], p, pure=False, priority=len(units) - k) for p in range(n)]
               for k, u in enumerate(units)]
    pieces = [[by_host[k][p] for k in range(len(units))] for p in range(n)]
    del cut, by_host     # each host's list of parts is released once its pieces hold them
    parts = [client.submit(together, pieces[p], pure=False) for p in range(n)]
    label = [f"merge part {p}" for p in range(n)]
    pairs = _collect(client, {client.submit(pairs_of, parts[p], captures_f, pure=False): p for p in range(n)},
                     label, "merging it", shown, "merge")
    del pieces           # released (not cancelled: that would cancel the parts made from them too)
    if release is not None:
        release()
    hosts = set().union(*(h for _, h in pairs))
    offsets = offsets_from_pairs(pd.concat([t for t, _ in pairs], ignore_index=True), hosts, captures)
    offsets_f = _shared(client, offsets)
    merged_f = {client.submit(merge_part, parts[p], captures_f, offsets_f, pure=False): p for p in range(n)}
    merged = _collect(client, merged_f, label, "merging it", shown, "merge")
    parts.clear()       # released, not cancelled: a cancel reaches the merged parts made from them
    if held is not None:
        held.extend(sorted(merged_f, key=merged_f.get))
    flows = concat_frames(merged, FLOW_COLUMNS)
    flows = flows.sort_values(["ts_start_aligned", "flow_id"], kind="stable").reset_index(drop=True)
    return flows, offsets


def _shared(client, value):
    """``value`` sent once to every worker (one pickle), for the tasks to take as a future: not
    pickled into each task, nor walked by the graph builder element by element (a set of sources)."""
    return client.scatter([value], broadcast=True, hash=False)[0]


def _cancel(client, futures) -> None:
    try:
        client.cancel(list(futures))
    except Exception:   # the cluster is going away anyway: the one line about why matters more
        pass


def _assemble_run(summaries: list[dict], per_capture: list[dict | None], parts: str | None, ca, keylog) -> Decoded:
    """The run's tables from the tasks' results: flows put together, handshakes resolved over the
    run by one analyzer (session resumption and chains across captures, as in one process)."""
    from ..decode.handshakes import HandshakeAnalyzer
    analyzer = HandshakeAnalyzer(ca, keylog)
    flows, base = [], 0
    for s, got in zip(summaries, per_capture):
        if s["error"]:
            continue
        f = got["flows"]             # the task's own copy: changed in place
        f["flow_id"] += base
        flows.append(f)
        analyzer.absorb(got["handshakes"], base)
        base += s["flows"]
    hs = analyzer.result()
    captures = pd.DataFrame([s["capture"] for s in summaries]) if summaries else empty_frame(CAPTURE_COLUMNS)
    return Decoded(flows=concat_frames(flows, FLOW_COLUMNS), captures=conform(captures, CAPTURE_COLUMNS),
                   tls=conform(hs.tls.copy(), TLS_COLUMNS),
                   certs=conform(hs.certs.copy(), CERT_COLUMNS), ssh=hs.ssh, http=hs.http,
                   summaries=summaries, parts=parts)


def read_parts(summaries: list[dict], storage_options: dict | None = None) -> Decoded:
    """The run's tables read back from its tasks' Parquet folders (``summaries`` of a run that was
    given ``parts``); TLS sessions and chains as each capture resolved them alone."""
    tables = [None if s["error"] else {name: read_part(s["part"], name, storage_options) for name in TABLES}
              for s in summaries]
    return _assemble(summaries, tables, None)


def _assemble(summaries: list[dict], per_capture: list[dict | None], parts: str | None) -> Decoded:
    tables: dict[str, list[pd.DataFrame]] = {k: [] for k in TABLES}
    base = 0
    for s, got in zip(summaries, per_capture):
        if s["error"]:
            continue
        flows = got["flows"]            # the task's own copy: changed in place
        flows["flow_id"] += base
        tables["flows"].append(flows)
        for name in ("tls", "ssh", "http"):
            df = got[name]
            if "flow_id" in df:
                df["flow_id"] = df["flow_id"].astype("int64") + base
            tables[name].append(df)
        certs = got["certs"]
        certs["flow_ids"] = [[i + base for i in ids] for ids in certs["flow_ids"]]
        tables["certs"].append(certs)
        base += s["flows"]
    captures = pd.DataFrame([s["capture"] for s in summaries]) if summaries else empty_frame(CAPTURE_COLUMNS)
    return Decoded(flows=concat_frames(tables["flows"], FLOW_COLUMNS), captures=conform(captures, CAPTURE_COLUMNS),
                   tls=concat_frames(tables["tls"], TLS_COLUMNS), certs=_merge_certs(tables["certs"]),
                   ssh=concat_frames(tables["ssh"], SSH_COLUMNS), http=concat_frames(tables["http"], HTTP_COLUMNS),
                   summaries=summaries, parts=parts)


def _merge_certs(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One row per certificate over the run, as one analyzer lists them: roles in the order first
    seen, every flow id, ordered by the first connection that showed the certificate."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_frame(CERT_COLUMNS)
    allc = pd.concat(frames, ignore_index=True)
    roles: dict[str, list[str]] = {}
    flow_ids: dict[str, set[int]] = {}
    for fp, r, ids in zip(allc["fingerprint"].astype(str), allc["roles"], allc["flow_ids"]):
        seen = roles.setdefault(fp, [])
        seen += [x for x in r if x not in seen]
        flow_ids.setdefault(fp, set()).update(ids)
    out = allc.drop_duplicates("fingerprint", keep="first").reset_index(drop=True)
    fps = out["fingerprint"].astype(str)
    out["roles"] = pd.Series([roles[f] for f in fps], dtype=object)
    out["flow_ids"] = pd.Series([sorted(flow_ids[f]) for f in fps], dtype=object)
    first = out["flow_ids"].map(min)
    out = out.iloc[first.argsort(kind="stable")].reset_index(drop=True)
    return conform(out, CERT_COLUMNS)

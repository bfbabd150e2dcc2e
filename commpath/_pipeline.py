"""From captures to judged paths in one call: `commpath.open` and `commpath analyze`."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import _ahead
from ._process import fewer_collections
from .check import FINDING_COLUMNS, PATH_COLUMNS, FindingSet, coverage, load_policy, note_unseen
from .check import evaluate as check_evaluate
from .check.policy import SEVERITIES, SEVERITY_RANK, Policy
from .check.tables import PATH_VERDICTS
from .classify import CLASSIFY_COLUMNS, Inventory, classify_with_view, load_inventory
from .classify.view import shared_address_codes
from .decode.engine import capture_of, collector_paused, read
from .decode.limits import ANALYSIS_PAYLOAD_LIMIT
from .decode.handshakes import HandshakeAnalyzer
from .decode.schema import (CAPTURE_COLUMNS, CAPTURE_TIME_COLUMNS, CLIENT_CERT_STATES, FLOW_TIME_COLUMNS, CERT_COLUMNS, FLOW_COLUMNS, HTTP_COLUMNS, MERGED_FLOW_COLUMNS,
                            OFFSET_COLUMNS, SSH_COLUMNS, TLS_COLUMNS, TLS_EXTRA, conform, empty_frame, pandas_dtype)
from .errors import InputError
from .present import notebook

#: TLS columns that report.json's flows carry, joined onto the classified flows (dtypes: TLS_COLUMNS).
FLOW_TLS_COLUMNS = ["tls_version", "sni", "alpn", "cipher", "server_cert_fingerprints", "client_cert",
                    "server_cert_verified"]
OUTPUT_FILES = ("flows.parquet", "tls.parquet", "certs.parquet", "findings.parquet", "report.json", "ssh.parquet",
                "http.parquet", "captures.parquet")


#: the widest span of datetime64[ns], in microseconds either side of 1970
_MAX_DATETIME_MICROS = 9.2e15


@dataclass(eq=False)
class Analysis:
    """Classified flows, handshakes, findings and path verdicts of one or more captures."""

    flows: pd.DataFrame
    tls: pd.DataFrame
    certs: pd.DataFrame
    ssh: pd.DataFrame
    http: pd.DataFrame
    findings: pd.DataFrame
    paths: pd.DataFrame
    captures: pd.DataFrame
    inventory: Inventory | None
    policy: Policy
    tls_analyzed: bool = True
    warnings: list[str] = field(default_factory=list)
    cluster_view: object = None
    #: host -> clock offset (seconds to subtract from its timestamps) when several hosts were merged
    clock_offsets: pd.DataFrame | None = None
    #: the evidence the run had (check layer: inventory, CA bundle, key log, hosts, filters ...)
    coverage: dict = field(default_factory=dict)
    #: requests decrypted with the key log on the kubelet and proxy paths (decode.requests.REQUEST_COLUMNS)
    requests: pd.DataFrame | None = None
    #: fact tables of other evidence sources by name (probe, config: check/evidence.py FACT_TABLES)
    facts: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.requests is None:
            from .decode.requests import REQUEST_COLUMNS
            self.requests = empty_frame(REQUEST_COLUMNS)
        # closed value sets as ordered categories holding every allowed value, so that sorting is by
        # meaning and pd.concat of two analyses keeps the dtype; UTC datetimes beside epoch seconds
        levels = {("findings", "severity"): SEVERITIES, ("paths", "verdict"): PATH_VERDICTS,
                  ("flows", "client_cert"): CLIENT_CERT_STATES, ("tls", "client_cert"): CLIENT_CERT_STATES}
        for (table, column), values in levels.items():
            if table == "findings" and self.__dict__.get("_finding_set") is not None:    # texts not made yet
                self.__dict__["_finding_set"].recode(column, lambda c, values=values: _ordered(c, values))
                continue
            df = getattr(self, table)
            if isinstance(df, pd.DataFrame) and column in df:
                df[column] = _ordered(df[column], values)
        for table, pairs in (("flows", dict(zip(("ts_start", "ts_end"), FLOW_TIME_COLUMNS))),
                             ("captures", dict(zip(("first_ts", "last_ts"), CAPTURE_TIME_COLUMNS)))):
            df = getattr(self, table)
            if isinstance(df, pd.DataFrame):
                for seconds, when in pairs.items():
                    if seconds in df:
                        micros = (pd.to_numeric(df[seconds], errors="coerce") * 1e6).round()
                        # a hostile or damaged capture may carry any timestamp: what datetime64[ns]
                        # cannot hold (years before 1678 or after 2261, inf) is NaT, not an error
                        micros = micros.where(micros.abs() < _MAX_DATETIME_MICROS)
                        if when in df:   # read back from an analyze folder: derived again, kept last
                            df.pop(when)
                        df[when] = pd.to_datetime(micros, unit="us", utc=True).astype("datetime64[ns, UTC]")

    @property
    def verdict(self) -> str:
        """The run's verdict: fail, warn, inconclusive or pass (check layer)."""
        from .check import run_verdict
        return run_verdict(self.paths, self.coverage)

    @property
    def merged(self) -> bool:
        """True when the flows of several vantage points were merged into one row per connection."""
        return "vantage_points" in self.flows

    @property
    def partial(self) -> bool:
        return bool(self.captures["partial"].fillna(False).any()) if len(self.captures) else False

    def summary(self) -> dict:
        """Counts at a glance: flows per path, verdict per path, findings per severity."""
        sev = self.finding_set.keys_frame()["severity"].astype("string").value_counts()
        return {
            "captures": int(len(self.captures)),
            "flows": int(len(self.flows)),
            "policy": self.policy.name,
            "flows_per_path": {str(k): int(v) for k, v in self.flows["path"].value_counts().items() if v},
            "verdicts": dict(zip(self.paths["id"].astype(str), self.paths["verdict"].astype(str))),
            "findings": {s: int(sev.get(s, 0)) for s in SEVERITY_RANK if sev.get(s, 0)},
            "tls_analyzed": self.tls_analyzed,
            **self._merge_summary(),
        }

    def _merge_summary(self) -> dict:
        if not self.merged:
            return {}
        seen = self.flows["vantage_points"].map(lambda v: len({p["host"] for p in v}) if isinstance(v, list) else 0)
        out = {"flows_seen_on_several_hosts": int((seen > 1).sum())}
        if self.clock_offsets is not None and len(self.clock_offsets):
            out["clock_offsets"] = {
                str(r.host): {"offset_s": None if pd.isna(r.offset_s) else float(r.offset_s),
                              "reference": str(r.reference), "connections": int(r.connections), "method": str(r.method)}
                for r in self.clock_offsets.itertuples()}
        return out

    def exit_code(self, fail_on: str = "high") -> int:
        """The CLI's exit code for this analysis: 1 with (unsuppressed) findings at or above ``fail_on``,
        3 when there are none but the run is inconclusive, else 0."""
        if fail_on not in SEVERITY_RANK:
            raise ValueError(f"fail_on must be one of {', '.join(SEVERITY_RANK)}")
        from .present.report import exit_code
        return exit_code(self, fail_on)

    # the Jupyter face: functions of the present layer that take the analysis as their first argument
    plot_path_map = notebook.plot_path_map
    plot_check_matrix = notebook.plot_check_matrix
    plot_timeline = notebook.plot_timeline
    plot_tls = notebook.plot_tls
    plot_certs = notebook.plot_certs
    plot_requests = notebook.plot_requests
    check_matrix = notebook.check_matrix
    report = notebook.report
    _repr_html_ = notebook.summary_html

    def __repr__(self) -> str:
        s = self.summary()
        verdicts = ", ".join(f"{k}={v}" for k, v in s["verdicts"].items() if v != "not-observed")
        return (f"<Analysis {s['captures']} capture(s), {s['flows']} flows, policy {s['policy']}, "
                f"{len(self.finding_set)} findings; {verdicts or 'no documented path observed'}>")


def _findings(self) -> pd.DataFrame:
    """The findings (FINDING_COLUMNS) as a DataFrame: their texts made on first use."""
    compact = self.__dict__.get("_finding_set")
    if compact is not None:
        self.__dict__["_findings"], self.__dict__["_finding_set"] = compact.frame(), None
    return self.__dict__.get("_findings")


def _set_findings(self, value) -> None:
    """A DataFrame, or the check layer's FindingSet (whose texts are made when read or written)."""
    compact = isinstance(value, FindingSet)
    self.__dict__["_finding_set"] = value if compact else None
    self.__dict__["_findings"] = None if compact else value


def _finding_set(self) -> FindingSet:
    """The findings as the writers read them, batch by batch (texts made a batch at a time until
    ``findings`` is asked for)."""
    compact = self.__dict__.get("_finding_set")
    return compact if compact is not None else FindingSet.of(self.findings)


# a property over the dataclass field: a million findings' texts (≈ 0.75 GB) exist only when asked for
Analysis.findings = property(_findings, _set_findings, doc=_findings.__doc__)
Analysis.finding_set = property(_finding_set, doc=_finding_set.__doc__)


def _ordered(column: pd.Series, values) -> pd.Series:
    """``column`` as an ordered categorical of ``values`` (any other value seen is kept, last)."""
    if isinstance(column.dtype, pd.CategoricalDtype) and all(isinstance(c, str) for c in column.cat.categories):
        # recoded through its few categories, not through a text per row
        codes = column.cat.codes.to_numpy()
        present = [str(column.cat.categories[c]) for c in pd.unique(codes[codes >= 0])]
        seen = [v for v in present if v not in values]
        return column.astype(pd.CategoricalDtype([*values, *seen], ordered=True))
    seen = [v for v in pd.unique(column.dropna().astype(str)) if v not in values]
    return column.astype("string").astype(pd.CategoricalDtype([*values, *seen], ordered=True))


def _is_analysis_dir(p: Path) -> bool:
    return p.is_dir() and (p / "flows.parquet").is_file() and (p / "report.json").is_file()


def _read_parquet(path: Path, columns: dict[str, str] | None) -> pd.DataFrame:
    if not path.is_file():
        return empty_frame(columns) if columns else pd.DataFrame()
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise InputError(path, f"cannot read parquet: {exc}") from None
    for name, dtype in (columns or {}).items():
        if name in df and dtype == "object":
            df[name] = df[name].map(lambda v: list(v) if hasattr(v, "__len__") and not isinstance(v, str) else v)
    return conform(df, columns) if columns else df


def _load_analysis_dir(folder: Path):
    """flows (without classification), tls, certs and captures of an earlier `analyze --out`."""
    flows = _read_parquet(folder / "flows.parquet", None)
    flows = flows.drop(columns=[c for c in [*CLASSIFY_COLUMNS, *FLOW_TLS_COLUMNS] if c in flows])
    flows = conform(flows, {**FLOW_COLUMNS, **({} if "vantage_points" not in flows else MERGED_FLOW_COLUMNS)})
    for col in ("vantage_points", "hosts"):
        if col in flows:
            flows[col] = flows[col].map(_plain_list)
    tls = _read_parquet(folder / "tls.parquet", {**TLS_COLUMNS, **TLS_EXTRA})
    certs = _read_parquet(folder / "certs.parquet", CERT_COLUMNS)
    from .present._json_stream import read_sections
    try:        # what is read of it: its flows and findings are walked past, not held
        report = read_sections(folder / "report.json", keep={"captures", "clock_offsets"})
    except (OSError, ValueError) as exc:
        raise InputError(folder / "report.json", f"cannot read: {exc}") from None
    if (folder / "captures.parquet").is_file():
        captures = _read_parquet(folder / "captures.parquet", CAPTURE_COLUMNS)
    else:   # folders written before captures.parquet existed: what report.json keeps of them
        caps = pd.DataFrame([{**c, "partial": False} for c in report.get("captures", [])])
        captures = conform(caps if len(caps) else empty_frame(CAPTURE_COLUMNS), CAPTURE_COLUMNS)
    tls_analyzed = len(tls) > 0 or not (flows["app_protocol"].astype("string") == "tls").any()
    offsets = None
    if report.get("clock_offsets"):
        offsets = conform(pd.DataFrame(report["clock_offsets"]), OFFSET_COLUMNS)
    return flows, tls, certs, captures, tls_analyzed, offsets


def _plain_list(v):
    """Parquet's arrays (of structs) back to lists (of dicts)."""
    if v is None or isinstance(v, float):
        return []
    return [dict(x) if isinstance(x, dict) else (x.item() if hasattr(x, "item") else x) for x in v]


def _join_tls(flows: pd.DataFrame, tls: pd.DataFrame) -> pd.DataFrame:
    """The flow table users get: decode, classification and (multi-host) merge columns in their declared
    order, then the report's TLS columns."""
    t = tls.drop_duplicates("flow_id").set_index("flow_id")
    merged = MERGED_FLOW_COLUMNS if "vantage_points" in flows else {}
    # a shallow copy: with copy-on-write the columns added here never reach ``flows``
    out = conform(flows.copy(deep=False), {**FLOW_COLUMNS, **CLASSIFY_COLUMNS, **merged})
    if len(t):          # each flow's TLS row found once, every column gathered with it
        at = t.index.get_indexer(out["flow_id"])
        for col in FLOW_TLS_COLUMNS:
            if col not in t:
                mapped = pd.Series(pd.NA, index=out.index)
            else:
                mapped = pd.Series(t[col].array.take(at, allow_fill=True), index=out.index)
            out[col] = mapped.astype(TLS_COLUMNS[col]) if TLS_COLUMNS[col] != "object" else mapped
        return out
    for col in FLOW_TLS_COLUMNS:     # no TLS row: every cell missing, made as such (a map would look each up)
        if TLS_COLUMNS[col] != "object":
            out[col] = pd.Series(index=out.index, dtype=pandas_dtype(TLS_COLUMNS[col]))
        else:
            out[col] = out["flow_id"].map(t[col]) if col in t else pd.Series(pd.NA, index=out.index)
    return out


@fewer_collections()
def open(*inputs, inventory=None, policy="default", ca=None, keylog=None, progress=False,  # noqa: A001
         merge: bool | None = None, client=None, workers: int | None = None, scheduler: str | None = None,
         parts: str | None = None, storage_options: dict | None = None, probe=None, host_config=None,
         payload_limit: int = ANALYSIS_PAYLOAD_LIMIT) -> Analysis:
    """Read captures (files, folders, or an ``analyze`` output folder), classify every flow into its
    documented path, and judge the paths against ``policy``.

    ``inventory`` is a file or an :class:`Inventory`; ``ca`` a PEM bundle (defaults to the
    inventory's ``ca_bundle``); ``keylog`` an NSS key log for TLS 1.3 certificates.
    ``merge``: one flow per connection seen from several vantage points, with the hosts' clock
    offsets (``None``, the default: when the captures' manifests name more than one host).
    ``client`` (a ``distributed.Client``), ``scheduler`` (its address) or ``workers`` (local processes)
    decode the captures on Dask, one task per capture, each writing its tables under ``parts`` (a path
    or fsspec URL; inputs may be URLs too, ``storage_options`` for their filesystem): the same result.
    Without them, several large local captures are decoded on every core by Dask's local process
    scheduler and the rest runs here (``distributed.decode_on_cores``: the same result); ``workers=0``
    keeps it all in this process.
    ``probe``: a ``commpath probe --out`` folder (or its table); ``host_config``: host configuration folders
    (``commpath config``'s HOST_DIRs) or its table; the capture agents' manifests add theirs. Checks that
    need them cite them beside the wire (``evidence``).
    ``payload_limit``: bytes of each direction of each connection the handshake parsers see (a handshake
    cut by it is marked partial, with the reason).
    """
    if not inputs:
        raise InputError("(no input)", "give at least one capture file or folder")
    inv = inventory if isinstance(inventory, Inventory) or inventory is None else load_inventory(inventory)
    pol = load_policy(policy)
    if ca is None and inv is not None and inv.ca_bundle is not None:
        ca = str(inv.ca_bundle)
    for opt, value in (("--ca", ca), ("--keylog", keylog)):
        if value is not None and not Path(value).is_file():
            raise InputError(value, f"no such file ({opt})")

    paths = [Path(p) for p in inputs]
    warnings: list[str] = []
    ssh, http = empty_frame(SSH_COLUMNS), empty_frame(HTTP_COLUMNS)
    requests = None
    offsets = None
    reloaded = any(_is_analysis_dir(p) for p in paths)
    view = None
    on_dask = not reloaded and _on_dask(inputs, client, workers, scheduler)
    if reloaded or on_dask or workers is not None:
        _ahead.discard()     # decoded ahead only for this process's own decoding (below)
    if reloaded:
        if len(paths) != 1:
            raise InputError(paths[0], "an analyze output folder must be the only input")
        # merged (or not) when it was analysed: the vantage points are read back as they were written
        flows, tls, certs, captures, tls_analyzed, offsets = _load_analysis_dir(paths[0])
        if (paths[0] / "ssh.parquet").is_file():     # folders written before these two existed have neither
            ssh = _read_parquet(paths[0] / "ssh.parquet", SSH_COLUMNS)
        if (paths[0] / "http.parquet").is_file():
            http = _read_parquet(paths[0] / "http.parquet", HTTP_COLUMNS)
        if (paths[0] / "requests.parquet").is_file():
            from .decode.requests import REQUEST_COLUMNS
            requests = _read_parquet(paths[0] / "requests.parquet", REQUEST_COLUMNS)
    elif on_dask:
        from ._sources import fact_tables
        from .distributed import decode_run

        def judged(run, evaluate_on_parts):     # while the workers hold the classified parts: checked there
            warnings.extend(run.warnings)
            facts = fact_tables(None, probe, host_config, run.captures, inv, warnings.append)
            return judge(run.flows, run.captures, run.tls, run.certs, run.ssh, run.http, inventory=inv, policy=pol,
                         ca=ca, keylog=keylog, merge=merge, tls_analyzed=True, warnings=warnings, offsets=run.offsets,
                         facts=facts, storage_options=storage_options, view=run.view, evaluate=evaluate_on_parts)
        return decode_run(inputs, ca, keylog, client=client, workers=workers, scheduler=scheduler, parts=parts,
                          storage_options=storage_options, progress=progress, payload_limit=payload_limit,
                          classify=True, inventory=inv, merge=merge, then=judged)   # classified, merged on the workers
    elif workers is None and (on_cores := _decode_on_cores(paths, ca, keylog, progress, payload_limit)) is not None:
        flows, captures = on_cores.flows, on_cores.captures       # each capture decoded on a core of its own
        warnings.extend(on_cores.warnings)
        tls = conform(on_cores.tls, {**TLS_COLUMNS, **TLS_EXTRA})
        certs, ssh, http = on_cores.certs, on_cores.ssh, on_cores.http
        tls_analyzed = True
        del on_cores
    else:
        # handshakes are parsed as each connection's streams are harvested: memory stays bounded
        analyzer = HandshakeAnalyzer(ca, keylog)
        shown = _progress(progress)
        ahead = _ahead.take(inputs, ca, keylog, payload_limit, shown)
        if ahead is not None:     # decoded by the process the command forked before importing this
            columns, capture_rows, rows = ahead
            with collector_paused():
                capture = capture_of(columns, capture_rows, {})
                analyzer.absorb(rows)
            del ahead, columns, rows
        else:
            capture = read(*paths, progress=shown, keep_streams=False, on_streams=analyzer, payload_limit=payload_limit)
        flows, captures = capture.flows, capture.captures
        warnings.extend(capture.warnings)
        hs = analyzer.result()
        tls = conform(hs.tls.copy(), {**TLS_COLUMNS, **TLS_EXTRA})
        certs = conform(hs.certs.copy(), CERT_COLUMNS)
        ssh, http = hs.ssh, hs.http
        tls_analyzed = True
        # the analyzer's row tuples and the uncopied tables would otherwise live through the whole run
        del analyzer, hs, capture

    from ._sources import fact_tables
    facts = fact_tables(paths[0] if reloaded else None, probe, host_config, captures, inv, warnings.append)
    return judge(flows, captures, tls, certs, ssh, http, inventory=inv, policy=pol, ca=ca, keylog=keylog,
                 merge=merge, reloaded=reloaded, tls_analyzed=tls_analyzed, warnings=warnings, offsets=offsets,
                 requests=requests, facts=facts, storage_options=storage_options, view=view)


@shared_address_codes()     # the view, the role masks and the findings' keys: one factorization of the addresses
def judge(flows: pd.DataFrame, captures: pd.DataFrame, tls: pd.DataFrame, certs: pd.DataFrame, ssh: pd.DataFrame,
          http: pd.DataFrame, *, inventory: Inventory | None, policy: Policy, ca=None, keylog=None,
          merge: bool | None = None, reloaded: bool = False, tls_analyzed: bool = True,
          warnings: list[str] | None = None, offsets: pd.DataFrame | None = None,
          requests: pd.DataFrame | None = None, facts: dict | None = None,
          storage_options: dict | None = None, view=None, evaluate=None) -> Analysis:
    """Classify, merge and judge decoded tables (what :func:`open` does once the captures are read;
    `commpath watch` gives it the tables of its rolling window). ``requests``: the decrypted requests
    of a reloaded run (otherwise read here with ``keylog``). ``view``: ``flows`` are classified
    already, with this cluster view (on Dask workers: ``distributed.decode_run(classify=True)``).
    ``evaluate``: what runs the checks, if not ``check.evaluate`` in this process (on the workers'
    parts of these flows: ``distributed.decode_run(then=...)``)."""
    inv, pol = inventory, policy
    warnings = list(warnings or [])
    # every vantage point is classified with a cluster view built from all of them (the pod that
    # dialled the VIP is seen before DNAT only on its node); then one flow per connection
    if view is not None:
        classified = flows
    elif "dst_before_nat" in flows:   # reloaded merged flows: the dialled (pre-DNAT) ends inform the view too
        classified, view = _classify_merged(flows, tls, inv, certs, captures)
    else:
        classified, view = classify_with_view(flows, tls, inv, certs, captures)
    if merge is not False and not classified.empty and "vantage_points" not in classified:
        from .decode.merge import capture_hosts
        if merge or (not reloaded and len(capture_hosts(captures)) > 1):
            classified, tls, certs, ssh, http, offsets = _merge_vantage_points(classified, captures, tls, certs, ssh,
                                                                               http, warnings)
    elif view is not None and offsets is not None and "vantage_points" in classified:   # merged on the workers
        from .decode.merge import representatives
        classified, tls, certs, ssh, http, offsets = _after_merge(classified, offsets, representatives(classified),
                                                                  tls, certs, ssh, http, warnings)
    if not reloaded:    # the kubelet and proxy connections' requests, decrypted by tshark with the key log
        from ._requests import read_requests
        requests, _ = read_requests(classified, tls, keylog, warnings, http, storage_options=storage_options)
    facts = {k: v for k, v in (facts or {}).items() if v is not None}
    judged_with = {**facts, "requests": requests} if requests is not None else facts
    findings, path_table = (evaluate or check_evaluate)(classified, tls, certs, pol, inv, tls_known=tls_analyzed,
                                                        keylog_given=keylog is not None, facts=judged_with,
                                                        compact=True)
    cov = coverage(path_table, classified, captures, inventory_given=inv is not None, ca_given=ca is not None,
                   keylog_given=keylog is not None, tls_analyzed=tls_analyzed,
                   inventory=inv.to_dict() if inv is not None else None)
    path_table = note_unseen(path_table, cov)
    decrypted = ["decrypted"] if requests is not None and requests["encrypted"].astype(bool).any() else []
    cov["sources"] = ["wire", *facts, *decrypted]       # the evidence sources this run judged with
    return Analysis(flows=_join_tls(classified, tls), tls=tls, certs=certs, ssh=ssh, http=http,
                    findings=findings, paths=path_table, captures=captures, inventory=inv, policy=pol,
                    tls_analyzed=tls_analyzed, warnings=warnings, cluster_view=view, clock_offsets=offsets,
                    coverage=cov, requests=requests, facts=facts)


def _on_dask(inputs, client, workers, scheduler) -> bool:
    """Decode on Dask when asked to, or when an input is a URL (the in-process engine reads local files)."""
    from .distributed import is_url
    return client is not None or bool(workers) or bool(scheduler) or any(is_url(p) for p in inputs)


def _decode_on_cores(paths, ca, keylog, progress, payload_limit):
    """The local captures decoded on every core (``distributed.decode_on_cores``), or None: decode here."""
    from .distributed import decode_on_cores
    return decode_on_cores(paths, ca, keylog, progress=progress, payload_limit=payload_limit)


def _classify_merged(flows, tls, inv, certs, captures):
    """Classify already merged flows with a cluster view that also sees each connection's pre-DNAT
    destination (e.g. pods dialling the ``kubernetes`` service VIP), as the unmerged flows showed it."""
    pre = flows[flows["dst_before_nat"].map(lambda v: isinstance(v, str) and ":" in v)].copy()
    if pre.empty:
        return classify_with_view(flows, tls, inv, certs, captures)
    ends = pre["dst_before_nat"].str.rsplit(":", n=1)
    pre["dst_ip"] = ends.str[0].str.strip("[]").astype("string")
    pre["dst_port"] = ends.str[1].astype("int32")
    both = pd.concat([flows, pre], ignore_index=True)
    classified, view = classify_with_view(both, tls, inv, certs, captures)
    return classified.iloc[:len(flows)].reset_index(drop=True), view


def _merge_vantage_points(classified, captures, tls, certs, ssh, http, warnings):
    """One flow per connection seen from several hosts, labelled as its representative vantage point
    (or, when that one is unclassified, as the first classified one); the handshake tables keep the
    rows of the representative flows, certificates name the representatives' flow ids."""
    from .decode.merge import adopt_labels, merge_run
    merged, offsets, representative = merge_run(classified, captures, tls)
    # an unclassified representative takes the labels of its first classified vantage point
    adopt_labels(merged, classified, CLASSIFY_COLUMNS)
    return _after_merge(merged, offsets, representative, tls, certs, ssh, http, warnings)


def _after_merge(merged, offsets, representative, tls, certs, ssh, http, warnings):
    """The handshake tables cut to the merged flows' rows, certificates naming the representatives,
    a warning per host whose clock could not be aligned."""
    keep = set(merged["flow_id"].astype(int))

    def kept(df: pd.DataFrame) -> pd.DataFrame:
        if df is None or "flow_id" not in df or df.empty:
            return df
        return df[df["flow_id"].astype("int64").isin(keep)].reset_index(drop=True)

    certs = certs.copy()
    if len(certs):
        certs["flow_ids"] = certs["flow_ids"].map(
            lambda ids: sorted({representative.get(int(i), int(i)) for i in ids}) if isinstance(ids, (list, tuple)) else ids)
    for r in offsets.itertuples():
        if pd.isna(r.offset_s):
            warnings.append(f"clock offset of host {r.host} unknown: no connection was seen both there and on "
                            f"{r.reference}; its times are not aligned")
    return merged, kept(tls), certs, kept(ssh), kept(http), offsets


def _progress(enabled: bool):
    if enabled:  # a tqdm bar, a widget in Jupyter, when tqdm is installed (present layer)
        from .present.progress import read_callback
        bar = read_callback()
        if bar is not None:
            return bar
    if not enabled or not sys.stderr.isatty():
        return None

    def show(file: str, done: int, total: int) -> None:
        pct = 100 * done / total if total else 100
        print(f"\rreading {Path(file).name}: {pct:5.1f}%", end="", file=sys.stderr, flush=True)
    return show


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns Arrow can store (lists, text) stay; any other object column becomes text.

    Arrow's own conversion decides (in C), instead of a Python look at every cell."""
    import pyarrow as pa
    out = None
    for col in df.columns:
        if df[col].dtype != object:
            continue
        try:
            pa.array(df[col], from_pandas=True)
            continue
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass
        out = df.copy() if out is None else out
        out[col] = out[col].map(lambda v: None if v is None or (not isinstance(v, (list, tuple)) and pd.isna(v)) else str(v))
    return df if out is None else out


def _write_parquet(df: pd.DataFrame, path: str | Path, converted: dict | None = None) -> None:
    """``df`` as a Parquet file; only a table Arrow refuses goes through :func:`_parquet_safe` (whose
    trial conversion of every object column would convert each of them twice). ``converted``: columns
    the caller has as Arrow already (column -> the array Arrow makes of it), not converted again."""
    import pyarrow as pa

    from ._parquet import write_parquet
    if converted:
        df = df.assign(**{c: pd.Series(pd.arrays.ArrowExtensionArray(a), index=df.index) for c, a in converted.items()})
    try:
        write_parquet(df, path)              # Arrow converts before the file is opened
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        write_parquet(_parquet_safe(df), path)


def _finding_writer(out):
    """A function writing a batch of findings to ``out`` (a ParquetFrames): as :func:`_write_parquet`
    writes a table (a batch Arrow refuses as it is goes through :func:`_parquet_safe`)."""
    import pyarrow as pa

    def write(batch: pd.DataFrame) -> None:
        batch = conform(batch.copy(), FINDING_COLUMNS)
        try:
            out.write(batch)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            out.write(_parquet_safe(batch))
    return write


def write_outputs(analysis: Analysis, out: str | Path) -> dict[str, Path]:
    """What `analyze --out` writes: report.json and one Parquet file per table (flows, tls, certs, findings, ssh,
    http, captures)."""
    from .present.report_json import write_report_json
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(folder, f"cannot create the output folder: {exc.strerror or exc}") from None
    files = {name: folder / name for name in OUTPUT_FILES}
    # a merged run's vantage points (a list of dicts per flow) converted to Arrow once, for both files
    from .present._json_columns import vantage_arrow_of
    vantage = vantage_arrow_of(analysis.flows["vantage_points"]) if "vantage_points" in analysis.flows else None
    try:
        _write_parquet(analysis.flows, files["flows.parquet"],
                       {"vantage_points": vantage} if vantage is not None else None)
        _write_parquet(analysis.tls, files["tls.parquet"])
        _write_parquet(analysis.certs, files["certs.parquet"])
        _write_parquet(analysis.ssh, files["ssh.parquet"])      # every table open() returns
        _write_parquet(analysis.http, files["http.parquet"])
        _write_parquet(analysis.captures, files["captures.parquet"])
        # with rows, or with connections it could not read (its attrs say so, and what would settle them)
        if analysis.requests is not None and (len(analysis.requests) or analysis.requests.attrs.get("connections")):
            files["requests.parquet"] = folder / "requests.parquet"
            _write_parquet(analysis.requests, files["requests.parquet"])
        for name, table in getattr(analysis, "facts", {}).items():     # probe.parquet, config.parquet ...
            _write_parquet(table, folder / f"{name}.parquet")
            files[f"{name}.parquet"] = folder / f"{name}.parquet"
    except OSError as exc:
        raise InputError(folder, f"cannot write: {exc.strerror or exc}") from None
    # findings.parquet beside report.json's findings: each batch's texts are made once for both
    from ._parquet import ParquetFrames
    try:
        with ParquetFrames(files["findings.parquet"]) as findings_out:
            write = _finding_writer(findings_out)
            write_report_json(analysis, files["report.json"], on_findings=write, vantage=vantage)
            if not findings_out.frames:         # no findings: report.json read none
                for batch in analysis.finding_set.batches():
                    write(batch)
            if not findings_out.frames:
                write(empty_frame(FINDING_COLUMNS))
    except OSError as exc:
        raise InputError(folder, f"cannot write: {exc.strerror or exc}") from None
    return files


__all__ = ["PATH_COLUMNS", "Analysis", "judge", "open", "write_outputs"]

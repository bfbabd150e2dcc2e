"""Per-flow facts the tests read, as numpy columns aligned with the classified flows.

Text columns are kept as integer codes into a small list of distinct values (``Coded``), so a test
compares or formats each distinct value once, never once per connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Coded:
    """A text column as ``codes`` (int32, -1 = missing) into ``values``."""

    codes: np.ndarray
    values: list[str]

    def isin(self, wanted) -> np.ndarray:
        hit = np.array([v in set(wanted) for v in self.values] + [False], bool)
        return hit[self.codes]        # code -1 reads the trailing False

    def eq(self, value: str) -> np.ndarray:
        return self.isin([value])

    def missing(self) -> np.ndarray:
        return self.codes < 0

    def text(self, default: str = "") -> np.ndarray:
        """The values as a numpy text array (missing → ``default``)."""
        table = np.array(list(self.values) + [default], dtype=object)
        return table[self.codes]

    def map(self, fn) -> Coded:
        """``fn`` applied to each distinct value (not to each row)."""
        mapped = [fn(v) for v in self.values]
        uniq = list(dict.fromkeys(mapped))
        index = np.array([uniq.index(m) for m in mapped] + [-1], np.int32)
        return Coded(index[self.codes], uniq)


def coded(col, n: int) -> Coded:
    """A pandas Series (category or string) or pyarrow array as :class:`Coded`."""
    if col is None:
        return Coded(np.full(n, -1, np.int32), [])
    if hasattr(col, "dictionary_encode"):                     # pyarrow
        import pyarrow as pa
        import pyarrow.compute as pc
        enc = pc.cast(col, pa.string()).dictionary_encode() if not pa.types.is_dictionary(col.type) else col
        if isinstance(enc, pa.ChunkedArray):
            enc = enc.combine_chunks() if enc.num_chunks != 1 else enc.chunk(0)
        codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int32)
        return Coded(codes, [str(v) for v in enc.dictionary.to_pylist()])
    import pandas as pd
    cat = col if isinstance(col.dtype, pd.CategoricalDtype) else col.astype("category")
    return Coded(cat.cat.codes.to_numpy(np.int32), [str(v) for v in cat.cat.categories])


def _column(df, name):
    if hasattr(df, "column_names"):
        return df.column(name) if name in df.column_names else None
    return df[name] if name in df else None


def _numbers(df, name, n: int, dtype, default=0) -> np.ndarray:
    col = _column(df, name)
    if col is None:
        return np.full(n, default, dtype)
    if hasattr(col, "to_numpy") and not hasattr(col, "dictionary_encode"):    # pandas
        return col.to_numpy(dtype=dtype, na_value=default)
    import pyarrow.compute as pc
    return pc.fill_null(col, default).to_numpy().astype(dtype)


def _flags(df, name, n: int) -> np.ndarray:
    """A boolean column with missing values as False (absent column: all False)."""
    return _numbers(df, name, n, bool, False)


def _nullable_flags(df, name, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(value, known) of a nullable boolean column."""
    col = _column(df, name)
    if col is None:
        return np.zeros(n, bool), np.zeros(n, bool)
    if hasattr(col, "dictionary_encode"):
        known = col.is_valid().to_numpy(zero_copy_only=False)
    else:
        known = col.notna().to_numpy(bool)
    return _numbers(df, name, n, bool, False), known


@dataclass
class FlowFacts:
    """What the tests know about each classified flow (and the run), aligned with the flows."""

    n: int
    path: Coded
    app: Coded
    payload: np.ndarray                 # payload bytes, both directions
    underlay: np.ndarray                # WireGuard/ESP encrypted underlay
    src_role: Coded
    initiator_seen: np.ndarray          # the SYN or SYN-ACK showed who dialled
    roles_inferred: np.ndarray          # roles from ports and handshakes, not from an inventory
    ts: np.ndarray
    # TLS facts, gathered from the TLS table (missing where the flow has no TLS row)
    has_tls_row: np.ndarray
    tls_row: np.ndarray                 # row of the TLS table, -1 if none
    version: Coded
    client_cert: Coded
    verified: np.ndarray
    verified_known: np.ndarray
    verify_error: Coded
    visibility: Coded
    established: np.ndarray             # missing counts as established
    tls: object = None                  # the TLS table (list columns read only where a test needs them)
    certs: object = None                # the certificate table, indexed by fingerprint
    konnectivity_enabled: bool = False
    keylog_given: bool = False
    tls_known: bool = True
    cache: dict = field(default_factory=dict)
    dst: Coded | None = None            # responder address of each flow
    dst_port: np.ndarray | None = None  # responder port
    #: fact tables of other sources (check/evidence.py FACT_TABLES): probe, config, requests
    tables: dict = field(default_factory=dict)

    def fact_rows(self, name: str) -> np.ndarray:
        """Row of fact table ``name`` about each flow's responder (its address and port), -1 if none."""
        key = f"rows:{name}"
        if key not in self.cache:
            table = self.tables.get(name)
            rows = np.full(self.n, -1, np.int64)
            if table is not None and len(table) and self.dst is not None and {"address", "port"} <= set(table):
                from .evidence import endpoint_keys
                flow_key, want = endpoint_keys(self.dst.values, self.dst.codes, self.dst_port,
                                               [str(a) for a in table["address"]],
                                               table["port"].to_numpy(np.int64, na_value=0))
                order = np.argsort(want, kind="stable")
                at = np.searchsorted(want[order], flow_key)
                at_c = np.minimum(at, len(want) - 1)
                found = (at < len(want)) & (want[order][at_c] == flow_key)
                rows = np.where(found, order[at_c], -1)
            self.cache[key] = rows
        return self.cache[key]

    @property
    def is_tls(self) -> np.ndarray:
        return self.app.eq("tls")

    def certs_visible(self) -> np.ndarray:
        return self.has_tls_row & self.visibility.isin(["visible", "decrypted"])

    def tls_list(self, name: str, rows: np.ndarray) -> list[list]:
        """A list column of the TLS table for the flows at ``rows`` (positions of flows)."""
        if self.tls is None or _declared(name) not in self.tls:
            return [[] for _ in rows]
        col = self.tls[name].to_numpy(object)
        out = []
        for r in self.tls_row[rows]:
            v = col[r] if r >= 0 else None
            out.append(list(v) if isinstance(v, (list, tuple, np.ndarray)) else [])
        return out


    def handshake_frames(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index into ``rows``, frame) of the handshake frames of the flows at ``rows``."""
        if self.tls is None or "handshake_frames" not in self.tls:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if "handshake_frames" not in self.cache:
            import pyarrow as pa
            col = pa.array(self.tls["handshake_frames"], from_pandas=True, type=pa.large_list(pa.int64()))
            self.cache["handshake_frames"] = col
        col = self.cache["handshake_frames"]
        tls_rows = self.tls_row[rows]
        has = np.flatnonzero(tls_rows >= 0)
        if not len(has):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        import pyarrow.compute as pc
        picked = col.take(tls_rows[has])
        parent = pc.list_parent_indices(picked).to_numpy(zero_copy_only=False)
        frames = pc.list_flatten(picked).to_numpy(zero_copy_only=False)
        return has[parent], frames.astype(np.int64)


def _tls_rows(flow_ids: np.ndarray, tls) -> np.ndarray:
    """Row of the TLS table for each flow (first row of a flow id), -1 where it has none."""
    if tls is None or len(tls) == 0:
        return np.full(len(flow_ids), -1, np.int64)
    tid = tls["flow_id"].to_numpy(np.int64)
    order = np.argsort(tid, kind="stable")
    sid = tid[order]
    at = np.searchsorted(sid, flow_ids)
    at_c = np.minimum(at, len(sid) - 1)
    found = (at < len(sid)) & (sid[at_c] == flow_ids)
    return np.where(found, order[at_c], -1)


#: the TLS columns the checks read: :func:`flow_facts` keeps these alone, so a run judged in parts
#: (``distributed._checks``) sends each part no more, and a check reading another is an error in
#: every mode (not a silent gap where the parts' rows lacked it)
TLS_READ = ("flow_id", "tls_version", "established", "client_cert", "server_cert_verified", "verify_error",
            "certs_visibility", "server_cert_fingerprints", "client_cert_fingerprints", "handshake_frames")


def _declared(name: str) -> str:
    if name not in TLS_READ:
        raise KeyError(f"TLS column {name!r} is not in check.facts.TLS_READ")
    return name


def tls_read(tls):
    """The columns of ``tls`` the checks read (:data:`TLS_READ`), or None."""
    return None if tls is None else tls[[c for c in TLS_READ if c in tls]]


def _gather(tls, name: str, rows: np.ndarray) -> Coded:
    n = len(rows)
    _declared(name)
    if tls is None or name not in tls:
        return Coded(np.full(n, -1, np.int32), [])
    c = coded(tls[name], len(tls))
    return Coded(np.where(rows >= 0, c.codes[np.maximum(rows, 0)], -1).astype(np.int32), c.values)


def _gather_flag(tls, name: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(rows)
    _declared(name)
    if tls is None or name not in tls or len(tls) == 0:
        return np.zeros(n, bool), np.zeros(n, bool)
    value, known = _nullable_flags(tls, name, len(tls))
    safe = np.maximum(rows, 0)
    has = rows >= 0
    return value[safe] & has, known[safe] & has


def flow_facts(flows, tls=None, certs=None, *, tls_known: bool = True, keylog_given: bool = False,
               konnectivity_enabled: bool = False, tables: dict | None = None) -> FlowFacts:
    """The facts of ``flows`` (classified) joined with their TLS rows and certificates."""
    n = len(flows)
    if not tls_known or tls is None or len(tls) == 0:
        tls = None
    tls = tls_read(tls)
    rows = _tls_rows(_numbers(flows, "flow_id", n, np.int64), tls)
    path = coded(_column(flows, "path"), n)
    src_role = coded(_column(flows, "src_role"), n)
    initiator = coded(_column(flows, "initiator"), n)
    # without the column every flow counts as seen from its SYN (flows made by hand)
    initiator_seen = (initiator.isin(["syn", "synack"]) if _column(flows, "initiator") is not None
                      else np.ones(n, bool))
    established, est_known = _gather_flag(tls, "established", rows)
    verified, verified_known = _gather_flag(tls, "server_cert_verified", rows)
    facts = FlowFacts(
        n=n, path=path, app=coded(_column(flows, "app_protocol"), n),
        payload=_numbers(flows, "payload_fwd", n, np.int64) + _numbers(flows, "payload_rev", n, np.int64),
        underlay=_flags(flows, "encrypted_underlay", n), src_role=src_role, initiator_seen=initiator_seen,
        roles_inferred=_flags(flows, "roles_inferred", n), ts=_numbers(flows, "ts_start", n, np.float64, np.nan),
        has_tls_row=rows >= 0, tls_row=rows, version=_gather(tls, "tls_version", rows),
        client_cert=_gather(tls, "client_cert", rows), verified=verified, verified_known=verified_known,
        verify_error=_gather(tls, "verify_error", rows), visibility=_gather(tls, "certs_visibility", rows),
        established=np.where(est_known, established, True), tls=tls,
        certs=_cert_index(certs), keylog_given=keylog_given, tls_known=tls_known,
        dst=coded(_column(flows, "dst_ip"), n), dst_port=_numbers(flows, "dst_port", n, np.int64),
        tables=dict(tables or {}))
    facts.konnectivity_enabled = konnectivity_enabled or bool(
        (path.eq("konnectivity") & src_role.eq("konnectivity-agent")).any())
    return facts


def _cert_index(certs):
    if certs is None or len(certs) == 0:
        return None
    return certs.drop_duplicates("fingerprint").set_index("fingerprint")


__all__ = ["Coded", "FlowFacts", "TLS_READ", "coded", "flow_facts", "tls_read"]

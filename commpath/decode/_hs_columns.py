"""Handshake rows as typed tables, for captures analysed apart and resolved together as one run.

A capture's rows travel between processes (``commpath.distributed``) as column tables: pickled,
a table costs a few buffers where the same rows as tuples cost one object per value (24 captures'
TLS rows: 15.7 MB of tuples, 0.85 s to unpickle on the driver). The run-level steps (sessions
resumed across captures, chains completed by another connection's intermediates) then run over
the few rows they concern, not over every row.
"""

from __future__ import annotations

from operator import itemgetter
from typing import TYPE_CHECKING

import numpy as np

from ._hs_tables import frame_from_rows, typed_column
from ._run_chains import complete_from_run
from ._sessions import resolve
from .schema import HTTP_COLUMNS, SSH_COLUMNS, concat_frames, empty_frame

if TYPE_CHECKING:          # pandas loads when the tables are built, as for handshakes.py
    import pandas as pd

#: the columns the chains completed from the run may change (flow_id first: ``complete_from_run`` reads it)
_CHAIN_COLUMNS = ["flow_id", "server_cert_verified", "client_cert_verified", "verify_error", "verify_reasons"]


def part_tables(tls_rows: list[tuple], ssh_rows: list[tuple], http_rows: list[tuple],
                row_columns: dict[str, str]) -> dict:
    """One capture's rows as tables, each sorted by flow id (stable) as the run's tables are: TLS rows
    without their session material (``row_columns``), which is kept beside them for the rows that
    have any as (position in the table, material)."""
    by_flow = itemgetter(0)
    tls_rows = sorted(tls_rows, key=by_flow)
    return {"tls": frame_from_rows(tls_rows, row_columns),
            "sessions": [(i, row[-1]) for i, row in enumerate(tls_rows) if row[-1] is not None],
            "ssh": frame_from_rows(sorted(ssh_rows, key=by_flow), SSH_COLUMNS),
            "http": frame_from_rows(sorted(http_rows, key=by_flow), HTTP_COLUMNS)}


def _moved(frames: list[tuple[pd.DataFrame, int]], columns: dict[str, str]) -> pd.DataFrame:
    """The frames (each with its flow-id base) as one table, flow ids moved on."""
    kept = [(f, b) for f, b in frames if len(f)]
    out = concat_frames([f for f, _ in kept], columns)
    if kept:
        out["flow_id"] = out["flow_id"].to_numpy() + np.repeat([b for _, b in kept], [len(f) for f, _ in kept])
    return out


def run_tables(parts: list[tuple[dict, int]], book, cas, tls_columns: dict[str, str],
               row_columns: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(tls, ssh, http) of the run from its captures' :func:`part_tables` (each with its flow-id
    base, in capture order): what one analyzer fed every capture in turn gives, the TLS table with
    the columns the run resolves (``tls_columns`` past ``row_columns``) filled over the whole run."""
    ssh = _moved([(p["ssh"], b) for p, b in parts], SSH_COLUMNS)
    http = _moved([(p["http"], b) for p, b in parts], HTTP_COLUMNS)
    sessions, at = [], 0
    for p, _ in parts:
        sessions += [(at + i, s) for i, s in p["sessions"]]
        at += len(p["tls"])
    tls = _moved([(p["tls"], b) for p, b in parts], row_columns)
    n = len(tls)
    if not n:
        return empty_frame(tls_columns), ssh, http
    source, resumed_from = _sessions(tls, sessions)
    tls["client_cert_source"] = typed_column(source, tls_columns["client_cert_source"], n)
    tls["resumed_from"] = typed_column(resumed_from, tls_columns["resumed_from"], n)
    tls["chain_from_run"] = _chains(tls, book, cas)
    return tls, ssh, http


def _sessions(tls: pd.DataFrame, sessions: list[tuple[int, tuple]]) -> tuple[list, list]:
    """``_sessions.resolve`` over the rows with session material only (the others: their own
    handshake); ``tls``'s client_cert updated in place where a resumed row inherits it."""
    n = len(tls)
    source: list = ["handshake"] * n
    resumed_from: list = [None] * n
    if not sessions:
        return source, resumed_from
    flow_ids = tls["flow_id"].to_numpy()
    cert = tls["client_cert"]
    pos = [i for i, _ in sessions]
    before = cert.iloc[pos].astype(object).where(cert.iloc[pos].notna(), None).tolist()
    rows = [(int(flow_ids[i]), c, s) for (i, s), c in zip(sessions, before)]
    changes = []
    for i, c, (_, new, src, frm) in zip(pos, before, resolve(rows, 0, 1)):
        source[i], resumed_from[i] = src, frm
        if new != c:
            changes.append((i, new))
    if changes:        # a new value may change the column's categories: typed again, as from rows
        values = cert.astype(object).where(cert.notna(), None).tolist()
        for i, new in changes:
            values[i] = new
        tls["client_cert"] = typed_column(values, str(cert.dtype), n)
    return source, resumed_from


def _chains(tls: pd.DataFrame, book, cas) -> np.ndarray:
    """``_run_chains.complete_from_run`` over the rows of the connections it may complete; ``tls``'s
    verification columns updated in place where it does. Returns chain_from_run."""
    import pandas as pd
    done = np.zeros(len(tls), bool)
    if cas is None or not book.incomplete:
        return done
    pos = np.flatnonzero(np.isin(tls["flow_id"].to_numpy(), [f for f, *_ in book.incomplete]))
    part = tls.iloc[pos][_CHAIN_COLUMNS].astype(object)
    rows = [tuple(None if v is pd.NA else v for v in row) for row in part.itertuples(index=False)]
    for i, row in zip(pos, complete_from_run(rows, book, cas, _CHAIN_COLUMNS)):
        if not row[-1]:
            continue
        done[i] = True
        for name, value in zip(_CHAIN_COLUMNS[1:], row[1:-1]):
            col = tls[name]
            if col.dtype == object:
                values = col.to_numpy(copy=True)
                values[i] = value
                tls[name] = values
            else:
                tls.loc[tls.index[i], name] = pd.NA if value is None else value
    return done

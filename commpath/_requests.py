"""Decrypted requests of a run: the chosen connections (classify) read by tshark (decode), labelled."""

from __future__ import annotations

from contextlib import ExitStack

import pandas as pd

from .check.decrypted import CONNECTIONS_ATTR, KEYLOG_ATTR
from .classify.requests import decrypted_connections, label_requests
from .decode.requests import REQUEST_COLUMNS, RequestRun, decrypt_requests, requests_from_http
from .decode.schema import conform, empty_frame
from .distributed._files import is_url, local_copy

#: flow columns the decryption needs
_CONNECTION_COLUMNS = ["flow_id", "capture", "first_frame", "last_frame", "src_ip", "src_port", "dst_ip", "dst_port"]


def decode_hints(conns: pd.DataFrame, tls: pd.DataFrame) -> dict[int, str]:
    """Responder port -> how tshark should read it when its port does not tell: clear-text HTTP/1.x
    (``http``) or HTTP/2 (``http2``), TLS without an ALPN naming h2 (``tls-http``). A port with TLS
    connections is read as TLS: a clear-text hint there would hide the TLS."""
    hints: dict[int, str] = {}
    alpn = tls.drop_duplicates("flow_id").set_index("flow_id")["alpn"] if len(tls) and "alpn" in tls else pd.Series(dtype="string")
    for fid, port, proto in zip(conns["flow_id"].tolist(), conns["dst_port"].astype(int).tolist(),
                                conns["app_protocol"].astype("string").fillna("").tolist()):
        if proto == "tls":
            if alpn.get(fid) is pd.NA or str(alpn.get(fid, "")) != "h2":
                hints[port] = "tls-http"
        elif proto in ("http", "http2") and hints.get(port) != "tls-http":
            hints[port] = proto
    return hints


def read_requests(flows: pd.DataFrame, tls: pd.DataFrame, keylog, warnings: list[str],
                  http: pd.DataFrame | None = None, storage_options: dict | None = None
                  ) -> tuple[pd.DataFrame, RequestRun | None]:
    """The labelled `requests` table of classified ``flows`` and the tshark run's cost. Without a key log,
    the clear-text connections' requests come from the decode's HTTP table (``http``), without tshark.
    Captures at fsspec URLs are fetched to a temporary file for tshark (only those holding a chosen
    connection) and named by their URL in the table, as a local run names its files."""
    conns = decrypted_connections(flows)
    counts = _connection_counts(conns)
    if conns.empty:
        return _with_attrs(empty_frame(REQUEST_COLUMNS), keylog, counts), None
    if keylog is None:
        plain = conns[~conns["app_protocol"].astype("string").eq("tls").fillna(False).to_numpy(bool)]
        rows = requests_from_http(http, plain[["flow_id", "capture"]])
        return _with_attrs(conform(label_requests(rows, flows), REQUEST_COLUMNS), keylog, counts), None
    with ExitStack() as stack:
        urls = [c for c in pd.unique(conns["capture"].astype(str)) if is_url(c)]
        local = {u: str(stack.enter_context(local_copy(u, storage_options))) for u in urls}
        chosen = conns[_CONNECTION_COLUMNS].copy()
        if local:
            chosen["capture"] = chosen["capture"].astype(str).map(lambda c: local.get(c, c))
        run = decrypt_requests(chosen, keylog, decode_as=decode_hints(conns, tls))
    if local and len(run.requests):
        back = {v: k for k, v in local.items()}
        run.requests["capture"] = run.requests["capture"].astype(str).map(lambda c: back.get(c, c)).astype("string")
    for path, url in ((v, k) for k, v in local.items()):
        run.warnings = [w.replace(path, url) for w in run.warnings]
    warnings.extend(run.warnings)
    return _with_attrs(conform(label_requests(run.requests, flows), REQUEST_COLUMNS), keylog, counts), run


def _connection_counts(conns: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per chosen path, how many of its connections were TLS and how many clear text."""
    if conns.empty:
        return {}
    tls = conns["app_protocol"].astype("string").eq("tls").fillna(False).rename("tls")
    table = pd.crosstab(conns["path"].astype(str), tls)
    return {str(p): {"tls": int(r.get(True, 0)), "plain": int(r.get(False, 0))} for p, r in table.iterrows()}


def _with_attrs(requests: pd.DataFrame, keylog, counts: dict) -> pd.DataFrame:
    """The table with what check/decrypted.py needs to say what was not read, and why."""
    requests.attrs[KEYLOG_ATTR] = keylog is not None
    requests.attrs[CONNECTIONS_ATTR] = counts
    return requests


__all__ = ["decode_hints", "read_requests"]

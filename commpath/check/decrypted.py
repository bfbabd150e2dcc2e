"""What decrypted requests say about a path: evidence entries with ``source: decrypted`` (and ``wire`` for
requests that crossed the network in clear, read without any key).

The `requests` table (decode/requests.py) carries in ``attrs`` whether a key log was given and how
many of each path's chosen connections were TLS or clear text, so that a path whose connections
could not be read says so, and what would settle it, instead of saying nothing."""

from __future__ import annotations

import pandas as pd

#: attrs keys of the requests table
KEYLOG_ATTR = "keylog_given"
CONNECTIONS_ATTR = "connections"        # {path: {"tls": n, "plain": n}}

#: what a key log would show, per path
WOULD_SHOW = {
    "apiserver-to-kubelet": "which kubelet endpoints the apiserver called (logs, exec, attach, port-forward)",
    "metrics-to-kubelet": "which kubelet endpoints the scraper read (metrics, stats, pods)",
    "apiserver-proxy": "which requests the apiserver proxied over https",
    "kubelet-readonly": "which endpoints were read",
}
MAX_WHERE_FRAMES = 8


def _entry(said: str, where: str, source: str = "decrypted") -> dict:
    said = " ".join(said.split())
    return {"source": source, "said": said, "says": said, "where": " ".join(where.split())}


def _where(rows: pd.DataFrame) -> str:
    parts = []
    for capture, g in rows.groupby(rows["capture"].astype(str), sort=True):
        frames = sorted(int(x) for x in g["frame"])
        shown = ", ".join(map(str, frames[:MAX_WHERE_FRAMES])) + (", ..." if len(frames) > MAX_WHERE_FRAMES else "")
        parts.append(f"{capture} frames {shown}")
    return "; ".join(parts[:3]) + ("; ..." if len(parts) > 3 else "")


def _kinds(rows: pd.DataFrame) -> str:
    counts = rows["request_kind"].astype(str).value_counts(sort=False)
    order = [k for k in pd.unique(rows["request_kind"].astype(str))]
    return ", ".join(f"{k} {int(counts[k])}" for k in order)


def _statuses(rows: pd.DataFrame) -> str:
    codes = sorted({int(s) for s in rows["status"].dropna()})
    unanswered = int(rows["status"].isna().sum())
    text = "status " + "/".join(map(str, codes)) if codes else ""
    if unanswered:
        text += f"{'; ' if text else ''}{unanswered} without a response seen"
    return text


def decrypted_path_entries(requests: pd.DataFrame | None, path: str) -> list[dict]:
    """The `decrypted` source's entries about ``path`` (none for a path whose requests are never read)."""
    if requests is None:
        return []
    conns = (requests.attrs.get(CONNECTIONS_ATTR) or {}).get(path, {})
    keylog = bool(requests.attrs.get(KEYLOG_ATTR, False))
    rows = requests[requests["flow_path"].astype("string") == path] if len(requests) else requests
    out = []
    tls_rows = rows[rows["encrypted"].astype(bool)] if len(rows) else rows
    plain_rows = rows[~rows["encrypted"].astype(bool)] if len(rows) else rows
    if len(tls_rows):
        n_conn = tls_rows["flow_id"].nunique()
        said = (f"{len(tls_rows)} request{'s' if len(tls_rows) != 1 else ''} decrypted on {n_conn} TLS "
                f"connection{'s' if n_conn != 1 else ''}: {_kinds(tls_rows)}")
        if path in ("apiserver-to-kubelet", "metrics-to-kubelet"):
            said += f" (the kubelet endpoints called: {', '.join(sorted(set(_endpoints(tls_rows))))})"
        status = _statuses(tls_rows)
        out.append(_entry(said + (f"; {status}" if status else ""), _where(tls_rows)))
    if len(plain_rows):
        n_conn = plain_rows["flow_id"].nunique()
        targets = sorted(set(plain_rows["target"].dropna().astype(str)))
        said = (f"{len(plain_rows)} request{'s' if len(plain_rows) != 1 else ''} carried over plain HTTP on {n_conn} "
                f"connection{'s' if n_conn != 1 else ''}, readable by anyone on the network: {_kinds(plain_rows)}")
        if targets:
            said += f" to {', '.join(targets[:4])}{' ...' if len(targets) > 4 else ''}"
        out.append(_entry(said, _where(plain_rows), "wire"))     # read in clear: the wire's own word
    tls_conns = int(conns.get("tls", 0))
    read = int(tls_rows["flow_id"].nunique()) if len(tls_rows) else 0
    if tls_conns > read:
        missing = tls_conns - read
        would = WOULD_SHOW.get(path, "the requests")
        if keylog:
            out.append(_entry(f"{missing} of {tls_conns} TLS connection{'s' if tls_conns != 1 else ''} not decrypted "
                              f"(their secrets are not in the key log, or they carried no request); a key log "
                              f"holding them would show {would}", "the key log given (--keylog)"))
        else:
            out.append(_entry(f"not decrypted: {tls_conns} TLS connection{'s' if tls_conns != 1 else ''} and no key log; "
                              f"a key log of the client (SSLKEYLOGFILE, Go's tls.Config.KeyLogWriter) would show {would}",
                              "no key log given (--keylog)"))
    return out


def _endpoints(rows: pd.DataFrame) -> list[str]:
    """The kubelet endpoint of each request: its path's first segment (/containerLogs, /exec, /stats ...)."""
    first = rows["path"].astype("string").fillna("").str.split("?", n=1).str[0].str.split("/", n=2).str[1]
    return ["/" + s for s in first.fillna("")]


__all__ = ["CONNECTIONS_ATTR", "KEYLOG_ATTR", "decrypted_path_entries"]

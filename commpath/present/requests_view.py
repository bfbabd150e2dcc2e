"""Decrypted requests shown: a per-path request table (HTML, Markdown) and a plot of request kinds per path."""

from __future__ import annotations

import html as _html

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:     # the HTML and Markdown reports use this module without matplotlib
    from matplotlib.figure import Figure

from . import _model, palette

MAX_ROWS = 200
#: one row of the per-path table: requests alike in these columns
GROUP = ["flow_path", "request_kind", "method", "endpoint", "version", "encrypted"]
SUMMARY_COLUMNS = [*GROUP, "requests", "connections", "statuses", "targets", "capture", "frames"]


def _requests(analysis) -> pd.DataFrame:
    r = getattr(analysis, "requests", None)
    return r if isinstance(r, pd.DataFrame) else pd.DataFrame()


def request_summary(analysis, path: str | None = None) -> pd.DataFrame:
    """Requests grouped per path, kind, method, endpoint (the path before its query), HTTP version and
    encryption: how many, on how many connections, the statuses, the targets and example frames."""
    r = _requests(analysis)
    if not len(r):
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    if path is not None:
        r = r[r["flow_path"].astype("string") == path]
        if not len(r):
            return pd.DataFrame(columns=SUMMARY_COLUMNS)
    r = r.assign(flow_path=r["flow_path"].astype(str), request_kind=r["request_kind"].astype(str),
                 method=r["method"].astype("string").fillna(""), version=r["version"].astype("string").fillna(""),
                 endpoint=r["path"].astype("string").fillna("").str.split("?", n=1).str[0])
    rows = []
    for key, g in r.groupby(GROUP, sort=False, dropna=False):
        statuses = sorted({int(s) for s in g["status"].dropna()})
        missing = int(g["status"].isna().sum())
        first = g.sort_values("frame").iloc[0]
        rows.append({**dict(zip(GROUP, key)), "requests": len(g), "connections": int(g["flow_id"].nunique()),
                     "statuses": ", ".join(map(str, statuses)) + (f"{', ' if statuses else ''}none ({missing})" if missing else ""),
                     "targets": ", ".join(sorted(set(g["target"].dropna().astype(str)))[:3]),
                     "capture": str(first["capture"]),
                     "frames": [int(x) for x in g.loc[g["capture"] == first["capture"], "frame"].head(5)]})
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    order = out["flow_path"].map(palette.path_sort_key)
    return out.iloc[sorted(range(len(out)), key=lambda i: (order.iloc[i], -out["requests"].iloc[i]))].reset_index(drop=True)


def _esc(v) -> str:
    return _html.escape(_model.text(v), quote=True)


def requests_html(analysis, path: str) -> str:
    """The decrypted-request table of one path ('' when it has none)."""
    s = request_summary(analysis, path)
    if not len(s):
        return ""
    rows = []
    for _, x in s.head(MAX_ROWS).iterrows():
        how = "decrypted TLS" if bool(x["encrypted"]) else "<b>plain HTTP</b>"
        frames = ", ".join(map(str, x["frames"]))
        rows.append(f"<tr data-kind=\"{_esc(x['request_kind'])}\"><td>{_esc(x['request_kind'])}</td>"
                    f"<td>{_esc(x['method'])}</td><td class='http-path'><code>{_esc(x['endpoint'])}</code></td>"
                    f"<td>{_esc(x['version'])}</td><td>{how}</td><td class=num>{int(x['requests'])}</td>"
                    f"<td class=num>{int(x['connections'])}</td><td>{_esc(x['statuses'])}</td>"
                    f"<td>{_esc(x['targets'])}</td><td>{_esc(_short(x['capture']))} #{_esc(frames)}</td></tr>")
    more = f'<p class="note">First {MAX_ROWS} of {len(s)} rows shown.</p>' if len(s) > MAX_ROWS else ""
    total = int(s["requests"].sum())
    return (f"<h3>Requests (<span class='request-count'>{total}</span>, decrypted with the key log or in clear)</h3>"
            "<div class='scroll'><table class='requests'><tr><th>kind</th><th>method</th>"
            "<th>endpoint (query left out)</th><th>HTTP</th><th>read from</th><th class=num>requests</th>"
            "<th class=num>connections</th><th>status</th><th>targets</th><th>example frames</th></tr>"
            f"{''.join(rows)}</table></div>{more}")


def _short(capture) -> str:
    parts = _model.text(capture).replace("\\", "/").split("/")
    return "/".join(parts[-2:])


def requests_markdown(analysis) -> list[str]:
    """A '## Requests per path' section ([] when no request was read)."""
    from .markdown import cell as _md       # wire text made safe for a table cell (no code span: a path may hold `)
    s = request_summary(analysis)
    if not len(s):
        return []
    out = ["", "## Requests per path (decrypted with the key log, or in clear)", "",
           "| path | kind | method | endpoint | HTTP | read from | requests | connections | status | example frames |",
           "|---|---|---|---|---|---|--:|--:|---|---|"]
    for _, x in s.head(MAX_ROWS).iterrows():
        how = "decrypted TLS" if bool(x["encrypted"]) else "**plain HTTP**"
        out.append(f"| {_md(x['flow_path'])} | {_md(x['request_kind'])} | {_md(x['method'])} | {_md(x['endpoint'])} | "
                   f"{_md(x['version'])} | {how} | {int(x['requests'])} | {int(x['connections'])} | {_md(x['statuses'])} | "
                   f"{_md(_short(x['capture']))} #{', '.join(map(str, x['frames']))} |")
    return out


def request_counts(analysis) -> pd.DataFrame:
    """Requests per (path, kind), split into decrypted TLS and plain HTTP: the data of the plot."""
    r = _requests(analysis)
    if not len(r):
        return pd.DataFrame(columns=["flow_path", "request_kind", "tls", "plain"])
    t = (r.assign(flow_path=r["flow_path"].astype(str), request_kind=r["request_kind"].astype(str),
                  how=r["encrypted"].map({True: "tls", False: "plain"}))
         .groupby(["flow_path", "request_kind", "how"]).size().unstack("how", fill_value=0))
    for col in ("tls", "plain"):
        if col not in t:
            t[col] = 0
    return t[["tls", "plain"]].reset_index()


def plot_requests(analysis, ax=None) -> Figure:
    """Horizontal bars: requests per kind, grouped by path (path colours), hatched where plain HTTP."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from ._plot_common import TITLE_Y
    counts = request_counts(analysis)
    if ax is None:
        fig = Figure(figsize=(8, max(2.2, 0.38 * max(len(counts), 1) + 1.2)), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    if not len(counts):
        ax.text(0.5, 0.5, "no request read (needs --keylog for TLS)", ha="center", va="center",
                transform=ax.transAxes, color="#666666")
        ax.set_xticks([])
        ax.set_yticks([])
        return fig
    counts = counts.iloc[sorted(range(len(counts)), key=lambda i: (palette.path_sort_key(counts["flow_path"].iloc[i]),
                                                                   counts["request_kind"].iloc[i]))]
    counts = counts.reset_index(drop=True)
    y = list(range(len(counts)))[::-1]
    colors = [palette.path_color(p) for p in counts["flow_path"]]
    ax.barh(y, counts["tls"], color=colors, edgecolor="#333333", linewidth=0.5)
    ax.barh(y, counts["plain"], left=counts["tls"], color=colors, edgecolor="#333333", linewidth=0.5, hatch="///",
            alpha=0.6)
    ax.set_yticks(y, [f"{k}  ({p})" for p, k in zip(counts["flow_path"], counts["request_kind"])], fontsize=8)
    ax.set_xlabel("requests")
    ax.set_title("Requests per kind and path", fontsize=10, y=TITLE_Y)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(handles=[Patch(facecolor="#BBBBBB", edgecolor="#333333", label="decrypted TLS"),
                       Patch(facecolor="#BBBBBB", edgecolor="#333333", hatch="///", label="plain HTTP")],
              fontsize=8, loc="lower right", frameon=False)
    return fig


__all__ = ["plot_requests", "request_counts", "request_summary", "requests_html", "requests_markdown"]

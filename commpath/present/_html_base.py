"""Small HTML pieces every section of the report uses: escaping, badges, UTC times, anchors."""

from __future__ import annotations

from html import escape

import pandas as pd

from . import _model, palette

def esc(value, missing: str = "") -> str:
    """Any value as escaped HTML text (every string from the wire passes through here)."""
    return escape(_model.text(value, missing), quote=True)


def verdict_badge(verdict: str) -> str:
    v = str(verdict)
    return (f'<span class="badge verdict-{esc(v)}" style="color:{palette.verdict_color(v)};'
            f'background:{palette.VERDICT_BACKGROUNDS.get(v, "#fff")};border-color:{palette.verdict_color(v)}">'
            f"{esc(v)}</span>")


def severity_badge(severity: str) -> str:
    s = str(severity)
    return f'<span class="sev sev-{esc(s)}" style="background:{palette.SEVERITY_COLORS.get(s, "#757575")}">{esc(s)}</span>'


def path_dot(path: str) -> str:
    return f'<span class="pathdot" style="background:{palette.path_color(path)}"></span>'


def utc(ts, missing: str = "") -> str:
    try:
        if ts is None or pd.isna(ts):
            return missing
        return pd.to_datetime(float(ts), unit="s", utc=True).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    except (TypeError, ValueError):
        return missing


def utc_texts(values, missing: str = "") -> list[str]:
    """``utc`` of each value, the epoch seconds converted in one call (pandas converts a single
    value as an array of one, so the texts are the same)."""
    try:
        seconds = pd.Series(values, dtype="float64").to_numpy()
        stamps = pd.to_datetime(seconds, unit="s", utc=True)
    except (TypeError, ValueError):
        return [utc(v, missing) for v in values]
    return [missing if pd.isna(t) else t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC" for t in stamps]


def slug(path: str) -> str:
    return "path-" + "".join(ch if ch.isalnum() or ch == "-" else "_" for ch in str(path))

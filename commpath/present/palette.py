"""Colours, orderings and labels shared by every plot and report, defined once."""

from __future__ import annotations

from ..classify.catalog import display_order, path_colors

#: Paths in the catalog's display order (documented paths first, in the reference document's order).
PATH_ORDER: tuple[str, ...] = tuple(display_order())
#: One colour per path, from the catalog (colour-blind-safe qualitative set; "other" stays grey).
PATH_COLORS: dict[str, str] = path_colors()
FALLBACK_PATH_COLOR = "#999999"

VERDICT_ORDER: tuple[str, ...] = ("fail", "warn", "inconclusive", "pass", "not-observable", "not-observed")

#: One colour per verdict (also used for the cells of the path x check matrix).
VERDICT_COLORS: dict[str, str] = {
    "pass": "#2E7D32",
    "fail": "#C62828",
    "warn": "#EF8F00",
    "not-observable": "#5C6BC0",
    "not-observed": "#9E9E9E",
    "inconclusive": "#6D4C41",
}
#: Light backgrounds for table cells, same hue as VERDICT_COLORS.
VERDICT_BACKGROUNDS: dict[str, str] = {
    "pass": "#E8F5E9",
    "fail": "#FFEBEE",
    "warn": "#FFF3E0",
    "not-observable": "#E8EAF6",
    "not-observed": "#F5F5F5",
    "inconclusive": "#EFEBE9",
}

SEVERITY_ORDER: tuple[str, ...] = ("info", "low", "medium", "high", "critical")
SEVERITY_COLORS: dict[str, str] = {
    "info": "#607D8B",
    "low": "#8D6E63",
    "medium": "#EF8F00",
    "high": "#C62828",
    "critical": "#6A1B1A",
}

#: Certificate validity states at capture time.
CERT_STATE_COLORS: dict[str, str] = {
    "valid": "#2E7D32",
    "expiring": "#EF8F00",
    "expired": "#C62828",
    "not-yet-valid": "#AD1457",   # outside its validity: cert-expired fails, a red
}
#: A certificate that ends within this many days after the capture is "expiring".
EXPIRING_DAYS = 30

#: Client-certificate states (TLS_COLUMNS.client_cert), good to bad.
CLIENT_CERT_COLORS: dict[str, str] = {
    "presented": "#2E7D32",
    "inferred-presented": "#81C784",
    "not-requested": "#9E9E9E",
    "unknown": "#BDBDBD",
    "inferred-absent": "#E57373",   # client-cert-missing fails on inferred absence too
    "empty": "#C62828",
    # on paths that authenticate otherwise (pods send tokens): neither good nor bad
    "inferred-absent (not required)": "#CFD8DC",
    "empty (not required)": "#B0BEC5",
}

TLS_VERSION_COLORS: dict[str, str] = {
    "TLS 1.3": "#1B5E20",
    "TLS 1.2": "#66BB6A",
    "TLS 1.1": "#E57373",   # below 1.2: tls-version-weak fails, so red
    "TLS 1.0": "#C62828",
    "SSL 3.0": "#8E0000",
    "SSL 2.0": "#4A0000",
    "unknown": "#BDBDBD",
}


def path_color(path: str) -> str:
    """The colour of a path id (unknown ids get a neutral grey)."""
    return PATH_COLORS.get(str(path), FALLBACK_PATH_COLOR)


def verdict_color(verdict: str) -> str:
    return VERDICT_COLORS.get(str(verdict), VERDICT_COLORS["not-observed"])


def severity_rank(severity: str) -> int:
    """0 for info .. 4 for critical; -1 for anything else."""
    try:
        return SEVERITY_ORDER.index(str(severity))
    except ValueError:
        return -1


def path_sort_key(path: str) -> tuple[int, str]:
    try:
        return (PATH_ORDER.index(str(path)), "")
    except ValueError:
        return (len(PATH_ORDER), str(path))

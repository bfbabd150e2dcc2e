"""Jupyter face of an analysis: plots, the check matrix, reports and a rich HTML summary.

Each function takes the analysis first; ``commpath.Analysis`` exposes them as its methods
(``a.plot_path_map()``, ``a.report(...)``, ``a._repr_html_()``)."""

from __future__ import annotations


def plot_path_map(analysis, ax=None):
    """Roles as nodes, documented paths as edges coloured by verdict, with flow counts."""
    from .plots import path_map
    return path_map(analysis, ax)


def plot_check_matrix(analysis, ax=None, fail_on: str | None = None):
    """Documented paths x checks: pass / fail / warn / not-observable / not-observed."""
    from .plots import check_matrix
    return check_matrix(analysis, ax, fail_on=fail_on)


def plot_timeline(analysis, ax=None):
    """Connections per path (per host when several captures) across the capture window."""
    from .plots import timeline
    return timeline(analysis, ax)


def plot_tls(analysis):
    """TLS versions, cipher suites and client-certificate status per path."""
    from .plots import tls_overview
    return tls_overview(analysis)


def plot_requests(analysis, ax=None):
    """Decrypted requests per kind and path (present/requests_view.py)."""
    from .requests_view import plot_requests as draw
    return draw(analysis, ax)


def plot_certs(analysis, ax=None):
    """Certificate validity windows against the capture time; expired and expiring marked."""
    from .plots import cert_validity
    return cert_validity(analysis, ax)


def check_matrix(analysis, fail_on: str | None = None):
    """The path x check results as a DataFrame (path, check, status, findings, severity, flows)."""
    from ._model import check_results
    return check_results(analysis, fail_on)


def report(analysis, output, formats=("html",), fail_on: str = "high"):
    """Write reports (html, md, json, junit) like `commpath report`; returns format -> path."""
    from .report import write_reports
    return write_reports(analysis, str(output), list(formats), fail_on)


def summary_html(analysis) -> str:
    """A compact HTML summary (Jupyter's rich display of an analysis)."""
    from .html import summary_html as build
    return build(analysis)

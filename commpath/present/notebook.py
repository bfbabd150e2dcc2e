"""Jupyter face of an analysis: plotting methods, the check matrix and a rich HTML summary."""

from __future__ import annotations


class NotebookMixin:
    """Methods the Analysis class inherits; each delegates to the present layer."""

    def plot_path_map(self, ax=None):
        """Roles as nodes, documented paths as edges coloured by verdict, with flow counts."""
        from .plots import path_map
        return path_map(self, ax)

    def plot_check_matrix(self, ax=None, fail_on: str | None = None):
        """Documented paths x checks: pass / fail / warn / not-observable / not-observed."""
        from .plots import check_matrix
        return check_matrix(self, ax, fail_on=fail_on)

    def plot_timeline(self, ax=None):
        """Connections per path (per host when several captures) across the capture window."""
        from .plots import timeline
        return timeline(self, ax)

    def plot_tls(self):
        """TLS versions, cipher suites and client-certificate status per path."""
        from .plots import tls_overview
        return tls_overview(self)

    def plot_certs(self, ax=None):
        """Certificate validity windows against the capture time; expired and expiring marked."""
        from .plots import cert_validity
        return cert_validity(self, ax)

    def check_matrix(self, fail_on: str | None = None):
        """The path x check results as a DataFrame (path, check, status, findings, severity, flows)."""
        from ._model import check_results
        return check_results(self, fail_on)

    def report(self, output, formats=("html",), fail_on: str = "high"):
        """Write reports (html, md, json, junit) like `commpath report`; returns format -> path."""
        from .report import write_reports
        return write_reports(self, str(output), list(formats), fail_on)

    def _repr_html_(self) -> str:
        from .html import summary_html
        return summary_html(self)

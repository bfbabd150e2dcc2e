"""The HTML report's figures as SVG text, by name: drawn without matplotlib (see ``_svg``)."""

from __future__ import annotations

# modules, not their functions, so that benchmarks/report.py can time each figure
from . import _svg_charts, _svg_map, _svg_time


def report_figures(analysis, fail_on: str | None = None, results=None) -> dict[str, str]:
    """Every figure of the report (path map, check matrix, timeline, TLS, certificates) as SVG text
    (``results``: the check results for ``fail_on`` when the caller computed them already)."""
    return {
        "path_map": _svg_map.path_map_svg(analysis),
        "check_matrix": _svg_charts.check_matrix_svg(analysis, fail_on=fail_on, results=results),
        "timeline": _svg_time.timeline_svg(analysis),
        "tls": _svg_charts.tls_svg(analysis),
        "certs": _svg_time.certs_svg(analysis),
    }


def requests_svg(analysis) -> str:
    """The decrypted requests per kind and path (the report shows it when a key log read some)."""
    return _svg_charts.requests_svg(analysis)


__all__ = ["report_figures", "requests_svg"]

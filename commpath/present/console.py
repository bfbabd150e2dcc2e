"""The verdict lines that `analyze` and `report` print on stderr, written once."""

from __future__ import annotations

from . import _model, _run_view


def summary_lines(analysis, fail_on: str = "high") -> list[str]:
    """Warnings, the run verdict with its evidence, one line per judged path and the finding counts."""
    lines = [f"commpath: warning: {w}" for w in getattr(analysis, "warnings", [])]
    s = analysis.summary()
    lines.append(f"{s['flows']} flows in {s['captures']} capture(s); policy {s['policy']}")
    offsets = s.get("clock_offsets")
    if offsets:
        lines.append(f"  merged: {s['flows_seen_on_several_hosts']} connections seen on several hosts; clock offsets "
                     + ", ".join(f"{h} {o['offset_s'] * 1e3:+.3f} ms ({o['connections']} handshakes)"
                                 if o["offset_s"] is not None else f"{h} unknown"
                                 for h, o in offsets.items() if o["method"] != "reference")
                     + f" against {next(iter(offsets.values()))['reference']}")
    for pid, verdict in s["verdicts"].items():
        lines.append(f"  {pid:28s} {verdict}")
    verdict = _run_view.run_verdict(analysis, fail_on)
    lines.append(f"run verdict: {verdict['verdict']}: {verdict['reason']}")
    counts = ", ".join(f"{n} {sev}" for sev, n in s["findings"].items()) or "none"
    suppressed = _model.suppressed_mask(analysis).sum()
    lines.append(f"findings: {counts}" + (f" ({int(suppressed)} suppressed)" if suppressed else ""))
    return lines

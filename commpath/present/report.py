"""Reports and exports of an analysis (html, md, json, junit, sarif, zeek, csv), written where `commpath report -o` says."""

from __future__ import annotations

from pathlib import Path

from ..errors import CommpathError, InputError

#: format -> what -o FILE gets appended (a folder for the formats that write several files).
SUFFIXES = {"html": ".html", "md": ".md", "json": ".json", "junit": ".xml", "sarif": ".sarif",
            "zeek": "-zeek", "csv": "-csv"}
#: suffix of -o FILE -> the format it implies when no --format is given.
IMPLIED = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".json": "json", ".xml": "junit",
           ".sarif": "sarif", ".sarif.json": "sarif"}
#: formats written as a folder of files rather than one file.
FOLDER_FORMATS = ("zeek", "csv")
#: exit code of a run with nothing at or above --fail-on whose evidence cannot support a pass.
EXIT_INCONCLUSIVE = 3


def _known_suffix(name: str) -> str:
    """The report suffix ``name`` ends with ('' when none), longest first (.sarif.json before .json)."""
    for suffix in sorted({*SUFFIXES.values(), *IMPLIED}, key=len, reverse=True):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return suffix
    return ""


def output_paths(output: str, formats: list[str]) -> dict[str, Path]:
    """Where each format goes: FILE's base name plus each format's extension (FILE kept as it is when
    it already ends with that format's extension)."""
    out = Path(output)
    suffix = _known_suffix(out.name)
    chosen = list(dict.fromkeys(formats)) or [IMPLIED.get(suffix.lower(), "html")]
    base = out.name[: len(out.name) - len(suffix)] if suffix else out.name
    targets = {}
    for fmt in chosen:
        if suffix and (IMPLIED.get(suffix.lower()) == fmt or SUFFIXES[fmt] == suffix.lower()):
            targets[fmt] = out
        else:
            targets[fmt] = out.with_name(base + SUFFIXES[fmt])
    return targets


def render(analysis, fmt: str, fail_on: str = "high") -> str:
    """One single-file report format as text."""
    if fmt == "html":
        from .html import build_html
        return build_html(analysis, fail_on=fail_on)
    if fmt == "md":
        from .markdown import build_markdown
        return build_markdown(analysis, fail_on=fail_on)
    if fmt == "junit":
        from .junit import build_junit
        return build_junit(analysis, fail_on=fail_on)
    if fmt == "sarif":
        from .sarif import build_sarif_text
        return build_sarif_text(analysis, fail_on=fail_on)
    if fmt == "json":      # the same text as json.dumps(build_report(analysis), indent=2), made column-wise
        from .report_json import report_text
        return report_text(analysis)
    raise CommpathError(f"unknown report format {fmt!r}")


def _write_folder(analysis, fmt: str, folder: Path) -> None:
    if fmt == "zeek":
        from .zeek import write_zeek_logs
        write_zeek_logs(analysis, folder)
    elif fmt == "csv":
        from .tables_csv import write_csv_tables
        write_csv_tables(analysis, folder)
    else:
        raise CommpathError(f"unknown report format {fmt!r}")


def write_reports(analysis, output: str, formats: list[str], fail_on: str = "high") -> dict[str, Path]:
    """Write every requested format; returns format -> file (or folder) written."""
    targets = output_paths(output, formats)
    for fmt, path in targets.items():
        parent = path if fmt in FOLDER_FORMATS else path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(parent, f"cannot create the output folder: {exc.strerror or exc}") from None
        try:
            if fmt in FOLDER_FORMATS:
                _write_folder(analysis, fmt, path)
            elif fmt == "json":     # written batch by batch: the text of a million flows is never held whole
                from .report_json import write_report_json
                write_report_json(analysis, path)
            elif fmt == "sarif":    # likewise, a slice of findings at a time
                from .sarif import write_sarif
                write_sarif(analysis, path, fail_on)
            else:
                path.write_text(render(analysis, fmt, fail_on), encoding="utf-8")
        except OSError as exc:
            raise InputError(path, f"cannot write: {exc.strerror or exc}") from None
    return targets


def exit_code(analysis, fail_on: str = "high") -> int:
    """1 with unsuppressed findings at or above ``fail_on``; 3 when there are none but the run is
    inconclusive (the evidence cannot support a pass); else 0."""
    from ._run_view import run_verdict
    verdict = run_verdict(analysis, fail_on)["verdict"]
    return 1 if verdict == "fail" else EXIT_INCONCLUSIVE if verdict == "inconclusive" else 0


def apply_suppressions(analysis, suppress: str | None) -> list[str]:
    """Mark the findings a suppressions file silences (kept, flagged); returns warnings to show."""
    if not suppress:
        return []
    from ..check.suppress import apply, load_suppressions
    analysis.findings, notes = apply(analysis.findings, load_suppressions(suppress))
    return notes


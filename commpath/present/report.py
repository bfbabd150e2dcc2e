"""Reports of an analysis in html, md, json and junit, written where `commpath report -o` says."""

from __future__ import annotations

from pathlib import Path

from ..errors import CommpathError, InputError

#: format -> suffix used when several formats share the base name given with -o.
SUFFIXES = {"html": ".html", "md": ".md", "json": ".json", "junit": ".xml"}
#: suffix of -o FILE -> the format it implies when no --format is given.
IMPLIED = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".json": "json", ".xml": "junit"}


def output_paths(output: str, formats: list[str]) -> dict[str, Path]:
    """Where each format goes: FILE itself for one format, FILE's stem + each suffix for several."""
    out = Path(output)
    chosen = list(dict.fromkeys(formats)) or [IMPLIED.get(out.suffix.lower(), "html")]
    if len(chosen) == 1:
        return {chosen[0]: out}
    base = out.name
    for suffix in sorted({*SUFFIXES.values(), *IMPLIED}, key=len, reverse=True):
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            base = base[: -len(suffix)]
            break
    return {fmt: out.with_name(base + SUFFIXES[fmt]) for fmt in chosen}


def render(analysis, fmt: str, fail_on: str = "high") -> str:
    """One report format as text."""
    if fmt == "html":
        from .html import build_html
        return build_html(analysis, fail_on=fail_on)
    if fmt == "md":
        from .markdown import build_markdown
        return build_markdown(analysis, fail_on=fail_on)
    if fmt == "junit":
        from .junit import build_junit
        return build_junit(analysis, fail_on=fail_on)
    if fmt == "json":
        import json
        from .report_json import build_report
        return json.dumps(build_report(analysis), indent=2, ensure_ascii=False, default=str) + "\n"
    raise CommpathError(f"unknown report format {fmt!r}")


def write_reports(analysis, output: str, formats: list[str], fail_on: str = "high") -> dict[str, Path]:
    """Write every requested format; returns format -> file written."""
    targets = output_paths(output, formats)
    for fmt, path in targets.items():
        if path.parent and not path.parent.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(path.parent, f"cannot create the output folder: {exc.strerror or exc}") from None
        text = render(analysis, fmt, fail_on)
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(path, f"cannot write: {exc.strerror or exc}") from None
    return targets


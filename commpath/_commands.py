"""The `analyze` and `report` commands: open the inputs through the pipeline, write, say the verdicts."""

from __future__ import annotations

import sys

from ._pipeline import Analysis, _on_dask, open, write_outputs
from .decode.limits import ANALYSIS_PAYLOAD_LIMIT


def _dask_options(args, out: str | None) -> dict:
    """--workers, --scheduler and --parts (default on Dask: ``<out>/parts``) as open()'s arguments."""
    opts = {"workers": getattr(args, "workers", None), "scheduler": getattr(args, "scheduler", None),
            "parts": getattr(args, "parts", None)}
    if opts["parts"] is None and out is not None and _on_dask(args.inputs, None, opts["workers"], opts["scheduler"]):
        opts["parts"] = f"{str(out).rstrip('/')}/parts"
    return opts


def _write_outputs_to(analysis: Analysis, out: str) -> None:
    """write_outputs to a folder, or to a URL (``s3://...``) through a local folder uploaded at the end."""
    from .distributed import is_url, upload_folder
    if not is_url(out):
        write_outputs(analysis, out)
        return
    import tempfile
    with tempfile.TemporaryDirectory(prefix="commpath-out-") as tmp:
        write_outputs(analysis, tmp)
        upload_folder(tmp, out)


def analyze_main(args) -> int:
    """`commpath analyze INPUT... --out DIR`: exit 0, 1 with findings at or above --fail-on, 3 when inconclusive."""
    quiet = getattr(args, "quiet", False)
    analysis = open(*args.inputs, inventory=args.inventory, policy=args.policy, ca=args.ca,
                    keylog=args.keylog, progress=not quiet, merge=getattr(args, "merge", None),
                    probe=getattr(args, "probe", None), host_config=getattr(args, "host_config", None),
                    payload_limit=getattr(args, "payload_limit", ANALYSIS_PAYLOAD_LIMIT), **_dask_options(args, args.out))
    _write_outputs_to(analysis, args.out)
    fail_on = getattr(args, "fail_on", "high") or "high"
    if not quiet:
        from .present.console import summary_lines
        if sys.stderr.isatty():
            print("\r\033[K", end="", file=sys.stderr)
        for line in summary_lines(analysis, fail_on):
            print(line, file=sys.stderr)
        print(f"written to {args.out}", file=sys.stderr)
    from .present.report import exit_code
    return exit_code(analysis, fail_on)


def report_main(args) -> int:
    """`commpath report`: analyse the inputs once, write every --format; exit 0, 1 (findings at or
    above --fail-on, suppressed ones not counted), 3 (inconclusive); 2 via InputError."""
    from .present.console import summary_lines
    from .present.report import FOLDER_FORMATS, apply_suppressions, exit_code, write_reports
    quiet = getattr(args, "quiet", False)
    analysis = open(*args.inputs, inventory=args.inventory, policy=args.policy, ca=args.ca,
                    keylog=args.keylog, progress=not quiet, merge=getattr(args, "merge", None),
                    probe=getattr(args, "probe", None), host_config=getattr(args, "host_config", None),
                    payload_limit=getattr(args, "payload_limit", ANALYSIS_PAYLOAD_LIMIT), **_dask_options(args, None))
    notes = apply_suppressions(analysis, getattr(args, "suppress", None))
    written = write_reports(analysis, args.output, list(args.format or []), args.fail_on)
    if not quiet:
        if sys.stderr.isatty():
            print("\r\033[K", end="", file=sys.stderr)
        for line in [*(f"commpath: warning: {n}" for n in notes), *summary_lines(analysis, args.fail_on)]:
            print(line, file=sys.stderr)
        for fmt, path in written.items():
            print(f"{fmt}: {path}{'/' if fmt in FOLDER_FORMATS else ''}", file=sys.stderr)
    return exit_code(analysis, args.fail_on)


__all__ = ["analyze_main", "report_main"]

"""`commpath lab up|exercise|capture|down|run`: the emulated cluster on this machine."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import CommpathError
from .lab import Lab


def main(args) -> int:
    if getattr(args, "kind", "emulated") == "real":
        from .real.cli import main as real_main
        return real_main(args)
    if getattr(args, "probe", None):
        raise CommpathError("lab: --probe is for `lab run --kind real` (probe the emulated lab with `commpath probe`)")
    lab = Lab(args.name)
    out = Path(args.out) if args.out else None
    if args.action == "up":
        lab.up(args.scenario, out)
    elif args.action == "capture":
        if not (out or lab.state.get("out")):
            raise CommpathError("lab capture: --out DIR is required")
        lab.start_capture(out or Path(lab.state["out"]))
        print(f"capturing; stop with `commpath lab down --name {args.name}`", file=sys.stderr)
    elif args.action == "exercise":
        truth = lab.exercise(out)
        for err in truth["errors"]:
            print(f"lab: warning: {err}", file=sys.stderr)
    elif args.action == "down":
        removed = lab.down()
        print(f"lab: down: removed {len(removed)} namespaces", file=sys.stderr)
    elif args.action == "run":
        if not out:
            raise CommpathError("lab run: --out DIR is required")
        truth = lab.run(args.scenario, out)
        for err in truth["errors"]:
            print(f"lab: warning: {err}", file=sys.stderr)
        print(f"lab: {args.scenario}: {len(truth['connections'])} connections, paths "
              f"{', '.join(truth['paths_observed'])}; {truth['run_seconds']}s -> {out}")
    return 0

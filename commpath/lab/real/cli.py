"""`commpath lab ... --kind real`: the real cluster's up, exercise, down and run."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from ...errors import CommpathError
from .cluster import RealLab


def main(args) -> int:
    if getattr(args, "probe", None) and args.action != "run":
        raise CommpathError("lab: --probe goes with `lab run --kind real`")
    lab = RealLab(args.name)
    out = Path(args.out) if args.out else None
    if args.action == "up":
        lab.up(args.scenario, capture_out=out)
        print(f"real lab {args.name} is up; kubectl --kubeconfig {lab.dir / 'admin.kubeconfig'} "
              f"(inside: nsenter --net=/var/run/netns/{lab.topo.control_plane.ns})", file=sys.stderr)
    elif args.action == "exercise":
        from ._exercise import Exerciser
        done = Exerciser(lab).run()
        if out:
            out.mkdir(parents=True, exist_ok=True)
            (out / "exercise.yaml").write_text(yaml.safe_dump(done, sort_keys=False))
        for err in done["errors"]:
            print(f"real lab: warning: {err}", file=sys.stderr)
    elif args.action == "capture":
        if not out:
            raise CommpathError("lab capture: --out DIR is required")
        lab.start_capture(out)
    elif args.action == "down":
        removed = lab.down()
        print(f"real lab: down: removed {len(removed)} namespaces", file=sys.stderr)
    elif args.action == "run":
        from ._record import record
        if not out:
            raise CommpathError("lab run: --out DIR is required")
        probe = getattr(args, "probe", None)
        truth = record(lab, out, args.scenario, probe_out=Path(probe) if probe else None)
        for err in truth["errors"]:
            print(f"real lab: warning: {err}", file=sys.stderr)
        print(f"real lab: {len(truth['connections'])} connections attributed by the audit log "
              f"({len(truth['unattributed'])} not), paths {', '.join(truth['paths_observed'])}; "
              f"{truth['timings']['run_seconds']}s -> {out}")
    return 0

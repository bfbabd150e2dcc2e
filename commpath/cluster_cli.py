"""`commpath cluster capture` (and `kubectl commpath capture`): from a cluster to a verdict in one command.

Discovers the inventory through the API server, deploys the capture agents
(:mod:`commpath.capture.cluster`), waits, collects every host's files into ``--out``, removes
what it created, then analyses the folder. A cluster whose control plane runs no agent (a managed
one, or control-plane hosts that are not nodes) is captured on its nodes only: the paths only a
control-plane host sees are then ``not-observable``, and the report's coverage names them.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

from .errors import CommpathError, InputError

#: Roles that live on control-plane hosts only: a path all of whose ends are such roles is seen only there.
CONTROL_PLANE_ROLES = ("apiserver", "control-plane", "etcd", "konnectivity-server")
DEFAULT_IMAGE = "commpath.local/commpath-agent:0.1.0"


def duration_seconds(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1h30m`` -> seconds."""
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise CommpathError(f"--duration {text!r}: use seconds or a Go-style duration (90s, 10m, 1h30m)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def unseen_without_control_plane() -> list[str]:
    """Catalog paths whose both ends are control-plane roles: no node sees them."""
    from .capture.filters import catalog_paths
    return [p["id"] for p in catalog_paths() if p["initiator"] and p["responder"]
            and all(r in CONTROL_PLANE_ROLES for r in p["initiator"] + p["responder"])]


def register(sub) -> None:
    """Add `cluster capture` to the command line's subcommands."""
    p = sub.add_parser("cluster", help="capture a live cluster through its API server, then analyse",
                       description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = p.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    c = csub.add_parser("capture", help="deploy the agents, capture, collect, remove, analyse",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig (None: $KUBECONFIG or ~/.kube/config)")
    c.add_argument("--context", metavar="NAME", help="kubeconfig context (None: the current one)")
    c.add_argument("--duration", default="10m", help="how long the agents capture (seconds, or 90s, 10m, 1h)")
    c.add_argument("--out", required=True, metavar="DIR", help="run folder: one folder per host, the inventory, "
                                                               "the analysis in DIR/analysis")
    c.add_argument("--image", default=DEFAULT_IMAGE,
                   help="the agent image (python -m commpath.capture.cluster_image writes it; push it to your "
                        "registry)")
    c.add_argument("--image-pull-policy", default="IfNotPresent", choices=["IfNotPresent", "Always", "Never"],
                   help="when the nodes pull the image (Never: it was imported into their runtime)")
    c.add_argument("--namespace", metavar="NS", help="an existing namespace to deploy into (None: a new one, "
                                                     "removed afterwards)")
    c.add_argument("--inventory", metavar="FILE", help="use this inventory instead of discovering one")
    c.add_argument("--max-size", type=float, default=500.0, metavar="MB", help="capture files per host at most")
    c.add_argument("--iface", action="append", default=[], metavar="IF",
                   help="interfaces on every host ([]: each host's uplink, and lo on control-plane hosts)")
    c.add_argument("--start-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long to wait for the agents to start capturing")
    c.add_argument("--no-analyze", action="store_true", help="collect only; analyse later with `commpath analyze`")
    c.add_argument("--fail-on", choices=["info", "low", "medium", "high", "critical"], default="high",
                   help="exit 1 when a finding is at or above this severity")


def _api_client(kubeconfig, context):
    try:
        from kubernetes import config
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        raise CommpathError("`cluster capture` needs the kubernetes client: pip install 'commpath[cluster]'") from None
    try:
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except (ConfigException, OSError, TypeError, ValueError) as exc:
        raise InputError(kubeconfig or "~/.kube/config", f"cannot load kubeconfig: {exc}") from None


def _inventory(args, out: Path) -> dict:
    """The inventory (discovered, or the given file), written to ``out/inventory.yaml``."""
    target = out / "inventory.yaml"
    if args.inventory:
        from .capture.filters import read_inventory
        inv = read_inventory(args.inventory)
        shutil.copyfile(args.inventory, target)
        return inv
    import yaml

    from .classify.discover import discover
    inv = discover(args.kubeconfig, args.context).to_dict()
    target.write_text("# written by `commpath cluster capture` (inventory discover)\n"
                      + yaml.safe_dump(inv, sort_keys=False))
    return inv


def _ca_bundle(api_client, out: Path) -> Path | None:
    """The cluster CA the kubeconfig trusts, as ``out/pki/ca.crt`` (serving certificates are verified with it)."""
    ca = getattr(api_client.configuration, "ssl_ca_cert", None)
    if not ca or not Path(ca).exists():
        return None
    target = out / "pki" / "ca.crt"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca, target)
    return target


def main(args) -> int:
    from .capture.cluster import ClusterCapture, Plan

    say = lambda msg: print(f"cluster capture: {msg}", file=sys.stderr, flush=True)   # noqa: E731
    if args.cluster_command != "capture":
        raise CommpathError(f"cluster {args.cluster_command}: unknown action")
    duration = duration_seconds(args.duration)
    if duration <= 0 or args.max_size <= 0:
        raise CommpathError("--duration and --max-size must be positive")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(out, f"cannot create the run folder: {exc.strerror or exc}") from None
    t0 = time.monotonic()
    api = _api_client(args.kubeconfig, args.context)
    inv = _inventory(args, out)
    ca = _ca_bundle(api, out)
    cp_names = {str(h.get("name")) for h in inv.get("control_plane") or []}
    say(f"inventory: {len(cp_names)} control-plane hosts, {len(inv.get('nodes') or [])} nodes -> {out / 'inventory.yaml'}")
    plan = Plan(image=args.image, inventory_yaml=(out / "inventory.yaml").read_text(), duration=duration,
                namespace=args.namespace, pull_policy=args.image_pull_policy, max_size_mb=args.max_size,
                ifaces=list(args.iface), start_timeout=args.start_timeout)
    record: dict = {"apiVersion": "commpath/v1", "kind": "ClusterCapture", "run": plan.name, "namespace": plan.ns,
                    "image": plan.image, "duration_s": duration, "started": time.time()}
    try:
        with ClusterCapture(api, plan, say) as run:
            run.wait_capturing()
            run.wait_done()
            hosts = run.collect(out)
        timings = dict(run.timings)          # with the removal's
    except KeyboardInterrupt:
        say("interrupted: removed what it had created; nothing to analyse")
        return 130
    finally:
        api.close()
    captured = {h.node: h for h in hosts.values() if h.state == "done" and h.collected}
    cp_captured = [n for n, h in captured.items() if h.role == "control-plane"]
    unseen = [] if cp_captured else unseen_without_control_plane()
    record.update(
        hosts=[{"node": h.node, "role": h.role, "interfaces": h.interfaces, "state": h.state, "bytes": h.bytes,
                "files": h.collected, "error": h.error} for h in hosts.values()],
        control_plane_captured=bool(cp_captured), unseen_paths=unseen,
        timings={**{k: round(v, 1) for k, v in timings.items()}, "total_s": round(time.monotonic() - t0, 1)})
    (out / "cluster-capture.json").write_text(json.dumps(record, indent=1) + "\n")
    if unseen:
        say(f"no agent ran on a control-plane host ({'managed cluster' if not cp_names else 'not schedulable'}): "
            f"{', '.join(unseen)} cannot be seen from the nodes")
    if not captured:
        raise CommpathError("cluster capture: no host's capture could be collected")
    say(f"collected {len(captured)} hosts in {record['timings']['total_s']:.0f}s -> {out}")
    if args.no_analyze:
        return 0
    return analyse(out, ca, unseen, args.fail_on, say)


def analyse(out: Path, ca: Path | None, unseen: list[str], fail_on: str, say) -> int:
    """Analyse the run folder into ``out/analysis``; paths no captured host could see become not-observable."""
    from . import _pipeline
    from .present.console import summary_lines
    from .present.report import exit_code

    folders = sorted(p.parent for p in out.glob("*/manifest.json"))
    analysis = _pipeline.open(*folders, inventory=str(out / "inventory.yaml"), ca=str(ca) if ca else None,
                              progress=False)
    mark_unseen(analysis, unseen)
    _pipeline.write_outputs(analysis, out / "analysis")
    for line in summary_lines(analysis, fail_on):
        print(line, file=sys.stderr)
    say(f"analysis written to {out / 'analysis'}")
    return exit_code(analysis, fail_on)


def mark_unseen(analysis, unseen: list[str]) -> None:
    """The paths no captured host could see: ``not-observable`` (never ``not-observed``), named in the coverage."""
    if not unseen:
        return
    paths = analysis.paths
    rows = paths["id"].astype(str).isin(unseen) & ~paths["observed"].astype(bool)
    if rows.any():
        for col, value in (("verdict", "not-observable"),
                           ("needs", "a capture on a control-plane host (no agent ran on one)")):
            if hasattr(paths[col], "cat") and value not in paths[col].cat.categories:
                paths[col] = paths[col].cat.add_categories([value])
            paths.loc[rows, col] = value
    known = list(analysis.coverage.get("unseen_paths") or [])     # the ones the recorded filters drop
    analysis.coverage["unseen_paths"] = known + [p for p in unseen if p not in known]


def kubectl_plugin() -> None:
    """`kubectl commpath capture ...` (the kubectl-commpath executable): `commpath cluster capture ...`."""
    from .cli import run
    sys.argv = ["commpath", "cluster", *sys.argv[1:]]
    run()


__all__ = ["CONTROL_PLANE_ROLES", "duration_seconds", "kubectl_plugin", "main", "mark_unseen", "register",
           "unseen_without_control_plane"]

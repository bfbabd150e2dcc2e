"""`commpath probe --inventory FILE --out DIR`: the active probe of the inventory's endpoints (opt-in)."""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

from .errors import InputError

HELP = ("actively probe the inventory's apiserver, kubelet, read-only, Konnectivity and etcd endpoints "
        "(run from a host inside the cluster; connections are made)")


def register(sub, formatter_class=None) -> None:
    """The `probe` command's arguments."""
    import argparse
    p = sub.add_parser("probe", help=HELP, description=HELP,
                       formatter_class=formatter_class or argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--inventory", required=True, metavar="FILE", help="cluster inventory (YAML): the only addresses probed")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for probe.parquet and probe.json")
    p.add_argument("--ca", metavar="FILE", help="cluster CA bundle (PEM) (None: the inventory's ca_bundle)")
    p.add_argument("--etcd-ca", metavar="FILE", help="etcd's CA bundle when it has its own (kubeadm: pki/etcd/ca.crt)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="per connection and per answer")
    p.add_argument("--max-connections", type=int, default=400, metavar="N",
                   help="connections the whole run may open; targets left over are marked, not probed")
    p.add_argument("--parallel", type=int, default=4, metavar="N", help="targets probed at the same time")
    p.add_argument("--no-sweep", action="store_true", help="skip the TLS version and cipher sweep")
    p.add_argument("--quiet", "-q", action="store_true", help="no line per target on stderr")


def targets_of(inventory) -> list:
    """Every endpoint of the inventory to probe, each (address, port) once."""
    from .capture.probe import Target
    hosts = [*inventory.control_plane, *inventory.nodes]
    names = {a: (h.name, *h.addresses) for h in hosts for a in h.addresses}
    out: list[Target] = []

    def add(kind: str, address: str, port: int) -> None:
        host = inventory.host_name(address) or address
        out.append(Target(kind, host, address, int(port), names.get(address, ())))
    for address, port in inventory.apiserver_endpoints:
        add("apiserver", address, port)
    for h in hosts:
        if h.addresses:     # the host's first address: the kubelet listens on all of them
            add("kubelet", h.addresses[0], inventory.kubelet_port)
            if inventory.kubelet_readonly_port:
                add("kubelet-readonly", h.addresses[0], inventory.kubelet_readonly_port)
    if inventory.konnectivity_server:
        add("konnectivity-server", *inventory.konnectivity_server)
    for address, port in inventory.etcd:
        add("etcd", address, port)
    seen, unique = set(), []
    for t in out:
        if (t.address, t.port) not in seen:
            seen.add((t.address, t.port))
            unique.append(t)
    return unique


def _read(path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read {what}: {exc.strerror or exc}") from None


def main(args) -> int:
    """Probe, write the folder, print one line per target; exit 0 (2 on unusable input)."""
    from .capture.probe import Settings, run_probe
    from .capture.probe_table import write_probe_dir
    from .check.evidence import probe_said
    from .classify import load_inventory
    inv = load_inventory(args.inventory)
    ca = args.ca or (str(inv.ca_bundle) if inv.ca_bundle else None)
    settings = Settings(timeout=max(0.1, float(args.timeout)), ca_pem=_read(ca, "the CA bundle") if ca else None,
                        etcd_ca_pem=_read(args.etcd_ca, "the etcd CA bundle") if args.etcd_ca else None,
                        sweep=not args.no_sweep)
    targets = targets_of(inv)
    if not targets:
        raise InputError(args.inventory, "names no endpoint to probe (apiserver, hosts, konnectivity or etcd)")
    if args.max_connections < 1:
        raise InputError("--max-connections", "must be at least 1")
    started = _dt.datetime.now(_dt.timezone.utc)
    if not args.quiet:
        print(f"commpath probe: ACTIVE: connecting to {len(targets)} endpoints of {args.inventory} "
              f"(at most {args.max_connections} connections)", file=sys.stderr)

    def show(row: dict) -> None:
        if not args.quiet:
            print(f"  {row['target']}: {probe_said(row)}", file=sys.stderr)
    table, used = run_probe(targets, settings, max_connections=args.max_connections, parallel=args.parallel,
                            on_row=show)
    meta = {"schema": "commpath.probe/v1", "active": True,
            "note": "active probe: commpath opened connections to the inventory's endpoints",
            "inventory": str(args.inventory), "ca_bundle": ca, "started": started.isoformat(),
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(), "targets": len(targets),
            "connections": used, "max_connections": args.max_connections, "timeout_s": settings.timeout,
            "sweep": settings.sweep}
    write_probe_dir(table, meta, args.out)
    if not args.quiet:
        print(f"{len(table)} targets, {used} connections; written to {args.out}", file=sys.stderr)
    return 0


__all__ = ["main", "register", "targets_of"]

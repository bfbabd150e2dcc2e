"""One recorded run of the real lab: up (capturing from the start), exercise, stop, audit truth, down."""

from __future__ import annotations

import gzip
import shutil
import signal
import sys
import time
from pathlib import Path

import yaml

from .._topology import SERVICE_VIP
from . import _host, _konnectivity, _logtruth, _scenarios, _truth
from ._config import APISERVER_PORT, CLUSTER_CIDR
from ._exercise import Exerciser
from .cluster import ETCD_PORT, RealLab, _gateway


def record(lab: RealLab, out: Path, scenario: str = "default", probe_out: Path | None = None) -> dict:
    """Run the scenario into ``out`` and return its ground truth; the lab is torn down whatever happens.
    With ``probe_out``, `commpath probe` runs from the control-plane host once the capture has stopped (its own
    connections stay out of the recording) and writes its folder there, while the cluster is still up."""
    def on_term(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, on_term)
    out = Path(out)
    t0 = time.monotonic()
    try:
        lab.up(scenario, capture_out=out)
        t_up = time.monotonic() - t0
        done = Exerciser(lab).run()
        discover(lab, out / "inventory-discovered.yaml", done)
        packets = lab.stop_capture()
        lab.write_metadata(out)            # the inventory again, now with the allocated pod CIDRs
        if probe_out is not None:
            probe(lab, out / "inventory.yaml", Path(probe_out), done)
        with open(lab.state["audit_log"], "rb") as src, gzip.open(out / "audit.log.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)       # kept with the recording, a tenth of its size
        truth = ground_truth(lab, out, done)
        truth["capture"] = packets      # kernel drops, if any, explain a connection seen only in part
        truth["timings"] = {"up_seconds": round(t_up, 1), "run_seconds": round(time.monotonic() - t0, 1)}
        (out / "ground-truth.yaml").write_text(yaml.safe_dump(truth, sort_keys=False, width=120))
        return truth
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if (lab.dir / "logs").exists():    # the components' own logs go with the recording (kubelet, konnectivity)
            shutil.copytree(lab.dir / "logs", out / "logs", dirs_exist_ok=True)
        try:
            removed = lab.down()
            lab.log(f"down: removed {len(removed)} namespaces")
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)


def discover(lab: RealLab, target: Path, done: dict) -> None:
    """`commpath inventory discover` against the lab's real apiserver (run from the control-plane host)."""
    res = _host.run(lab.topo.control_plane.ns, [sys.executable, "-m", "commpath", "inventory", "discover",
                                                "--kubeconfig", str(lab.dir / "admin.kubeconfig"), "-o", str(target)],
                    check=False, timeout=120)
    if res.returncode != 0:
        done["errors"].append(f"inventory discover: exit {res.returncode}: {res.stderr.strip()[-300:]}")


def probe(lab: RealLab, inventory: Path, target: Path, done: dict) -> None:
    """`commpath probe --inventory INVENTORY --out TARGET` from the control-plane host (bounded by its timeouts)."""
    res = _host.run(lab.topo.control_plane.ns, [sys.executable, "-m", "commpath", "probe", "--inventory",
                                                str(inventory), "--out", str(target), "--timeout", "10"],
                    check=False, timeout=900)
    if res.returncode != 0:
        done["errors"].append(f"probe: exit {res.returncode}: {res.stderr.strip()[-300:]}")


def log_truth(lab: RealLab) -> _logtruth.LogTruth:
    """The kubelets' and the Konnectivity server's logs, read while the lab's state still names them."""
    year = time.gmtime(lab.state["created"]).tm_year
    procs = lab.state["procs"]
    kubelets = {n.name: _logtruth.kubelet_requests(Path(procs[f"{n.name}-kubelet"]["log"]), year)
                for n in lab.topo.nodes if f"{n.name}-kubelet" in procs}
    if "konnectivity-server" not in procs:
        return _logtruth.LogTruth(kubelets)
    sources = {n.ip for n in lab.topo.nodes} | {_gateway(n.pod_cidr) for n in lab.topo.nodes if n.pod_cidr}
    return _logtruth.LogTruth(kubelets, _logtruth.konnectivity_log(Path(procs["konnectivity-server"]["log"]), year),
                              f"{lab.topo.control_plane.ip}:{_konnectivity.AGENT_PORT}", sources)


def ground_truth(lab: RealLab, out: Path, done: dict) -> dict:
    from ...decode.engine import read

    topo = lab.topo
    cp = topo.control_plane
    flows = read(*[p.parent for p in sorted(out.glob("*/manifest.json"))]).flows
    audit = _truth.load_audit(out / "audit.log.gz")
    res = _truth.build(flows, audit, cp_ips={cp.ip}, nodes={n.name: n.ip for n in topo.nodes}, pod_cidr=CLUSTER_CIDR,
                       pods=done["pods"], apiserver=f"{cp.ip}:{APISERVER_PORT}", vip=f"{SERVICE_VIP}:443",
                       etcd=f"{cp.ip}:{ETCD_PORT}", logs=(logs := log_truth(lab)))
    paths = sorted({c["path"] for c in res["connections"]})
    sc = _scenarios.get(lab.state["scenario"])
    return {
        "apiVersion": "commpath/v1", "kind": "GroundTruth", "lab": lab.name, "scenario": f"real-{lab.state['scenario']}",
        "source": "kube-apiserver audit log (Metadata level), the kubelets' request logs and the Konnectivity "
                  "server's log, matched to captured connections; see commpath/lab/real/_truth.py for the rules",
        "release": lab.state["release"], "paths_observed": paths,
        "expected_findings": _truth.expected_findings(res["connections"], konnectivity=bool(sc.konnectivity),
                                                      tokens_from_nodes=_truth.node_credentials_without_certificate(
                                                          audit, {n.ip for n in topo.nodes}),
                                                      proxied=_truth.proxied_schemes(audit))
        + sc.configured_findings(set(paths))
        + sc.probed_findings(res["connections"], {n.name: n.ip for n in topo.nodes}),
        "absent_findings": [c for c in _truth.ABSENT_DEFAULT + sc.absent if c not in sc.allowed],
        "absent_with_probe": sc.probe_absent(),
        "pods": done["pods"], "actions": done["actions"], "errors": done["errors"],
        "audit_events": int(len(audit)), "audit_users": sorted(set(audit["user"])) if len(audit) else [],
        "connections": res["connections"], "unattributed": res["unattributed"],
        # what the apiserver sent through Konnectivity (the server's DIAL_REQ): the agents' own dials to a
        # kubelet on their node stay on its loopback, and pod ports are outside the nodes' capture filter
        "tunnelled_dials": [] if logs.konnectivity is None else
        [{"time": round(float(t), 6), "address": a} for t, a in logs.konnectivity.dials.itertuples(index=False)],
    }

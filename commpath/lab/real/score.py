"""Scores commpath's path labels on a real-lab recording against its audit-derived ground truth.

``python -m commpath.lab.real.score captures/real-default`` prints, for the lab's inventory, for an
inventory from ``commpath inventory discover`` (if the folder holds ``inventory-discovered.yaml``)
and for no inventory: connections in the truth, correctly labelled ones, and every mislabel.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


#: client_cert answers that claim nothing: judged neither right nor wrong against the audit log
NO_CLAIM = {"unknown", "nan", "<NA>", "None"}


def _ep(ip: str, port) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def score(folder: Path, inventory: Path | None) -> dict:
    """Per truth connection: the labels commpath gave its flows (both twins of a DNATed one)."""
    import commpath

    folder = Path(folder)
    truth = yaml.safe_load((folder / "ground-truth.yaml").read_text())
    ca = folder / "pki" / "ca.crt"
    a = commpath.open(*[p.parent for p in sorted(folder.glob("*/manifest.json"))],
                      inventory=inventory, ca=str(ca) if ca.exists() else None)
    labels: dict[tuple[str, str], set[str]] = {}
    certs: dict[tuple[str, str], set[str]] = {}
    for f in a.flows[["src_ip", "src_port", "dst_ip", "dst_port", "path", "client_cert"]].itertuples(index=False):
        key = (_ep(f.src_ip, f.src_port), _ep(f.dst_ip, f.dst_port))
        labels.setdefault(key, set()).add(str(f.path))
        certs.setdefault(key, set()).add(str(f.client_cert))
    right, wrong, missing = 0, [], []
    for c in truth["connections"]:
        got = labels.get((c["src"], c["dst"]), set()) | labels.get((c["src"], c.get("dst_after_nat")), set())
        if not got:
            missing.append(c)
        elif got == {c["path"]}:
            right += 1
        else:
            wrong.append({"src": c["src"], "dst": c["dst"], "truth": c["path"], "commpath": sorted(got)})
    cert_right, cert_wrong, cert_unknown = 0, [], []
    for c in truth["connections"]:        # the client-certificate inference against the audit log's credential
        want = {"x509": "presented", "token": "absent", "none": "absent"}.get(c.get("credential", ""))
        if want is None:
            continue                      # several identities with different credentials used that address then
        got = certs.get((c["src"], c["dst"]), set()) | certs.get((c["src"], c.get("dst_after_nat")), set())
        if got and all(g.endswith(want) for g in got):
            cert_right += 1
        elif got <= NO_CLAIM:             # commpath said it cannot tell (e.g. a flight lost by the capture)
            cert_unknown.append({"src": c["src"], "dst": c["dst"], "credential": c["credential"],
                                 "commpath": sorted(got)})
        else:
            cert_wrong.append({"src": c["src"], "dst": c["dst"], "credential": c["credential"], "commpath": sorted(got)})
    total = len(truth["connections"])
    findings = sorted({(str(r.check), str(r.path), str(r.severity)) for r in a.findings.itertuples()})
    return {"connections": total, "right": right, "wrong": wrong, "not_seen": len(missing),
            "accuracy": right / total if total else 0.0, "findings": findings,
            "client_cert": {"right": cert_right, "wrong": cert_wrong, "unknown": cert_unknown}}


def main(argv: list[str] | None = None) -> int:
    folder = Path((argv or sys.argv[1:])[0])
    runs = {"lab inventory": folder / "inventory.yaml", "discovered inventory": folder / "inventory-discovered.yaml",
            "no inventory": None}
    for name, inv in runs.items():
        if inv is not None and not inv.exists():
            continue
        s = score(folder, inv)
        print(f"{name}: {s['right']}/{s['connections']} connections labelled as the audit truth says "
              f"({100 * s['accuracy']:.1f} %), {len(s['wrong'])} wrong, {s['not_seen']} not seen")
        cc = s["client_cert"]
        print(f"  client certificate (TLS 1.3 inference) vs the audit log's credential: {cc['right']}/"
              f"{cc['right'] + len(cc['wrong'])} right, {len(cc['unknown'])} undecided")
        for w in s["wrong"][:20]:
            print(f"  {w['src']} -> {w['dst']}: truth {w['truth']}, commpath {', '.join(w['commpath'])}")
        for f in s["findings"]:
            print(f"  finding {f[0]} on {f[1]} ({f[2]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

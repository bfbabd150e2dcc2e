"""Runs the check tests judge twice: with the column-wise engine and with the per-row oracle."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ROOT.parent / "shared/pcaps/public"
BUNDLED = ["default", "broken", "hardened", "legacy"]
#: public captures also judged with their first client as a pod (TLS and plaintext variety)
POD_TOO = {"tls-conn-with-extensions.pcap", "tls1_1.pcap", "tls13_wolfssl.pcap", "client-certificate.pcap",
           "certificate-request-failed.pcap", "h2c_ascii.pcap", "httpv1.pcap", "ssh2.pcap"}


def runs() -> list[tuple[str, dict]]:
    """(name, commpath.open keyword arguments) of every judged run."""
    out = []
    for name in BUNDLED:
        d = ROOT / "captures" / name
        for policy in ("default", "untrusted-network"):
            out.append((f"{name}/{policy}/full", {"inputs": [d], "inventory": d / "inventory.yaml",
                                                  "ca": d / "pki/ca.crt", "keylog": d / "keylog.txt",
                                                  "policy": policy}))
        out.append((f"{name}/default/inventory-only", {"inputs": [d], "inventory": d / "inventory.yaml"}))
        out.append((f"{name}/default/no-inventory", {"inputs": [d]}))
    for pcap in sorted(PUBLIC.rglob("*.pcap")):
        # an inventory making the first flow's responder the apiserver and its initiator a node
        # (or a pod), so the checks have something to judge
        for client in ("node", "pod") if pcap.name in POD_TOO else ("node",):
            out.append((f"public/{pcap.relative_to(PUBLIC)}/{client}", {"inputs": [pcap], "first_flow": client}))
    return out


def first_flow_inventory(pcap: Path, client: str, folder: Path) -> Path | None:
    """An inventory naming the first flow's responder as the apiserver and its initiator as ``client``."""
    import commpath
    flows = commpath.read(pcap).flows
    if flows.empty:
        return None
    f = flows.iloc[0]
    ep = f"[{f.dst_ip}]:{f.dst_port}" if ":" in f.dst_ip else f"{f.dst_ip}:{f.dst_port}"
    lines = [f'apiserver: {{endpoints: ["{ep}"]}}', f'control_plane: [{{name: cp, addresses: ["{f.dst_ip}"]}}]']
    if client == "node":
        lines.append(f'nodes: [{{name: n1, addresses: ["{f.src_ip}"]}}]')
    else:
        lines.append(f'pod_cidrs: ["{f.src_ip}/{128 if ":" in f.src_ip else 32}"]')
    path = folder / "inventory.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def flagged(findings) -> dict[str, list[int]]:
    """``"check path" -> sorted flow ids`` over all findings."""
    out: dict[str, set[int]] = {}
    for check, path, ids in zip(findings["check"].astype(str), findings["path"].astype(str), findings["flow_ids"]):
        out.setdefault(f"{check} {path}", set()).update(int(i) for i in ids)
    return {k: sorted(v) for k, v in sorted(out.items())}


def run(kwargs: dict, folder: Path):
    """commpath.open on one run's inputs (``folder`` holds a generated inventory)."""
    import commpath
    kw = {k: (str(v) if isinstance(v, Path) else v) for k, v in kwargs.items() if k not in ("inputs", "first_flow")}
    if "first_flow" in kwargs:
        kw["inventory"] = first_flow_inventory(kwargs["inputs"][0], kwargs["first_flow"], folder)
    return commpath.open(*[str(p) for p in kwargs["inputs"]], **kw)


def per_row(analysis, kwargs: dict):
    """(findings, paths) of the per-row oracle on the analysis' classified flows."""
    from _per_row_engine import evaluate
    return evaluate(analysis.flows, analysis.tls, analysis.certs, analysis.policy, analysis.inventory,
                    tls_known=analysis.tls_analyzed, keylog_given=kwargs.get("keylog") is not None)

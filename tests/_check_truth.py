"""Which connections each check flags on each path: the per-row truth findings are checked against.

``python tests/_check_truth.py`` records it (``tests/fixtures/check_truth.json``) from the engine
that is installed; the check tests compare the current engine's findings with the stored record.
The record was made with the per-row engine (before findings were aggregated per connection key).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ROOT.parent / "shared/pcaps/public"
TRUTH = ROOT / "tests/fixtures/check_truth.json"
BUNDLED = ["default", "broken", "hardened", "legacy"]


def runs() -> list[tuple[str, dict]]:
    """(name, commpath.open keyword arguments) of every recorded run."""
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
        out.append((f"public/{pcap.relative_to(PUBLIC)}", {"inputs": [pcap]}))
        # with an inventory making the first flow's responder the apiserver and its initiator a
        # node (or a pod), so the TLS checks have something to judge
        for client in ("node", "pod"):
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


def truth_of(analysis) -> dict:
    return {"flagged": flagged(analysis.findings),
            "verdicts": dict(zip(analysis.paths["id"].astype(str), analysis.paths["verdict"].astype(str)))}


def run(kwargs: dict, folder: Path):
    """commpath.open on one recorded run's inputs (``folder`` holds a generated inventory)."""
    import commpath
    kw = {k: (str(v) if isinstance(v, Path) else v) for k, v in kwargs.items() if k not in ("inputs", "first_flow")}
    if "first_flow" in kwargs:
        kw["inventory"] = first_flow_inventory(kwargs["inputs"][0], kwargs["first_flow"], folder)
    return commpath.open(*[str(p) for p in kwargs["inputs"]], **kw)


def main() -> int:
    import tempfile
    record = {}
    folder = Path(tempfile.mkdtemp(prefix="check-truth-"))
    for name, kwargs in runs():
        try:
            record[name] = truth_of(run(kwargs, folder))
        except Exception as exc:  # a capture the decoder refuses is recorded as such
            record[name] = {"error": type(exc).__name__}
        print(name, len(record[name].get("flagged", {})), file=sys.stderr)
    TRUTH.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

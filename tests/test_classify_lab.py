"""Labelled lab captures: path labels with 100% precision and recall, and exactly the expected findings.

Parametrized over every ``captures/<scenario>/ground-truth.yaml`` in the repository (the set grows
as the lab records more), and — as root — over fresh `commpath lab run` recordings of each scenario.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import commpath
from commpath.check.policy import SEVERITY_RANK

REPO = Path(__file__).resolve().parents[1]
LABELLED = sorted(p.parent for p in (REPO / "captures").glob("*/ground-truth.yaml"))


def _ep(ip: str, port) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def check_labelled_capture(folder: Path, use_inventory: bool = True) -> dict:
    """Assert the classification and findings of one labelled capture folder against its ground truth.

    ``use_inventory=False`` checks the path labels that role inference alone gives (findings then
    depend on facts only the inventory states, e.g. that Konnectivity is enabled, and are not compared).
    """
    truth = yaml.safe_load((folder / "ground-truth.yaml").read_text())
    inventory = folder / "inventory.yaml"
    keylog = folder / "keylog.txt"
    modes = [("without-keylog", None)] + ([("with-keylog", keylog)] if keylog.is_file() and use_inventory else [])
    stats = {}
    for mode, kl in modes:
        a = commpath.open(folder, inventory=inventory if inventory.is_file() and use_inventory else None,
                          keylog=str(kl) if kl else None)
        label: dict[tuple[str, str], str] = {}
        for c in truth["connections"]:
            label[(c["src"], c["dst"])] = c["path"]
            if c.get("dst_after_nat"):
                label[(c["src"], c["dst_after_nat"])] = c["path"]
        found: dict[int, set[str]] = {}
        right = wrong = 0
        mistakes = []
        for f in a.flows.itertuples():
            key = (_ep(f.src_ip, f.src_port), _ep(f.dst_ip, f.dst_port))
            if key not in label:
                continue   # not one of the lab's own connections (e.g. etcd's internal loopback)
            if str(f.path) == label[key]:
                right += 1
            else:
                wrong += 1
                mistakes.append((key, label[key], str(f.path)))
            for c in truth["connections"]:
                if (c["src"], c["dst"]) == key or (c["src"], c.get("dst_after_nat")) == key:
                    found.setdefault(c["id"], set()).add(str(f.path))
        missed = [c for c in truth["connections"] if c["path"] not in found.get(c["id"], set())]
        precision = right / (right + wrong) if right + wrong else 0.0
        recall = 1 - len(missed) / len(truth["connections"]) if truth["connections"] else 1.0
        assert not mistakes, f"{folder.name} ({mode}): wrong labels {mistakes[:5]}"
        assert not missed, f"{folder.name} ({mode}): connections without a correctly labelled flow {missed[:3]}"
        assert precision == 1.0 and recall == 1.0
        stats[mode] = {"flows": len(a.flows), "labelled": right, "precision": precision, "recall": recall}
        if not use_inventory:
            continue

        produced = {(str(r.check), str(r.path)) for r in a.findings.itertuples()}
        produced_checks = {c for c, _ in produced}
        expected = {(e["check"], e["path"]) for e in truth["expected_findings"] if e["when"] in ("always", mode)}
        missing = expected - produced
        assert not missing, f"{folder.name} ({mode}): expected findings not produced {sorted(missing)}"
        forbidden = produced_checks & set(truth.get("absent_findings", []))
        assert not forbidden, f"{folder.name} ({mode}): findings that must be absent {sorted(forbidden)}"
        # no others: everything above info is expected; info findings only say what could not be seen
        sev = {(str(r.check), str(r.path)): str(r.severity) for r in a.findings.itertuples()}
        extra = {k for k in produced - expected if SEVERITY_RANK[sev[k]] > SEVERITY_RANK["info"]}
        assert not extra, f"{folder.name} ({mode}): unexpected findings {sorted(extra)}"
        assert {c for c, _ in produced - expected} <= {"cert-not-observable"}
        stats[mode]["findings"] = sorted(produced)
    return stats


@pytest.mark.parametrize("folder", LABELLED, ids=[p.name for p in LABELLED])
def test_labelled_capture_in_repo(folder):
    check_labelled_capture(folder)
    check_labelled_capture(folder, use_inventory=False)    # roles inferred from the traffic alone


#: checks that no public capture can show; only a lab scenario that plants them proves they fire
LAB_ONLY_CHECKS = ("konnectivity-direction", "tls-required")


def test_lab_only_checks_fire_where_a_scenario_plants_them_and_nowhere_else():
    planted = {check: [] for check in LAB_ONLY_CHECKS}
    fired = {check: [] for check in LAB_ONLY_CHECKS}
    for folder in LABELLED:
        truth = yaml.safe_load((folder / "ground-truth.yaml").read_text())
        a = commpath.open(folder, inventory=folder / "inventory.yaml")
        produced = set(a.findings["check"].astype(str))
        for check in LAB_ONLY_CHECKS:
            if check in {e["check"] for e in truth["expected_findings"]}:
                planted[check].append(folder.name)
            if check in produced:
                fired[check].append(folder.name)
    for check in LAB_ONLY_CHECKS:
        assert planted[check], f"no bundled lab scenario plants {check}"
        assert fired[check] == planted[check], check


def _lab_scenarios() -> list[str]:
    from commpath.lab.scenarios import SCENARIOS
    return list(SCENARIOS)


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 (netns)")
@pytest.mark.parametrize("scenario", _lab_scenarios())
def test_fresh_lab_recording(tmp_path, scenario):
    """Record the scenario now (the lab always tears itself down) and check it like a shipped capture."""
    name = f"cpt{secrets.token_hex(3)}"
    out = tmp_path / scenario
    try:
        res = subprocess.run([sys.executable, "-m", "commpath", "lab", "run", "--scenario", scenario, "--out", str(out),
                              "--name", name], capture_output=True, text=True,
                             timeout=1200)   # a hang guard: the first run builds the Go peers, slow when loaded
    finally:
        subprocess.run([sys.executable, "-m", "commpath", "lab", "down", "--name", name], capture_output=True,
                       text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    stats = check_labelled_capture(out)
    inferred = check_labelled_capture(out, use_inventory=False)     # roles inferred from the traffic alone
    assert inferred["without-keylog"]["precision"] == 1.0
    assert stats["without-keylog"]["labelled"] >= len(yaml.safe_load((out / "ground-truth.yaml").read_text())["connections"])

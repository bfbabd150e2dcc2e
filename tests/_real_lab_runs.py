"""One real-lab recording per scenario and test session (probed before tear-down), shared by the real-lab tests."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

#: scenario -> (recording folder, ground truth, probe folder), or the reason its run failed (not retried: minutes each)
_RUNS: dict[str, tuple[Path, dict, Path] | str] = {}


def leftovers(name: str) -> list[str]:
    """Namespaces, mounts and cgroups of the lab ``name`` still present."""
    left = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
            if n.startswith(name + "-")]
    left += [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
             if f"/commpath-real/{name}" in line.split()[4]]
    left += [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/commpath-{name}-*")]
    return left


def _run(scenario: str, base: Path) -> tuple[Path, dict, Path] | str:
    name = f"rk{secrets.token_hex(3)}"
    out, probe = base / "rec", base / "probe"
    try:
        res = subprocess.run([sys.executable, "-m", "commpath", "lab", "run", "--kind", "real", "--scenario", scenario,
                              "--out", str(out), "--name", name, "--probe", str(probe)],
                             capture_output=True, text=True, timeout=3400, cwd=REPO)
    finally:
        subprocess.run([sys.executable, "-m", "commpath", "lab", "down", "--kind", "real", "--name", name],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    if res.returncode != 0:
        return f"lab run --kind real --scenario {scenario}: exit {res.returncode}: {res.stderr[-3000:]}"
    left = leftovers(name)
    if left:
        return f"real lab {name} left {left}"
    truth = yaml.safe_load((out / "ground-truth.yaml").read_text())
    if truth["errors"]:
        return f"real lab {scenario}: {truth['errors']}"
    return out, truth, probe


def recording(scenario: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    """`commpath lab run --kind real --scenario S --probe DIR` once per session: the lab is torn down and leaves
    nothing; returns the recording folder, its ground truth and the probe's folder."""
    if scenario not in _RUNS:
        _RUNS[scenario] = _run(scenario, tmp_path_factory.mktemp(f"real-{scenario}"))
    run = _RUNS[scenario]
    if isinstance(run, str):
        pytest.fail(run, pytrace=False)
    return run

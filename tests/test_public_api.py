"""The public API: ``commpath.__all__`` is sorted and complete, and every shipped YAML file validates."""

from __future__ import annotations

import inspect
import subprocess
import sys
from importlib import resources

import pytest

import commpath
from commpath.check import load_checks, load_policy
from commpath.check.policy import builtin_policies
from commpath.classify.catalog import load_catalog
from commpath.classify._yamldoc import load_yaml


def test_all_is_sorted():
    assert commpath.__all__ == sorted(commpath.__all__)


def test_every_public_name_is_exported_and_every_export_resolves():
    for name in commpath.__all__:
        assert getattr(commpath, name) is not None, name
    public = {n for n, v in vars(commpath).items() if not n.startswith("_") and not inspect.ismodule(v)}
    assert public <= set(commpath.__all__)


def test_import_commpath_stays_light():
    """``import commpath`` (and ``commpath.read``) must not load pandas: `commpath flows` starts in 0.1 s."""
    code = "import sys, commpath; commpath.read; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


SHIPPED = sorted(str(p.relative_to(resources.files("commpath"))) for p in
                 resources.files("commpath").joinpath("cfg").rglob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_yaml_file_loads_and_validates(name):
    """Each file is read by the loader of its ``kind``, which checks every key (file, line, key on error)."""
    file = resources.files("commpath") / name
    kind = load_yaml(name, file.read_text(encoding="utf-8")).data.get("kind")
    if kind == "Catalog":
        assert load_catalog()["paths"]
    elif kind == "Checks":
        assert load_checks()
    elif kind == "Policy":
        assert name.split("/")[-1].removesuffix(".yaml") in builtin_policies()
        assert load_policy(str(file)).enabled_checks()
    elif kind == "HostSettings":
        from commpath.capture.host_settings import load as load_host_settings
        assert load_host_settings().components["kubelet"].settings
    elif kind == "RequestKinds":
        from commpath.classify.requests import load_request_kinds
        assert load_request_kinds()["kinds"]
    else:
        pytest.fail(f"{name}: no loader validates kind {kind!r}")


def test_the_shipped_files_are_all_found():
    assert {"cfg/catalog.yaml", "cfg/checks.yaml", "cfg/policies/default.yaml"} <= set(SHIPPED)


def test_the_contributor_page_policy_and_kinds_are_real(tmp_path):
    """docs/extending.md: its example policy validates and the test kinds it lists exist."""
    from pathlib import Path

    from commpath.check.kinds import TESTS
    page = (Path(__file__).resolve().parents[1] / "docs" / "extending.md").read_text(encoding="utf-8")
    block = next(b for b in page.split("```yaml")[1:] if "kind: Policy" in b).split("```")[0]
    policy_file = tmp_path / "my-cluster.yaml"
    policy_file.write_text(block, encoding="utf-8")
    policy = load_policy(str(policy_file))
    assert policy.name == "my-cluster"
    listed = page.split("When an existing test kind fits (")[1].split(")")[0]
    kinds = [k.strip(" `\n") for k in listed.split(",")]
    assert kinds and set(kinds) == set(TESTS)

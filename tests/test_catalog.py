"""The path catalog and the checks quote the reference document verbatim, under the right section."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from commpath.check import catalog_checks
from commpath.classify.catalog import judged_path_ids, load_catalog, path_ids
from commpath.cli import main as cli_main

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared/reference/control-plane-node-communication.md"
SPEC_PATHS = ["node-to-apiserver", "pod-to-apiserver", "control-plane-to-apiserver", "apiserver-to-kubelet",
              "apiserver-proxy", "ssh-tunnel", "konnectivity", "kubelet-readonly", "metrics-to-kubelet", "etcd",
              "unclassified", "other"]
SPEC_CHECKS = {"tls-required", "plaintext-proxy", "proxy-unverified-tls", "client-cert-missing",
               "server-cert-untrusted", "cert-expired", "tls-version-weak", "ssh-tunnel-deprecated",
               "konnectivity-bypass", "konnectivity-direction", "kubelet-readonly-port", "cert-not-observable"}
#: the document's section headings (plain lines in the stored copy)
HEADINGS = ["Communication between Nodes and the Control Plane", "Node to Control Plane", "Control plane to node",
            "API server to kubelet", "API server to nodes, pods, and services", "SSH tunnels", "Konnectivity service"]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")


@pytest.fixture(scope="module")
def sections() -> dict[str, str]:
    """anchor -> normalised text of that section (up to the next heading)."""
    lines = REFERENCE.read_text(encoding="utf-8").splitlines()
    out: dict[str, list[str]] = {}
    current = None
    for line in lines:
        if line.strip() in HEADINGS:
            current = _slug(line.strip())
            out.setdefault(current, [])
            continue
        if current:
            out[current].append(line)
    return {k: _norm(" ".join(v)) for k, v in out.items()}


def test_catalog_has_the_spec_paths_in_order():
    assert path_ids() == SPEC_PATHS
    assert "other" not in judged_path_ids()
    documented = [p["id"] for p in load_catalog()["paths"] if p["documented"]]
    assert documented == SPEC_PATHS[:7]


@pytest.mark.parametrize("entry", load_catalog()["paths"], ids=lambda p: p["id"])
def test_catalog_quotes_are_verbatim_in_their_section(entry, sections):
    ref = entry["reference"]
    assert ref["anchor"] in sections, f"unknown anchor {ref['anchor']}"
    for quote in [ref["quote"], *ref.get("also", [])]:
        assert _norm(quote) in sections[ref["anchor"]], quote
    for key in ("title", "initiator", "responder", "requirements", "remediation"):
        assert key in entry


@pytest.mark.parametrize("check", catalog_checks(), ids=lambda c: c["id"])
def test_checks_are_kube_bench_style_and_quote_the_document(check, sections):
    for key in ("id", "title", "severity", "paths", "reference", "remediation", "scored", "test"):
        assert key in check
    assert set(check["paths"]) <= set(SPEC_PATHS)
    assert _norm(check["reference"]["quote"]) in sections[check["reference"]["anchor"]]


def test_checks_cover_the_spec_ids_and_remediations_name_the_flags():
    checks = {c["id"]: c for c in catalog_checks()}
    assert SPEC_CHECKS <= set(checks)
    assert "--kubelet-certificate-authority" in checks["server-cert-untrusted"]["remediation"]
    assert "--kubelet-client-certificate" in checks["client-cert-missing"]["remediation"]
    assert "--read-only-port=0" in checks["kubelet-readonly-port"]["remediation"]
    assert "--egress-selector-config-file" in checks["konnectivity-bypass"]["remediation"]


@pytest.mark.parametrize("fmt", ["text", "json", "yaml"])
def test_paths_command_prints_the_catalog(fmt, capsys):
    assert cli_main(["paths", "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "json":
        assert [p["id"] for p in json.loads(out)["paths"]] == SPEC_PATHS
    elif fmt == "yaml":
        assert [p["id"] for p in yaml.safe_load(out)["paths"]] == SPEC_PATHS
    else:
        for pid in SPEC_PATHS:
            assert re.search(rf"^{pid}\s", out, re.M)
        assert "control-plane-node-communication.md#api-server-to-kubelet" in out

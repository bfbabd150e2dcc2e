"""deploy/: the capture DaemonSets are well-formed, least-privileged and run valid agent command lines."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from commpath.capture.cluster import CAPABILITIES
from commpath.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _docs():
    return [d for d in yaml.safe_load_all((DEPLOY / "daemonset.yaml").read_text()) if d]


def _daemonsets():
    return [d for d in _docs() if d["kind"] == "DaemonSet"]


def test_manifests_have_the_required_shape():
    docs = _docs()
    assert {d["kind"] for d in docs} == {"Namespace", "DaemonSet"}
    for d in docs:
        assert d["apiVersion"] in ("v1", "apps/v1") and d["metadata"]["name"]
    for ds in _daemonsets():
        spec = ds["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
        assert ds["metadata"]["namespace"] == "commpath-capture"


def test_least_privilege_host_network_and_host_path():
    for ds in _daemonsets():
        pod = ds["spec"]["template"]["spec"]
        assert pod["hostNetwork"] is True and pod["hostPID"] is True     # host_config read from the host's /proc
        (c,) = pod["containers"]
        sc = c["securityContext"]
        # the same capabilities `commpath cluster capture` gives its agents
        assert sc["capabilities"] == {"drop": ["ALL"], "add": CAPABILITIES}
        assert sc.get("privileged") is False and sc.get("allowPrivilegeEscalation") is False
        vols = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert vols["captures"]["hostPath"]["path"] == "/var/lib/commpath/captures"
        assert mounts["captures"] == "/captures"


def test_control_plane_taints_tolerated_and_roles_split():
    by_role = {ds["metadata"]["labels"]["commpath.io/role"]: ds for ds in _daemonsets()}
    assert set(by_role) == {"control-plane", "node"}
    cp = by_role["control-plane"]["spec"]["template"]["spec"]
    keys = {t.get("key") for t in cp["tolerations"]}
    assert {"node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"} <= keys
    node = by_role["node"]["spec"]["template"]["spec"]
    terms = node["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert all(e["operator"] == "DoesNotExist" for t in terms for e in t["matchExpressions"])


@pytest.mark.parametrize("role", ["control-plane", "node"])
def test_container_runs_a_valid_capture_command(role):
    ds = next(d for d in _daemonsets() if d["metadata"]["labels"]["commpath.io/role"] == role)
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    script = c["args"][0]
    first = script.split(";")[0].replace("$NODE_NAME", "node-x").replace("$DURATION", "600")
    argv = shlex.split(first)
    assert argv[0] == "commpath"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "capture" and args.role == role and args.out == "/captures/node-x"
    assert args.duration == 600 and args.ring and args.max_size
    assert "exec sleep" in script  # keeps the files for `kubectl cp` instead of restarting the capture

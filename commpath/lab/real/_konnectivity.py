"""Konnectivity in the real lab: the server on the control plane (the apiserver reaches it over a Unix socket
through its egress selector), an agent on every node (a DaemonSet) dialling the server's agent port with
mutual TLS."""

from __future__ import annotations

from pathlib import Path

import yaml

from .. import _procs
from ._images import KONNECTIVITY_AGENT_IMAGE

AGENT_PORT = 8132
ADMIN_PORT = 8133
HEALTH_PORT = 8134


def socket_path(lab) -> Path:
    return lab.dir / "konnectivity-server.socket"


def egress_config(lab, mode: str) -> Path:
    """The apiserver's --egress-selector-config-file: the `cluster` egress (nodes, pods, services) through the
    Konnectivity server, in gRPC or HTTP-CONNECT mode."""
    protocol = {"grpc": "GRPC", "http-connect": "HTTPConnect"}[mode]
    doc = {"apiVersion": "apiserver.k8s.io/v1beta1", "kind": "EgressSelectorConfiguration",
           "egressSelections": [{"name": "cluster", "connection": {
               "proxyProtocol": protocol, "transport": {"uds": {"udsName": str(socket_path(lab))}}}}]}
    path = lab.dir / "egress-selector.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def start_server(lab, mode: str) -> None:
    cp, pki = lab.topo.control_plane, lab.pki
    lab._spawn("konnectivity-server", cp.ns, [
        lab.state["bin"]["konnectivity-server"], f"--mode={mode}", f"--uds-name={socket_path(lab)}",
        "--delete-existing-uds-file", "--server-port=0",
        f"--cluster-cert={pki / 'konnectivity-server.crt'}", f"--cluster-key={pki / 'konnectivity-server.key'}",
        f"--cluster-ca-cert={lab.ca}", f"--agent-port={AGENT_PORT}", f"--agent-bind-address={cp.ip}",
        f"--admin-port={ADMIN_PORT}", "--admin-bind-address=127.0.0.1", f"--health-port={HEALTH_PORT}",
        "--health-bind-address=127.0.0.1", "--server-count=1", "--proxy-strategies=destHost,default",
        # --v=3: every agent connection and DIAL_REQ (the truth for the tunnelled connections)
        "--v=3"])
    p = lab.state["procs"]["konnectivity-server"]
    _procs.wait_for(Path(p["log"]), "Starting agent server", p["pid"], 120, "konnectivity-server")


def agent_manifests(lab) -> str:
    """The agents as kubeadm's guide runs them: a DaemonSet on the host network (so `commpath inventory discover`
    finds them and their --proxy-server-host), each with its node's client certificate from the lab's PKI."""
    cp = lab.topo.control_plane
    env = [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
           {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}]
    args = [f"--proxy-server-host={cp.ip}", f"--proxy-server-port={AGENT_PORT}", "--ca-cert=/pki/ca.crt",
            "--agent-cert=/pki/konnectivity-agent-$(NODE_NAME).crt",
            "--agent-key=/pki/konnectivity-agent-$(NODE_NAME).key", "--agent-id=$(NODE_NAME)",
            "--agent-identifiers=ipv4=$(HOST_IP)&host=$(NODE_NAME)", "--admin-bind-address=127.0.0.1",
            "--health-server-host=127.0.0.1", "--v=2"]
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "konnectivity-agent",
                                                                     "namespace": "kube-system"},
          "spec": {"selector": {"matchLabels": {"k8s-app": "konnectivity-agent"}}, "template": {
              "metadata": {"labels": {"k8s-app": "konnectivity-agent"}},
              "spec": {"hostNetwork": True, "terminationGracePeriodSeconds": 2,
                       "containers": [{"name": "konnectivity-agent", "image": KONNECTIVITY_AGENT_IMAGE,
                                       "imagePullPolicy": "Never", "command": ["/bin/konnectivity-agent"],
                                       "args": args, "env": env,
                                       "volumeMounts": [{"name": "pki", "mountPath": "/pki", "readOnly": True}]}],
                       "volumes": [{"name": "pki", "hostPath": {"path": str(lab.pki), "type": "Directory"}}]}}}}
    return yaml.safe_dump(ds, sort_keys=False)


def connected_agents(lab) -> set[str]:
    """Agent ids the server has logged as connected."""
    log = Path(lab.state["procs"]["konnectivity-server"]["log"])
    text = log.read_text(errors="replace") if log.exists() else ""
    return {line.split('agentID="', 1)[1].split('"', 1)[0] for line in text.splitlines()
            if '"Agent connected"' in line and 'agentID="' in line}

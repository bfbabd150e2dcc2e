"""metrics-server in the real lab: a pod scraping every kubelet's /metrics/resource (a kubelet client that is not
the apiserver), with the RBAC its upstream manifests grant."""

from __future__ import annotations

import yaml

from ._images import METRICS_SERVER_IMAGE

NAMESPACE = "kube-system"
NAME = "metrics-server"
SA_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
SCRAPE_PATH = "/metrics/resource"


def _rbac(kind: str, name: str, role_kind: str, role: str, namespace: str | None = None) -> dict:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]}


def manifests(verify_kubelet: bool) -> str:
    """ServiceAccount, RBAC and the Deployment; ``verify_kubelet``: the kubelets' serving certificates are checked
    against the cluster CA (else --kubelet-insecure-tls, as most installations run it)."""
    args = ["--cert-dir=/tmp", "--secure-port=4443", "--kubelet-preferred-address-types=InternalIP",
            "--kubelet-use-node-status-port", "--metric-resolution=15s", "--v=2"]
    args.append(f"--kubelet-certificate-authority={SA_CA}" if verify_kubelet else "--kubelet-insecure-tls")
    docs = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": f"system:{NAME}"},
         "rules": [{"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                   {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}]},
        _rbac("ClusterRoleBinding", f"system:{NAME}", "ClusterRole", f"system:{NAME}"),
        _rbac("ClusterRoleBinding", f"{NAME}:system:auth-delegator", "ClusterRole", "system:auth-delegator"),
        _rbac("RoleBinding", f"{NAME}-auth-reader", "Role", "extension-apiserver-authentication-reader", NAMESPACE),
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME, "namespace": NAMESPACE},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": NAME}}, "template": {
             "metadata": {"labels": {"app": NAME}},
             "spec": {"serviceAccountName": NAME, "terminationGracePeriodSeconds": 2,
                      "containers": [{"name": NAME, "image": METRICS_SERVER_IMAGE, "imagePullPolicy": "Never",
                                      "args": args, "ports": [{"containerPort": 4443}]}]}}}},
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)

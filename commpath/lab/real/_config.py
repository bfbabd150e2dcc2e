"""Configuration files of the real lab: PKI, kubeconfigs, audit policy, kubelet, kube-proxy, containerd, CNI."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .._pki import Authority
from .._topology import SERVICE_VIP

APISERVER_PORT = 6443
SERVICE_CIDR = "10.96.0.0/12"
CLUSTER_CIDR = "10.244.0.0/16"
AUDIT_POLICY = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
                "rules": [{"level": "Metadata"}]}


@dataclass(frozen=True)
class BootstrapToken:
    id: str
    secret: str

    @property
    def token(self) -> str:
        return f"{self.id}.{self.secret}"

    @classmethod
    def new(cls) -> BootstrapToken:
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        pick = lambda n: "".join(secrets.choice(alphabet) for _ in range(n))   # noqa: E731
        return cls(pick(6), pick(16))


def make_pki(d: Path, cp_ip: str, cp_name: str, nodes: list[str], konnectivity_agents: list[str] = ()) -> Authority:
    """The cluster CA and every certificate the components present (kubeadm's names and subjects);
    ``konnectivity_agents``: nodes whose Konnectivity agent authenticates with a client certificate."""
    ca = Authority(d, "kubernetes")
    if konnectivity_agents:
        ca.issue("konnectivity-server", "konnectivity-server", server=True, sans=[cp_ip, cp_name])
        for node in konnectivity_agents:
            ca.issue(f"konnectivity-agent-{node}", f"system:konnectivity-agent:{node}", client=True)
    ca.issue("apiserver", "kube-apiserver", server=True,
             sans=[cp_ip, SERVICE_VIP, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.cluster.local", cp_name])
    ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", org="kubeadm:cluster-admins", client=True)
    ca.issue("apiserver-etcd-client", "kube-apiserver-etcd-client", client=True)
    ca.issue("front-proxy-client", "front-proxy-client", client=True)
    ca.issue("etcd", cp_name, server=True, client=True, sans=[cp_ip, "127.0.0.1", cp_name])
    ca.issue("admin", "kubernetes-admin", org="system:masters", client=True)
    ca.issue("scheduler", "system:kube-scheduler", client=True)
    ca.issue("controller-manager", "system:kube-controller-manager", client=True)
    ca.issue("kube-proxy", "system:kube-proxy", client=True)
    for node in nodes:
        ca.issue(f"{node}-kubelet-client", f"system:node:{node}", org="system:nodes", client=True)
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (d / "sa.key").write_bytes(sa.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    (d / "sa.key").chmod(0o600)
    (d / "sa.pub").write_bytes(sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    return ca


def kubeconfig(path: Path, server: str, ca: Path, user: str, cert: Path | None = None, key: Path | None = None,
               token: str | None = None) -> Path:
    creds: dict = {"client-certificate": str(cert), "client-key": str(key)} if cert else {"token": token}
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "lab",
           "clusters": [{"name": "lab", "cluster": {"server": server, "certificate-authority": str(ca)}}],
           "users": [{"name": user, "user": creds}],
           "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": user}}]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


def kubelet_config(path: Path, *, node_ip: str, ca: Path, runtime_sock: Path, cgroup_root: str, pod_logs: Path,
                   server_tls_bootstrap: bool = False, read_only_port: int = 0,
                   serving_cert: tuple[Path, Path] | None = None, rotate_certificates: bool = True) -> Path:
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": node_ip, "port": 10250, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(ca)}},
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs", "cgroupRoot": cgroup_root, "failCgroupV1": False, "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{runtime_sock}", "podLogsDir": str(pod_logs),
        "clusterDomain": "cluster.local", "resolvConf": "",
        "rotateCertificates": rotate_certificates, "serverTLSBootstrap": server_tls_bootstrap,
        # the kubelet only reads these kernel settings: the lab shows it the values it wants (see _node.py)
        "protectKernelDefaults": True,
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "nodeStatusUpdateFrequency": "10s", "syncFrequency": "10s",
        "registerNode": True, "maxPods": 20,
    }
    doc["readOnlyPort"] = read_only_port
    if serving_cert:
        doc["tlsCertFile"], doc["tlsPrivateKeyFile"] = str(serving_cert[0]), str(serving_cert[1])
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def kube_proxy_config(path: Path, *, kubeconfig_path: Path, node: str) -> Path:
    doc = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "iptables", "clientConnection": {"kubeconfig": str(kubeconfig_path)},
        "hostnameOverride": node, "clusterCIDR": CLUSTER_CIDR,
        "metricsBindAddress": "127.0.0.1:10249", "healthzBindAddress": "127.0.0.1:10256",
        # conntrack tables are the host kernel's: never resize them from a lab namespace
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s",
                      "udpTimeout": "0s", "udpStreamTimeout": "0s"},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def containerd_config(path: Path, *, root: Path, state: Path, sock: Path, cni_conf: Path, pause_image: str) -> Path:
    path.write_text(f"""version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # without CAP_SYS_RESOURCE (sandboxed machines) runc cannot lower a process's OOM score below ours
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
""")
    return path


def cni_config(conf_dir: Path, *, node: str, pod_cidr: str, ipam_dir: Path) -> Path:
    conf_dir.mkdir(parents=True, exist_ok=True)
    doc = {"cniVersion": "0.4.0", "name": f"lab-{node}", "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_cidr}]], "dataDir": str(ipam_dir),
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "loopback"}]}
    path = conf_dir / "10-lab.conflist"
    path.write_text(json.dumps(doc, indent=1))
    return path


def bootstrap_manifests(token: BootstrapToken, nodes_by_token: bool = False) -> str:
    """The bootstrap token secret and the RBAC bindings kubeadm creates for kubelet TLS bootstrap;
    ``nodes_by_token``: the bootstrap group may also act as a node (RBAC's system:node role, as clusters
    that let a kubelet keep its bootstrap token must grant), the `broken` scenario's misconfiguration."""
    docs = [
        {"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
         "metadata": {"name": f"bootstrap-token-{token.id}", "namespace": "kube-system"},
         "stringData": {"token-id": token.id, "token-secret": token.secret, "usage-bootstrap-authentication": "true",
                        "usage-bootstrap-signing": "true", "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token"}},
        _binding("kubeadm:kubelet-bootstrap", "system:node-bootstrapper", "system:bootstrappers:kubeadm:default-node-token"),
        _binding("kubeadm:node-autoapprove-bootstrap", "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                 "system:bootstrappers:kubeadm:default-node-token"),
        _binding("kubeadm:node-autoapprove-certificate-rotation",
                 "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "system:nodes"),
        # the apiserver's kubelet client (CN kube-apiserver-kubelet-client) may use the kubelet API
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "lab:apiserver-kubelet-client"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:kubelet-api-admin"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "kube-apiserver-kubelet-client"}]},
    ]
    if nodes_by_token:
        docs.append(_binding("lab:bootstrap-token-as-node", "system:node",
                             "system:bootstrappers:kubeadm:default-node-token"))
    return yaml.safe_dump_all(docs, sort_keys=False)


def _binding(name: str, role: str, group: str) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]}

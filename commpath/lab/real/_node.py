"""A worker host of the real lab: its own containerd (socket, root, state, CNI), kubelet and kube-proxy."""

from __future__ import annotations

from pathlib import Path

from .._topology import Host
from . import _config, _host
from ._images import PAUSE_IMAGE

READ_ONLY_PORT = 10255


def stop_rank(key: str) -> int:
    """Teardown order: node agents and captures, then controllers, apiserver, runtimes, etcd."""
    if key.startswith("capture") or key.endswith(("-kubelet", "-kube-proxy")):
        return 0
    if key in ("kube-controller-manager", "kube-scheduler", "konnectivity-server"):
        return 1
    if key == "kube-apiserver":
        return 2
    return 3 if key.endswith("-containerd") else 4


def start_node(lab, node: Host, images: dict[str, Path], sc) -> None:
    d = lab.dir / node.name
    d.mkdir(parents=True, exist_ok=True)
    b = lab.state["bin"]
    sock = d / "containerd.sock"
    cni_dir = d / "cni"
    cni_dir.mkdir(parents=True, exist_ok=True)     # its config is written once the node has a pod CIDR
    cfg = _config.containerd_config(d / "containerd.toml", root=d / "containerd" / "root",
                                    state=d / "containerd" / "state", sock=sock, cni_conf=cni_dir,
                                    pause_image=PAUSE_IMAGE)
    key = f"{node.name}-containerd"
    lab._spawn(key, node.ns, ["containerd", "--config", str(cfg)])
    ctr = ["ctr", "--address", str(sock), "--namespace", "k8s.io"]
    _host.wait_until(lambda: _host.run(node.ns, [*ctr, "version"], check=False, timeout=30).returncode == 0,
                     90, f"{node.name} containerd", alive=lab._alive(key))
    for archive in images.values():
        _host.run(node.ns, [*ctr, "images", "import", str(archive)], timeout=120)
    listed = _host.run(node.ns, [*ctr, "images", "list", "-q"], timeout=60).stdout.split()
    missing = [name for name in images if not any(line.endswith(name) for line in listed)]
    if missing:
        from ...errors import CommpathError
        raise CommpathError(f"real lab: {node.name}: images not imported: {missing} (have {listed})")

    root = lab.cgroup_root(node.name)
    _host.make_cgroup_root(root)
    kcfg = _config.kubelet_config(d / "kubelet.yaml", node_ip=node.ip, ca=lab.ca, runtime_sock=sock,
                                  cgroup_root=f"/{root}", pod_logs=d / "pods-logs",
                                  server_tls_bootstrap=sc.server_tls_bootstrap,
                                  read_only_port=READ_ONLY_PORT if node.name in sc.read_only_nodes else 0,
                                  serving_cert=(lab.pki / f"{node.name}-kubelet-serving-expired.crt",
                                                lab.pki / f"{node.name}-kubelet-serving-expired.key")
                                  if node.name in sc.expired_serving_nodes else None,
                                  # a kubelet that keeps its token must not obtain a client certificate by itself
                                  rotate_certificates=node.name not in sc.token_nodes)
    kubeconfig = d / "kubelet.kubeconfig"
    cmd = [b["kubelet"], f"--config={kcfg}", f"--kubeconfig={kubeconfig}", f"--cert-dir={d / 'kubelet-pki'}",
           f"--root-dir={d / 'kubelet'}", f"--hostname-override={node.name}", f"--node-ip={node.ip}", "--v=2",
           # every request the kubelet serves, with its client's address and port (truth for metrics-server)
           "--vmodule=httplog=3"]
    from .cluster import BOOTSTRAP_NODES
    if node.name in sc.token_nodes:           # the bootstrap token as its only credential, for good
        cmd[2] = f"--kubeconfig={lab.dir / 'bootstrap.kubeconfig'}"
    elif node.name in BOOTSTRAP_NODES:
        cmd.append(f"--bootstrap-kubeconfig={lab.dir / 'bootstrap.kubeconfig'}")
    else:
        _config.kubeconfig(kubeconfig, f"https://{lab.topo.control_plane.ip}:{_config.APISERVER_PORT}", lab.ca,
                           f"system:node:{node.name}", lab.pki / f"{node.name}-kubelet-client.crt",
                           lab.pki / f"{node.name}-kubelet-client.key")
    lab._spawn(f"{node.name}-kubelet", node.ns, [], raw=_host.kubelet_command(node.ns, cmd, d / "sysctl"))
    pcfg = _config.kube_proxy_config(d / "kube-proxy.yaml", kubeconfig_path=lab.dir / "kube-proxy.kubeconfig",
                                     node=node.name)
    lab._spawn(f"{node.name}-kube-proxy", node.ns, [b["kube-proxy"], f"--config={pcfg}", "--v=2"])

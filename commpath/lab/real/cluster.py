"""The real lab: upstream Kubernetes components in network namespaces, brought up and torn down.

Topology (as the emulated lab's): a switch namespace with a bridge, a control-plane host ``cp1``
(etcd, kube-apiserver, kube-controller-manager, kube-scheduler) and worker hosts ``node1``,
``node2`` (containerd, kubelet, kube-proxy; pods behind the CNI bridge ``cni0``). node1's kubelet
joins by TLS bootstrap (bootstrap token, CSR approved by the controller-manager, signed client
certificate); node2's kubelet is given a client certificate. Everything the lab starts is recorded
in its state file, and :meth:`RealLab.down` removes processes, pod namespaces, mounts and cgroups
also after a crash.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import yaml

from ...errors import CommpathError
from .. import _procs, _topology
from .._topology import SERVICE_VIP, Host, Topology, nsexec
from . import _build, _config, _host, _images, _konnectivity, _metrics, _scenarios
from ._config import APISERVER_PORT, CLUSTER_CIDR, SERVICE_CIDR

STATE_ROOT = Path(os.environ.get("COMMPATH_REAL_STATE", "/run/commpath-real"))
ETCD_PORT = 2379
KUBELET_PORT = 10250
BOOTSTRAP_NODES = ("node1",)      # these kubelets join by TLS bootstrap; the others get a client certificate
#: kernel capture buffer per interface (MB): the control plane's loopback carries etcd and every local client
CAPTURE_BUFFER_MB = {"control-plane": 64, "node": 16}
CAPTURE_DURATION = 3600.0         # a bound: the lab stops its captures itself
CAPTURE_START_TIMEOUT = 180.0     # a loaded machine takes long to start Python and tcpdump
CAPTURE_STOP_TIMEOUT = 120.0      # the agent writes its manifest after tcpdump has flushed


def plan(prefix: str, nodes: int = 2, pod_cidrs: dict[str, str] | None = None) -> Topology:
    """Hosts and addresses; a node's pod CIDR is the one the controller-manager allocated (once known)."""
    hosts = [Host("cp1", "control-plane", f"{prefix}-cp1", "10.77.0.10")]
    for i in range(1, nodes + 1):
        name = f"node{i}"
        hosts.append(Host(name, "node", f"{prefix}-{name}", f"10.77.0.{20 + i}", pod_cidr=(pod_cidrs or {}).get(name)))
    return Topology(prefix, hosts)


def _gateway(cidr: str) -> str:
    return str(next(ipaddress.ip_network(cidr).hosts()))


class RealLab:
    """One real cluster, named by its namespace prefix; its state lives in STATE_ROOT/<name>."""

    def __init__(self, name: str = "k8slab", state_root: Path | None = None, log=None):
        if not name.replace("-", "").isalnum() or len(name) > 16:
            raise CommpathError(f"real lab: --name {name!r}: use up to 16 letters, digits and dashes")
        self.name = name
        self.dir = Path(state_root or STATE_ROOT) / name
        self.log = log or (lambda msg: print(f"real-lab: {msg}", file=sys.stderr, flush=True))
        sf = self.dir / "state.json"
        self.state = json.loads(sf.read_text()) if sf.exists() else {}

    # ------------------------------------------------------------------ state and helpers
    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "state.json").write_text(json.dumps(self.state, indent=1))

    @property
    def topo(self) -> Topology:
        return plan(self.name, self.state.get("nodes", 2), self.state.get("pod_cidrs"))

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def ca(self) -> Path:
        return self.pki / "ca.crt"

    def cgroup_root(self, node: str) -> str:
        return f"commpath-{self.name}-{node}"

    def _spawn(self, key: str, ns: str, cmd: list[str], raw: list[str] | None = None) -> int:
        log = self.dir / "logs" / f"{key}.log"
        pid = _host.spawn_raw(raw, log) if raw else _host.spawn(ns, cmd, log)
        self.state.setdefault("procs", {})[key] = {"pid": pid, "ns": ns, "log": str(log)}
        self._save()
        return pid

    def _alive(self, key: str):
        pid = self.state["procs"][key]["pid"]
        return lambda: _procs.alive(pid)

    def kubectl(self, *args: str, timeout: float = 60, check: bool = True, input: str | None = None):
        cp = self.topo.control_plane
        cmd = [str(self.state["bin"]["kubectl"]), "--kubeconfig", str(self.dir / "admin.kubeconfig"), *args]
        return _host.run(cp.ns, cmd, timeout=timeout, check=check, input=input)

    # ------------------------------------------------------------------ up
    def up(self, scenario: str = "default", capture_out: Path | None = None, log_build=None) -> None:
        """Bring the cluster up; with ``capture_out`` the capture starts before any component does."""
        sc = _scenarios.get(scenario)
        if self.state:
            raise CommpathError(f"real lab: {self.name!r} is up already ({self.dir}); "
                                f"run `commpath lab down --kind real --name {self.name}`")
        if os.geteuid() != 0:
            raise CommpathError("real lab: needs root (network namespaces, containerd, cgroups)")
        for tool in ("ip", "nsenter", "unshare", "etcd", "containerd", "runc", "ctr", "iptables", "gcc"):
            if not shutil.which(tool):
                raise CommpathError(f"real lab: {tool} is not installed (scripts/setup.sh installs it)")
        if not Path("/usr/lib/cni/bridge").exists():
            raise CommpathError("real lab: CNI plugins missing (apt install containernetworking-plugins)")
        if _topology.existing_namespaces(self.name):
            raise CommpathError(f"real lab: namespaces with prefix {self.name!r} exist already; "
                                f"run `commpath lab down --kind real --name {self.name}`")
        bins = _build.binaries(log_build or self.log)
        t0 = time.monotonic()
        self.state = {"name": self.name, "scenario": scenario, "nodes": 2, "created": time.time(),
                      "release": _build.release(), "bin": {k: str(v) for k, v in bins.items()}}
        self._save()
        try:
            _host.share_mount(self.dir)
            self.state["shared_mount"] = True
            self._save()
            self._network()
            cp = self.topo.control_plane
            ca = _config.make_pki(self.pki, cp.ip, cp.name,
                                  [n.name for n in self.topo.nodes if n.name not in BOOTSTRAP_NODES + sc.token_nodes],
                                  [n.name for n in self.topo.nodes] if sc.konnectivity else [])
            for n in self.topo.nodes:
                if n.name in sc.expired_serving_nodes:
                    ca.issue(f"{n.name}-kubelet-serving-expired", n.name, server=True, sans=[n.ip, n.name],
                             expired=True)
            if capture_out:
                self.start_capture(Path(capture_out))
            self._control_plane(sc)
            images = _images.build_images(self.dir / "images", bins["labpod"], bins["metrics-server"],
                                          bins["konnectivity-agent"] if sc.konnectivity else None)
            for node in self.topo.nodes:
                self._node(node, images, sc)
            self._pod_network()
            want = {f"node/{n.name}" for n in self.topo.nodes}
            _host.wait_until(lambda: want <= set(self.kubectl("get", "nodes", "-o", "name", check=False).stdout.split()),
                             240, "node registration")
            if sc.server_tls_bootstrap:
                self._approve_serving_certificates()
            self.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=240s", timeout=260)
            self.kubectl("apply", "-f", "-", input=_metrics.manifests(sc.verify_kubelet))
            if sc.konnectivity:        # the apiserver reaches nodes only once every agent is connected
                self.kubectl("apply", "-f", "-", input=_konnectivity.agent_manifests(self))
                names = {n.name for n in self.topo.nodes}
                _host.wait_until(lambda: names <= _konnectivity.connected_agents(self), 240,
                                 "Konnectivity agents connected", alive=self._alive("konnectivity-server"))
        except BaseException:
            self.down()
            raise
        self.log(f"up: Kubernetes {self.state['release']}, {len(self.topo.nodes)} nodes ready "
                 f"in {time.monotonic() - t0:.0f}s")

    def _network(self) -> None:
        topo = self.topo
        _topology.wire_hosts(topo)
        for h in topo.hosts:
            # the service CIDR must be routable for local clients (kube-proxy DNATs after the route lookup)
            nsexec(h.ns, "ip", "route", "add", SERVICE_CIDR, "dev", "eth0")

    def _pod_network(self) -> None:
        """Once the controller-manager has given every node its pod CIDR: CNI configs and routes (flannel's job)."""
        def allocated():
            got = {}
            for n in self.topo.nodes:
                cidr = self.kubectl("get", "node", n.name, "-o", "jsonpath={.spec.podCIDR}", check=False).stdout.strip()
                if cidr:
                    got[n.name] = cidr
            return got if len(got) == len(self.topo.nodes) else None
        self.state["pod_cidrs"] = _host.wait_until(allocated, 240, "pod CIDR allocation")
        self._save()
        topo = self.topo
        for n in topo.nodes:
            d = self.dir / n.name
            _config.cni_config(d / "cni", node=n.name, pod_cidr=n.pod_cidr, ipam_dir=d / "ipam")
        for h in topo.hosts:
            for other in topo.nodes:
                if other is not h:
                    nsexec(h.ns, "ip", "route", "add", other.pod_cidr, "via", other.ip)

    def _approve_serving_certificates(self) -> None:
        """serverTLSBootstrap: the controller-manager signs kubelet-serving CSRs but never approves them (kubeadm
        leaves that to the administrator): approve each node's once it is there."""
        nodes = {f"system:node:{n.name}" for n in self.topo.nodes}

        def pending():
            doc = json.loads(self.kubectl("get", "csr", "-o", "json", check=False).stdout or "{}")
            serving = [c for c in doc.get("items", []) if c["spec"].get("signerName") == "kubernetes.io/kubelet-serving"
                       and c["spec"].get("username") in nodes]
            for c in serving:
                if not c.get("status", {}).get("conditions"):
                    self.kubectl("certificate", "approve", c["metadata"]["name"])
            issued = {c["spec"]["username"] for c in serving if c.get("status", {}).get("certificate")}
            return issued >= nodes

        _host.wait_until(pending, 240, "kubelet serving certificates (serverTLSBootstrap)", interval=1.0)

    def _control_plane(self, sc) -> None:
        topo, pki, b = self.topo, self.pki, self.state["bin"]
        cp = topo.control_plane
        server = f"https://{cp.ip}:{APISERVER_PORT}"
        for stem, user in (("admin", "kubernetes-admin"), ("scheduler", "system:kube-scheduler"),
                           ("controller-manager", "system:kube-controller-manager"), ("kube-proxy", "system:kube-proxy")):
            _config.kubeconfig(self.dir / f"{stem}.kubeconfig", server, self.ca, user, pki / f"{stem}.crt",
                               pki / f"{stem}.key")
        self._spawn("etcd", cp.ns, [
            "etcd", "--name", cp.name, "--data-dir", str(self.dir / "etcd"),
            "--listen-client-urls", f"https://{cp.ip}:{ETCD_PORT}", "--advertise-client-urls", f"https://{cp.ip}:{ETCD_PORT}",
            "--listen-peer-urls", f"https://{cp.ip}:2380", "--initial-advertise-peer-urls", f"https://{cp.ip}:2380",
            "--initial-cluster", f"{cp.name}=https://{cp.ip}:2380", "--listen-metrics-urls", "http://127.0.0.1:2381",
            "--cert-file", str(pki / "etcd.crt"), "--key-file", str(pki / "etcd.key"),
            "--trusted-ca-file", str(self.ca), "--client-cert-auth",
            "--peer-cert-file", str(pki / "etcd.crt"), "--peer-key-file", str(pki / "etcd.key"),
            "--peer-trusted-ca-file", str(self.ca), "--peer-client-cert-auth", "--log-outputs", "stderr"])
        _procs.wait_for(Path(self.state["procs"]["etcd"]["log"]), "ready to serve client requests",
                        self.state["procs"]["etcd"]["pid"], 60, "etcd")
        extra = []
        if sc.konnectivity:
            _konnectivity.start_server(self, sc.konnectivity)
            if sc.egress_via_konnectivity:
                extra.append(f"--egress-selector-config-file={_konnectivity.egress_config(self, sc.konnectivity)}")
        if sc.verify_kubelet:
            extra.append(f"--kubelet-certificate-authority={self.ca}")
        policy = self.dir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(_config.AUDIT_POLICY, sort_keys=False))
        self.state["audit_log"] = str(self.dir / "audit.log")
        self._spawn("kube-apiserver", cp.ns, [
            b["kube-apiserver"], f"--advertise-address={cp.ip}", f"--bind-address={cp.ip}",
            f"--secure-port={APISERVER_PORT}",
            f"--etcd-servers=https://{cp.ip}:{ETCD_PORT}", f"--etcd-cafile={self.ca}",
            f"--etcd-certfile={pki / 'apiserver-etcd-client.crt'}", f"--etcd-keyfile={pki / 'apiserver-etcd-client.key'}",
            f"--client-ca-file={self.ca}", f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--requestheader-client-ca-file={self.ca}", "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            "--enable-bootstrap-token-auth", "--allow-privileged=true",
            f"--audit-policy-file={policy}", f"--audit-log-path={self.state['audit_log']}",
            "--audit-log-format=json", "--audit-log-maxsize=200", "--audit-log-mode=blocking", *extra])
        _host.wait_until(lambda: self.kubectl("get", "--raw", "/readyz", check=False, timeout=40).stdout.strip() == "ok",
                         240, "kube-apiserver /readyz", alive=self._alive("kube-apiserver"))
        token = _config.BootstrapToken.new()
        self.state["bootstrap_token_id"] = token.id
        self.kubectl("apply", "-f", "-", input=_config.bootstrap_manifests(token, nodes_by_token=bool(sc.token_nodes)))
        _config.kubeconfig(self.dir / "bootstrap.kubeconfig", server, self.ca, "kubelet-bootstrap", token=token.token)
        self._spawn("kube-controller-manager", cp.ns, [
            b["kube-controller-manager"], f"--kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1", f"--cert-dir={self.dir / 'controller-manager-pki'}",
            f"--cluster-signing-cert-file={self.ca}",
            f"--cluster-signing-key-file={pki / 'ca.key'}", f"--root-ca-file={self.ca}",
            f"--service-account-private-key-file={pki / 'sa.key'}", "--use-service-account-credentials=true",
            "--controllers=*,bootstrapsigner,tokencleaner", f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--cluster-cidr={CLUSTER_CIDR}", "--allocate-node-cidrs=true", "--node-cidr-mask-size=24"])
        self._spawn("kube-scheduler", cp.ns, [
            b["kube-scheduler"], f"--kubeconfig={self.dir / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={self.dir / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={self.dir / 'scheduler.kubeconfig'}", "--bind-address=127.0.0.1",
            f"--cert-dir={self.dir / 'scheduler-pki'}"])
        self._save()

    def _node(self, node: Host, images: dict[str, Path], sc) -> None:
        from ._node import start_node

        start_node(self, node, images, sc)

    def import_image(self, archive: Path) -> None:
        """Import an OCI archive (e.g. the capture agent's, commpath.capture.cluster_image) into every node's
        containerd, as the lab's own images are: pods then run it with imagePullPolicy Never."""
        for node in self.topo.nodes:
            sock = self.dir / node.name / "containerd.sock"
            _host.run(node.ns, ["ctr", "--address", str(sock), "--namespace", "k8s.io", "images", "import",
                                str(archive)], timeout=300)

    # ------------------------------------------------------------------ down
    def down(self) -> list[str]:
        """Stop everything the lab started and remove its namespaces, pod namespaces, mounts and cgroups."""
        from ._node import stop_rank

        procs = self.state.get("procs", {})
        for key in sorted(procs, key=stop_rank):
            _procs.stop(procs[key]["pid"], signal.SIGINT if key.startswith("capture") else signal.SIGTERM, timeout=10)
        nodes = [h.name for h in self.topo.nodes]
        pod_pids = set().union(*(_host.pids_in_cgroup_root(self.cgroup_root(n)) for n in nodes))
        inodes = _host.netns_inodes(pod_pids)
        _host.kill_pids(pod_pids)
        removed = _topology.destroy(self.name)     # SIGKILLs what is left in the hosts' namespaces (shims)
        _host.forget_containers(self.dir)
        removed += _host.delete_pod_netns(inodes, _host.pod_netns_names(self.dir))
        if self.dir.exists():
            _host.unmount_under(self.dir)
        for n in nodes:
            _host.remove_cgroup_root(self.cgroup_root(n))
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
        _host.remove_kubelet_leftovers(STATE_ROOT)
        self.state = {}
        return removed

    # ------------------------------------------------------------------ metadata and capture
    def inventory(self) -> dict:
        topo = self.topo
        cp = topo.control_plane
        return {
            "apiVersion": "commpath/v1", "kind": "Inventory", "cluster": f"{self.name}-real-{self.state['scenario']}",
            "apiserver": {"endpoints": [f"{cp.ip}:{APISERVER_PORT}"], "service": f"{SERVICE_VIP}:443"},
            "control_plane": [{"name": cp.name, "addresses": [cp.ip]}],
            "nodes": [{"name": n.name, "addresses": [n.ip] + ([_gateway(n.pod_cidr)] if n.pod_cidr else []),
                       "pod_cidrs": [n.pod_cidr or CLUSTER_CIDR]} for n in topo.nodes],
            "kubelet_port": KUBELET_PORT, "pod_cidrs": [CLUSTER_CIDR], "service_cidrs": [SERVICE_CIDR],
            "konnectivity": self._konnectivity_inventory(), "etcd": [f"{cp.ip}:{ETCD_PORT}"], "ca_bundle": "pki/ca.crt",
        }

    def _konnectivity_inventory(self) -> dict:
        mode = _scenarios.get(self.state["scenario"]).konnectivity
        if not mode:
            return {"enabled": False}
        cp = self.topo.control_plane
        return {"enabled": True, "server": f"{cp.ip}:{_konnectivity.AGENT_PORT}", "agents": [n.name for n in self.topo.nodes]}

    def write_metadata(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "pki").mkdir(exist_ok=True)
        shutil.copy(self.ca, out / "pki" / "ca.crt")
        header = (f"# commpath real lab {self.name}: Kubernetes {self.state['release']} built from upstream, "
                  f"scenario {self.state['scenario']}\n")
        (out / "inventory.yaml").write_text(header + yaml.safe_dump(self.inventory(), sort_keys=False))

    def start_capture(self, out: Path) -> None:
        """One `commpath capture` agent per host (control plane: eth0 and lo; nodes: eth0 and cni0)."""
        out = Path(out)
        self.write_metadata(out)
        self.state["out"] = str(out.resolve())
        for h in self.topo.hosts:
            ifaces = ["eth0", "lo"] if h.role == "control-plane" else ["eth0", "cni0"]
            if h.role == "node":       # the CNI bridge plugin adopts an existing cni0: capture it from the start
                nsexec(h.ns, "ip", "link", "add", "cni0", "type", "bridge")
                nsexec(h.ns, "ip", "link", "set", "cni0", "up")
            # MTU-sized capture frames on the busy interfaces (see _offload); cni0 and the pods' veths keep their
            # offloads, since pods (whose side the lab does not change) may hand them segments larger than a frame
            nsexec(h.ns, "ip", "link", "set", "lo", "mtu", "1500")
            _host.run(h.ns, [sys.executable, "-m", "commpath.lab.real._offload", "lo", "eth0"], timeout=120)
            self._spawn(f"capture-{h.name}", h.ns, self._capture_cmd(h, out / h.name, ifaces))
        for h in self.topo.hosts:
            p = self.state["procs"][f"capture-{h.name}"]
            _procs.wait_for(Path(p["log"]), "listening on", p["pid"], CAPTURE_START_TIMEOUT, f"capture on {h.name}")
        self._save()

    def start_pod_capture(self) -> None:
        """Capture each node's pod veths too: with br_netfilter on (kubeadm requires it), packets are DNATed
        at the bridge port, so only the veth shows a pod's connection to the service VIP before DNAT."""
        out = Path(self.state["out"])
        for n in self.topo.nodes:
            links = nsexec(n.ns, "ip", "-o", "link", "show", "master", "cni0").stdout.splitlines()
            veths = [line.split(":")[1].strip().split("@")[0] for line in links if line.strip()]
            if not veths:
                continue
            key = f"capture-{n.name}-pods"
            self._spawn(key, n.ns, self._capture_cmd(n, out / f"{n.name}-pods", veths))
            p = self.state["procs"][key]
            _procs.wait_for(Path(p["log"]), "listening on", p["pid"], CAPTURE_START_TIMEOUT, f"pod capture on {n.name}")

    def _capture_cmd(self, h: Host, out: Path, ifaces: list[str]) -> list[str]:
        cmd = [sys.executable, "-m", "commpath", "capture", "--role", h.role, "--host", h.name,
               "--inventory", str(Path(self.state["out"]) / "inventory.yaml"),
               "--engine", "tcpdump", "--duration", str(CAPTURE_DURATION), "--out", str(out),
               "--buffer-mb", str(CAPTURE_BUFFER_MB[h.role])]
        for iface in ifaces:
            cmd += ["--iface", iface]
        return cmd

    def stop_capture(self) -> dict:
        """Stop every capture agent; returns each capture folder's packet counts (captured, dropped by the kernel)."""
        for key in [k for k in self.state.get("procs", {}) if k.startswith("capture-")]:
            _procs.stop(self.state["procs"].pop(key)["pid"], signal.SIGINT, timeout=CAPTURE_STOP_TIMEOUT)
        self._save()
        counts = {}
        for m in sorted(Path(self.state.get("out", "/nonexistent")).glob("*/manifest.json")):
            man = json.loads(m.read_text())
            counts[m.parent.name] = {"status": man.get("status"), "captured": man.get("packets_captured"),
                                     "dropped": man.get("packets_dropped")}
        return counts

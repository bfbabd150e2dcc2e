"""The emulated cluster: bring it up, capture on every host, drive every documented path, tear down."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ..errors import CommpathError
from . import _procs, _topology
from ._gobuild import peer_binary
from ._pki import Authority
from ._topology import APISERVER_PORT, SERVICE_VIP, Topology, nsexec
from .scenarios import Scenario, get

STATE_ROOT = Path(os.environ.get("COMMPATH_LAB_STATE", "/run/commpath-lab"))
SA_TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImxhYiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDpsYWIifQ.bGFi"
KUBELET_PORT, READONLY_PORT, KONN_PORT, KONN_FRONTEND = 10250, 10255, 8132, "127.0.0.1:8131"
PROXY_HTTP_PORT, PROXY_HTTPS_PORT, SERVICE_PORT, SERVICE_HTTPS_PORT = 8080, 8443, 9376, 9443
SERVERS_SCRIPT = str(Path(__file__).with_name("_servers.py"))  # run by path: needs nothing of commpath
SERVER_LIFETIME = "3600s"   # every lab server stops by itself after this, even if the lab is never torn down


class Lab:
    """One lab instance, named by its namespace prefix; its state lives in STATE_ROOT/<name>."""

    def __init__(self, name: str = "cplab", state_root: Path | None = None, log=None):
        if not name.replace("-", "").isalnum() or len(name) > 20:
            raise CommpathError(f"lab: --name {name!r}: use up to 20 letters, digits and dashes")
        self.name = name
        self.dir = Path(state_root or STATE_ROOT) / name
        self.log = log or (lambda msg: print(f"lab: {msg}", file=sys.stderr, flush=True))
        self.state = json.loads((self.dir / "state.json").read_text()) if (self.dir / "state.json").exists() else {}

    # ------------------------------------------------------------------ state
    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "state.json").write_text(json.dumps(self.state, indent=1))

    @property
    def topo(self) -> Topology:
        return _topology.plan(self.name, self.state.get("nodes", 2))

    @property
    def scenario(self) -> Scenario:
        return get(self.state["scenario"])

    def _pki(self, stem: str) -> list[str]:
        d = self.dir / "pki"
        return ["--cert", str(d / f"{stem}.crt"), "--key", str(d / f"{stem}.key")]

    @property
    def _ca(self) -> str:
        return str(self.dir / "pki" / "ca.crt")

    def _spawn(self, key: str, ns: str, cmd: list[str], ready: str | None = None, timeout: float = 10.0,
               group: str = "servers") -> int:
        log = self.dir / "logs" / f"{key}.log"
        pid = _procs.spawn(ns, cmd, log)
        self.state.setdefault(group, {})[key] = {"pid": pid, "ns": ns, "log": str(log)}
        self._save()
        if ready:
            _procs.wait_for(log, ready, pid, timeout, key)
        return pid

    def _keylog_args(self) -> list[str]:
        return ["--keylog", self.state["keylog"]] if self.state.get("keylog") else []

    # ------------------------------------------------------------------ up
    def up(self, scenario: str, out: Path | None = None) -> None:
        sc = get(scenario)
        if self.state:
            raise CommpathError(f"lab: {self.name!r} is up already ({self.dir}); run `commpath lab down --name {self.name}`")
        for tool in ("ip", "tcpdump", "openssl"):
            if not shutil.which(tool):
                raise CommpathError(f"lab: {tool} is not installed")
        if os.geteuid() != 0:
            raise CommpathError("lab: needs root (network namespaces)")
        if _topology.existing_namespaces(self.name):  # another lab of that name: never touch it
            raise CommpathError(f"lab: namespaces with prefix {self.name!r} exist already; "
                                f"run `commpath lab down --name {self.name}`")
        t0 = time.monotonic()
        peer = str(peer_binary())
        self.state = {"name": self.name, "scenario": sc.name, "nodes": 2, "peer": peer, "created": time.time(),
                      "keylog": str(self.dir / "keylog.txt")}
        self._save()
        topo = self.topo
        try:
            self.state["facts"] = _topology.create(topo)
            self._save()
            self._make_pki(sc, topo)
            self._start_servers(sc, topo)
            if out:
                self.write_metadata(Path(out))
        except BaseException:
            self.down()  # a half-built lab leaves nothing behind
            raise
        self.log(f"up: scenario {sc.name}, {len(topo.namespaces())} namespaces, "
                 f"{len(self.state['servers'])} servers in {time.monotonic() - t0:.1f}s")

    def _make_pki(self, sc: Scenario, topo: Topology) -> None:
        ca = Authority(self.dir / "pki", "kubernetes")
        cp = topo.control_plane
        ca.issue("apiserver", "kube-apiserver", server=True,
                 sans=[cp.ip, SERVICE_VIP, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       "kubernetes.default.svc.cluster.local", cp.name])
        ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", org="system:masters", client=True)
        ca.issue("apiserver-etcd-client", "kube-apiserver-etcd-client", client=True)
        ca.issue("etcd", cp.name, server=True, client=True, sans=[cp.ip, "127.0.0.1", cp.name])
        ca.issue("scheduler", "system:kube-scheduler", client=True)
        ca.issue("controller-manager", "system:kube-controller-manager", client=True)
        ca.issue("konnectivity-server", "konnectivity-server", server=True, client=True, sans=[cp.ip, cp.name])
        stamp = int(time.time())
        for node in topo.nodes:
            ca.issue(f"{node.name}-kubelet-client", f"system:node:{node.name}", org="system:nodes", client=True)
            if sc.kubelet_cert == "ca":
                ca.issue(f"{node.name}-kubelet", f"system:node:{node.name}", org="system:nodes", server=True,
                         sans=[node.ip, node.name], expired=node.name in sc.expired_kubelet_cert)
            else:  # what a kubelet generates for itself without serverTLSBootstrap
                ca.issue(f"{node.name}-kubelet", f"{node.name}@{stamp}", server=True, sans=[node.ip, node.name],
                         self_signed=True)
            ca.issue(f"{node.name}-konnectivity-agent", "system:konnectivity-agent", client=True,
                     server=node.name in sc.konn_server_dials, sans=[node.ip] if node.name in sc.konn_server_dials else None)
            ca.issue(f"{node.name}-https", f"{node.name}-https-target", server=True, sans=[node.ip], self_signed=True)
            for pod in node.pods:
                ca.issue(f"{pod.name}-https", pod.name, server=True, sans=[pod.ip], self_signed=True)

    def _tls_args(self, sc: Scenario) -> list[str]:
        args = ["--tls-min", sc.tls_min]
        if sc.tls_max:
            args += ["--tls-max", sc.tls_max]
        return args

    def _start_servers(self, sc: Scenario, topo: Topology) -> None:
        peer, cp = self.state["peer"], topo.control_plane
        tls = self._tls_args(sc)
        self._spawn("apiserver", cp.ns, [peer, "serve", "--role", "apiserver", "--listen", f"{cp.ip}:{APISERVER_PORT}",
                                          *self._pki("apiserver"), "--ca", self._ca, "--alpn", "h2,http/1.1", *tls,
                                          *self._keylog_args(), "--duration", SERVER_LIFETIME], "ready")
        etcd = shutil.which("etcd")
        if etcd:
            pki = self.dir / "pki"
            self._spawn("etcd", cp.ns, [
                etcd, "--name", cp.name, "--data-dir", str(self.dir / "etcd"),
                "--listen-client-urls", f"https://{cp.ip}:2379" + (",http://127.0.0.1:2379" if sc.etcd_plaintext else ""),
                "--advertise-client-urls", f"https://{cp.ip}:2379",
                "--listen-peer-urls", f"https://{cp.ip}:2380", "--initial-advertise-peer-urls", f"https://{cp.ip}:2380",
                "--initial-cluster", f"{cp.name}=https://{cp.ip}:2380", "--listen-metrics-urls", "http://127.0.0.1:2381",
                "--cert-file", str(pki / "etcd.crt"), "--key-file", str(pki / "etcd.key"),
                "--trusted-ca-file", self._ca, "--client-cert-auth",
                "--peer-cert-file", str(pki / "etcd.crt"), "--peer-key-file", str(pki / "etcd.key"),
                "--peer-trusted-ca-file", self._ca, "--peer-client-cert-auth", "--log-outputs", "stderr"],
                "ready to serve client requests", timeout=20)
        if sc.konnectivity:
            self._spawn("konnectivity-server", cp.ns, [
                peer, "konn-server", "--agent-listen", f"{cp.ip}:{KONN_PORT}", "--frontend", KONN_FRONTEND,
                *self._pki("konnectivity-server"), "--ca", self._ca, *tls, *self._keylog_args(),
                "--duration", SERVER_LIFETIME], "ready")
        py = sys.executable
        for node in topo.nodes:
            cmd = [peer, "serve", "--role", "kubelet", "--listen", f"0.0.0.0:{KUBELET_PORT}",
                   *self._pki(f"{node.name}-kubelet"), "--ca", self._ca, "--alpn", "h2,http/1.1", *tls,
                   *self._keylog_args(), "--duration", SERVER_LIFETIME]
            if sc.readonly_port:
                cmd += ["--plain", f"0.0.0.0:{READONLY_PORT}"]
            if not sc.kubelet_anonymous:
                cmd.append("--anonymous=false")
            self._spawn(f"{node.name}-kubelet", node.ns, cmd, "ready")
            d = self.dir / "pki"
            ossl = ["openssl", "s_server", "-accept", f"{node.ip}:{PROXY_HTTPS_PORT}", "-www", "-quiet",
                    "-cert", str(d / f"{node.name}-https.crt"), "-key", str(d / f"{node.name}-https.key")]
            if sc.tls_max == "1.2":
                ossl.append("-no_tls1_3")
            if self.state.get("keylog"):
                ossl += ["-keylogfile", self.state["keylog"]]
            self._spawn(f"{node.name}-https-target", node.ns, ossl)
            self._spawn(f"{node.name}-http-target", node.ns, [py, SERVERS_SCRIPT, "--bind", node.ip,
                                                               "--http", str(PROXY_HTTP_PORT), "--label", node.name],
                        "ready")
            for pod in node.pods:
                cmd = [py, SERVERS_SCRIPT, "--http", str(PROXY_HTTP_PORT), "--https", str(PROXY_HTTPS_PORT),
                       "--http", str(SERVICE_PORT), "--https", str(SERVICE_HTTPS_PORT), "--label", pod.name, "--cert", str(d / f"{pod.name}-https.crt"),
                       "--key", str(d / f"{pod.name}-https.key"), *self._keylog_args()]
                if sc.tls_max:
                    cmd += ["--tls-max", sc.tls_max]
                self._spawn(f"{pod.name}-targets", pod.ns, cmd, "ready")
            if sc.ssh_tunnel:
                self._start_sshd(node)
            if node.name in sc.konn_server_dials:  # an agent that listens: the server side dials it
                self._spawn(f"{node.name}-konnectivity-listener", node.ns, [
                    peer, "serve", "--role", "konnectivity-agent", "--listen", f"{node.ip}:{KONN_PORT}",
                    *self._pki(f"{node.name}-konnectivity-agent"), "--ca", self._ca, *tls, *self._keylog_args(),
                    "--duration", SERVER_LIFETIME], "ready")
        for node in topo.nodes:  # s_server prints nothing when ready: probe its port
            self._wait_port(node.ns, node.ip, PROXY_HTTPS_PORT, f"{node.name}-https-target")

    def _wait_port(self, ns: str, ip: str, port: int, what: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = nsexec(ns, "ss", "-Hltn", f"sport = :{port}", check=False).stdout
            if out.strip():
                return
            time.sleep(0.1)
        raise CommpathError(f"lab: {what} is not listening on {ip}:{port}")

    def _start_sshd(self, node) -> None:
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        d = self.dir / "ssh"
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "id_ed25519").exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kube-apiserver", "-f",
                            str(d / "id_ed25519")], check=True, timeout=30)
            shutil.copy(d / "id_ed25519.pub", d / "authorized_keys")
        host_key = d / f"{node.name}_host_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True, timeout=30)
        cfg = d / f"{node.name}_sshd_config"
        cfg.write_text("\n".join([
            f"ListenAddress {node.ip}", "Port 22", f"HostKey {host_key}", f"PidFile {d / (node.name + '_sshd.pid')}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}", "PermitRootLogin prohibit-password",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "AllowTcpForwarding yes", "X11Forwarding no", "PrintMotd no", "LogLevel INFO", ""]))
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        self._spawn(f"{node.name}-sshd", node.ns, [sshd, "-D", "-e", "-f", str(cfg)], "Server listening")

    # ------------------------------------------------------------------ metadata
    def inventory(self) -> dict:
        topo, sc = self.topo, self.scenario
        cp = topo.control_plane
        inv = {
            "apiVersion": "commpath/v1", "kind": "Inventory", "cluster": f"{self.name}-{sc.name}",
            "apiserver": {"endpoints": [f"{cp.ip}:{APISERVER_PORT}"], "service": f"{SERVICE_VIP}:443"},
            "control_plane": [{"name": cp.name, "addresses": [cp.ip]}],
            "nodes": [{"name": n.name, "addresses": n.addresses, "pod_cidrs": [n.pod_cidr]} for n in topo.nodes],
            "kubelet_port": KUBELET_PORT, "kubelet_readonly_port": READONLY_PORT,
            "pod_cidrs": ["10.244.0.0/16"], "service_cidrs": [_topology.SERVICE_CIDR],
            "konnectivity": {"enabled": sc.konnectivity, "server": f"{cp.ip}:{KONN_PORT}"},
            "ca_bundle": "pki/ca.crt",
        }
        if shutil.which("etcd"):
            inv["etcd"] = [f"{cp.ip}:2379"]
        return inv

    def write_metadata(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "pki").mkdir(exist_ok=True)
        shutil.copy(self._ca, out / "pki" / "ca.crt")
        header = (f"# commpath lab {self.name}, scenario {self.scenario.name}: {self.scenario.description}\n")
        (out / "inventory.yaml").write_text(header + yaml.safe_dump(self.inventory(), sort_keys=False))
        self.state["out"] = str(out.resolve())
        self._save()

    # ------------------------------------------------------------------ capture
    def start_capture(self, out: Path, duration: float = 1800.0) -> None:
        self._require_up()
        if self.state.get("captures"):
            raise CommpathError(f"lab: {self.name!r} is capturing already (into {self.state.get('out')})")
        out = Path(out)
        self.write_metadata(out)
        topo = self.topo
        for h in topo.hosts:
            cmd = [sys.executable, "-m", "commpath", "capture", "--role", h.role, "--host", h.name,
                   "--inventory", str(out / "inventory.yaml"), "--engine", "tcpdump", "--duration", str(duration),
                   "--out", str(out / h.name)]
            for iface in h.capture_ifaces:
                cmd += ["--iface", iface]
            self._spawn(f"capture-{h.name}", h.ns, cmd, group="captures")
        for key, proc in self.state["captures"].items():
            _procs.wait_for(Path(proc["log"]), "listening on", proc["pid"], 20, key)
        self.log(f"capturing on {', '.join(h.name for h in topo.hosts)} -> {out}")

    def stop_capture(self) -> dict:
        """SIGINT every capture agent and wait for its manifest; returns host -> manifest."""
        manifests = {}
        for key, proc in list(self.state.get("captures", {}).items()):
            _procs.stop(proc["pid"], signal.SIGINT, timeout=20)
            host = key.removeprefix("capture-")
            mf = Path(self.state.get("out", "")) / host / "manifest.json"
            if mf.exists():
                manifests[host] = json.loads(mf.read_text())
        self.state["captures"] = {}
        self._save()
        return manifests

    # ------------------------------------------------------------------ exercise
    def _require_up(self) -> None:
        if not self.state:
            raise CommpathError(f"lab: {self.name!r} is not up; run `commpath lab up --name {self.name}` first")

    def exercise(self, out: Path | None = None) -> dict:
        from ._exercise import Exerciser

        self._require_up()
        if not (out or self.state.get("out")):
            raise CommpathError("lab exercise: --out DIR is required (where the ground truth goes)")
        out = Path(out or self.state["out"])
        if self.state.get("out") != str(out.resolve()):
            self.write_metadata(out)
        t0 = time.monotonic()
        truth = Exerciser(self).run()
        (out / "ground-truth.yaml").write_text(yaml.safe_dump(truth, sort_keys=False, width=120))
        keylog = Path(self.state["keylog"])
        if keylog.exists():
            shutil.copy(keylog, out / "keylog.txt")
        self.log(f"exercise: {len(truth['connections'])} connections on {len(truth['paths_observed'])} paths "
                 f"in {time.monotonic() - t0:.1f}s")
        return truth

    # ------------------------------------------------------------------ down
    def down(self) -> list[str]:
        if self.state.get("captures"):
            self.stop_capture()
        for group in ("clients", "servers"):
            for proc in self.state.get(group, {}).values():
                _procs.stop(proc["pid"], signal.SIGTERM, timeout=3)
        removed = _topology.destroy(self.name)
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
        self.state = {}
        return removed

    def run(self, scenario: str, out: Path) -> dict:
        """up + capture + exercise + stop capture + down, tearing down also on failure or a signal."""
        def on_term(signum, _frame):
            raise KeyboardInterrupt(signal.Signals(signum).name)

        previous = signal.signal(signal.SIGTERM, on_term)
        t0 = time.monotonic()
        try:
            self.up(scenario)
            self.start_capture(out)   # returns once every agent's engine reported that it listens
            truth = self.exercise(out)
            time.sleep(0.5)  # let the last FINs reach every capture
            manifests = self.stop_capture()
            truth["captures"] = {h: {"packets": m.get("packets_captured"), "dropped": m.get("packets_dropped"),
                                     "files": [f["name"] for f in m.get("files", [])]} for h, m in manifests.items()}
            truth["run_seconds"] = round(time.monotonic() - t0, 2)
            (Path(out) / "ground-truth.yaml").write_text(yaml.safe_dump(truth, sort_keys=False, width=120))
            return truth
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                removed = self.down()
                self.log(f"down: removed {len(removed)} namespaces")
            finally:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, previous)

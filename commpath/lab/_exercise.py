"""Drives every documented path of a running lab with bounded request loops and records the ground truth."""

from __future__ import annotations

import ipaddress
import json
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CommpathError
from . import _procs
from ._topology import APISERVER_PORT, SERVICE_VIP, nsexec

REQUESTS = 3            # requests per URL and client
CLIENT_TIMEOUT = 30     # seconds per client process


@dataclass
class Job:
    key: str
    host: str           # initiating lab host (or pod)
    ns: str
    path: str
    args: list[str]
    urls: list[str]
    reports: list[dict] = field(default_factory=list)
    stderr: str = ""


class Exerciser:
    def __init__(self, lab):
        self.lab = lab
        self.sc = lab.scenario
        self.topo = lab.topo
        self.peer = lab.state["peer"]
        self.connections: list[dict] = []
        self.tunnelled: list[dict] = []
        self.local: list[dict] = []
        self.errors: list[str] = []

    # ---------------------------------------------------------------- helpers
    def _client(self, key, host, ns, path, urls, *extra) -> Job:
        args = [self.peer, "client", "--path", path, "--count", str(REQUESTS), *self.lab._keylog_args(), *extra]
        return Job(key, host, ns, path, args, urls)

    def _run(self, job: Job) -> Job:
        try:
            res = subprocess.run(["ip", "netns", "exec", job.ns, *job.args, *job.urls], capture_output=True,
                                 text=True, timeout=CLIENT_TIMEOUT)
        except subprocess.TimeoutExpired:
            job.stderr = f"timed out after {CLIENT_TIMEOUT}s"
            return job
        job.stderr = res.stderr.strip()
        job.reports = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
        return job

    def _tls(self, verify_ca: bool = True) -> list[str]:
        args = ["--tls-min", self.sc.tls_min] + (["--tls-max", self.sc.tls_max] if self.sc.tls_max else [])
        return args + (["--ca", self.lab._ca] if verify_ca else ["--insecure"])

    def _record(self, job_host: str, client: str, path: str, rep: dict, nat: str | None = None) -> None:
        entry = {"src": rep.get("local"), "dst": rep.get("remote"), "start": round(rep["start"], 6),
                 "path": path, "initiator": job_host, "client": client}
        if rep["event"] == "error":
            self.errors.append(f"{client}: {rep.get('remote')}: {rep.get('error')}")
            return
        if rep["event"] == "tunnelled":
            entry["via"] = rep.get("note", "").removeprefix("via ")
            self.tunnelled.append(entry)
            return
        src_ip, dst_ip = (e.rsplit(":", 1)[0] for e in (entry["src"], entry["dst"]))
        if nat:
            entry["dst_after_nat"] = nat
        if ipaddress.ip_address(dst_ip).is_loopback or (src_ip == dst_ip and job_host != self.topo.control_plane.name):
            self.local.append(entry)  # never leaves the host (and is outside the capture filter)
        else:
            self.connections.append(entry)

    # ---------------------------------------------------------------- the paths
    def _jobs(self) -> list[Job]:
        sc, topo, lab = self.sc, self.topo, self.lab
        cp = topo.control_plane
        api = f"https://{cp.ip}:{APISERVER_PORT}"
        jobs: list[Job] = []
        for node in topo.nodes:  # node -> apiserver: the kubelet's client certificate (or a token when broken)
            cred = (["--token", "kubelet-bootstrap-token"] if node.name in sc.no_client_cert
                    else lab._pki(f"{node.name}-kubelet-client"))
            jobs.append(self._client(f"{node.name}-kubelet", node.name, node.ns, "node-to-apiserver",
                                     [f"{api}/api/v1/nodes/{node.name}", f"{api}/api/v1/pods?fieldSelector=spec.nodeName%3D{node.name}"],
                                     *cred, *self._tls()))
            for pod in node.pods:  # pod -> apiserver through the service VIP, bearer token, injected root CA
                jobs.append(self._client(f"{pod.name}-serviceaccount", pod.name, pod.ns, "pod-to-apiserver",
                                         [f"https://{SERVICE_VIP}:443/api/v1/namespaces/default/pods"],
                                         "--token", lab_token(), "--server-name", "kubernetes.default.svc", *self._tls()))
            if node.name in sc.konn_server_dials:  # the server side opening a connection to an agent
                jobs.append(self._client(f"konnectivity-server-dials-{node.name}", cp.name, cp.ns, "konnectivity",
                                         [f"https://{node.ip}:8132/"], *lab._pki("konnectivity-server"),
                                         "--server-name", node.ip, *self._tls()))
        for comp in ("scheduler", "controller-manager"):
            jobs.append(self._client(comp, cp.name, cp.ns, "control-plane-to-apiserver",
                                     [f"{api}/api/v1/nodes", f"{api}/apis/coordination.k8s.io/v1/leases"],
                                     *lab._pki(comp), *self._tls()))
        if "etcd" in lab.state.get("servers", {}):
            jobs.append(self._client("apiserver-etcd", cp.name, cp.ns, "etcd", [f"https://{cp.ip}:2379/v3/kv/put"],
                                     "--method", "POST", "--body", '{"key":"L3JlZ2lzdHJ5L2xhYg==","value":"bGFi"}',
                                     *lab._pki("apiserver-etcd-client"), "--ca", lab._ca, "--tls-min", "1.2"))
            if sc.etcd_plaintext:   # the same write on etcd's plain-HTTP client URL
                jobs.append(self._client("apiserver-etcd-plaintext", cp.name, cp.ns, "etcd",
                                         ["http://127.0.0.1:2379/v3/kv/put"], "--method", "POST",
                                         "--body", '{"key":"L3JlZ2lzdHJ5L2xhYg==","value":"bGFi"}'))
        for node in topo.nodes:
            jobs += self._kubelet_jobs(node)
            jobs += self._proxy_jobs(node)
            if sc.readonly_port:
                jobs.append(self._client(f"{node.name}-readonly-scraper", cp.name, cp.ns, "kubelet-readonly",
                                         [f"http://{node.ip}:10255/stats/summary", f"http://{node.ip}:10255/pods"]))
        return jobs

    def _route(self, node) -> tuple[list[str], str]:
        """Client options that carry apiserver -> node traffic the scenario's way, and that way's name."""
        if self.sc.ssh_tunnel:
            return ["--dial", f"127.0.0.1:{self.ssh_ports[node.name]}"], "ssh"
        if self.sc.konnectivity and node.name not in self.sc.bypass_nodes:
            return ["--konnectivity", f"127.0.0.1:8131,{node.name}", "--new-conn"], "konnectivity"
        return [], "direct"

    def _kubelet_jobs(self, node) -> list[Job]:
        lab, cp = self.lab, self.topo.control_plane
        kubelet = f"https://{node.ip}:10250"
        route, _ = self._route(node)
        verify = (["--ca", lab._ca, "--server-name", node.name] if self.sc.verify_kubelet else ["--insecure"])
        tls = ["--tls-min", self.sc.tls_min] + (["--tls-max", self.sc.tls_max] if self.sc.tls_max else [])
        base = [*lab._pki("apiserver-kubelet-client"), *verify, *tls, *route]
        pod = node.pods[0].name
        return [
            self._client(f"apiserver-{node.name}-logs", cp.name, cp.ns, "apiserver-to-kubelet",
                         [f"{kubelet}/containerLogs/default/{pod}/app?tailLines=20"], *base),
            self._client(f"apiserver-{node.name}-exec", cp.name, cp.ns, "apiserver-to-kubelet",
                         [f"{kubelet}/exec/default/{pod}/app?command=ls&output=1&error=1"],
                         *base, "--method", "POST", "--upgrade", "SPDY/3.1", "--new-conn", "--count", "2"),
            self._client(f"apiserver-{node.name}-portforward", cp.name, cp.ns, "apiserver-to-kubelet",
                         [f"{kubelet}/portForward/default/{pod}?port=8080"],
                         *base, "--method", "POST", "--upgrade", "SPDY/3.1", "--new-conn", "--count", "2"),
        ]

    def _proxy_jobs(self, node) -> list[Job]:
        """apiserver proxy (`/api/v1/{nodes,pods,services}/NAME[:PORT]/proxy`, with and without `https:`)."""
        cp, pod = self.topo.control_plane, node.pods[0]
        # the legacy cluster tunnels kubelet traffic only (proxy requests go direct); the broken one
        # bypasses Konnectivity for node2's kubelet only
        route = (["--konnectivity", f"127.0.0.1:8131,{node.name}", "--new-conn"]
                 if self.sc.konnectivity and self.sc.proxy_via == "konnectivity" else [])
        tls = ["--tls-max", self.sc.tls_max] if self.sc.tls_max else []
        plain = [f"http://{node.ip}:8080/", f"http://{pod.ip}:8080/"]
        tls_urls = [f"https://{node.ip}:8443/", f"https://{pod.ip}:8443/"]
        if node.name == self.topo.nodes[-1].name:  # the service's endpoint (services/NAME:PORT/proxy)
            plain.append(f"http://{pod.ip}:9376/")
            tls_urls.append(f"https://{pod.ip}:9443/")
        return [
            self._client(f"apiserver-proxy-{node.name}-http", cp.name, cp.ns, "apiserver-proxy", plain,
                         *route, "--count", "2"),
            self._client(f"apiserver-proxy-{node.name}-https", cp.name, cp.ns, "apiserver-proxy",
                         tls_urls, "--insecure", *tls, *route,
                         "--count", "2", "--new-conn", "--h2=false"),
        ]

    # ---------------------------------------------------------------- long-lived tunnels
    def _start_agents(self) -> None:
        lab, cp = self.lab, self.topo.control_plane
        for node in self.topo.nodes:
            lab._spawn(f"{node.name}-konnectivity-agent", node.ns, [
                self.peer, "konn-agent", "--server", f"{cp.ip}:8132", "--node", node.name,
                *lab._pki(f"{node.name}-konnectivity-agent"), "--ca", lab._ca, "--server-name", cp.ip,
                *self._tls(), *lab._keylog_args(), "--pool", "2", "--max-conns", "100", "--duration", "120s"],
                '"konnectivity"', group="clients")

    def _start_ssh(self) -> None:
        lab, cp = self.lab, self.topo.control_plane
        self.ssh_ports = {}
        for i, node in enumerate(self.topo.nodes):
            port = 16443 + i
            start = time.time()
            pid = lab._spawn(f"ssh-tunnel-{node.name}", cp.ns, [
                shutil.which("ssh") or "ssh", "-F", "/dev/null", "-i", str(lab.dir / "ssh" / "id_ed25519"), "-N",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                "-o", "ExitOnForwardFailure=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
                "-L", f"127.0.0.1:{port}:127.0.0.1:10250", f"root@{node.ip}"], group="clients")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if not _procs.alive(pid):
                    raise CommpathError(f"lab: ssh tunnel to {node.name} failed: "
                                        f"{Path(lab.state['clients'][f'ssh-tunnel-{node.name}']['log']).read_text()[-300:]}")
                listening = nsexec(cp.ns, "ss", "-Hltn", f"sport = :{port}", check=False).stdout.strip()
                est = nsexec(cp.ns, "ss", "-Htn", "state", "established", f"dst {node.ip}", "dport = :22",
                             check=False).stdout.split()
                if listening and est:
                    local = est[2]  # Recv-Q Send-Q Local Peer
                    self._record(cp.name, "kube-apiserver ssh tunnel", "ssh-tunnel",
                                 {"event": "connect", "local": local, "remote": f"{node.ip}:22", "start": start})
                    self.ssh_ports[node.name] = port
                    break
                time.sleep(0.05)
            else:
                raise CommpathError(f"lab: ssh tunnel to {node.name} did not come up")

    def _stop_clients(self) -> None:
        for key, proc in list(self.lab.state.get("clients", {}).items()):
            _procs.stop(proc["pid"], signal.SIGTERM, timeout=5)
            if key.endswith("konnectivity-agent"):
                node = key.removesuffix("-konnectivity-agent")
                for line in Path(proc["log"]).read_text().splitlines():
                    if not line.startswith("{"):
                        continue
                    rep = json.loads(line)
                    if rep["path"] == "konnectivity":
                        self._record(node, "konnectivity-agent", "konnectivity", rep)
                    else:  # the agent's own dial on behalf of the apiserver: node -> pod, or local
                        self._record(node, "konnectivity-agent (dial for the apiserver)", "other", rep)
        self.lab.state["clients"] = {}
        self.lab._save()

    # ---------------------------------------------------------------- run
    def run(self) -> dict:
        t0 = time.time()
        try:
            if self.sc.konnectivity:
                self._start_agents()
            if self.sc.ssh_tunnel:
                self._start_ssh()
            jobs = self._jobs()
            with ThreadPoolExecutor(max_workers=8) as pool:
                done = list(pool.map(self._run, jobs))
        finally:
            time.sleep(0.2)
            self._stop_clients()
        api = f"{self.topo.control_plane.ip}:{APISERVER_PORT}"
        for job in done:
            for rep in job.reports:
                nat = api if rep.get("remote", "").startswith(SERVICE_VIP + ":") else None
                self._record(job.host, job.key, job.path, rep, nat)
            if job.stderr:
                self.errors.append(f"{job.key}: {job.stderr.splitlines()[-1]}")
        self.connections.sort(key=lambda c: c["start"])
        for i, c in enumerate(self.connections):
            c["id"] = i
        return self._truth(t0)

    def _truth(self, t0: float) -> dict:
        sc = self.sc
        observed = sorted({c["path"] for c in self.connections} - {"other"})
        return {
            "apiVersion": "commpath/v1", "kind": "GroundTruth", "lab": self.lab.name, "scenario": sc.name,
            "description": sc.description, "exercise_start": round(t0, 6), "exercise_end": round(time.time(), 6),
            "paths_observed": observed,
            "expected_findings": [{"check": f.check, "path": f.path, "when": f.when, "why": f.why} for f in sc.expected],
            "absent_findings": list(sc.absent),
            "connections": self.connections,
            "tunnelled_requests": self.tunnelled,
            "host_local_connections": self.local,
            "errors": self.errors,
            "notes": [
                "connections: every TCP connection the lab's clients opened that crosses a captured interface; "
                "src = initiator; dst as dialled (dst_after_nat: after kube-proxy's DNAT of the service VIP)",
                "tunnelled_requests: requests carried inside an SSH tunnel or a Konnectivity connection "
                "(not visible as their own flow)",
                "host_local_connections: never leave a host (loopback), outside the capture filter",
                "etcd's own gRPC-gateway loopback connections and TLS-internal retries are not listed",
            ],
        }


def lab_token() -> str:
    from .lab import SA_TOKEN
    return SA_TOKEN


"""Drives the real cluster through every documented path with real clients (kubectl, in-pod callers).

Each step is bounded (timeouts on every command, a fixed number of requests); long-running kubectl
verbs (attach, port-forward) are stopped once they have shown their effect, never after a sleep.
What happened is recorded as a list of actions with wall-clock windows; the audit log is the truth.
"""

from __future__ import annotations

import json
import select
import subprocess
import time
from pathlib import Path

import yaml

from ...errors import CommpathError
from . import _host, _scenarios
from ._images import LABPOD_IMAGE
from ._metrics import SCRAPE_PATH
from ._node import READ_ONLY_PORT

HOST_WEB_HTTP, HOST_WEB_HTTPS = 18080, 18443

_WEB = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {
        "metadata": {"labels": {"app": "web"}},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}},
            "containers": [
                {"name": "web", "image": LABPOD_IMAGE, "imagePullPolicy": "Never",
                 "command": ["/bin/labpod", "serve"], "ports": [{"containerPort": 8080}, {"containerPort": 8443}]},
                {"name": "echo", "image": LABPOD_IMAGE, "imagePullPolicy": "Never",
                 "command": ["/bin/busybox", "cat"], "stdin": True},
            ]}}},
}
_SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080},
                                                          {"name": "https", "port": 443, "targetPort": 8443}]}}


def _hostweb(node: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"hostweb-{node}", "namespace": "default"},
            "spec": {"nodeName": node, "hostNetwork": True, "terminationGracePeriodSeconds": 2,
                     "containers": [{"name": "web", "image": LABPOD_IMAGE, "imagePullPolicy": "Never",
                                     "command": ["/bin/labpod", "serve", "--http", str(HOST_WEB_HTTP),
                                                 "--https", str(HOST_WEB_HTTPS)]}]}}


class Exerciser:
    def __init__(self, lab):
        self.lab = lab
        self.actions: list[dict] = []
        self.errors: list[str] = []

    def _act(self, what: str, fn, **facts):
        t0 = time.time()
        try:
            out = fn()
        except CommpathError as exc:
            self.errors.append(f"{what}: {exc}")
            out = None
        self.actions.append({"action": what, "start": round(t0, 6), "end": round(time.time(), 6), "ok": out is not None,
                             **facts})
        return out

    def _k(self, *args, timeout: float = 90, input: str | None = None) -> str:
        return self.lab.kubectl(*args, timeout=timeout, input=input).stdout

    def run(self) -> dict:
        k = self._k
        nodes = [n.name for n in self.lab.topo.nodes]
        self._act("deploy", lambda: k("apply", "-f", "-", input=yaml.safe_dump_all([_WEB, _SERVICE])))
        self._act("rollout-1", lambda: k("rollout", "status", "deployment/web", "--timeout=180s", timeout=200))
        self._act("scale", lambda: k("scale", "deployment/web", "--replicas=2"))
        self._act("rollout-2", lambda: k("rollout", "status", "deployment/web", "--timeout=180s", timeout=200))
        self._act("hostweb", lambda: k("apply", "-f", "-", input=yaml.safe_dump(_hostweb(nodes[-1]))))
        self._act("hostweb-ready", lambda: k("wait", "--for=condition=Ready", f"pod/hostweb-{nodes[-1]}",
                                             "--timeout=180s", timeout=200))
        if self.lab.state.get("out"):
            self.lab.start_pod_capture()
        pods = json.loads(k("get", "pods", "-l", "app=web", "-o", "json"))["items"]
        placed = {p["metadata"]["name"]: {"node": p["spec"].get("nodeName"), "ip": p["status"].get("podIP")}
                  for p in pods}
        for pod, where in sorted(placed.items()):
            self._act("exec-call-vip", lambda: k("exec", pod, "-c", "web", "--", "/bin/labpod", "call", "--count", "2"),
                      pod=pod, node=where["node"])
            self._act("logs", lambda: k("logs", pod, "-c", "web"), pod=pod, node=where["node"])
            self._act("attach", lambda: self._attach(pod), pod=pod, node=where["node"])
            self._act("port-forward", lambda: self._port_forward(pod), pod=pod, node=where["node"])
            for url in (f"/api/v1/namespaces/default/pods/{pod}:8080/proxy/",
                        f"/api/v1/namespaces/default/pods/https:{pod}:8443/proxy/"):
                self._act("proxy-pod", lambda: k("get", "--raw", url), pod=pod, node=where["node"], url=url)
        for node in nodes:
            url = f"/api/v1/nodes/{node}/proxy/healthz"
            self._act("proxy-node-kubelet", lambda: k("get", "--raw", url), node=node, url=url)
        hw = nodes[-1]
        for url in (f"/api/v1/nodes/{hw}:{HOST_WEB_HTTP}/proxy/", f"/api/v1/nodes/https:{hw}:{HOST_WEB_HTTPS}/proxy/"):
            self._act("proxy-node-port", lambda: k("get", "--raw", url), node=hw, url=url)
        for url in ("/api/v1/namespaces/default/services/web:http/proxy/",
                    "/api/v1/namespaces/default/services/https:web:https/proxy/"):
            self._act("proxy-service", lambda: k("get", "--raw", url), url=url)
        sc = _scenarios.get(self.lab.state["scenario"])
        pod = sorted(placed)[0]
        for node in sc.read_only_nodes:   # a pod reads the kubelet's read-only port (no TLS, no authentication)
            ip = self.lab.topo.host(node).ip
            self._act("read-only-port", lambda: k("exec", pod, "-c", "web", "--", "/bin/busybox", "wget", "-q", "-O",
                                                  "-", f"http://{ip}:{READ_ONLY_PORT}/healthz"), pod=pod, node=node)
        for node in nodes:       # metrics-server (deployed with the cluster) scrapes every kubelet each 15 s
            self._act("metrics-scrape", lambda: _host.wait_until(lambda: self._scraped(node), 240,
                                                                  f"metrics-server scrape of {node}"), node=node)
        return {"pods": placed, "actions": self.actions, "errors": self.errors}

    def _scraped(self, node: str) -> bool:
        """The kubelet logged a request for its resource metrics (--vmodule=httplog=3) from metrics-server."""
        log = Path(self.lab.state["procs"][f"{node}-kubelet"]["log"])
        return any(f'URI="{SCRAPE_PATH}"' in line and "metrics-server" in line
                   for line in log.read_text(errors="replace").splitlines() if '"HTTP"' in line)

    # ---------------------------------------------------------------- streaming verbs
    def _popen(self, *args: str) -> subprocess.Popen:
        lab, cp = self.lab, self.lab.topo.control_plane
        cmd = [lab.state["bin"]["kubectl"], "--kubeconfig", str(lab.dir / "admin.kubeconfig"), *args]
        return subprocess.Popen(_host.in_netns(cp.ns, cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    @staticmethod
    def _read_until(proc: subprocess.Popen, text: str, timeout: float) -> str:
        deadline, seen = time.monotonic() + timeout, ""
        while time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                line = proc.stdout.readline()
                seen += line
                if text in line:
                    return seen
        raise CommpathError(f"kubectl {proc.args[-3:]}: no {text!r} within {timeout:.0f}s: "
                            f"{seen[-200:]} {proc.stderr.read()[-300:] if proc.poll() is not None else ''}")

    @staticmethod
    def _finish(proc: subprocess.Popen) -> None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)

    def _attach(self, pod: str) -> str:
        proc = self._popen("attach", "-i", pod, "-c", "echo")
        try:
            marker = f"commpath-attach-{pod}"
            proc.stdin.write(marker + "\n")
            proc.stdin.flush()
            return self._read_until(proc, marker, 60)
        finally:
            self._finish(proc)

    def _port_forward(self, pod: str) -> str:
        proc = self._popen("port-forward", f"pod/{pod}", ":8080", "--address", "127.0.0.1")
        try:
            line = self._read_until(proc, "Forwarding from", 60)
            port = line.strip().splitlines()[-1].split(":")[-1].split()[0]
            cp = self.lab.topo.control_plane
            res = _host.run(cp.ns, ["busybox", "wget", "-q", "-O", "-", f"http://127.0.0.1:{port}/pf"], timeout=60)
            return res.stdout
        finally:
            self._finish(proc)

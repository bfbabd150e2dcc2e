"""The Kubernetes side of `commpath cluster capture`: deploy the agents, follow them, collect, remove.

Everything goes through the API server with the official ``kubernetes`` client: the objects are
created (a namespace of the run's own unless ``--namespace`` names one, the inventory as a
ConfigMap, the agents as a DaemonSet), each host's files come back as a tar stream of an
``exec`` (no SSH, no shared storage), and :class:`ClusterCapture`, a context manager, deletes what
it created when it ends, also on Ctrl-C, SIGTERM or an error. A first Ctrl-C while the agents
capture ends the capture early (what was captured is collected); any other interrupts the run.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .._version import __version__
from ..errors import CommpathError
from .cluster_tar import TarPipe

AGENT_NAME = "commpath-agent"
INVENTORY_KEY = "inventory.yaml"
CAPTURES = "/captures"
#: The capabilities the agent keeps: raw sockets and promiscuous mode for capturing, and SYS_PTRACE only
#: for the kernel's read-access check on ``/proc/PID/root`` and ``environ`` of the host's components
#: (capture/hostconfig.py reads their config files there): a reader whose capabilities are not a superset
#: of the kubelet's is refused without it. The agent never calls ptrace(2); nothing else is kept.
CAPABILITIES = ["NET_RAW", "NET_ADMIN", "SYS_PTRACE"]
CONTROL_PLANE_TAINTS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
REQUEST_TIMEOUT = 30
#: Why a container waits that no waiting mends: the agent on that host is given up at once.
TERMINAL_REASONS = ("ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError", "CrashLoopBackOff")


@dataclass
class Plan:
    """What one run deploys."""

    image: str
    inventory_yaml: str
    duration: float
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    namespace: str | None = None           # an existing namespace; None: one of the run's own
    pull_policy: str = "IfNotPresent"
    max_size_mb: float = 500.0
    ifaces: list[str] = field(default_factory=list)
    start_timeout: float = 300.0

    @property
    def own_namespace(self) -> bool:
        return self.namespace is None

    @property
    def ns(self) -> str:
        return self.namespace or f"commpath-{self.run_id}"

    @property
    def name(self) -> str:
        return f"{AGENT_NAME}-{self.run_id}"

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": AGENT_NAME, "app.kubernetes.io/instance": self.name,
                "app.kubernetes.io/component": "capture-agent", "app.kubernetes.io/part-of": "commpath",
                "app.kubernetes.io/managed-by": "commpath", "app.kubernetes.io/version": __version__}

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/name={AGENT_NAME},app.kubernetes.io/instance={self.name}"


def manifests(plan: Plan) -> list[dict]:
    """The objects of a run, in creation order: namespace (if its own), ConfigMap, DaemonSet."""
    meta = lambda name, **extra: {"name": name, "labels": dict(plan.labels), **extra}   # noqa: E731
    objs: list[dict] = []
    if plan.own_namespace:
        ns_meta = meta(plan.ns)
        ns_meta["labels"]["pod-security.kubernetes.io/enforce"] = "privileged"   # host network and PID, NET_ADMIN, SYS_PTRACE
        objs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": ns_meta})
    objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(plan.name, namespace=plan.ns),
                 "data": {INVENTORY_KEY: plan.inventory_yaml}})
    cmd = ["python3", "-m", "commpath.capture.cluster_pod", "run", "--root", CAPTURES,
           "--inventory", f"/etc/commpath/{INVENTORY_KEY}", "--duration", f"{plan.duration:g}",
           "--max-size", f"{plan.max_size_mb:g}"]
    for iface in plan.ifaces:
        cmd += ["--iface", iface]
    disk = f"{int(plan.max_size_mb) + 200}Mi"       # capture files plus the agent's reserve
    container = {
        "name": "agent", "image": plan.image, "imagePullPolicy": plan.pull_policy, "command": cmd,
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                {"name": "COMMPATH_CAPTURE_RESERVE_MB", "value": "16"}],
        "securityContext": {"privileged": False, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"], "add": list(CAPABILITIES)},
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi", "ephemeral-storage": "64Mi"},
                      "limits": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": disk}},
        "volumeMounts": [{"name": "captures", "mountPath": CAPTURES},
                         {"name": "tmp", "mountPath": "/tmp"},
                         {"name": "inventory", "mountPath": "/etc/commpath", "readOnly": True}],
    }
    tolerations = [{"key": t, "operator": "Exists", "effect": "NoSchedule"} for t in CONTROL_PLANE_TAINTS]
    tolerations.append({"operator": "Exists", "effect": "NoSchedule"})      # other tainted hosts too
    objs.append({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta(plan.name, namespace=plan.ns),
        "spec": {
            "selector": {"matchLabels": {k: plan.labels[k] for k in ("app.kubernetes.io/name",
                                                                       "app.kubernetes.io/instance")}},
            "template": {
                "metadata": {"labels": dict(plan.labels)},
                "spec": {
                    # the host's network to capture on; the host's process table to record its components'
                    # command lines and config files (host_config of the manifest), read-only from /proc
                    "hostNetwork": True, "hostPID": True, "dnsPolicy": "ClusterFirstWithHostNet",
                    "automountServiceAccountToken": False, "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 10, "tolerations": tolerations,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "captures", "emptyDir": {"sizeLimit": disk}},
                                {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
                                {"name": "inventory", "configMap": {"name": plan.name}}],
                }}}})
    return objs


def _client():
    try:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
    except ImportError:
        raise CommpathError("`cluster capture` needs the kubernetes client: pip install 'commpath[cluster]'") from None
    return client, ApiException


@dataclass
class Host:
    """One agent pod and what became of it."""

    node: str
    pod: str
    state: str = "pending"
    role: str | None = None
    interfaces: list[str] = field(default_factory=list)
    bytes: int = 0
    error: str | None = None
    collected: list[str] = field(default_factory=list)


class ClusterCapture:
    """Deploys ``plan`` with ``api_client`` on enter and deletes what it created on exit (whatever happened).

    ``say`` gets one progress line at a time."""

    def __init__(self, api_client, plan: Plan, say=print):
        self.api, self.plan, self.say = api_client, plan, say
        client, self.ApiException = _client()
        self.core, self.apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
        self.created: list[tuple[str, str]] = []          # (kind, name), in creation order
        self.hosts: dict[str, Host] = {}
        self.stop_early = threading.Event()
        self.phase = "deploy"
        self.timings: dict[str, float] = {}
        self._previous: dict = {}
        self.interrupted: str | None = None     # the signal that aborts the run, once one did

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum, _frame):
        if signum == signal.SIGINT and self.phase == "capture" and not self.stop_early.is_set():
            self.say("interrupted: ending the capture now and collecting what was captured (Ctrl-C again to abort)")
            self.stop_early.set()
            return
        # remembered as well as raised: the kubernetes client turns a KeyboardInterrupt raised inside its
        # websocket calls (an exec) into ApiException(status=0), which a poll would take for an agent's error
        self.interrupted = signal.Signals(signum).name
        raise KeyboardInterrupt(self.interrupted)

    def _abort_if_interrupted(self) -> None:
        if self.interrupted:
            raise KeyboardInterrupt(self.interrupted)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.deploy()
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(self, exc_type, exc, _tb):
        if self._previous:
            signal.signal(signal.SIGINT, signal.SIG_IGN)   # the clean-up is bounded: let it finish
        try:
            self.remove()
        finally:
            for s, h in self._previous.items():
                signal.signal(s, h)
            self._previous = {}
        if self.interrupted and exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
            raise KeyboardInterrupt(self.interrupted) from exc    # an interrupt the client wrapped: one still
        return False

    # ------------------------------------------------------------------ deploy
    def deploy(self) -> None:
        t0 = time.monotonic()
        for obj in manifests(self.plan):
            kind, name = obj["kind"], obj["metadata"]["name"]
            try:
                if kind == "Namespace":
                    self.core.create_namespace(obj, _request_timeout=REQUEST_TIMEOUT)
                elif kind == "ConfigMap":
                    self.core.create_namespaced_config_map(self.plan.ns, obj, _request_timeout=REQUEST_TIMEOUT)
                else:
                    self.apps.create_namespaced_daemon_set(self.plan.ns, obj, _request_timeout=REQUEST_TIMEOUT)
            except self.ApiException as exc:
                raise CommpathError(f"cluster capture: creating {kind} {self.plan.ns}/{name}: the API server "
                                    f"answered {exc.status} {exc.reason}") from None
            self.created.append((kind, name))
        self.say(f"deployed DaemonSet {self.plan.ns}/{self.plan.name} (image {self.plan.image})")
        self.timings["deploy_s"] = time.monotonic() - t0

    def _pods(self) -> list:
        return self.core.list_namespaced_pod(self.plan.ns, label_selector=self.plan.selector,
                                             _request_timeout=REQUEST_TIMEOUT).items

    def _desired(self) -> int | None:
        ds = self.apps.read_namespaced_daemon_set_status(self.plan.name, self.plan.ns, _request_timeout=REQUEST_TIMEOUT)
        st = ds.status
        if st is None or st.observed_generation is None:
            return None
        return int(st.desired_number_scheduled or 0)

    def wait_capturing(self) -> list[Host]:
        """Until every scheduled agent captures (or failed, or ``start_timeout``); the capturing hosts."""
        t0 = time.monotonic()
        deadline = t0 + self.plan.start_timeout
        said: dict[str, str] = {}
        while True:
            desired = self._desired()
            for pod in self._pods():
                node = pod.spec.node_name
                if not node:
                    continue
                host = self.hosts.setdefault(node, Host(node=node, pod=pod.metadata.name))
                host.pod = pod.metadata.name
                if host.state in ("capturing", "done", "failed"):
                    continue
                waiting = _waiting_reason(pod)
                if pod.status.phase == "Running":
                    self._update(host)
                elif waiting:
                    host.state = "failed" if waiting.split(":")[0] in TERMINAL_REASONS else "pending"
                    host.error = waiting
                if said.get(node) != (host.state, host.error):
                    said[node] = (host.state, host.error)
                    self.say(f"{node}: {_describe(host)}")
            ready = [h for h in self.hosts.values() if h.state in ("capturing", "done")]
            settled = all(h.state in ("capturing", "done", "failed") for h in self.hosts.values())
            if desired is not None and len(self.hosts) >= desired and settled and self.hosts:
                break
            if desired == 0:
                raise CommpathError("cluster capture: the DaemonSet has no host to run on (no schedulable node)")
            if time.monotonic() > deadline:
                for h in self.hosts.values():
                    if h.state not in ("capturing", "done", "failed"):
                        h.state = "failed"
                        h.error = h.error or f"not capturing after {self.plan.start_timeout:.0f}s"
                        self.say(f"{h.node}: {_describe(h)}")
                break
            self._abort_if_interrupted()
            time.sleep(1.0)          # polls the API server; bounded by start_timeout
        ready = [h for h in self.hosts.values() if h.state in ("capturing", "done")]
        if not ready:
            raise CommpathError("cluster capture: no agent started: " +
                                "; ".join(f"{h.node}: {h.error}" for h in self.hosts.values()))
        self.timings["start_s"] = time.monotonic() - t0
        return ready

    # ------------------------------------------------------------------ capture
    def wait_done(self, progress_every: float = 30.0) -> None:
        """Until every agent ended its capture (its duration, a limit, or ``stop_early``)."""
        self.phase = "capture"
        t0 = time.monotonic()
        grace = max(60.0, self.plan.duration * 0.1)
        deadline = t0 + self.plan.duration + grace
        last = 0.0
        active = lambda: [h for h in self.hosts.values() if h.state == "capturing"]  # noqa: E731
        while active() and not self.stop_early.is_set():
            now = time.monotonic()
            wait = min(progress_every, max(1.0, t0 + self.plan.duration - now))
            if self.stop_early.wait(wait):
                break
            for h in active():
                self._update(h)
            self._abort_if_interrupted()
            if time.monotonic() - last >= progress_every or not active():
                last = time.monotonic()
                self.say(f"{time.monotonic() - t0:5.0f}/{self.plan.duration:.0f}s  " + ",  ".join(
                    f"{h.node}: {h.bytes / 1e6:.1f} MB{'' if h.state == 'capturing' else ' ' + h.state}"
                    for h in self.hosts.values()))
            if time.monotonic() > deadline:
                break
        self.phase = "stop"
        for h in active():
            self._stop(h)
        self.timings["capture_s"] = time.monotonic() - t0

    def _exec(self, pod: str, args: list[str], sink=None, timeout: float = 120.0) -> tuple[int, bytes, str]:
        """Run the agent module in ``pod``; stdout to ``sink`` (a writable) or returned; (exit code, stdout, stderr).

        The websocket's frames are read here one at a time, not through ``WSClient.update``: that joins
        every frame already available into one growing bytes object (and keeps a copy of all output),
        which stalled a 200 MB tar stream after 0.3 MB; frame by frame it streams at network speed."""
        from kubernetes.stream import stream
        from websocket import ABNF

        resp = stream(self.core.connect_get_namespaced_pod_exec, pod, self.plan.ns,
                      command=["python3", "-m", "commpath.capture.cluster_pod", *args, "--root", CAPTURES],
                      stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False, binary=True)
        out, err, status = bytearray(), bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        sock = resp.sock
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CommpathError(f"exec in {self.plan.ns}/{pod}: no end within {timeout:.0f}s")
                sock.settimeout(min(left, 60.0))
                op, frame = sock.recv_data_frame(True)
                if op == ABNF.OPCODE_CLOSE:
                    break
                if op not in (ABNF.OPCODE_BINARY, ABNF.OPCODE_TEXT) or not frame.data:
                    continue
                channel, data = frame.data[0], frame.data[1:]
                if not data:
                    continue                # each channel opens with an empty frame
                if channel == 1:
                    if sink is not None:
                        sink.write(data)
                    else:
                        out += data
                elif channel == 2:
                    err += data
                elif channel == 3:          # the exec's status, JSON, as the stream ends
                    status += data
        except Exception as exc:            # noqa: BLE001 - websocket and socket errors alike
            if isinstance(exc, CommpathError):
                raise
            raise CommpathError(f"exec in {self.plan.ns}/{pod}: {type(exc).__name__}: {exc}") from None
        finally:
            resp.close()
        return _exit_code(bytes(status)), bytes(out), err.decode(errors="replace")

    def _update(self, host: Host) -> None:
        try:
            code, out, err = self._exec(host.pod, ["status"], timeout=60)
        except (CommpathError, self.ApiException, OSError) as exc:
            self._abort_if_interrupted()
            host.error = str(exc)
            return
        if code != 0:
            host.error = err.strip().splitlines()[-1] if err.strip() else f"status: exit {code}"
            return
        st = json.loads(out.decode().strip().splitlines()[-1])
        host.state = {"starting": "starting", "capturing": "capturing", "done": "done"}.get(st.get("state"), "failed")
        host.role, host.interfaces, host.bytes = st.get("role"), st.get("interfaces") or [], int(st.get("bytes") or 0)
        host.error = st.get("error")

    def _stop(self, host: Host) -> None:
        code, _out, err = self._exec(host.pod, ["stop", "--timeout", "60"], timeout=90)
        if code != 0:
            host.error = err.strip()[-300:]
        self._update(host)
        self.say(f"{host.node}: {_describe(host)}")

    # ------------------------------------------------------------------ collect
    def collect(self, out: Path) -> dict[str, Host]:
        """Every capturing host's folder streamed back (tar over exec) into ``out/<node>/``."""
        self.phase = "collect"
        t0 = time.monotonic()
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for host in self.hosts.values():
            if host.state != "done":
                continue
            t1 = time.monotonic()
            reader = TarPipe()
            worker = threading.Thread(target=reader.extract, args=(out, host.node), daemon=True)
            worker.start()
            try:
                code, _o, err = self._exec(host.pod, ["pack"], sink=reader, timeout=max(600.0, host.bytes / 1e6))
            finally:
                reader.close()
                worker.join(timeout=120)
            if code != 0 or reader.error:
                host.error = reader.error or err.strip()[-300:] or f"pack: exit {code}"
                host.state = "failed"
                self.say(f"{host.node}: collecting failed: {host.error}")
                continue
            host.collected = reader.names
            self.say(f"{host.node}: collected {len(reader.names)} files, {reader.bytes / 1e6:.1f} MB "
                     f"in {time.monotonic() - t1:.1f}s")
        self.timings["collect_s"] = time.monotonic() - t0
        return self.hosts

    # ------------------------------------------------------------------ remove
    def remove(self, timeout: float = 180.0) -> list[str]:
        """Delete what this run created (newest first) and wait until the API server no longer has it."""
        t0 = time.monotonic()
        from kubernetes import client

        body = client.V1DeleteOptions(propagation_policy="Foreground")
        left = []
        for kind, name in reversed(self.created):
            try:
                if kind == "Namespace":
                    self.core.delete_namespace(name, body=body, _request_timeout=REQUEST_TIMEOUT)
                elif kind == "ConfigMap":
                    self.core.delete_namespaced_config_map(name, self.plan.ns, body=body, _request_timeout=REQUEST_TIMEOUT)
                else:
                    self.apps.delete_namespaced_daemon_set(name, self.plan.ns, body=body, _request_timeout=REQUEST_TIMEOUT)
            except self.ApiException as exc:
                if exc.status != 404:
                    left.append(f"{kind} {name}: delete answered {exc.status}")
            except Exception as exc:  # noqa: BLE001 - keep deleting the others
                left.append(f"{kind} {name}: {type(exc).__name__}: {exc}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            remaining = self.remaining()
            if not remaining:
                break
            time.sleep(1.0)          # namespace finalizers run in the controller-manager; bounded
        else:
            left += self.remaining()
        if self.created:
            self.say("removed everything it created" if not left else f"could not remove: {'; '.join(left)}")
        self.created = [] if not left else self.created
        self.timings["remove_s"] = time.monotonic() - t0
        return left

    def remaining(self) -> list[str]:
        """What of this run the API server still has (objects and agent pods)."""
        out = []
        for kind, name in self.created:
            try:
                if kind == "Namespace":
                    self.core.read_namespace(name, _request_timeout=REQUEST_TIMEOUT)
                elif kind == "ConfigMap":
                    self.core.read_namespaced_config_map(name, self.plan.ns, _request_timeout=REQUEST_TIMEOUT)
                else:
                    self.apps.read_namespaced_daemon_set(name, self.plan.ns, _request_timeout=REQUEST_TIMEOUT)
                out.append(f"{kind} {name}")
            except self.ApiException as exc:
                if exc.status != 404:
                    out.append(f"{kind} {name} ({exc.status})")
        try:
            out += [f"Pod {p.metadata.name}" for p in self._pods()]
        except self.ApiException as exc:
            if exc.status != 404:
                out.append(f"pods ({exc.status})")
        return out


def _exit_code(status: bytes) -> int:
    """An exec's exit code from the API server's status message (0: Success; else the ExitCode cause)."""
    try:
        st = json.loads(status.decode() or "{}")
    except ValueError:
        return 1
    if st.get("status") == "Success":
        return 0
    for cause in (st.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode" and str(cause.get("message", "")).isdigit():
            return int(cause["message"])
    return 1


def _waiting_reason(pod) -> str | None:
    for cs in (pod.status.container_statuses or []) if pod.status else []:
        w = cs.state.waiting if cs.state else None
        if w and w.reason not in (None, "ContainerCreating", "PodInitializing"):
            return f"{w.reason}: {w.message or ''}".strip().rstrip(":")
    return None


def _describe(h: Host) -> str:
    if h.state == "capturing":
        return f"capturing as {h.role} on {', '.join(h.interfaces)}"
    if h.state == "done":
        return f"capture ended, {h.bytes / 1e6:.1f} MB" + (f" ({h.error})" if h.error else "")
    return f"{h.state}" + (f": {h.error}" if h.error else "")


__all__ = ["AGENT_NAME", "CAPABILITIES", "ClusterCapture", "Host", "Plan", "manifests"]

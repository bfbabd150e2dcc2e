"""`commpath cluster capture`: its objects, its agent image run with two capabilities, and a whole run on the
real-cluster lab scored against the lab's audit truth."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from commpath.capture.cluster import CAPABILITIES, Plan, manifests
from commpath.cluster_cli import duration_seconds, unseen_without_control_plane
from commpath.errors import CommpathError

REPO = Path(__file__).resolve().parents[1]
ROOT = os.geteuid() == 0
TOOLS = ("ip", "nsenter", "unshare", "etcd", "containerd", "runc", "ctr", "iptables", "gcc", "tcpdump", "dumpcap",
         "strip", "setpriv")
_real_lab_ready = pytest.mark.skipif(
    not ROOT or any(shutil.which(t) is None for t in TOOLS) or not Path("/usr/lib/cni/bridge").exists()
    or not (shutil.which("go") or Path("/usr/local/go/bin/go").exists()),
    reason="the real lab needs root, Go, etcd, containerd, runc, CNI plugins, tcpdump and dumpcap (scripts/setup.sh)")


def needs_real_lab(test):
    """Skip without the real lab's tools; marked ``real_cluster`` so it runs after the rest of the suite,
    while the Kubernetes build that scripts/test.sh starts beside it finishes."""
    return pytest.mark.real_cluster(_real_lab_ready(test))
needs_image_tools = pytest.mark.skipif(
    not ROOT or any(shutil.which(t) is None for t in ("dumpcap", "ip", "ldd", "unshare", "setpriv", "chroot")),
    reason="building and running the agent image needs root, dumpcap, iproute2, unshare and setpriv")


def _objects(**kw) -> dict[str, dict]:
    plan = Plan(image="registry.example/commpath-agent:1", inventory_yaml="apiVersion: commpath/v1\n", duration=600,
                run_id="abc123", **kw)
    return {o["kind"]: o for o in manifests(plan)}


def test_the_daemonset_keeps_three_capabilities_and_runs_everywhere():
    objs = _objects()
    assert list(objs) == ["Namespace", "ConfigMap", "DaemonSet"]
    ds = objs["DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sc = container["securityContext"]
    # capturing (raw sockets, promiscuous mode) and reading the host's components under /proc/PID/root
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW", "NET_ADMIN", "SYS_PTRACE"]}
    assert CAPABILITIES == ["NET_RAW", "NET_ADMIN", "SYS_PTRACE"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"} == pod["securityContext"]["seccompProfile"]
    assert pod["hostNetwork"] is True and pod["hostPID"] is True and pod["automountServiceAccountToken"] is False
    tolerated = {(t.get("key"), t["effect"]) for t in pod["tolerations"]}
    assert {("node-role.kubernetes.io/control-plane", "NoSchedule"),
            ("node-role.kubernetes.io/master", "NoSchedule")} <= tolerated
    assert set(container["resources"]["limits"]) == {"cpu", "memory", "ephemeral-storage"}
    for obj in objs.values():
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "commpath-agent"
        assert labels["app.kubernetes.io/instance"] == "commpath-agent-abc123"
        assert {"app.kubernetes.io/part-of", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"} <= set(labels)
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert objs["ConfigMap"]["data"]["inventory.yaml"].startswith("apiVersion")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["inventory"] == "/etc/commpath" and "--inventory" in container["command"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e}
    assert env == {"NODE_NAME": "spec.nodeName", "HOST_IP": "status.hostIP"}


def test_an_existing_namespace_is_used_not_created():
    objs = _objects(namespace="audit")
    assert "Namespace" not in objs
    assert {o["metadata"]["namespace"] for o in objs.values()} == {"audit"}


def test_durations_and_the_paths_nodes_cannot_see():
    assert [duration_seconds(t) for t in ("90", "90s", "10m", "1h30m", "2.5")] == [90, 90, 600, 5400, 2.5]
    with pytest.raises(CommpathError, match="Go-style duration"):
        duration_seconds("10 minutes")
    assert unseen_without_control_plane() == ["control-plane-to-apiserver", "etcd"]


def test_the_kubectl_plugin_is_the_cluster_command():
    res = subprocess.run([sys.executable, "-c", "import sys; sys.argv=['kubectl-commpath','capture','--help'];"
                          "from commpath.cluster_cli import kubectl_plugin; kubectl_plugin()"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "usage: commpath cluster capture" in res.stdout


def test_a_collected_archive_may_hold_only_its_hosts_files(tmp_path):
    """The tar stream of a host is extracted as it arrives, and only as regular files in that host's folder."""
    from commpath.capture.cluster_tar import TarPipe

    def archive(*members: tuple[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    def collect(data: bytes, node: str = "node1") -> TarPipe:
        pipe = TarPipe(max_buffered=4096)
        worker = threading.Thread(target=pipe.extract, args=(tmp_path / "out", node))
        worker.start()
        for i in range(0, len(data), 1000):          # in pieces, as an exec stream delivers it
            pipe.write(data[i:i + 1000])
        pipe.close()
        worker.join(timeout=60)
        return pipe

    good = collect(archive(("node1/manifest.json", b"{}"), ("node1/node1.pcapng", b"x" * 50_000)))
    assert good.error is None and good.names == ["node1/manifest.json", "node1/node1.pcapng"]
    assert (tmp_path / "out/node1/node1.pcapng").read_bytes() == b"x" * 50_000
    for hostile in ("../escape", "node2/manifest.json", "node1/sub/deeper"):
        bad = collect(archive((hostile, b"nope")))
        assert bad.error and "unexpected entry" in bad.error, hostile
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out/node2").exists()


# ---------------------------------------------------------------------------------------------- the image
@pytest.fixture(scope="module")
def agent_image(tmp_path_factory):
    from commpath.capture.cluster_image import build

    return build(tmp_path_factory.mktemp("image") / "commpath-agent.tar", "commpath.local/commpath-agent:test")


def _unpack(info: dict, where: Path) -> Path:
    """The image's root file system, read as a runtime does: index -> manifest -> config and layer."""
    with tarfile.open(info["archive"]) as tar:
        blobs = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    index = json.loads(blobs["index.json"])
    (desc,) = index["manifests"]
    assert desc["annotations"]["io.containerd.image.name"] == info["name"]
    manifest = json.loads(blobs["blobs/sha256/" + desc["digest"].split(":")[1]])
    config = json.loads(blobs["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    (layer,) = manifest["layers"]
    rootfs = where / "rootfs"
    rootfs.mkdir()
    data = blobs["blobs/sha256/" + layer["digest"].split(":")[1]]
    assert hashlib.sha256(gzip.decompress(data)).hexdigest() == config["rootfs"]["diff_ids"][0].split(":")[1]
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(rootfs, filter="tar")
    return rootfs


TRAFFIC = """
import pathlib, socket, sys, time
folder = pathlib.Path(sys.argv[1])
size = lambda: sum(p.stat().st_size for p in folder.rglob("*.pcap*"))
srv = socket.socket()
srv.bind(("127.0.0.1", 6443))
srv.listen()
start, deadline = size(), time.monotonic() + 30
for _ in range(150):
    c = socket.create_connection(("127.0.0.1", 6443))
    a, _ = srv.accept()
    c.sendall(b"x" * 1000)
    a.recv(2000)
    c.close()
    a.close()
    if size() > start or time.monotonic() > deadline:
        break
    time.sleep(0.2)
"""


@needs_image_tools
@pytest.mark.netns
def test_the_agent_image_captures_with_net_raw_and_net_admin_only(agent_image, tmp_path):
    """The image's own interpreter and dumpcap, in a chroot of its root file system, with a bounding set of
    NET_RAW and NET_ADMIN (and SYS_CHROOT, to enter the chroot): capture loopback, then pack for collection."""
    rootfs = _unpack(agent_image, tmp_path)
    assert agent_image["layer_bytes"] < 150e6
    (rootfs / "etc/commpath/inventory.yaml").write_text(
        "apiserver: {endpoints: ['127.0.0.1:6443']}\ncontrol_plane: [{name: cpx, addresses: ['127.0.0.1']}]\n")
    py = ["chroot", str(rootfs), "/usr/local/bin/python3", "-m", "commpath.capture.cluster_pod"]
    script = f"""
set -e
ip link set lo up
mount -t proc proc {rootfs}/proc
mount --rbind /dev {rootfs}/dev
mount -t tmpfs tmpfs {rootfs}/captures
setpriv --bounding-set -all,+net_raw,+net_admin,+sys_chroot --inh-caps -all -- \
  {' '.join(py)} run --node cpx --host-ip 127.0.0.1 --inventory /etc/commpath/inventory.yaml --duration 600 &
agent=$!
until grep -q capturing {rootfs}/captures/.agent.state 2>/dev/null; do kill -0 $agent; sleep 0.1; done
{sys.executable} {tmp_path}/traffic.py {rootfs}/captures
{' '.join(py)} stop --node cpx
{' '.join(py)} pack --node cpx > {tmp_path}/cpx.tar
kill -TERM $agent
wait $agent
umount -R {rootfs}/dev
"""
    # connections to :6443 until the capture file has grown past its headers (bounded: 150 connections, 30 s),
    # since on a loaded machine the first packets after dumpcap opened lo may still be on their way to the file
    (tmp_path / "traffic.py").write_text(TRAFFIC)
    res = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--net", "sh", "-c", script],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    state = json.loads(res.stdout.strip().splitlines()[-1])
    assert state["state"] == "done" and state["role"] == "control-plane" and state["interfaces"] == ["lo"]
    with tarfile.open(tmp_path / "cpx.tar") as tar:
        tar.extractall(tmp_path / "got", filter="data")
    manifest = json.loads((tmp_path / "got/cpx/manifest.json").read_text())
    assert manifest["engine"] == "dumpcap" and manifest["status"] == "complete" and manifest["errors"] == []
    assert manifest["stop_reason"] == "SIGINT" and "host 127.0.0.1" in manifest["filter"]
    import commpath
    flows = commpath.read(str(tmp_path / "got/cpx")).flows
    assert ((flows["dst_port"] == 6443) & flows["syn_seen"]).any()


# ---------------------------------------------------------------------------------------------- the real lab
def _lines(proc: subprocess.Popen, sink: list[str], seen: threading.Condition) -> None:
    for line in proc.stderr:
        with seen:
            sink.append(line)
            seen.notify_all()
    with seen:
        seen.notify_all()


def _wait_for(lines: list[str], seen: threading.Condition, proc: subprocess.Popen, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with seen:
        while not condition(lines):
            assert proc.poll() is None or condition(lines), "".join(lines)[-3000:]
            assert time.monotonic() < deadline, "".join(lines)[-3000:]
            seen.wait(1.0)


@needs_real_lab
@pytest.mark.netns
@pytest.mark.timeout(3600)
def test_cluster_capture_on_the_real_lab_scored_against_the_audit_log(agent_image, tmp_path):
    """Up (the lab capturing every host itself, for the audit truth), import the agent image, run `commpath
    cluster capture` from the control-plane host while the lab exercises every path, end it with Ctrl-C;
    nothing it created remains, and every connection the audit log explains that crossed a node while the
    agents captured is labelled as the audit log says."""
    from commpath.lab.real import _host
    from commpath.lab.real._exercise import Exerciser
    from commpath.lab.real._record import ground_truth
    from commpath.lab.real.cluster import RealLab
    from commpath.lab.real.score import score

    name = f"rq{secrets.token_hex(3)}"
    lab = RealLab(name)
    lab_out, run_out = tmp_path / "lab", tmp_path / "run"
    lines: list[str] = []
    seen = threading.Condition()
    try:
        lab.up(capture_out=lab_out)
        # the hand-run manifests of deploy/ pass the real apiserver's strict validation and admission (a server
        # dry run; their namespace must exist for it, since a dry-run namespace is not there for the DaemonSets)
        lab.kubectl("create", "namespace", "commpath-capture")
        dry = lab.kubectl("apply", "--dry-run=server", "--validate=strict", "-f",
                          str(REPO / "deploy" / "daemonset.yaml"), check=False)
        lab.kubectl("delete", "namespace", "commpath-capture", "--wait=false")
        assert dry.returncode == 0 and dry.stdout.count("(server dry run)") == 3, (dry.stdout, dry.stderr)
        lab.import_image(Path(agent_image["archive"]))
        cp = lab.topo.control_plane
        cmd = [sys.executable, "-m", "commpath", "cluster", "capture", "--kubeconfig", str(lab.dir / "admin.kubeconfig"),
               "--duration", "30m", "--image", agent_image["name"], "--image-pull-policy", "Never",
               "--out", str(run_out), "--start-timeout", "600"]
        proc = subprocess.Popen(_host.in_netns(cp.ns, cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=REPO)
        threading.Thread(target=_lines, args=(proc, lines, seen), daemon=True).start()
        try:
            nodes = [n.name for n in lab.topo.nodes]
            _wait_for(lines, seen, proc, lambda ls: all(any(f"{n}: capturing as node on eth0" in x for x in ls)
                                                       for n in nodes), 900)
            done = Exerciser(lab).run()
            # the truth's window below ends 1 s before the agents stop: keep them capturing past the exercise's
            # last requests (not a wait for an event: a lower bound on the window, however fast the machine)
            time.sleep(2.5)
            proc.send_signal(signal.SIGINT)          # end the capture now: collect, remove, analyse
            proc.wait(timeout=1800)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
        left = lab.kubectl("get", "namespaces,daemonsets,configmaps,pods", "-A", "-l",
                           "app.kubernetes.io/part-of=commpath", "-o", "name").stdout.split()
        # a failure (an image no node has, never pulled) and SIGTERM while capturing: removed all the same
        bad = subprocess.run(_host.in_netns(cp.ns, [*cmd[:cmd.index("--image") + 1], "commpath.local/absent:1",
                                                    *cmd[cmd.index("--image") + 2:-2], "--start-timeout", "900",
                                                    "--out", str(tmp_path / "bad")]),
                             capture_output=True, text=True, timeout=900, cwd=REPO)
        bad_left = lab.kubectl("get", "namespaces,daemonsets,configmaps,pods", "-A", "-l",
                               "app.kubernetes.io/part-of=commpath", "-o", "name").stdout.split()
        lines2: list[str] = []
        term = subprocess.Popen(_host.in_netns(cp.ns, [*cmd[:-2], "--out", str(tmp_path / "term")]),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        threading.Thread(target=_lines, args=(term, lines2, seen), daemon=True).start()
        try:
            _wait_for(lines2, seen, term, lambda ls: sum("capturing as node" in x for x in ls) == len(nodes), 900)
            term.send_signal(signal.SIGTERM)
            term.wait(timeout=600)
        finally:
            if term.poll() is None:
                term.kill()
                term.wait(timeout=60)
        term_left = lab.kubectl("get", "namespaces,daemonsets,configmaps,pods", "-A", "-l",
                                "app.kubernetes.io/part-of=commpath", "-o", "name").stdout.split()
        # a host folder of 64 MiB comes back whole through the exec stream
        lines3: list[str] = []
        big = subprocess.Popen(_host.in_netns(cp.ns, [*cmd[:-2], "--no-analyze", "--duration", "60",
                                                      "--out", str(tmp_path / "big")]),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        threading.Thread(target=_lines, args=(big, lines3, seen), daemon=True).start()
        try:
            _wait_for(lines3, seen, big, lambda ls: sum("capturing as node" in x for x in ls) == len(nodes), 900)
            pods = json.loads(lab.kubectl("get", "pods", "-A", "-l", "app.kubernetes.io/part-of=commpath",
                                          "-o", "json").stdout)["items"]
            pod = next(p for p in pods if p["spec"]["nodeName"] == nodes[0])
            written = lab.kubectl("exec", "-n", pod["metadata"]["namespace"], pod["metadata"]["name"], "--",
                                  "python3", "-c", "import hashlib, os\nh = hashlib.sha256()\n"
                                  f"with open('/captures/{nodes[0]}/big.bin', 'wb') as f:\n"
                                  "    for _ in range(64):\n        b = os.urandom(1 << 20); h.update(b); f.write(b)\n"
                                  "print(h.hexdigest())", timeout=300).stdout.strip()
            big.wait(timeout=900)
        finally:
            if big.poll() is None:
                big.kill()
                big.wait(timeout=60)
        lab.stop_capture()
        lab.write_metadata(lab_out)
        with open(lab.state["audit_log"], "rb") as src, gzip.open(lab_out / "audit.log.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)         # where _record.ground_truth reads it, as `lab run` keeps it
        truth = ground_truth(lab, lab_out, done)
    finally:
        lab.down()
    log = "".join(lines)
    assert proc.returncode in (0, 1, 3), log[-3000:]     # analysed: clean, findings, or inconclusive
    assert left == [], left
    assert "removed everything it created" in log and "ending the capture now" in log
    assert done["errors"] == [] and truth["errors"] == []
    assert bad.returncode == 2 and "no agent started" in bad.stderr and "ErrImageNeverPull" in bad.stderr, \
        bad.stderr[-2000:]
    assert bad.stderr.strip().splitlines()[-1].startswith("commpath: error:") and "Traceback" not in bad.stderr
    assert "removed everything it created" in bad.stderr and bad_left == []
    assert term.returncode == 130 and "removed everything it created" in "".join(lines2) and term_left == [], \
        (term.returncode, term_left, "".join(lines2)[-3000:])     # what the run said when SIGTERM did not end it so
    got = tmp_path / "big" / nodes[0] / "big.bin"
    assert big.returncode == 0, "".join(lines3)[-2000:]
    assert got.stat().st_size == 64 << 20 and hashlib.sha256(got.read_bytes()).hexdigest() == written

    record = json.loads((run_out / "cluster-capture.json").read_text())
    assert sorted(h["node"] for h in record["hosts"] if h["state"] == "done") == sorted(nodes)
    assert record["control_plane_captured"] is False
    assert record["unseen_paths"] == ["control-plane-to-apiserver", "etcd"]
    report = json.loads((run_out / "analysis" / "report.json").read_text())
    assert {"control-plane-to-apiserver", "etcd"} <= set(report["coverage"]["unseen_paths"])
    verdicts = {p["id"]: p["verdict"] for p in report["paths"]}
    assert verdicts["etcd"] == "not-observable" and verdicts["control-plane-to-apiserver"] == "not-observable"

    # hostPID and SYS_PTRACE: each agent recorded its host's components from /proc, their config files read
    # through /proc/PID/root; this lab's control plane runs no kubelet, so no agent runs there (no apiserver)
    for node in nodes:
        hc = json.loads((run_out / node / "manifest.json").read_text())["host_config"]
        assert sorted(c["name"] for c in hc["components"]) == ["kube-proxy", "kubelet"], hc
        kubelet = next(c for c in hc["components"] if c["name"] == "kubelet")
        assert any(p.endswith(f"{node}/kubelet.yaml") for p in kubelet["files"]), kubelet.get("errors")
        assert not [e for e in kubelet.get("errors", []) if "ermission" in e["reason"]], kubelet["errors"]
    assert "PRIVATE KEY" not in "".join(m.read_text() for m in run_out.glob("*/manifest.json"))
    # analyze read them: the config facts of both kubelets, and what they say on the path they govern
    config = pd.read_parquet(run_out / "analysis" / "config.parquet")
    rotate = config[(config["component"] == "kubelet") & (config["key"] == "rotateCertificates") & config["effective"]]
    assert sorted(rotate["host"].astype(str)) == sorted(nodes) and set(rotate["value"]) == {"true"}, rotate
    assert not rotate["is_default"].any()
    kubelet_says = [e["said"] for e in {p["id"]: p for p in report["paths"]}["apiserver-to-kubelet"]["evidence"]
                    if e["source"] == "config"]
    assert sorted(s.split(":")[0] for s in kubelet_says) == sorted(f"{n} kubelet" for n in nodes), kubelet_says

    # the truth of the agents' window, on the paths a node can see
    starts = [json.loads(m.read_text()) for m in run_out.glob("*/manifest.json")]
    t0, t1 = max(m["start_ts"] for m in starts), min(m["stop_ts"] for m in starts)
    unseen = set(record["unseen_paths"])
    window = [c for c in truth["connections"] if t0 + 1 <= c["start"] <= t1 - 1]
    visible = [c for c in window if c["path"] not in unseen]
    assert {c["path"] for c in visible} >= {"pod-to-apiserver", "apiserver-to-kubelet", "apiserver-proxy"}, \
        {c["path"] for c in window}
    (run_out / "ground-truth.yaml").write_text(yaml.safe_dump({**truth, "connections": visible}, sort_keys=False))
    s = score(run_out, run_out / "inventory.yaml")
    assert s["wrong"] == [] and s["not_seen"] == 0, (s["wrong"][:10], s["not_seen"])
    assert s["accuracy"] == 1.0 and s["connections"] == len(visible) > 10
    # connections opened before the agents started (the kubelets' and kube-proxy's watches) are seen from their
    # middle, if still open: those seen are labelled right too
    earlier = [c for c in truth["connections"] if c["start"] < t0 and c["path"] not in unseen]
    (run_out / "ground-truth.yaml").write_text(yaml.safe_dump({**truth, "connections": earlier}, sort_keys=False))
    e = score(run_out, run_out / "inventory.yaml")
    assert e["wrong"] == [] and e["right"] > 0, e["wrong"][:10]
    assert {p["id"]: p["observed"] for p in report["paths"]}["node-to-apiserver"]
    timings = record["timings"]
    print(f"\ncluster capture: {len(visible)} audit-attributed node connections of the window labelled right, "
          f"{e['right']} of {len(earlier)} opened before it seen and right; timings {timings}; "
          f"image {agent_image['archive_bytes'] / 1e6:.1f} MB ({agent_image['layer_bytes'] / 1e6:.1f} MB unpacked)")

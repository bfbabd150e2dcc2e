"""The capture agent for real: engines, filter, limits, signals, manifest, refusals."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from commpath.capture.filters import bpf_error, default_filter

from _netns_pair import netns_pair, tcp_send, tcp_server

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="capturing needs root and network namespaces")

INVENTORY = """\
apiVersion: commpath/v1
kind: Inventory
apiserver: {endpoints: ["10.98.0.2:6443"], service: "10.96.0.1:443"}
control_plane: [{name: cp1, addresses: ["10.98.0.2"]}]
nodes: [{name: node1, addresses: ["10.98.0.1"], pod_cidrs: ["10.244.1.0/24"]}]
konnectivity: {enabled: true, server: "10.98.0.2:8132"}
etcd: ["10.98.0.2:2379"]
"""


def _compile_bpf(expr: str) -> bool:
    """libpcap's verdict (pcap_open_dead + pcap_compile: no privileges needed)."""
    return bpf_error(expr) is None


def test_default_filter_covers_documented_ports_and_control_plane(tmp_path):
    import yaml

    inv = yaml.safe_load(INVENTORY)
    node = default_filter("node", inv, "node1")
    cp = default_filter("control-plane", inv, "cp1")
    for term in ("port 10250", "port 10255", "host 10.98.0.2", "(host 10.96.0.1 and port 443)"):
        assert term in node       # which flows each term keeps: tests/test_cluster_filters.py
    assert "net 10.244.1.0/24" in node and node == cp       # Konnectivity agents dial the pods themselves
    assert _compile_bpf(node) and _compile_bpf(cp) and _compile_bpf(default_filter("node"))
    assert not _compile_bpf("tcp and (port") and "syntax error" in bpf_error("tcp and (port")


@needs_root
@pytest.mark.parametrize("extra, message", [
    (["--filter", "tcp and ("], "can't parse filter expression"),
    (["--iface", "nosuch0", "--engine", "tcpdump"], "nosuch0"),
    (["--inventory", "/nonexistent/inventory.yaml"], "/nonexistent/inventory.yaml: No such file"),
    (["--ring", "0"], "--ring must be at least 1"),
])
def test_bad_usage_is_one_line_exit_2(tmp_path, extra, message):
    iface = [] if "--iface" in extra else ["--iface", "lo"]
    res = subprocess.run([sys.executable, "-m", "commpath", "capture", "--role", "node", *iface, "--duration", "1",
                          "--out", str(tmp_path / "out"), *extra], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("commpath: error:") and "Traceback" not in res.stderr


def _agent(ns: str, out: Path, *extra: str, env=None) -> subprocess.Popen:
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "commpath", "capture", "--role", "node",
           "--host", "node1", "--iface", "eth0", "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **(env or {})))


def _wait_listening(out: Path, proc: subprocess.Popen, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mf = out / "manifest.json"
        if mf.exists() and json.loads(mf.read_text()).get("status") == "running":
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("agent did not start")


def _tshark_ports(files: list[Path], check=True, display_filter=None) -> list[tuple[int, int]]:
    pairs = []
    for f in files:
        cmd = ["tshark", "-r", str(f), "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport"]
        out = subprocess.run(cmd + (["-Y", display_filter] if display_filter else []),
                             capture_output=True, text=True, check=check).stdout
        pairs += [tuple(map(int, line.split("\t"))) for line in out.splitlines() if line.strip()]
    return pairs


def _capture_files(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if ".pcap" in p.name) if out.exists() else []


def _wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 30):
    """Waits for an observable state (packets in the file, files on disk), never a fixed time."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _fill(out: Path, proc: subprocess.Popen, burst, done, bursts: int = 200):
    """Sends bursts until ``done()``, each once the engine wrote something of the one before (a starved
    engine drops what its buffer cannot hold, so the number of bursts needed varies; the loop is bounded)."""
    def written() -> int:
        return sum(f.stat().st_size for f in _capture_files(out) if f.exists())

    for _ in range(bursts):
        if done():
            return
        before = written()
        burst()
        _wait_until(lambda: done() or written() != before, proc, "the engine to write")
    assert done(), f"not reached after {bursts} bursts"


def _wait_fins(out: Path, proc: subprocess.Popen, ports: list[int], server_port: int):
    """Until the capture holds the client FIN of every connection from ``ports`` (the engine wrote them)."""
    def seen():
        fins = _tshark_ports(_capture_files(out), check=False, display_filter="tcp.flags.fin == 1")
        return set(ports) <= {src for src, dst in fins if dst == server_port}
    _wait_until(seen, proc, f"FINs of {ports}")


@pytest.mark.netns
@needs_root
@pytest.mark.parametrize("engine", ["tcpdump", "dumpcap", "scapy"])
def test_engine_captures_filtered_traffic_and_writes_manifest(tmp_path, engine):
    if engine != "scapy" and not shutil.which(engine):
        pytest.skip(f"{engine} not installed")
    out = tmp_path / "cap"
    with netns_pair() as (a, b, ip_a, ip_b):
        srv1, srv2 = tcp_server(b, ip_b, 10250), tcp_server(b, ip_b, 7777)
        (tmp_path / "inv.yaml").write_text(INVENTORY.replace("10.98.0.2", "10.98.0.99"))
        proc = _agent(a, out, "--engine", engine, "--inventory", str(tmp_path / "inv.yaml"), "--duration", "30")
        _wait_listening(out, proc)
        dropped = tcp_send(a, ip_b, 7777, b"y" * 100, connections=2)  # no catalog port, not the cp address
        kept = tcp_send(a, ip_b, 10250, b"x" * 5000, connections=3)
        _wait_fins(out, proc, kept, 10250)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        srv1.close(), srv2.close()
    assert proc.returncode == 0, stderr
    assert f"engine {engine}" in stderr and "capturing" in stderr  # choice, reason and progress line
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "complete" and m["stop_reason"] == "SIGINT"
    assert m["host"] == "node1" and m["role"] == "node" and m["engine"] == engine and m["engine_version"]
    assert [i["name"] for i in m["interfaces"]] == ["eth0"] and "10.98.0.1/24" in m["interfaces"][0]["addresses"]
    assert m["filter_source"] == "default" and "port 10250" in m["filter"] and "host 10.98.0.99" in m["filter"]
    assert m["clock"]["clock"] == "CLOCK_REALTIME" and "clocksource" in m["clock"]
    assert m["start"] < m["stop"]
    files = [out / f["name"] for f in m["files"]]
    ports = _tshark_ports(files)
    assert {p for p, _ in ports if _ == 10250} == set(kept)
    assert not [p for p in ports if 7777 in p] and not set(dropped) & {p for p, _ in ports}
    assert m["packets_captured"] == len(ports)
    if engine != "scapy":
        assert m["packets_dropped"] == 0


@pytest.mark.netns
@needs_root
def test_sigterm_stops_cleanly_and_file_is_readable_by_commpath(tmp_path):
    import commpath

    out = tmp_path / "cap"
    with netns_pair() as (a, b, ip_a, ip_b):
        srv = tcp_server(b, ip_b, 10250)
        proc = _agent(a, out, "--engine", "tcpdump", "--filter", "tcp port 10250")
        _wait_listening(out, proc)
        local = tcp_send(a, ip_b, 10250, b"GET / HTTP/1.1\r\n\r\n", connections=2)
        _wait_fins(out, proc, local, 10250)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        srv.close()
    assert proc.returncode == 0, stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["stop_reason"] == "SIGTERM" and m["filter"] == "tcp port 10250" and m["filter_source"] == "user"
    cap = commpath.read(out)
    flows = cap.flows
    assert sorted(flows["src_port"].tolist()) == sorted(local)
    assert set(flows["dst_port"]) == {10250} and flows["handshake_seen"].all()
    assert cap.captures["host"].tolist() == ["node1"]


@pytest.mark.netns
@needs_root
def test_duration_ring_and_size_limits(tmp_path):
    with netns_pair() as (a, b, ip_a, ip_b):
        srv = tcp_server(b, ip_b, 6443)
        ring = tmp_path / "ring"
        proc = _agent(a, ring, "--engine", "tcpdump", "--ring", "3", "--max-size", "3", "--duration", "60",
                      "--filter", "tcp")
        _wait_listening(ring, proc)
        _fill(ring, proc, lambda: tcp_send(a, ip_b, 6443, b"z" * 200_000, connections=5),
              lambda: len(_capture_files(ring)) == 3)   # 1 MB bursts until the third 1 MB file: the ring turns
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        m = json.loads((ring / "manifest.json").read_text())
        assert m["status"] == "complete" and 1 < len(m["files"]) <= 3
        assert len(m["files"]) == 3 and sum(f["bytes"] for f in m["files"]) < 3e6 * 1.2
        for f in m["files"]:
            assert f["name"].endswith(".pcap")
            subprocess.run(["tshark", "-r", str(ring / f["name"]), "-c", "1"], check=True, capture_output=True)

        size = tmp_path / "size"
        proc = _agent(a, size, "--engine", "dumpcap", "--max-size", "0.5", "--duration", "60", "--filter", "tcp")
        _wait_listening(size, proc)
        _fill(size, proc, lambda: tcp_send(a, ip_b, 6443, b"z" * 200_000, connections=2),
              lambda: proc.poll() is not None)    # until dumpcap stops itself at 0.5 MB
        proc.communicate(timeout=30)
        m = json.loads((size / "manifest.json").read_text())
        assert m["stop_reason"] == "max-size" and proc.returncode == 0

        dur = tmp_path / "dur"
        proc = _agent(a, dur, "--engine", "tcpdump", "--duration", "1.5")
        proc.communicate(timeout=120)    # a hang guard; the manifest says why it stopped
        assert json.loads((dur / "manifest.json").read_text())["stop_reason"] == "duration"
        srv.close()


@needs_root
def test_refuses_without_capture_privileges(tmp_path):
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="cpt-noperm-"))  # pytest's tmp_path is private to root
    shared.chmod(0o777)
    try:
        _refusal(shared)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _refusal(out: Path):
    res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                          sys.executable, "-m", "commpath", "capture", "--role", "node", "--iface", "lo",
                          "--duration", "1", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "CAP_NET_RAW" in res.stderr and "Traceback" not in res.stderr
    assert not (out / "manifest.json").exists()


@needs_root
def test_container_capabilities_pick_dumpcap_and_refuse_tcpdump(tmp_path):
    if not shutil.which("dumpcap"):
        pytest.skip("dumpcap not installed")
    drop = ["setpriv", "--bounding-set=-all,+net_raw,+net_admin", "--inh-caps=-all"]
    base = [sys.executable, "-m", "commpath", "capture", "--role", "node", "--iface", "lo", "--duration", "1"]
    res = subprocess.run([*drop, *base, "--out", str(tmp_path / "a")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["engine"] == "dumpcap"
    res = subprocess.run([*drop, *base, "--engine", "tcpdump", "--out", str(tmp_path / "b")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "CAP_SETUID" in res.stderr


@needs_root
def test_full_disk_refusal(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    script = f"""
set -e
mount -t tmpfs -o size=4m commpath-test {mnt}
{sys.executable} -m commpath capture --role node --iface lo --duration 5 --out {mnt}/refused
"""
    # a private mount namespace: the tmpfs exists only for this shell, and goes with it
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "disk full" in res.stderr and res.stderr.count("\n") == 1


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 12 MB tmpfs mounted for the test, unmounted afterwards whatever happens."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "commpath-test", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _avail(path: Path) -> int:
    return shutil.disk_usage(path).free


@pytest.mark.netns
@needs_root
@pytest.mark.parametrize("engine", ["tcpdump", "dumpcap"])
def test_engine_keeps_the_reserve_at_any_packet_rate(tmp_path, small_tmpfs, engine):
    """The agent is frozen (SIGSTOP) while a flood is captured: only the engine's own limit can hold the reserve."""
    if not shutil.which(engine):
        pytest.skip(f"{engine} not installed")
    reserve = 4e6
    out = small_tmpfs / "cap"
    with netns_pair() as (a, b, ip_a, ip_b):
        srv = tcp_server(b, ip_b, 6443)
        proc = _agent(a, out, "--engine", engine, "--duration", "120", "--filter", "tcp",
                      env={"COMMPATH_CAPTURE_RESERVE_MB": "4"})
        _wait_listening(out, proc)
        limits = json.loads((out / "manifest.json").read_text())["limits"]
        engines = [e["pid"] for e in json.loads((out / ".commpath-capture.json").read_text())["engines"]]

        def engine_at_its_limit() -> bool:      # dumpcap stopped itself; tcpdump began its last file
            files = _capture_files(out)
            return len(files) >= limits["engine_files"] if engine == "tcpdump" else _gone(engines, 0)

        os.kill(proc.pid, signal.SIGSTOP)
        try:
            # 4 MB bursts as fast as the veth takes them until the engine reaches its own limit
            _fill(out, proc, lambda: tcp_send(a, ip_b, 6443, b"q" * 400_000, connections=10), engine_at_its_limit)
            tcp_send(a, ip_b, 6443, b"q" * 400_000, connections=10)   # and more after it
            assert engine_at_its_limit(), ([(f.name, f.stat().st_size) for f in _capture_files(out)], limits)
            flooded = _avail(small_tmpfs)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        _, stderr = proc.communicate(timeout=60)
        srv.close()
        kept = tmp_path / "kept"
        shutil.copytree(out, kept)
    assert flooded > reserve * 0.9, (flooded, limits)      # tmpfs pages: a little above the bytes written
    assert proc.returncode == 0, stderr
    m = json.loads((kept / "manifest.json").read_text())
    assert m["stop_reason"] == "disk-full" and m["status"] == "complete", m
    size = 12 * 2**20                                       # the tmpfs
    assert m["limits"]["engine_total_mb"] * 1e6 <= size - reserve
    total = sum(f["bytes"] for f in m["files"])
    assert 4e6 < total <= size - reserve, total
    for f in m["files"]:
        subprocess.run(["tshark", "-r", str(kept / f["name"]), "-c", "5"], check=True, capture_output=True)


def _gone(pids: list[int], timeout: float = 20) -> bool:
    """Whether every process in ``pids`` exits within ``timeout`` (waiting on pidfds, which signal the exit)."""
    fds = []
    for pid in pids:
        try:
            fds.append(os.pidfd_open(pid))
        except ProcessLookupError:
            continue
    try:
        deadline = time.monotonic() + timeout
        waiting = list(fds)
        while waiting:
            done, _, _ = select.select(waiting, [], [], max(0.0, deadline - time.monotonic()))
            waiting = [fd for fd in waiting if fd not in done]
            if not done:
                break
        return not waiting
    finally:
        for fd in fds:
            os.close(fd)


@pytest.mark.netns
@needs_root
@pytest.mark.parametrize("engine", ["tcpdump", "dumpcap"])
def test_sigkill_of_the_agent_takes_its_engine_and_the_next_start_cleans_up(tmp_path, engine):
    if not shutil.which(engine):
        pytest.skip(f"{engine} not installed")
    out = tmp_path / "cap"
    with netns_pair() as (a, b, ip_a, ip_b):
        srv = tcp_server(b, ip_b, 6443)
        proc = _agent(a, out, "--engine", engine, "--duration", "120", "--filter", "tcp")
        _wait_listening(out, proc)
        pid_file = json.loads((out / ".commpath-capture.json").read_text())
        engines = [e["pid"] for e in pid_file["engines"]]
        assert pid_file["agent"]["pid"] == proc.pid and engines
        ports = tcp_send(a, ip_b, 6443, b"k" * 3000, connections=2)
        _wait_fins(out, proc, ports, 6443)
        proc.kill()
        proc.communicate(timeout=30)
        assert _gone(engines), f"{engine} outlived the agent killed by SIGKILL"

        again = _agent(a, out, "--engine", engine, "--duration", "1", "--filter", "tcp")
        _, stderr = again.communicate(timeout=60)
        srv.close()
    assert again.returncode == 0, stderr
    assert "did not end" in stderr
    m = json.loads((out / "manifest.json").read_text())
    prev = m["previous_run"]
    assert prev["agent_pid"] == proc.pid and prev["engines_stopped"] == [] and prev["files"]
    kept = out / prev["moved_to"]
    old = json.loads((kept / "manifest.json").read_text())
    assert old["status"] == "interrupted" and old["stop_reason"] == "agent-killed"
    assert set(ports) <= {src for src, dst in _tshark_ports([kept / f for f in prev["files"]], check=False)}
    assert not (out / ".commpath-capture.json").exists()
    assert m["files"] and all((out / f["name"]).is_file() for f in m["files"])


@needs_root
def test_an_engine_that_outlived_its_agent_is_stopped_at_the_next_start(tmp_path):
    """An orphan of an older agent (no parent-death signal): the pid file names it, the next start stops it."""
    from commpath.capture._leftovers import start_ticks

    out = tmp_path / "cap"
    out.mkdir()
    orphan = subprocess.Popen(["tcpdump", "-i", "lo", "-w", str(out / "node1.pcap"), "-U", "-Z", "root", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in orphan.stderr:            # its ready line: the file is open
            if "listening on" in line:
                break
        (out / ".commpath-capture.json").write_text(json.dumps({
            "agent": {"pid": 1, "ticks": -1}, "stem": "node1", "started": "2026-01-02T03:04:05+00:00",
            "engines": [{"pid": orphan.pid, "ticks": start_ticks(orphan.pid)}]}))
        res = subprocess.run([sys.executable, "-m", "commpath", "capture", "--role", "node", "--host", "node1",
                              "--iface", "lo", "--engine", "tcpdump", "--duration", "1", "--out", str(out)],
                             capture_output=True, text=True, timeout=60)
        assert orphan.wait(timeout=10) is not None
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
    assert res.returncode == 0, res.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["previous_run"]["engines_stopped"] == [orphan.pid]
    assert (out / "interrupted-20260102030405" / "node1.pcap").exists()
    assert [f["name"] for f in m["files"]] == ["node1.pcap"]


def test_engine_limits_fit_the_budget_with_a_packet_past_every_file():
    """Whatever the budget, ring and engine: files x (size + one snap-length packet) fit the disk budget."""
    from commpath.capture._engines import OVERSHOOT_MB, limits

    refused = 0
    for budget in (0.2, 3.0, 5.0, 8.3, 64.0, 1000.0, 250_000.0):
        for max_mb in (None, 0.5, 3.0, 500.0):
            for ring in (None, 1, 2, 3, 10, 100):
                for engine, procs in (("tcpdump", 1), ("tcpdump", 3), ("dumpcap", 1), ("scapy", 1)):
                    try:
                        lim = limits(budget, max_mb, ring, engine, procs)
                    except ValueError:
                        refused += 1
                        assert budget < 3 * 2 * (1 + OVERSHOOT_MB) or ring
                        continue
                    assert lim.files >= 1 and lim.file_mb > 0 and lim.wrap == bool(ring)
                    worst = (lim.files * (lim.file_mb + OVERSHOOT_MB) if lim.wrap or engine == "tcpdump"
                             else lim.total_mb + OVERSHOOT_MB)
                    assert worst * procs <= budget + 1e-9, (budget, max_mb, ring, engine, lim)
                    assert not ring or lim.files <= ring
                    assert engine != "tcpdump" or lim.file_mb == int(lim.file_mb)
                    if max_mb is not None and not ring and engine == "dumpcap" and max_mb + OVERSHOOT_MB <= budget:
                        assert lim.reason == "max-size" and lim.total_mb == max_mb
    assert refused


def test_engine_readiness_is_an_event_and_a_silent_exit_is_a_failure():
    """An engine that ends without its ready line never counts as started, however fast the machine."""
    from commpath.capture._engines import _Process

    failed = _Process(["sh", "-c", "echo 'tcpdump: nosuch0: No such device exists' >&2; exit 1"], r"listening on")
    assert failed.wait_ready(30) is False and failed.proc.returncode == 1
    assert failed.stderr == ["tcpdump: nosuch0: No such device exists"]
    ready = _Process(["sh", "-c", "echo 'listening on lo' >&2; exec tail -f /dev/null"], r"listening on")
    try:
        assert ready.wait_ready(30) is True
    finally:
        ready.stop()

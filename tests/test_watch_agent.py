"""`commpath watch` beside the real capture agent: dumpcap's ring files in a network namespace this test
creates (and removes), each taken once it closes, the metrics those of an analyze of the agent's files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import commpath

from _netns_pair import netns_pair, tcp_send, tcp_server
from _watch_proc import WAIT, WatchProcess, samples

INVENTORY = """\
apiVersion: commpath/v1
kind: Inventory
apiserver: {endpoints: ["10.98.0.2:6443"]}
control_plane: [{name: cp1, addresses: ["10.98.0.2"]}]
nodes: [{name: node1, addresses: ["10.98.0.1"]}]
"""

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(os.geteuid() != 0 or shutil.which("dumpcap") is None,
                                 reason="capturing needs root, network namespaces and dumpcap")]


def _files(ring: Path) -> list[Path]:
    return sorted(p for p in ring.glob("node1_*.pcapng"))


def _written(ring: Path) -> tuple[int, int]:
    """(ring files, their bytes): changes whenever the engine wrote (a loaded machine may drop a burst's
    packets, so one burst need not fill a file)."""
    files = _files(ring)
    return len(files), sum(f.stat().st_size for f in files if f.exists())


def _until(condition, what: str, agent: subprocess.Popen | None = None, timeout: float = WAIT) -> None:
    """Until ``condition()`` (an observable state: files on disk, a manifest), bounded."""
    deadline = time.monotonic() + timeout
    while not condition():
        if agent is not None:
            assert agent.poll() is None, agent.communicate()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _window_files(line: str) -> int:
    """N of the watch's "window: N file(s), ..." line (0 for any other line)."""
    prefix = "commpath watch: window: "
    return int(line[len(prefix):].split()[0]) if line.startswith(prefix) else 0


def _stop(agent, watch, srv) -> None:
    """Kill the agent if it still runs, stop the watch (which must exit 0) and close the traffic server."""
    if agent.poll() is None:
        agent.kill()
        agent.communicate()
    if watch is not None:
        assert watch.stop() == 0
    srv.close()


def test_watch_beside_the_capture_agent(tmp_path):
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(INVENTORY)
    ring, out = tmp_path / "ring", tmp_path / "out"
    with netns_pair() as (a, b, ip_a, ip_b):
        srv = tcp_server(b, ip_b, 6443)
        agent = subprocess.Popen(["ip", "netns", "exec", a, sys.executable, "-m", "commpath", "capture", "--role",
                                  "node", "--host", "node1", "--iface", "eth0", "--engine", "dumpcap", "--ring", "500",
                                  "--max-size", "50", "--filter", "tcp", "--duration", "600", "--out", str(ring)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watch = None
        try:
            _until(lambda: (ring / "manifest.json").exists()
                   and json.loads((ring / "manifest.json").read_text() or "{}").get("status") == "running",
                   "the agent to listen", agent)
            watch = WatchProcess(str(ring), "--out", str(out), "--inventory", str(inventory), "--interval", "0.2")
            # 0.1 MB ring files: bursts until the watch took two of them while the agent still writes the next
            for _ in range(50):
                before = _written(ring)
                tcp_send(a, ip_b, 6443, b"z" * 60_000, connections=2)
                _until(lambda: _written(ring) != before, "the engine to write", agent)
                if any(_window_files(ln) >= 2 for ln in watch.err):
                    break
            watch.wait_err(lambda ln: _window_files(ln) >= 2)
            assert json.loads((ring / "manifest.json").read_text())["status"] == "running"
            assert agent.poll() is None
            agent.send_signal(signal.SIGINT)
            agent.communicate(timeout=WAIT)
            manifest = json.loads((ring / "manifest.json").read_text())
            assert manifest["status"] == "complete"
            names = [f["name"] for f in manifest["files"]]
            assert len(names) >= 3
            watch.wait_err(lambda ln: _window_files(ln) == len(names))
            got = watch.scrape()
        finally:
            _stop(agent, watch, srv)

    an = commpath.open(ring, inventory=str(inventory))
    assert samples(got, "commpath_watch_files_total") == {(("outcome", "analysed"),): float(len(names))}
    assert {dict(k)["path"]: v for k, v in samples(got, "commpath_path_flows_seen_total").items()} \
        == {p: float(n) for p, n in an.flows["path"].astype(str).value_counts().items()}
    assert {dict(k)["path"]: v for k, v in samples(got, "commpath_path_flows").items()} \
        == {p: float(n) for p, n in zip(an.paths["id"].astype(str), an.paths["flows"])}
    assert {dict(k)["path"]: dict(k)["verdict"] for k, v in samples(got, "commpath_path_verdict").items() if v == 1} \
        == dict(zip(an.paths["id"].astype(str), an.paths["verdict"].astype(str)))
    assert samples(got, "commpath_capture_packets_captured") == {(("host", "node1"),): manifest["packets_captured"]}
    assert samples(got, "commpath_capture_packets_dropped") == {(("host", "node1"),): manifest["packets_dropped"]}
    assert an.paths.set_index("id").loc["node-to-apiserver", "flows"] > 0


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
def test_capture_counts_move_while_the_agent_runs(tmp_path):
    """The agent rewrites stats.json with tcpdump's counts so far (asked by SIGUSR1) while it runs, so the watch's
    captured and dropped gauges move before the agent stops; once stopped, the manifest's final counts stand."""
    ring, out = tmp_path / "ring", tmp_path / "out"
    env = dict(os.environ, COMMPATH_CAPTURE_STATS_SECONDS="0.5")
    with netns_pair() as (a, b, ip_a, ip_b):
        srv = tcp_server(b, ip_b, 6443)
        agent = subprocess.Popen(["ip", "netns", "exec", a, sys.executable, "-m", "commpath", "capture", "--role",
                                  "node", "--host", "node1", "--iface", "eth0", "--engine", "tcpdump",
                                  "--max-size", "50", "--filter", "tcp", "--duration", "600", "--out", str(ring)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        watch = None
        try:
            _until(lambda: (ring / "stats.json").exists(), "the agent's first statistics", agent)
            first = json.loads((ring / "stats.json").read_text())
            assert first["schema"] == "commpath.capture-stats/v1" and first["engine"] == "tcpdump"
            assert first["running"] and first["live"] and first["host"] == "node1"
            watch = WatchProcess(str(ring), "--out", str(out), "--interval", "0.2")

            def captured() -> float:
                return samples(watch.scrape(), "commpath_capture_packets_captured").get((("host", "node1"),), 0.0)

            seen = []
            for _ in range(50):            # bounded: bursts until the gauge moved twice while the agent runs
                tcp_send(a, ip_b, 6443, b"z" * 20_000, connections=2)
                before = json.loads((ring / "stats.json").read_text())["ts"]
                _until(lambda: json.loads((ring / "stats.json").read_text() or "{}").get("ts", before) > before,
                       "the agent to rewrite its statistics", agent)
                now = captured()
                if not seen or now > seen[-1]:
                    seen.append(now)
                if len(seen) >= 3:
                    break
            assert len(seen) >= 3 and seen[0] < seen[1] < seen[2], seen
            got = watch.scrape()
            dropped = samples(got, "commpath_capture_packets_dropped")
            assert list(dropped) == [(("host", "node1"),)] and dropped[(("host", "node1"),)] >= 0
            assert json.loads((ring / "manifest.json").read_text())["status"] == "running"
            assert agent.poll() is None
            agent.send_signal(signal.SIGINT)
            agent.communicate(timeout=WAIT)
            manifest = json.loads((ring / "manifest.json").read_text())
            assert manifest["status"] == "complete" and manifest["packets_captured"] >= seen[-1]
            final = json.loads((ring / "stats.json").read_text())
            assert not final["running"] and final["packets_captured"] == manifest["packets_captured"]
            _until(lambda: captured() == manifest["packets_captured"], "the watch to show the final counts")
            got = watch.scrape()
        finally:
            _stop(agent, watch, srv)
    assert samples(got, "commpath_capture_packets_dropped") == {(("host", "node1"),): manifest["packets_dropped"]}

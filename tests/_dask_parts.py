"""Real parts for the Dask tests: a `dask scheduler` and `dask worker` processes, and an S3 server
(moto's server mode), all on 127.0.0.1 with ports the kernel picks; stopped also on failure."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent
#: Bound on every wait for a process to come up (a loaded 2-core CI machine is slow, never stuck).
START_TIMEOUT_S = 180


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _wait_line(proc: subprocess.Popen, pattern: str) -> re.Match:
    """The first line of ``proc``'s output matching ``pattern`` (the process says when it is ready)."""
    found: list[re.Match] = []
    done = threading.Event()

    def watch():
        for line in proc.stdout:
            m = re.search(pattern, line)
            if m and not found:
                found.append(m)
                done.set()
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    if not done.wait(START_TIMEOUT_S) or not found:
        raise RuntimeError(f"{proc.args[0]} did not start (exit code {proc.poll()})")
    return found[0]


@contextmanager
def s3_server():
    """moto's S3 server on a free loopback port; yields its endpoint URL."""
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        m = _wait_line(proc, r"Running on (http://127\.0\.0\.1:\d+)")
        yield m.group(1)
    finally:
        _stop([proc])


def s3_env(endpoint: str) -> dict[str, str]:
    """What s3fs (botocore) needs to talk to the loopback server: endpoint and dummy credentials."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}


class DaskCluster:
    """A `dask scheduler` and named `dask worker` processes (one thread each) on 127.0.0.1."""

    def __init__(self, folder: Path, env: dict[str, str] | None = None):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **(env or {})}
        self.file = folder / "scheduler.json"
        self.scheduler: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}

    def start_scheduler(self) -> str:
        self.scheduler = subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(self.file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=self.env)
        return _wait_line(self.scheduler, r"Scheduler at:\s+(tcp://127\.0\.0\.1:\d+)").group(1)

    @property
    def address(self) -> str:
        return json.loads(self.file.read_text())["address"]

    def start_worker(self, name: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [str(BIN / "dask"), "worker", "--scheduler-file", str(self.file), "--name", name, "--nthreads", "1",
             "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1", "--memory-limit", "2GiB",
             "--local-directory", str(self.folder / name)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env, start_new_session=True)
        self.workers[name] = proc
        _wait_line(proc, r"Registered to:")
        return proc

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker's process group (its nanny and the worker process under it)."""
        proc = self.workers[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        _stop(list(self.workers.values()) + ([self.scheduler] if self.scheduler else []))


@contextmanager
def dask_cluster(folder: Path, workers: int = 2, env: dict[str, str] | None = None):
    cluster = DaskCluster(folder, env)
    try:
        cluster.start_scheduler()
        for i in range(workers):
            cluster.start_worker(f"w{i + 1}")
        yield cluster
    finally:
        cluster.stop()


def wait_until(predicate, what: str, timeout: float = START_TIMEOUT_S, every: float = 0.01):
    """Poll ``predicate`` (an observable event, e.g. a task running on a worker) until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")

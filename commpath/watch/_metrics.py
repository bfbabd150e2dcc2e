"""The Prometheus face of the watch: one consistent snapshot of the window per scrape, plus costs."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import pandas as pd
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..check.coverage import RUN_VERDICTS
from ..check.policy import SEVERITIES
from ..check.tables import PATH_VERDICTS

#: Per-file decode times, seconds (a ring file of a busy control plane takes a few tenths).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class Snapshot:
    """What the window said when it was last judged (replaced whole, never changed in place)."""

    verdicts: dict[str, str] = field(default_factory=dict)            # path -> verdict
    flows: dict[str, int] = field(default_factory=dict)               # path -> flows in the window
    findings: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # (check, sev) -> (findings, conns)
    expiry: dict[str, float] = field(default_factory=dict)            # path -> earliest not_after, epoch seconds
    run_verdict: str | None = None
    window_files: int = 0
    window_flows: int = 0
    judged_at: float = math.nan


def cert_expiry_by_path(flows: pd.DataFrame, certs: pd.DataFrame) -> dict[str, float]:
    """path -> the earliest end of validity (epoch seconds) among the certificates seen on its flows."""
    if certs is None or not len(certs) or not len(flows):
        return {}
    seen = certs[["not_after", "flow_ids"]].explode("flow_ids").dropna()
    if seen.empty:
        return {}
    seen = seen.assign(flow_id=seen["flow_ids"].astype("int64"))
    paths = flows[["flow_id", "path"]].assign(flow_id=flows["flow_id"].astype("int64"),
                                                path=flows["path"].astype("string"))
    joined = seen.merge(paths, on="flow_id").dropna(subset=["path", "not_after"])
    if joined.empty:
        return {}
    earliest = joined.groupby("path")["not_after"].min()
    return {str(p): ts.timestamp() for p, ts in earliest.items()}


def snapshot_of(analysis, window_files: int, window_flows: int) -> Snapshot:
    """The metrics of one judged window."""
    paths = analysis.paths
    verdicts = dict(zip(paths["id"].astype(str), paths["verdict"].astype(str)))
    flows = {p: int(n) for p, n in zip(paths["id"].astype(str), paths["flows"].astype("int64"))}
    f = analysis.findings
    findings: dict[tuple[str, str], tuple[int, int]] = {}
    if len(f):
        g = f.assign(check=f["check"].astype(str), severity=f["severity"].astype(str)).groupby(
            ["check", "severity"], observed=True)["count"].agg(["size", "sum"])
        findings = {(c, s): (int(r["size"]), int(r["sum"])) for (c, s), r in g.iterrows()}
    return Snapshot(verdicts=verdicts, flows=flows, findings=findings,
                    expiry=cert_expiry_by_path(analysis.flows, analysis.certs), run_verdict=analysis.verdict,
                    window_files=window_files, window_flows=window_flows, judged_at=time.time())


class WatchCollector:
    """Builds every commpath_* family from the latest snapshot and the running totals at scrape time."""

    def __init__(self):
        self._lock = threading.Lock()
        self.snapshot = Snapshot()
        self.flows_total: dict[str, int] = {}
        self.files_total: dict[str, int] = {}
        self.drops: dict[str, dict] = {}

    def update(self, snapshot: Snapshot | None = None, flows_total=None, files_total=None, drops=None) -> None:
        with self._lock:
            if snapshot is not None:
                self.snapshot = snapshot
            if flows_total is not None:
                self.flows_total = dict(flows_total)
            if files_total is not None:
                self.files_total = dict(files_total)
            if drops is not None:
                self.drops = dict(drops)

    def collect(self):
        with self._lock:
            s, flows_total, files_total, drops = self.snapshot, self.flows_total, self.files_total, self.drops
        verdict = GaugeMetricFamily("commpath_path_verdict", "1 for the path's current verdict over the window, "
                                    "0 for the others", labels=["path", "verdict"])
        for path, v in sorted(s.verdicts.items()):
            for option in PATH_VERDICTS:
                verdict.add_metric([path, option], 1.0 if v == option else 0.0)
        yield verdict
        flows = GaugeMetricFamily("commpath_path_flows", "flows on the path in the window", labels=["path"])
        for path, n in sorted(s.flows.items()):
            flows.add_metric([path], n)
        yield flows
        total = CounterMetricFamily("commpath_path_flows_seen", "flows on the path in every file analysed",
                                    labels=["path"])
        for path, n in sorted(flows_total.items()):
            total.add_metric([path], n)
        yield total
        findings = GaugeMetricFamily("commpath_findings", "findings (distinct fingerprints) in the window",
                                     labels=["check", "severity"])
        conns = GaugeMetricFamily("commpath_finding_connections", "connections the window's findings stand for",
                                  labels=["check", "severity"])
        def by_severity(item):
            (check, sev), _ = item
            return SEVERITIES.index(sev) if sev in SEVERITIES else len(SEVERITIES), check
        for (check, sev), (n, c) in sorted(s.findings.items(), key=by_severity):
            findings.add_metric([check, sev], n)
            conns.add_metric([check, sev], c)
        yield findings
        yield conns
        expiry = GaugeMetricFamily("commpath_cert_expiry_timestamp_seconds",
                                   "earliest end of validity among certificates seen on the path", labels=["path"])
        horizon = GaugeMetricFamily("commpath_cert_expiry_horizon_seconds",
                                    "seconds until the earliest certificate expiry seen on the path "
                                    "(negative: already expired)", labels=["path"])
        now = time.time()
        for path, ts in sorted(s.expiry.items()):
            expiry.add_metric([path], ts)
            horizon.add_metric([path], ts - now)
        yield expiry
        yield horizon
        run = GaugeMetricFamily("commpath_run_verdict", "1 for the window's run verdict", labels=["verdict"])
        if s.run_verdict is not None:
            for option in RUN_VERDICTS:
                run.add_metric([option], 1.0 if s.run_verdict == option else 0.0)
        yield run
        captured = GaugeMetricFamily("commpath_capture_packets_captured",
                                     "packets the capture agent recorded (so far while it runs, else its last "
                                     "run)", labels=["host"])
        dropped = GaugeMetricFamily("commpath_capture_packets_dropped",
                                    "packets the kernel dropped before the agent saw them (so far while it runs, "
                                    "else its last run; absent while an engine that tells them only at its stop "
                                    "runs)",
                                    labels=["host"])
        for host, d in sorted(drops.items()):
            if d.get("captured") is not None:
                captured.add_metric([host], d["captured"])
            if d.get("dropped") is not None:
                dropped.add_metric([host], d["dropped"])
        yield captured
        yield dropped
        files = CounterMetricFamily("commpath_watch_files", "capture files taken by the watch, by outcome",
                                    labels=["outcome"])
        for outcome, n in sorted(files_total.items()):
            files.add_metric([outcome], n)
        yield files
        yield GaugeMetricFamily("commpath_watch_window_files", "capture files in the rolling window",
                                value=s.window_files)
        yield GaugeMetricFamily("commpath_watch_window_flows", "flows in the rolling window", value=s.window_flows)
        if not math.isnan(s.judged_at):
            yield GaugeMetricFamily("commpath_watch_last_judged_timestamp_seconds",
                                    "when the window was last judged", value=s.judged_at)


class Metrics:
    """The watch's registry: the snapshot collector, per-file and per-window costs, the process."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.collector = WatchCollector()
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        self.file_seconds = Histogram("commpath_watch_file_seconds", "seconds to decode one capture file",
                                      buckets=LATENCY_BUCKETS, registry=self.registry)
        self.judge_seconds = Histogram("commpath_watch_judge_seconds", "seconds to judge the window after new files",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)

    def serve(self, host: str, port: int):
        """Serve /metrics on host:port (0: any free port); returns the server (``server_port``)."""
        from prometheus_client import start_http_server
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server

"""The watch loop: closed files in; the window judged; metrics, report.json, state and new-finding lines out."""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from .._sources import fact_tables
from ..check import load_policy
from ..check.policy import SEVERITY_RANK
from ..classify import load_inventory
from ..errors import InputError
from ..present.report_json import write_report_json
from ._files import Candidate, Scanner, agent_stats, unchanged
from ._metrics import Metrics, snapshot_of
from ._state import State
from ._window import Part, Window, decode_file

#: Outcomes of a file, the ``outcome`` label of commpath_watch_files_total.
ANALYSED, UNREADABLE = "analysed", "unreadable"


@dataclass
class Options:
    """What `commpath watch` was asked (its command-line options, by the same names)."""

    inputs: list[Path]
    out: Path
    inventory: str | None = None
    policy: str = "default"
    ca: str | None = None
    keylog: str | None = None
    probe: str | None = None
    merge: bool | None = None
    window_seconds: float = 3600.0
    max_flows: int = 200_000
    interval: float = 2.0
    settle: float = 5.0
    state: Path | None = None
    once: bool = False
    quiet: bool = False
    alert_at: str = "high"
    fail_on: str = "high"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Watcher:
    """Takes each closed capture file once, keeps the rolling window judged and its outputs current."""

    def __init__(self, opts: Options, log: TextIO | None = None, err: TextIO | None = None):
        self.opts = opts
        self.log = log or sys.stdout
        self.err = err or sys.stderr
        for p in opts.inputs:
            if not p.exists():
                raise InputError(p, "no such file or folder")
        self.inventory = load_inventory(opts.inventory) if opts.inventory else None
        self.policy = load_policy(opts.policy)
        self.facts = fact_tables(None, opts.probe, None)
        if opts.ca is None and self.inventory is not None and self.inventory.ca_bundle is not None:
            opts.ca = str(self.inventory.ca_bundle)
        for flag, value in (("--ca", opts.ca), ("--keylog", opts.keylog)):
            if value is not None and not Path(value).is_file():
                raise InputError(value, f"no such file ({flag})")
        try:
            opts.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(opts.out, f"cannot create the output folder: {exc.strerror or exc}") from None
        self.state = State.load(opts.state or opts.out / "watch-state.json")
        self.scanner = Scanner(opts.inputs, opts.settle)
        self.window = Window(opts.window_seconds, opts.max_flows)
        self.metrics = Metrics()
        self.metrics.collector.update(flows_total=self.state.flows_total, files_total=self.state.files_total,
                                      drops=agent_stats(opts.inputs))
        self.analysis = None
        self._unjudged: list[Part] = []

    def say(self, text: str) -> None:
        print(f"commpath watch: {text}", file=self.err, flush=True)

    # -- start-up ---------------------------------------------------------------------------------
    def restore(self) -> int:
        """Decode again the files the window held when the last watch stopped, found by content (a file
        renamed since is found; one rotated away or rewritten is left out); they are not counted again.
        Returns the files restored."""
        wanted = {entry["key"] for entry in self.state.window}
        if not wanted:
            return 0
        self.scanner.closed(final=self.opts.once)
        found = self.scanner.present       # counted when closed: the same content is still whole
        restored = 0
        for entry in self.state.window:
            c = found.get(entry["key"])
            if c is None:
                continue
            try:
                self.window.add(decode_file(c.path, c.key, self.opts.ca, self.opts.keylog))
            except InputError:
                continue
            restored += 1
            self.window.trim()
        if restored:
            self._judge([])
            if not self.opts.quiet:
                self.say(f"restored the window: {restored} file(s), {self.window.flows} flows")
        return restored

    # -- one pass ---------------------------------------------------------------------------------
    def step(self, stop: threading.Event | None = None, final: bool = False) -> int:
        """Take every closed file not yet counted, oldest first; judge; write. Returns files taken."""
        taken = 0
        closed = self.scanner.closed(final=final)
        for c in closed:
            if stop is not None and stop.is_set():
                break
            if self.state.seen(c.key):
                continue
            taken += self._take(c)
        self.state.forget_absent(set(self.scanner.present))
        # the agents' counts first: the window line _judge prints tells a reader the metrics are current
        self.metrics.collector.update(drops=agent_stats(self.opts.inputs))
        if self._unjudged:
            self._judge(self._unjudged)
        return taken

    def _take(self, c: Candidate) -> int:
        try:
            part = decode_file(c.path, c.key, self.opts.ca, self.opts.keylog)
        except InputError as exc:
            if not unchanged(c):
                return 0                       # rewritten while read: taken again once closed
            self.say(f"{c.path}: {exc.reason} (skipped)")
            self.state.count_file(c.key, str(c.path), UNREADABLE, {})
            self.metrics.collector.update(files_total=self.state.files_total)
            self.state.save()
            return 1
        if not unchanged(c):
            return 0
        self.metrics.file_seconds.observe(part.seconds)
        if part.capture.get("partial"):
            warnings = list(part.capture.get("warnings") or [])
            self.say(f"{c.path}: {warnings[0] if warnings else 'partly unreadable'} (the readable part kept)")
        elif not self.opts.quiet:
            self.say(f"{c.path}: {len(part.flows)} flows in {part.seconds:.3f} s")
        if self._would_evict_unjudged(part):
            self._judge(self._unjudged)
        self.window.add(part)
        self._unjudged.append(part)
        return 1

    def _would_evict_unjudged(self, part: Part) -> bool:
        """Whether the window with ``part`` would go over its bounds while files not yet judged are in it:
        judge (and trim) those first, so the window never holds more than its bounds and one file."""
        if not self._unjudged:
            return False
        if self.window.flows + len(part.flows) > self.opts.max_flows:
            return True
        oldest = min(p.last_ts for p in self._unjudged)
        return part.last_ts - self.opts.window_seconds > oldest

    def _judge(self, new: list[Part]) -> None:
        """Judge the window; count the flows of the ``new`` files by path; then keep the bounds (judging
        again only when a file was larger than the whole window); write the outputs."""
        t0 = time.perf_counter()
        self.window.trim(protect={p.key for p in new})
        analysis, ranges = self.window.judge(self.inventory, self.policy, self.opts.ca, self.opts.keylog,
                                             self.opts.merge, self.facts)
        flows = analysis.flows if analysis is not None else None
        for part in new:
            per_path: dict[str, int] = {}
            if part.key in ranges and flows is not None and len(flows):
                lo, hi = ranges[part.key]
                ids = flows["flow_id"].astype("int64")
                mine = flows.loc[(ids >= lo) & (ids < hi), "path"].astype(str)
                per_path = {str(k): int(v) for k, v in mine.value_counts().items()}
            self.state.count_file(part.key, part.path, ANALYSED, per_path)
        self._unjudged = []
        if self.window.trim():
            analysis, _ = self.window.judge(self.inventory, self.policy, self.opts.ca, self.opts.keylog,
                                            self.opts.merge, self.facts)
        self.metrics.judge_seconds.observe(time.perf_counter() - t0)
        self.analysis = analysis
        # the previous window's analysis is garbage now, much of it in reference cycles (DataFrames, parsed
        # certificates) that only the cyclic collector frees; left to the default thresholds, whose full
        # collections grow rarer as the heap grows, it lingers and fragments the small-object arenas (RSS
        # crept ~10 KB per file over days of files); one full collection per judged window (tens of ms
        # beside a judge of hundreds) frees it while the arenas can still be reused
        gc.collect()
        if analysis is not None:
            self._announce(analysis)
            self._write_report(analysis)
            self.metrics.collector.update(snapshot_of(analysis, len(self.window), self.window.flows))
        self.metrics.collector.update(flows_total=self.state.flows_total, files_total=self.state.files_total)
        self.state.window = self.window.keys()
        self.state.save()
        if analysis is not None and not self.opts.quiet:    # after the outputs: a reader may look at once
            self.say(f"window: {len(self.window)} file(s), {self.window.flows} flows, run verdict {analysis.verdict}")

    def _announce(self, analysis) -> None:
        """One JSON line on the log for each finding at or above --alert-at never announced before."""
        f = analysis.findings
        if not len(f):
            return
        floor = SEVERITY_RANK[self.opts.alert_at]
        for r in f.to_dict("records"):
            if SEVERITY_RANK.get(str(r["severity"]), -1) < floor:
                continue
            if not self.state.new_fingerprint(str(r["fingerprint"])):
                continue
            line = {"time": _now(), "event": "new-finding",
                    **{k: str(r[k]) for k in ("severity", "check", "path", "fingerprint", "message")},
                    "count": int(r["count"]), "capture": str(r["capture"]),
                    "frames": [int(x) for x in (r["frames"] if r["frames"] is not None else [])],
                    **{k: str(r[k]) for k in ("display_filter", "remediation", "reference")}}
            print(json.dumps(line, separators=(",", ":")), file=self.log, flush=True)

    def _write_report(self, analysis) -> None:
        """report.json of the window, replaced whole (a reader never sees half of it)."""
        target = self.opts.out / "report.json"
        fd, tmp = tempfile.mkstemp(prefix=".report.json.", dir=self.opts.out)
        os.close(fd)
        try:
            write_report_json(analysis, tmp)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` (or one pass with --once): take closed files every --interval seconds."""
        self.restore()
        while True:
            self.step(stop, final=self.opts.once)
            if self.opts.once or stop.wait(self.opts.interval):
                break
        self.state.save()

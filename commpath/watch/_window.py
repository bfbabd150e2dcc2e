"""The rolling window: each closed file decoded once, kept by capture time and flow count, judged together."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .._pipeline import Analysis, judge
from ..check.policy import Policy
from ..classify import Inventory
from ..decode.engine import read
from ..decode.handshakes import HandshakeAnalyzer
from ..decode.limits import ANALYSIS_PAYLOAD_LIMIT
from ..decode.schema import CAPTURE_COLUMNS, CERT_COLUMNS, FLOW_COLUMNS, TLS_COLUMNS, TLS_EXTRA, conform, empty_frame


@dataclass
class Part:
    """One capture file decoded: its flows (ids from 0), handshakes before the run-level steps, its
    captures row, and how long decoding took."""

    key: str
    path: str
    flows: pd.DataFrame
    handshakes: dict
    capture: dict
    ids: int                 # flow ids this file used (the next file's ids start after them)
    seconds: float

    @property
    def last_ts(self) -> float:
        ts = self.capture.get("last_ts")
        return float(ts) if ts is not None and not pd.isna(ts) else math.nan


def decode_file(path: Path, key: str, ca: str | None, keylog: str | None) -> Part:
    """Decode one capture file with its handshakes (raises InputError when nothing in it is readable)."""
    t0 = time.perf_counter()
    analyzer = HandshakeAnalyzer(ca, keylog)
    cap = read(path, keep_streams=False, on_streams=analyzer, payload_limit=ANALYSIS_PAYLOAD_LIMIT)   # as analyze reads
    row = cap.captures.iloc[0].to_dict() if len(cap.captures) else {}
    return Part(key=key, path=str(path), flows=cap.flows, handshakes=analyzer.unresolved(), capture=row,
                ids=len(cap.flows), seconds=time.perf_counter() - t0)


def _keep_flows(part: Part, keep: set[int]) -> Part:
    """The part with only the flows ``keep`` (and their handshakes): a file larger than the whole window."""
    hs = part.handshakes
    certs = []
    for der, roles, flows in hs["certs"]:
        left = [f for f in flows if f in keep]
        if left:
            certs.append((der, roles, left))
    trimmed = {"tls": [r for r in hs["tls"] if r[0] in keep], "ssh": [r for r in hs["ssh"] if r[0] in keep],
               "http": [r for r in hs["http"] if r[0] in keep], "certs": certs,
               "incomplete": [r for r in hs["incomplete"] if r[0] in keep]}
    flows = part.flows[part.flows["flow_id"].isin(keep)].reset_index(drop=True)
    return Part(part.key, part.path, flows, trimmed, part.capture, part.ids, part.seconds)


class Window:
    """The newest decoded files: none older than ``seconds`` of capture time before the newest one, at
    most ``max_flows`` flows in all (the oldest files go first; a single file above that keeps its
    latest flows)."""

    def __init__(self, seconds: float, max_flows: int):
        self.seconds, self.max_flows = seconds, max_flows
        self.parts: deque[Part] = deque()

    def __len__(self) -> int:
        return len(self.parts)

    @property
    def flows(self) -> int:
        return sum(len(p.flows) for p in self.parts)

    def keys(self) -> list[dict]:
        return [{"key": p.key, "path": p.path} for p in self.parts]

    def add(self, part: Part) -> None:
        """Append a file; the bounds are kept by :meth:`trim` (after its flows were counted)."""
        self.parts.append(part)

    def trim(self, protect: frozenset[str] | set[str] = frozenset()) -> bool:
        """Keep the bounds, dropping the oldest files first but none of ``protect`` (files not yet judged);
        with nothing protected, a lone file above ``max_flows`` keeps its latest flows. True when
        anything went."""
        before = (len(self.parts), self.flows)
        newest = max((p.last_ts for p in self.parts if not math.isnan(p.last_ts)), default=math.nan)
        if not math.isnan(newest):
            while (len(self.parts) > 1 and self.parts[0].key not in protect
                   and not self.parts[0].last_ts >= newest - self.seconds):
                self.parts.popleft()
        total = self.flows
        while len(self.parts) > 1 and total > self.max_flows and self.parts[0].key not in protect:
            total -= len(self.parts.popleft().flows)
        if len(self.parts) == 1 and total > self.max_flows and not protect:
            part = self.parts[0]
            latest = part.flows.nlargest(self.max_flows, "ts_start", keep="first")["flow_id"]
            self.parts[0] = _keep_flows(part, set(int(i) for i in latest))
        return (len(self.parts), self.flows) != before

    def judge(self, inventory: Inventory | None, policy: Policy, ca: str | None, keylog: str | None,
              merge: bool | None, facts: dict | None = None) -> tuple[Analysis | None, dict[str, tuple[int, int]]]:
        """The window's files judged as one run (as ``commpath analyze`` of the same files judges them),
        and the flow ids each file's flows got (key -> [first, end)). ``facts``: the other evidence sources'
        tables (a probe's), as `analyze --probe` gives them."""
        if not self.parts:
            return None, {}
        analyzer = HandshakeAnalyzer(ca, keylog)
        flows, base, ranges = [], 0, {}
        for p in self.parts:
            ranges[p.key] = (base, base + p.ids)
            f = p.flows.copy()
            f["flow_id"] += base
            flows.append(f)
            analyzer.absorb(p.handshakes, base)
            base += p.ids
        hs = analyzer.result()
        frames = [f for f in flows if len(f)]
        flow_df = conform(pd.concat(frames, ignore_index=True), FLOW_COLUMNS) if frames else empty_frame(FLOW_COLUMNS)
        rows = [p.capture for p in self.parts if p.capture]
        captures = conform(pd.DataFrame(rows), CAPTURE_COLUMNS) if rows else empty_frame(CAPTURE_COLUMNS)
        tls = conform(hs.tls.copy(), {**TLS_COLUMNS, **TLS_EXTRA})
        certs = conform(hs.certs.copy(), CERT_COLUMNS)
        # zip, not itertuples: that makes a namedtuple class per call, garbage only a full collection frees
        warnings = [f"{file}: {w}" for file, ws in zip(captures["file"], captures["warnings"]) for w in ws]
        analysis = judge(flow_df, captures, tls, certs, hs.ssh, hs.http, inventory=inventory, policy=policy, ca=ca,
                         keylog=keylog, merge=merge, warnings=warnings, facts=facts)
        return analysis, ranges

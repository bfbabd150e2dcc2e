"""Truth the audit log cannot give, from the components' own logs: requests a kubelet served (with the client's
address and port) and the Konnectivity server's agent connections and tunnelled dials.

Both are klog text lines (``I1206 10:36:01.123456  1234 file.go:42] "message" key="value" ...``); the
kubelet logs each request it serves with ``--vmodule=httplog=3``, the Konnectivity server its agents'
connections (``"Agent connected" agentID=...``) and dial requests (``"Received DIAL_REQ" dialAddress=...`` in
gRPC mode, ``"Received request for host" host=...`` in HTTP-CONNECT mode) with ``--v=3``. klog stamps carry no year: it is the lab's (UTC, as the lab hosts log).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

_KLOG = re.compile(r'^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6})\s+\d+ [^\]]+\] "([^"]*)"(.*)$')
_KV = re.compile(r'([\w-]+)=(?:"((?:[^"\\]|\\.)*)"|(\S+))')


def _lines(path: Path, year: int):
    """(unix time, message, {key: value}) of every structured klog line in ``path``."""
    if not Path(path).exists():
        return
    for line in Path(path).read_text(errors="replace").splitlines():
        m = _KLOG.match(line)
        if not m:
            continue
        mon, day, hh, mm, ss, us = (int(g) for g in m.groups()[:6])
        t = dt.datetime(year, mon, day, hh, mm, ss, us, tzinfo=dt.timezone.utc).timestamp()
        yield t, m.group(7), {k: (q if q is not None else b) for k, q, b in _KV.findall(m.group(8))}


def kubelet_requests(path: Path, year: int) -> pd.DataFrame:
    """One row per request the kubelet served: time (when it was logged, i.e. answered), client endpoint, URI,
    user agent, status."""
    rows = [{"time": t, "src": kv.get("srcIP", ""), "uri": kv.get("URI", ""), "user_agent": kv.get("userAgent", ""),
             "status": kv.get("resp", "hijacked" if kv.get("hijacked") else "")}
            for t, msg, kv in _lines(path, year) if msg == "HTTP"]
    return pd.DataFrame(rows, columns=["time", "src", "uri", "user_agent", "status"])


@dataclass
class KonnectivityLog:
    agents: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["time", "agent"]))
    dials: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["time", "address"]))


def konnectivity_log(path: Path, year: int) -> KonnectivityLog:
    agents, dials = [], []
    for t, msg, kv in _lines(path, year):
        if msg == "Agent connected":
            agents.append({"time": t, "agent": kv.get("agentID", "")})
        elif msg == "Received DIAL_REQ":                 # gRPC mode
            dials.append({"time": t, "address": kv.get("dialAddress", "")})
        elif msg == "Received request for host":         # HTTP-CONNECT mode: CONNECT host:port
            dials.append({"time": t, "address": kv.get("host", "")})
    return KonnectivityLog(pd.DataFrame(agents, columns=["time", "agent"]),
                           pd.DataFrame(dials, columns=["time", "address"]))


@dataclass
class LogTruth:
    """What the kubelets (node name -> requests) and the Konnectivity server (``None``: not running) logged."""

    kubelets: dict[str, pd.DataFrame] = field(default_factory=dict)
    konnectivity: KonnectivityLog | None = None
    konnectivity_server: str = ""           # its agent endpoint, e.g. 10.77.0.10:8132
    agent_sources: set[str] = field(default_factory=set)   # where an agent's dials come from: nodes, pod gateways

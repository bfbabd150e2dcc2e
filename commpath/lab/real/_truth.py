"""Ground truth of a real-lab run from the apiserver's audit log, matched to the captured connections.

The truth never uses commpath's classification: connections come from the decode layer (TCP flows
with their 4-tuples and times), identities and purposes from the audit log the apiserver wrote.

Matching rules (every captured TCP connection whose SYN was seen, one per 4-tuple however many
hosts captured it):

1. **To the apiserver** (``cp:6443``, or the ``kubernetes`` VIP ``10.96.0.1:443``, whose post-DNAT twin
   -- same source address and port, destination the apiserver -- is the same connection): the audit
   events with ``sourceIPs[0]`` equal to the connection's source address and ``requestReceivedTimestamp``
   within its lifetime (±1 s) name who used it. From a control-plane host: ``control-plane-to-apiserver``
   (components, the admin's kubectl, the apiserver's loopback client); a node identity
   (``system:node:*``, ``system:bootstrap:*``, ``system:kube-proxy``, and ``system:anonymous``: a
   kubelet whose TLS bootstrap is pending sends no credentials) from a node: ``node-to-apiserver``; a service account from a pod or node address: ``pod-to-apiserver``. The
   credential is ``x509`` when the audit ``user.extra`` carries an ``X509SHA256=`` credential id,
   ``token`` otherwise. A connection without any matching event is *unattributed*.
2. **To a kubelet** (``node:10250`` from the control plane): the audit events for ``pods/log``,
   ``pods/exec``, ``pods/attach``, ``pods/portforward`` of a pod on that node or ``nodes/proxy`` of that
   node (kubelet port), whose request window (received .. completed, ±1 s) contains the connection's
   start: ``apiserver-to-kubelet``.
3. **To a pod or to a node's other ports** from the control plane: ``pods/proxy``, ``services/proxy``
   or ``nodes/proxy`` events whose window contains the connection's start: ``apiserver-proxy``.
4. **To etcd** (``cp:2379``): ``etcd``, from the lab's configuration (the audit log does not see it).
5. **To a kubelet from elsewhere** (``node:10250`` from a pod or node address): the kubelet's own log
   (``--vmodule=httplog=3``) names the client's address *and port*; requests from metrics-server's user
   agent on that very endpoint make it ``metrics-to-kubelet``; any request on that endpoint to the
   read-only port (``node:10255``) makes it ``kubelet-readonly``.
6. **To the Konnectivity server's agent port** (``cp:8132`` from a node): the server's log line
   ``Agent connected`` for the agent of that node (agent id = node name) while the connection was open
   (±1 s): ``konnectivity``.
7. **From a node to a pod or a node port, while Konnectivity runs**: a ``Received DIAL_REQ`` for that
   destination in the server's log within ±5 s of the connection's start: the agent's dial for the
   apiserver, ``other`` (a node's own connection to a pod, as the emulated lab records it).

Rules 1-3 match requests by time, so a connection that carried none (refused, unanswered, or closed
before the client sent a byte) is never attributed by them: its window would lend it the requests of
other connections from the same address (the apiserver's loopback client dials before the apiserver
listens, and is refused).

Everything else (e.g. kubectl port-forward's local listener on the control plane's loopback) is left
out of the truth and counted as unattributed.
"""

from __future__ import annotations

import datetime as dt
import gzip
import ipaddress
import json
from pathlib import Path

import pandas as pd

from ._logtruth import LogTruth

NODE_USERS = ("system:node:", "system:bootstrap:")
#: also from a node: kube-proxy, and the kubelet's own client while its TLS bootstrap is pending (it sends no
#: credentials then and the apiserver answers 403 to system:anonymous)
NODE_AGENT_USERS = ("system:kube-proxy", "system:anonymous")
KUBELET_SUBRESOURCES = {"log", "exec", "attach", "portforward"}
SLACK = 1.0
#: between the Konnectivity server logging a dial and the agent's SYN: a loaded machine schedules them late
DIAL_SLACK = 5.0


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def load_audit(path: Path) -> pd.DataFrame:
    rows = []
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", errors="replace") as fh:
        text = fh.read()
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        ev = json.loads(line)
        if ev.get("stage") not in ("ResponseComplete", "Panic", "ResponseStarted"):
            continue
        user = ev.get("user", {})
        ref = ev.get("objectRef", {}) or {}
        cred = ",".join(user.get("extra", {}).get("authentication.kubernetes.io/credential-id", []))
        rows.append({"audit_id": ev.get("auditID"), "stage": ev.get("stage"), "verb": ev.get("verb"),
                     "user": user.get("username", ""), "source": (ev.get("sourceIPs") or [""])[0],
                     "resource": ref.get("resource", ""), "subresource": ref.get("subresource", ""),
                     "namespace": ref.get("namespace", ""), "name": ref.get("name", ""),
                     "uri": ev.get("requestURI", ""), "user_agent": ev.get("userAgent", ""),
                     "credential": "x509" if "X509SHA256=" in cred else "token",
                     "received": _ts(ev["requestReceivedTimestamp"]), "done": _ts(ev["stageTimestamp"])})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    # one row per request: its received time and the latest stage time (long-running verbs); in the order the
    # apiserver received them, so that "the first requests open at a connection's start" do not depend on the
    # random audit ids groupby sorts by
    return (df.sort_values("done").groupby("audit_id", as_index=False)
              .agg({**{c: "first" for c in df.columns if c not in ("audit_id", "done")}, "done": "max"})
              .sort_values(["received", "audit_id"], ignore_index=True))


def _ep(ip: str, port) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def build(flows: pd.DataFrame, audit: pd.DataFrame, *, cp_ips: set[str], nodes: dict[str, str], pod_cidr: str,
          pods: dict[str, dict], apiserver: str, vip: str, etcd: str, logs: LogTruth | None = None) -> dict:
    """Truth connections (ground-truth.yaml's ``connections``) and what could not be attributed."""
    net = ipaddress.ip_network(pod_cidr)
    node_of_ip = {ip: name for name, ip in nodes.items()}
    tcp = flows[(flows["transport"] == "tcp") & flows["syn_seen"]]
    tcp = tcp.assign(src=[_ep(a, p) for a, p in zip(tcp["src_ip"], tcp["src_port"])],
                     dst=[_ep(a, p) for a, p in zip(tcp["dst_ip"], tcp["dst_port"])])
    conns = (tcp.groupby(["src", "dst"], as_index=False)
                .agg(src_ip=("src_ip", "first"), dst_ip=("dst_ip", "first"), dst_port=("dst_port", "first"),
                     start=("ts_start", "min"), end=("ts_end", "max"),
                     answered=("synack_seen", "max"), sent=("payload_fwd", "max")))
    via_vip = conns[conns["dst"] == vip]
    natted = set(zip(via_vip["src"], [apiserver] * len(via_vip)))
    out, unattributed = [], []
    for c in conns.itertuples():
        if (c.src, c.dst) in natted:
            continue                       # the post-DNAT twin of a VIP connection: recorded with it
        entry = {"src": c.src, "dst": c.dst, "start": round(float(c.start), 6)}
        path, why = _path(c, audit, cp_ips, node_of_ip, net, pods, apiserver, vip, etcd)
        if path is None and logs is not None:
            path, why = _from_logs(c, logs, node_of_ip, net) or (path, why)
        if path is None:
            unattributed.append({**entry, "why": why})
            continue
        entry.update(path=path, **why)
        if c.dst == vip:
            entry["dst_after_nat"] = apiserver
        entry["id"] = len(out)
        out.append(entry)
    return {"connections": out, "unattributed": unattributed}


def _window(audit: pd.DataFrame, src_ip: str, start: float, end: float) -> pd.DataFrame:
    return audit[(audit["source"] == src_ip) & (audit["received"] >= start - SLACK) & (audit["received"] <= end + SLACK)]


def _during(audit: pd.DataFrame, t: float) -> pd.DataFrame:
    return audit[(audit["received"] - SLACK <= t) & (audit["done"] + SLACK >= t)]


def _path(c, audit, cp_ips, node_of_ip, net, pods, apiserver, vip, etcd):
    src_ip, dst_ip = c.src_ip, c.dst_ip
    in_pods = lambda ip: ":" not in ip and ipaddress.ip_address(ip) in net   # noqa: E731
    # rules 1-3 match requests by time: a connection that carried none would borrow its neighbours'
    refused = (c.dst in (apiserver, vip) or (src_ip in cp_ips and c.dst != etcd)) and (not c.answered or not c.sent)
    if refused:
        return None, "carried no request: " + ("refused or unanswered (no SYN-ACK)" if not c.answered
                                                else "the client sent no payload")
    if c.dst in (apiserver, vip):
        ev = _window(audit, src_ip, c.start, c.end) if not audit.empty else audit
        if ev.empty:
            return None, "no audit event from this address while the connection was open"
        users = sorted(set(ev["user"]))
        creds = sorted(set(ev["credential"]))
        facts = {"users": users[:6], "credential": creds[0] if len(creds) == 1 else "mixed",
                 "requests": int(len(ev))}
        if src_ip in cp_ips:
            return "control-plane-to-apiserver", facts
        if all(u.startswith("system:serviceaccount:") for u in users) and (in_pods(src_ip) or src_ip in node_of_ip):
            return "pod-to-apiserver", facts
        if src_ip in node_of_ip and all(u.startswith(NODE_USERS) or u in NODE_AGENT_USERS for u in users):
            if users == ["system:anonymous"]:
                facts["credential"] = "none"     # a bootstrapping kubelet before its certificate is signed
            return "node-to-apiserver", facts
        return None, f"mixed identities {users[:4]} from {src_ip}"
    if c.dst == etcd and src_ip in cp_ips:
        return "etcd", {"users": [], "evidence": "lab configuration (--etcd-servers)"}
    if src_ip not in cp_ips or audit.empty:
        return None, "not initiated by the control plane"
    ev = _during(audit, c.start)
    if dst_ip in node_of_ip and c.dst_port == 10255:
        req = logs.kubelets.get(node_of_ip[dst_ip])
        if req is not None and len(req) and (req["src"] == c.src).any():
            return "kubelet-readonly", {"requests": sorted(set(req[req["src"] == c.src]["uri"]))[:3],
                                        "evidence": "kubelet log (httplog srcIP on the read-only port)"}
    if dst_ip in node_of_ip and c.dst_port == 10250:
        node = node_of_ip[dst_ip]
        on_node = {p for p, w in pods.items() if w.get("node") == node}
        hit = ev[((ev["resource"] == "pods") & ev["subresource"].isin(KUBELET_SUBRESOURCES) & ev["name"].isin(on_node))
                 | ((ev["resource"] == "nodes") & (ev["subresource"] == "proxy") & (ev["name"] == node))]
        if hit.empty:
            return None, "no kubelet request (logs/exec/attach/portforward/nodes proxy) for this node then"
        return "apiserver-to-kubelet", {"requests": hit["uri"].head(3).tolist(), "users": sorted(set(hit["user"]))[:3]}
    if in_pods(dst_ip) or dst_ip in node_of_ip:
        hit = ev[ev["subresource"] == "proxy"]
        if hit.empty:
            return None, "no proxy request then"
        return "apiserver-proxy", {"requests": hit["uri"].head(3).tolist(), "users": sorted(set(hit["user"]))[:3]}
    return None, "not a documented path"


def _from_logs(c, logs: LogTruth, node_of_ip: dict[str, str], net) -> tuple[str, dict] | None:
    """Rules 5-7: what the kubelets' and the Konnectivity server's logs say about a connection."""
    src_ip, dst_ip = c.src_ip, c.dst_ip
    if dst_ip in node_of_ip and c.dst_port == 10255:
        req = logs.kubelets.get(node_of_ip[dst_ip])
        if req is not None and len(req) and (req["src"] == c.src).any():
            return "kubelet-readonly", {"requests": sorted(set(req[req["src"] == c.src]["uri"]))[:3],
                                        "evidence": "kubelet log (httplog srcIP on the read-only port)"}
    if dst_ip in node_of_ip and c.dst_port == 10250:
        req = logs.kubelets.get(node_of_ip[dst_ip])
        if req is not None and len(req):
            hit = req[(req["src"] == c.src) & req["user_agent"].str.startswith("metrics-server/")]
            if len(hit):
                return "metrics-to-kubelet", {"requests": sorted(set(hit["uri"]))[:3],
                                              "users": sorted({u.split(" ")[0] for u in hit["user_agent"]}),
                                              "evidence": "kubelet log (httplog srcIP)"}
    konn = logs.konnectivity
    if konn is None:
        return None
    if c.dst == logs.konnectivity_server and src_ip in node_of_ip:
        a = konn.agents
        hit = a[(a["agent"] == node_of_ip[src_ip]) & (a["time"] >= c.start - SLACK) & (a["time"] <= c.end + SLACK)]
        if len(hit):
            return "konnectivity", {"users": [f"konnectivity-agent {node_of_ip[src_ip]}"],
                                    "evidence": "konnectivity-server log (Agent connected)"}
    in_pods = ":" not in dst_ip and ipaddress.ip_address(dst_ip) in net
    if src_ip in logs.agent_sources and (in_pods or dst_ip in node_of_ip):
        d = konn.dials
        hit = d[(d["address"] == c.dst) & ((d["time"] - c.start).abs() <= DIAL_SLACK)]
        if len(hit):
            return "other", {"users": ["konnectivity-agent (dial for the apiserver)"],
                             "evidence": "konnectivity-server log (Received DIAL_REQ)"}
    return None


#: checks the default real cluster must never trigger (no SSH, Konnectivity, read-only port, old TLS, expiry)
ABSENT_DEFAULT = ("ssh-tunnel-deprecated", "kubelet-readonly-port", "konnectivity-bypass", "konnectivity-direction",
                  "cert-expired", "tls-version-weak")


def node_credentials_without_certificate(audit: pd.DataFrame, node_ips: set[str]) -> list[str]:
    """Node identities that reached the apiserver from a node without a client certificate (a bootstrap token, or
    nothing while the bootstrap is pending). Read from the audit log alone: which connection carried them is
    ambiguous when several clients of one node overlap, that they were used is not."""
    if audit.empty:
        return []
    ev = audit[audit["source"].isin(node_ips) & (audit["credential"] == "token")
               & (audit["user"].str.startswith("system:bootstrap:") | (audit["user"] == "system:anonymous"))]
    return sorted(set(ev["user"]))


def proxied_schemes(audit: pd.DataFrame) -> set[str]:
    """The schemes (``http``, ``https``) of the apiserver's proxy requests to pods, services and node ports, from
    the audit log alone: matching each request to one connection by time is ambiguous when several overlap (the
    first few requests open at a connection's start need not include the one it carried), the scheme is not."""
    if audit.empty:
        return set()
    ev = audit[audit["subresource"] == "proxy"]
    name = ev["name"].astype(str)
    # nodes/NAME/proxy (no port, or the kubelet's) is the apiserver-to-kubelet path, not a proxy to a node port
    to_kubelet = (ev["resource"] == "nodes") & (~name.str.contains(":") | name.str.endswith(":10250"))
    ev = ev[~to_kubelet & ev["resource"].isin(("pods", "services", "nodes"))]
    return {"https" if n.startswith("https:") else "http" for n in ev["name"].astype(str)}


def expected_findings(connections: list[dict], konnectivity: bool = False,
                      tokens_from_nodes: list[str] = (), proxied: set[str] | None = None) -> list[dict]:
    """The findings the truth implies: what the audit log says about credentials and proxied schemes
    (``proxied``: :func:`proxied_schemes`; by default the requests matched to proxy connections), the
    kubelets' logs about their read-only port; ``konnectivity``: it runs (so a direct connection bypasses it).
    What the hosts' configuration implies is the scenario's (_scenarios.RealScenario.configured_findings)."""
    out = []
    paths = {c["path"] for c in connections}
    if konnectivity:
        for path in sorted(paths & {"apiserver-to-kubelet", "apiserver-proxy"}):
            out.append({"check": "konnectivity-bypass", "path": path, "when": "always",
                        "why": "Konnectivity runs, yet the apiserver dialled a node directly (audit: the request; "
                               "capture: the control plane's own connection)"})
    if "kubelet-readonly" in paths:
        out.append({"check": "kubelet-readonly-port", "path": "kubelet-readonly", "when": "always",
                    "why": "a client read the kubelet's read-only port (kubelet log: the request on 10255)"})
    if proxied is None:
        proxied = {"https" if "/https:" in u else "http"
                   for c in connections if c["path"] == "apiserver-proxy" for u in c.get("requests", [])}
    elif "apiserver-proxy" not in paths:
        proxied = set()          # proxied, but no such connection on the wire to judge
    if "http" in proxied:
        out.append({"check": "plaintext-proxy", "path": "apiserver-proxy", "when": "always",
                    "why": "the apiserver proxied to a pod, a node port or a service over plain HTTP (audit: */proxy)"})
    if "https" in proxied:
        out.append({"check": "proxy-unverified-tls", "path": "apiserver-proxy", "when": "always",
                    "why": "the apiserver proxied over https, which it never verifies (audit: https:*/proxy)"})
    if tokens_from_nodes or any(c["path"] == "node-to-apiserver" and c.get("credential") in ("token", "none")
                                for c in connections):
        out.append({"check": "client-cert-missing", "path": "node-to-apiserver", "when": "always",
                    "why": "a kubelet authenticated with its bootstrap token, not a client certificate (audit: "
                           "system:bootstrap:*, no X509SHA256 credential id)"})
    if any(c["path"] == "apiserver-to-kubelet" for c in connections):
        out.append({"check": "cert-not-observable", "path": "apiserver-to-kubelet", "when": "without-keylog",
                    "why": "TLS 1.3 hides the kubelet's self-signed serving certificate (not verified: no "
                           "--kubelet-certificate-authority)"})
    return out

"""Scenarios of the real lab: which settings the cluster is brought up with (in the manner of the emulated lab)."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import CommpathError


@dataclass(frozen=True)
class RealScenario:
    name: str
    description: str
    #: "" (the apiserver dials nodes directly), "grpc" or "http-connect": the apiserver's `cluster` egress
    #: goes through the Konnectivity server (a Unix socket on the control plane), the agents dial it
    konnectivity: str = ""
    #: kubelet serving certificates from the cluster CA (serverTLSBootstrap: CSRs the lab approves)
    server_tls_bootstrap: bool = False
    #: the apiserver (--kubelet-certificate-authority) and metrics-server verify the kubelets' certificates
    verify_kubelet: bool = False
    #: with Konnectivity running: does the apiserver send its `cluster` egress through it (False: a bypass)
    egress_via_konnectivity: bool = True
    #: nodes whose kubelet opens its read-only port (10255, plain HTTP without authentication)
    read_only_nodes: tuple[str, ...] = ()
    #: nodes whose kubelet serves an expired certificate (issued by the cluster CA)
    expired_serving_nodes: tuple[str, ...] = ()
    #: nodes whose kubelet keeps authenticating with the bootstrap token (never a client certificate)
    token_nodes: tuple[str, ...] = ()
    #: checks that must not fire (besides those of every real scenario, _truth.ABSENT_DEFAULT)
    absent: tuple[str, ...] = ()
    #: checks of _truth.ABSENT_DEFAULT this scenario is expected to trigger
    allowed: tuple[str, ...] = ()


    def configured_findings(self, paths: set[str]) -> list[dict]:
        """Findings the hosts' configuration implies (the capture agents record it from /proc), on the paths the
        truth observed: the check attaches a host's setting to the connections it governs."""
        out = []
        if not self.verify_kubelet and "apiserver-to-kubelet" in paths:
            out.append({"check": "kubelet-serving-cert-unverified", "path": "apiserver-to-kubelet", "when": "always",
                        "why": "kube-apiserver runs without --kubelet-certificate-authority (kubeadm's default)"})
        if self.konnectivity and not self.egress_via_konnectivity:
            out += [{"check": "konnectivity-not-enforced", "path": p, "when": "always",
                     "why": "konnectivity-server runs, kube-apiserver has no --egress-selector-config-file"}
                    for p in sorted(paths & {"apiserver-to-kubelet", "apiserver-proxy"})]
        if self.token_nodes and "node-to-apiserver" in paths:
            out.append({"check": "kubelet-cert-rotation-off", "path": "node-to-apiserver", "when": "always",
                        "why": f"{', '.join(self.token_nodes)}: rotateCertificates: false (the kubelet keeps its token)"})
        if self.expired_serving_nodes and "apiserver-to-kubelet" in paths:
            out.append({"check": "cert-expired", "path": "apiserver-to-kubelet", "when": "with-keylog",
                        "why": f"{', '.join(self.expired_serving_nodes)}: the kubelet serves an expired certificate "
                               "(TLS 1.3 hides it on the wire)"})
        return out


    def probed_findings(self, connections: list[dict], nodes: dict[str, str]) -> list[dict]:
        """Findings `commpath probe` settles (``when: with-probe``), on the kubelet paths the truth observed towards
        each node: a kubelet's own self-signed serving certificate (no serverTLSBootstrap) or an expired one, and an
        open read-only port. Every real scenario turns anonymous kubelet access off (see probe_absent)."""
        reached: dict[str, set[str]] = {}      # path -> nodes whose kubelet (:10250) a connection on it reached
        by_ip = {ip: name for name, ip in nodes.items()}
        for c in connections:
            ip, _, port = str(c.get("dst_after_nat") or c["dst"]).rpartition(":")
            if port == "10250" and ip in by_ip and c["path"] in ("apiserver-to-kubelet", "metrics-to-kubelet"):
                reached.setdefault(c["path"], set()).add(by_ip[ip])
        out = []
        for path, names in sorted(reached.items()):
            self_signed = sorted(n for n in names
                                 if not self.server_tls_bootstrap and n not in self.expired_serving_nodes)
            expired = sorted(names & set(self.expired_serving_nodes))
            if self_signed:
                out.append({"check": "server-cert-untrusted", "path": path, "when": "with-probe",
                            "why": f"{', '.join(self_signed)}: the kubelet serves its own self-signed certificate"})
            if expired:
                out.append({"check": "cert-expired", "path": path, "when": "with-probe",
                            "why": f"{', '.join(expired)}: the kubelet serves an expired certificate"})
        if self.read_only_nodes:
            out.append({"check": "kubelet-read-only-port", "path": "kubelet-readonly", "when": "with-probe",
                        "why": f"{', '.join(self.read_only_nodes)}: readOnlyPort 10255 answers without credentials"})
        return out

    def probe_absent(self) -> list[str]:
        """Checks a probe must not fire: anonymous auth, TLS below 1.2 and Go's insecure cipher suites (every server
        keeps Go's defaults) are off in every real scenario, the read-only port where no node opens it, a kubelet CA
        conflict where no --kubelet-certificate-authority is set or every kubelet serves from that CA."""
        out = ["kubelet-anonymous-auth", "tls-min-version-weak", "kubelet-ca-conflict", "tls-cipher-suites-weak"]
        if not self.read_only_nodes:
            out.append("kubelet-read-only-port")
        return out


SCENARIOS = {
    "default": RealScenario(
        "default", "kubeadm-like defaults: self-signed kubelet serving certificates, no "
                   "--kubelet-certificate-authority, metrics-server with --kubelet-insecure-tls, no Konnectivity"),
    "hardened": RealScenario(
        "hardened", "kubelet serving certificates from the cluster CA (serverTLSBootstrap) verified by the "
                    "apiserver and metrics-server, anonymous kubelet auth and read-only port off, the apiserver's "
                    "node traffic only through Konnectivity (gRPC)",
        konnectivity="grpc", server_tls_bootstrap=True, verify_kubelet=True,
        absent=("server-cert-untrusted", "plaintext-proxy", "proxy-unverified-tls")),
    "hardened-http-connect": RealScenario(
        "hardened-http-connect", "hardened, with Konnectivity in HTTP-CONNECT mode (the apiserver opens an HTTP "
                                 "CONNECT per dial over the server's Unix socket)",
        konnectivity="http-connect", server_tls_bootstrap=True, verify_kubelet=True,
        absent=("server-cert-untrusted", "plaintext-proxy", "proxy-unverified-tls")),
    "broken": RealScenario(
        "broken", "node2's kubelet serves an expired certificate, opens its read-only port (read by a pod) and keeps "
                  "authenticating with the bootstrap token; Konnectivity runs but the apiserver bypasses it "
                  "(no egress selector)",
        konnectivity="grpc", egress_via_konnectivity=False, read_only_nodes=("node2",),
        expired_serving_nodes=("node2",), token_nodes=("node2",),
        allowed=("kubelet-readonly-port", "konnectivity-bypass", "cert-expired")),
}


def get(name: str) -> RealScenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise CommpathError(f"real lab: unknown scenario {name!r} (choose from {', '.join(SCENARIOS)})") from None

"""The lab's scenarios: how the emulated cluster is configured and which findings it must produce."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import CommpathError


@dataclass(frozen=True)
class Finding:
    check: str
    path: str
    #: always | with-keylog | without-keylog (TLS 1.3 hides certificates) | with-probe (`commpath probe` settles it)
    when: str = "always"
    why: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    kubelet_cert: str = "self-signed"       # self-signed | ca
    expired_kubelet_cert: tuple[str, ...] = ()   # nodes whose (CA-signed) serving certificate has expired
    verify_kubelet: bool = False            # apiserver --kubelet-certificate-authority
    tls_min: str = "1.2"
    tls_max: str = ""                       # "" = the stack's newest (TLS 1.3)
    konnectivity: bool = False
    bypass_nodes: tuple[str, ...] = ()      # with Konnectivity on, still reached directly
    proxy_via: str = "direct"               # direct | konnectivity
    ssh_tunnel: bool = False
    readonly_port: bool = False
    kubelet_anonymous: bool = True          # kubelet --anonymous-auth (its default): GET /pods without credentials
    no_client_cert: tuple[str, ...] = ()    # nodes whose kubelet talks to the apiserver without a client cert
    etcd_plaintext: bool = False            # etcd also serves clients in plain HTTP on 127.0.0.1, the apiserver uses it
    konn_server_dials: tuple[str, ...] = ()  # nodes whose Konnectivity agent listens and the server dials it
    expected: tuple[Finding, ...] = ()
    absent: tuple[str, ...] = ()            # checks that must not fire (every peer serves Go's default suites)
    notes: list[str] = field(default_factory=list)


#: kubelets left at --anonymous-auth=true answer GET /pods without credentials; only a probe asks
_ANONYMOUS = Finding("kubelet-anonymous-auth", "apiserver-to-kubelet", "with-probe",
                     "the kubelets answer GET /pods without credentials (--anonymous-auth=true)")


SCENARIOS = {
    "default": Scenario(
        "default", "the documented defaults: self-signed kubelet serving certificates not verified by the "
                   "apiserver, apiserver proxy over plain HTTP (and unverified HTTPS), Go's TLS 1.3",
        expected=(
            Finding("plaintext-proxy", "apiserver-proxy", why="proxy to node, pod and service over plain HTTP"),
            Finding("proxy-unverified-tls", "apiserver-proxy", why="https: proxy to a node and a pod"),
            Finding("server-cert-untrusted", "apiserver-to-kubelet", "with-keylog",
                    "self-signed kubelet serving certificates (TLS 1.3: visible with the key log)"),
            Finding("cert-not-observable", "apiserver-to-kubelet", "without-keylog", "TLS 1.3 hides certificates"),
            _ANONYMOUS,
        ),
        absent=("ssh-tunnel-deprecated", "kubelet-readonly-port", "konnectivity-bypass", "cert-expired",
                "tls-version-weak", "tls-cipher-suites-weak"),
    ),
    "hardened": Scenario(
        "hardened", "CA-signed kubelet certificates verified by the apiserver, all control-plane to node "
                    "traffic through Konnectivity, TLS 1.3 only, anonymous kubelet requests refused (401)",
        kubelet_cert="ca", verify_kubelet=True, tls_min="1.3", konnectivity=True, proxy_via="konnectivity",
        kubelet_anonymous=False,
        expected=(
            Finding("cert-not-observable", "node-to-apiserver", "without-keylog", "TLS 1.3 everywhere"),
        ),
        absent=("plaintext-proxy", "proxy-unverified-tls", "server-cert-untrusted", "client-cert-missing",
                "cert-expired", "tls-version-weak", "ssh-tunnel-deprecated", "konnectivity-bypass",
                "konnectivity-direction", "kubelet-readonly-port", "tls-required", "kubelet-anonymous-auth",
                "tls-cipher-suites-weak"),
    ),
    "legacy": Scenario(
        "legacy", "SSH tunnels carry apiserver to kubelet traffic, TLS 1.2 at most, kubelet read-only port on",
        tls_max="1.2", ssh_tunnel=True, readonly_port=True,
        expected=(
            Finding("ssh-tunnel-deprecated", "ssh-tunnel", why="apiserver opens SSH tunnels to the nodes"),
            Finding("kubelet-readonly-port", "kubelet-readonly", why="scraper reads :10255"),
            Finding("plaintext-proxy", "apiserver-proxy"),
            Finding("proxy-unverified-tls", "apiserver-proxy"),
            _ANONYMOUS,
        ),
        absent=("konnectivity-bypass", "cert-expired", "tls-version-weak", "client-cert-missing",
                "tls-cipher-suites-weak"),
    ),
    "broken": Scenario(
        "broken", "Konnectivity enabled yet node2 is reached directly (bypass) with an expired kubelet "
                  "certificate, and node2's kubelet authenticates without a client certificate; TLS 1.2",
        kubelet_cert="ca", expired_kubelet_cert=("node2",), tls_max="1.2", konnectivity=True,
        bypass_nodes=("node2",), proxy_via="konnectivity", no_client_cert=("node2",),
        expected=(
            Finding("cert-expired", "apiserver-to-kubelet", why="node2's kubelet serving certificate expired"),
            Finding("client-cert-missing", "node-to-apiserver", why="node2's kubelet sends no client certificate"),
            Finding("konnectivity-bypass", "apiserver-to-kubelet", why="apiserver dials node2:10250 directly"),
            _ANONYMOUS,
        ),
        absent=("ssh-tunnel-deprecated", "kubelet-readonly-port", "tls-version-weak", "tls-cipher-suites-weak"),
    ),
    "verified": Scenario(
        "verified", "CA-signed kubelet serving certificates verified by the apiserver on direct connections "
                    "(Konnectivity is on, so they bypass it); the Konnectivity server dials node1's agent "
                    "(reversed), the apiserver writes to etcd over plain HTTP on the loopback; TLS 1.2; anonymous "
                    "kubelet requests refused (401)",
        kubelet_cert="ca", verify_kubelet=True, tls_max="1.2", konnectivity=True, bypass_nodes=("node1", "node2"),
        proxy_via="konnectivity", etcd_plaintext=True, konn_server_dials=("node1",), kubelet_anonymous=False,
        expected=(
            Finding("konnectivity-bypass", "apiserver-to-kubelet", why="apiserver dials both kubelets directly"),
            Finding("konnectivity-direction", "konnectivity",
                    why="the Konnectivity server opens a connection to node1's agent"),
            Finding("tls-required", "etcd", why="etcd --listen-client-urls http://127.0.0.1:2379, used by the apiserver"),
        ),
        absent=("server-cert-untrusted", "cert-expired", "client-cert-missing", "tls-version-weak",
                "ssh-tunnel-deprecated", "kubelet-readonly-port", "plaintext-proxy", "proxy-unverified-tls",
                "kubelet-anonymous-auth", "tls-cipher-suites-weak"),
    ),
}


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise CommpathError(f"lab: unknown scenario {name!r} (choose from {', '.join(SCENARIOS)})") from None

"""`commpath inventory discover` against a real HTTPS server speaking the Kubernetes API's JSON."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

pytest.importorskip("kubernetes", reason="the 'discover' extra (kubernetes client) is not installed")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from commpath.classify import load_inventory  # noqa: E402
from commpath.classify.discover import discover, implied_service_cidr  # noqa: E402
from commpath.cli import main as cli_main  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "k8s-api"
ROUTES = {
    "/api/v1/nodes": "nodes.json",
    "/api/v1/namespaces/default/endpoints/kubernetes": "endpoints-kubernetes.json",
    "/api/v1/namespaces/default/services/kubernetes": "service-kubernetes.json",
    "/api/v1/namespaces/kube-system/pods": "kube-system-pods.json",
    "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices": "endpointslices-kubernetes.json",
}
TOKEN = "commpath-test-token"


def _pki(tmp: Path):
    """A CA and a serving certificate for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("kubernetes.default.svc"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    (tmp / "server.crt").write_bytes(pem(cert) + pem(ca))
    (tmp / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return pem(ca)


class _ApiHandler(BaseHTTPRequestHandler):
    seen: list

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        path = self.path.split("?", 1)[0]
        self.seen.append((path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._send(401, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
        name = self.server.routes.get(path)
        if name is None:
            return self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "message": f"the server could not find the requested resource ({path})",
                                    "reason": "NotFound", "code": 404})
        self._send(200, json.loads((FIXTURES / name).read_text()))

    def _send(self, code: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def api_server(tmp_path):
    """A TLS server on 127.0.0.1 serving the recorded responses, and a kubeconfig pointing at it."""
    ca_pem = _pki(tmp_path)
    handler = type("Handler", (_ApiHandler,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.routes = dict(ROUTES)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {
            "server": f"https://127.0.0.1:{server.server_address[1]}",
            "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": "auditor", "user": {"token": TOKEN}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "auditor"}}],
    }))
    try:
        yield server, kubeconfig, handler.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_discover_builds_inventory_from_api(api_server):
    server, kubeconfig, seen = api_server
    inv = discover(str(kubeconfig))
    assert {p for p, _ in seen} == set(ROUTES) - {"/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"}
    assert all(auth == f"Bearer {TOKEN}" for _, auth in seen)
    assert inv.cluster == "lab"
    assert [h.name for h in inv.control_plane] == ["cp1"]
    assert inv.control_plane[0].addresses == ["192.0.2.10", "2001:db8::10"]
    assert inv.control_plane[0].pod_cidrs == ["10.244.0.0/24", "fd00:10:244::/64"]
    assert [h.name for h in inv.nodes] == ["node1", "node2"]
    assert inv.nodes[1].addresses == ["192.0.2.22", "2001:db8::22"]
    assert inv.apiserver_endpoints == [("192.0.2.10", 6443)]
    assert inv.service == ("10.96.0.1", 443)
    assert inv.service_cidrs == ["10.96.0.0/12", "fd00:10:96::/112"]
    assert inv.pod_cidrs == ["10.244.0.0/16", "fd00:10:244::/56"]
    assert inv.etcd == [("192.0.2.10", 2379)]
    assert inv.konnectivity_enabled is True
    assert inv.konnectivity_server == ("192.0.2.10", 8132)
    assert inv.konnectivity_agents == ["node1"]
    assert inv.kubelet_port == 10250


def test_discover_cli_writes_a_valid_inventory(api_server, tmp_path):
    _, kubeconfig, _ = api_server
    out = tmp_path / "inventory.yaml"
    assert cli_main(["inventory", "discover", "--kubeconfig", str(kubeconfig), "-o", str(out)]) == 0
    inv = load_inventory(out)        # the written file passes the inventory validator
    assert inv.apiserver_endpoints == [("192.0.2.10", 6443)]
    assert inv.konnectivity_server == ("192.0.2.10", 8132)
    assert inv.service == ("10.96.0.1", 443)


def test_discover_without_kube_system_access_implies_service_cidr(api_server):
    server, kubeconfig, _ = api_server
    del server.routes["/api/v1/namespaces/kube-system/pods"]   # 404: pods unknown
    inv = discover(str(kubeconfig))
    assert inv.service_cidrs == ["10.96.0.0/12"]
    assert inv.etcd == [] and inv.konnectivity_enabled is False


def test_discover_falls_back_to_endpointslices(api_server):
    """Endpoints is deprecated (v1.33); without it the kubernetes service's EndpointSlices are read."""
    server, kubeconfig, seen = api_server
    del server.routes["/api/v1/namespaces/default/endpoints/kubernetes"]
    inv = discover(str(kubeconfig))
    assert "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices" in {p for p, _ in seen}
    assert inv.apiserver_endpoints == [("192.0.2.10", 6443), ("2001:db8::10", 6443)]   # not-ready one left out


def test_discover_unauthorized_is_one_line_exit_2(api_server, tmp_path, capsys):
    _, kubeconfig, _ = api_server
    cfg = yaml.safe_load(kubeconfig.read_text())
    cfg["users"][0]["user"]["token"] = "wrong"
    bad = tmp_path / "bad-kubeconfig"
    bad.write_text(yaml.safe_dump(cfg))
    assert cli_main(["inventory", "discover", "--kubeconfig", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "401" in err[0]


def test_discover_missing_kubeconfig_exit_2(tmp_path, capsys):
    assert cli_main(["inventory", "discover", "--kubeconfig", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def test_implied_service_cidr():
    assert implied_service_cidr("10.96.0.1") == "10.96.0.0/12"
    assert implied_service_cidr("10.43.0.1") == "10.43.0.0/16"
    assert implied_service_cidr("fd00:10:96::1") == "fd00:10:96::/108"

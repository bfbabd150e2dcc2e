"""`commpath probe` against real TLS stacks on loopback: an OpenSSL server that asks for client
certificates and lets anonymous GETs through, a Python HTTPS server with a CA-issued certificate,
a plain-HTTP read-only port, and hostile targets (one that hangs, one that resets, one that speaks SSH)."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import ssl
import struct
import subprocess
import threading
from pathlib import Path

import pandas as pd
import pytest

from commpath.capture.probe import Budget, Settings, Target, probe_target
from commpath.capture.probe_tls import parse_s_client
from commpath.cli import main as cli_main
from commpath.lab._pki import Authority

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

NODE1, NODE2, API, ETCD_RESET, ETCD_SSH = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _listener(address: str, port: int = 0) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port))
    s.listen(16)
    return s


class Hostile:
    """A listening socket whose every accepted connection gets ``how``: hang, reset or an SSH banner."""

    def __init__(self, address: str, how: str):
        self.sock, self.how, self.held = _listener(address), how, []
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.how == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            elif self.how == "ssh":
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
                self.held.append(conn)
            else:
                self.held.append(conn)        # hang: never answer

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for c in self.held:
            c.close()
        self.thread.join(timeout=10)


class Answer(http.server.BaseHTTPRequestHandler):
    """Every GET answered with the server's ``status`` (no body worth reading)."""

    def do_GET(self):  # noqa: N802
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _http_server(address: str, port: int, status: int, context: ssl.SSLContext | None = None):
    srv = http.server.ThreadingHTTPServer((address, port), Answer)
    srv.status = status
    if context is not None:
        srv.socket = context.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _s_server(cert, key, ca: Path, address: str, port: int):
    """``openssl s_server -www``: asks for a client certificate naming ``ca``, answers any GET with 200,
    accepts TLS 1.0 upwards; ready when it prints ACCEPT."""
    proc = subprocess.Popen(["openssl", "s_server", "-accept", f"{address}:{port}", "-cert", str(cert), "-key", str(key),
                             "-CAfile", str(ca), "-verify", "1", "-www", "-min_protocol", "TLSv1",
                             "-cipher", "ALL:@SECLEVEL=0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for line in proc.stdout:
        if b"ACCEPT" in line:
            break
    else:
        raise RuntimeError("openssl s_server did not start")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()   # keep its pipe drained
    return proc


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The loopback 'cluster': two kubelets, one read-only port, an apiserver that hangs, two etcds that
    reset or speak SSH; its inventory."""
    root = tmp_path_factory.mktemp("probe")
    ca = Authority(root / "pki", "kubernetes")
    client_ca = Authority(root / "client-pki", "kubelet-client-ca")
    kubelet_port, readonly_port = _free_port(NODE1), _free_port(NODE1)
    node1 = ca.issue("node1-kubelet", "node1@1700000000", server=True, sans=["node1", NODE1], self_signed=True)
    node2 = ca.issue("node2-kubelet", "node2", server=True, sans=["node2", NODE2])
    procs, servers, hostiles = [], [], []
    try:
        procs.append(_s_server(node1.cert, node1.key, client_ca.pair.cert, NODE1, kubelet_port))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")     # TLS 1.2 suites outside Go's insecure list only
        ctx.load_cert_chain(node2.cert, node2.key)
        servers.append(_http_server(NODE2, kubelet_port, 401, ctx))
        servers.append(_http_server(NODE1, readonly_port, 200))
        hostiles = [Hostile(API, "hang"), Hostile(ETCD_RESET, "reset"), Hostile(ETCD_SSH, "ssh")]
        inventory = root / "inventory.yaml"
        inventory.write_text(
            "apiVersion: commpath/v1\nkind: Inventory\ncluster: loopback\n"
            f"apiserver:\n  endpoints: ['{API}:{hostiles[0].port}']\n"
            f"control_plane:\n- name: cp1\n  addresses: ['{API}']\n"
            f"nodes:\n- name: node1\n  addresses: ['{NODE1}']\n- name: node2\n  addresses: ['{NODE2}']\n"
            f"kubelet_port: {kubelet_port}\nkubelet_readonly_port: {readonly_port}\n"
            f"etcd: ['{ETCD_RESET}:{hostiles[1].port}', '{ETCD_SSH}:{hostiles[2].port}']\n"
            f"ca_bundle: {ca.pair.cert}\n")
        yield {"inventory": inventory, "root": root, "kubelet_port": kubelet_port, "readonly_port": readonly_port,
               "client_ca": client_ca, "hostiles": hostiles}
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=30)
        for s in servers:
            s.shutdown()
            s.server_close()
        for h in hostiles:
            h.close()


@pytest.fixture(scope="module")
def probed(cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe-out")
    code = cli_main(["probe", "--inventory", str(cluster["inventory"]), "--out", str(out), "--timeout", "3", "-q"])
    assert code == 0
    table = pd.read_parquet(out / "probe.parquet")
    return out, table.set_index(table["address"] + ":" + table["port"].astype(str))


def _row(probed, address, port):
    return probed[1].loc[f"{address}:{port}"]


def test_every_endpoint_has_a_row_and_the_output_says_it_was_active(cluster, probed):
    out, table = probed
    meta = json.loads((out / "probe.json").read_text())
    assert meta["active"] is True and "active probe" in meta["note"]
    assert meta["connections"] == int(table["connections"].sum()) <= meta["max_connections"]
    assert table["active"].all()
    assert set(table["target"]) == {"apiserver", "kubelet", "kubelet-readonly", "etcd"}
    # only the inventory's addresses were contacted
    assert set(table["address"]) <= {NODE1, NODE2, API, ETCD_RESET, ETCD_SSH}


def test_self_signed_kubelet_that_asks_for_client_certificates_and_lets_anonymous_in(cluster, probed):
    r = _row(probed, NODE1, cluster["kubelet_port"])
    assert pd.isna(r["error"])
    assert r["tls"] and r["self_signed"] and not r["chain_verified"] and r["verify_error"] == "self-signed certificate"
    assert r["names_match"]
    # the CertificateRequest and its CA list (openssl s_client -msg), which Python's ssl cannot show
    assert r["client_cert_requested"]
    assert any("kubelet-client-ca" in n for n in r["client_ca_names"])
    assert r["anonymous_pods_status"] == 200
    assert list(r["versions_accepted"])[-2:] == ["TLS 1.2", "TLS 1.3"]


def test_ca_issued_kubelet_without_client_certificate_request_refusing_anonymous(cluster, probed):
    r = _row(probed, NODE2, cluster["kubelet_port"])
    assert pd.isna(r["error"])
    assert r["chain_verified"] and not r["self_signed"] and r["names_match"] and pd.isna(r["verify_error"])
    assert r["client_cert_requested"] is False or r["client_cert_requested"] == False  # noqa: E712
    assert r["anonymous_pods_status"] == 401 and r["anonymous_healthz_status"] == 401
    assert list(r["versions_accepted"]) == ["TLS 1.2", "TLS 1.3"] and r["min_version"] == "TLS 1.2"
    assert {"TLS 1.0", "TLS 1.1"} <= set(r["versions_refused"])


def test_read_only_port_answers_and_a_closed_one_is_one_line(cluster, probed):
    assert _row(probed, NODE1, cluster["readonly_port"])["anonymous_healthz_status"] == 200
    closed = _row(probed, NODE2, cluster["readonly_port"])
    assert pd.isna(closed["anonymous_healthz_status"]) and "refused" in closed["error"]


def test_hostile_targets_each_get_one_clear_line(cluster, probed):
    hang, reset, ssh = cluster["hostiles"]
    assert "hangs" in _row(probed, API, hang.port)["error"]
    assert "reset" in _row(probed, ETCD_RESET, reset.port)["error"]
    said = _row(probed, ETCD_SSH, ssh.port)
    assert "speaks SSH" in said["error"] and "OpenSSH_9.2p1" in said["error"] and said["tls"] == False  # noqa: E712
    for r in (_row(probed, API, hang.port), said):
        assert "\n" not in r["error"]


def test_connections_stop_at_the_budget(cluster):
    budget = Budget(3)
    rows = [probe_target(Target("kubelet", "node1", NODE1, cluster["kubelet_port"], ("node1",)), budget,
                         Settings(timeout=3))]
    rows.append(probe_target(Target("kubelet", "node2", NODE2, cluster["kubelet_port"], ("node2",)), budget,
                             Settings(timeout=3)))
    assert budget.used == 3 and sum(r["connections"] for r in rows) == 3
    assert "budget" in rows[0]["error"] and rows[1]["connections"] == 0 and "budget" in rows[1]["error"]


def test_s_client_output_is_parsed_for_the_request_and_its_ca_names():
    text = ("<<< TLS 1.3, Handshake [length 0090], CertificateRequest\n---\n"
            "Acceptable client certificate CA names\nCN = kubernetes\nO = system:masters\n"
            "Requested Signature Algorithms: ECDSA+SHA256\n")
    got = parse_s_client(text)
    assert got.client_cert_requested and got.client_ca_names == ["CN = kubernetes", "O = system:masters"]
    none = parse_s_client("<<< TLS 1.3, Handshake [length 007a], ServerHello\n---\nNo client certificate CA names sent\n")
    assert none.client_cert_requested is False and none.client_ca_names == []


def test_an_inventory_without_endpoints_is_exit_2(tmp_path, capsys):
    inv = tmp_path / "inventory.yaml"
    inv.write_text("apiVersion: commpath/v1\nkind: Inventory\n")
    assert cli_main(["probe", "--inventory", str(inv), "--out", str(tmp_path / "o")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_cipher_sweep_offers_gos_insecure_list_and_the_check_names_the_suites_as_the_flags_do(cluster, probed):
    """The sweep offers Go's crypto/tls InsecureCipherSuites() one at a time: the OpenSSL kubelet (every suite at
    security level 0) accepts those its key allows, the Python one (ECDHE with AEAD suites only) none. The check
    tls-cipher-suites-weak fires on the former alone and names the suites as --tls-cipher-suites spells them,
    the same names its configuration side judges."""
    from commpath.capture.probe_tls import INSECURE_CIPHER_SUITES, WEAK_CIPHERS
    from commpath.check._config_kinds import cipher_suites_weak
    from commpath.check.facts import flow_facts

    assert set(WEAK_CIPHERS) == set(INSECURE_CIPHER_SUITES.values())
    accepting = list(_row(probed, NODE1, cluster["kubelet_port"])["weak_ciphers_accepted"])
    # the lab's keys are ECDSA: of Go's insecure suites only ECDHE-ECDSA ones can complete (CBC-SHA256 here)
    assert "ECDHE-ECDSA-AES128-SHA256" in accepting and set(accepting) <= set(WEAK_CIPHERS)
    assert list(_row(probed, NODE2, cluster["kubelet_port"])["weak_ciphers_accepted"]) == []
    table = probed[1].reset_index(drop=True)
    f = flow_facts(pd.DataFrame({"flow_id": pd.Series(dtype="int64")}), tables={"probe": table})
    hits = cipher_suites_weak(f, {})
    assert set(zip(hits.address, hits.port)) == {(NODE1, cluster["kubelet_port"])}
    by_openssl = {v: k for k, v in INSECURE_CIPHER_SUITES.items()}
    assert all(by_openssl[s] in hits.detail[0] for s in accepting)
    assert hits.evidence[0][0]["source"] == "probe"

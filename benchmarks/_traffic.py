"""Traffic roles for make_capture.py: TLS/HTTP/UDP servers and the client workload, run inside namespaces."""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import random
import socket
import ssl
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: TLS server variants: port -> (maximum TLS version, client certificate required)
TLS_PORTS = {
    8443: ("1.3", False),
    8444: ("1.3", True),
    9443: ("1.2", False),
    9444: ("1.2", True),
}
HTTP_PORT = 8080
UDP_PORT = 7001
SSH_PORT = 2222
_BLOCK = random.Random(7).randbytes(1 << 16)


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /bytes/N, GET /watch/COUNT/SIZE (chunked, one flush per event), POST /upload."""

    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        if parts[0] == "bytes":
            size = min(int(parts[1]), 1 << 30)
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            left = size
            while left > 0:
                chunk = _BLOCK[: min(left, len(_BLOCK))]
                self.wfile.write(chunk)
                left -= len(chunk)
        elif parts[0] == "watch":
            count, size = min(int(parts[1]), 100_000), min(int(parts[2]), 60_000)
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            event = b'{"type":"MODIFIED","object":' + b"x" * max(size - 40, 0) + b"}\n"
            for _ in range(count):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_error(404)

    def do_POST(self):
        left = int(self.headers.get("Content-Length", "0"))
        while left > 0:
            got = self.rfile.read(min(left, 1 << 16))
            if not got:
                break
            left -= len(got)
        body = b"stored\n"
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _DualStackServer(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    request_queue_size = 256

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _server_context(pki: Path, max_version: str, client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "server.crt", pki / "server.key")
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3 if max_version == "1.3" else ssl.TLSVersion.TLSv1_2
    if client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki / "ca.crt")
    return ctx


def serve(pki: Path, ready_file: Path) -> None:
    """Start all servers on the namespace's addresses and block until killed."""
    servers = []
    for port, (max_version, client_cert) in TLS_PORTS.items():
        srv = _DualStackServer(("::", port), _Handler)
        ctx = _server_context(pki, max_version, client_cert)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
        servers.append(srv)
    servers.append(_DualStackServer(("::", HTTP_PORT), _Handler))
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()

    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    udp.bind(("::", UDP_PORT))

    def echo():
        while True:
            data, peer = udp.recvfrom(65535)
            udp.sendto(data[:512], peer)

    threading.Thread(target=echo, daemon=True).start()
    ready_file.write_text("ready\n")
    while True:  # ended by the parent (SIGTERM)
        time.sleep(3600)


class Client:
    """One round of the workload = short TLS/HTTP requests, watch streams, bulk transfers, SSH, UDP."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.pki = Path(cfg["pki"])
        self.contexts = {}
        for port, (max_version, client_cert) in TLS_PORTS.items():
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(self.pki / "ca.crt")
            ctx.check_hostname = False
            if client_cert:
                ctx.load_cert_chain(self.pki / "client.crt", self.pki / "client.key")
            self.contexts[port] = ctx
        self.errors = 0
        self.error_samples: list[str] = []
        self.done = {"tls": 0, "http": 0, "ssh": 0, "udp": 0, "watch": 0, "bulk": 0}
        self._lock = threading.Lock()

    def _host(self, i: int) -> str:
        return self.cfg["server_v6"] if i % 4 == 3 else self.cfg["server_v4"]

    def _conn(self, port: int, i: int, timeout: float = 60.0) -> http.client.HTTPConnection:
        host = self._host(i)
        if port in self.contexts:
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self.contexts[port])
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _count(self, kind: str) -> None:
        with self._lock:
            self.done[kind] += 1

    def request(self, port: int, i: int, method: str, path: str, body: bytes | None = None,
                repeat: int = 1) -> None:
        conn = self._conn(port, i)
        try:
            for _ in range(repeat):
                conn.request(method, path, body=body)
                resp = conn.getresponse()
                while resp.read(1 << 16):
                    pass
        finally:
            conn.close()

    def ssh(self, command: str, stdin: bytes | None = None) -> None:
        cfg = self.cfg
        subprocess.run(
            ["ssh", "-F", "/dev/null", "-i", cfg["ssh_key"], "-p", str(SSH_PORT),
             "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
             f"root@{cfg['server_v4']}", command],
            input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=True)

    def udp(self, i: int) -> None:
        family = socket.AF_INET6 if i % 4 == 3 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(2.0)
            for k in range(4):
                s.sendto(b"q%05d" % k + _BLOCK[: 40 + 30 * k], (self._host(i), UDP_PORT))
                s.recvfrom(2048)

    def reused_tuple(self, i: int) -> None:
        """Two HTTP connections from the same source port (RST close, so no TIME_WAIT)."""
        port = 20000 + (i % 5000)  # below the ephemeral range, so no other socket holds it
        for _ in range(2):
            s = socket.create_connection((self.cfg["server_v4"], HTTP_PORT), timeout=10,
                                         source_address=(self.cfg["client_v4"], port))
            try:
                s.sendall(b"GET /bytes/300 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while s.recv(65536):
                    pass
            finally:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()

    def round_tasks(self, r: int):
        """The callables of round ``r`` (a fixed, bounded list)."""
        cfg = self.cfg
        tasks = []
        tls_ports = list(TLS_PORTS)
        for i in range(cfg["short_tls"]):
            tasks.append(("tls", lambda i=i: self.request(tls_ports[i % 4], r + i, "GET", "/bytes/%d" % (500 + 97 * i))))
        for i in range(cfg["short_http"]):
            tasks.append(("http", lambda i=i: self.request(HTTP_PORT, r + i, "GET", "/bytes/%d" % (200 + 31 * i), repeat=1 + i % 3)))
        for i in range(cfg["watches"]):
            port = tls_ports[i % 4] if i % 5 else HTTP_PORT
            tasks.append(("watch", lambda i=i, port=port: self.request(port, r + i, "GET", "/watch/%d/%d" % (cfg["watch_events"], 120 + 40 * (i % 6)))))
        bulk = int(cfg["bulk_mb"] * 1e6)
        for i in range(cfg["bulk"]):
            port = [8443, 9444, HTTP_PORT, 8444, 9443][i % 5]
            if i % 3 == 2:
                tasks.append(("bulk", lambda i=i, port=port: self.request(port, r + i, "POST", "/upload", body=_BLOCK * (bulk // len(_BLOCK) + 1))))
            else:
                tasks.append(("bulk", lambda i=i, port=port: self.request(port, r + i, "GET", "/bytes/%d" % bulk)))
        for i in range(cfg["ssh"]):
            if i % 3 == 0:
                tasks.append(("ssh", lambda: self.ssh("true")))
            elif i % 3 == 1:
                tasks.append(("ssh", lambda: self.ssh("head -c %d /dev/zero" % int(cfg["ssh_mb"] * 1e6))))
            else:
                tasks.append(("ssh", lambda: self.ssh("cat >/dev/null", stdin=_BLOCK * max(1, int(cfg["ssh_mb"] * 1e6) // len(_BLOCK)))))
        for i in range(cfg["udp"]):
            tasks.append(("udp", lambda i=i: self.udp(r + i)))
        tasks.append(("http", lambda: self.reused_tuple(r)))
        random.Random(r).shuffle(tasks)
        return tasks

    def run(self, stop_file: Path, max_rounds: int, max_seconds: float, status_file: Path) -> None:
        started = time.monotonic()
        with ThreadPoolExecutor(self.cfg["workers"]) as pool:
            for r in range(max_rounds):
                if stop_file.exists() or time.monotonic() - started > max_seconds:
                    break
                futures = [(kind, pool.submit(fn)) for kind, fn in self.round_tasks(r)]
                for kind, fut in futures:
                    try:
                        fut.result(timeout=300)
                        self._count(kind)
                    except Exception as exc:  # counted and reported, the workload goes on
                        self.errors += 1
                        if len(self.error_samples) < 5:
                            self.error_samples.append(f"{kind}: {exc!r}"[:200])
                status_file.write_text(json.dumps({"rounds": r + 1, "errors": self.errors, **self.done,
                                                   "error_samples": self.error_samples}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("role", choices=["serve", "client"])
    ap.add_argument("--config", required=True, help="JSON file")
    args = ap.parse_args()
    cfg = json.loads(Path(args.config).read_text())
    if args.role == "serve":
        serve(Path(cfg["pki"]), Path(cfg["ready_file"]))
    else:
        Client(cfg).run(Path(cfg["stop_file"]), cfg["max_rounds"], cfg["max_seconds"], Path(cfg["status_file"]))
    os._exit(0)


if __name__ == "__main__":
    main()

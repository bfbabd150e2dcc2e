"""Python `ssl`/`http.server` endpoints of the lab: proxy targets in nodes and pods (run as a module)."""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    server_version = "lab-target/1.0"

    def do_GET(self):
        body = json.dumps({"served_by": self.server.label, "path": self.path}).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--http", type=int, action="append", default=[])
    p.add_argument("--https", type=int, action="append", default=[])
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--tls-max", choices=["1.2", "1.3"])
    p.add_argument("--keylog")
    p.add_argument("--label", default="target")
    p.add_argument("--duration", type=float, default=600)
    a = p.parse_args(argv)
    servers = []
    for port in a.http:
        servers.append(ThreadingHTTPServer((a.bind, port), _Handler))
    for port in a.https:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        if a.tls_max:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2 if a.tls_max == "1.2" else ssl.TLSVersion.TLSv1_3
        if a.keylog:
            ctx.keylog_filename = a.keylog
        srv = ThreadingHTTPServer((a.bind, port), _Handler)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        servers.append(srv)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    for srv in servers:
        srv.label = a.label
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print("ready", flush=True)
    done.wait(a.duration)
    for srv in servers:
        srv.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

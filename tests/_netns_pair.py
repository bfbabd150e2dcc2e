"""Test helper: two throw-away network namespaces joined by a veth pair, removed afterwards."""

from __future__ import annotations

import ctypes
import os
import secrets
import socket
import subprocess
import threading
from contextlib import contextmanager


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


@contextmanager
def netns_pair():
    """Yields (ns_a, ns_b, ip_a, ip_b): 10.98.0.1 in ns_a, 10.98.0.2 in ns_b."""
    prefix = f"cpt-{secrets.token_hex(3)}"
    a, b = f"{prefix}-a", f"{prefix}-b"
    try:
        for ns in (a, b):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
        for ns, addr in ((a, "10.98.0.1/24"), (b, "10.98.0.2/24")):
            _ip("-n", ns, "addr", "add", addr, "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        yield a, b, "10.98.0.1", "10.98.0.2"
    finally:
        for ns in (a, b):
            for pid in _ip("netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
            _ip("netns", "del", ns, check=False)


_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


def in_netns(ns: str):
    """A context manager that moves the calling thread into namespace ``ns`` and back."""
    @contextmanager
    def enter():
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            _setns(target)
            yield
        finally:
            _setns(own)
            os.close(own)
            os.close(target)
    return enter()


def tcp_server(ns: str, ip: str, port: int) -> socket.socket:
    """A listening socket inside ``ns`` that reads everything sent to it (in a thread)."""
    with in_netns(ns):
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((ip, port))
        srv.listen(64)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                while conn.recv(65536):
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return srv


def tcp_send(ns: str, ip: str, port: int, payload: bytes, connections: int = 1) -> list[int]:
    """Open ``connections`` TCP connections from ``ns`` to ip:port, send ``payload``; returns local ports."""
    ports = []
    with in_netns(ns):
        for _ in range(connections):
            with socket.create_connection((ip, port), timeout=5) as s:
                ports.append(s.getsockname()[1])
                s.sendall(payload)
    return ports

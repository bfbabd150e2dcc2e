"""Resumed TLS 1.2 sessions (ticket and session id, Python's OpenSSL on loopback) inherit client_cert from
the full handshake that issued them earlier in the capture."""

from __future__ import annotations

import select
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from conftest_handshakes import start_tcpdump, stop_tcpdump, terminate
from test_starttls import _certificate

needs_tcpdump = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")


def _serve(lsock: socket.socket, ctx: ssl.SSLContext, n: int, errors: list) -> None:
    try:
        for _ in range(n):
            conn, _ = lsock.accept()
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello")
                tls.recv(1)
    except (OSError, ssl.SSLError) as exc:
        errors.append(exc)


def record_resumed_ticket(tmp_path) -> tuple[Path, bool]:
    """Two TLS 1.2 connections captured on loopback: a mutual-TLS full handshake issues a ticket, the
    second connection resumes with it (Python's OpenSSL). Returns the capture and whether it resumed."""
    crt, key = _certificate(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.maximum_version = ssl.TLSVersion.TLSv1_2         # resumption visible in clear text
    server.load_cert_chain(crt, key)
    server.verify_mode = ssl.CERT_REQUIRED                 # mutual TLS on the full handshake
    server.load_verify_locations(crt)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.load_verify_locations(crt)
    client.load_cert_chain(crt, key)                       # the same certificate serves as the client's
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    errors: list = []
    thread = threading.Thread(target=_serve, args=(lsock, server, 2, errors), daemon=True)
    pcap = tmp_path / "resume.pcap"
    dump = start_tcpdump(pcap, f"tcp port {port}")
    resumed = False
    try:
        thread.start()
        session = None
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
                    client.wrap_socket(raw, server_hostname="starttls.test", session=session) as tls:
                assert tls.recv(5) == b"hello"
                tls.sendall(b"x")
                session = tls.session
                resumed = tls.session_reused
        thread.join(timeout=30)
        assert not thread.is_alive() and not errors, errors
    finally:
        lsock.close()
        stop_tcpdump(dump, pcap=pcap, ended=2)
    return pcap, resumed


@needs_tcpdump
def test_resumed_ticket_inherits_the_client_certificate(tmp_path):
    """Python's OpenSSL: a mutual-TLS full handshake issues a ticket, the second connection resumes with it."""
    pcap, resumed = record_resumed_ticket(tmp_path)
    assert resumed
    _assert_inherited(pcap)


@needs_tcpdump
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_resumed_session_id_inherits_the_client_certificate(tmp_path):
    """openssl s_server/s_client: no tickets, a session id context, mutual TLS; the second connection
    resumes by session id."""
    crt, key = _certificate(tmp_path)
    with socket.socket() as probe:                         # a free port on loopback for s_server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pcap = tmp_path / "resume.pcap"
    dump = start_tcpdump(pcap, f"tcp port {port}")
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(crt), "-key",
                               str(key), "-CAfile", str(crt), "-Verify", "1", "-no_ticket", "-context", "commpath",
                               "-tls1_2", "-naccept", "2", "-ign_eof"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(100):                               # s_server says ACCEPT once it listens
            ready, _, _ = select.select([server.stdout], [], [], 0.1)
            if ready and "ACCEPT" in server.stdout.readline():
                break
        outputs = []
        for flag in ("-sess_out", "-sess_in"):
            done = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-cert", str(crt),
                                   "-key", str(key), "-CAfile", str(crt), "-no_ticket", "-tls1_2",
                                   flag, str(tmp_path / "session.pem")],
                                  input="", capture_output=True, text=True, timeout=60)
            outputs.append(done.stdout)
        assert "Reused, TLSv1.2" in outputs[1], outputs[1][-500:]
    finally:
        terminate(server)
        stop_tcpdump(dump, pcap=pcap, ended=2)
    _assert_inherited(pcap)


def _assert_inherited(pcap) -> None:
    import commpath
    from commpath.decode.handshakes import analyze_handshakes
    cap = commpath.read(str(pcap))
    tls = analyze_handshakes(cap).tls.sort_values("flow_id")
    assert len(tls) == 2, tls
    full, again = tls.iloc[0], tls.iloc[1]
    assert not full.resumed and full.client_cert == "presented" and full.client_cert_source == "handshake"
    assert again.resumed and again.client_cert_fingerprints == []
    assert again.client_cert == "presented" and again.client_cert_source == "resumed-from"
    assert again.resumed_from == full.flow_id


def test_resumed_session_without_its_full_handshake_stays_unknown():
    """A resumed session whose issuing connection is not in the run keeps client_cert unknown."""
    from commpath.decode._sessions import resolve, session_keys
    row = ("unknown", 7, session_keys(True, 5.0, b"\x01" * 32, b"", b"\x01" * 32, b""))
    issued_later = ("presented", 8, session_keys(False, 9.0, b"", b"", b"\x01" * 32, b""))
    out = resolve([row, issued_later], 1, 0)
    assert out[0] == ("unknown", 7, None, None)              # issued after it: not its origin
    assert out[1] == ("presented", 8, "handshake", None)

"""SSH banners, KEXINIT, negotiated algorithms and HASSH: public captures and a real sshd on loopback."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest_handshakes import PUBLIC, ZEEK_BASE, ZEEK_TRACES, start_tcpdump, terminate, tshark_fields, zeek_log

SSH_TRACES = [
    "arkime/ssh2.pcap",
    "suricata-verify/tests/ssh-hassh/input.pcap",
    "zeek/testing/btest/Traces/ssh/ssh_kex_curve25519.pcap",
    "zeek/testing/btest/Traces/ssh/single-conn.pcap",
]

public = pytest.mark.skipif(not PUBLIC.exists(), reason="public captures not beside the checkout")


def analyzed(path):
    import commpath
    from commpath.decode.handshakes import analyze_handshakes
    cap = commpath.read(str(path))
    return cap, analyze_handshakes(cap)


@public
def test_arkime_hassh_and_banners():
    _, h = analyzed(PUBLIC / "arkime/ssh2.pcap")
    body = json.loads((PUBLIC / "arkime/ssh2.test").read_text())["sessions3"][0]["body"]["ssh"]
    s = h.ssh.iloc[0]
    assert s.hassh == body["hassh"][0] and s.hassh_server == body["hasshServer"][0]
    assert sorted([s.client_banner.lower(), s.server_banner.lower()]) == sorted(body["version"])
    # OpenSSH 5.3 against 3.9p1: SHA-1 key exchange, ssh-rsa host key and hmac-md5 all negotiated
    assert set(s.weak_algorithms) >= {"kex:diffie-hellman-group-exchange-sha1", "host_key:ssh-rsa", "mac:hmac-md5"}


@public
def test_suricata_hassh():
    _, h = analyzed(PUBLIC / "suricata-verify/tests/ssh-hassh/input.pcap")
    text = (PUBLIC / "suricata-verify/tests/ssh-hassh/test.yaml").read_text()
    client = re.search(r'ssh\.client\.hassh\.hash: "([0-9a-f]{32})"', text).group(1)
    server = re.search(r'ssh\.server\.hassh\.hash: "([0-9a-f]{32})"', text).group(1)
    s = h.ssh.iloc[0]
    assert (s.hassh, s.hassh_server) == (client, server)


@public
def test_suricata_banner_only_is_partial():
    _, h = analyzed(PUBLIC / "suricata-verify/tests/ssh-banner-only/input.pcap")
    s = h.ssh.iloc[0]
    assert s.client_banner == "SSH-2.0-OpenSSH_for_Windows_7.7" and s.server_banner == "SSH-2.0-OpenSSH_7.4"
    assert pd_isna(s.hassh) and s.partial and "KEXINIT not captured" in s.parse_error


@public
def test_zeek_ssh_log():
    _, h = analyzed(ZEEK_TRACES / "ssh/ssh_kex_curve25519.pcap")
    (z,) = zeek_log(ZEEK_BASE / "scripts.base.protocols.ssh.curve25519_kex/ssh.log")
    s = h.ssh.iloc[0]
    assert (s.client_banner, s.server_banner) == (z["client"], z["server"])
    assert s.kex == z["kex_alg"] and s.host_key_alg == z["host_key_alg"]
    assert s.cipher_c2s == z["cipher_alg"] and s.mac_c2s == z["mac_alg"]
    assert s.version == int(z["version"])
    # Zeek's baseline keeps the first 32 base64 characters of the OpenSSH-style SHA256 fingerprint
    assert s.host_key_fingerprint.startswith(z["host_key_fingerprint"]) and len(s.host_key_fingerprint) == 50
    assert s.weak_algorithms == []


@public
@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed")
@pytest.mark.parametrize("trace", SSH_TRACES)
def test_tshark_hassh(trace):
    _, h = analyzed(PUBLIC / trace)
    rows = tshark_fields(PUBLIC / trace, ["ssh.kex.hassh", "ssh.kex.hasshserver",
                                          "ssh.kex.hassh_algorithms", "ssh.kex.hasshserver_algorithms"],
                         "ssh.kex.hassh or ssh.kex.hasshserver")
    s = h.ssh.iloc[0]
    client = [r for r in rows if r[0]]
    server = [r for r in rows if r[1]]
    assert client and server
    assert s.hassh == client[0][0] and s.hassh_server == server[0][1]


def pd_isna(v) -> bool:
    import pandas as pd
    return v is None or bool(pd.isna(v))


# --------------------------------------------------------------------------- real sshd on lo

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
needs_sshd = pytest.mark.skipif(not (os.path.exists(SSHD) and shutil.which("ssh") and shutil.which("tcpdump")
                                     and os.geteuid() == 0), reason="needs sshd, ssh, tcpdump and root")


def _ssh_debug(port: int, opts: list[str]) -> str:
    p = subprocess.run(["ssh", "-vv", "-F", "/dev/null", "-p", str(port), "-o", "BatchMode=yes",
                        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                        "-o", "ConnectTimeout=5", *opts, "nobody@127.0.0.1", "true"],
                       capture_output=True, text=True, timeout=20)
    return p.stderr


@pytest.fixture(scope="module")
def sshd_capture(tmp_path_factory):
    d = tmp_path_factory.mktemp("cpt-ssh")
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(d / "host_rsa")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_ed25519")], check=True)
    port = random.randrange(20000, 32000)   # below the ephemeral range
    cfg = d / "sshd_config"
    cfg.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nHostKey {d}/host_rsa\n"
                   "PidFile none\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n"
                   "KexAlgorithms +diffie-hellman-group14-sha1\nCiphers +aes128-cbc\nMACs +hmac-md5\n"
                   "HostKeyAlgorithms +ssh-rsa\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    pcap = d / "ssh.pcap"
    procs = []
    try:
        dump = start_tcpdump(pcap, f"tcp port {port}")
        procs.append(dump)
        sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        procs.append(sshd)
        for _ in range(100):                       # wait for sshd and tcpdump to be ready
            if _listening(port):
                break
            time.sleep(0.05)
        time.sleep(0.2)
        modern = _ssh_debug(port, [])
        weak = _ssh_debug(port, ["-o", "KexAlgorithms=diffie-hellman-group14-sha1", "-o", "Ciphers=aes128-cbc",
                                 "-o", "MACs=hmac-md5", "-o", "HostKeyAlgorithms=ssh-rsa"])
        time.sleep(0.4)
    finally:
        for p in reversed(procs):
            terminate(p, timeout=3)
    return pcap, modern, weak, port


def _listening(port: int) -> bool:
    import socket
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _truth(debug: str) -> dict:
    """What the OpenSSH client says it negotiated (ssh -vv)."""
    out = {"kex": re.search(r"kex: algorithm: (\S+)", debug).group(1),
           "host_key": re.search(r"kex: host key algorithm: (\S+)", debug).group(1)}
    m = re.search(r"kex: client->server cipher: (\S+) MAC: (\S+)", debug)
    out["cipher"], out["mac"] = m.group(1), m.group(2)
    out["banner"] = re.search(r"Remote protocol version [\d.]+, remote software version (\S+)", debug).group(1)
    return out


@needs_sshd
def test_real_sshd_negotiation_matches_the_client(sshd_capture):
    pcap, modern, weak, port = sshd_capture
    _, h = analyzed(pcap)
    # a readiness probe, when captured, is a connection too: the server's banner only, partial
    probes = h.ssh[h.ssh.client_banner.isna()]
    assert probes.partial.all() and probes.hassh.isna().all()
    sessions = h.ssh[h.ssh.client_banner.notna()]
    assert len(sessions) == 2
    first, second = (sessions.iloc[i] for i in range(2))
    for row, debug in ((first, modern), (second, weak)):
        truth = _truth(debug)
        assert row.kex == truth["kex"] and row.host_key_alg == truth["host_key"]
        assert row.cipher_c2s == truth["cipher"]
        if truth["mac"] != "<implicit>":
            assert row.mac_c2s == truth["mac"]
        assert row.server_banner.startswith(f"SSH-2.0-{truth['banner']}")
        # the host key's fingerprint as the OpenSSH client printed it
        assert row.host_key_fingerprint == re.search(r"Server host key: \S+ (SHA256:\S+)", debug).group(1)
    assert first.weak_algorithms == []
    assert set(second.weak_algorithms) == {"kex:diffie-hellman-group14-sha1", "host_key:ssh-rsa",
                                           "enc:aes128-cbc", "mac:hmac-md5"}
    if shutil.which("tshark"):
        rows = tshark_fields(pcap, ["tcp.stream", "ssh.kex.hassh", "ssh.kex.hasshserver"],
                             "ssh.kex.hassh or ssh.kex.hasshserver", extra=["-d", f"tcp.port=={port},ssh"])
        hassh = [r[1] for r in rows if r[1]]
        server = [r[2] for r in rows if r[2]]
        assert list(sessions.hassh) == hassh and list(sessions.hassh_server) == server


def _ssh1_packet(ptype: int, data: bytes) -> bytes:
    """An SSH-1 binary packet (length, 1-8 bytes of padding, type, data, CRC-32): no SSH-2 framing."""
    import zlib
    length = 1 + len(data) + 4
    padding = bytes(8 - length % 8)
    body = padding + bytes([ptype]) + data
    return length.to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")


@pytest.mark.parametrize("client,server,version", [
    ("SSH-1.5-PuTTY_Release_0.53", "SSH-1.5-OpenSSH_2.9p2", 1),
    ("SSH-1.5-1.2.27", "SSH-1.99-OpenSSH_3.9p1", 1),           # a 1.99 server falls back to the client's 1.5
    ("SSH-2.0-OpenSSH_9.6", "SSH-1.99-OpenSSH_3.9p1", 2),
])
def test_ssh1_is_recognised_without_binary_packet_errors(client, server, version):
    from commpath.decode.ssh import parse_ssh
    from commpath.decode.streams import FlowStreams, Stream
    cookie = bytes(range(8))
    srv = (server + "\r\n").encode()
    cli = (client + "\r\n").encode()
    if version == 1:
        srv += _ssh1_packet(2, cookie + b"\x00\x00\x04\x00" + b"\x01\x23" * 70)     # SSH_SMSG_PUBLIC_KEY
        cli += _ssh1_packet(3, b"\x03" + cookie + b"\x04\x00" + b"\x45" * 128)    # SSH_CMSG_SESSION_KEY
    out = parse_ssh(FlowStreams(7, Stream(cli), Stream(srv)))
    assert out.version == version
    assert out.client_banner == client and out.server_banner == server
    if version == 1:
        assert not out.partial and out.parse_error is None, out.parse_error
        assert out.hassh is None and out.hassh_server is None and out.kex is None
        assert out.weak_algorithms == ["protocol:SSH-1"]
    else:
        assert "protocol:SSH-1" not in out.weak_algorithms



@public
def test_host_key_fingerprint_of_arkimes_key():
    """Arkime's expected session lists the server's host key blob: its SHA-256 is our fingerprint."""
    import base64

    from commpath.decode._fingerprints import ssh_host_key_fingerprint
    body = json.loads((PUBLIC / "arkime/ssh2.test").read_text())["sessions3"][0]["body"]["ssh"]
    _, h = analyzed(PUBLIC / "arkime/ssh2.pcap")
    assert h.ssh.iloc[0].version == 2                      # a 1.99 server and a 2.0 client speak SSH-2
    assert h.ssh.iloc[0].host_key_fingerprint == ssh_host_key_fingerprint(base64.b64decode(body["key"][0]))

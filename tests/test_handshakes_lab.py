"""Handshakes of real Go crypto/tls, OpenSSL and Python ssl peers on loopback, captured with tcpdump."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import random
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest_handshakes import read_capture, start_tcpdump, stop_tcpdump, terminate

PEERS = Path(__file__).resolve().parent / "peers"
GO = shutil.which("go")
TCPDUMP = shutil.which("tcpdump")
OPENSSL = shutil.which("openssl")

needs_tools = pytest.mark.skipif(not (GO and TCPDUMP and OPENSSL and os.geteuid() == 0),
                                 reason="needs go, tcpdump, openssl and root (capture on lo)")

NOW = dt.datetime.now(dt.timezone.utc)


# --------------------------------------------------------------------------- PKI

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "commpath-test")])


def _cert(subject, issuer_name, key, issuer_key, *, ca=False, eku=None, sans=None,
          not_before=None, not_after=None):
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(not_before or NOW - dt.timedelta(days=1))
         .not_valid_after(not_after or NOW + dt.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                          key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, key_cert_sign=True, crl_sign=True,
                                          encipher_only=False, decipher_only=False), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                          key_encipherment=True, data_encipherment=False,
                                          key_agreement=False, key_cert_sign=False, crl_sign=False,
                                          encipher_only=False, decipher_only=False), critical=True)
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                            critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(d: Path, stem: str, cert, key) -> tuple[str, str]:
    cp, kp = d / f"{stem}.crt", d / f"{stem}.key"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return str(cp), str(kp)


def make_pki(d: Path) -> dict:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("commpath test CA", _name("commpath test CA"), ca_key, ca_key, ca=True)
    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    out = {"ca": str(d / "ca.crt"), "fp": {}}

    def issue(stem, eku, sans=None, key=None, **kw):
        key = key or ec.generate_private_key(ec.SECP256R1())
        cert = _cert(stem, ca.subject, key, ca_key, eku=eku, sans=sans, **kw)
        out[stem] = _write(d, stem, cert, key)
        out["fp"][stem] = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    issue("server", [ExtendedKeyUsageOID.SERVER_AUTH], server_sans)
    issue("server-rsa", [ExtendedKeyUsageOID.SERVER_AUTH], server_sans,
          key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    issue("client", [ExtendedKeyUsageOID.CLIENT_AUTH], [x509.DNSName("system:node:node-1")])
    issue("expired", [ExtendedKeyUsageOID.SERVER_AUTH], server_sans,
          not_before=NOW - dt.timedelta(days=60), not_after=NOW - dt.timedelta(days=30))
    self_key = ec.generate_private_key(ec.SECP256R1())
    self_cert = (x509.CertificateBuilder().subject_name(_name("self-signed kubelet"))
                 .issuer_name(_name("self-signed kubelet")).public_key(self_key.public_key())
                 .serial_number(x509.random_serial_number())
                 .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30))
                 .add_extension(x509.SubjectAlternativeName(server_sans), critical=False)
                 .sign(self_key, hashes.SHA256()))
    out["selfsigned"] = _write(d, "selfsigned", self_cert, self_key)
    out["fp"]["selfsigned"] = hashlib.sha256(self_cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return out


# --------------------------------------------------------------------------- peers

def build_go_peer(cache_root: Path) -> str:
    """Compile tests/peers/tlspeer.go once per source hash (stdlib only, no downloads)."""
    src = PEERS / "tlspeer.go"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    out = cache_root / f"tlspeer-{digest}"
    if out.exists():
        return str(out)
    env = dict(os.environ, GOCACHE=str(cache_root / "gocache"), GOTOOLCHAIN="local", GOFLAGS="",
               GO111MODULE="off", GOPATH=str(cache_root / "gopath"), CGO_ENABLED="0")
    subprocess.run([GO, "build", "-o", str(out), str(src)], check=True, env=env, timeout=300,
                   capture_output=True)
    return str(out)


class Procs:
    """Processes started by the lab fixture; all ended (by pid) at teardown."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd, **kw) -> subprocess.Popen:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
        self.procs.append(p)
        return p

    def close(self):
        for p in self.procs:
            terminate(p, timeout=3)


def _wait_line(p: subprocess.Popen, word: str, timeout: float = 10) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = p.stdout.readline()
        if word in line:
            return
        if not line and p.poll() is not None:
            raise RuntimeError(f"peer exited: {p.stderr.read()}")
    raise RuntimeError(f"peer not ready: {word}")


def _free_base() -> int:
    for _ in range(50):
        base = random.randrange(20000, 32000, 100)   # below the ephemeral range
        socks = []
        try:
            for i in range(40):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


#: name -> (server kind, server cert, version, client auth, client kind, client cert, sni, insecure
#:          [, connections, client fails])
SCENARIOS = {
    "go13-mtls":          ("go", "server", "1.3", "require", "go", "client", "localhost", False),
    "go13-server-only":   ("go", "server", "1.3", "none", "go", None, "localhost", False),
    "go13-request-empty": ("go", "server", "1.3", "request", "go", None, "", False),
    "go12-mtls":          ("go", "server", "1.2", "require", "go", "client", "localhost", False),
    "go12-server-only":   ("go", "server-rsa", "1.2", "none", "go", None, "", False),
    "go12-request-empty": ("go", "server", "1.2", "request", "go", None, "localhost", False),
    "go12-selfsigned":    ("go", "selfsigned", "1.2", "none", "go", None, "localhost", True),
    "go13-expired":       ("go", "expired", "1.3", "none", "go", None, "localhost", True),
    "go12-expired":       ("go", "expired", "1.2", "none", "go", None, "localhost", True),
    "py13-mtls":          ("go", "server", "1.3", "require", "py", "client", "localhost", False),
    "py13-server-only":   ("go", "server", "1.3", "none", "py", None, "localhost", False),
    "ossl13-mtls":        ("openssl", "server", "1.3", "require", "go", "client", "localhost", False),
    "ossl13-server-only": ("openssl", "server", "1.3", "none", "go", None, "localhost", False),
    "ossl13-chacha-mtls": ("openssl-chacha", "server-rsa", "1.3", "require", "py", "client", "localhost", False),
    # (..., connections, the client is expected to fail)
    "go13-untrusted":     ("go", "selfsigned", "1.3", "none", "go", None, "localhost", False, 1, True),
    "go12-untrusted":     ("go", "selfsigned", "1.2", "none", "go", None, "localhost", False, 1, True),
    "go13-resume":        ("go", "server", "1.3", "none", "go", None, "localhost", False, 2, False),
    "go12-resume":        ("go", "server", "1.2", "require", "go", "client", "localhost", False, 2, False),
}


def _python_client(port, pki, version, client_cert, sni, keylog):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = ctx.maximum_version = v
    ctx.load_verify_locations(pki["ca"])
    if client_cert:
        ctx.load_cert_chain(*pki[client_cert])
    ctx.keylog_filename = keylog
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni or "127.0.0.1") as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: peer\r\n\r\n")
            while s.recv(4096):
                pass


def run_scenario(procs: Procs, peer: str, pki: dict, port: int, spec, keylog: str) -> None:
    server, scert, version, auth, client, ccert, sni, insecure, *rest = spec
    conns = rest[0] if rest else 1
    fails = rest[1] if len(rest) > 1 else False
    if server == "go":
        cmd = [peer, "-mode", "server", "-addr", f"127.0.0.1:{port}", "-cert", pki[scert][0],
               "-key", pki[scert][1], "-ca", pki["ca"], "-clientauth", auth, "-version", version,
               "-conns", str(conns)]
        srv = procs.start(cmd)
        _wait_line(srv, "listening")
    else:
        cmd = [OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", pki[scert][0],
               "-key", pki[scert][1], "-CAfile", pki["ca"], "-naccept", "1", "-www",
               "-tls1_3" if version == "1.3" else "-tls1_2"]
        if server == "openssl-chacha":
            cmd += ["-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"]
        if auth == "require":
            cmd += ["-Verify", "1"]
        srv = procs.start(cmd)
        _wait_line(srv, "ACCEPT")
    if client == "go":
        cmd = [peer, "-mode", "client", "-addr", f"127.0.0.1:{port}", "-ca", pki["ca"],
               "-version", version, "-keylog", keylog]
        if sni:
            cmd += ["-sni", sni]
        if insecure:
            cmd += ["-insecure"]
        if ccert:
            cmd += ["-cert", pki[ccert][0], "-key", pki[ccert][1]]
        if conns > 1:
            cmd += ["-conns", str(conns), "-resume"]
        done = subprocess.run(cmd, timeout=15, capture_output=True, text=True)
        assert (done.returncode != 0) == fails, done.stderr
        if conns > 1:
            assert "resumed=true" in done.stdout, done.stdout
    else:
        _python_client(port, pki, version, ccert, sni, keylog)
    try:
        srv.wait(timeout=10)
    except subprocess.TimeoutExpired:
        srv.terminate()


@pytest.fixture(scope="session")
def go_peer(tmp_path_factory):
    if not GO:
        pytest.skip("go not installed")
    root = Path(tempfile.gettempdir()) / "commpath-test-peers"
    root.mkdir(exist_ok=True)
    return build_go_peer(root)


@pytest.fixture(scope="session")
def lab(tmp_path_factory, go_peer):
    """One capture on lo holding every scenario; returns paths, the PKI and the ports."""
    d = tmp_path_factory.mktemp("cpt-hs-lab")
    pki = make_pki(d)
    keylog = str(d / "keys.log")
    pcap = d / "lab.pcap"
    base = _free_base()
    ports = {name: base + i for i, name in enumerate(SCENARIOS)}
    procs = Procs()
    dump = start_tcpdump(pcap, f"tcp portrange {base}-{base + len(SCENARIOS)}")
    try:
        for name, spec in SCENARIOS.items():
            run_scenario(procs, go_peer, pki, ports[name], spec, keylog)
    finally:
        # every connection in the file before tcpdump stops: on a loaded machine it may still be reading the
        # last scenarios' packets (the resumed sessions) when their clients are done (bounded wait)
        connections = sum(spec[8] if len(spec) > 8 else 1 for spec in SCENARIOS.values())
        stop_tcpdump(dump, settle=0.5, pcap=pcap, ended=connections)
        procs.close()
    return {"pcap": pcap, "pki": pki, "ports": ports, "keylog": keylog, "dir": d}


@pytest.fixture(scope="session")
def lab_result(lab):
    from commpath.decode.handshakes import analyze_handshakes
    cap = read_capture(lab["pcap"])
    plain = analyze_handshakes(cap, ca=lab["pki"]["ca"])
    keyed = analyze_handshakes(cap, ca=lab["pki"]["ca"], keylog=lab["keylog"])
    by_port: dict[int, list[int]] = {}
    for r in cap.flows.sort_values("flow_id").itertuples():
        by_port.setdefault(int(r.dst_port), []).append(int(r.flow_id))
    return cap, plain, keyed, by_port


def _row(result, lab, by_port, name, index=0):
    fid = by_port[lab["ports"][name]][index]
    rows = result.tls[result.tls.flow_id == fid]
    assert len(rows) == 1, f"{name}: expected one TLS row"
    return rows.iloc[0]


# --------------------------------------------------------------------------- tests

EXPECTED_INFERENCE = {
    "go13-mtls": "inferred-presented",
    "go13-server-only": "inferred-absent",
    "go13-request-empty": "inferred-absent",
    "go13-expired": "inferred-absent",
    "py13-mtls": "inferred-presented",
    "py13-server-only": "inferred-absent",
    "ossl13-mtls": "inferred-presented",
    "ossl13-server-only": "inferred-absent",
    "ossl13-chacha-mtls": "inferred-presented",
}

EXPECTED_DECRYPTED = {
    "go13-mtls": "presented",
    "go13-server-only": "not-requested",
    "go13-request-empty": "empty",
    "go13-expired": "not-requested",
    "py13-mtls": "presented",
    "py13-server-only": "not-requested",
    "ossl13-mtls": "presented",
    "ossl13-server-only": "not-requested",
    "ossl13-chacha-mtls": "presented",
}


@needs_tools
@pytest.mark.parametrize("name", sorted(EXPECTED_INFERENCE))
def test_tls13_client_cert_inference_matches_truth(lab, lab_result, name):
    _, plain, _, by_port = lab_result
    row = _row(plain, lab, by_port, name)
    assert row.tls_version == "TLS 1.3"
    assert row.certs_visibility == "not-visible"
    assert row.server_cert_fingerprints == []
    assert row.client_cert == EXPECTED_INFERENCE[name], row.client_cert_inference
    assert row.established
    assert pd_isna(row.server_cert_verified)          # nothing visible: null, not false


@needs_tools
@pytest.mark.parametrize("name", sorted(EXPECTED_DECRYPTED))
def test_tls13_keylog_reveals_certificates(lab, lab_result, name):
    _, _, keyed, by_port = lab_result
    row = _row(keyed, lab, by_port, name)
    spec = SCENARIOS[name]
    assert row.certs_visibility == "decrypted"
    assert row.server_cert_fingerprints[0] == lab["pki"]["fp"][spec[1]]
    assert row.client_cert == EXPECTED_DECRYPTED[name]
    assert row.cert_request == (spec[3] != "none")
    if spec[5]:
        # OpenSSL-based clients (Python ssl) send the chain up to the CA; Go sends the leaf only
        assert row.client_cert_fingerprints[0] == lab["pki"]["fp"][spec[5]]
        assert bool(row.client_cert_verified) is True
    if spec[1] == "expired":
        assert bool(row.server_cert_verified) is False
        assert "expired" in row.verify_error
    else:
        assert bool(row.server_cert_verified) is True, row.verify_error


@needs_tools
def test_tls12_mutual_tls_visible(lab, lab_result):
    _, plain, _, by_port = lab_result
    row = _row(plain, lab, by_port, "go12-mtls")
    fp = lab["pki"]["fp"]
    assert row.tls_version == "TLS 1.2" and row.certs_visibility == "visible"
    assert row.cert_request and row.client_cert == "presented"
    assert row.cert_request_cas == ["O=commpath-test,CN=commpath test CA"] or \
        row.cert_request_cas == ["CN=commpath test CA,O=commpath-test"]
    assert row.server_cert_fingerprints == [fp["server"]]
    assert row.client_cert_fingerprints == [fp["client"]]
    assert bool(row.server_cert_verified) and bool(row.client_cert_verified)
    assert row.sni == "localhost" and row.established


@needs_tools
def test_tls12_server_only_and_empty_client_certificate(lab, lab_result):
    _, plain, _, by_port = lab_result
    only = _row(plain, lab, by_port, "go12-server-only")
    assert only.client_cert == "not-requested" and not only.cert_request
    assert pd_isna(only.sni)                           # dialled by IP: no SNI ...
    assert bool(only.server_cert_verified) is True     # ... so the SAN is checked against 127.0.0.1
    empty = _row(plain, lab, by_port, "go12-request-empty")
    assert empty.cert_request and empty.client_cert == "empty"
    assert empty.client_cert_fingerprints == [] and pd_isna(empty.client_cert_verified)


@needs_tools
def test_self_signed_and_expired_are_not_verified(lab, lab_result):
    _, plain, _, by_port = lab_result
    ss = _row(plain, lab, by_port, "go12-selfsigned")
    assert bool(ss.server_cert_verified) is False
    exp = _row(plain, lab, by_port, "go12-expired")
    assert bool(exp.server_cert_verified) is False and "expired" in exp.verify_error
    certs = plain.certs.set_index("fingerprint")
    fp = lab["pki"]["fp"]
    assert bool(certs.loc[fp["selfsigned"], "self_signed"]) is True
    assert bool(certs.loc[fp["server"], "self_signed"]) is False
    assert certs.loc[fp["expired"], "not_after"] < NOW
    assert "clientAuth" in certs.loc[fp["client"], "extended_key_usage"]
    assert certs.loc[fp["client"], "roles"] == ["client"]
    assert certs.loc[fp["server-rsa"], "key_type"] == "RSA" and certs.loc[fp["server-rsa"], "key_bits"] == 2048
    assert "DNS:localhost" in certs.loc[fp["server"], "sans"] and "IP:127.0.0.1" in certs.loc[fp["server"], "sans"]


@needs_tools
def test_without_ca_bundle_verification_is_null(lab):
    from commpath.decode.handshakes import analyze_handshakes
    h = analyze_handshakes(read_capture(lab["pcap"]))
    assert h.tls.server_cert_verified.isna().all()
    assert h.tls.client_cert_verified.isna().all()


@needs_tools
def test_lab_matches_tshark(lab, lab_result):
    """tshark's dissection of the same capture: version and cipher of each connection."""
    from conftest_handshakes import tshark_fields
    cap, plain, _, _ = lab_result
    rows = tshark_fields(lab["pcap"], ["tcp.srcport", "tls.handshake.ciphersuite",
                                       "tls.handshake.extensions.supported_version"],
                         "tls.handshake.type == 2")
    flows = cap.flows.set_index("flow_id")
    server_ports = set(lab["ports"].values())
    ours = {int(flows.loc[r.flow_id, "dst_port"]): r for r in plain.tls.itertuples()}
    assert server_ports <= set(ours)
    rows = [r for r in rows if int(r[0]) in server_ports]     # other traffic on lo may match the filter
    assert len({int(r[0]) for r in rows}) >= len(server_ports) - 1
    for port, suite, sv in rows:
        r = ours[int(port)]
        assert r.cipher_id == int(suite, 16)
        assert (r.tls_version == "TLS 1.3") == (sv == "0x0304")


@needs_tools
def test_keylog_certificates_match_tshark_decryption(lab, lab_result):
    """With the same key log, tshark decrypts the same certificates (server and client chains)."""
    from conftest_handshakes import tshark_fields
    cap, _, keyed, _ = lab_result
    rows = tshark_fields(lab["pcap"], ["tcp.srcport", "tcp.dstport", "tls.handshake.certificate"],
                         "tls.handshake.type == 11", extra=["-o", f"tls.keylog_file:{lab['keylog']}"])
    server_ports = set(lab["ports"].values())
    flows = cap.flows.set_index("flow_id")
    ours = {int(flows.loc[r.flow_id, "dst_port"]): r for r in keyed.tls.itertuples()
            if not r.resumed}
    seen = 0
    for sport, dport, certs in rows:
        if int(sport) not in server_ports and int(dport) not in server_ports:
            continue
        fps = [hashlib.sha256(bytes.fromhex(c.replace(":", ""))).hexdigest() for c in certs.split(",") if c]
        if int(sport) in server_ports:
            assert ours[int(sport)].server_cert_fingerprints == fps
        else:
            assert ours[int(dport)].client_cert_fingerprints == fps
        seen += 1
    assert seen >= len(SCENARIOS)


def pd_isna(v) -> bool:
    import pandas as pd
    return v is None or bool(pd.isna(v))


@needs_tools
def test_untrusted_server_aborts_the_handshake(lab, lab_result):
    """The client rejects a self-signed certificate: TLS 1.2 says so in clear, TLS 1.3 encrypted."""
    _, plain, _, by_port = lab_result
    t12 = _row(plain, lab, by_port, "go12-untrusted")
    assert not t12.established and "fatal:bad_certificate" in list(t12.alerts)
    assert bool(t12.server_cert_verified) is False
    t13 = _row(plain, lab, by_port, "go13-untrusted")
    assert not t13.established and "encrypted:client" in list(t13.alerts)
    assert t13.client_cert == "unknown"


@needs_tools
def test_resumed_sessions(lab, lab_result):
    _, plain, keyed, by_port = lab_result
    for name in ("go13-resume", "go12-resume"):
        first, second = _row(plain, lab, by_port, name, 0), _row(plain, lab, by_port, name, 1)
        info = (name, first.to_dict(), second.to_dict())
        assert not first.resumed, info
        assert second.resumed and second.established, info
        assert second.server_cert_fingerprints == []
    # TLS 1.3 PSK resumption: the server may not ask for a certificate (RFC 8446 4.3.2)
    assert _row(plain, lab, by_port, "go13-resume", 1).client_cert == "not-requested"
    # TLS 1.2 abbreviated handshake: the client authenticated in the first session, which issued the
    # ticket the second resumes: the second inherits what the first showed, and says so
    first, second = _row(plain, lab, by_port, "go12-resume", 0), _row(plain, lab, by_port, "go12-resume", 1)
    assert first.client_cert == "presented" and first.client_cert_source == "handshake"
    assert second.client_cert == "presented" and second.client_cert_source == "resumed-from"
    assert second.resumed_from == first.flow_id
    assert _row(keyed, lab, by_port, "go13-resume", 1).certs_visibility == "decrypted"


@needs_tools
def test_tls13_ciphers_decrypted(lab, lab_result):
    """The key log opens AES-GCM and ChaCha20-Poly1305 flights alike."""
    _, _, keyed, _ = lab_result
    done = keyed.tls[keyed.tls.certs_visibility == "decrypted"]
    assert {"TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"} <= set(done.cipher)

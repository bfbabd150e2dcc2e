"""Certificate parsing and chain verification; key-log loading and TLS 1.3 key derivation."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from commpath.decode.keylog import hkdf_expand_label, load_keylog
from commpath.decode.x509 import load_ca_bundle, name_from_der, parse_certificate, verify_chain
from commpath.errors import InputError

NOW = dt.datetime.now(dt.timezone.utc)
PUBLIC = Path(__file__).resolve().parents[1].parent / "shared/pcaps/public"


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject, issuer, key, issuer_key, *, ca=False, sans=None, eku=None, days=(-1, 30)):
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(0x00F1E2D3C4B5A697)
         .not_valid_before(NOW + dt.timedelta(days=days[0])).not_valid_after(NOW + dt.timedelta(days=days[1]))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                      key_encipherment=not ca, data_encipherment=False, key_agreement=False,
                                      key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False),
                        critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer_key is not key:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                            critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki():
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = _issue("kubernetes-ca", _name("kubernetes-ca"), root_key, root_key, ca=True, days=(-10, 3650))
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _issue("kubelet-intermediate", root.subject, inter_key, root_key, ca=True, days=(-5, 365))
    leaf_key = ed25519.Ed25519PrivateKey.generate()
    leaf = _issue("system:node:node-1", inter.subject, leaf_key, inter_key,
                  sans=[x509.DNSName("node-1"), x509.IPAddress(ipaddress.ip_address("10.0.0.11")),
                        x509.UniformResourceIdentifier("spiffe://cluster.local/node-1"),
                        x509.RFC822Name("ops@example.org")],
                  eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    der = lambda c: c.public_bytes(serialization.Encoding.DER)   # noqa: E731
    return {"root": root, "chain": [parse_certificate(der(leaf)), parse_certificate(der(inter))]}


def test_parsed_fields(pki):
    leaf, inter = pki["chain"]
    row = leaf.row
    assert row["subject"] == "CN=system:node:node-1,O=system:nodes,C=DE"
    assert row["issuer"] == "CN=kubelet-intermediate,O=system:nodes,C=DE"
    assert row["serial"] == "F1E2D3C4B5A697"
    assert row["sans"] == ["DNS:node-1", "IP:10.0.0.11", "URI:spiffe://cluster.local/node-1", "email:ops@example.org"]
    assert (row["key_type"], row["key_bits"]) == ("Ed25519", 256)
    assert row["signature_algorithm"] == "ecdsa-with-SHA256"
    assert row["is_ca"] is False and row["self_signed"] is False
    assert row["key_usage"] == ["digitalSignature", "keyEncipherment"]
    assert row["extended_key_usage"] == ["serverAuth", "clientAuth"]
    assert inter.row["is_ca"] is True and inter.row["key_usage"] == ["digitalSignature", "keyCertSign", "cRLSign"]
    assert (inter.row["key_type"], inter.row["key_bits"]) == ("EC", 256)


def test_chain_verifies_with_intermediate_and_name(pki):
    chain, cas = pki["chain"], [pki["root"]]
    assert verify_chain(chain, cas, NOW, server_name="node-1") == (True, None)
    assert verify_chain(chain, cas, NOW, server_ip="10.0.0.11") == (True, None)
    assert verify_chain(chain, cas, NOW, client=True) == (True, None)


def test_chain_failures_say_why(pki):
    chain, cas = pki["chain"], [pki["root"]]
    ok, err = verify_chain(chain, cas, NOW, server_name="node-2")
    assert ok is False and err
    ok, err = verify_chain(chain[:1], cas, NOW, server_name="node-1")      # intermediate missing
    assert ok is False and err
    ok, err = verify_chain(chain, cas, NOW + dt.timedelta(days=400), server_name="node-1")
    assert ok is False and "expired" in err
    other = ec.generate_private_key(ec.SECP256R1())
    stranger = _issue("other-ca", _name("other-ca"), other, other, ca=True)
    ok, err = verify_chain(chain, [stranger], NOW, server_name="node-1")
    assert ok is False and err


def test_nothing_to_verify_is_null(pki):
    assert verify_chain([], [pki["root"]], NOW, server_name="x") == (None, None)
    assert verify_chain(pki["chain"], [], NOW, server_name="x") == (None, None)


def test_garbage_certificate_keeps_fingerprint():
    pc = parse_certificate(b"\x30\x03\x02\x01\x00")
    assert pc.cert is None and "does not parse" in pc.row["parse_error"] and len(pc.fingerprint) == 64


def test_name_from_der_round_trip_and_garbage(pki):
    der = pki["root"].subject.public_bytes()
    assert name_from_der(der) == "CN=kubernetes-ca,O=system:nodes,C=DE"
    assert name_from_der(b"\x30\x05\x31\x03\x30\x01").startswith("#")


def test_ca_bundle_errors(tmp_path):
    with pytest.raises(InputError, match="cannot read CA bundle"):
        load_ca_bundle(tmp_path / "missing.pem")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(InputError, match="no PEM certificate"):
        load_ca_bundle(bad)


def test_keylog_errors_and_parsing(tmp_path):
    with pytest.raises(InputError, match="cannot read key log"):
        load_keylog(tmp_path / "missing.log")
    bad = tmp_path / "bad.log"
    bad.write_text("CLIENT_RANDOM zz\n")
    with pytest.raises(InputError, match="line 1"):
        load_keylog(bad)
    empty = tmp_path / "empty.log"
    empty.write_text("# nothing\n")
    with pytest.raises(InputError, match="no key log lines"):
        load_keylog(empty)
    good = tmp_path / "keys.log"
    good.write_text("# comment\nSERVER_HANDSHAKE_TRAFFIC_SECRET " + "ab" * 32 + " " + "cd" * 32 + "\n"
                    "CLIENT_RANDOM " + "ab" * 32 + " " + "ef" * 48 + "\n")
    keys = load_keylog(good)
    assert keys == {bytes.fromhex("ab" * 32): {"SERVER_HANDSHAKE_TRAFFIC_SECRET": bytes.fromhex("cd" * 32)}}


def test_analyze_handshakes_rejects_bad_ca_and_keylog(tmp_path):
    from commpath.decode.handshakes import analyze_handshakes
    with pytest.raises(InputError):
        analyze_handshakes(None, ca=str(tmp_path / "nope.pem"))
    with pytest.raises(InputError):
        analyze_handshakes(None, keylog=str(tmp_path / "nope.log"))


def test_hkdf_expand_label_rfc8448():
    """RFC 8448 section 3: the server handshake traffic key and IV of the simple 1-RTT handshake."""
    secret = bytes.fromhex("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38")
    assert hkdf_expand_label(secret, "key", b"", 16, hashes.SHA256).hex() == "3fce516009c21727d0f2e4e86ee403bc"
    assert hkdf_expand_label(secret, "iv", b"", 12, hashes.SHA256).hex() == "5d313eb2671276ee13000b30"


def _der(c):
    return c.public_bytes(serialization.Encoding.DER)


def test_go_semantics_kubernetes_client_certificate_without_san(pki):
    """kubelet/scheduler client certificates carry no SAN; Go (and so the apiserver) accepts them."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _issue("kubernetes", _name("kubernetes"), root_key, root_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    client = parse_certificate(_der(_issue("system:kube-scheduler", root.subject, key, root_key,
                                           eku=[ExtendedKeyUsageOID.CLIENT_AUTH])))
    assert verify_chain([client], [root], NOW, client=True) == (True, None)
    ok, err = verify_chain([client], [root], NOW, server_name="x")          # not a serving cert
    assert ok is False and "key usage" in err


def test_go_semantics_leaf_marked_ca_and_self_signed(pki):
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _issue("kubernetes", _name("kubernetes"), root_key, root_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf_ca = parse_certificate(_der(_issue("node-1", root.subject, key, root_key, ca=True,
                                            sans=[x509.DNSName("node-1")])))
    assert verify_chain([leaf_ca], [root], NOW, server_name="node-1") == (True, None)
    self_cert = _issue("node-1@1700000000", _name("node-1@1700000000"), key, key, ca=True,
                       sans=[x509.DNSName("node-1")])
    ok, err = verify_chain([parse_certificate(_der(self_cert))], [root], NOW, server_name="node-1")
    assert ok is False and "self-signed" in err
    assert verify_chain([parse_certificate(_der(self_cert))], [self_cert], NOW, server_name="node-1") == (True, None)


def test_go_semantics_names(pki):
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _issue("kubernetes", _name("kubernetes"), root_key, root_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = parse_certificate(_der(_issue("apiserver", root.subject, key, root_key,
                                         sans=[x509.DNSName("*.svc.cluster.local"),
                                               x509.IPAddress(ipaddress.ip_address("10.96.0.1"))])))
    assert verify_chain([leaf], [root], NOW, server_name="kubernetes.svc.cluster.local") == (True, None)
    assert verify_chain([leaf], [root], NOW, server_ip="10.96.0.1") == (True, None)
    assert verify_chain([leaf], [root], NOW, server_name="10.96.0.1") == (True, None)   # IP given as SNI
    ok, err = verify_chain([leaf], [root], NOW, server_name="a.b.svc.cluster.local")
    assert ok is False and "not a.b.svc.cluster.local" in err
    ok, err = verify_chain([leaf], [root], NOW, server_ip="10.96.0.2")
    assert ok is False and "not 10.96.0.2" in err


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize("digest,algorithm", [("sha1", "sha1WithRSAEncryption"), ("md5", "md5WithRSAEncryption")])
def test_legacy_self_signed_certificates_are_self_signed(tmp_path, digest, algorithm):
    """cryptography refuses SHA-1/MD5 signatures; they are verified explicitly and still identify the issuer."""
    crt = tmp_path / "legacy.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "k.pem"),
                    "-out", str(crt), "-days", "30", "-subj", f"/CN=legacy-{digest}", f"-{digest}"],
                   check=True, capture_output=True)
    der = x509.load_pem_x509_certificate(crt.read_bytes()).public_bytes(serialization.Encoding.DER)
    row = parse_certificate(der).row
    assert row["signature_algorithm"] == algorithm and row["self_signed"] is True
    forged = bytearray(der)
    forged[-5] ^= 0x01                                   # inside the signature: no longer its own
    assert parse_certificate(bytes(forged)).row["self_signed"] is False


def test_self_signed_unknown_when_it_cannot_be_checked():
    """A signature algorithm nobody here knows leaves self_signed <NA>, not False."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(65537, 2048)
    der = _issue("self", _name("self"), key, key).public_bytes(serialization.Encoding.DER)
    sha256_rsa = bytes.fromhex("06092a864886f70d01010b")            # 1.2.840.113549.1.1.11
    assert der.count(sha256_rsa) == 2                               # in the TBS and beside the signature
    unknown = der.replace(sha256_rsa, sha256_rsa[:-1] + b"\x7f")     # 1.2.840.113549.1.1.127
    row = parse_certificate(unknown).row
    assert row["subject"] == row["issuer"] and row["signature_algorithm"] == "1.2.840.113549.1.1.127"
    assert row["self_signed"] is None
    assert parse_certificate(der).row["self_signed"] is True


@pytest.mark.skipif(not PUBLIC.exists(), reason="public captures not beside the checkout")
def test_sha1_root_in_a_public_capture_is_self_signed():
    """tls1.2.pcap sends AddTrust External CA Root, self-signed with SHA-1 (was reported False)."""
    from conftest_handshakes import read_capture
    from commpath.decode.handshakes import analyze_handshakes
    certs = analyze_handshakes(read_capture(PUBLIC / "zeek/testing/btest/Traces/tls/tls1.2.pcap")).certs
    root = certs[certs.subject.str.startswith("CN=AddTrust External CA Root")].iloc[0]
    assert root.signature_algorithm == "sha1WithRSAEncryption" and root.self_signed == True  # noqa: E712
    assert not certs[~certs.subject.str.startswith("CN=AddTrust")].self_signed.any()


@pytest.mark.skipif(not PUBLIC.exists(), reason="public captures not beside the checkout")
def test_sha1_chain_to_a_trusted_root_fails_for_its_weak_signature(tmp_path):
    """A SHA-1 chain to a root in the bundle is refused as Go refuses it: for the algorithm, not the authority."""
    from conftest_handshakes import read_capture
    from commpath.decode.handshakes import analyze_handshakes
    from commpath.decode.tls import parse_tls
    cap = read_capture(PUBLIC / "zeek/testing/btest/Traces/tls/tls1.2.pcap")
    (fs,) = cap.streams.values()
    chain = parse_tls(fs).server_chain
    root = x509.load_der_x509_certificate(chain[-1])
    assert root.subject == root.issuer and root.signature_hash_algorithm.name == "sha1"
    bundle = tmp_path / "addtrust.pem"
    bundle.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    t = analyze_handshakes(cap, ca=str(bundle)).tls.iloc[0]
    assert t.server_cert_verified == False  # noqa: E712
    assert "insecure algorithm (sha1WithRSAEncryption)" in t.verify_error, t.verify_error


def _ca(subject, issuer, key, issuer_key, *, path_length=None, cert_sign=True, constraints=None, eku=None):
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
         .add_extension(x509.KeyUsage(True, False, False, False, False, cert_sign, True, False, False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False))
    if constraints is not None:
        b = b.add_extension(constraints, critical=True)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def ca_chain():
    """A root, a key for an intermediate and one for leaves."""
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(4)]
    root = _ca("root", _name("root"), keys[0], keys[0])
    return root, keys


def _leaf(issuer, issuer_key, key, name="node-1"):
    return parse_certificate(_der(_issue(name, issuer.subject, key, issuer_key, sans=[x509.DNSName(name)],
                                         eku=[ExtendedKeyUsageOID.SERVER_AUTH])))


def test_chain_is_built_first_and_every_reason_reported(ca_chain):
    from commpath.decode.x509 import verify_chain_reasons
    root, keys = ca_chain
    inter = _ca("inter", root.subject, keys[1], keys[0])
    leaf = _leaf(inter, keys[1], keys[2])
    assert verify_chain_reasons([leaf, parse_certificate(_der(inter))], [root], NOW, server_name="node-1") == \
        (True, None, [])
    ok, err, reasons = verify_chain_reasons([leaf], [root], NOW + dt.timedelta(days=60), server_name="node-2")
    assert ok is False and reasons == ["missing-intermediate", "expired", "name-mismatch"]
    assert err.startswith("certificate signed by unknown authority")           # the chain's reason first
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = _ca("stranger", _name("stranger"), stranger_key, stranger_key)
    ok, err, reasons = verify_chain_reasons([leaf, parse_certificate(_der(inter))], [stranger], NOW,
                                            server_name="node-1")
    assert ok is False and reasons == ["missing-intermediate"]
    presented_root = [leaf, parse_certificate(_der(inter)), parse_certificate(_der(root))]
    ok, err, reasons = verify_chain_reasons(presented_root, [stranger], NOW, server_name="node-1")
    assert ok is False and reasons == ["unknown-authority"] and "CN=root" in err


@pytest.mark.parametrize("case", ["path-length", "name-constraints", "key-cert-sign", "intermediate-eku"])
def test_ca_rules_along_the_path(ca_chain, case):
    """basicConstraints path length, name constraints and keyCertSign (cryptography's verifier), and the
    intermediates' extended key usage (Go's rule), each fail the chain with its own reason."""
    from commpath.decode.x509 import verify_chain_reasons
    root, keys = ca_chain
    if case == "path-length":
        top = _ca("inter-0", root.subject, keys[1], keys[0], path_length=0)
        inter = _ca("inter-1", top.subject, keys[3], keys[1])
        chain = [_leaf(inter, keys[3], keys[2]), parse_certificate(_der(inter)), parse_certificate(_der(top))]
        reason, text = "ca-constraints", "path length"
    else:
        kw = {"name-constraints": {"constraints": x509.NameConstraints([x509.DNSName("example.org")], None)},
              "key-cert-sign": {"cert_sign": False},
              "intermediate-eku": {"eku": [ExtendedKeyUsageOID.CLIENT_AUTH]}}[case]
        inter = _ca("inter", root.subject, keys[1], keys[0], **kw)
        chain = [_leaf(inter, keys[1], keys[2]), parse_certificate(_der(inter))]
        reason = "issuer-usage" if case == "intermediate-eku" else "ca-constraints"
        text = {"name-constraints": "name constraint", "key-cert-sign": "keyCertSign",
                "intermediate-eku": "does not allow serverAuth"}[case]
    ok, err, reasons = verify_chain_reasons(chain, [root], NOW, server_name="node-1")
    assert ok is False and reasons == [reason] and text in err, err


def _with_serial_byte(value: bytes) -> bytes:
    """A real certificate whose one-byte serial is replaced by ``value`` (the signature no longer matches)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("serial")).issuer_name(_name("serial"))
            .public_key(key.public_key()).serial_number(0x55)
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    der = _der(cert)
    at = der.index(bytes.fromhex("a003020102020155")) + 7
    return der[:at] + value + der[at + 1:]


@pytest.mark.parametrize("value,serial,word", [(b"\x00", "00", "zero"), (b"\xff", "01", "negative")])
def test_non_positive_serials_are_warnings_in_the_row_not_on_stderr(value, serial, word):
    der = _with_serial_byte(value)
    prog = ("import sys\nfrom commpath.decode.x509 import parse_certificate\n"
            f"row = parse_certificate(bytes.fromhex({der.hex()!r})).row\n"
            "print(row['serial'], row['warnings'], row.get('parse_error'))")
    out = subprocess.run([sys.executable, "-W", "always", "-c", prog], capture_output=True, text=True, check=True)
    assert out.stderr == ""                                   # cryptography's deprecation warning is caught
    assert out.stdout.startswith(f"{serial} ['serial number is {word}") and out.stdout.rstrip().endswith("None")


def test_non_positive_serial_copy_keeps_every_other_field():
    """When cryptography refuses such certificates, the copy with a positive serial is what gets parsed."""
    from commpath.decode.x509 import positive_serial_copy
    der = _with_serial_byte(b"\xff")
    copy = x509.load_der_x509_certificate(positive_serial_copy(der))
    assert copy.serial_number == 1 and len(positive_serial_copy(der)) == len(der)
    assert copy.subject == _name("serial") and copy.not_valid_after_utc > NOW


def two_servers_under_one_intermediate(ca_chain, tmp_path):
    """The CA bundle (the root alone), an intermediate's DER, two leaves under it (a.example,
    b.example) and ``flow(flow_id, sni, chain)``: a TLS 1.2 connection whose server presents ``chain``."""
    from commpath.decode.streams import FlowStreams, Stream
    from test_tls_hostile import client_hello, handshake, record, server_hello, sni_ext
    root, keys = ca_chain
    inter = _ca("inter", root.subject, keys[1], keys[0])
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(root.public_bytes(serialization.Encoding.PEM))

    def flow(fid: int, name: str, certs: list) -> FlowStreams:
        ders = b"".join(len(d).to_bytes(3, "big") + d for d in certs)
        flight = server_hello() + handshake(11, len(ders).to_bytes(3, "big") + ders) + handshake(14, b"")
        cli = record(22, client_hello(sni_ext(name.encode())))
        return FlowStreams(fid, Stream(cli, (0,), (1,)), Stream(record(22, flight), (0,), (2,)))

    a = _der(_leaf(inter, keys[1], keys[2], "a.example").cert)
    b = _der(_leaf(inter, keys[1], keys[3], "b.example").cert)
    return bundle, _der(inter), a, b, flow


def test_intermediate_from_another_connection_completes_a_chain(tmp_path, ca_chain):
    """One server sends its intermediate, another (same CA) does not: the run completes the second chain,
    marked chain_from_run; without that intermediate anywhere it stays a missing-intermediate failure."""
    import pandas as pd

    from commpath.decode.handshakes import HandshakeAnalyzer
    bundle, inter, a, b, flow = two_servers_under_one_intermediate(ca_chain, tmp_path)
    for with_inter, expected in ((True, True), (False, False)):
        analyzer = HandshakeAnalyzer(ca=str(bundle))
        analyzer.feed(flow(1, "b.example", [b]), "tls", NOW.timestamp(), "192.0.2.2")
        analyzer.feed(flow(2, "a.example", [a, inter] if with_inter else [a]), "tls", NOW.timestamp(),
                      "192.0.2.1")
        tls = analyzer.result().tls.set_index("flow_id")
        second = tls.loc[1]
        assert bool(second.server_cert_verified) is expected and bool(second.chain_from_run) is expected
        if expected:
            assert pd.isna(second.verify_error) and list(second.verify_reasons) == []
            assert tls.loc[2].server_cert_verified and not tls.loc[2].chain_from_run
        else:
            assert "server:missing-intermediate" in second.verify_reasons

"""TLS handshakes of public captures against Zeek's baselines, Arkime's expected sessions and tshark."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from functools import lru_cache

import pytest

from conftest_handshakes import PUBLIC, open_capture, tshark_fields, zeek_log

pytestmark = pytest.mark.skipif(not PUBLIC.exists(), reason="public captures not beside the checkout")

ZEEK_VERSIONS = {"SSLv3": "SSL 3.0", "TLSv10": "TLS 1.0", "TLSv11": "TLS 1.1", "TLSv12": "TLS 1.2",
                 "TLSv13": "TLS 1.3"}
ARKIME_VERSIONS = {"SSLv3": "SSL 3.0", "TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1", "TLSv1.2": "TLS 1.2",
                   "TLSv1.3": "TLS 1.3"}
#: tls-fragmented-handshake carries a 340 KB certificate: read it with a larger stream limit.
BIG_LIMIT = 1 << 20


@lru_cache(maxsize=None)
def analyzed(path: str, limit: int = 16384):
    import commpath
    from commpath.decode.handshakes import analyze_handshakes
    cap = commpath.read(str(open_capture(PUBLIC / path)), payload_limit=limit)
    return cap, analyze_handshakes(cap)


def _zeek_cases(kind: str):
    if not PUBLIC.exists():                  # collected without ../shared: the module's skip says why
        return
    manifest = json.loads((PUBLIC / "zeek/manifest.json").read_text())
    for trace, entry in manifest.items():
        for b in entry["baselines"]:
            if b.endswith(f"/{kind}") and "cluster" not in b:
                yield pytest.param(f"zeek/{trace}", f"zeek/{b}", id=f"{trace.split('/')[-1]}:{b.split('/')[-2]}")


def _zset(text: str) -> list[str]:
    return [] if text in ("-", "(empty)") else text.split(",")


# --------------------------------------------------------------------------- Zeek ssl.log

@pytest.mark.parametrize("trace,baseline", list(_zeek_cases("ssl.log")))
def test_zeek_ssl_log(trace, baseline):
    limit = BIG_LIMIT if "fragmented" in trace else 16384
    _, h = analyzed(trace, limit)
    (z,) = zeek_log(PUBLIC / baseline)
    assert len(h.tls) == 1
    t = h.tls.iloc[0]
    assert (t.tls_version if isinstance(t.tls_version, str) else "-") == \
        (ZEEK_VERSIONS.get(z["version"], "-"))
    assert (t.cipher if isinstance(t.cipher, str) else "-") == z["cipher"]
    assert (t.sni if isinstance(t.sni, str) else "-") == z["server_name"]
    assert bool(t.resumed) == (z["resumed"] == "T")
    assert bool(t.established) == (z["established"] == "T")
    # Zeek's last_alert is the last alert it could read; encrypted alerts (close_notify after
    # ChangeCipherSpec) it cannot read either, we list them as "encrypted:<side>".
    clear = [a.split(":", 1)[1] for a in t.alerts if not a.startswith("encrypted:")]
    assert (clear[-1] if clear else "-") == z["last_alert"]
    assert t.server_cert_fingerprints == _zset(z["cert_chain_fps"])
    assert t.client_cert_fingerprints == _zset(z["client_cert_chain_fps"])
    if "requested_client_certificate_authorities" in z:
        # Zeek escapes the commas inside one name as \x2c
        assert t.cert_request_cas == [n.replace("\\x2c", ",") for n in
                                      z["requested_client_certificate_authorities"].split(",")]
    assert not t.partial, t.parse_error


def test_fragmented_certificate_is_partial_with_the_default_limit():
    """With the default 16 KiB per direction the 340 KB Certificate message is cut: say so."""
    _, h = analyzed("zeek/testing/btest/Traces/tls/tls-fragmented-handshake.pcap.gz")
    t = h.tls.iloc[0]
    assert t.partial and ("Certificate" in t.parse_error or "type 11 incomplete" in t.parse_error), t.parse_error
    assert t.tls_version == "TLS 1.2" and t.sni == "104.236.167.107"
    assert t.client_cert == "unknown"


# --------------------------------------------------------------------------- Zeek x509.log

@pytest.mark.parametrize("trace,baseline", list(_zeek_cases("x509.log")))
def test_zeek_x509_log(trace, baseline):
    _, h = analyzed(trace)
    certs = h.certs.set_index("fingerprint")
    rows = zeek_log(PUBLIC / baseline)
    assert rows
    for z in rows:
        c = certs.loc[z["fingerprint"]]
        assert c.serial == z["certificate.serial"]
        assert c.subject == z["certificate.subject"]
        assert c.issuer == z["certificate.issuer"]
        assert c.not_before.timestamp() == float(z["certificate.not_valid_before"])
        assert c.not_after.timestamp() == float(z["certificate.not_valid_after"])
        assert c.signature_algorithm == z["certificate.sig_alg"]
        assert c.key_type.lower() == {"rsa": "rsa", "ecdsa": "ec"}[z["certificate.key_type"]]
        assert int(c.key_bits) == int(z["certificate.key_length"])
        assert [s[4:] for s in c.sans if s.startswith("DNS:")] == _zset(z["san.dns"])
        if z["basic_constraints.ca"] != "-":
            assert bool(c.is_ca) == (z["basic_constraints.ca"] == "T")
        if z["host_cert"] == "T":
            assert "server" in c.roles
        if z.get("client_cert") == "T":
            assert "client" in c.roles


def test_client_certificate_chain_of_mutual_tls():
    """client-certificate.pcap: CertificateRequest, then the client's chain for johanna@corelight.com."""
    _, h = analyzed("zeek/testing/btest/Traces/tls/client-certificate.pcap")
    t = h.tls.iloc[0]
    assert t.cert_request and t.client_cert == "presented" and t.established
    certs = h.certs.set_index("fingerprint")
    leaf = certs.loc[t.client_cert_fingerprints[0]]
    assert leaf.subject == "CN=johanna@corelight.com"
    assert leaf.roles == ["client"] and "clientAuth" in leaf.extended_key_usage
    assert certs.loc[t.client_cert_fingerprints[1]].roles == ["intermediate"]
    assert "CN=certauth.idrix.fr" == certs.loc[t.server_cert_fingerprints[0]].subject


def test_failed_certificate_request_is_empty_and_not_established():
    _, h = analyzed("zeek/testing/btest/Traces/tls/certificate-request-failed.pcap")
    t = h.tls.iloc[0]
    assert t.cert_request and t.client_cert == "empty" and not t.established
    assert t.alerts == ["fatal:handshake_failure"]


# --------------------------------------------------------------------------- TLS 1.3 traces

@pytest.mark.parametrize("trace,hrr,inference", [
    ("zeek/testing/btest/Traces/tls/tls13_wolfssl.pcap", False, "inferred-absent"),
    ("zeek/testing/btest/Traces/tls/hrr.pcap", True, "inferred-absent"),
    ("zeek/testing/btest/Traces/tls/chrome-1250-tls-x25519-kyber.pcap", False, "inferred-absent"),
    ("arkime/curl-enabled-tls13.pcap", False, "inferred-absent"),
    # the client's encrypted flight was not captured: nothing to infer from
    ("zeek/testing/btest/Traces/tls/openjdk-25.0.2-zeek.org.pcap", False, "unknown"),
])
def test_tls13_certificates_not_visible_and_client_cert_inferred(trace, hrr, inference):
    _, h = analyzed(trace)
    t = h.tls[h.tls.tls_version == "TLS 1.3"].iloc[0]
    assert t.certs_visibility == "not-visible" and t.server_cert_fingerprints == []
    assert bool(t.hello_retry) == hrr
    assert t.client_cert == inference, t.client_cert_inference


def test_chrome_alps_flight_is_not_a_certificate():
    """Chrome adds a client EncryptedExtensions (ALPS) to its flight: 63 bytes, not Finished's 53."""
    _, h = analyzed("zeek/testing/btest/Traces/tls/chrome-1250-tls-x25519-kyber.pcap")
    t = h.tls.iloc[0]
    assert "ALPS" in t.client_cert_inference


# --------------------------------------------------------------------------- Arkime

def _arkime_sessions(name: str):
    data = json.loads((PUBLIC / f"arkime/{name}.test").read_text())
    return [s["body"] for s in data["sessions3"] if s["body"].get("tls")]


ARKIME_TLS = ["openssl-ssl3", "openssl-tls1", "openssl-tls1_1", "openssl-tls1_2", "curl-enabled-tls13", "ldap-ssl"]


@pytest.mark.parametrize("name", ARKIME_TLS)
def test_arkime_tls_sessions(name):
    cap, h = analyzed(f"arkime/{name}.pcap")
    (a,) = _arkime_sessions(name)
    flows = cap.flows.set_index("flow_id")
    rows = [r for r in h.tls.itertuples() if int(flows.loc[r.flow_id, "src_port"]) == a["source"]["port"]]
    assert len(rows) == 1
    t = rows[0]
    assert t.tls_version == ARKIME_VERSIONS[a["tls"]["version"][0]]
    assert t.cipher == a["tls"]["cipher"][0]
    assert t.ja4 == a["tls"]["ja4"][0]
    certs = h.certs.set_index("fingerprint")
    ours = {certs.loc[fp, "serial"].lstrip("0").lower(): certs.loc[fp] for fp in t.server_cert_fingerprints}
    for ac in a.get("cert", []):
        c = ours[ac["serial"].lstrip("0")]
        assert int(c.not_before.timestamp() * 1000) == ac["notBefore"]
        assert int(c.not_after.timestamp() * 1000) == ac["notAfter"]
        cn = [p[3:] for p in c.subject.split(",") if p.startswith("CN=")]
        assert [x.lower() for x in cn] == ac.get("subjectCN", [])
        icn = [p[3:] for p in c.issuer.split(",") if p.startswith("CN=")]
        assert [x.lower() for x in icn] == ac.get("issuerCN", [])
        assert [s[4:] for s in c.sans if s.startswith("DNS:")] == ac.get("alt", [])


def test_arkime_ja4_raw_parts_match():
    """JA4's first part (counts, version, SNI, ALPN) must equal Arkime's ja4_r head."""
    for name in ARKIME_TLS:
        _, h = analyzed(f"arkime/{name}.pcap")
        (a,) = _arkime_sessions(name)
        assert h.tls.iloc[0].ja4.split("_")[0] == a["tls"]["ja4_r"][0].split("_")[0]


# --------------------------------------------------------------------------- tshark

TSHARK_TLS = [
    "zeek/testing/btest/Traces/tls/tls1.2.pcap", "zeek/testing/btest/Traces/tls/ecdhe.pcap",
    "zeek/testing/btest/Traces/tls/dhe.pcap", "zeek/testing/btest/Traces/tls/ecdsa-cert.pcap",
    "zeek/testing/btest/Traces/tls/tls1_1.pcap", "zeek/testing/btest/Traces/tls/tls-conn-with-extensions.pcap",
    "zeek/testing/btest/Traces/tls/client-certificate.pcap",
    "zeek/testing/btest/Traces/tls/certificate-request-failed.pcap",
    "zeek/testing/btest/Traces/tls/tls13_wolfssl.pcap", "zeek/testing/btest/Traces/tls/hrr.pcap",
    "zeek/testing/btest/Traces/tls/chrome-1250-tls-x25519-kyber.pcap",
    "zeek/testing/btest/Traces/tls/openjdk-25.0.2-zeek.org.pcap",
    "zeek/testing/btest/Traces/tunnels/geneve-47101.pcap",
    "arkime/openssl-ssl3.pcap", "arkime/openssl-tls1_2.pcap", "arkime/curl-enabled-tls13.pcap",
]

needs_tshark = pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed")


def _by_ports(cap, h):
    flows = cap.flows.set_index("flow_id")
    out = {}
    for r in h.tls.itertuples():
        key = frozenset((int(flows.loc[r.flow_id, "src_port"]), int(flows.loc[r.flow_id, "dst_port"])))
        assert key not in out
        out[key] = r
    return out


@needs_tshark
@pytest.mark.parametrize("trace", TSHARK_TLS)
def test_tshark_client_hello_fields(trace):
    cap, h = analyzed(trace)
    ours = _by_ports(cap, h)
    rows = tshark_fields(PUBLIC / trace, ["tcp.srcport", "tcp.dstport", "tls.handshake.extensions_server_name",
                                          "tls.handshake.extensions_alpn_str", "tls.handshake.ciphersuite",
                                          "tls.handshake.extensions.supported_version"],
                         "tls.handshake.type == 1")
    assert rows
    for sport, dport, sni, alpn, _, versions in rows[:1]:
        t = ours[frozenset((int(sport), int(dport)))]
        assert (t.sni if isinstance(t.sni, str) else "") == sni
        assert (t.alpn_offered if isinstance(t.alpn_offered, str) else "") == alpn
        if versions:
            names = {"0x0304": "TLS 1.3", "0x0303": "TLS 1.2", "0x0302": "TLS 1.1", "0x0301": "TLS 1.0"}
            offered = [names[v] for v in versions.split(",") if v in names]
            assert t.client_versions.split(",") == offered


@needs_tshark
@pytest.mark.parametrize("trace", TSHARK_TLS)
def test_tshark_server_hello_and_certificates(trace):
    cap, h = analyzed(trace)
    ours = _by_ports(cap, h)
    hello = tshark_fields(PUBLIC / trace, ["tcp.srcport", "tcp.dstport", "tls.handshake.ciphersuite"],
                          "tls.handshake.type == 2")
    for sport, dport, suites in hello:
        t = ours[frozenset((int(sport), int(dport)))]
        assert t.cipher_id == int(suites.split(",")[-1], 16)     # after an HRR: the real ServerHello
    certs = tshark_fields(PUBLIC / trace, ["tcp.srcport", "tcp.dstport", "tls.handshake.certificate",
                                           "x509af.serialNumber"], "tls.handshake.type == 11")
    table = h.certs.set_index("fingerprint")
    for sport, dport, ders, serials in certs:
        t = ours[frozenset((int(sport), int(dport)))]
        if not ders:                      # an empty Certificate message (no client certificate)
            assert t.client_cert == "empty"
            continue
        fps = [hashlib.sha256(bytes.fromhex(d.replace(":", ""))).hexdigest() for d in ders.split(",")]
        assert fps in (t.server_cert_fingerprints, t.client_cert_fingerprints)
        # tshark prints the DER INTEGER bytes (with a 00 sign byte); we print the value in hex
        for fp, serial in zip(fps, serials.split(",")):
            assert int(table.loc[fp, "serial"], 16) == int(serial.replace(":", ""), 16)


@needs_tshark
def test_tshark_alerts():
    trace = "zeek/testing/btest/Traces/tls/tls-1.2-handshake-failure.pcap"
    _, h = analyzed(trace)
    rows = tshark_fields(PUBLIC / trace, ["tls.alert_message.level", "tls.alert_message.desc"], "tls.alert_message")
    assert [f"{'fatal' if lvl == '2' else 'warning'}:handshake_failure" for lvl, desc in rows if desc == "40"] == \
        list(h.tls.iloc[0].alerts)


def test_tls_inside_http_connect_is_analysed():
    _, h = analyzed("zeek/testing/btest/Traces/http/connect-with-header.pcap")
    t = h.tls.iloc[0]
    assert bool(t.tunneled) and t.sni == "secure.newegg.com" and t.tls_version == "TLS 1.2"
    assert t.resumed and t.client_cert == "unknown"     # abbreviated handshake: nothing to see
    req = h.http[h.http.direction == "request"].iloc[0]
    assert req.method == "CONNECT" and req.connect_target == "secure.newegg.com:443"


def test_suricata_connect_then_tls():
    """Suricata's http-connect-tls: after CONNECT/200 the flow is TLS (app_proto tls)."""
    _, h = analyzed("suricata-verify/tests/http-connect/http-connect-tls/input.pcap")
    req = h.http[h.http.direction == "request"].iloc[0]
    resp = h.http[h.http.direction == "response"].iloc[0]
    assert (req.method, req.version, int(resp.status)) == ("CONNECT", "HTTP/1.1", 200)
    assert len(h.tls) == 1 and bool(h.tls.iloc[0].tunneled)


def test_not_tls_servers_give_partial_records():
    for trace in ("zeek/testing/btest/Traces/tls/ssl-to-http-server.pcap",
                  "zeek/testing/btest/Traces/tls/https-to-http.pcap"):
        _, h = analyzed(trace)
        t = h.tls.iloc[0]
        assert t.partial and "not a TLS record" in t.parse_error
        assert not t.established and t.client_cert == "unknown"


def test_certificate_validity_against_capture_time():
    """tls1.2.pcap's leaf expired in 2016; the capture is from 2011: verified at capture time."""
    cap, h = analyzed("zeek/testing/btest/Traces/tls/tls1.2.pcap")
    leaf = h.certs.set_index("fingerprint").loc[h.tls.iloc[0].server_cert_fingerprints[0]]
    ts = dt.datetime.fromtimestamp(float(cap.flows.ts_start.iloc[0]), dt.timezone.utc)
    assert leaf.not_before <= ts <= leaf.not_after


def test_ldap_starttls_is_found_after_the_clear_text_request():
    """ldap-ssl.pcap: an LDAP StartTLS extended operation, then TLS on the same connection."""
    cap, h = analyzed("arkime/ldap-ssl.pcap")
    assert str(cap.flows.app_protocol.iloc[0]) == "tls"      # upgraded in band: TLS, as Zeek's "ldap,ssl"
    t = h.tls.iloc[0]
    assert bool(t.starttls) and t.starttls_from == "ldap"
    assert t.tls_version == "TLS 1.2" and t.established
    assert h.certs.iloc[0].subject == "CN=LDAP SSL test"


def _public_tls_captures() -> list[str]:
    if not PUBLIC.exists():
        return []
    return sorted(str(p.relative_to(PUBLIC)) for p in PUBLIC.rglob("*") if p.name.endswith((".pcap", ".pcap.gz")))


@needs_tshark
@pytest.mark.parametrize("trace", _public_tls_captures())
def test_fingerprints_agree_with_tshark(trace):
    """JA3 and JA3S as tshark computes them (tls.handshake.ja3 / ja3s), and the key-exchange group it
    decodes (the ServerHello's key_share, or the ECDHE ServerKeyExchange's named curve)."""
    from commpath.decode._fingerprints import group_name
    cap, h = analyzed(trace, BIG_LIMIT if "fragmented" in trace else 16384)
    if not len(h.tls):      # nothing of ours to compare: tshark finds no TLS handshake either
        hellos = tshark_fields(PUBLIC / trace, ["frame.number"], "tls.handshake.type == 1 or tls.handshake.type == 2")
        assert not hellos, (trace, hellos[:5])
        return
    ours = _by_ports(cap, h)
    fields = ["tcp.srcport", "tcp.dstport", "tls.handshake.ja3", "tls.handshake.ja3s",
              "tls.handshake.extensions_key_share_group", "tls.handshake.server_named_curve", "tls.handshake.random"]
    hello = "tcp and (tls.handshake.type == 1 or tls.handshake.type == 2 or tls.handshake.type == 12)"
    rows = tshark_fields(PUBLIC / trace, fields, hello)
    if not rows:    # TLS on a port tshark takes for another protocol (a TLS client at an HTTP server): as TLS
        ports = sorted({int(p) for p in cap.flows.set_index("flow_id").loc[h.tls.flow_id, "dst_port"]})
        rows = tshark_fields(PUBLIC / trace, fields, hello, [a for p in ports for a in ("-d", f"tcp.port=={p},tls")])
    if not rows:    # TLS after an HTTP CONNECT in the same stream: no dissector of tshark's follows it
        assert h.tls.tunneled.all(), trace     # test_suricata_connect_then_tls: Suricata's oracle
        return
    groups: dict = {}
    checked = 0
    hrr = "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
    for sport, dport, ja3, ja3s, share, curve, random in rows:
        t = ours.get(frozenset((int(sport), int(dport))))
        if t is None or random.split(",")[-1] == hrr:       # ours is the real ServerHello's, not the retry's
            continue
        if ja3:
            assert t.ja3 == ja3.split(",")[-1], (trace, sport, dport)
            checked += 1
        if ja3s:
            groups.setdefault(t.flow_id, {})["ja3s"] = ja3s.split(",")[-1]
        if share and not ja3:
            groups.setdefault(t.flow_id, {})["group"] = int(share.split(",")[-1], 0)
        if curve:
            groups.setdefault(t.flow_id, {})["group"] = int(curve.split(",")[-1], 0)
    tls = h.tls.set_index("flow_id")
    for flow_id, seen in groups.items():
        t = tls.loc[flow_id]
        if "ja3s" in seen:
            assert t.ja3s == seen["ja3s"], (trace, flow_id)
            checked += 1
        if "group" in seen:
            assert t.kex_group == group_name(seen["group"]), (trace, flow_id)
    assert checked


def test_ja4s_of_the_specification_example():
    """FoxIO's JA4S example: TLS 1.2, extensions 0005,0017,ff01,0000, no ALPN, cipher c030."""
    from commpath.decode._fingerprints import ja4s
    assert ja4s(0x0303, 0xC030, (0x0005, 0x0017, 0xFF01, 0x0000), b"") == "t120400_c030_4e8089b08790"
    assert ja4s(0x0304, 0x1301, (0x002B, 0x0033), b"h2").startswith("t1302h2_1301_")   # selected TLS 1.3


def test_key_exchange_groups_of_public_captures():
    """TLS 1.3 key shares (x25519, the hybrid Kyber draft) and TLS 1.2 ECDHE curves by name."""
    expected = {"zeek/testing/btest/Traces/tls/chrome-1250-tls-x25519-kyber.pcap": "X25519Kyber768Draft00",
                "zeek/testing/btest/Traces/tls/tls13_wolfssl.pcap": None,
                "zeek/testing/btest/Traces/tls/ecdhe.pcap": None}
    seen = {}
    for trace in expected:
        _, h = analyzed(trace)
        seen[trace] = h.tls.iloc[0].kex_group
    assert seen["zeek/testing/btest/Traces/tls/chrome-1250-tls-x25519-kyber.pcap"] == "X25519Kyber768Draft00"
    assert seen["zeek/testing/btest/Traces/tls/tls13_wolfssl.pcap"] in ("x25519", "secp256r1")
    assert seen["zeek/testing/btest/Traces/tls/ecdhe.pcap"].startswith(("secp", "x25519"))

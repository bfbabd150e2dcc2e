"""tls-required fires only on clear text seen from a stream's start: lost first segments and
connections joined mid-record are unknown, with what would settle them."""

from __future__ import annotations

from pathlib import Path

import pytest

import commpath

APISERVER_HOST, ETCD_HOST = "192.0.2.10", "192.0.2.11"
# the middle of a TLS application-data stream: no record header at its start
MID_RECORD = bytes(range(37, 37 + 120)) * 2


def _conn(sport: int, t0: float, *, handshake: bool, lost_first: bool, fwd: bytes, rev: bytes) -> list:
    """apiserver → etcd:2379; with ``lost_first`` each direction's first segment is missing from the capture."""
    from scapy.all import IP, TCP, Raw

    c, s, dport = APISERVER_HOST, ETCD_HOST, 2379
    cs, ss = 1000, 9000
    pk = []
    if handshake:
        pk += [IP(src=c, dst=s) / TCP(sport=sport, dport=dport, flags="S", seq=cs),
               IP(src=s, dst=c) / TCP(sport=dport, dport=sport, flags="SA", seq=ss, ack=cs + 1),
               IP(src=c, dst=s) / TCP(sport=sport, dport=dport, flags="A", seq=cs + 1, ack=ss + 1)]
    skip = 100 if lost_first else 0        # bytes of the first segment of each direction never captured
    pk += [IP(src=c, dst=s) / TCP(sport=sport, dport=dport, flags="PA", seq=cs + 1 + skip, ack=ss + 1) / Raw(fwd),
           IP(src=s, dst=c) / TCP(sport=dport, dport=sport, flags="PA", seq=ss + 1 + skip,
                                  ack=cs + 1 + skip + len(fwd)) / Raw(rev)]
    for i, p in enumerate(pk):
        p.time = t0 + i * 0.001
    return pk


def _analyze(tmp_path: Path, packets: list):
    from scapy.all import wrpcap

    pcap = tmp_path / "etcd.pcap"
    wrpcap(str(pcap), packets)
    inv = tmp_path / "inventory.yaml"
    inv.write_text(f'apiserver: {{endpoints: ["{APISERVER_HOST}:6443"]}}\n'
                   f'control_plane: [{{name: cp1, addresses: ["{APISERVER_HOST}"]}}]\n'
                   f'etcd: ["{ETCD_HOST}:2379"]\n')
    a = commpath.open(pcap, inventory=inv)
    assert set(a.flows["path"].astype(str)) == {"etcd"}
    return a


def _tls_required(a):
    return a.findings[a.findings["check"].astype(str) == "tls-required"]


def _etcd(a):
    return a.paths.set_index(a.paths["id"].astype(str)).loc["etcd"]


@pytest.mark.parametrize("handshake, lost_first, what", [
    (True, True, "first segments lost after a captured SYN"),
    (False, True, "first segments lost, joined mid-stream"),
    (False, False, "joined mid-stream inside a TLS record"),
])
def test_unreadable_stream_start_is_unknown_not_plaintext(tmp_path, handshake, lost_first, what):
    a = _analyze(tmp_path, _conn(40000, 100.0, handshake=handshake, lost_first=lost_first,
                                 fwd=MID_RECORD, rev=MID_RECORD[::-1]))
    assert _tls_required(a).empty, what
    etcd = _etcd(a)
    assert etcd["verdict"] != "fail" and etcd["verdict"] != "pass", what
    assert "first bytes of these connections" in etcd["needs"], what


def test_unrecognized_bytes_from_a_captured_start_are_plaintext(tmp_path):
    """The same bytes, read from the stream's first byte after a captured SYN, are clear text."""
    a = _analyze(tmp_path, _conn(40000, 100.0, handshake=True, lost_first=False,
                                 fwd=MID_RECORD, rev=MID_RECORD[::-1]))
    tr = _tls_required(a)
    assert len(tr) == 1 and "unknown payload in clear" in tr.iloc[0]["message"]
    assert _etcd(a)["verdict"] == "fail"


def test_a_blind_connection_does_not_hide_a_plaintext_one(tmp_path):
    packets = (_conn(40000, 100.0, handshake=True, lost_first=True, fwd=MID_RECORD, rev=MID_RECORD)
               + _conn(40001, 101.0, handshake=True, lost_first=False, fwd=b"\x00\x01plain etcd-ish", rev=b"ok"))
    a = _analyze(tmp_path, packets)
    tr = _tls_required(a)
    assert len(tr) == 1 and int(tr.iloc[0]["count"]) == 1
    assert _etcd(a)["verdict"] == "fail"

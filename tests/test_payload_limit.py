"""`--payload-limit` on analyze, report and flows: analyze reads a handshake past 16 KiB by default, a
smaller window says what it cut; values outside the documented bounds are bad usage; the stream arena
reuses slots without carrying a previous connection's bytes over."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import commpath
from commpath.decode.limits import MAX_PAYLOAD_LIMIT, MIN_PAYLOAD_LIMIT, parse_payload_limit

scapy = pytest.importorskip("scapy.all")

from test_capture_window import _conversation  # noqa: E402
from test_tls_hostile import client_hello, record, server_hello, sni_ext  # noqa: E402


@pytest.fixture(scope="module")
def padded(tmp_path_factory) -> Path:
    """A connection whose ClientHello is padded to 20 KB: past the default 16 KiB window."""
    padding = struct.pack(">HH", 21, 20000) + bytes(20000)
    hello = client_hello(sni_ext(b"padded.example") + padding)
    records = b"".join(record(22, hello[i:i + 16384]) for i in range(0, len(hello), 16384))
    return _conversation(tmp_path_factory.mktemp("padded") / "padded.pcap", records, record(22, server_hello()), 6443)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "commpath", *args], capture_output=True, text=True, timeout=300)


def test_analyze_reads_a_hello_past_16k_by_default_and_a_smaller_limit_says_it_cut(padded, tmp_path):
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    for out, extra in ((cut, ["--payload-limit", "16K"]), (whole, [])):
        proc = _cli("analyze", str(padded), "--out", str(out), "--quiet", *extra)
        assert proc.returncode in (0, 1, 3), proc.stderr
    before = pd.read_parquet(cut / "tls.parquet").iloc[0]
    after = pd.read_parquet(whole / "tls.parquet").iloc[0]
    assert before.partial and "cut by the capture window" in before.parse_error and "--payload-limit" in before.parse_error
    assert not after.partial and after.sni == "padded.example" and isinstance(after.ja4, str)


def test_open_and_flows_take_the_limit(padded):
    assert not commpath.open(str(padded)).tls.iloc[0].partial
    assert commpath.open(str(padded), payload_limit=1 << 14).tls.iloc[0].partial
    proc = _cli("flows", str(padded), "--quiet", "--payload-limit", "1M")
    assert proc.returncode == 0 and "6443" in proc.stdout, proc.stderr


@pytest.mark.parametrize("value", ["2M", "0", "63", "abc", "-1", "1.5K"])
def test_limits_outside_the_bounds_are_bad_usage(padded, tmp_path, value):
    proc = _cli("analyze", str(padded), "--out", str(tmp_path / "o"), "--payload-limit", value)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "--payload-limit" in last and (str(MAX_PAYLOAD_LIMIT) in last or "not a size" in last), last
    with pytest.raises(ValueError):
        parse_payload_limit(value)


def test_sizes_and_the_library_bound():
    assert parse_payload_limit("65536") == parse_payload_limit("64K") == parse_payload_limit("64kib") == 1 << 16
    assert parse_payload_limit("1M") == MAX_PAYLOAD_LIMIT and parse_payload_limit(str(MIN_PAYLOAD_LIMIT)) == 64
    with pytest.raises(ValueError, match="payload limit"):
        commpath.read(__file__, payload_limit=MAX_PAYLOAD_LIMIT + 1)


def test_a_reused_slot_carries_no_bytes_of_its_previous_connection(tmp_path):
    """Complete connections first, then connections with a hole: with a tight arena the second kind
    reuses the first kind's slots, and must still stop at its hole (no stale coverage behind it)."""
    IP, TCP, Raw = scapy.IP, scapy.TCP, scapy.Raw
    data = bytes(range(256)) * 12
    pkts = []
    for k in range(200):
        c, s = IP(src="10.1.0.1", dst="10.1.0.2"), IP(src="10.1.0.2", dst="10.1.0.1")
        sport, hole = 20000 + k, k >= 100
        pkts += [c / TCP(sport=sport, dport=80, flags="S", seq=0), s / TCP(sport=80, dport=sport, flags="SA", seq=0)]
        for off in range(0, len(data), 1000):
            if not (hole and off == 1000):
                pkts.append(c / TCP(sport=sport, dport=80, flags="PA", seq=1 + off) / Raw(data[off:off + 1000]))
        pkts += [c / TCP(sport=sport, dport=80, flags="FA", seq=1 + len(data)),
                 s / TCP(sport=80, dport=sport, flags="FA", seq=1)]
    path = tmp_path / "reuse.pcap"
    scapy.wrpcap(str(path), pkts)
    cap = commpath.read(path, payload_limit=1 << 16, stream_budget=1, chunk_size=4096)
    fwd = {int(r.src_port): cap.streams[int(r.flow_id)].fwd for r in cap.flows.itertuples()}
    assert len(fwd) == 200
    for sport, s in fwd.items():
        if sport < 20100:
            assert s.data == data and not s.gap
        else:
            assert s.data == data[:1000] and s.gap, (sport, len(s.data))

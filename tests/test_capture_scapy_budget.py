"""The scapy capture engine keeps its file within the disk budget by itself (it has no size stop of its
own): a packet that would pass the budget is refused and counted, and the engine reports itself full."""

from __future__ import annotations

import pytest

scapy = pytest.importorskip("scapy.all")

import commpath  # noqa: E402
from commpath.capture._engines import Limits, Scapy  # noqa: E402


def test_scapy_engine_refuses_packets_past_its_budget(tmp_path):
    engine = Scapy(tmp_path, "node1", ["lo"], "", Limits(total_mb=0.05, file_mb=0.05, files=1, wrap=False))
    engine.open_file()
    pkt = scapy.Ether() / scapy.IP(src="10.0.0.1", dst="10.0.0.2") / scapy.UDP(sport=1, dport=2) / scapy.Raw(bytes(958))
    fed = 0
    while not engine.full() and fed < 1000:          # bounded: 50 kB holds about 49 such packets
        engine.keep(pkt)
        fed += 1
    engine.writer.close()
    size = (tmp_path / "node1.pcap").stat().st_size
    assert engine.full() and engine.refused == 1 and fed == engine.count + 1
    assert size == engine.written <= 50_000 and size > 50_000 - 1016   # no room left for one more
    assert len(commpath.read(tmp_path / "node1.pcap").flows) == 1 and engine.count == 49


def test_a_ring_with_scapy_is_held_to_the_whole_budget(tmp_path):
    engine = Scapy(tmp_path, "cp1", ["lo"], "", Limits(total_mb=0.02, file_mb=0.01, files=2, wrap=True))
    engine.open_file()
    pkt = scapy.Ether() / scapy.IP() / scapy.TCP() / scapy.Raw(bytes(4000))
    for _ in range(10):
        engine.keep(pkt)
    engine.writer.close()
    assert (tmp_path / "cp1.pcap").stat().st_size <= 20_000 and engine.refused == 10 - engine.count > 0

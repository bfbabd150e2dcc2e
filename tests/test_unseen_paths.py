"""Paths the recorded capture filters could not have seen: libpcap's matcher against tcpdump, and the
coverage every report states."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import commpath
from commpath.capture import bpf
from commpath.present.markdown import build_markdown

ROOT = Path(__file__).resolve().parents[1]
TCPDUMP = shutil.which("tcpdump")
needs_libpcap = pytest.mark.skipif(not bpf.available(), reason="libpcap not installed")

FRAMES = [("10.77.0.21", "10.77.0.10", 40000, 6443), ("10.77.0.10", "10.77.0.21", 6443, 40000),
          ("10.77.0.10", "10.77.0.21", 40000, 10250), ("10.244.1.5", "10.96.0.1", 40000, 443),
          ("10.77.0.10", "10.244.2.7", 40000, 8080), ("fd00::1", "fd00::2", 40000, 2379),
          ("192.0.2.1", "198.51.100.7", 40000, 22)]
FILTERS = ["tcp port 6443", "tcp and (port 22 or port 10250)", "host 10.77.0.10", "dst port 443",
           "net 10.244.0.0/16 and not port 8080", "ip6 and tcp port 2379", "tcp[tcpflags] & tcp-syn != 0 and port 22",
           "udp"]


def _pcap(path: Path, frames: list[bytes]) -> None:
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, bpf.DLT_EN10MB))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 1000 + i, 0, len(fr), len(fr)) + fr)


@needs_libpcap
@pytest.mark.skipif(TCPDUMP is None, reason="tcpdump not installed")
@pytest.mark.parametrize("expression", FILTERS)
def test_matcher_keeps_exactly_what_tcpdump_keeps(tmp_path, expression):
    frames = [bpf.tcp_syn(*f) for f in FRAMES]
    pcap = tmp_path / "syns.pcap"
    _pcap(pcap, frames)
    out = subprocess.run([TCPDUMP, "-r", str(pcap), "-nn", "-tt", expression], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    kept_by_tcpdump = sorted(int(line.split(".")[0]) - 1000 for line in out.splitlines() if line.strip())
    with bpf.Matcher(expression) as m:
        kept = [i for i, fr in enumerate(frames) if m.passes(fr)]
    assert kept == kept_by_tcpdump


@needs_libpcap
def test_a_filter_libpcap_rejects_says_why():
    with pytest.raises(bpf.FilterError, match="syntax error"):
        bpf.Matcher("port (((")


def _run_with_filter(tmp_path: Path, expression: str | None, *, apply: bool = False) -> Path:
    """The bundled default run with every manifest's recorded filter replaced (and, with ``apply``,
    every capture cut down by tcpdump to what that filter keeps, as if captured with it)."""
    run = tmp_path / "run"
    shutil.copytree(ROOT / "captures/default", run)
    for pcap in run.glob("*/*.pcap") if apply else ():
        cut = pcap.with_suffix(".cut")
        subprocess.run([TCPDUMP, "-r", str(pcap), "-w", str(cut), expression], capture_output=True, timeout=120,
                       check=True)
        cut.replace(pcap)
    for manifest in run.glob("*/manifest.json"):
        m = json.loads(manifest.read_text())
        if expression is None:
            m.pop("filter", None)
        else:
            m["filter"] = expression
        manifest.write_text(json.dumps(m))
    return run


@needs_libpcap
def test_bundled_run_filters_see_every_path():
    a = commpath.open(ROOT / "captures/default", inventory=ROOT / "captures/default/inventory.yaml")
    assert a.coverage["unseen_paths_evaluated"] and a.coverage["unseen_paths"] == []
    assert "none: every catalog path passes" in build_markdown(a)


@needs_libpcap
@pytest.mark.skipif(TCPDUMP is None, reason="tcpdump not installed")
def test_a_narrow_filter_names_the_paths_it_hides(tmp_path):
    run = _run_with_filter(tmp_path, "tcp port 6443", apply=True)
    a = commpath.open(run, inventory=run / "inventory.yaml")
    unseen = set(a.coverage["unseen_paths"])
    assert {"apiserver-to-kubelet", "etcd", "ssh-tunnel", "apiserver-proxy", "kubelet-readonly"} <= unseen
    assert not unseen & {"node-to-apiserver", "pod-to-apiserver", "control-plane-to-apiserver"}
    paths = a.paths.set_index(a.paths["id"].astype(str))
    for p in unseen:       # nothing on them was captured: not observed, and the filter is named as the reason
        assert not paths.loc[p, "observed"]
        assert paths.loc[p, "verdict"] == "not-observed"
        assert "filter" in paths.loc[p, "needs"]
    md = build_markdown(a)
    assert "apiserver-to-kubelet" in md.split("paths the filter could not have seen", 1)[1].split("\n", 1)[0]


@needs_libpcap
def test_a_path_seen_in_spite_of_the_recorded_filter_is_not_unseen(tmp_path):
    """Captures holding traffic the recorded filter would drop: what was seen was seen."""
    run = _run_with_filter(tmp_path, "tcp port 6443")
    a = commpath.open(run, inventory=run / "inventory.yaml")
    observed = set(a.paths.loc[a.paths["observed"], "id"].astype(str))
    assert "apiserver-to-kubelet" in observed and not observed & set(a.coverage["unseen_paths"])


@needs_libpcap
@pytest.mark.skipif(TCPDUMP is None, reason="tcpdump not installed")
def test_without_an_inventory_the_captured_addresses_stand_for_the_ends(tmp_path):
    run = _run_with_filter(tmp_path, "tcp and (port 6443 or port 2379)", apply=True)
    unseen = set(commpath.open(run).coverage["unseen_paths"])
    assert "apiserver-to-kubelet" in unseen and "etcd" not in unseen and "node-to-apiserver" not in unseen


@pytest.mark.parametrize("expression, why", [(None, "unknown: no capture filter recorded"),
                                             ("port (((", "not evaluated")])
def test_unknown_filters_are_never_read_as_seeing_everything(tmp_path, expression, why):
    run = _run_with_filter(tmp_path, expression)
    a = commpath.open(run, inventory=run / "inventory.yaml")
    assert not a.coverage["unseen_paths_evaluated"] and a.coverage["unseen_paths"] == []
    assert why in build_markdown(a)

"""fuzz/: every target runs a short fixed budget without a crash, and every input that ever crashed stays fixed."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

import commpath

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
sys.path.insert(0, str(FUZZ))

import campaign  # noqa: E402
import targets  # noqa: E402

REGRESSIONS = sorted(p for p in (FUZZ / "regressions").rglob("*") if p.is_file())
#: inputs per target in the test suite (the campaign of fuzz/RESULTS.md runs a million)
RUNS = {"c": 20000, "python": 1500}
SECONDS = 20     # a ceiling per target for a loaded machine, not an assertion


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("target", campaign.TARGETS)
def test_target_runs_a_short_budget_without_a_crash(target, fuzz_root):
    if target in campaign.C_TARGETS:
        if campaign.clang() is None:
            pytest.skip("clang with libFuzzer not installed (scripts/setup.sh installs it)")
        runs = RUNS["c"]
    else:
        pytest.importorskip("atheris", reason="atheris is in the test extra")
        runs = RUNS["python"]
    res = campaign.run(target, runs=runs, seconds=SECONDS, root=fuzz_root)
    assert not res.crashed, res.output[-4000:]
    assert res.runs > 0, res.output[-2000:]
    assert not list((fuzz_root / "crashes" / target).iterdir())


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_input_that_crashed_stays_fixed(path):
    target = path.parent.name
    if target in campaign.C_TARGETS:
        if campaign.clang() is None:
            pytest.skip("clang with libFuzzer not installed")
        done = subprocess.run([str(campaign.build_c(target)), str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    else:
        targets.TARGETS[target](path.read_bytes())


def _simple_blocks(pcap: Path) -> bytes:
    """The packets of a pcap file as pcapng simple packet blocks: no timestamps at all."""
    data = pcap.read_bytes()
    big = data[:4] == b"\xa1\xb2\xc3\xd4"
    linktype = struct.unpack(">I" if big else "<I", data[20:24])[0]

    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)
    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", linktype, 0, 262144))
    pos = 24
    while pos + 16 <= len(data):
        incl = struct.unpack(">I" if big else "<I", data[pos + 8:pos + 12])[0]
        out += block(3, struct.pack("<I", incl) + data[pos + 16:pos + 16 + incl])
        pos += 16 + incl
    return out


def test_regression_connections_without_a_capture_time_and_a_ca_bundle(tmp_path):
    """Found by the handshakes target: pcapng simple packet blocks carry no time, and verifying a chain
    'at' NaN raised ValueError. The chain is now left unverified, with the reason."""
    lab = Path(__file__).resolve().parents[1] / "captures" / "broken"
    capture = tmp_path / "no-times.pcapng"
    capture.write_bytes(_simple_blocks(lab / "cp1" / "cp1-eth0.pcap"))
    a = commpath.open(capture, inventory=lab / "inventory.yaml", ca=str(lab / "pki" / "ca.crt"))
    with_certs = a.tls[a.tls["server_cert_fingerprints"].map(len) > 0]
    assert len(with_certs) > 5
    assert with_certs["server_cert_verified"].isna().all()      # not a pass, not a fail: unknown
    assert set(with_certs["verify_error"]) == {"no capture time for this connection: certificates not verified"}

"""Handshakes parsed as streams are harvested equal those parsed from kept streams."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import commpath
from commpath.decode.handshakes import HandshakeAnalyzer, analyze_handshakes

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ROOT.parent / "shared" / "pcaps" / "public"
CASES = [
    (PUBLIC / "zeek/testing/btest/Traces/tls/client-certificate.pcap", None, None),
    (PUBLIC / "suricata-verify/tests/http-connect/http-connect-tls/input.pcap", None, None),
    (PUBLIC / "suricata-verify/tests/ssh-hassh/input.pcap", None, None),
    (PUBLIC / "deepflow/http/h2c_ascii.pcap", None, None),
    (ROOT / "captures/broken", ROOT / "captures/broken/pki/ca.crt", ROOT / "captures/broken/keylog.txt"),
    (ROOT / "captures/legacy", ROOT / "captures/legacy/pki/ca.crt", None),
]


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


@pytest.mark.parametrize("path,ca,keylog", CASES, ids=lambda v: getattr(v, "name", None) or "-")
def test_streaming_equals_kept_streams(path, ca, keylog):
    if not path.exists():
        pytest.fail(f"missing fixture {path}")
    kept = analyze_handshakes(commpath.read(path), ca=ca, keylog=keylog)
    analyzer = HandshakeAnalyzer(ca, keylog)
    cap = commpath.read(path, keep_streams=False, on_streams=analyzer.feed)
    streamed = analyzer.result()
    assert cap.streams == {}
    assert len(kept.tls) + len(kept.ssh) + len(kept.http) > 0
    for name in ("tls", "ssh", "http"):
        _same(getattr(kept, name).sort_values("flow_id", kind="stable"),
              getattr(streamed, name).sort_values("flow_id", kind="stable"))
    _same(kept.certs.sort_values("fingerprint"), streamed.certs.sort_values("fingerprint"))


def test_streams_carry_endpoints_and_start(tmp_path):
    cap = commpath.read(PUBLIC / "zeek/testing/btest/Traces/tls/client-certificate.pcap")
    row = cap.flows.iloc[0]
    fs = cap.streams[int(row.flow_id)]
    assert (fs.src_ip, fs.dst_ip, fs.ts_start, fs.app_protocol) == (row.src_ip, row.dst_ip, row.ts_start, "tls")
    back = fs.turned()
    assert (back.src_ip, back.dst_ip, back.fwd, back.rev) == (fs.dst_ip, fs.src_ip, fs.rev, fs.fwd)

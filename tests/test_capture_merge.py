"""Many hosts, one picture: merging vantage points and estimating clock offsets on recorded lab runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import commpath
from commpath.decode.merge import estimate_clock_offsets, merge_vantage_points

CAPTURES = Path(__file__).resolve().parents[1] / "captures"


@pytest.fixture(scope="module", params=["default", "hardened"])
def run(request):
    folder = CAPTURES / request.param
    cap = commpath.read(folder)
    truth = yaml.safe_load((folder / "ground-truth.yaml").read_text())
    return cap, truth


def _key(row) -> tuple[str, str]:
    return f"{row.src_ip}:{row.src_port}", f"{row.dst_ip}:{row.dst_port}"


def test_every_connection_once_with_all_its_vantage_points(run):
    cap, truth = run
    merged = merge_vantage_points(cap.flows, cap.captures)
    assert len(merged) < len(cap.flows)
    by_key: dict[tuple[str, str], list] = {}
    for row in merged.itertuples():
        by_key.setdefault(_key(row), []).append(row)
    for c in truth["connections"]:
        rows = by_key.get((c["src"], c.get("dst_after_nat", c["dst"])), [])
        assert len(rows) == 1, f"{c}: {len(rows)} merged rows"
        row = rows[0]
        hosts = set(row.hosts)
        src_ip, dst_ip = c["src"].rsplit(":", 1)[0], c.get("dst_after_nat", c["dst"]).rsplit(":", 1)[0]
        if src_ip != dst_ip and not src_ip.startswith("10.244."):  # crosses the bridge: seen at both ends
            assert len(hosts) == 2, c
        assert {vp["host"] for vp in row.vantage_points} == hosts
        assert all(vp["capture"] for vp in row.vantage_points)
        if "dst_after_nat" in c:  # the pod's veth saw the VIP, eth0 and the apiserver the real endpoint
            assert row.dst_before_nat == "10.96.0.1:443"
            assert len(row.vantage_points) == 3 and row.hosts == ["cp1", row.hosts[1]]
        assert abs(row.ts_start_aligned - c["start"]) < 0.5


def test_clock_offsets_near_zero_on_one_machine(run):
    cap, truth = run
    # hardened: nodes dial the control plane only (Konnectivity), so the path delay cannot cancel
    method = "one-way" if truth["scenario"] == "hardened" else "two-way"
    offsets = estimate_clock_offsets(cap.flows, cap.captures).set_index("host")
    assert offsets.loc["cp1", "method"] == "reference"
    for host in ("node1", "node2"):
        assert offsets.loc[host, "connections"] >= 5
        assert offsets.loc[host, "method"] == method
        assert abs(offsets.loc[host, "offset_s"]) < 0.005


def test_a_skewed_host_clock_is_recovered_and_merge_unchanged(run):
    cap, _ = run
    base = merge_vantage_points(cap.flows, cap.captures)
    flows = cap.flows.copy()
    node1_files = set(cap.captures.loc[cap.captures["host"] == "node1", "file"].astype(str))
    skew = flows["capture"].astype(str).isin(node1_files)
    flows.loc[skew, "ts_start"] += 3.5
    flows.loc[skew, "ts_end"] += 3.5
    merged = merge_vantage_points(flows, cap.captures)
    offsets = merged.attrs["clock_offsets"].set_index("host")
    assert offsets.loc["node1", "offset_s"] == pytest.approx(3.5, abs=0.005)
    assert abs(offsets.loc["node2", "offset_s"]) < 0.005
    assert len(merged) == len(base)
    assert sorted(map(len, merged["vantage_points"])) == sorted(map(len, base["vantage_points"]))


def test_empty_input():
    from commpath.decode.schema import CAPTURE_COLUMNS, FLOW_COLUMNS, empty_frame

    merged = merge_vantage_points(empty_frame(FLOW_COLUMNS), empty_frame(CAPTURE_COLUMNS))
    assert merged.empty and "vantage_points" in merged and merged.attrs["clock_offsets"].empty

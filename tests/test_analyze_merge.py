"""A folder of several hosts' captures analysed as one run: one flow per connection, vantage points, clock offsets."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import commpath
from commpath.decode.merge import merge_vantage_points
from commpath.decode.schema import FLOW_COLUMNS

REPO = Path(__file__).resolve().parents[1]
CAPTURES = REPO / "captures"
SCENARIOS = sorted(p.parent.name for p in CAPTURES.glob("*/ground-truth.yaml"))


def _ep(ip: str, port) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@pytest.fixture(scope="module", params=SCENARIOS)
def run(request):
    folder = CAPTURES / request.param
    truth = yaml.safe_load((folder / "ground-truth.yaml").read_text())
    capture = commpath.read(folder)
    merged = commpath.open(folder, inventory=folder / "inventory.yaml")
    return folder, truth, capture, merged


def test_one_flow_per_distinct_connection(run):
    _, _, capture, a = run
    assert a.merged and capture.captures["host"].nunique() == 3
    flows = capture.flows
    # distinct connections counted independently of the merge: one initiator socket each in a lab run
    # (pod connections keep their source through DNAT; host-local ones share an address but not a port)
    distinct = flows.groupby(["src_ip", "src_port", "transport"], observed=True).ngroups
    assert len(a.flows) == distinct < len(flows)
    # every vantage point belongs to exactly one merged flow, and the row is its first vantage point
    seen = [vp["flow_id"] for vps in a.flows["vantage_points"] for vp in vps]
    assert sorted(seen) == sorted(flows["flow_id"].tolist())
    by_id = flows.set_index("flow_id")
    for row in a.flows.itertuples():
        first = row.vantage_points[0]
        assert (first["flow_id"], first["capture"], first["first_frame"]) == (row.flow_id, row.capture, row.first_frame)
        for vp in row.vantage_points:
            orig = by_id.loc[vp["flow_id"]]
            assert (str(orig["capture"]), int(orig["first_frame"])) == (vp["capture"], vp["first_frame"])
            assert int(orig["src_port"]) == row.src_port
        assert row.hosts == sorted({vp["host"] for vp in row.vantage_points})


def test_flow_columns_and_dtypes_are_kept(run):
    _, _, capture, a = run
    cols = list(a.flows.columns)
    assert cols[:len(FLOW_COLUMNS)] == list(FLOW_COLUMNS)
    for name, dtype in FLOW_COLUMNS.items():
        assert str(a.flows[name].dtype) == dtype, name
    for name in ("vantage_points", "hosts", "ts_start_aligned", "dst_before_nat", "path", "tls_version"):
        assert name in a.flows
    assert a.flows["flow_id"].is_unique


def _host_of(folder: Path):
    """address -> lab host name, from the inventory (host addresses and each node's pod CIDRs)."""
    import ipaddress
    inv = yaml.safe_load((folder / "inventory.yaml").read_text())
    hosts = inv.get("control_plane", []) + inv.get("nodes", [])

    def host_of(ip: str) -> str | None:
        addr = ipaddress.ip_address(ip)
        for h in hosts:
            if ip in h.get("addresses", []) or any(addr in ipaddress.ip_network(c) for c in h.get("pod_cidrs", [])):
                return h["name"]
        return None
    return host_of


def test_every_ground_truth_connection_once_with_its_path(run):
    folder, truth, _, a = run
    host_of = _host_of(folder)
    rows: dict[tuple[str, str], list] = {}
    for f in a.flows.itertuples():
        rows.setdefault((_ep(f.src_ip, f.src_port), _ep(f.dst_ip, f.dst_port)), []).append(f)
    for c in truth["connections"]:
        found = rows.get((c["src"], c.get("dst_after_nat", c["dst"])), [])
        assert len(found) == 1, c
        f = found[0]
        assert str(f.path) == c["path"], c
        if c.get("dst_after_nat"):      # the pod dialled the VIP: seen before DNAT on its node, after it on cp1
            assert f.dst_before_nat == c["dst"]
            # veth (before DNAT), node uplink, cp1; a real CNI bridge (captures/real-default) adds its own views
            assert "cp1" in f.hosts and len(f.hosts) == 2 and len(f.vantage_points) >= 3
        src, dst = c["src"].rsplit(":", 1)[0], c.get("dst_after_nat", c["dst"]).rsplit(":", 1)[0]
        if host_of(src) != host_of(dst):    # crosses the lab bridge: both ends recorded it
            assert f.hosts == sorted({host_of(src), host_of(dst)}), c
        else:
            assert f.hosts == [host_of(src)], c
        assert abs(f.ts_start_aligned - c["start"]) < 0.5


def test_handshakes_and_evidence_point_into_real_captures(run):
    folder, _, capture, a = run
    ids = set(a.flows["flow_id"])
    assert set(a.tls["flow_id"]) <= ids and set(a.http["flow_id"]) <= ids and set(a.ssh["flow_id"]) <= ids
    assert all(set(fids) <= ids for fids in a.certs["flow_ids"])
    # the TLS facts of every connection whose handshake one vantage point saw survived the merge
    views = commpath.open(folder, inventory=folder / "inventory.yaml", merge=False).flows.set_index("flow_id")
    for f in a.flows[a.flows["app_protocol"].astype(str) == "tls"].itertuples():
        seen = views.loc[[vp["flow_id"] for vp in f.vantage_points], "tls_version"].dropna()
        assert (f.tls_version in set(seen)) if len(seen) else pd.isna(f.tls_version), f.flow_id
    assert a.flows["tls_version"].notna().sum() >= 10
    files = set(capture.captures["file"].astype(str))
    row_of = a.flows.set_index("flow_id")
    for f in a.findings.itertuples():
        assert set(f.flow_ids) <= ids
        assert str(f.capture) in files
        in_capture = row_of.loc[[i for i in f.flow_ids if str(row_of.loc[i, "capture"]) == str(f.capture)]]
        assert len(in_capture), f.check
        lo, hi = int(in_capture["first_frame"].min()), int(in_capture["last_frame"].max())
        assert all(lo <= fr <= hi for fr in f.frames), f.check


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_evidence_display_filter_finds_the_frames_in_tshark(run):
    folder, _, _, a = run
    f = a.findings.iloc[0]
    out = subprocess.run(["tshark", "-r", str(f["capture"]), "-Y", str(f["display_filter"]), "-T", "fields",
                          "-e", "frame.number"], capture_output=True, text=True, timeout=60, check=True).stdout
    shown = {int(x) for x in out.split()}
    assert set(f["frames"]) <= shown, (f["check"], f["display_filter"])


def test_clock_offsets_near_zero_on_one_machine(run):
    _, _, _, a = run
    off = a.clock_offsets.set_index("host")
    assert off.loc["cp1", "method"] == "reference" and off.loc["cp1", "offset_s"] == 0.0
    for host in ("node1", "node2"):
        assert off.loc[host, "connections"] >= 5
        assert abs(off.loc[host, "offset_s"]) < 0.005
    s = a.summary()
    assert set(s["clock_offsets"]) == {"cp1", "node1", "node2"}
    assert s["clock_offsets"]["node1"]["connections"] == off.loc["node1", "connections"]
    assert 0 < s["flows_seen_on_several_hosts"] <= s["flows"]


def test_no_merge_keeps_every_vantage_point(run):
    folder, _, capture, _ = run
    a = commpath.open(folder, inventory=folder / "inventory.yaml", merge=False)
    assert not a.merged and a.clock_offsets is None and len(a.flows) == len(capture.flows)
    assert "clock_offsets" not in a.summary()


def test_a_merged_analyze_folder_reads_back_the_same(run, tmp_path):
    from commpath._pipeline import write_outputs
    folder, _, _, a = run
    write_outputs(a, tmp_path / "out")
    for inventory in (folder / "inventory.yaml", None):
        b = commpath.open(tmp_path / "out", inventory=inventory)
        assert b.merged and len(b.flows) == len(a.flows)
        assert b.flows["vantage_points"].tolist() == a.flows["vantage_points"].tolist()
        assert b.clock_offsets["offset_s"].tolist() == pytest.approx(a.clock_offsets["offset_s"].tolist())
        if inventory is not None:
            assert b.flows["path"].astype(str).tolist() == a.flows["path"].astype(str).tolist()
    # without the inventory the pods are still recognised from the VIP they dialled (dst_before_nat)
    unmerged = commpath.open(folder, merge=False)
    assert (b.flows["path"].astype(str) == "pod-to-apiserver").any() == \
        (unmerged.flows["path"].astype(str) == "pod-to-apiserver").any()


def test_report_json_extensions(run, tmp_path):
    from commpath.present.report_json import build_report
    _, _, _, a = run
    rep = build_report(a)
    assert list(rep)[:5] == ["schema", "captures", "paths", "flows", "findings"]
    assert {o["host"] for o in rep["clock_offsets"]} == {"cp1", "node1", "node2"}
    assert all(isinstance(o["connections"], int) for o in rep["clock_offsets"])
    for f in rep["flows"]:
        assert f["vantage_points"][0]["flow_id"] == f["flow_id"]
        assert all(set(vp) >= {"host", "capture", "flow_id", "first_frame"} for vp in f["vantage_points"])
    json.dumps(rep)


def test_loopback_connections_of_different_hosts_are_never_merged():
    capture = commpath.read(CAPTURES / "default")
    flows, caps = capture.flows, capture.captures
    local = flows[flows["src_ip"] == flows["dst_ip"]].copy()       # cp1's apiserver/etcd on its own address
    assert len(local)
    for df in (local,):
        df["src_ip"] = df["dst_ip"] = "127.0.0.1"
    other = local.copy()
    other["capture"] = caps.loc[caps["host"] == "node1", "file"].iloc[0]
    other["flow_id"] += 10_000
    both = pd.concat([local, other], ignore_index=True)
    merged = merge_vantage_points(both, caps)
    assert len(merged) == 2 * len(local)
    assert all(len(h) == 1 for h in merged["hosts"])


@pytest.mark.skipif(shutil.which("editcap") is None, reason="needs editcap (wireshark-common)")
def test_a_skewed_host_clock_is_recovered_through_analyze(tmp_path):
    folder = tmp_path / "default"
    shutil.copytree(CAPTURES / "default", folder)
    for pcap in sorted((folder / "node1").glob("*.pcap")):
        shifted = pcap.with_suffix(".shifted")
        subprocess.run(["editcap", "-t", "3.5", str(pcap), str(shifted)], check=True, capture_output=True, timeout=60)
        shifted.replace(pcap)
    base = json.loads(_analyze(CAPTURES / "default", tmp_path / "base").read_text())
    rep = json.loads(_analyze(folder, tmp_path / "skewed").read_text())
    off = {o["host"]: o for o in rep["clock_offsets"]}
    assert off["node1"]["offset_s"] == pytest.approx(3.5, abs=0.005)
    assert off["node1"]["connections"] >= 5
    assert abs(off["node2"]["offset_s"]) < 0.005 and off["cp1"]["offset_s"] == 0.0
    # the same connections, each with the same vantage points, and the same verdicts
    assert len(rep["flows"]) == len(base["flows"])
    hosts = lambda r: sorted(tuple(sorted(vp["host"] for vp in f["vantage_points"])) for f in r["flows"])  # noqa: E731
    assert hosts(rep) == hosts(base)
    assert {p["id"]: p["verdict"] for p in rep["paths"]} == {p["id"]: p["verdict"] for p in base["paths"]}
    node1 = [vp["ts_start"] for f in rep["flows"] for vp in f["vantage_points"] if vp["host"] == "node1"]
    node1_base = [vp["ts_start"] for f in base["flows"] for vp in f["vantage_points"] if vp["host"] == "node1"]
    assert sorted(node1) == pytest.approx([t + 3.5 for t in sorted(node1_base)], abs=1e-5)


def _analyze(folder: Path, out: Path) -> Path:
    res = subprocess.run([sys.executable, "-m", "commpath", "analyze", str(folder), "--inventory",
                          str(folder / "inventory.yaml"), "--out", str(out), "-q"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode in (0, 1, 3), res.stderr[-2000:]
    return out / "report.json"


def test_reports_show_clock_offsets_and_vantage_points_escaped():
    import dataclasses

    from commpath.present.html import build_html
    from commpath.present.markdown import build_markdown
    folder = CAPTURES / "default"
    a = commpath.open(folder, inventory=folder / "inventory.yaml")
    html, md = build_html(a), build_markdown(a)
    assert 'id="clock-offsets"' in html and "seen on cp1, node1" in html
    assert "## Clock offsets between hosts" in md and "| node1 | +" in md
    offsets = a.clock_offsets.copy()
    offsets["host"] = offsets["host"].astype(str).str.replace("node2", "<b>n|2</b>").astype("string")
    hostile = dataclasses.replace(a, clock_offsets=offsets)
    html, md = build_html(hostile), build_markdown(hostile)
    assert "<b>n|2</b>" not in html and "&lt;b&gt;n|2&lt;/b&gt;" in html
    assert "<b>" not in md and "n\\|2" in md
    single = commpath.open(folder, inventory=folder / "inventory.yaml", merge=False)
    assert 'id="clock-offsets"' not in build_html(single) and "Clock offsets" not in build_markdown(single)

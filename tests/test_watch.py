"""`commpath watch` for real: ring files arriving while it runs, its /metrics scraped against an analyze of the
same files, a corrupt file, a restart that counts nothing twice, and the Grafana dashboard's queries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import commpath
from commpath.check.policy import SEVERITY_RANK

from _watch_proc import WatchProcess, samples

ROOT = Path(__file__).resolve().parents[1]
BROKEN = ROOT / "captures" / "broken"
DASHBOARD = ROOT / "deploy" / "grafana-commpath-watch.json"

pytestmark = pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (Wireshark) splits the ring files")


def _ring_pieces(folder: Path, packets: int = 200) -> list[Path]:
    """cp1's eth0 capture cut into ring files named as the agent's dumpcap names them
    (``cp1_00000_YYYYMMDDhhmmss.pcapng``): editcap's split names are the same."""
    folder.mkdir(parents=True)
    subprocess.run(["editcap", "-F", "pcapng", "-c", str(packets), str(BROKEN / "cp1" / "cp1-eth0.pcap"),
                    str(folder / "cp1.pcapng")], check=True, capture_output=True, timeout=60)
    return sorted(folder.glob("cp1_*.pcapng"))


def _arrive(src: Path, dst: Path, data: bytes | None = None) -> None:
    """``dst`` appears whole (written beside it, renamed into place), as a finished copy does."""
    tmp = dst.with_name(f".{dst.name}.part")
    tmp.write_bytes(src.read_bytes() if data is None else data)
    tmp.rename(dst)


def _manifest(folder: Path, status: str, **extra) -> None:
    m = json.loads((BROKEN / "cp1" / "manifest.json").read_text())
    for k in ("files", "packets_captured", "packets_dropped", "stop", "stop_ts", "stop_reason", "interface_stats"):
        m.pop(k, None)
    m.update(status=status, engine="dumpcap", **extra)
    tmp = folder / ".manifest.json.part"
    tmp.write_text(json.dumps(m))
    tmp.rename(folder / "manifest.json")


def _expiry_by_path(a) -> dict[str, float]:
    """path -> earliest not_after of the certificates on its flows, worked out here from analyze's tables."""
    out: dict[str, float] = {}
    path_of = dict(zip(a.flows["flow_id"].astype(int), a.flows["path"].astype(str)))
    for not_after, ids in zip(a.certs["not_after"], a.certs["flow_ids"]):
        for i in ids:
            p = path_of.get(int(i))
            if p is not None and not pd.isna(not_after):
                out[p] = min(out.get(p, float("inf")), not_after.timestamp())
    return out


def _dashboard_metrics() -> set[str]:
    """Every metric name the dashboard's queries use."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    assert exprs and all(re.search(r"\b(commpath|process)_", e) for e in exprs), exprs
    return {m for e in exprs for m in re.findall(r"\b(?:commpath|process)_[a-z0-9_]+", e)}


def test_watch_ring_files_metrics_match_analyze_restart_and_corrupt_file(tmp_path):
    pieces = _ring_pieces(tmp_path / "pieces")
    assert len(pieces) >= 5
    ring = tmp_path / "ring" / "cp1"
    ring.mkdir(parents=True)
    collected = tmp_path / "ring" / "collected"
    collected.mkdir()
    out = tmp_path / "out"
    args = [str(tmp_path / "ring"), "--out", str(out), "--inventory", str(BROKEN / "inventory.yaml"),
            "--ca", str(BROKEN / "pki" / "ca.crt"), "--interval", "0.2", "--settle", "0"]
    _manifest(ring, "running")
    _arrive(pieces[0], ring / pieces[0].name)
    # the second ring file is still being written: the newest of its rotation is never taken
    half = pieces[1].read_bytes()
    (ring / pieces[1].name).write_bytes(half[: len(half) // 2])

    watch = WatchProcess(*args)
    try:
        watch.wait_err(lambda ln: ln.startswith("commpath watch: window: 1 file(s)"))
        assert not any(pieces[1].name in ln for ln in watch.err)
        got = watch.scrape()
        assert samples(got, "commpath_watch_files_total") == {(("outcome", "analysed"),): 1.0}

        # the writer finishes it and begins the next one: now it is closed
        with open(ring / pieces[1].name, "ab") as fh:
            fh.write(half[len(half) // 2:])
        _arrive(pieces[2], ring / pieces[2].name)
        watch.wait_err(lambda ln: ln.startswith("commpath watch: window: 2 file(s)"))

        # a corrupt file arrives: one line naming it, and the watch goes on
        junk = collected / "junk.pcap"
        _arrive(pieces[0], junk, data=b"\xd4\xc3\xb2\xa1 this is no capture at all" * 10)
        mark = len(watch.err)
        _arrive(pieces[3], ring / pieces[3].name)
        watch.wait_err(lambda ln: ln.startswith("commpath watch: window: 3 file(s)"), start=mark)
        watch.wait_err(lambda ln: "junk.pcap" in ln)
        assert sum("junk.pcap" in ln for ln in watch.err) == 1
        assert samples(watch.scrape(), "commpath_watch_files_total")[(("outcome", "unreadable"),)] == 1.0
        assert watch.stop() == 0
    finally:
        watch.stop()
    first_lines = list(watch.out)
    state = json.loads((out / "watch-state.json").read_text())
    assert len(state["files"]) == 4 and len(state["window"]) == 3     # pieces 0-2 and junk (piece 3 is being written)

    # restart: the window comes back, nothing is counted again; the rest arrives, the agent stops
    watch = WatchProcess(*args)
    try:
        watch.wait_err(lambda ln: "restored the window: 3 file(s)" in ln)
        for piece in pieces[4:]:
            _arrive(piece, ring / piece.name)
        _manifest(ring, "complete", packets_captured=997, packets_dropped=3)
        watch.wait_err(lambda ln: ln.startswith(f"commpath watch: window: {len(pieces)} file(s)"))
        got = watch.scrape()
    finally:
        assert watch.stop() == 0

    taken = [ring / p.name for p in pieces]
    a = commpath.open(*taken, inventory=str(BROKEN / "inventory.yaml"), ca=str(BROKEN / "pki" / "ca.crt"))
    assert samples(got, "commpath_watch_files_total") == {(("outcome", "analysed"),): float(len(pieces)),
                                                          (("outcome", "unreadable"),): 1.0}
    verdicts = dict(zip(a.paths["id"].astype(str), a.paths["verdict"].astype(str)))
    assert {labels[0][1]: labels[1][1] for labels, v in samples(got, "commpath_path_verdict").items() if v == 1} \
        == verdicts
    assert "fail" in verdicts.values()
    flows = {p: float(n) for p, n in zip(a.paths["id"].astype(str), a.paths["flows"])}
    assert {labels[0][1]: v for labels, v in samples(got, "commpath_path_flows").items()} == flows
    per_path = a.flows["path"].astype(str).value_counts()
    assert {labels[0][1]: v for labels, v in samples(got, "commpath_path_flows_seen_total").items()} \
        == {p: float(n) for p, n in per_path.items()}
    by_check = a.findings.assign(check=a.findings["check"].astype(str), severity=a.findings["severity"].astype(str)) \
        .groupby(["check", "severity"]).size()
    assert {(dict(k)["check"], dict(k)["severity"]): v for k, v in samples(got, "commpath_findings").items()} \
        == {k: float(v) for k, v in by_check.items()}
    expiry = _expiry_by_path(a)
    assert expiry and {dict(k)["path"]: v for k, v in samples(got, "commpath_cert_expiry_timestamp_seconds").items()} \
        == pytest.approx(expiry)
    horizon = {dict(k)["path"]: v for k, v in samples(got, "commpath_cert_expiry_horizon_seconds").items()}
    assert all(horizon[p] < expiry[p] - 1e9 for p in expiry)      # seconds from now, not from 1970
    assert samples(got, "commpath_run_verdict")[(("verdict", a.verdict),)] == 1.0
    assert samples(got, "commpath_capture_packets_dropped") == {(("host", "cp1"),): 3.0}
    assert samples(got, "commpath_watch_file_seconds_count") == {(): float(len(pieces) - 3)}  # this run's decodes

    # the rolling report.json is the analyze report of the same files
    report = json.loads((out / "report.json").read_text())
    assert {p["id"]: p["verdict"] for p in report["paths"]} == verdicts
    assert sorted(f["fingerprint"] for f in report["findings"]) == sorted(a.findings["fingerprint"].astype(str))

    # each high finding (by fingerprint) was announced once, as one JSON line, over both runs
    lines = [json.loads(ln) for ln in first_lines + watch.out]
    high = a.findings[a.findings["severity"].astype(str).map(SEVERITY_RANK) >= SEVERITY_RANK["high"]]
    assert len(high) and sorted(ln["fingerprint"] for ln in lines) == sorted(set(high["fingerprint"].astype(str)))
    assert all(ln["event"] == "new-finding" and ln["display_filter"] and ln["capture"] for ln in lines)

    # the dashboard queries only what the exporter serves
    served = {name for name, _ in got} | {n.removesuffix("_total") for n, _ in got}
    wanted = _dashboard_metrics()
    assert wanted and wanted <= served, wanted - served


def test_watch_once_exit_code_and_bad_input(tmp_path):
    """--once takes what is there and exits as analyze does; a missing folder is one line, exit 2."""
    pieces = _ring_pieces(tmp_path / "pieces")
    res = subprocess.run([sys.executable, "-m", "commpath", "watch", str(tmp_path / "pieces"),
                          "--out", str(tmp_path / "out"), "--inventory", str(BROKEN / "inventory.yaml"), "--once",
                          "-q"], capture_output=True, text=True, timeout=300)
    a = commpath.open(*pieces, inventory=str(BROKEN / "inventory.yaml"))
    assert res.returncode == a.exit_code(), res.stderr
    assert json.loads((tmp_path / "out" / "report.json").read_text())["verdict"] == a.verdict
    res = subprocess.run([sys.executable, "-m", "commpath", "watch", str(tmp_path / "nosuch"), "--out",
                          str(tmp_path / "o2"), "--once"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"commpath: error: {tmp_path / 'nosuch'}: no such file or folder"]

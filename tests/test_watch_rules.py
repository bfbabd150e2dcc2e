"""commpath watch's rules on real capture files, in process: tcpdump's rotation (the newest file is open, the
rename at stop counts nothing twice), the window's bounds, and every file counted even when the window drops it."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import commpath
from commpath.watch import Options, Watcher

ROOT = Path(__file__).resolve().parents[1]
BROKEN = ROOT / "captures" / "broken"
FILES = sorted(BROKEN.rglob("*.pcap"))


def _watcher(folder: Path, out: Path, **kw) -> Watcher:
    opts = Options(inputs=[folder], out=out, inventory=str(BROKEN / "inventory.yaml"), quiet=True,
                   **{"settle": 0.0, **kw})
    return Watcher(opts, log=io.StringIO(), err=io.StringIO())


def _manifest(folder: Path, status: str) -> None:
    (folder / "manifest.json").write_text(json.dumps({"schema": "commpath.capture/v1", "host": "cp1",
                                                      "role": "control-plane", "engine": "tcpdump", "status": status}))


def test_tcpdump_rotation_newest_open_and_rename_at_stop(tmp_path):
    ring = tmp_path / "ring"
    ring.mkdir()
    _manifest(ring, "running")
    names = [f"cp1.pcap{i}" for i in range(3)]
    for i, name in enumerate(names):            # written in turn: the last one is still being written
        shutil.copyfile(FILES[i], ring / name)
        os.utime(ring / name, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))
    w = _watcher(ring, tmp_path / "out")
    assert w.step() == 2
    assert {Path(p).name for p in (e["path"] for e in w.state.files.values())} == set(names[:2])
    # the agent stops: tcpdump's files are renamed x.pcapN -> x-N.pcap; only the last one is new
    for i, name in enumerate(names):
        (ring / name).rename(ring / f"cp1-{i}.pcap")
    _manifest(ring, "complete")
    assert w.step() == 1
    assert w.state.files_total == {"analysed": 3}
    a = commpath.open(*[ring / f"cp1-{i}.pcap" for i in range(3)], inventory=str(BROKEN / "inventory.yaml"))
    assert w.state.flows_total == {p: int(n) for p, n in a.flows["path"].astype(str).value_counts().items()}
    # and a watch restarted on the renamed files counts none of them again
    w2 = _watcher(ring, tmp_path / "out")
    assert w2.restore() == 3 and w2.step() == 0     # found by content under their new names, not counted again
    assert w2.state.files_total == {"analysed": 3}


def test_window_bounds_and_every_file_counted(tmp_path):
    folder = tmp_path / "collected"
    folder.mkdir()
    for f in FILES:
        shutil.copyfile(f, folder / f"{f.parent.name}-{f.name}")
    copies = sorted(folder.glob("*.pcap"))
    w = _watcher(folder, tmp_path / "out", max_flows=30)
    assert w.step() == len(copies)
    assert w.window.flows <= 30 and len(w.window) < len(copies)
    a = commpath.open(*copies, inventory=str(BROKEN / "inventory.yaml"), merge=False)
    counted = sum(w.state.flows_total.values())
    assert counted == len(a.flows)       # files the window dropped were judged (and counted) before they went
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(report["flows"]) == w.window.flows and len(report["captures"]) == len(w.window)


def test_restart_before_files_settle_counts_nothing_twice(tmp_path):
    """A restarted watch that has not yet seen the files settle still knows them (and restores its window)."""
    folder = tmp_path / "collected"
    folder.mkdir()
    for f in FILES[:3]:
        shutil.copyfile(f, folder / f"{f.parent.name}-{f.name}")
    assert _watcher(folder, tmp_path / "out").step() == 3
    slow = _watcher(folder, tmp_path / "out", settle=3600.0)
    assert slow.restore() == 3 and slow.step() == 0
    again = _watcher(folder, tmp_path / "out")
    assert again.step() == 0 and again.state.files_total == {"analysed": 3}

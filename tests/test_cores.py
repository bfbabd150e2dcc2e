"""A local run's captures decoded on every core (``distributed.decode_on_cores``): the one-process results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import commpath
from commpath._pipeline import write_outputs
from commpath.distributed import decode_on_cores
from commpath.distributed._cores import MIN_BYTES, SPARED_SHARE, worth_it
from commpath.errors import InputError
from test_dask import _options      # a lab run's inventory, CA bundle and key log as open()'s arguments

HERE = Path(__file__).resolve().parent
CAPTURES = HERE.parent / "captures"
SCENARIOS = sorted(p.parent.name for p in CAPTURES.glob("*/ground-truth.yaml"))
MB = 1 << 20


def _on_cores(*args: str) -> dict:
    """``tests/_cores_run.py`` in a fresh interpreter (no thread of this test process in the way of forking)."""
    done = subprocess.run([sys.executable, str(HERE / "_cores_run.py"), *args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_same_outputs(one: Path, cores: Path) -> None:
    assert (one / "report.json").read_bytes() == (cores / "report.json").read_bytes()
    names = sorted(p.name for p in one.glob("*.parquet"))
    assert names and names == sorted(p.name for p in cores.glob("*.parquet"))
    for name in names:
        assert_frame_equal(pd.read_parquet(one / name, dtype_backend="pyarrow"),
                           pd.read_parquet(cores / name, dtype_backend="pyarrow"), obj=name)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lab_runs_decoded_on_cores_write_the_one_process_outputs(scenario, tmp_path):
    """Each capture decoded in a forked worker process, the tables resolved and judged here: every
    output byte for byte as in one process (``--workers 0``), with and without inventory, CA and key log."""
    folder = CAPTURES / scenario
    for opts, tag in ((_options(folder), "full"), ({}, "bare")):
        one = commpath.open(folder, workers=0, **opts)
        write_outputs(one, tmp_path / f"one-{tag}")
        got = _on_cores("open", str(tmp_path / f"cores-{tag}"), str(folder), json.dumps(opts))
        # one task per capture, decoded by the run's own process and by a forked one at least
        assert got["captures"] == len(one.captures) > 1
        assert got["pid"] in got["worker_pids"] and len(got["worker_pids"]) >= 2
        assert len(got["worker_pids"]) <= min(os.cpu_count() or 1, len(one.captures))
        assert got["warnings"] == one.warnings and not got["fork_server"]     # forked from the run's process
        _assert_same_outputs(tmp_path / f"one-{tag}", tmp_path / f"cores-{tag}")
        # one bar, counting the captures as their tasks finish
        assert [b["stages"] for b in got["bars"]] == [[["decode", len(one.captures)]]]
        assert got["bars"][0]["done"] == got["bars"][0]["total"] == len(one.captures)


def test_a_process_running_other_threads_has_its_workers_forked_by_the_fork_server(tmp_path):
    """A Jupyter kernel runs threads: forking it could copy a lock another thread holds. Its workers
    come from multiprocessing's fork server, set up as the command sets itself up: same outputs."""
    folder = CAPTURES / "default"
    one = commpath.open(folder, workers=0, **_options(folder))
    write_outputs(one, tmp_path / "one")
    got = _on_cores("open-threaded", str(tmp_path / "cores"), str(folder), json.dumps(_options(folder)))
    assert got["fork_server"] and len(got["worker_pids"]) >= 2
    assert got["captures"] == len(one.captures) and got["warnings"] == one.warnings
    _assert_same_outputs(tmp_path / "one", tmp_path / "cores")


def test_fork_server_workers_take_the_commands_allocator_and_collector_settings():
    """In a fresh interpreter (glibc's and CPython's defaults), as a fork server's worker starts."""
    done = subprocess.run([sys.executable, "-c", (
        "import gc, json, sys; sys.path.insert(0, sys.argv[1]); import _malloc\n"
        "from commpath._process import own_process\n"
        "before = [gc.get_threshold()[0], _malloc.large_blocks_apart_from(2 << 20, 6 << 20)]; own_process()\n"
        "print(json.dumps({'before': before, 'after': [gc.get_threshold()[0],"
        " _malloc.large_blocks_apart_from(2 << 20, 6 << 20)]}))"), str(HERE)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    assert got["before"] == [700, False]      # glibc maps a 2 MiB block on its own by default
    assert got["after"][0] > 700 and got["after"][1]      # from the heap below 4 MiB, mapped apart above


def test_unreadable_captures_among_readable_ones_are_warned_of_as_in_one_process(tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(CAPTURES / "default", folder)
    (folder / "cp1" / "zz-garbage.pcap").write_bytes(b"this is not a capture file at all" * 10)
    whole = (folder / "node1" / "node1-eth0.pcap").read_bytes()
    (folder / "node1" / "node1-cut.pcap").write_bytes(whole[: len(whole) // 2 + 7])    # a record cut short
    one = commpath.open(folder, workers=0, **_options(folder))
    assert any("zz-garbage.pcap" in w for w in one.warnings) and any("node1-cut.pcap" in w for w in one.warnings)
    write_outputs(one, tmp_path / "one")
    got = _on_cores("open", str(tmp_path / "cores"), str(folder), json.dumps(_options(folder)))
    assert got["warnings"] == one.warnings
    _assert_same_outputs(tmp_path / "one", tmp_path / "cores")


def test_no_readable_capture_is_the_one_process_error_naming_the_first(tmp_path):
    for name in ("a.pcap", "b.pcap"):
        (tmp_path / name).write_bytes(b"\x00" * 100)
    with pytest.raises(InputError) as one:
        commpath.open(tmp_path, workers=0)
    assert "a.pcap" in str(one.value)
    assert _on_cores("error", str(tmp_path)) == {"error": str(one.value)}


def test_a_decoding_process_killed_is_one_line_naming_the_captures_in_flight(tmp_path):
    """The OOM killer's way: SIGKILL. Dask's local pool cannot retry on a broken pool; the run
    stops with one line (exit code 2) naming the captures in flight, and writes no output."""
    done = subprocess.run([sys.executable, str(HERE / "_cores_run.py"), "kill", str(tmp_path / "out"),
                           str(CAPTURES / "default")], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"rc": 2}
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("commpath: error: a process decoding the captures died")
    named = lines[0].split(" while decoding one of ")[1].split(";")[0].split(", ")
    assert named and set(named) <= {str(p) for p in (CAPTURES / "default").rglob("*.pcap")}
    assert lines[0].endswith("--workers 0 decodes them in this one process")
    assert not (tmp_path / "out" / "report.json").exists()
    # the killed worker's files went with the run's scratch folder
    assert not list(tmp_path.glob("commpath-cores-*")) and not list(tmp_path.glob("commpath-task-*"))


def test_runs_that_would_not_gain_decode_in_this_process(tmp_path):
    folder = CAPTURES / "default"
    # the bundled captures are a few hundred KB: forking would cost more than it spares
    assert decode_on_cores([folder]) is None
    assert decode_on_cores([folder], workers=1, always=True) is None             # one core
    assert decode_on_cores([folder / "cp1" / "cp1-eth0.pcap"], always=True) is None   # one capture


def test_worth_it_weighs_what_the_other_cores_spare_against_sending_the_tables_back():
    # 12 hosts' 24 captures of 33 MB (benchmarks/data/dask-hosts-big): half of 795 MB spared
    assert worth_it([33 * MB] * 24, 2)
    # one large capture and a small one: the large one bounds the run on any number of cores
    assert not worth_it([88 * MB, 4 * MB], 2)
    # small runs: forking and sending the tables back cost more than the decoding spared
    assert not worth_it([10 * MB] * 6, 2)
    total = 400 * MB
    spared_needed = SPARED_SHARE * total + MIN_BYTES
    assert worth_it([total // 2, total // 2], 2) == (total / 2 >= spared_needed)
    assert not worth_it([total // 4] * 4, 1)

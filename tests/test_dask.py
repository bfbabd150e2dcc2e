"""Dask runs give the single-process results: a real scheduler with two workers on loopback, local
worker processes through the command line, captures on a real S3 server, a worker killed mid-run."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import commpath
from commpath._pipeline import write_outputs
from commpath.cli import main as cli_main
from commpath.distributed import decode_run, read_parts
from commpath.distributed._parts import MARKER, TABLES, complete_parts

from _dask_parts import dask_cluster, s3_env, s3_server, wait_until

REPO = Path(__file__).resolve().parents[1]
CAPTURES = REPO / "captures"
SCENARIOS = sorted(p.parent.name for p in CAPTURES.glob("*/ground-truth.yaml"))
PUBLIC = REPO.parent / "shared/pcaps/public"
COMPARED = ("flows", "tls", "certs", "ssh", "http", "findings", "paths", "captures")
#: report.json keys that say when or how long, not what (none today; a run's timing would go here)
TIMING_KEYS = ("generated_at", "elapsed_s", "duration_s")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3):
    with dask_cluster(tmp_path_factory.mktemp("dask"), workers=2, env=s3_env(s3)) as c:
        from distributed import Client
        with Client(c.address, timeout=60) as client:
            client.wait_for_workers(2, timeout=180)
            yield c, client


def _options(folder: Path) -> dict:
    opts = {"inventory": str(folder / "inventory.yaml")}
    if (folder / "pki/ca.crt").is_file():
        opts["ca"] = str(folder / "pki/ca.crt")
    if (folder / "keylog.txt").is_file():
        opts["keylog"] = str(folder / "keylog.txt")
    return opts


def assert_same_analysis(a, b, rename: tuple[str, str] | None = None) -> None:
    """Every table equal, values and dtypes (``rename``: capture names of ``b`` mapped back to ``a``'s)."""
    for name in COMPARED:
        x, y = getattr(a, name), getattr(b, name).copy()
        if rename:
            for col in ("capture", "file"):
                if col in y:
                    y[col] = y[col].str.replace(rename[1], rename[0], regex=False).astype(y[col].dtype)
            if "vantage_points" in y:
                y["vantage_points"] = [[{**vp, "capture": vp["capture"].replace(rename[1], rename[0])} for vp in vps]
                                       for vps in y["vantage_points"]]
            for col in ("evidence_sources", "evidence"):    # each entry says where: capture and frames
                if col in y:
                    y[col] = pd.Series([[{**e, "where": e["where"].replace(rename[1], rename[0])}
                                         if isinstance(e.get("where"), str) else e for e in es]
                                        if isinstance(es, (list, np.ndarray)) else es for es in y[col]],
                                       index=y.index, dtype=y[col].dtype)    # Arrow lists stay Arrow lists
        assert_frame_equal(x, y, check_exact=True, obj=name)
    assert a.warnings == ([w.replace(rename[1], rename[0]) for w in b.warnings] if rename else b.warnings)
    assert a.summary() == b.summary()


def report_text(folder: Path) -> str:
    report = json.loads((folder / "report.json").read_text())
    for key in TIMING_KEYS:
        report.pop(key, None)
    return json.dumps(report, indent=2, sort_keys=False)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lab_runs_on_a_dask_cluster_equal_the_single_process(cluster, scenario, tmp_path):
    _, client = cluster
    folder = CAPTURES / scenario
    single = commpath.open(folder, **_options(folder))
    on_dask = commpath.open(folder, client=client, parts=str(tmp_path / "parts"), **_options(folder))
    assert len(single.flows) and single.merged
    assert_same_analysis(single, on_dask)
    # the output set, byte for byte (report.json) and table for table (Parquet)
    write_outputs(single, tmp_path / "single")
    write_outputs(on_dask, tmp_path / "dask")
    assert (tmp_path / "single/report.json").read_bytes() == (tmp_path / "dask/report.json").read_bytes()
    for f in (tmp_path / "single").glob("*.parquet"):
        # Arrow-typed frames: the Arrow types are what was written (plain pandas reads the list
        # columns back as arrays; commpath/_parquet.py keeps that possible)
        assert_frame_equal(pd.read_parquet(f, dtype_backend="pyarrow"),
                           pd.read_parquet(tmp_path / "dask" / f.name, dtype_backend="pyarrow"), obj=f.name)
    # each capture's tables, partitioned by host, each folder complete
    parts = complete_parts(str(tmp_path / "parts"))
    assert len(parts) == len(single.captures)
    hosts = {Path(p).parent.name for p in parts}
    assert hosts == {f"host={h}" for h in single.captures["host"]}


def test_one_progress_bar_counts_every_stage_of_a_run(cluster, monkeypatch):
    """A run shows one bar: the captures' decoding, each host's view rows, the merge and the checks
    add their tasks to it stage by stage, and every task is counted once it is done."""
    from commpath.present import progress
    made: list = []

    class Recorded(progress.StageBar):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)
    monkeypatch.setattr(progress, "StageBar", Recorded)
    _, client = cluster
    folder = CAPTURES / "default"
    a = commpath.open(folder, client=client, progress=True, **_options(folder))
    assert a.merged and len(made) == 1
    run = made[0]
    names = [name for name, _ in run.stages]
    assert names[0] == "decode" and "view" in names and "merge" in names and names[-1] == "checks"
    assert dict(run.stages)["decode"] == len(a.captures)
    assert run.total == sum(n for _, n in run.stages) and run.done == run.total


def test_unmerged_lab_run_on_a_dask_cluster_equals_the_single_process(cluster, tmp_path):
    """``merge=False``: each host's classified flows are judged on the worker holding them."""
    _, client = cluster
    folder = CAPTURES / "default"
    single = commpath.open(folder, merge=False, **_options(folder))
    on_dask = commpath.open(folder, client=client, merge=False, **_options(folder))
    assert not single.merged and len(single.findings) and len(single.captures) > 1
    assert_same_analysis(single, on_dask)
    write_outputs(single, tmp_path / "single")
    write_outputs(on_dask, tmp_path / "dask")
    assert (tmp_path / "single/report.json").read_bytes() == (tmp_path / "dask/report.json").read_bytes()


def test_public_captures_on_a_dask_cluster_equal_the_single_process(cluster):
    _, client = cluster
    single = commpath.open(PUBLIC)
    on_dask = commpath.open(PUBLIC, client=client)
    assert len(single.captures) > 20 and len(single.tls) and len(single.certs)
    assert_same_analysis(single, on_dask)


def test_decoded_tables_equal_one_read_of_the_run(cluster, tmp_path):
    """The decode layer's tables alone (certificates listed once over the run, flow ids counted across it),
    as the tasks return them and as their Parquet dataset reads back."""
    _, client = cluster
    folder = CAPTURES / "broken"
    opts = _options(folder)
    from commpath.decode.handshakes import HandshakeAnalyzer
    analyzer = HandshakeAnalyzer(opts.get("ca"), opts.get("keylog"))
    cap = commpath.read(folder, keep_streams=False, on_streams=analyzer)
    hs = analyzer.result()
    run = decode_run([folder], opts.get("ca"), opts.get("keylog"), client=client, parts=str(tmp_path / "parts"))
    again = read_parts(run.summaries)
    for name in ("flows", "captures", "tls", "certs", "ssh", "http"):
        assert_frame_equal(getattr(run, name), getattr(again, name), check_exact=True, obj=name)
    assert_frame_equal(cap.flows, run.flows, check_exact=True)
    assert_frame_equal(cap.captures, run.captures, check_exact=True)
    from commpath.decode.schema import CERT_COLUMNS, conform
    assert len(hs.certs) and len(run.certs)
    assert_frame_equal(conform(hs.certs.copy(), CERT_COLUMNS), run.certs, check_exact=True)
    assert [s["flows"] for s in run.summaries] == cap.flows.groupby("capture", sort=False).size().tolist()


def test_analyze_command_with_local_workers_writes_the_same_output_set(tmp_path):
    folder = CAPTURES / "default"
    args = [str(folder), "--inventory", str(folder / "inventory.yaml"), "-q"]
    assert cli_main(["analyze", *args, "--out", str(tmp_path / "single")]) == cli_main(
        ["analyze", *args, "--out", str(tmp_path / "dask"), "--workers", "2"])
    assert report_text(tmp_path / "single") == report_text(tmp_path / "dask")
    assert len(complete_parts(str(tmp_path / "dask/parts"))) == 6


def test_report_command_takes_a_scheduler_address(cluster, tmp_path):
    c, _ = cluster
    folder = CAPTURES / "hardened"
    args = [str(folder), "--inventory", str(folder / "inventory.yaml"), "-q", "--format", "json"]
    code = cli_main(["report", *args, "-o", str(tmp_path / "single.json")])
    assert cli_main(["report", *args, "-o", str(tmp_path / "dask.json"), "--scheduler", c.address]) == code
    assert (tmp_path / "single.json").read_text() == (tmp_path / "dask.json").read_text()


def test_unreachable_scheduler_is_one_clear_line(tmp_path, capsys):
    import socket
    with socket.socket() as s:            # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = CAPTURES / "default"
    code = cli_main(["analyze", str(folder), "--out", str(tmp_path / "o"), "-q", "--scheduler", f"tcp://127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot reach the Dask scheduler" in err[0], err


def _upload(fs, local: Path, prefix: str) -> None:
    for f in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.put_file(str(f), f"{prefix}/{f.relative_to(local).as_posix()}")


def test_captures_on_s3_give_the_local_results(cluster, s3, monkeypatch, tmp_path):
    """Captures uploaded to a real S3 server on loopback; workers fetch them, write Parquet there too."""
    _, client = cluster
    for k, v in s3_env(s3).items():
        monkeypatch.setenv(k, v)
    import s3fs
    fs = s3fs.S3FileSystem(anon=False)
    fs.mkdir("commpath-test")
    folder = CAPTURES / "broken"
    _upload(fs, folder, "commpath-test/runs/broken")
    url = "s3://commpath-test/runs/broken"
    opts = _options(folder)
    single = commpath.open(folder, **opts)
    remote = commpath.open(url, client=client, parts="s3://commpath-test/parts/broken", **opts)
    assert_same_analysis(single, remote, rename=(str(folder), url))
    assert len(complete_parts("s3://commpath-test/parts/broken")) == len(single.captures)
    # the command line: inputs and outputs on S3
    code = cli_main(["analyze", url, "--out", "s3://commpath-test/out/broken", "-q", "--scheduler",
                     cluster[0].address, *sum((["--" + k, v] for k, v in opts.items()), [])])
    assert code == single.exit_code()
    fs.get("commpath-test/out/broken/report.json", str(tmp_path / "report.json"))
    write_outputs(single, tmp_path / "single")
    assert (tmp_path / "report.json").read_text().replace(url, str(folder)) == (tmp_path / "single/report.json").read_text()
    assert fs.exists("commpath-test/out/broken/parts") and fs.exists("commpath-test/out/broken/flows.parquet")


def test_worker_killed_mid_run_the_run_finishes_with_the_same_results(tmp_path):
    """Dask moves the dead worker's tasks to the other one; every capture folder ends complete."""
    run_dir = tmp_path / "run"
    for i in range(8):                   # 48 captures: the run is still going when the first task starts
        for scenario in SCENARIOS[:3]:
            shutil.copytree(CAPTURES / scenario, run_dir / f"{scenario}{i}", ignore=shutil.ignore_patterns("pki"))
    single = commpath.open(run_dir)
    task_folders = set(Path(tempfile.gettempdir()).glob("commpath-task-*"))
    from distributed import Client
    with dask_cluster(tmp_path / "dask", workers=0) as c:
        c.start_worker("victim")
        with Client(c.address, timeout=60) as client:
            client.wait_for_workers(1, timeout=180)
            result: dict = {}
            done = threading.Event()

            def run():
                try:
                    result["analysis"] = commpath.open(run_dir, client=client, parts=str(tmp_path / "parts"))
                except BaseException as exc:   # handed to the test thread
                    result["error"] = exc
                finally:
                    done.set()

            threading.Thread(target=run, daemon=True).start()
            # the victim is the only worker: wait until it runs a decode task, then bring the survivor in
            wait_until(lambda: any(client.processing().values()), "a task running on the victim")
            c.start_worker("survivor")
            client.wait_for_workers(2, timeout=180)
            running_at_kill = not done.is_set()
            c.kill_worker("victim")
            assert done.wait(600), "the run did not finish after the worker was killed"
    assert running_at_kill
    assert "error" not in result, result.get("error")
    assert_same_analysis(single, result["analysis"])
    parts = complete_parts(str(tmp_path / "parts"))
    assert len(parts) == len(single.captures)
    for p in parts:
        assert {f.name for f in Path(p).iterdir()} == {MARKER, *(f"{t}.parquet" for t in TABLES)}
    # the task the kill cut short had its files in the victim's own folder (dask's to remove), not in /tmp
    assert set(Path(tempfile.gettempdir()).glob("commpath-task-*")) <= task_folders


def test_local_cluster_announces_its_dashboard(capsys):
    from commpath.distributed import connect
    with connect(workers=1, processes=False) as client:
        assert client.submit(sum, [1, 2]).result() == 3
    err = capsys.readouterr().err
    assert "commpath: Dask dashboard at http://" in err, err


def test_local_workers_run_with_the_quiet_diagnostics_and_a_given_cluster_keeps_its_own(cluster, capfd):
    """The worker processes we start run without the 10 ms profiler and 20 ms ticks, with the
    commpath command's allocator and garbage collector settings, and print no traceback for a heartbeat lost to the scheduler closing (their
    other errors still show); this process has dask's settings back afterwards; a cluster the user
    gives is left as it is."""
    from commpath._process import YOUNG_THRESHOLD
    from commpath.distributed import connect
    from commpath.distributed._cluster import LOCAL_CLUSTER_CONFIG

    def _diagnostics() -> tuple:      # nested: sent by value to workers that cannot import this module
        import gc

        import dask
        return (dask.config.get("distributed.worker.profile.enabled"), dask.config.get("distributed.admin.tick.interval"),
                gc.get_threshold())

    from commpath._process import LARGE_BLOCK
    from _malloc import large_blocks_apart_from

    before = _diagnostics()
    def _log_errors() -> None:        # as distributed.worker logs them, in the worker process
        import logging
        log = logging.getLogger("distributed.worker")
        for message in ("Failed to communicate with scheduler during heartbeat.", "another worker error"):
            try:
                raise OSError("Stream is closed")
            except OSError:
                log.exception(message)

    capfd.readouterr()
    with connect(workers=1, announce=False) as client:
        on_workers = set(client.run(_diagnostics).values())
        client.run(_log_errors)
        # the commpath command's allocator: a 2 MiB block from the heap, 6 MiB mapped apart
        assert set(client.run(large_blocks_apart_from, LARGE_BLOCK // 2, LARGE_BLOCK + (2 << 20)).values()) == {True}
    assert on_workers == {(False, LOCAL_CLUSTER_CONFIG["distributed.admin.tick.interval"],
                           (YOUNG_THRESHOLD, *before[2][1:]))}
    err = capfd.readouterr().err        # the worker processes write to this process's stderr
    assert "another worker error" in err and "OSError: Stream is closed" in err, err
    assert "during heartbeat" not in err, err
    assert _diagnostics() == before
    with connect(client=cluster[1]) as given:
        assert set(given.run(_diagnostics).values()) == {before}


def test_merge_parts_grow_with_the_run_so_a_workers_merge_stays_bounded(cluster):
    """Two parts per worker thread on a small run; on a large one, one per PART_FLOWS flows (the
    merge gives the same rows for any number of parts: test_dask_merge)."""
    from commpath.distributed._merge import PART_FLOWS, parts_count
    client = cluster[1]
    assert parts_count(client, units=12, flows=1000) == 4            # 2 workers x 1 thread x 2
    assert parts_count(client, units=3, flows=1000) == 3             # at most one per host
    assert parts_count(client, units=60, flows=10 * PART_FLOWS + 1) == 11


def _split_pcap(pcap: Path, at_frame: int, first: Path, second: Path) -> None:
    """Two valid pcaps: frames before ``at_frame`` and the rest (record boundaries, one header each)."""
    import struct
    data = pcap.read_bytes()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    pos, frame = 24, 1
    while frame < at_frame:
        pos += 16 + struct.unpack(endian + "I", data[pos + 8:pos + 12])[0]
        frame += 1
    first.write_bytes(data[:pos])
    second.write_bytes(data[:24] + data[pos:])


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
def test_tls_session_resumed_in_another_capture_file_is_resolved_over_the_run(cluster, tmp_path):
    """A full mutual-TLS handshake in one capture file, its ticket resumed in the next: the run (one
    process or Dask) says the resumed connection inherited the client certificate."""
    from test_tls_resumption import record_resumed_ticket
    _, client = cluster
    pcap, _ = record_resumed_ticket(tmp_path)
    flows = commpath.read(pcap).flows
    assert len(flows) == 2
    run = tmp_path / "run"
    run.mkdir()
    _split_pcap(pcap, int(flows["first_frame"].max()), run / "a.pcap", run / "b.pcap")
    single = commpath.open(run)
    on_dask = commpath.open(run, client=client)
    again = single.tls.sort_values("flow_id").iloc[1]
    assert again.resumed and again.client_cert_source == "resumed-from" and again.client_cert == "presented"
    assert_same_analysis(single, on_dask)

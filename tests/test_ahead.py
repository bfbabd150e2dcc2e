"""A run decoded in a process forked before the command's imports (``commpath._ahead``): the one-process outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from commpath import _ahead
from test_cores import _assert_same_outputs
from test_dask import _options      # a lab run's inventory, CA bundle and key log

HERE = Path(__file__).resolve().parent
CAPTURES = HERE.parent / "captures"
SCENARIOS = sorted(p.parent.name for p in CAPTURES.glob("*/ground-truth.yaml"))
MB = 1 << 20


def _cli(args: list[str], record: Path, helper: list[str] = (), timeout: float = 600, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMMPATH_AHEAD_RECORD": str(record)}
    return subprocess.run([sys.executable, str(HERE / "_ahead_run.py"), *helper, *args], capture_output=True,
                          text=True, timeout=timeout, env=env, **popen)


def _flags(opts: dict) -> list[str]:
    return [x for k, v in opts.items() for x in (f"--{k}", v)]


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lab_runs_decoded_ahead_write_the_one_process_outputs(scenario, tmp_path):
    """Every capture of the run decoded in the forked process, its tables taken by the run: every
    output byte for byte as in one process (``--workers 0``), with and without inventory, CA and key log."""
    folder = CAPTURES / scenario
    for opts, tag in ((_options(folder), "full"), ({}, "bare")):
        one = _cli(["analyze", str(folder), "--out", str(tmp_path / f"one-{tag}"), "-q", "--workers", "0",
                    *_flags(opts)], tmp_path / f"one-{tag}.json")
        got = _cli(["analyze", str(folder), "--out", str(tmp_path / f"ahead-{tag}"), "-q", *_flags(opts)],
                   tmp_path / f"ahead-{tag}.json")
        assert one.returncode == got.returncode and one.returncode in (0, 1, 3), one.stderr[-3000:]
        assert got.stderr == one.stderr
        assert json.loads((tmp_path / f"one-{tag}.json").read_text())["forked"] is None     # --workers 0
        record = json.loads((tmp_path / f"ahead-{tag}.json").read_text())
        assert record["forked"] and record["taken"] and _gone(record["pid"])
        _assert_same_outputs(tmp_path / f"one-{tag}", tmp_path / f"ahead-{tag}")


def test_the_ca_bundle_named_by_the_inventory_is_the_decoders_too(tmp_path):
    """No --ca: the inventory's ca_bundle (relative to the inventory) verifies the serving
    certificates in the forked decoder as in the command; the run takes its tables, same report."""
    folder = CAPTURES / "verified"
    opts = {"inventory": str(folder / "inventory.yaml"), "keylog": str(folder / "keylog.txt")}
    args = [str(folder), "-q", *_flags(opts), "--format", "json", "--fail-on", "critical"]
    one = _cli(["report", *args, "-o", str(tmp_path / "one.json"), "--workers", "0"], tmp_path / "one.rec")
    got = _cli(["report", *args, "-o", str(tmp_path / "ahead.json")], tmp_path / "ahead.rec", cwd=tmp_path)
    assert one.returncode == got.returncode == 0, one.stderr + got.stderr
    assert json.loads((tmp_path / "ahead.rec").read_text())["taken"]
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "ahead.json").read_bytes()
    verified = json.loads((tmp_path / "one.json").read_text())
    assert "verified" in json.dumps(verified)     # the serving certificates were checked against the bundle


def test_a_decoder_forked_for_another_run_is_not_taken(tmp_path):
    """The command decodes its own run when the forked decoder's is another (a wrong guess costs time, not results)."""
    folder = CAPTURES / "default"
    one = _cli(["analyze", str(folder), "--out", str(tmp_path / "one"), "-q", "--workers", "0"], tmp_path / "one.rec")
    got = _cli(["analyze", str(folder), "--out", str(tmp_path / "other"), "-q"], tmp_path / "other.rec",
               helper=["--other", str(CAPTURES / "legacy")])
    assert got.returncode == one.returncode and got.stderr == one.stderr
    record = json.loads((tmp_path / "other.rec").read_text())
    assert record["forked"] and record["taken"] is False and _gone(record["pid"])
    _assert_same_outputs(tmp_path / "one", tmp_path / "other")


def test_an_unreadable_capture_is_the_one_process_error(tmp_path):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\x00" * 6)     # a file header cut short
    cut = tmp_path / "cut.pcap"
    whole = (CAPTURES / "default" / "cp1" / "cp1-eth0.pcap").read_bytes()
    cut.write_bytes(whole[: len(whole) // 2 + 7])
    for capture in (bad, tmp_path / "garbage.pcap", cut):
        if capture.name == "garbage.pcap":
            capture.write_bytes(b"this is not a capture file at all" * 10)
        one_out, ahead_out = tmp_path / f"one-{capture.stem}", tmp_path / f"ahead-{capture.stem}"
        one = _cli(["analyze", str(capture), "--out", str(one_out), "-q", "--workers", "0"], tmp_path / "one.rec")
        got = _cli(["analyze", str(capture), "--out", str(ahead_out), "-q"], tmp_path / "ahead.rec")
        record = json.loads((tmp_path / "ahead.rec").read_text())
        assert record["forked"] and _gone(record["pid"])
        assert (got.returncode, got.stderr) == (one.returncode, one.stderr)
        if capture is cut:      # read up to the cut: the run goes on, partial, as in one process
            assert record["taken"] and one.returncode in (0, 1, 3)
            _assert_same_outputs(one_out, ahead_out)
        else:
            assert one.returncode == 2 and len(one.stderr.strip().splitlines()) == 1
            assert one.stderr.startswith("commpath: error: ") and capture.name in one.stderr


def test_a_decoder_killed_is_one_line_and_no_output(tmp_path):
    """The OOM killer's way (SIGKILL): exit 2, one line naming the capture and the way round it."""
    capture = CAPTURES / "default" / "cp1" / "cp1-eth0.pcap"
    got = _cli(["analyze", str(capture), "--out", str(tmp_path / "out"), "-q"], tmp_path / "rec", helper=["--kill"])
    assert got.returncode == 2
    lines = got.stderr.strip().splitlines()
    assert lines == [f"commpath: error: the process decoding {capture} died (killed? out of memory?); "
                     "--workers 0 decodes it in this process"]
    assert not (tmp_path / "out" / "report.json").exists()
    assert _gone(json.loads((tmp_path / "rec").read_text())["pid"])


def test_ctrl_c_while_the_decoder_runs_stops_both(tmp_path):
    """Ctrl-C reaches the command and its decoder (one process group): the decoder ignores it, the
    command stops it; exit 130 and no process left."""
    capture = CAPTURES / "default" / "cp1" / "cp1-eth0.pcap"
    record = tmp_path / "rec"
    proc = subprocess.Popen([sys.executable, str(HERE / "_ahead_run.py"), "--stall", "analyze", str(capture),
                             "--out", str(tmp_path / "out"), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "COMMPATH_AHEAD_RECORD": str(record)},
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _waiting_for_the_decoder(proc.pid):
            time.sleep(0.1)
        assert _waiting_for_the_decoder(proc.pid), "the command never waited for its decoder"
        os.killpg(proc.pid, signal.SIGINT)       # a terminal's Ctrl-C: the whole foreground group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130 and err.strip() == "commpath: interrupted"
    pid = json.loads(record.read_text())["pid"]
    assert pid and _gone(pid)


def _waiting_for_the_decoder(pid: int) -> bool:
    """The command has imported everything and waits for the forked decoder (it has one child)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        stack = Path(f"/proc/{pid}/wchan").read_text()
    except FileNotFoundError:
        return False
    return len(children) == 1 and ("pipe" in stack or "select" in stack or "poll" in stack)


def _started_and_taken(capture: Path, before_start: str, after_start: str) -> dict:
    """In a fresh interpreter: a decoder forked for ``capture`` (whatever its size) by ``_ahead.start``,
    the program ``after_start`` (which takes it and prints JSON) run; its JSON. ``before``: the
    modules of ``AFTER_DECODING`` imported when the decoder started."""
    code = ("import sys, json, commpath._ahead as a\n"
            "a.worth_it = lambda sizes: True\n"
            f"{before_start}"
            "from commpath.decode.limits import ANALYSIS_PAYLOAD_LIMIT as L\n"
            "a.start([sys.argv[1]], None, None, None, L)\n"
            "before = [n for n in a.AFTER_DECODING if n in sys.modules]\n"
            f"{after_start}")
    done = subprocess.run([sys.executable, "-c", code, str(capture)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_progress_is_shown_from_the_decoders_counts(tmp_path):
    """The decoder counts its bytes in memory shared with the command, which shows them as its own bar does."""
    capture = CAPTURES / "default" / "cp1" / "cp1-eth0.pcap"
    got = _started_and_taken(capture, "",
                             "seen = []\n"
                             "got = a.take([sys.argv[1]], None, None, L, lambda f, d, t: seen.append([f, d, t]))\n"
                             "print(json.dumps({'seen': seen, 'flows': len(got[0][0]['flow_id'])}))\n")
    size = capture.stat().st_size
    assert got["flows"] > 0 and got["seen"] and got["seen"][-1] == [str(capture), size, size]
    assert all(0 <= d <= t == size for _, d, t in got["seen"])


def test_only_one_large_capture_is_decoded_ahead():
    assert _ahead.worth_it([_ahead.MIN_BYTES])
    assert not _ahead.worth_it([_ahead.MIN_BYTES - 1])     # the fork and the pickling would cost more
    assert not _ahead.worth_it([_ahead.MIN_BYTES] * 2)     # several: the cores' (distributed._cores)
    assert not _ahead.worth_it([])


def test_run_key_names_files_as_open_does():
    assert _ahead.run_key(["./a.pcap"], "x/../ca.pem", None, 5) == _ahead.run_key([Path("a.pcap")], "x/../ca.pem", None, 5)
    assert _ahead.run_key(["a.pcap"], None, None, 5) != _ahead.run_key(["a.pcap"], None, None, 6)
    assert _ahead.run_key(["a.pcap"], "ca.pem", None, 5) != _ahead.run_key(["a.pcap"], None, None, 5)


def test_main_called_with_arguments_decodes_in_its_own_process(tmp_path):
    """Only the process's own command line (``cli.run``, ``python -m commpath``) forks a decoder:
    a program calling ``cli.main([...])`` keeps its run in its process."""
    capture = CAPTURES / "default" / "cp1" / "cp1-eth0.pcap"
    code = (
        "import sys, os, json, commpath._ahead as a\n"
        "a.worth_it = lambda sizes: True\n"
        "forks = []\n"
        "real = os.fork\n"
        "os.fork = lambda: forks.append(1) or real()\n"
        "from commpath import cli\n"
        "code = cli.main(['analyze', sys.argv[1], '--out', sys.argv[2], '-q'])\n"
        "given = len(forks)\n"
        "sys.argv = ['commpath', 'analyze', sys.argv[1], '--out', sys.argv[2] + '-own', '-q']\n"
        "own = cli.main()\n"      # the process's own command line, as cli.run() calls it
        "print(json.dumps({'code': code, 'forks': given, 'own_forks': len(forks) - given, 'own': own}))\n")
    done = subprocess.run([sys.executable, "-c", code, str(capture), str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["forks"] == 0 and got["code"] in (0, 1, 3)
    assert got["own_forks"] == 1 and got["own"] == got["code"]
    assert (tmp_path / "out" / "report.json").is_file()


def test_what_comes_after_decoding_is_imported_while_the_decoder_works():
    """The command waits for its decoder: meanwhile it imports what the rest of the run needs
    (``AFTER_DECODING``), off the run's critical path; each name is a module that imports."""
    capture = CAPTURES / "default" / "cp1" / "cp1-eth0.pcap"
    got = _started_and_taken(
        capture,
        "import time\n"
        "real = a._decode\n"
        "a._decode = lambda *x, **k: time.sleep(1) or real(*x, **k)\n",      # still decoding when taken
        "got = a.take([sys.argv[1]], None, None, L)\n"
        "print(json.dumps({'before': before, 'after': [n for n in a.AFTER_DECODING if n in sys.modules],"
        " 'taken': got is not None}))\n")
    assert got["taken"] and "commpath.decode.x509" not in got["before"]
    assert got["after"] == list(_ahead.AFTER_DECODING)

"""A run's process settings: the collector's young threshold (raised, shared by concurrent runs, put back) and glibc's mapping threshold."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest

from commpath._process import YOUNG_THRESHOLD, collect_less, fewer_collections

CAPTURES = Path(__file__).resolve().parents[1] / "captures"


@pytest.fixture
def threshold():
    """The process's thresholds, put back after the test."""
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


def test_a_run_collects_less_often_and_puts_the_threshold_back(threshold):
    with fewer_collections():
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
        with fewer_collections():
            assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)     # the outer run goes on
    assert gc.get_threshold() == (700, 10, 10)


def test_the_threshold_is_put_back_when_the_run_fails(threshold):
    with pytest.raises(ValueError), fewer_collections():
        raise ValueError("a run that fails")
    assert gc.get_threshold() == (700, 10, 10)


def test_a_rarer_threshold_or_collection_off_is_left_as_it_is(threshold):
    gc.set_threshold(10 * YOUNG_THRESHOLD, 5, 5)
    with fewer_collections():
        assert gc.get_threshold() == (10 * YOUNG_THRESHOLD, 5, 5)
    assert gc.get_threshold() == (10 * YOUNG_THRESHOLD, 5, 5)
    gc.set_threshold(0)
    with fewer_collections():
        assert gc.get_threshold()[0] == 0
    collect_less()
    assert gc.get_threshold()[0] == 0


def test_a_threshold_changed_during_the_run_is_kept(threshold):
    with fewer_collections():
        gc.set_threshold(1234, 10, 10)
    assert gc.get_threshold() == (1234, 10, 10)


def test_runs_in_threads_put_the_threshold_back_when_the_last_one_ends(threshold):
    """Two runs that overlap, the first ending first: the second still runs with the raised threshold."""
    first_in, first_out, second_in = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with fewer_collections():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second():
        first_in.wait(10)
        with fewer_collections():
            second_in.set()
            first_out.wait(10)
            seen["after the first ended"] = gc.get_threshold()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert seen["after the first ended"] == (YOUNG_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_open_runs_with_it_and_puts_it_back(threshold, monkeypatch):
    """commpath.open on a real capture: the decoder runs with the raised threshold, the caller's is back after."""
    import commpath
    import commpath.decode.engine as engine

    seen = []
    real_read = engine.read

    def read(*args, **kwargs):
        seen.append(gc.get_threshold()[0])
        return real_read(*args, **kwargs)
    monkeypatch.setattr("commpath._pipeline.read", read)
    analysis = commpath.open(str(CAPTURES / "default"))
    assert len(analysis.flows) > 0
    assert seen == [YOUNG_THRESHOLD]
    assert gc.get_threshold() == (700, 10, 10)


def test_the_command_maps_blocks_apart_from_4_mib_on_and_collects_less():
    """`commpath` (cli.run) sets both up before its main(): a 2 MiB block from the heap, 6 MiB mapped
    apart, the young threshold raised."""
    import subprocess
    import sys
    code = ("import sys; sys.path.insert(0, %r)\n"
            "import gc\n"
            "from _malloc import large_blocks_apart_from\n"
            "print(gc.get_threshold()[0])\n"
            "import commpath.cli\n"
            "from commpath._process import LARGE_BLOCK\n"
            "def main():\n"
            "    print(large_blocks_apart_from(LARGE_BLOCK // 2, LARGE_BLOCK + (2 << 20)), gc.get_threshold()[0])\n"
            "    return 0\n"
            "commpath.cli.main = main\n"
            "commpath.cli.run()\n") % str(Path(__file__).parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["700", "True", str(YOUNG_THRESHOLD)], out

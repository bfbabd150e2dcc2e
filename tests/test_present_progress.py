"""The progress helper: a tqdm bar when shown, a silent stand-in otherwise, never an error."""

from __future__ import annotations

import builtins
import importlib
import sys

from commpath.present import progress


def test_disabled_is_silent_and_iterates():
    bar = progress.progress(range(5), enabled=False)
    assert list(bar) == [0, 1, 2, 3, 4]
    with progress.progress(total=10, enabled=False) as manual:
        manual.update(3)
        assert manual.n == 3


def test_no_terminal_no_bar(capsys):
    assert isinstance(progress.progress(range(3)), progress._Silent)  # pytest captures stderr: no tty
    assert progress.read_callback() is None


def test_tqdm_bar_counts_bytes(monkeypatch, capsys):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    cb = progress.read_callback()
    assert isinstance(cb, progress.ReadProgress)
    cb("a.pcap", 100, 1000)
    assert cb.bar.n == 100 and cb.bar.total == 1000
    cb("a.pcap", 1000, 1000)
    assert cb.bar is None   # closed when the file is done
    cb("b.pcap", 10, 20)
    assert cb.file == "b.pcap" and cb.bar.n == 10
    cb.close()


def test_without_tqdm_degrades_quietly(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name == "tqdm" or name.startswith("tqdm."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    for mod in [m for m in sys.modules if m == "tqdm" or m.startswith("tqdm.")]:
        monkeypatch.delitem(sys.modules, mod)
    assert isinstance(progress.progress(range(2)), progress._Silent)
    assert progress.read_callback() is None
    importlib.invalidate_caches()


def test_stage_bar_grows_its_total_stage_by_stage(monkeypatch, capsys):
    """One bar over a run's tasks: each stage adds its tasks to the total and names the bar; the bar
    keeps what was done (tqdm's own total and count follow)."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with progress.StageBar() as run:
        assert not isinstance(run.bar, progress._Silent)
        run.stage("decode", 3)
        run.update(3)
        run.stage("merge", 2)
        assert (run.bar.n, run.bar.total, run.bar.desc.rstrip(": ")) == (3, 5, "merge")
        run.update(2)
        assert (run.done, run.total, run.bar.n) == (5, 5, 5)
    assert run.stages == [("decode", 3), ("merge", 2)]


def test_stage_bar_counts_without_a_terminal(capsys):
    with progress.StageBar() as run:
        assert isinstance(run.bar, progress._Silent)
        run.stage("decode", 2)
        run.update(2)
    assert (run.done, run.total) == (2, 2)
    assert capsys.readouterr().err == ""

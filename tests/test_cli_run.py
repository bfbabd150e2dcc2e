"""The process entry point: `commpath` and `python -m commpath` exit with main()'s code, collector frozen."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import atexit, gc, sys
from commpath import cli
atexit.register(lambda: print("frozen", gc.get_freeze_count() > 0, flush=True))
sys.argv = ["commpath", *sys.argv[1:]]
cli.run()
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def test_run_exits_with_main_code_and_frozen_objects():
    ok = _run("paths")
    assert ok.returncode == 0, ok.stderr
    assert "path catalog" in ok.stdout and ok.stdout.rstrip().endswith("frozen True")


def test_run_keeps_the_error_exit_code():
    bad = _run("flows", "--quiet", str(ROOT / "no-such-capture.pcap"))
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "no-such-capture.pcap" in bad.stderr and "Traceback" not in bad.stderr


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "commpath", "paths"], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0 and "path catalog" in out.stdout


def test_main_in_process_does_not_freeze():
    import gc
    from commpath.cli import main
    before = gc.get_freeze_count()
    assert main(["paths"]) == 0
    assert gc.get_freeze_count() == before


INTERRUPTED = """
import atexit, os, signal, sys
from commpath import cli

def interrupted(argv=None):
    # the Ctrl-C lands while a string exec runs (a dataclass or namedtuple being built); the command
    # catches it, cleans up and returns 130
    try:
        exec("raise KeyboardInterrupt", {})
    except KeyboardInterrupt:
        print("commpath: interrupted", file=sys.stderr)
        return 130

cli.main = interrupted
if "again" in sys.argv:
    # another SIGINT while the process winds down (a second Ctrl-C)
    atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))
cli.run()
"""


def _interrupted(tmp_path, *args: str) -> subprocess.CompletedProcess:
    # a module run with -m, as `python -m commpath` is: only that way does CPython turn the caught
    # KeyboardInterrupt into a death by SIGINT at exit (script files and -c exit with the code)
    (tmp_path / "interrupted_probe.py").write_text(INTERRUPTED)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    return subprocess.run([sys.executable, "-m", "interrupted_probe", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)


def test_an_interrupt_caught_after_a_string_exec_keeps_exit_status_130(tmp_path):
    """CI saw `lab run -m`, interrupted once, clean up, print "interrupted" and then die of SIGINT
    (status -2): the KeyboardInterrupt had ended a string exec before it was caught."""
    out = _interrupted(tmp_path)
    assert out.returncode == 130, out.stderr
    assert out.stderr == "commpath: interrupted\n"


def test_a_sigint_after_the_interrupt_was_handled_keeps_exit_status_130(tmp_path):
    out = _interrupted(tmp_path, "again")
    assert out.returncode == 130, out.stderr
    assert out.stderr == "commpath: interrupted\n"

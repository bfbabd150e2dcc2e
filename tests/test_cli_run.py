"""The process entry point: `commpath` and `python -m commpath` exit with main()'s code, collector frozen."""

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

def interrupted(argv=None):             # the command was interrupted and cleaned up after itself
    print("commpath: interrupted", file=sys.stderr)
    return 130

cli.main = interrupted
# another SIGINT while the process winds down (a second Ctrl-C, or one landing in the teardown)
atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))
cli.run()
"""


def test_a_sigint_after_the_interrupt_was_handled_keeps_exit_status_130():
    """CI once saw `lab run`, interrupted once, clean up, print "interrupted" and then die of SIGINT
    (status -2): a signal that lands while the interpreter winds down, when Python has put the
    default action back. Once the command has returned 130, a further SIGINT is ignored."""
    out = subprocess.run([sys.executable, "-c", INTERRUPTED], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 130, out.stderr
    assert out.stderr == "commpath: interrupted\n"

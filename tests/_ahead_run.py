"""Run `commpath` (the process entry point) with its run decoded ahead whatever its size (``commpath._ahead``).

The bundled captures are far smaller than ``_ahead.MIN_BYTES``, and a run of several captures is
not decoded ahead by default: both are lifted here. What happened goes to the JSON file named by
``COMMPATH_AHEAD_RECORD``: whether a decoder was forked, and whether the run took its tables.

    python _ahead_run.py analyze|report ARGS...          # the command as `commpath` runs it
    python _ahead_run.py --kill analyze ARGS...          # the forked decoder killed (SIGKILL) midway
    python _ahead_run.py --stall analyze ARGS...         # the forked decoder never ends (for Ctrl-C)
    python _ahead_run.py --other CAPTURE analyze ARGS... # the decoder forked for CAPTURE, not the run
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import time

import commpath._ahead as ahead
from commpath import cli

ahead.worth_it = lambda sizes: len(sizes) >= 1
record = {"forked": None, "taken": None, "pid": None}
_start, _take, _decode = ahead.start, ahead.take, ahead._decode
args = sys.argv[1:]
other = None
while args and args[0].startswith("--"):
    flag = args.pop(0)
    if flag == "--kill":
        def _decode(*a, _real=_decode, **k):
            os.kill(os.getpid(), signal.SIGKILL)
    elif flag == "--stall":
        def _decode(*a, **k):
            time.sleep(600)
    elif flag == "--other":
        other = args.pop(0)
ahead._decode = _decode


def start(inputs, *rest, **kwargs):
    _start([other] if other else inputs, *rest, **kwargs)
    record["forked"] = ahead._started is not None
    record["pid"] = ahead._started.pid if ahead._started is not None else None


def take(*a, **k):
    got = _take(*a, **k)
    record["taken"] = got is not None
    return got


ahead.start, ahead.take = start, take


@atexit.register
def _write() -> None:
    with open(os.environ["COMMPATH_AHEAD_RECORD"], "w") as fh:
        json.dump(record, fh)


sys.argv = ["commpath", *args]
cli.run()

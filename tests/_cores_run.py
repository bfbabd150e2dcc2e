"""Run one analysis in a fresh interpreter with the captures decoded on every core (``decode_on_cores``).

A fresh interpreter because the cores are used only from a process that runs no other thread, and
the test process may hold some (a Dask client, a progress bar's monitor). The runs are forced onto
the cores whatever their size (``worth_it``: the bundled captures are too small to gain).

    python _cores_run.py open OUT FOLDER [OPTIONS_JSON]   # write_outputs of commpath.open; prints JSON
    python _cores_run.py open-threaded OUT FOLDER [OPTIONS_JSON]   # the same beside a thread of its own
    python _cores_run.py error INPUT...                    # the InputError of commpath.open, or "ok"
    python _cores_run.py kill OUT FOLDER                   # `commpath analyze`, its worker process killed
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

import commpath
import commpath.distributed._cores as cores
import commpath.distributed._decode as decode_task
from commpath._pipeline import write_outputs
from commpath.errors import InputError
from commpath.present import progress

cores.worth_it = lambda sizes, n: True
summaries: list[dict] = []
_assemble = cores._assemble_run


def _recorded(found, *args, **kwargs):
    summaries.extend(found)
    return _assemble(found, *args, **kwargs)


cores._assemble_run = _recorded
bars: list = []


class _Recorded(progress.StageBar):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        bars.append(self)


progress.StageBar = _Recorded


RUN_PID = os.getpid()
_read = decode_task.read


def killed_in_a_worker(*args, **kwargs):
    """The decode task's read of its capture, killed (SIGKILL, as the OOM killer does) in a worker
    process, not in the run's: midway, the task's own files made already."""
    if os.getpid() != RUN_PID:
        os.kill(os.getpid(), signal.SIGKILL)
    return _read(*args, **kwargs)


def main() -> None:
    what = sys.argv[1]
    if what == "error":
        try:
            commpath.open(*sys.argv[2:])
        except InputError as exc:
            print(json.dumps({"error": str(exc)}))
            return
        print(json.dumps({"error": None}))
        return
    if what == "kill":
        out, folder = sys.argv[2:4]
        decode_task.read = killed_in_a_worker
        from commpath.cli import main as cli_main
        print(json.dumps({"rc": cli_main(["analyze", folder, "--out", out, "-q"])}))
        return
    out, folder = sys.argv[2], sys.argv[3]
    opts = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    stop = threading.Event()
    if what == "open-threaded":     # as a Jupyter kernel or a threaded program would run it
        threading.Thread(target=stop.wait, daemon=True).start()
    analysis = commpath.open(folder, progress=True, **opts)
    stop.set()
    write_outputs(analysis, out)
    from multiprocessing import forkserver
    pids = sorted({s["worker_pid"] for s in summaries if "worker_pid" in s})
    print(json.dumps({"pid": os.getpid(), "worker_pids": pids,
                      "fork_server": forkserver._forkserver._forkserver_pid is not None,
                      "captures": len(summaries), "warnings": analysis.warnings,
                      "bars": [{"stages": b.stages, "done": b.done, "total": b.total} for b in bars]}))


if __name__ == "__main__":
    main()

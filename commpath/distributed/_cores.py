"""A local run's captures decoded on every core: Dask's local process scheduler, one task per capture.

The default of ``commpath.open`` for local captures when no cluster is asked for. Only the decoding
is spread (each capture with its handshakes, ``_decode.decode_capture``, as on a cluster); the
tables come back to this process, which resolves the handshakes over the run and classifies,
merges and judges as one process does (``_run._assemble_run``): the same results, byte for byte.
This process decodes too, in a thread of its own (its tables need no pickling), beside worker
processes forked from it, one per other core: they start with its imports and its allocator and
collector settings (spawned, each paid ≈ 0.5 s of imports, as long as a small run's decode).
Forking is safe only while this process runs no other thread (another thread may hold a lock the
child would wait on for good); a process that does (a Jupyter kernel, a program with threads of its
own) has its workers forked by multiprocessing's fork server instead, a process started once (the
decode modules imported in it once) that runs no thread. A run of one capture, or one whose
captures would not decode sooner on more cores (:func:`worth_it`: a few small captures, or one
large capture and small ones), decodes in this process.
"""

from __future__ import annotations

import multiprocessing
import queue
import shutil
import tempfile
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial

from .._process import own_process, usable_cores
from ..decode.limits import ANALYSIS_PAYLOAD_LIMIT
from ..errors import CommpathError, InputError
from ._decode import decode_capture
from ._files import expand
from ._run import Decoded, _assemble_run, _read_small

#: What a run must spare this process to be decoded on more cores: the bytes the other cores take
#: off it (all but the larger of the largest capture and a core's share) at least this share of the
#: run plus :data:`MIN_BYTES`. Measured (benchmarks/RESULTS.md, #14): forking the workers costs
#: ≈ 0.1 s (≈ 20 MB of decoding), and sending the tables back (pickled, copied, unpickled) about a
#: fifth of what decoding them took.
SPARED_SHARE = 0.25
MIN_BYTES = 32 << 20


def worth_it(sizes: list[int], cores: int) -> bool:
    """Whether captures of ``sizes`` bytes decode sooner on ``cores`` processes than in this one."""
    total = sum(sizes)
    spared = total - max(max(sizes, default=0), total / cores)
    return spared >= SPARED_SHARE * total + MIN_BYTES


def decode_on_cores(inputs, ca=None, keylog=None, *, workers: int | None = None, progress: bool = False,
                    payload_limit: int = ANALYSIS_PAYLOAD_LIMIT, always: bool = False) -> Decoded | None:
    """Every capture of ``inputs`` (local paths) decoded as one task each on ``workers`` cores
    (default: every core; this process and ``workers - 1`` forked ones), or None when this run
    decodes in this process alone: one capture, one core, or (unless ``always``) too little to gain
    (:func:`worth_it`)."""
    n = workers or usable_cores()
    context = _start_method()
    if n < 2 or context is None:
        return None
    sources = expand(inputs)
    if len(sources) < 2 or not (always or worth_it([s.size for s in sources], min(n, len(sources)))):
        return None
    import dask
    from dask.callbacks import Callback

    from ..present.progress import StageBar
    ca_pem, keylog_bytes = _read_small(ca, "--ca"), _read_small(keylog, "--keylog")
    order = sorted(range(len(sources)), key=lambda i: -sources[i].size)     # the long ones start first:
    # dask's local scheduler runs ready tasks of equal priority in reverse order of their keys
    names = {f"commpath-decode-{len(order) - rank:06d}": sources[i].name for rank, i in enumerate(order)}
    # the tasks' files go in one folder of the run's, removed at its end: a killed worker (or this
    # process's decoding thread, cut off by a Ctrl-C) cannot remove its own
    scratch = tempfile.mkdtemp(prefix="commpath-cores-")
    tasks = [dask.delayed(decode_capture, pure=False)(i, sources[i], None, ca_pem, keylog_bytes, None, payload_limit,
                                                      classify_rows=False, scratch=scratch, dask_key_name=key)
             for key, i in zip(names, order)]
    running: set[str] = set()

    def started(key, *_) -> None:
        running.add(key)

    def finished(key, *_) -> None:
        running.discard(key)
        shown.update(1)

    processes = min(n, len(sources)) - 1
    # forked workers have this process's settings; a fork server's take the command's (own_process)
    with ProcessPoolExecutor(processes, mp_context=context, initializer=own_process) as pool:
        pool.submit(int).result()    # every worker started now, before any thread of this run starts
        workers = _HereAndThere(pool, processes)
        try:
            with StageBar(enabled=progress) as shown, Callback(pretask=started, posttask=finished):
                shown.stage("decode", len(tasks))
                # one task per submission (dask batches 6): a batch of the large ones would end the run
                # alone; the tables are not pickled by dask (the pool pickles what the processes send back)
                done = dask.compute(*tasks, scheduler="processes", pool=workers, chunksize=1,
                                    func_dumps=_as_is, func_loads=_as_is)
        except BrokenProcessPool:
            lost = ", ".join(names[k] for k in sorted(running, reverse=True)) or "?"
            raise CommpathError(f"a process decoding the captures died (killed? out of memory?) while decoding "
                                f"one of {lost}; --workers 0 decodes them in this one process") from None
        finally:
            workers.close()
            shutil.rmtree(scratch, ignore_errors=True)
    summaries: list = [None] * len(sources)
    for i, summary in zip(order, done):
        summaries[i] = summary
    failed = [s for s in summaries if s["error"]]
    if len(failed) == len(summaries):     # as the engine: the run fails only when no capture was readable
        raise InputError(failed[0]["name"], failed[0]["error"])
    return _assemble_run(summaries, [s.pop("tables", None) for s in summaries], None, ca, keylog)


def _start_method():
    """How the workers start: forked from this process when it runs no other thread, else forked
    by the fork server; None where neither exists (not Linux)."""
    methods = multiprocessing.get_all_start_methods()
    if threading.active_count() == 1 and "fork" in methods:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])     # imported once, in the server, before it forks
        return context
    return None


def _as_is(value):
    return value


class _HereAndThere:
    """The pool dask's local scheduler is given: this process decodes too, in a thread of its own
    (its tables then need no pickling, and the core it runs on would otherwise wait), beside the
    worker processes; two tasks in flight per decoder, so that one waits while the other runs and a
    process does not idle while its last result travels back and the scheduler hands out the next
    (≈ 0.07 s a task, measured). Each task goes to the side with fewer in flight per decoder. The
    thread is a daemon: a Ctrl-C does not wait for the capture it is decoding."""

    def __init__(self, processes: ProcessPoolExecutor, count: int):
        self.processes = processes
        self.there_decoders = count
        self._max_workers = 2 * (count + 1)     # what dask.multiprocessing.get reads of the pool it is given
        self.lock = threading.Lock()
        self.in_flight = {True: 0, False: 0}     # here, there
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._decode_here, name="commpath-decode", daemon=True)
        self.thread.start()

    def submit(self, fn, *args) -> Future:
        with self.lock:
            here = self.in_flight[True] * self.there_decoders <= self.in_flight[False]
            self.in_flight[here] += 1
        if here:
            future: Future = Future()
            self.tasks.put((future, fn, args))
        else:
            future = self.processes.submit(fn, *args)
        future.add_done_callback(partial(self._done, here))     # before the scheduler's own callback
        return future

    def _done(self, here: bool, _future) -> None:
        with self.lock:
            self.in_flight[here] -= 1

    def _decode_here(self) -> None:
        while (task := self.tasks.get()) is not None:
            future, fn, args = task
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:     # dask's task wrapper catches the task's own; this is its own
                    future.set_exception(exc)

    def close(self) -> None:
        """The thread ends after its task, if any (waited for only when it has none left)."""
        self.tasks.put(None)
        if not self.in_flight[True]:
            self.thread.join()

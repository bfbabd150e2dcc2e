"""A large capture decoded in a process forked before the command imports pandas and the checks.

`commpath analyze` and `commpath report` first import pandas, pyarrow's kernels and the checks (≈ 0.3 s),
and decoding a capture needs none of them. The command (:func:`start`, from ``cli.run``) forks
one process that decodes the run's capture with its handshakes as :func:`commpath.open` would in
the command, and sends back the flow columns, the capture rows and the handshake analyzer's rows
(the columns' buffers written once into a memory file the command maps, not copied through the pipe);
``open`` takes them (:func:`take`) when its run is that one (same captures, CA bundle, key log and
payload limit), and the command imports meanwhile. The analyzer that takes the rows resolves them
as the one fed the connections does (``HandshakeAnalyzer.absorb``): the same outputs, byte for byte.

Only where it gains: one capture of at least :data:`MIN_BYTES` (several large ones are decoded on
every core by ``distributed._cores``), two cores or more, and no ``--workers``/``--scheduler``.
Measured (benchmarks/RESULTS.md, 2 cores): `analyze` 9-15 % faster on the 895 MB benchmark capture,
10 % on a 73 MB cut of it, the same within the noise on a million connections in 70 MB (whose
columns are most of what is sent). Dask is not used for this one task: importing it costs about
half of what the overlap saves.
The process dies with the command (``PR_SET_PDEATHSIG``), ignores Ctrl-C (the command handles it),
and its result is only ever a guess the command checks: a different run decodes in the command.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from ._process import usable_cores

#: The smallest capture decoded ahead. Measured (benchmarks/RESULTS.md): 73 MB 6-10 % faster; 16 and
#: 40 MB cuts the same within the noise, for 0.05 s more CPU and 14 MB more at the peak.
MIN_BYTES = 64 << 20

_PR_SET_PDEATHSIG = 1
_started: "Ahead | None" = None


@dataclass
class Ahead:
    """The forked decoder: its pid, the pipe its result comes through, the run it decodes, its progress."""

    pid: int
    fd: int
    key: tuple
    shown: "mmap.mmap"    # an anonymous shared mapping: bytes done, bytes total (int64 each)
    file: str
    tables: int           # a memory file (memfd) the decoder writes its tables' buffers into

    def cancel(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        for fd in (self.fd, self.tables):
            try:
                os.close(fd)
            except OSError:
                pass


def run_key(inputs, ca, keylog, payload_limit: int) -> tuple:
    """What decides a run's decoding: its inputs, CA bundle, key log and payload limit."""
    return (tuple(str(Path(p)) for p in inputs), None if ca is None else str(Path(ca)),
            None if keylog is None else str(Path(keylog)), int(payload_limit))


def start(inputs, inventory, ca, keylog, payload_limit: int) -> None:
    """Fork the decoder of this run if it gains (see the module); the command then imports the rest."""
    global _started
    if (_started is not None or not hasattr(os, "fork") or not hasattr(os, "memfd_create")
            or threading.active_count() != 1 or usable_cores() < 2):
        return
    from .decode import engine     # numpy, the kernels and the handshake parsers: imported once, for both
    from .decode import handshakes  # noqa: F401
    try:
        files = list(engine._expand(inputs))
        if not worth_it([os.path.getsize(path) for path, _ in files]):
            return
    except Exception:       # the run names something unreadable: the command says so, as without this
        return
    if ca is None and inventory is not None:
        ca = _inventory_ca(inventory)
    import mmap
    import pyarrow   # noqa: F401   the flow table's address texts need it here, and the command later
    shown = mmap.mmap(-1, 16)
    tables = os.memfd_create("commpath-ahead", os.MFD_CLOEXEC)
    read_end, write_end = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _decode_and_send(write_end, tables, parent, inputs, ca, keylog, payload_limit, shown)
    os.close(write_end)
    import atexit
    atexit.register(discard)     # not taken (the command failed first): stopped and reaped, not orphaned
    _started = Ahead(pid, read_end, run_key(inputs, ca, keylog, payload_limit), shown, str(files[0][0]), tables)


def worth_it(sizes: list[int]) -> bool:
    """Whether captures of ``sizes`` bytes are decoded ahead: one capture, and a large one."""
    return len(sizes) == 1 and sizes[0] >= MIN_BYTES


def take(inputs, ca, keylog, payload_limit: int, progress=None):
    """The decoded run (flow columns per file, capture rows, the analyzer's rows) if the forked
    decoder decoded this one, else None (the command decodes it). Its errors are this run's
    (an unreadable capture raises the command's InputError); a decoder killed is one line."""
    global _started
    ahead, _started = _started, None
    if ahead is None:
        return None
    if ahead.key != run_key(inputs, ca, keylog, payload_limit):
        ahead.cancel()
        return None
    if not select.select([ahead.fd], [], [], 0)[0]:      # still decoding: meanwhile, what comes after
        _load_the_rest()
    try:
        data = _receive(ahead, progress)
        try:
            status, *got = _unpickled(data, ahead.tables)
        except Exception:
            status, got = "lost", []
    finally:
        ahead.cancel()
    if status == "error":
        raise got[0]
    if status == "lost":
        from .errors import CommpathError
        raise CommpathError(f"the process decoding {ahead.file} died (killed? out of memory?); "
                            "--workers 0 decodes it in this process")
    return got if status == "ok" else None      # "failed": decoded again here, where the error shows


#: What the command imports after decoding, loaded while it waits for the decoder instead (off the
#: run's critical path: ≈ 0.05 s, 6 % of `analyze` on the benchmark capture, RESULTS.md): the
#: certificate parser (the run's certificates table), the host facts, the Parquet and JSON writers.
AFTER_DECODING = ("commpath.decode.x509", "cryptography.hazmat.backends.openssl", "commpath._sources",
                  "pyarrow.parquet", "commpath.present.report_json")


def _load_the_rest() -> None:
    import importlib
    for name in AFTER_DECODING:
        importlib.import_module(name)


def discard() -> None:
    """The forked decoder stopped: the run went elsewhere (Dask, the cores, an analysis folder)."""
    global _started
    ahead, _started = _started, None
    if ahead is not None:
        ahead.cancel()


def _receive(ahead: Ahead, progress) -> bytes:
    """Everything the decoder sends, showing its progress meanwhile."""
    chunks = []
    while True:
        if progress is not None:
            ready, _, _ = select.select([ahead.fd], [], [], 0.1)
            done, total = struct.unpack_from("qq", ahead.shown)
            if total:
                progress(ahead.file, done, total)
            if not ready:
                continue
        chunk = os.read(ahead.fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _unpickled(data: bytes, tables: int):
    """What the decoder sent: the pickle through the pipe, the arrays' buffers mapped from the memory file."""
    sizes, meta = pickle.loads(data)
    buffers = []
    if sum(sizes):
        import mmap
        mapped = memoryview(mmap.mmap(tables, sum(sizes)))     # shared and writable: the arrays are not copied
        at = 0
        for n in sizes:
            buffers.append(mapped[at:at + n])
            at += n
    return pickle.loads(meta, buffers=buffers)


def _send(fd: int, tables: int, result: tuple) -> None:
    """``result`` pickled with its arrays' buffers apart (protocol 5), written once into the memory
    file: sending a million flows' columns through the pipe copied them four times more."""
    buffers: list = []
    meta = pickle.dumps(result, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    sizes = [v.nbytes for v in views]
    for view in views:
        _write_all(tables, view)
    _write_all(fd, memoryview(pickle.dumps((sizes, meta), protocol=5)))


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


def _decode_and_send(fd: int, tables: int, parent: int, inputs, ca, keylog, payload_limit: int, shown) -> None:
    """The forked process: decode, send (status, ...) pickled, exit without the command's exit handlers."""
    try:
        _die_with(parent)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        devnull = os.open(os.devnull, os.O_RDWR)
        for std in (0, 1, 2):       # the command's pipes close when the command ends, not when this does
            os.dup2(devnull, std)
        try:
            result = ("ok", *_decode(inputs, ca, keylog, payload_limit, shown))
        except Exception as exc:
            from .errors import CommpathError
            result = ("error", exc) if isinstance(exc, CommpathError) else ("failed", repr(exc))
        _send(fd, tables, result)
    finally:
        os._exit(0)


def _decode(inputs, ca, keylog, payload_limit: int, shown) -> tuple:
    from .decode.engine import collector_paused, read_columns
    from .decode.handshakes import HandshakeAnalyzer

    def progress(_file: str, done: int, total: int) -> None:
        struct.pack_into("qq", shown, 0, done, total)
    analyzer = HandshakeAnalyzer(ca, keylog)
    with collector_paused():
        flows, captures, _ = read_columns(inputs, progress=progress, keep_streams=False, on_streams=analyzer,
                                          payload_limit=payload_limit)
        return flows, captures, analyzer.unresolved()


def _die_with(parent: int) -> None:
    """This process is killed when the command ends, however it ends."""
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:      # it ended before the call above
        os._exit(0)


def _inventory_ca(inventory) -> str | None:
    """The inventory's ca_bundle as written (``open`` loads and checks the inventory; a wrong guess
    only means the command decodes the run itself)."""
    try:
        import yaml
        with open(inventory, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
        ca = doc.get("ca_bundle") if isinstance(doc, dict) else None
        if not isinstance(ca, str):
            return None
        return str(ca) if Path(ca).is_absolute() else str(Path(inventory).resolve().parent / ca)   # as the inventory loader
    except Exception:
        return None


__all__ = ["AFTER_DECODING", "MIN_BYTES", "Ahead", "discard", "run_key", "start", "take", "worth_it"]

"""The task of one capture: decode it with its handshakes, write its tables, return a small summary."""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

from ..decode.engine import read
from ..decode.limits import ANALYSIS_PAYLOAD_LIMIT
from ..decode.schema import CERT_COLUMNS, TLS_COLUMNS, conform, empty_frame
from ..errors import InputError
from ._classify import task_tls
from ._files import Source, local_copy
from ._parts import write_part


def _analyzer(ca_pem: bytes | None, keylog: bytes | None, folder: str):
    """A HandshakeAnalyzer from the CA bundle's and key log's bytes (the worker may not see the driver's files)."""
    from ..decode.handshakes import HandshakeAnalyzer
    paths = []
    for name, data in (("ca.pem", ca_pem), ("keylog.txt", keylog)):
        if data is None:
            paths.append(None)
            continue
        p = Path(folder) / name
        p.write_bytes(data)
        paths.append(str(p))
    return HandshakeAnalyzer(*paths)


def decode_capture(index: int, source: Source, parts: str | None, ca_pem: bytes | None = None, keylog: bytes | None = None,
                   storage_options: dict | None = None, payload_limit: int = ANALYSIS_PAYLOAD_LIMIT,
                   classify_rows: bool = True, scratch: str | None = None) -> dict:
    """Decode capture ``index`` (``source``), write its flows/tls/certs/ssh/http under ``parts`` (when
    given) and return its summary: the capture row, its flow count, the worker's costs, and the
    tables themselves under ``"tables"`` (with the TLS rows the classification tasks read, unless
    ``classify_rows`` is false: the run classifies elsewhere). Flow ids count from 0 in this capture;
    the run adds the flows of the captures before it. ``scratch``: the folder for the task's own files
    (default: :func:`_scratch`), when the caller removes it whatever becomes of the task.

    An unreadable capture is not an exception: its summary carries ``error`` (the run decides, as
    ``commpath.read`` does, whether the others make up for it)."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="commpath-task-", dir=scratch or _scratch()) as tmp:
        try:
            with local_copy(source.name, storage_options, folder=tmp) as local:
                analyzer = _analyzer(ca_pem, keylog, tmp)
                capture = read(local, keep_streams=False, on_streams=analyzer, payload_limit=payload_limit)
                handshakes = analyzer.unresolved_tables()   # resolved over the whole run by the driver
        except InputError as exc:
            reason = exc.reason
            row = _capture_row(source, None, reason)
            return {"index": index, "name": source.name, "error": reason, "capture": row, "flows": 0, "part": None}
    flows = capture.flows
    flows["capture"] = flows["capture"].astype(object).where(flows["capture"].isna(), source.name).astype("string")
    row = _capture_row(source, capture.captures.iloc[0].to_dict(), None)
    summary = {"index": index, "name": source.name, "error": None, "capture": row, "flows": int(len(flows)),
               "tls": len(handshakes["tls"]), "seconds": time.perf_counter() - t0,
               "cpu_seconds": time.process_time() - cpu0, "bytes": source.size,
               "worker_pid": os.getpid(), "worker_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    summary["part"] = None
    if parts:   # the capture's own tables (its sessions and chains resolved within the capture)
        hs = analyzer.result_of_tables(handshakes)
        tables = {"flows": flows, "tls": conform(hs.tls.copy(), TLS_COLUMNS),
                  "certs": conform(hs.certs.copy(), CERT_COLUMNS) if len(hs.certs) else empty_frame(CERT_COLUMNS),
                  "ssh": hs.ssh, "http": hs.http}
        summary["part"] = write_part(parts, index, source.host, tables, summary, storage_options)
    # taken off by the driver: pickled, they travel faster than Parquet reads back
    summary["tables"] = {"flows": flows, "handshakes": handshakes}
    if classify_rows:
        summary["tables"]["task_tls"] = task_tls(handshakes["tls"])
    return summary


def _scratch() -> str | None:
    """The Dask worker's own folder for a task's files, or the system's temporary folder outside a
    worker. A killed task cannot remove its files; a dead worker's folder is dask's to purge (the
    next worker started in the same place does), and it lies under the cluster's local directory."""
    try:
        from distributed import get_worker
        return get_worker().local_directory
    except (ImportError, ValueError):     # not running in a Dask worker
        return None


def _capture_row(source: Source, row: dict | None, error: str | None) -> dict:
    """The capture's row of the captures table, named as the run names it, host and role from its manifest."""
    if row is None:   # as the engine records a file it could not read among others
        row = {"file": source.name, "format": "unknown", "link_types": "", "packets": 0, "bytes": 0,
               "first_ts": float("nan"), "last_ts": float("nan"), "partial": True, "warnings": [error]}
    row = {k: (v.tolist() if hasattr(v, "tolist") and not isinstance(v, (str, list)) else v) for k, v in row.items()}
    row["file"] = source.name
    row["warnings"] = list(row.get("warnings") or [])
    row["host"], row["role"] = source.manifest.get("host"), source.manifest.get("role")
    return row

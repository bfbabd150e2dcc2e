"""`commpath flows`: the decode layer's connection table as aligned text (numpy to text, no pandas)."""

from __future__ import annotations

import os
import sys

import numpy as np

from ..decode.engine import (ADDRESS_CODE_COLUMNS, CODE_COLUMNS, PAYLOAD_LIMIT, TUNNEL_CATEGORIES, Progress,
                             collector_paused, read_columns)

FLOW_TABLE_COLUMNS = ["flow_id", "first_frame", "ts_start", "transport", "src_ip", "src_port", "dst_ip", "dst_port",
                      "app_protocol", "packets_fwd", "packets_rev", "bytes_fwd", "bytes_rev", "end_state", "tunnel"]
#: the columns ``read_columns`` gives as codes, with the names they stand for
NAMED_CODES = {**CODE_COLUMNS, "tunnel": TUNNEL_CATEGORIES}


def main(args) -> int:
    """`commpath flows INPUT...`: print the connection table of each capture file."""
    with collector_paused():
        flows, captures, _ = read_columns(args.inputs, progress=None if args.quiet else _stderr_progress(),
                                          keep_streams=False,
                                          payload_limit=getattr(args, "payload_limit", PAYLOAD_LIMIT))
    _finish_progress(args.quiet)
    for row in captures:
        for warning in row["warnings"]:
            print(f"commpath: warning: {row['file']}: {warning}", file=sys.stderr)
    for cols in flows:
        n = len(cols["flow_id"])
        if not n:
            continue
        print(f"# {cols['capture']}: {n} connections")
        print(flow_table_text(cols, args.limit or n))
    return 0


def flow_table_text(cols: dict, limit: int) -> str:
    """The first ``limit`` rows of one file's flow columns as an aligned text table."""
    cells: dict[str, list[str]] = {}
    for name in FLOW_TABLE_COLUMNS:
        values = cols[name][:limit]
        if name == "ts_start":
            cells[name] = clock_times(values)
        elif name in NAMED_CODES:                   # codes
            names = NAMED_CODES[name]
            cells[name] = [names[v] for v in values.tolist()]
        elif name in ADDRESS_CODE_COLUMNS:          # codes into the file's distinct address texts
            texts = cols["ip_texts"].to_pylist()
            cells[name] = [texts[v] for v in values.tolist()]
        else:
            cells[name] = [str(v) for v in values.tolist()]
    return text_table(cells)


def clock_times(ts: np.ndarray) -> list[str]:
    """UTC time of day to the microsecond (``HH:MM:SS.ffffff``) of epoch seconds; ``NaT`` when unknown."""
    known = np.isfinite(ts)
    t = np.where(known, ts, 0.0)
    whole = np.floor(t)
    # nanoseconds as pandas counts them (fraction rounded to 9 places, then truncated); %f truncates those
    micros = [int(round(f, 9) * 1e9) // 1000 for f in (t - whole).tolist()]
    day = (whole.astype(np.int64) % 86400).tolist()
    return [f"{d // 3600:02d}:{d // 60 % 60:02d}:{d % 60:02d}.{u:06d}" if k else "NaT"
            for d, u, k in zip(day, micros, known.tolist())]


def text_table(cells: dict[str, list[str]]) -> str:
    """Columns of text, each right-aligned under its name, one space apart."""
    widths = [max([len(name), *map(len, column)]) for name, column in cells.items()]
    lines = [" ".join(name.rjust(w) for name, w in zip(cells, widths))]
    lines += [" ".join(c.rjust(w) for c, w in zip(row, widths)) for row in zip(*cells.values())]
    return "\n".join(lines)


def _stderr_progress() -> Progress | None:
    if not sys.stderr.isatty():
        return None

    def show(file: str, done: int, total: int) -> None:
        pct = 100 * done / total if total else 100
        print(f"\rreading {os.path.basename(file)}: {pct:5.1f}%", end="", file=sys.stderr, flush=True)
    return show


def _finish_progress(quiet: bool) -> None:
    if not quiet and sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr, flush=True)

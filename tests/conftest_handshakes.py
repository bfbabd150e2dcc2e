"""Test helpers for the handshake parsers: public capture paths and TCP streams of a capture."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tempfile
from pathlib import Path

PUBLIC = Path(__file__).resolve().parents[1].parent / "shared/pcaps/public"
ZEEK_TRACES = PUBLIC / "zeek/testing/btest/Traces"
ZEEK_BASE = PUBLIC / "zeek/testing/btest/Baseline"
TSHARK = shutil.which("tshark")


def open_capture(path: Path) -> Path:
    """A readable path for ``path`` (gunzipped into a temp file when it ends in .gz)."""
    if path.suffix != ".gz":
        return path
    out = Path(tempfile.mkdtemp(prefix="cpt-hs-")) / path.stem
    out.write_bytes(gzip.decompress(path.read_bytes()))
    return out


def read_capture(path: Path):
    """``commpath.read`` of the capture (the engine), as the tests of the handshakes use it."""
    import commpath
    return commpath.read(str(open_capture(path)))


def zeek_log(path: Path) -> list[dict]:
    """Rows of a Zeek ASCII log as dicts (field name -> text)."""
    fields: list[str] = []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"))))
    return rows


def tshark_fields(path: Path, fields: list[str], display_filter: str = "", extra: list[str] | None = None
                  ) -> list[list[str]]:
    """tshark -T fields output, one list per packet."""
    cmd = [TSHARK, "-r", str(open_capture(path)), "-T", "fields", "-E", "separator=\t",
           "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in fields:
        cmd += ["-e", f]
    if display_filter:
        cmd += ["-Y", display_filter]
    cmd += extra or []
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]

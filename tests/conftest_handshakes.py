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


#: where gunzipped captures go: one folder for the test process, removed when it ends
_GUNZIPPED = tempfile.TemporaryDirectory(prefix="cpt-hs-")


def open_capture(path: Path) -> Path:
    """A readable path for ``path`` (gunzipped, once per test process, when it ends in .gz)."""
    if path.suffix != ".gz":
        return path
    out = Path(_GUNZIPPED.name) / f"{abs(hash(str(path))):x}-{path.stem}"
    if not out.is_file():
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


def start_tcpdump(pcap: Path, bpf: str, timeout: float = 10.0):
    """tcpdump on lo writing ``pcap``; returns once it says it is listening. Caller stops it."""
    import select
    import time
    proc = subprocess.Popen([shutil.which("tcpdump") or "tcpdump", "-i", "lo", "-U", "--immediate-mode",
                             "-n", "-s", "0", "-Z", "root", "-w", str(pcap), bpf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.1)
        if ready:
            line = proc.stderr.readline()
            if "listening on" in line:
                time.sleep(0.1)
                return proc
            if not line and proc.poll() is not None:
                break
    proc.kill()
    raise RuntimeError(f"tcpdump did not start: {proc.stderr.read() if proc.stderr else ''}")


def terminate(proc, timeout: float = 5) -> None:
    """SIGTERM a process we started (by its pid); kill it if it lingers."""
    import signal
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def stop_tcpdump(proc, settle: float = 0.3, pcap: Path | None = None, ended: int = 0, timeout: float = 60.0) -> None:
    """Let the last packets reach the file, then stop tcpdump. With ``pcap`` and ``ended``: first wait (bounded)
    until the file holds that many TCP connections closed by FIN or RST, since on a loaded machine tcpdump may
    not have read the last packets yet when the clients are done (``-U`` writes each packet as it reads it)."""
    import time
    if pcap is not None and ended:
        import commpath
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                flows = commpath.read(str(pcap)).flows
                if int(flows["end_state"].isin(["fin", "rst"]).sum()) >= ended:
                    break
            except Exception:   # noqa: BLE001 - a record still being written: read again
                pass
            time.sleep(0.2)
    time.sleep(settle)
    terminate(proc)

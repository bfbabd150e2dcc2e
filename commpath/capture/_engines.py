"""Packet capture engines: dumpcap, tcpdump (one process per interface) and scapy's sniffer."""

from __future__ import annotations

import abc
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

SNAPLEN = 262144


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    line = (out.stdout or out.stderr).strip().splitlines()
    return line[0] if line else "unknown"


def choose(requested: str, ifaces: list[str]) -> tuple[str, str]:
    """(engine, reason) for ``requested`` = auto | dumpcap | tcpdump | scapy."""
    have = {name: shutil.which(name) for name in ("dumpcap", "tcpdump")}
    tcpdump_blocked = _tcpdump_blocked()
    if requested != "auto":
        if requested in have and not have[requested]:
            return "", f"{requested} was requested but is not installed"
        if requested == "tcpdump" and tcpdump_blocked:
            return "", f"tcpdump cannot run here: {tcpdump_blocked}; use --engine dumpcap or scapy"
        return requested, "requested with --engine"
    if have["dumpcap"]:
        return "dumpcap", "dumpcap found: kernel ring buffer, several interfaces in one pcapng, ring files"
    if have["tcpdump"] and not tcpdump_blocked:
        return "tcpdump", "tcpdump found (dumpcap not installed): kernel buffering, one file per interface"
    if have["tcpdump"]:
        return "scapy", f"dumpcap not installed and tcpdump unusable ({tcpdump_blocked}): scapy's sniffer"
    return "scapy", "neither dumpcap nor tcpdump installed: scapy's sniffer (slower, no kernel drop counts)"


def _tcpdump_blocked() -> str:
    """Why tcpdump cannot run (as root it switches user, which needs CAP_SETUID/CAP_SETGID), or ''."""
    from ._host import effective_capabilities

    caps = effective_capabilities()
    if os.geteuid() == 0 and not (caps >> 6 & 1 and caps >> 7 & 1):
        return "running as root without CAP_SETUID/CAP_SETGID (e.g. a container with NET_RAW/NET_ADMIN only)"
    return ""


class _Process:
    """A capture process whose stderr is read in the background (ready line, final statistics)."""

    def __init__(self, cmd: list[str], ready_pattern: str):
        self.cmd = cmd
        self.stderr: list[str] = []
        self._ready = threading.Event()
        self._pattern = re.compile(ready_pattern)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))
            if self._pattern.search(line):
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout) and self.proc.poll() is None

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(2)
        return self.proc.returncode


class Engine(abc.ABC):
    """A capture engine: starts recording on interfaces, reports readiness, stops with statistics."""

    name = ""

    def __init__(self, out: Path, stem: str, ifaces: list[str], bpf: str, ring: int | None, file_mb: float | None):
        self.out, self.stem, self.ifaces, self.bpf = out, stem, ifaces, bpf
        self.ring, self.file_mb = ring, file_mb

    def version(self) -> str:
        return "unknown"

    @abc.abstractmethod
    def start(self) -> None:
        """Implemented by each engine."""

    @abc.abstractmethod
    def wait_ready(self, timeout: float) -> bool:
        """Implemented by each engine."""

    @abc.abstractmethod
    def alive(self) -> bool:
        """Implemented by each engine."""

    def files(self) -> list[Path]:
        return sorted(p for p in self.out.iterdir() if p.name.startswith(self.stem) and p.suffix.startswith(".pcap"))

    @abc.abstractmethod
    def stop(self) -> dict:
        """Stop and return statistics: {iface: {"captured", "received", "dropped"}} and "errors"."""


class Tcpdump(Engine):
    name = "tcpdump"

    def version(self):
        return _version(["tcpdump", "--version"])

    def _target(self, iface: str) -> Path:
        suffix = "" if len(self.ifaces) == 1 else f"-{iface}"
        return self.out / f"{self.stem}{suffix}.pcap"

    def start(self):
        self.procs = {}
        for iface in self.ifaces:
            cmd = ["tcpdump", "-i", iface, "-w", str(self._target(iface)), "-U", "-n", "-s", str(SNAPLEN),
                   "-B", "8192", "--time-stamp-precision=micro", "--immediate-mode"]
            if os.geteuid() == 0:
                cmd += ["-Z", "root"]  # keep root: do not switch to the tcpdump user for the output files
            if self.ring:
                # tcpdump takes whole millions of bytes per file
                cmd += ["-C", str(max(1, round(self.file_mb or 1))), "-W", str(self.ring)]
            if self.bpf:
                cmd.append(self.bpf)
            self.procs[iface] = _Process(cmd, r"listening on")

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        return all(p.wait_ready(max(0.0, deadline - time.monotonic())) for p in self.procs.values())

    def alive(self):
        return all(p.proc.poll() is None for p in self.procs.values())

    def stop(self):
        stats, errors = {}, []
        for iface, p in self.procs.items():
            p.stop()
            text = "\n".join(p.stderr)
            nums = {k: int(v) for v, k in re.findall(r"(\d+) packets? (captured|received by filter|dropped by kernel)", text)}
            stats[iface] = {"captured": nums.get("captured"), "received": nums.get("received by filter"),
                            "dropped": nums.get("dropped by kernel")}
            if p.proc.returncode not in (0, -2, 130) or not nums:
                errors.append(f"tcpdump on {iface}: " + (p.stderr[-1] if p.stderr else f"exit {p.proc.returncode}"))
        if self.ring:  # tcpdump appends the ring index to the name: x.pcap0 -> x-0.pcap
            for f in self.out.glob(f"{self.stem}*.pcap[0-9]*"):
                base, idx = re.match(r"(.*)\.pcap(\d+)$", f.name).groups()
                f.rename(f.with_name(f"{base}-{idx}.pcap"))
        return {"interfaces": stats, "errors": errors}


class Dumpcap(Engine):
    name = "dumpcap"

    def version(self):
        return _version(["dumpcap", "--version"])

    def start(self):
        cmd = ["dumpcap", "-n", "-s", str(SNAPLEN), "-B", "8", "-t"]
        for iface in self.ifaces:
            cmd += ["-i", iface]
            if self.bpf:
                cmd += ["-f", self.bpf]
        cmd += ["-w", str(self.out / f"{self.stem}.pcapng")]
        if self.ring:
            cmd += ["-b", f"filesize:{max(int((self.file_mb or 1) * 1000), 1)}", "-b", f"files:{self.ring}"]
        self.proc = _Process(cmd, r"Capturing on")

    def wait_ready(self, timeout):
        ok = self.proc.wait_ready(timeout)
        time.sleep(0.3)  # dumpcap prints "Capturing on" just before opening every interface
        return ok and self.proc.proc.poll() is None

    def alive(self):
        return self.proc.proc.poll() is None

    def stop(self):
        self.proc.stop()
        text = "\n".join(self.proc.stderr)
        stats = {}
        for iface, rec, drop in re.findall(r"Packets received/dropped on interface '([^']*)': (\d+)/(\d+)", text):
            stats[iface.split(": ")[-1]] = {"captured": int(rec), "received": int(rec), "dropped": int(drop)}
        total = re.search(r"Packets captured: (\d+)", text)
        said = [ln for ln in self.proc.stderr if ln.strip() and not ln.startswith(("Capturing on", "File:"))]
        errors = [] if total else [f"dumpcap: {said[0] if said else 'no statistics'}"]
        return {"interfaces": stats, "errors": errors}


class Scapy(Engine):
    name = "scapy"

    def version(self):
        import scapy
        return f"scapy {scapy.VERSION}"

    def start(self):
        from scapy.sendrecv import AsyncSniffer
        from scapy.utils import PcapWriter

        self.count = 0
        self.writer = PcapWriter(str(self.out / f"{self.stem}.pcap"), sync=True)

        def keep(pkt):
            self.writer.write(pkt)
            self.count += 1

        ifaces = None if self.ifaces == ["any"] else self.ifaces
        self.sniffer = AsyncSniffer(iface=ifaces, filter=self.bpf or None, prn=keep, store=False)
        self.sniffer.start()

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if getattr(self.sniffer, "running", False):
                time.sleep(0.5)
                return True
            time.sleep(0.05)
        return False

    def alive(self):
        return bool(getattr(self.sniffer, "running", False))

    def stop(self):
        errors = []
        try:
            self.sniffer.stop()
        except Exception as exc:  # noqa: BLE001 - scapy raises plain exceptions
            errors.append(f"scapy: {exc}")
        self.writer.close()
        return {"interfaces": {",".join(self.ifaces): {"captured": self.count, "received": None, "dropped": None}},
                "errors": errors}


ENGINES = {"tcpdump": Tcpdump, "dumpcap": Dumpcap, "scapy": Scapy}

"""Packet capture engines: dumpcap, tcpdump (one process per interface) and scapy's sniffer."""

from __future__ import annotations

import abc
import ctypes
import glob
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import NamedTuple

SNAPLEN = 262144
#: the kernel's capture buffer per interface: tcpdump's immediate mode uses fixed frames as large as the
#: interface's biggest packet (64 KiB with segmentation offload), so 8 MB holds only about 120 packets
BUFFER_MB = 8


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


_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """A preexec_fn: the engine gets SIGTERM when the agent dies, even by SIGKILL (no orphan recording on).

    Resolved before fork: the child only calls prctl, nothing that could wait on a lock another
    thread of the agent held at fork time."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def child():
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:    # the agent died between fork and prctl
            os.kill(os.getpid(), signal.SIGTERM)
    return child


class _Process:
    """A capture process whose stderr is read in the background: the ready line, errors, final statistics.

    Readiness is an event the engine reports on stderr (``ready_pattern``); an engine that ends its
    stderr without reporting it has failed to start, whatever ``poll()`` says at that instant.
    """

    def __init__(self, cmd: list[str], ready_pattern: str):
        self.cmd = cmd
        self.stderr: list[str] = []
        self._said = threading.Event()      # ready line seen, or stderr closed
        self._more = threading.Condition()  # a line was read (or stderr closed)
        self.ready = False
        self._pattern = re.compile(ready_pattern)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True,
                                     preexec_fn=_die_with_parent())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            # dumpcap's running count is one line of "\rPackets: N" updates
            with self._more:
                self.stderr.extend(part for part in line.rstrip("\n").split("\r") if part.strip())
                self._more.notify_all()
            if not self.ready and self._pattern.search(line):
                self.ready = True
                self._said.set()
        self._said.set()
        with self._more:
            self._more.notify_all()

    def ask(self, signum: int, answer: re.Pattern, timeout: float) -> re.Match | None:
        """Send ``signum`` and wait (bounded) for the first stderr line after it that ``answer`` matches."""
        with self._more:
            start = len(self.stderr)
        try:
            self.proc.send_signal(signum)
        except ProcessLookupError:
            return None
        deadline = time.monotonic() + timeout
        with self._more:
            while True:
                for i in range(start, len(self.stderr)):
                    m = answer.search(self.stderr[i])
                    if m:
                        del self.stderr[i]      # answered: kept out of the log, which stays small over days
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    return None
                self._more.wait(left)

    def wait_ready(self, timeout: float) -> bool:
        """True once the engine reported readiness; False if it ended (or stayed silent) first."""
        self._said.wait(timeout)
        if not self.ready:
            try:
                self.proc.wait(2)             # its stderr closed: let it finish exiting, for its status
            except subprocess.TimeoutExpired:
                pass
        return self.ready and self.proc.poll() is None

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


class Limits(NamedTuple):
    """What the engine itself enforces, so a full disk never outruns the agent's poll.

    ``file_mb`` × ``files``: ring files (``wrap``: the user asked for a ring, the oldest file is
    overwritten) or, without ``wrap``, the whole budget: dumpcap stops on its own at ``total_mb``,
    tcpdump (which cannot stop by size) rotates over ``files`` files whose sum stays inside it.
    ``reason``: the stop reason when the engine reaches that limit (max-size or disk-full).
    """

    total_mb: float
    file_mb: float
    files: int
    wrap: bool
    reason: str = "disk-full"


#: the most one packet can add to a file past the engine's size check (the snap length)
OVERSHOOT_MB = SNAPLEN / 1e6


def limits(budget_mb: float, max_mb: float | None, ring: int | None, engine: str, n_procs: int) -> Limits:
    """Engine limits for ``budget_mb`` of disk (free space less the reserve) shared by ``n_procs`` processes.

    Every file may end one packet past its size, so files × (size + one packet) fit the disk budget.
    ``--max-size`` without a ring is the engine's own stop for dumpcap; for tcpdump the agent's poll
    keeps it (tcpdump's rotation is sized from the disk alone). Raises ValueError when the engine
    cannot keep within the budget at all.
    """
    disk = budget_mb / n_procs
    if ring:
        wanted = (max_mb if max_mb is not None else 100.0 * ring) / n_procs / ring
        file_mb = min(wanted, disk / ring - OVERSHOOT_MB)
        # tcpdump takes whole millions of bytes per file; below 0.1 MB a file is mostly overshoot
        file_mb = float(max(1, int(file_mb))) if engine == "tcpdump" else max(file_mb, 0.1)
        files = min(ring, int(disk // (file_mb + OVERSHOOT_MB)))   # fewer than asked when they cannot fit
        if files < 1:
            raise ValueError(f"{disk:.1f} MB cannot hold one ring file of {file_mb:g} MB")
        return Limits(files * file_mb, file_mb, files, True)
    if engine == "tcpdump":
        file_mb = float(max(1, min(100, int(disk / 8))))
        files = int(disk // (file_mb + OVERSHOOT_MB))
        if files < 2:   # one file would be truncated when it turned over
            raise ValueError(f"{disk:.1f} MB per interface cannot hold tcpdump's two files of 1 MB")
        return Limits(files * file_mb, file_mb, files, False)
    total = disk - OVERSHOOT_MB
    if max_mb is not None and max_mb / n_procs <= total:
        return Limits(max_mb / n_procs, max_mb / n_procs, 1, False, "max-size")
    if total < 0.1:
        raise ValueError(f"{disk:.1f} MB is less than one packet")
    return Limits(total, total, 1, False)


class Engine(abc.ABC):
    """A capture engine: starts recording on interfaces, reports readiness, stops with statistics."""

    name = ""

    def __init__(self, out: Path, stem: str, ifaces: list[str], bpf: str, lim: Limits, buffer_mb: int = BUFFER_MB):
        self.out, self.stem, self.ifaces, self.bpf, self.lim = out, stem, ifaces, bpf, lim
        self.buffer_mb = buffer_mb

    def version(self) -> str:
        return "unknown"

    def pids(self) -> list[int]:
        """The engine's own processes (for the pid file a later start reads after a crash)."""
        return []

    @abc.abstractmethod
    def start(self) -> None:
        """Implemented by each engine."""

    @abc.abstractmethod
    def wait_ready(self, timeout: float) -> bool:
        """Implemented by each engine."""

    @abc.abstractmethod
    def alive(self) -> bool:
        """Implemented by each engine."""

    def full(self) -> bool:
        """The engine used its whole (non-ring) size budget: stopped by itself, or on its last file."""
        return False

    def files(self) -> list[Path]:
        return sorted(p for p in self.out.iterdir() if p.name.startswith(self.stem) and ".pcap" in p.suffix)

    @abc.abstractmethod
    def stop(self) -> dict:
        """Stop and return statistics: {iface: {"captured", "received", "dropped"}} and "errors"."""

    def running_stats(self) -> dict[str, dict] | None:
        """The counts so far while recording, {iface: {"captured", "received", "dropped"}}, or None when the
        engine tells them only when it stops."""
        return None


#: tcpdump's answer to SIGUSR1 (its "request info" signal where SIGINFO does not exist): the counts so far
_TCPDUMP_INFO = re.compile(r"(\d+) packets? captured, (\d+) packets? received by filter, (\d+) packets? dropped by kernel")
#: how long the agent waits for a running tcpdump to print its counts
INFO_TIMEOUT = 5.0


class Tcpdump(Engine):
    name = "tcpdump"

    def running_stats(self):
        out = {}
        for iface, p in self.procs.items():
            m = p.ask(signal.SIGUSR1, _TCPDUMP_INFO, INFO_TIMEOUT)
            out[iface] = ({"captured": int(m[1]), "received": int(m[2]), "dropped": int(m[3])} if m
                          else {"captured": None, "received": None, "dropped": None})
        return out

    def version(self):
        return _version(["tcpdump", "--version"])

    def _target(self, iface: str) -> Path:
        suffix = "" if len(self.ifaces) == 1 else f"-{iface}"
        return self.out / f"{self.stem}{suffix}.pcap"

    def start(self):
        self.procs = {}
        for iface in self.ifaces:
            cmd = ["tcpdump", "-i", iface, "-w", str(self._target(iface)), "-U", "-n", "-s", str(SNAPLEN),
                   "-B", str(self.buffer_mb * 1024), "--time-stamp-precision=micro", "--immediate-mode",
                   # tcpdump cannot stop at a size: it rotates over files that fit the budget together
                   "-C", str(int(self.lim.file_mb)), "-W", str(self.lim.files)]
            if os.geteuid() == 0:
                cmd += ["-Z", "root"]  # keep root: do not switch to the tcpdump user for the output files
            if self.bpf:
                cmd.append(self.bpf)
            self.procs[iface] = _Process(cmd, r"listening on")

    def pids(self):
        return [p.proc.pid for p in self.procs.values()]

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        return all(p.wait_ready(max(0.0, deadline - time.monotonic())) for p in self.procs.values())

    def alive(self):
        return all(p.proc.poll() is None for p in self.procs.values())

    def full(self):
        if self.lim.wrap:
            return False
        for iface in self.ifaces:  # the last file of the rotation begun: the next one overwrites the first
            name = self._target(iface).name
            if sum(1 for _ in self.out.glob(f"{glob.escape(name)}[0-9]*")) >= self.lim.files:
                return True
        return False

    def stop(self):
        stats, errors = {}, []
        for iface, p in self.procs.items():
            p.stop()
            text = "\n".join(p.stderr)
            nums = {k: int(v) for v, k in re.findall(r"(\d+) packets? (captured|received by filter|dropped by kernel)", text)}
            stats[iface] = {"captured": nums.get("captured"), "received": nums.get("received by filter"),
                            "dropped": nums.get("dropped by kernel")}
            if p.proc.returncode not in (0, -2, 130) or not nums:
                said = [ln for ln in p.stderr if ln.startswith("tcpdump:")] or p.stderr[-1:]
                errors.append(f"tcpdump on {iface}: "
                              + (said[0].removeprefix("tcpdump: ") if said else f"exit {p.proc.returncode}"))
        rename_rotated(self.out, self.stem)
        return {"interfaces": stats, "errors": errors}


def rename_rotated(out: Path, stem: str) -> None:
    """tcpdump appends the rotation index to the name: x.pcap0 -> x-0.pcap (readers look at the suffix);
    a rotation that never left its first file keeps the plain name x.pcap."""
    groups: dict[str, list[tuple[Path, str]]] = {}
    for f in out.glob(f"{glob.escape(stem)}*.pcap[0-9]*"):
        base, idx = re.match(r"(.*)\.pcap(\d+)$", f.name).groups()
        groups.setdefault(base, []).append((f, idx))
    for base, files in groups.items():
        if len(files) == 1 and int(files[0][1]) == 0:
            files[0][0].rename(out / f"{base}.pcap")
            continue
        for f, idx in files:
            f.rename(out / f"{base}-{idx}.pcap")


class Dumpcap(Engine):
    name = "dumpcap"

    def version(self):
        return _version(["dumpcap", "--version"])

    def start(self):
        # -q: no running packet count on stderr, which would block dumpcap once the pipe filled if the
        # agent stopped reading (a hung agent must not stop the capture)
        cmd = ["dumpcap", "-q", "-n", "-s", str(SNAPLEN), "-B", str(self.buffer_mb), "-t"]
        for iface in self.ifaces:
            cmd += ["-i", iface]
            if self.bpf:
                cmd += ["-f", self.bpf]
        cmd += ["-w", str(self.out / f"{self.stem}.pcapng")]
        kb = max(int(self.lim.file_mb * 1000), 1)   # dumpcap's kB are 1000 bytes
        if self.lim.wrap:
            cmd += ["-b", f"filesize:{kb}", "-b", f"files:{self.lim.files}"]
        else:
            cmd += ["-a", f"filesize:{kb}"]          # dumpcap stops by itself at the size budget
        # "File: ..." comes once every interface is open and its filter set ("Capturing on" before that)
        self.proc = _Process(cmd, r"^File: ")

    def pids(self):
        return [self.proc.proc.pid]

    def wait_ready(self, timeout):
        return self.proc.wait_ready(timeout)

    def alive(self):
        return self.proc.proc.poll() is None

    def full(self):
        return not self.lim.wrap and self.proc.proc.poll() == 0

    def stop(self):
        self.proc.stop()
        text = "\n".join(self.proc.stderr)
        stats = {}
        for iface, rec, drop in re.findall(r"Packets received/dropped on interface '([^']*)': (\d+)/(\d+)", text):
            stats[iface.split(": ")[-1]] = {"captured": int(rec), "received": int(rec), "dropped": int(drop)}
        total = re.search(r"Packets captured: (\d+)", text)
        said = [ln for ln in self.proc.stderr if ln.strip() and not ln.startswith(("Capturing on", "File:", "Packets:"))]
        errors = [] if total else [f"dumpcap: {said[0] if said else 'no statistics'}"]
        return {"interfaces": stats, "errors": errors}


class Scapy(Engine):
    name = "scapy"

    def version(self):
        import scapy
        return f"scapy {scapy.VERSION}"

    def start(self):
        from scapy.sendrecv import AsyncSniffer

        self.open_file()
        ifaces = None if self.ifaces == ["any"] else self.ifaces
        self.listening = threading.Event()
        self.sniffer = AsyncSniffer(iface=ifaces, filter=self.bpf or None, prn=self.keep, store=False,
                                    started_callback=self.listening.set)
        self.sniffer.start()

    def open_file(self) -> None:
        """The pcap file, and the bytes it may reach: scapy has neither rotation nor a size stop of its
        own, so this engine counts what it writes and refuses a packet that would pass the budget
        (``--ring`` keeps one file: the whole budget, then it stops as full)."""
        from scapy.utils import PcapWriter

        self.count = self.refused = 0
        self.written = 24                               # the pcap file header
        self.budget_bytes = int(self.lim.total_mb * 1e6)
        self.writer = PcapWriter(str(self.out / f"{self.stem}.pcap"), sync=True)

    def keep(self, pkt) -> None:
        """Write one sniffed packet, unless it would take the file past its budget."""
        size = 16 + len(bytes(pkt))                     # record header and the packet as written
        if self.written + size > self.budget_bytes:
            self.refused += 1
            return
        self.writer.write(pkt)
        self.written += size
        self.count += 1

    def running_stats(self):
        return {",".join(self.ifaces): {"captured": self.count, "received": None, "dropped": self.refused or None}}

    def full(self):
        """A packet was refused: the file holds all the budget lets it."""
        return self.refused > 0

    def wait_ready(self, timeout):
        """Scapy calls back once its sockets are open and filtered: the ready event (or its thread died)."""
        deadline = time.monotonic() + timeout
        while not self.listening.wait(0.1):
            thread = getattr(self.sniffer, "thread", None)
            if time.monotonic() > deadline or (thread is not None and not thread.is_alive()):
                return False
        return self.alive()

    def alive(self):
        return bool(getattr(self.sniffer, "running", False))

    def stop(self):
        errors = []
        try:
            self.sniffer.stop()
        except Exception as exc:  # noqa: BLE001 - scapy raises plain exceptions
            errors.append(f"scapy: {exc}")
        self.writer.close()
        # packets refused at the size budget are the drops this engine knows of (the kernel's it cannot tell)
        return {"interfaces": {",".join(self.ifaces): {"captured": self.count, "received": None,
                                                        "dropped": self.refused or None}},
                "errors": errors}


ENGINES = {"tcpdump": Tcpdump, "dumpcap": Dumpcap, "scapy": Scapy}

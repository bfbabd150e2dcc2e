"""Which capture files of the watched folders are closed (safe to read), in order, and what identifies each."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..decode.engine import CAPTURE_SUFFIXES

#: Rotation names of the capture agent's engines while they run (capture/_engines.py): dumpcap's ring
#: ``stem_00001_20261206101500.pcapng`` (the index only grows) and tcpdump's ``stem.pcap0`` (``-C``/``-W``:
#: the index wraps, so the newest file is the one written last).
DUMPCAP_RING = re.compile(r"^(?P<group>.+)_(?P<index>\d{5,})_\d{14}\.pcapng$")
TCPDUMP_RING = re.compile(r"^(?P<group>.+)\.pcap(?P<index>\d+)$")
#: Bytes hashed at each end of a file for its identity (with its size): cheap, and blind to renames
#: (tcpdump's files are renamed x.pcap3 -> x-3.pcap when the agent stops) and to copies.
IDENTITY_BYTES = 65536
#: Agent states whose files are all closed (capture/agent.py writes these in manifest.json).
AGENT_DONE = ("complete", "error")
#: The counts a running agent rewrites beside its files (capture/agent.py STATS_FILE).
AGENT_STATS = "stats.json"


@dataclass(frozen=True)
class Candidate:
    """A closed capture file: its path, identity and when it was last written."""

    path: Path
    key: str
    size: int
    mtime_ns: int


def _is_capture(name: str) -> bool:
    low = name.lower()
    return low.endswith(CAPTURE_SUFFIXES) or bool(TCPDUMP_RING.match(name))


def read_manifest(folder: Path) -> dict | None:
    """The agent's manifest.json in ``folder``: None when there is none; caught while the agent rewrites
    it (not JSON yet), a manifest whose agent still runs."""
    path = folder / "manifest.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"status": "unknown"} if path.exists() else None


def identity(path: Path, size: int) -> str:
    """A content key of the file: its size and first and last IDENTITY_BYTES."""
    h = hashlib.sha1(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(IDENTITY_BYTES))
        if size > IDENTITY_BYTES:
            fh.seek(max(IDENTITY_BYTES, size - IDENTITY_BYTES))
            h.update(fh.read(IDENTITY_BYTES))
    return h.hexdigest()


def _open_by_rotation(entries: dict[str, os.stat_result]) -> set[str]:
    """The file each rotation group is still writing: dumpcap's highest index, tcpdump's newest file.
    Files outside a rotation (one file per interface, scapy) are written until the agent stops."""
    groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
    writing = set()
    for name, st in entries.items():
        m = DUMPCAP_RING.match(name)
        if m:
            groups.setdefault(("dumpcap", m["group"]), []).append((int(m["index"]), name))
            continue
        m = TCPDUMP_RING.match(name)
        if m:
            groups.setdefault(("tcpdump", m["group"]), []).append((st.st_mtime_ns, name))
            continue
        writing.add(name)
    for members in groups.values():
        writing.add(max(members)[1])
    return writing


class Scanner:
    """Finds the closed capture files below the watched folders.

    A folder with the agent's manifest.json: while the agent runs, every rotated file but the one
    each rotation is writing is closed; once the manifest says the agent stopped, all are. A folder
    without a manifest (collected files copied in): a file is closed once its size and time have not
    changed for ``settle`` seconds (0: files arrive whole, renamed into place).
    """

    def __init__(self, roots: list[Path], settle: float):
        self.roots, self.settle = roots, settle
        self._first_seen: dict[str, tuple[int, int, float]] = {}   # path -> (size, mtime_ns, since)
        self._keys: dict[tuple[str, int, int, int], str] = {}     # (path, inode, size, mtime_ns) -> key
        self.present: dict[str, Candidate] = {}                    # every file of the last scan, by key

    def folders(self):
        for root in self.roots:
            if root.is_file():
                yield root.parent, [root.name]
                continue
            for folder, dirs, names in os.walk(root):
                dirs.sort()
                yield Path(folder), sorted(n for n in names if _is_capture(n))

    def closed(self, final: bool = False) -> list[Candidate]:
        """The closed files, oldest first (``final``: the collection is complete, settle time waived).
        ``present`` is then every capture file found, closed or not, by identity key."""
        now = time.monotonic()
        found: list[tuple[int, str, Candidate]] = []
        present: dict[str, Candidate] = {}
        alive_paths = set()
        for folder, names in self.folders():
            entries = {}
            for name in names:
                try:
                    entries[name] = (folder / name).stat()
                except OSError:    # rotated away meanwhile
                    continue
            if not entries:
                continue
            alive_paths.update(str(folder / n) for n in entries)
            manifest = read_manifest(folder)
            if manifest is not None and manifest.get("status") not in AGENT_DONE:
                writing = _open_by_rotation(entries)
                ready = {n for n in entries if n not in writing}
            elif manifest is not None or final or self.settle <= 0:
                ready = set(entries)
            else:
                ready = {n for n in entries if self._settled(str(folder / n), entries[n], now)}
            for name, st in entries.items():
                path = folder / name
                try:
                    c = Candidate(path, self._key(path, st), st.st_size, st.st_mtime_ns)
                except OSError:
                    continue
                present[c.key] = c
                if name in ready:
                    found.append((st.st_mtime_ns, str(path), c))
        # forget what vanished (ring files deleted), so days of rotation keep these maps small
        self._first_seen = {p: v for p, v in self._first_seen.items() if p in alive_paths}
        self._keys = {k: v for k, v in self._keys.items() if k[0] in alive_paths}
        self.present = present
        return [c for _, _, c in sorted(found, key=lambda t: (t[0], t[1]))]

    def _settled(self, path: str, st: os.stat_result, now: float) -> bool:
        seen = self._first_seen.get(path)
        if seen is None or seen[:2] != (st.st_size, st.st_mtime_ns):
            self._first_seen[path] = (st.st_size, st.st_mtime_ns, now)
            return False
        return now - seen[2] >= self.settle

    def _key(self, path: Path, st: os.stat_result) -> str:
        cache = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        key = self._keys.get(cache)
        if key is None:
            key = self._keys[cache] = identity(path, st.st_size)
        return key


def unchanged(c: Candidate) -> bool:
    """The file is still what was found (a ring that wrapped meanwhile rewrites it)."""
    try:
        st = c.path.stat()
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (c.size, c.mtime_ns)


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _folder_stats(folder: Path) -> dict | None:
    """One agent folder's counts: its manifest's once the agent stopped, else the statistics file the agent
    rewrites while it runs (capture/agent.py ``stats.json``); None when neither has counts."""
    m = read_manifest(folder)
    if m and (m.get("packets_dropped") is not None or m.get("packets_captured") is not None):
        return {"host": str(m.get("host") or folder.name), "captured": m.get("packets_captured"),
                "dropped": m.get("packets_dropped"), "at": float(m.get("stop_ts") or 0)}
    s = _read_json(folder / AGENT_STATS)
    if s and (s.get("packets_dropped") is not None or s.get("packets_captured") is not None):
        return {"host": str(s.get("host") or (m or {}).get("host") or folder.name),
                "captured": s.get("packets_captured"), "dropped": s.get("packets_dropped"),
                "at": float(s.get("ts") or 0)}
    return None


def agent_stats(roots: list[Path]) -> dict[str, dict]:
    """host -> packets captured and dropped: of a running agent, its latest statistics file; of an agent that
    stopped, its manifest's final counts; the newest folder of each host wins."""
    out: dict[str, dict] = {}
    for root in roots:
        folders = ([root.parent] if root.is_file()
                   else [Path(f) for f, _, names in os.walk(root) if "manifest.json" in names or AGENT_STATS in names])
        for folder in folders:
            got = _folder_stats(folder)
            if got is None:
                continue
            host = got.pop("host")
            if host not in out or got["at"] >= out[host]["at"]:
                out[host] = got
    return out

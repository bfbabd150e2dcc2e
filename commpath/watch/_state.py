"""The watch's small state file: files already counted, running totals, high findings already announced."""

from __future__ import annotations

import json
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

from ..errors import InputError

SCHEMA = "commpath.watch-state/v1"
#: Files remembered at most (the newest), whatever the folders hold.
MAX_FILES = 20000
#: High findings remembered by fingerprint, for "new" to mean new since the watch began.
MAX_FINGERPRINTS = 20000


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` so that a reader (or a crash) sees the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class State:
    """What a restarted watch needs so that no file is counted twice."""

    def __init__(self, path: Path):
        self.path = path
        self.files: OrderedDict[str, dict] = OrderedDict()     # identity key -> {"path", "outcome", "flows"}
        self.flows_total: dict[str, int] = {}                  # path id -> flows counted
        self.files_total: dict[str, int] = {}                  # outcome -> files
        self.fingerprints: OrderedDict[str, None] = OrderedDict()
        self.window: list[dict] = []                            # [{"key", "path"}] of the rolling window

    @classmethod
    def load(cls, path: Path) -> "State":
        state = cls(path)
        if not path.exists():
            return state
        try:
            data = json.loads(path.read_text())
            if data.get("schema") != SCHEMA:
                raise ValueError(f"not a {SCHEMA} file")
            state.files = OrderedDict((str(k), dict(v)) for k, v in data["files"])
            state.flows_total = {str(k): int(v) for k, v in data["flows_total"].items()}
            state.files_total = {str(k): int(v) for k, v in data["files_total"].items()}
            state.fingerprints = OrderedDict.fromkeys(str(f) for f in data["fingerprints"])
            state.window = [dict(w) for w in data["window"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(path, f"unreadable watch state ({exc}); remove it to start afresh") from None
        return state

    def seen(self, key: str) -> bool:
        return key in self.files

    def count_file(self, key: str, path: str, outcome: str, flows_per_path: dict[str, int]) -> None:
        self.files[key] = {"path": path, "outcome": outcome, "flows": int(sum(flows_per_path.values()))}
        self.files.move_to_end(key)
        while len(self.files) > MAX_FILES:
            self.files.popitem(last=False)
        self.files_total[outcome] = self.files_total.get(outcome, 0) + 1
        for p, n in flows_per_path.items():
            self.flows_total[p] = self.flows_total.get(p, 0) + int(n)

    def forget_absent(self, present: set[str]) -> None:
        """Forget the files no longer in the watched folders (a ring deleted them): they cannot come back to be
        counted twice, and the state stays the size of the ring over days. A renamed file keeps its key."""
        gone = [k for k in self.files if k not in present]
        for k in gone:
            del self.files[k]

    def new_fingerprint(self, fp: str) -> bool:
        """True the first time ``fp`` is seen (it is remembered from then on)."""
        if fp in self.fingerprints:
            return False
        self.fingerprints[fp] = None
        while len(self.fingerprints) > MAX_FINGERPRINTS:
            self.fingerprints.popitem(last=False)
        return True

    def save(self) -> None:
        data = {"schema": SCHEMA, "files": list(self.files.items()), "flows_total": self.flows_total,
                "files_total": self.files_total, "fingerprints": list(self.fingerprints), "window": self.window}
        write_atomic(self.path, (json.dumps(data, separators=(",", ":")) + "\n").encode())

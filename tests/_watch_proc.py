"""Test helper: a `commpath watch` process whose output lines are waited on, and its /metrics scraped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

#: The longest a test waits for the watch to show something (a loaded 2-core CI machine).
WAIT = 180.0


class WatchProcess:
    """``commpath watch ARGS --listen 127.0.0.1:0``; stdout (JSON lines) and stderr kept line by line."""

    def __init__(self, *args: str, cwd: Path | None = None):
        cmd = [sys.executable, "-m", "commpath", "watch", *args, "--listen", "127.0.0.1:0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(s, into), daemon=True)
                         for s, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()
        line = self.wait_err(lambda ln: "metrics on http://" in ln)
        self.url = line.split("metrics on ", 1)[1].strip()

    def _read(self, stream, into: list[str]) -> None:
        for line in stream:
            with self._changed:
                into.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_err(self, pred, timeout: float = WAIT, start: int = 0) -> str:
        """The first stderr line from index ``start`` on that ``pred`` accepts (waits for it to be written)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for ln in self.err[start:]:
                    if pred(ln):
                        return ln
                if self.proc.poll() is not None and all(not t.is_alive() for t in self._readers):
                    raise AssertionError(f"watch exited ({self.proc.returncode}):\n" + "\n".join(self.err))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("watch never said it:\n" + "\n".join(self.err))
                self._changed.wait(min(left, 1.0))

    def scrape(self) -> dict[tuple[str, tuple], float]:
        """Every sample of /metrics: (name, sorted label pairs) -> value."""
        with urllib.request.urlopen(self.url, timeout=30) as resp:
            text = resp.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        for t in self._readers:
            t.join(10)
        return code


def samples(scraped: dict, name: str) -> dict[tuple, float]:
    """label pairs -> value of one metric's samples."""
    return {labels: v for (n, labels), v in scraped.items() if n == name}

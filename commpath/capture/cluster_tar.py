"""A host's tar stream from an exec, extracted as it arrives: bounded memory, only that host's regular files."""

from __future__ import annotations

import tarfile
import threading
from pathlib import Path

from ..errors import CommpathError


class TarPipe:
    """Bytes written by the exec stream, read by a thread that extracts the tar as it arrives (bounded memory)."""

    def __init__(self, max_buffered: int = 8 << 20):
        self._chunks: list[bytes] = []
        self._cond = threading.Condition()
        self._closed = False          # the writer is done
        self._finished = False        # the reader is done
        self._buffered, self._max = 0, max_buffered
        self.bytes, self.names, self.error = 0, [], None

    def write(self, data: bytes) -> int:
        if not data:
            return 0                  # an empty chunk would read as the end of the stream
        with self._cond:
            while self._buffered > self._max and not self._closed and not self._finished:
                self._cond.wait(1.0)
            if self._finished:
                self.bytes += len(data)
                return len(data)      # the archive ended (padding follows it) or was refused: dropped
            self._chunks.append(bytes(data))
            self._buffered += len(data)
            self.bytes += len(data)
            self._cond.notify_all()
        return len(data)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def read(self, n: int = -1) -> bytes:
        with self._cond:
            while not self._chunks and not self._closed:
                self._cond.wait(1.0)
            if not self._chunks:
                return b""
            data = self._chunks.pop(0)
            if 0 <= n < len(data):
                self._chunks.insert(0, data[n:])
                data = data[:n]
            self._buffered -= len(data)
            self._cond.notify_all()
            return data

    def extract(self, out: Path, node: str) -> None:
        """Only regular files under ``<node>/``, each checked by tarfile's ``data`` filter."""
        try:
            with tarfile.open(fileobj=self, mode="r|") as tar:
                for member in tar:
                    parts = Path(member.name).parts
                    if not member.isfile() or len(parts) != 2 or parts[0] != node:
                        raise CommpathError(f"unexpected entry {member.name!r} in {node}'s archive")
                    tar.extract(member, out, filter="data")
                    self.names.append(member.name)
        except (tarfile.TarError, CommpathError, OSError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._cond:              # let the writer finish: what still comes is dropped
                self._finished = True
                self._chunks.clear()
                self._buffered = 0
                self._cond.notify_all()


__all__ = ["TarPipe"]

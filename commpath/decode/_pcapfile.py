"""pcap and pcapng files read in chunks: record boundaries found by compiled kernels (``_c/kernels.c``)."""

from __future__ import annotations

import mmap
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ._native import kernels, ptr
from ._packets import Headers
from ._packets import alloc as alloc_headers

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": (False, 1_000_000.0),   # little endian, microseconds
    b"\xa1\xb2\xc3\xd4": (True, 1_000_000.0),    # big endian, microseconds
    b"\x4d\x3c\xb2\xa1": (False, 1_000_000_000.0),  # little endian, nanoseconds
    b"\xa1\xb2\x3c\x4d": (True, 1_000_000_000.0),   # big endian, nanoseconds
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"

#: A record claiming more than this is corrupt (Wireshark's own maximum snaplen is 256 KiB).
MAX_RECORD = 262_144 * 4
CHUNK = 8 * 1024 * 1024
MAX_IFACES = 1024

# Error codes returned by the kernels.
OK, ERR_BAD_LENGTH, ERR_BAD_BLOCK, ERR_BAD_BOM = 0, 1, 2, 3
ERROR_TEXT = {
    ERR_BAD_LENGTH: "corrupt record length",
    ERR_BAD_BLOCK: "corrupt pcapng block",
    ERR_BAD_BOM: "corrupt pcapng section header",
}


@dataclass
class Records:
    """Packet records of one chunk, as parallel arrays (data offsets into ``buf``)."""

    buf: np.ndarray
    offset: np.ndarray       # int64 start of packet data in buf
    caplen: np.ndarray       # int32 captured length
    wirelen: np.ndarray      # int32 original length
    ts: np.ndarray           # float64 epoch seconds
    linktype: np.ndarray     # int32
    headers: Headers | None = None   # parsed by the index kernel where it can

    def __len__(self) -> int:
        return len(self.offset)


@dataclass
class ReadState:
    """What a reader learned about its file: format, link types, trouble met."""

    path: str
    format: str = ""
    linktypes: set[int] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    partial: bool = False
    bytes_read: int = 0


def index_pcap(buf, n, big, ticks, linktype, snap_max, off, caplen, wirelen, ts, lt, cols=None):
    """Find complete pcap records in ``buf[:n]``. Returns (records, consumed, error).

    With ``cols`` (the header arrays' addresses, see :func:`_packets.alloc`), each packet's headers
    are parsed as it is found."""
    out = np.zeros(3, np.int64)
    kernels().cp_index_pcap(ptr(buf, np.uint8), n, int(big), ticks, linktype, snap_max, len(off),
                            ptr(off, np.int64), ptr(caplen, np.int32), ptr(wirelen, np.int32),
                            ptr(ts, np.float64), ptr(lt, np.int32), ptr(out, np.int64), cols)
    return int(out[0]), int(out[1]), int(out[2])


def index_pcapng(buf, n, state, if_lt, if_ticks, if_offset, off, caplen, wirelen, ts, lt):
    """Find complete pcapng packet blocks in ``buf[:n]``.

    ``state`` = [big_endian, n_interfaces, seen_shb]; interface tables are updated in place.
    Returns (records, consumed, error).
    """
    out = np.zeros(3, np.int64)
    kernels().cp_index_pcapng(ptr(buf, np.uint8), n, ptr(state, np.int64), ptr(if_lt, np.int32),
                              ptr(if_ticks, np.float64), ptr(if_offset, np.int64), len(if_lt), len(off),
                              ptr(off, np.int64), ptr(caplen, np.int32), ptr(wirelen, np.int32),
                              ptr(ts, np.float64), ptr(lt, np.int32), ptr(out, np.int64))
    return int(out[0]), int(out[1]), int(out[2])


class _Gunzip:
    """gzip members decompressed with zlib: every byte before damage comes out, then the error.

    Decompression goes in bounded steps (``max_length``): a reader asking for ``n`` bytes holds
    at most ``n`` plus one step of output, whatever the compression ratio (a gzip bomb of zeros
    costs no more memory than a real capture), and rejecting a file by its first bytes costs one step.
    """

    #: compressed bytes read from the file at a time
    READ_STEP = 1 << 16
    #: decompressed bytes produced per zlib call
    OUT_STEP = 1 << 20

    def __init__(self, path: Path):
        self._fh = open(path, "rb", buffering=0)
        self._z = zlib.decompressobj(31)
        self._pending = b""          # compressed input not yet fed to zlib
        self._member_started = False  # the current zlib object has been fed (a clean end lies between members)
        self._buf = bytearray()
        self._off = 0
        self._ended = False
        self._deferred: Exception | None = None

    def _avail(self) -> int:
        return len(self._buf) - self._off

    def _more(self, want: int) -> None:
        """Decompress at most ``want`` (rounded up to a step) more bytes into the buffer."""
        budget = max(want, self.OUT_STEP)
        while budget > 0:
            if not self._pending:
                self._pending = self._z.unconsumed_tail or self._fh.read(self.READ_STEP)
                if not self._pending:
                    self._ended = True
                    if self._member_started and not self._z.eof:
                        raise EOFError("compressed file ended before the end-of-stream marker was reached")
                    return
            self._member_started = True
            out = self._z.decompress(self._pending, min(budget, self.OUT_STEP))   # may raise zlib.error
            self._pending = b""
            self._buf += out
            budget -= len(out)
            if self._z.eof:                                 # another gzip member may follow
                self._pending = self._z.unused_data
                self._z = zlib.decompressobj(31)
                self._member_started = False

    def _fill(self, n: int) -> None:
        while self._avail() < n and not self._ended:
            try:
                self._more(n - self._avail())
            except (EOFError, zlib.error) as exc:
                self._ended = True
                self._deferred = exc
        if self._deferred is not None and not self._avail():
            exc, self._deferred = self._deferred, None
            raise exc

    def read(self, n: int) -> bytes:
        self._fill(n)
        out = bytes(self._buf[self._off:self._off + n])
        self._off += len(out)
        return out

    def readinto(self, view) -> int:
        self._fill(len(view))
        n = min(len(view), self._avail())
        view[:n] = self._buf[self._off:self._off + n]
        self._off += n
        if self._off > (8 << 20):
            del self._buf[: self._off]
            self._off = 0
        return n

    def close(self) -> None:
        self._fh.close()


class _Source:
    """A file's bytes, decompressed if gzip, read in chunks."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as fh:
            head = fh.read(2)
        self.gzip = head == GZIP_MAGIC
        self._error: Exception | None = None
        self._fh = _Gunzip(path) if self.gzip else open(path, "rb", buffering=0)

    def read(self, n: int) -> bytes:
        return self._fh.read(n)

    def fileno(self) -> int:
        return self._fh.fileno()

    def readinto(self, view) -> int:
        """Fill ``view``; a damaged stream raises only once the bytes before the damage are out."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        total = 0
        while total < len(view):      # pipes may return short reads
            try:
                got = self._fh.readinto(view[total:])
            except (EOFError, zlib.error, OSError) as exc:
                if not total:
                    raise
                self._error = exc
                break
            if not got:
                break
            total += got
        return total

    def close(self) -> None:
        self._fh.close()


def _open(path: Path) -> tuple[_Source, bytes]:
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise InputError(path, exc.strerror or str(exc)) from None
    if size == 0:
        raise InputError(path, "empty file (0 bytes)")
    try:
        src = _Source(path)
        head = src.read(24)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(path, f"cannot read: {exc}") from None
    return src, head


def iter_records(path: Path, state: ReadState, chunk: int = CHUNK):
    """Yield :class:`Records` for each chunk of ``path``; problems go to ``state``."""
    src, head = _open(path)
    try:
        magic = head[:4]
        if magic in PCAP_MAGICS:
            yield from _iter_pcap(src, head, state, chunk)
        elif magic == PCAPNG_MAGIC:
            yield from _iter_pcapng(src, head, state, chunk)
        else:
            kind = "gzip-compressed data" if src.gzip else "data"
            raise InputError(path, f"not a pcap or pcapng capture ({kind} starts with 0x{head[:4].hex() or 'nothing'})")
    finally:
        src.close()


class _Window:
    """Chunks of the file as uint8 views; ``consume(n)`` moves past bytes the kernels used."""

    def __init__(self, src: _Source, state: ReadState, chunk: int, head: bytes, skip: int):
        self.state = state
        self.chunk = chunk
        self.want = chunk
        self.src = src
        self.mm = None
        if not src.gzip:
            try:
                self.mm = mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                self.mm = None
        if self.mm is not None:
            self.arr = np.frombuffer(self.mm, np.uint8)
            self.pos = skip
            self.size = len(self.arr)
            state.bytes_read = skip
        else:
            self.arr = np.empty(chunk + 65536, np.uint8)
            self.fill = len(head) - skip
            self.arr[: self.fill] = np.frombuffer(head[skip:], np.uint8)
            state.bytes_read = len(head)
        self.offset = skip         # file offset of the window's first byte
        self.stream_error = False  # a compressed stream ended early (said once, in one warning)

    def window(self) -> tuple[np.ndarray, bool]:
        """The next bytes to scan, and whether they reach the end of the file."""
        if self.mm is not None:
            stop = min(self.pos + self.want, self.size)
            self.state.bytes_read = stop
            return self.arr[self.pos:stop], stop >= self.size
        if len(self.arr) < self.want + 65536:
            bigger = np.empty(self.want + 65536, np.uint8)
            bigger[: self.fill] = self.arr[: self.fill]
            self.arr = bigger
        room = self.want - self.fill if self.want > self.fill else 0
        got = 0
        if room:
            try:
                got = self.src.readinto(memoryview(self.arr)[self.fill: self.fill + room])
            except (EOFError, zlib.error, OSError) as exc:
                self.state.warnings.append(f"compressed stream ends early ({exc}); kept what was readable")
                self.state.partial = True
                got = 0
        if self.src._error is not None:      # the bytes before the damage came out; say where it stopped
            exc, self.src._error = self.src._error, None
            self.state.warnings.append(f"compressed stream ends early ({exc}); kept what was readable")
            self.state.partial = True
            self.stream_error = True
        self.state.bytes_read += got
        self.fill += got
        return self.arr[: self.fill], got < room

    def consume(self, used: int) -> None:
        """Forget ``used`` bytes; a record longer than the window widens the next one."""
        self.offset += used
        self.want = self.chunk if used else self.want * 2
        if self.mm is not None:
            old = self.pos
            self.pos += used
            page = mmap.PAGESIZE
            lo, hi = (old // page) * page, (self.pos // page) * page
            if hi > lo and hasattr(self.mm, "madvise"):
                self.mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)    # keep the resident set bounded
            return
        rest = self.fill - used
        if rest > 0 and used > 0:
            self.arr[:rest] = self.arr[used:self.fill].copy()
        self.fill = max(rest, 0)

    def leftover(self) -> int:
        return (self.size - self.pos) if self.mm is not None else self.fill

    def close(self) -> None:
        self.arr = None
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:       # a view is still alive somewhere: the mapping goes with it
                pass


def _alloc(n: int):
    return (np.empty(n, np.int64), np.empty(n, np.int32), np.empty(n, np.int32),
            np.empty(n, np.float64), np.empty(n, np.int32))


def _iter_pcap(src: _Source, head: bytes, state: ReadState, chunk: int):
    state.format = "pcap+gzip" if src.gzip else "pcap"
    if len(head) < 24:
        raise InputError(src.path, f"pcap file header cut short ({len(head)} of 24 bytes)")
    big, ticks = PCAP_MAGICS[head[:4]]
    snaplen = int.from_bytes(head[16:20], "big" if big else "little")
    linktype = int.from_bytes(head[20:24], "big" if big else "little") & 0x0FFFFFFF
    state.linktypes.add(linktype)
    snap_max = max(MAX_RECORD, snaplen if snaplen < (1 << 30) else 0)

    def index(buf, off, caplen, wirelen, ts, lt, cols):
        return index_pcap(buf, len(buf), big, ticks, linktype, snap_max, off, caplen, wirelen, ts, lt, cols)
    yield from _scan(_Window(src, state, chunk, head, 24), state, index, 16, "record", headers=True)


def _iter_pcapng(src: _Source, head: bytes, state: ReadState, chunk: int):
    state.format = "pcapng+gzip" if src.gzip else "pcapng"
    pstate = np.zeros(3, np.int64)
    if_lt = np.full(MAX_IFACES, -1, np.int32)
    if_ticks = np.full(MAX_IFACES, 1e6, np.float64)
    if_offset = np.zeros(MAX_IFACES, np.int64)

    def index(buf, off, caplen, wirelen, ts, lt, cols):
        found = index_pcapng(buf, len(buf), pstate, if_lt, if_ticks, if_offset, off, caplen, wirelen, ts, lt)
        state.linktypes.update(int(t) for t in np.unique(if_lt[: min(int(pstate[1]), MAX_IFACES)]) if t >= 0)
        return found
    yield from _scan(_Window(src, state, chunk, head, 0), state, index, 12, "block")


def _scan(win: _Window, state: ReadState, index, min_record: int, unit: str, headers: bool = False):
    """Run an index kernel over successive windows; say where and how reading stopped early.

    With ``headers`` the kernel also parses each packet's headers (``Records.headers``). The arrays
    of a chunk's records are reused for the next chunk: consume each before asking for the next."""
    capacity = 0
    try:
        while True:
            buf, eof = win.window()
            if len(buf) == 0:
                return
            if len(buf) // min_record + 1 > capacity:    # one set of arrays for all chunks: RSS stays flat
                capacity = len(buf) // min_record + 1
                off, caplen, wirelen, ts, lt = _alloc(capacity)
                arrays, cols = alloc_headers(capacity) if headers else (None, None)
            k, used, err = index(buf, off, caplen, wirelen, ts, lt, cols)
            if k:
                parsed = Headers(**{name: a[:k] for name, a in arrays.items()}, cols=cols) if headers else None
                yield Records(buf, off[:k], caplen[:k], wirelen[:k], ts[:k], lt[:k], parsed)
            if err:
                state.warnings.append(f"{ERROR_TEXT[err]} at byte {win.offset + used}; the rest of the file was not read")
                state.partial = True
                return
            win.consume(used)
            if eof:
                if win.leftover() and win.stream_error:
                    state.warnings[-1] += f"; the {unit} it cut ({win.leftover()} bytes) was dropped"
                elif win.leftover():
                    state.warnings.append(f"file ends inside a {unit} ({win.leftover()} bytes left over); "
                                          f"the last {unit} was dropped")
                    state.partial = True
                return
    finally:
        win.close()

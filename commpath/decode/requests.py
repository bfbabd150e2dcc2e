"""HTTP requests inside chosen connections, decrypted with a TLS key log by tshark: the `requests` table.

tshark's TLS decryption and HTTP/1.x and HTTP/2 dissection are the engine; they run only on a
slice of the capture holding the chosen connections (``_slice``), never on the bulk path.
tshark is called directly with ``-T fields`` rather than through pyshark: pyshark builds a Python
object per packet from PDML and runs its own event loop, neither of which these few rows need, and
one subprocess per slice is what the cost measured in ``benchmarks/RESULTS.md`` is made of.
Secrets never reach the table: credentials are reduced to their kind, query secrets and exec
commands are redacted as each value is read."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ._distinct import per_distinct
from ._memo import BoundedMemo
from ._slice import address_words, connection_key, slice_capture
from .http import REDACTED, redact_path
from .schema import conform, empty_frame

#: One row per HTTP request seen inside a chosen connection (apiserver → kubelet, metrics → kubelet,
#: apiserver proxy), decrypted with the key log or read in clear.
REQUEST_COLUMNS: dict[str, str] = {
    "flow_id": "int64",             # the connection (flows.flow_id)
    "capture": "string",            # capture file the request was read from
    "frame": "int64",               # frame of the capture carrying the request's headers
    "response_frame": "Int64",      # frame carrying the response's headers; <NA>: no response seen
    "ts": "float64",                # epoch seconds of the request's frame
    "stream_id": "Int64",           # HTTP/2 stream id; <NA> for HTTP/1.x
    "version": "string",            # HTTP/1.0 | HTTP/1.1 | HTTP/2
    "method": "string",             # GET, POST ...
    "path": "string",               # request target; query secrets and exec commands redacted
    "authority": "string",          # :authority or Host
    "status": "Int32",              # response status; <NA> when no response was seen
    "upgrade": "string",            # protocol the request upgrades to (SPDY/3.1, websocket): exec, attach, portForward
    "auth": "string",               # credential kinds the request carried, never values: bearer, basic ...
    "encrypted": "bool",            # read from decrypted TLS (False: the connection was plain HTTP)
    "flow_path": "category",        # catalog path id of the connection (classify)
    "request_kind": "category",     # containerLogs | exec | attach | portForward | pods | metrics | stats |
                                    # proxy-node | proxy-pod | proxy-service | ... | other (cfg/requests.yaml)
    "target": "string",             # what the request names: namespace/pod[/container], or the proxy's ip:port
}

#: bounds: connections handed to tshark per run, seconds per tshark run
MAX_CONNECTIONS = 2000
TSHARK_TIMEOUT = 600
MAX_FIELD = 8192

_SEP, _AGG = "\x1e", "\x1f"
_FIELDS = ("frame.number", "frame.time_epoch", "frame.protocols", "ip.src", "ipv6.src", "tcp.srcport",
           "ip.dst", "ipv6.dst", "tcp.dstport", "http2.type", "http2.streamid", "http2.header.count",
           "http2.header.name", "http2.header.value", "http.request.method", "http.request.uri",
           "http.request.version", "http.response.code", "http.response.version", "http.host",
           "http.request_in", "http.upgrade", "http.authorization")
_DISPLAY_FILTER = "http.request || http.response || http2.type == 1"
#: query parameters of exec/run/attach whose values are commands (which may carry secrets)
_COMMAND_PARAM = re.compile(r"(?i)([?&;]command=)[^&;#]*")
#: what load_keylog accepts: a label, then the client random and the secret in hex
_KEYLOG_LINE = re.compile(r"^\S+\s+(?:[0-9a-fA-F]{2})+\s+(?:[0-9a-fA-F]{2})+$")


@dataclass
class RequestRun:
    """What one decryption run returned and what it cost."""

    requests: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    connections: int = 0             # connections asked for
    captures: int = 0                # capture files sliced
    scanned_packets: int = 0         # packets of those captures looked at by the slicer
    slice_packets: int = 0           # packets handed to tshark
    slice_bytes: int = 0             # packet bytes handed to tshark
    slice_seconds: float = 0.0       # wall time of slicing
    tshark_seconds: float = 0.0      # wall time of the tshark runs
    tshark_runs: int = 0
    reused: int = 0                  # captures whose reading was kept from an earlier run (same file and keys)
    partial: bool = False


def tshark_path() -> str | None:
    return shutil.which("tshark")


def sanitize_keylog(keylog: str | Path, out: Path) -> tuple[int, int, int | None]:
    """Copy the well-formed lines of an NSS key log to ``out``: (kept, skipped, first skipped line)."""
    kept = skipped = 0
    first_bad = None
    try:
        text = Path(keylog).read_text("ascii", errors="replace")
    except OSError as exc:
        raise InputError(keylog, f"cannot read key log: {exc.strerror or exc}") from None
    lines = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if _KEYLOG_LINE.match(line):
            lines.append(line)
            kept += 1
        else:
            skipped += 1
            first_bad = first_bad or lineno
    out.write_text("\n".join(lines) + "\n", encoding="ascii")
    return kept, skipped, first_bad


def redact_target(path: str) -> str:
    """A request target without secrets: userinfo, secret query values and exec/run commands."""
    return _COMMAND_PARAM.sub(r"\1" + REDACTED, redact_path(path))


def decrypt_requests(flows: pd.DataFrame, keylog: str | Path | None, tshark: str | None = None,
                     decode_as: dict[int, str] | None = None) -> RequestRun:
    """Requests of the TCP connections in ``flows`` (flow_id, capture, first_frame, last_frame, src_ip,
    src_port, dst_ip, dst_port; optional ``tls``: the connection is TLS; ``alpn``), read by tshark.

    ``decode_as``: responder port -> ``http`` | ``http2`` for clear-text connections on ports tshark
    does not know, ``tls-http`` for TLS connections whose application protocol no ALPN names."""
    run = RequestRun(empty_frame(REQUEST_COLUMNS))
    if flows.empty:
        return run
    tshark = tshark or tshark_path()
    if tshark is None:
        run.warnings.append("requests: tshark not found, no request was read (install tshark)")
        return run
    flows = flows.sort_values("flow_id")
    if len(flows) > MAX_CONNECTIONS:
        run.warnings.append(f"requests: {len(flows)} connections chosen, only the first {MAX_CONNECTIONS} were read")
        run.partial = True
        flows = flows.iloc[:MAX_CONNECTIONS]
    run.connections = len(flows)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="commpath-requests-") as tmp:
        work = Path(tmp)
        key_file = None
        if keylog is not None:
            key_file = work / "keylog.txt"
            kept, skipped, first_bad = sanitize_keylog(keylog, key_file)
            if skipped:
                run.warnings.append(f"{keylog}: {skipped} line(s) are not 'LABEL CLIENT_RANDOM SECRET' (first: line "
                                    f"{first_bad}) and were skipped; the other {kept} were used")
        for capture, group in flows.groupby("capture", sort=True):
            ends = sorted(zip(group["src_ip"].astype(str), group["src_port"].astype(int),
                              group["dst_ip"].astype(str), group["dst_port"].astype(int)))
            key = _memo_key(capture, ends, keylog, decode_as or {})
            read = _READS.get(key) if key is not None else None
            if read is None:
                read = _read_capture(Path(str(capture)), ends, work, tshark, key_file, decode_as or {})
                if key is not None and not read.partial:
                    _READS.remember(key, read)
                run.slice_seconds += read.slice_seconds
                run.tshark_seconds += read.tshark_seconds
                run.tshark_runs += len(read.slices)
                run.scanned_packets += read.scanned
                run.slice_packets += read.packets
                run.slice_bytes += read.bytes
            else:
                run.reused += 1
            run.captures += 1
            run.partial = run.partial or read.partial
            run.warnings.extend(f"requests: {capture}: {w}" for w in read.warnings)
            for packets, frame_map in read.slices:
                rows += _requests_of(packets, frame_map, str(capture), group)
    if rows:
        run.requests = conform(pd.DataFrame(rows), REQUEST_COLUMNS)
        run.requests = run.requests.sort_values(["capture", "frame", "stream_id"], kind="stable",
                                                na_position="first").reset_index(drop=True)
    return run


@dataclass
class _CaptureRead:
    """tshark's reading of one capture's chosen connections: per link type, its packets and frame map."""

    slices: list = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    partial: bool = False
    scanned: int = 0
    packets: int = 0
    bytes: int = 0
    slice_seconds: float = 0.0
    tshark_seconds: float = 0.0


#: readings of closed captures, kept for the next judgement of the same files (`commpath watch` judges its
#: window again as files arrive): keyed by file, size, mtime, connections, key log and decode hints
_READS = BoundedMemo(64)


def _memo_key(capture, ends, keylog, decode_as) -> tuple | None:
    try:
        st = Path(str(capture)).stat()
        kst = Path(keylog).stat() if keylog is not None else None
    except OSError:
        return None
    return (str(capture), st.st_size, st.st_mtime_ns, tuple(ends), str(keylog),
            None if kst is None else (kst.st_size, kst.st_mtime_ns), tuple(sorted(decode_as.items())))


def _read_capture(capture: Path, ends, work: Path, tshark: str, key_file: Path | None, decode_as) -> _CaptureRead:
    read = _CaptureRead()
    t0 = time.perf_counter()
    cut = slice_capture(capture, ends, work)
    read.slice_seconds = time.perf_counter() - t0
    read.scanned, read.packets, read.bytes, read.partial = cut.scanned, cut.packets, cut.bytes, cut.partial
    read.warnings.extend(cut.warnings)
    for lt, pcap in cut.files.items():
        t0 = time.perf_counter()
        packets, error = _run_tshark(tshark, pcap, key_file, decode_as)
        read.tshark_seconds += time.perf_counter() - t0
        if error:
            read.warnings.append(error)
            read.partial = True
        read.slices.append((packets, cut.frame_map(lt)))
    return read


def requests_from_http(http: pd.DataFrame, flows: pd.DataFrame) -> pd.DataFrame:
    """Request rows of clear-text connections from the decode's own HTTP table (no tshark, no key log):
    ``flows`` (flow_id, capture) names the connections; HTTP/1.x responses pair with requests in order."""
    if http is None or not len(http) or flows.empty:
        return empty_frame(REQUEST_COLUMNS)
    h = http[http["flow_id"].isin(flows["flow_id"]) & ~http["tunneled"].fillna(False).astype(bool)]
    h = h.sort_values(["flow_id", "frame"], kind="stable")
    req = h[h["direction"].astype("string") == "request"].copy()
    if req.empty:
        return empty_frame(REQUEST_COLUMNS)
    rsp = h[h["direction"].astype("string") == "response"].copy()
    req["nth"] = req.groupby("flow_id").cumcount()
    rsp["nth"] = rsp.groupby("flow_id").cumcount()
    h1 = ~req["version"].astype("string").eq("HTTP/2").fillna(False)
    paired = req.merge(rsp[["flow_id", "nth", "frame", "status"]].rename(columns={"frame": "response_frame",
                                                                                 "status": "response_status"}),
                       on=["flow_id", "nth"], how="left")
    paired.loc[~h1.to_numpy(), ["response_frame", "response_status"]] = pd.NA   # HTTP/2: no stream id to pair by
    captures = flows.drop_duplicates("flow_id").set_index("flow_id")["capture"]
    out = pd.DataFrame({
        "flow_id": paired["flow_id"].astype("int64"),
        "capture": paired["flow_id"].map(captures).astype("string"),
        "frame": paired["frame"].astype("int64"),
        "response_frame": paired["response_frame"].astype("Int64"),
        "ts": float("nan"),
        "version": paired["version"].astype("string"),
        "method": paired["method"].astype("string"),
        # a kubelet is asked the same paths over and over: 24,000 requests of a 12-host run hold a few dozen
        "path": pd.array(per_distinct(paired["path"].astype("string").fillna(""), redact_target), dtype="string"),
        "authority": paired["host"].astype("string"),
        "status": paired["response_status"].astype("Int32"),
        "auth": paired["auth"].astype("string"),
        "encrypted": False,
    })
    return conform(out, REQUEST_COLUMNS)


def _run_tshark(tshark: str, pcap: Path, keylog: Path | None, decode_as: dict[int, str]):
    """(packets as lists of field texts, an error line or None)."""
    # bodies not reassembled: a message is shown at the frame completing its headers, as decode/http.py does
    cmd = [tshark, "-n", "-r", str(pcap), "-o", "http.desegment_body:FALSE"]
    if keylog is not None:
        cmd += ["-o", f"tls.keylog_file:{keylog}"]
    for port, proto in sorted(decode_as.items()):
        if proto == "tls-http":
            cmd += ["-d", f"tls.port=={int(port)},http"]
        elif proto in ("http", "http2"):
            cmd += ["-d", f"tcp.port=={int(port)},{proto}"]
    cmd += ["-Y", _DISPLAY_FILTER, "-T", "fields", "-E", f"separator={_SEP}", "-E", f"aggregator={_AGG}",
            "-E", "occurrence=a"]
    for name in _FIELDS:
        cmd += ["-e", name]
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=TSHARK_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return [], f"tshark gave no answer within {TSHARK_TIMEOUT} s; requests not read"
    out = res.stdout.decode("utf-8", errors="replace")
    packets = [line.split(_SEP) for line in out.split("\n") if line]   # not splitlines(): it splits at \x1e too
    packets = [p for p in packets if len(p) == len(_FIELDS)]
    error = None
    if res.returncode != 0:
        msg = [ln for ln in res.stderr.decode("utf-8", "replace").splitlines()
               if ln.strip() and "dangerous" not in ln and not ln.startswith("Running as user")]
        error = f"tshark exit {res.returncode}: {(msg[-1] if msg else 'no message')[:200]}; the requests before it were kept"
    return packets, error


def _split(value: str) -> list[str]:
    return value.split(_AGG) if value else []


def _last(value: str) -> str:
    items = _split(value)
    return items[-1] if items else ""


def _auth_kind(values: list[str]) -> str | None:
    kinds = []
    for v in values:
        scheme = v.split(" ", 1)[0].lower() if v else "unknown"
        kind = scheme if scheme in ("bearer", "basic", "digest", "negotiate") else "other"
        if kind not in kinds:
            kinds.append(kind)
    return ",".join(kinds) or None


def _requests_of(packets: list[list[str]], frame_map: np.ndarray, capture: str, flows: pd.DataFrame) -> list[dict]:
    """Request rows of one slice: each packet's HTTP/1.x messages and HTTP/2 HEADERS frames, paired
    with their responses and placed on their connection by its ends and frame range."""
    col = {name: i for i, name in enumerate(_FIELDS)}
    flow_keys = connection_key(*_words(flows["src_ip"]), flows["src_port"].to_numpy(np.int64),
                               *_words(flows["dst_ip"]), flows["dst_port"].to_numpy(np.int64))
    by_key: dict[int, list[tuple[int, int, int, str, int]]] = {}
    for key, fid, first, last, src, sport in zip(flow_keys.tolist(), flows["flow_id"].tolist(),
                                                 flows["first_frame"].tolist(), flows["last_frame"].tolist(),
                                                 flows["src_ip"].astype(str).tolist(), flows["src_port"].tolist()):
        by_key.setdefault(key, []).append((int(first), int(last), int(fid), src, int(sport)))
    requests: list[dict] = []
    open_h2: dict[tuple[int, int], dict] = {}      # (flow, stream) -> request row awaiting its response
    by_slice_frame: dict[int, dict] = {}           # HTTP/1 request row by its frame in the slice
    for p in packets:
        try:
            slice_frame = int(p[col["frame.number"]])
            frame = int(frame_map[slice_frame - 1])
            src = _last(p[col["ip.src"]]) or _last(p[col["ipv6.src"]])
            dst = _last(p[col["ip.dst"]]) or _last(p[col["ipv6.dst"]])
            sport, dport = int(_last(p[col["tcp.srcport"]])), int(_last(p[col["tcp.dstport"]]))
            ts = float(p[col["frame.time_epoch"]] or "nan")
        except (ValueError, IndexError):
            continue
        flow = _flow_of(by_key, src, sport, dst, dport, frame)
        if flow is None:
            continue
        fid, fsrc, fsport = flow
        outbound = src == fsrc and sport == fsport
        base = {"flow_id": fid, "capture": capture, "frame": frame, "ts": ts,
                "encrypted": ":tls" in p[col["frame.protocols"]] or ":ssl" in p[col["frame.protocols"]]}
        _h2_messages(p, col, base, outbound, requests, open_h2)
        _h1_messages(p, col, base, outbound, slice_frame, frame, requests, by_slice_frame)
    return requests


def _words(ips: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.array([address_words(ip) for ip in ips.astype(str)], dtype=np.uint64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def _flow_of(by_key, src: str, sport: int, dst: str, dport: int, frame: int):
    try:
        a, b = address_words(src), address_words(dst)
    except ValueError:
        return None
    key = int(connection_key(np.uint64(a[0]), np.uint64(a[1]), np.int64(sport),
                             np.uint64(b[0]), np.uint64(b[1]), np.int64(dport)))
    for first, last, fid, fsrc, fsport in by_key.get(key, ()):
        if first <= frame <= last and {(src, sport), (dst, dport)} >= {(fsrc, fsport)}:
            return fid, fsrc, fsport
    return None


def _h2_messages(p, col, base, outbound, requests, open_h2) -> None:
    types = _split(p[col["http2.type"]])
    if "1" not in types:
        return
    streams = _split(p[col["http2.streamid"]])
    counts = [int(c) for c in _split(p[col["http2.header.count"]]) if c.isdigit()]
    names, values = _split(p[col["http2.header.name"]]), _split(p[col["http2.header.value"]])
    headers_streams = [s for t, s in zip(types, streams) if t == "1"]
    sizes = _block_sizes(counts, names)
    if len(sizes) != len(headers_streams) or len(names) != len(values):
        return      # a header block tshark could not decompress: nothing trustworthy to align
    pos = 0
    for stream, count in zip(headers_streams, sizes):
        block = list(zip(names[pos:pos + count], values[pos:pos + count]))
        pos += count
        h = {}
        for n, v in block:
            h.setdefault(n.lower(), v[:MAX_FIELD])
        key = (base["flow_id"], int(stream))
        if outbound and ":method" in h:
            row = {**base, "stream_id": int(stream), "version": "HTTP/2", "method": h[":method"],
                   "path": redact_target(h.get(":path", "")), "authority": h.get(":authority"),
                   "upgrade": h.get(":protocol"),
                   "auth": _auth_kind([v for n, v in block if n.lower() == "authorization"])}
            requests.append(row)
            open_h2[key] = row
        elif not outbound and ":status" in h and key in open_h2:
            row = open_h2.pop(key)
            row["status"] = int(h[":status"]) if h[":status"].isdigit() else None
            row["response_frame"] = base["frame"]


def _block_sizes(counts: list[int], names: list[str]) -> list[int]:
    """Named header fields of each HEADERS frame of a packet. tshark's count includes dynamic table size
    updates, which have no name and may open any header block; when several blocks share a packet
    with such updates, a block is told by its pseudo-header fields coming first."""
    updates = sum(counts) - len(names)
    if updates == 0 or len(counts) <= 1:
        return counts if updates == 0 else [len(names)] * len(counts)
    if updates < 0:
        return []
    sizes: list[int] = []
    previous_pseudo = False
    for i, name in enumerate(names):
        pseudo = name.startswith(":")
        if i == 0 or (pseudo and not previous_pseudo):
            sizes.append(0)
        sizes[-1] += 1
        previous_pseudo = pseudo
    return sizes


def _h1_messages(p, col, base, outbound, slice_frame, frame, requests, by_slice_frame) -> None:
    methods = _split(p[col["http.request.method"]])
    if outbound and methods:
        uris = _split(p[col["http.request.uri"]])
        versions = _split(p[col["http.request.version"]])
        hosts = _split(p[col["http.host"]])
        upgrades = _split(p[col["http.upgrade"]])
        auth = _auth_kind(_split(p[col["http.authorization"]]))
        for i, method in enumerate(methods):
            row = {**base, "stream_id": None, "version": versions[i] if i < len(versions) else None,
                   "method": method, "path": redact_target(uris[i][:MAX_FIELD]) if i < len(uris) else None,
                   "authority": hosts[i] if i < len(hosts) else None,
                   "upgrade": upgrades[i] if i < len(upgrades) else None, "auth": auth}
            requests.append(row)
            by_slice_frame.setdefault(slice_frame, row)
    codes = _split(p[col["http.response.code"]])
    if not outbound and codes:
        for code, request_in in zip(codes, _split(p[col["http.request_in"]]) or [""] * len(codes)):
            row = by_slice_frame.get(int(request_in)) if request_in.isdigit() else None
            if row is not None and row.get("status") is None:
                row["status"] = int(code) if code.isdigit() else None
                row["response_frame"] = frame


__all__ = ["MAX_CONNECTIONS", "REQUEST_COLUMNS", "RequestRun", "decrypt_requests", "redact_target",
           "requests_from_http", "sanitize_keylog", "tshark_path"]

"""HTTP/1.x and h2c in clear: request and status lines, CONNECT targets; secrets redacted at parse time."""

from __future__ import annotations

import re
from bisect import bisect_right
from operator import itemgetter

from ._http2 import MAX_H2_FRAMES, TolerantHpack, h2_rows
from ._http_common import (
    MAX_PATH, REDACTED, SECRET_PARAMS, USERINFO, HttpResult, auth_kinds, redact_path, sub_stream,
)
from ._memo import BoundedMemo
from .schema import HTTP_COLUMNS
from .streams import FlowStreams, Stream

__all__ = [
    "H2_PREFACE", "MAX_CHUNKS", "MAX_H2_FRAMES", "MAX_HEADER_BYTES", "MAX_MESSAGES", "MAX_PATH", "REDACTED",
    "REQUEST_LINE", "SECRET_PARAMS", "STATUS_LINE", "USERINFO", "HttpResult", "TolerantHpack", "http1_rows",
    "parse_http", "redact_path", "sub_stream",
]

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_MESSAGES = 64           # per direction
MAX_HEADER_BYTES = 16384

REQUEST_LINE = re.compile(rb"([A-Z][A-Z0-9_-]{0,19}) ([^ \r\n]{1,8192}) (HTTP/\d\.\d)$")
STATUS_LINE = re.compile(rb"(HTTP/\d\.\d) (\d{3})(?: [^\r\n]*)?$")

#: Only these headers are looked at; all others (and their values) are never decoded.
_WANTED_HEADERS = re.compile(
    rb"(?im)^(host|content-length|transfer-encoding|upgrade|authorization|proxy-authorization|cookie|"
    rb"set-cookie|x-auth-token|x-api-key|x-csrf-token|x-amz-security-token)[ \t]*:[ \t]*([^\r\n]*)")


def _headers(block: bytes) -> list[tuple[str, str]]:
    out = []
    for m in _WANTED_HEADERS.finditer(block):
        out.append((m.group(1).decode("latin-1"), m.group(2).strip().decode("latin-1")))
        if len(out) >= 200:
            break
    return out


#: A chunk-size line of hex digits only (same size and line end as the general parse below finds).
_PLAIN_CHUNK = re.compile(rb"([0-9A-Fa-f]{1,16})\r\n")


#: Chunk lines read per message at most.
MAX_CHUNKS = 10000
_walker: list = []


def _chunk_walker():
    """cp_http_chunks of the compiled kernels (_c/http_chunks.c), or None without them."""
    if not _walker:
        fn = None
        try:
            import ctypes
            from ._native import lib
            fn = lib().cp_http_chunks
            fn.argtypes = [ctypes.c_char_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64]
            fn.restype = ctypes.c_int64
        except Exception:          # noqa: BLE001 - no compiler or an older library: Python reads every line
            fn = None
        _walker.append(fn)
    return _walker[0]


def _chunked_end(data: bytes, pos: int) -> int | None:
    """Where a chunked body starting at ``pos`` ends (after its trailers); None when cut or malformed."""
    budget = MAX_CHUNKS
    walk = _chunk_walker() if type(data) is bytes else None
    if walk is not None:                        # plain chunk lines in C, the rest below
        got = walk(data, len(data), pos, budget)
        state, used, pos = got & 3, (got >> 2) & 0xFFFF, got >> 18
        if state == 2:                          # cut: the body runs past the captured bytes
            return None
        if state == 1:                          # pos: the line end of the last ("0") chunk
            end = data.find(b"\r\n\r\n", pos - 2)   # trailers
            return end + 4 if end >= 0 else None
        budget -= used
    plain = _PLAIN_CHUNK.match
    for _ in range(budget):
        m = plain(data, pos) if pos >= 0 else None
        if m is not None:                       # the usual "<hex>\r\n" chunk line
            nl = m.end() - 2
            size = int(m.group(1), 16)
        else:
            nl = data.find(b"\r\n", pos, pos + 64)
            if nl < 0:
                return None
            try:
                size = int(data[pos:nl].split(b";")[0].strip(), 16)
            except ValueError:
                return None
        pos = nl + 2 + size + 2
        if size == 0:
            end = data.find(b"\r\n\r\n", nl - 2)   # trailers
            return end + 4 if end >= 0 else None
        if pos > len(data):
            return None
    return None


def _body_end(data: bytes, pos: int, h: dict[str, str], is_response: bool,
              status: int | None, request_method: str | None) -> int | None:
    """Where the message body ends (None: unknown, e.g. read-until-close or cut).

    ``h``: the message's headers by lower-case name (the last of repeated ones)."""
    if is_response and (status is not None and (status < 200 or status in (204, 304))
                        or request_method == "HEAD"):
        return pos
    if "chunked" in h.get("transfer-encoding", "").lower():
        return _chunked_end(data, pos)
    if "content-length" in h:
        try:
            return pos + int(h["content-length"])
        except ValueError:
            return None
    return pos if not is_response else None


def _parse_http1(stream: Stream, flow_id: int, is_response: bool, res: HttpResult,
                 methods: list[str]) -> tuple[list[dict], int | None, str | None]:
    """Messages of one direction; returns rows, the offset after a CONNECT/101 head, and its kind."""
    found, tail, kind = _messages(stream, is_response, res, methods)
    rows: list[dict] = []
    for frame, parsed in found:
        row = parsed[0].copy()
        row["flow_id"] = flow_id
        row["frame"] = frame
        rows.append(row)
    return rows, tail, kind


def _messages(stream: Stream, is_response: bool, res: HttpResult,
              methods: list[str]) -> tuple[list[tuple], int | None, str | None]:
    """(frame, parsed head) of each message of one direction, the offset after a CONNECT/101 head, and its kind."""
    data = stream.data
    if type(data) is not bytes:
        data = bytes(data)                          # heads are looked up by their bytes
    n = len(data)
    found: list[tuple] = []
    pos = 0
    heads = _HEADS_RESPONSE if is_response else _HEADS_REQUEST
    offsets, frames = stream.offsets, stream.frames      # Stream.frame_at, inline
    for _ in range(MAX_MESSAGES):
        if pos >= n:
            break
        end = data.find(b"\r\n\r\n", pos, pos + MAX_HEADER_BYTES)
        sep = 4
        if end < 0:
            end = data.find(b"\n\n", pos, pos + MAX_HEADER_BYTES)
            sep = 2
        if end < 0:
            if n - pos >= MAX_HEADER_BYTES:
                res.partial, res.parse_error = True, f"header block at offset {pos} longer than {MAX_HEADER_BYTES}"
            elif not (stream.limited or stream.gap) and pos < n:
                res.partial, res.parse_error = True, f"header block at offset {pos} incomplete"
            else:
                res.partial = True
                res.parse_error = res.parse_error or (
                    f"header block at offset {pos} cut by the capture window ({n} bytes kept per direction)"
                    if stream.limited else f"header block at offset {pos} cut by a gap in the capture")
            break
        head = data[pos:end]
        parsed = heads.get(head)
        if parsed is None:
            parsed = _parse_head(head, is_response)
            if parsed is None:
                kind = "response: not a status line" if is_response else "request: not a request line"
                res.partial, res.parse_error = True, f"{kind} at offset {pos}"
                break
            if parsed[0]["auth"] is None and len(head) <= CACHED_HEAD_BYTES:
                heads.remember(head, parsed)          # heads with credentials are never kept
        _, method, status, upgrade_h2c, (chunked, length), _ = parsed
        i = bisect_right(offsets, pos) - 1 if offsets else -1
        body_at = end + sep
        if is_response:
            method = methods[len(found)] if len(found) < len(methods) else None
            found.append((frames[i] if i >= 0 else None, parsed))
            if status == 101 and upgrade_h2c:
                return found, body_at, "h2c"
            if method == "CONNECT" and 200 <= status < 300:
                return found, body_at, "connect"
            # _body_end, with the head's part decided once
            if status < 200 or status == 204 or status == 304 or method == "HEAD":
                nxt = body_at
            elif chunked:
                nxt = _chunked_end(data, body_at)
            else:
                nxt = body_at + length if type(length) is int else None
        else:
            methods.append(method)
            found.append((frames[i] if i >= 0 else None, parsed))
            if method == "CONNECT":
                return found, body_at, "connect"
            if chunked:
                nxt = _chunked_end(data, body_at)
            elif length is None:
                nxt = body_at
            else:
                nxt = body_at + length if type(length) is int else None
        if nxt is None or nxt > n:
            break
        pos = nxt
    return found, None, None


def http1_rows(flow: FlowStreams) -> list[tuple] | None:
    """Rows (tuples in HTTP_COLUMNS order) of a plain HTTP/1 connection, as :func:`parse_http` gives them;
    None for anything else (HTTP/2, CONNECT, an h2c upgrade, nothing decodable): ask parse_http."""
    fwd, rev = flow.fwd, flow.rev
    if fwd.data.startswith(H2_PREFACE):
        return None
    res = HttpResult()
    methods: list[str] = []
    try:
        req, _, req_kind = _messages(fwd, False, res, methods)
        resp, _, resp_kind = _messages(rev, True, res, methods)
    except Exception:             # noqa: BLE001 - parse_http reports it
        return None
    if req_kind is not None or resp_kind is not None:
        return None
    found = req + resp
    if not found:
        return None if res.partial else []
    if _every_frame_known(fwd) and _every_frame_known(rev):
        found.sort(key=_FIRST)
    else:
        found.sort(key=lambda m: (m[0] is None, m[0] or 0))
    flow_id, tail = flow.flow_id, (res.partial, res.parse_error)
    return [(flow_id, frame) + parsed[5] + tail for frame, parsed in found]


def _parse_head(head: bytes, is_response: bool) -> tuple | None:
    """One message head: (row without flow_id and frame, method, status, upgrade to h2c, (chunked body,
    Content-Length), the row's values from direction to tunneled); None when the start line does not match."""
    first, _, rest = head.partition(b"\n")
    first = first.rstrip(b"\r")
    m = (STATUS_LINE if is_response else REQUEST_LINE).match(first)
    if not m:
        return None
    headers = _headers(rest)
    headers_lower = {k.lower(): v for k, v in headers}
    h2c = "h2c" in headers_lower.get("upgrade", "").lower()
    # how _body_end reads the body: chunked, or the Content-Length (None: absent, False: not a number)
    chunked = "chunked" in headers_lower.get("transfer-encoding", "").lower()
    length = None
    if not chunked and "content-length" in headers_lower:
        try:
            length = int(headers_lower["content-length"])
        except ValueError:
            length = False
    h = (chunked, length)
    if is_response:
        status = int(m.group(2))
        row = {"h2c": False, "auth": auth_kinds(headers), "direction": "response", "version": m.group(1).decode(),
               "status": status}
        return row, None, status, h2c, h, tuple(map(row.get, _ROW_MIDDLE))
    method, target, version = m.group(1, 2, 3)
    method, target, version = method.decode("latin-1"), target.decode("latin-1"), version.decode("latin-1")
    row = {"h2c": False, "auth": auth_kinds(headers), "direction": "request", "method": method,
           "version": version, "host": headers_lower.get("host")}
    if method == "CONNECT":
        row["connect_target"] = target[:MAX_PATH]
        row["path"] = None
    else:
        row["path"] = redact_path(target)
        if h2c:
            row["h2c"] = True
    return row, method, None, h2c, h, tuple(map(row.get, _ROW_MIDDLE))


#: Message heads seen before (clients and servers repeat theirs): parsed once. Heads that carry
#: credentials (any ``auth`` kind) are not kept, nor heads longer than CACHED_HEAD_BYTES.
CACHED_HEAD_BYTES = 2048
_HEADS_REQUEST: BoundedMemo = BoundedMemo(2048)
_HEADS_RESPONSE: BoundedMemo = BoundedMemo(2048)


def parse_http(flow: FlowStreams, h2: bool = False) -> HttpResult:
    """Requests and responses in clear at the start of a connection; never raises."""
    res = HttpResult()
    try:
        _parse(flow, h2, res)
    except Exception as exc:      # noqa: BLE001 - defensive: the flow still gets a result
        res.partial, res.parse_error = True, f"unexpected structure: {type(exc).__name__}: {exc}"
    return res


def _parse(flow: FlowStreams, h2: bool, res: HttpResult) -> None:
    fwd, rev = flow.fwd, flow.rev
    if fwd.data.startswith(H2_PREFACE) or h2:
        start = len(H2_PREFACE) if fwd.data.startswith(H2_PREFACE) else 0
        res.rows = h2_rows(fwd, flow.flow_id, start, False, res) + h2_rows(rev, flow.flow_id, 0, True, res)
        res.rows.sort(key=lambda r: (r["frame"] is None, r["frame"] or 0))
        if not res.rows and res.partial:
            res.rows = [{"flow_id": flow.flow_id, "frame": fwd.frame_at(0) or rev.frame_at(0),
                         "version": "HTTP/2", "h2c": True, "direction": None}]
        return
    methods: list[str] = []
    req, req_tail, req_kind = _parse_http1(fwd, flow.flow_id, False, res, methods)
    resp, resp_tail, resp_kind = _parse_http1(rev, flow.flow_id, True, res, methods)
    rows = req + resp
    if resp_kind == "h2c" and req:
        # RFC 7540 3.2: the server answers the upgraded request as stream 1 in HTTP/2
        cli = sub_stream(fwd, _after_request(fwd.data))
        srv = sub_stream(rev, resp_tail)
        start = len(H2_PREFACE) if cli.data.startswith(H2_PREFACE) else 0
        rows += h2_rows(cli, flow.flow_id, start, False, res) + h2_rows(srv, flow.flow_id, 0, True, res)
    elif req_kind == "connect" and resp_kind == "connect":
        res.tunnel = FlowStreams(flow.flow_id, sub_stream(fwd, _skip_crlf(fwd.data, req_tail)),
                                 sub_stream(rev, _skip_crlf(rev.data, resp_tail)))
    if resp_kind != "h2c" and _every_frame_known(fwd) and _every_frame_known(rev):
        rows.sort(key=_FRAME)                           # the same order as below: no frame is None
    else:
        rows.sort(key=lambda r: (r["frame"] is None, r["frame"] or 0))
    res.rows = rows
    if not rows and res.partial:
        # nothing decodable: one marker row keeps the flow and the reason in the table
        res.rows = [{"flow_id": flow.flow_id, "frame": fwd.frame_at(0) or rev.frame_at(0),
                     "h2c": False, "direction": None}]


_FRAME = itemgetter("frame")
_FIRST = itemgetter(0)
#: HTTP_COLUMNS between (flow_id, frame) and (partial, parse_error).
_ROW_MIDDLE = list(HTTP_COLUMNS)[2:-2]
assert list(HTTP_COLUMNS)[:2] == ["flow_id", "frame"] and list(HTTP_COLUMNS)[-2:] == ["partial", "parse_error"]


def _every_frame_known(stream: Stream) -> bool:
    """Every offset of ``stream`` maps to a frame (Stream.frame_at never answers None)."""
    return bool(stream.offsets) and stream.offsets[0] <= 0


def _skip_crlf(data: bytes, pos: int) -> int:
    """Stray line ends after a CONNECT head (seen in the wild) are not tunnel bytes."""
    while pos < len(data) and pos < 1 << 10 and data[pos] in (0x0A, 0x0D):
        pos += 1
    return pos


def _after_request(data: bytes) -> int:
    end = data.find(b"\r\n\r\n")
    return end + 4 if end >= 0 else len(data)

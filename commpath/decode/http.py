"""HTTP/1.x and h2c in clear: request and status lines, CONNECT targets; secrets redacted at parse time."""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field
from operator import itemgetter

from ._memo import BoundedMemo
from .schema import HTTP_COLUMNS
from .streams import FlowStreams, Stream

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_MESSAGES = 64           # per direction
MAX_HEADER_BYTES = 16384
MAX_H2_FRAMES = 512
MAX_PATH = 2048

REQUEST_LINE = re.compile(rb"([A-Z][A-Z0-9_-]{0,19}) ([^ \r\n]{1,8192}) (HTTP/\d\.\d)$")
STATUS_LINE = re.compile(rb"(HTTP/\d\.\d) (\d{3})(?: [^\r\n]*)?$")
#: Query parameters whose values are secrets.
SECRET_PARAMS = re.compile(
    r"(?i)([?&;](?:access_token|token|id_token|refresh_token|password|passwd|secret|api_key|apikey|"
    r"key|sig|signature|auth|authorization|code|x-amz-signature|x-amz-credential|x-amz-security-token)=)"
    r"[^&;#]*")
USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")
REDACTED = "REDACTED"

def redact_path(path: str) -> str:
    """Drop credentials from a request target: userinfo and secret query values."""
    if "?" not in path and "&" not in path and ";" not in path and "@" not in path:
        return path[:MAX_PATH]                      # neither pattern can match: nothing to drop
    path = USERINFO.sub(r"\1" + REDACTED + "@", path)
    path = SECRET_PARAMS.sub(r"\1" + REDACTED, path)
    return path[:MAX_PATH]


def _auth_kinds(headers: list[tuple[str, str]]) -> str | None:
    """Which credentials a message carried (names only; the values are dropped here)."""
    kinds: list[str] = []
    for name, value in headers:
        n = name.lower()
        if n in ("authorization", "proxy-authorization"):
            scheme = value.split(" ", 1)[0].lower() if value else "unknown"
            kind = scheme if scheme in ("bearer", "basic", "digest", "negotiate", "ntlm", "aws4-hmac-sha256") \
                else "other"
            if n == "proxy-authorization":
                kind = "proxy-" + kind
        elif n == "cookie":
            kind = "cookie"
        elif n == "set-cookie":
            kind = "set-cookie"
        elif n in ("x-auth-token", "x-api-key", "x-csrf-token", "x-amz-security-token"):
            kind = n
        else:
            continue
        if kind not in kinds:
            kinds.append(kind)
    return ",".join(kinds) or None


@dataclass
class HttpResult:
    rows: list[dict] = field(default_factory=list)
    tunnel: FlowStreams | None = None           # bytes inside a CONNECT tunnel (or after 101 h2c)
    partial: bool = False
    parse_error: str | None = None


def sub_stream(stream: Stream, start: int) -> Stream:
    """The part of ``stream`` from ``start`` on, with offsets rebased to 0."""
    if start <= 0:
        return stream
    offs: list[int] = []
    frs: list[int] = []
    for off, fr in zip(stream.offsets, stream.frames):
        if off <= start:
            offs, frs = [0], [fr]
        else:
            offs.append(off - start)
            frs.append(fr)
    return Stream(stream.data[start:], tuple(offs), tuple(frs), stream.gap, stream.limited)


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
        row = {"h2c": False, "auth": _auth_kinds(headers), "direction": "response", "version": m.group(1).decode(),
               "status": status}
        return row, None, status, h2c, h, tuple(map(row.get, _ROW_MIDDLE))
    method, target, version = m.group(1, 2, 3)
    method, target, version = method.decode("latin-1"), target.decode("latin-1"), version.decode("latin-1")
    row = {"h2c": False, "auth": _auth_kinds(headers), "direction": "request", "method": method,
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


# --------------------------------------------------------------------------- HTTP/2

class TolerantHpack:
    """HPACK (RFC 7541) decoding that survives a capture starting mid-connection.

    References to dynamic-table entries added before the capture began decode as unknown
    (None) instead of failing the whole block; the dynamic table is tracked from there on.
    """

    UNKNOWN = None

    def __init__(self, max_size: int = 4096):
        from hpack.table import HeaderTable
        self.static = HeaderTable.STATIC_TABLE
        self.dynamic: list[tuple[str, str] | None] = []
        self.max_size = max_size
        self.size = 0
        self.desynced = False

    @staticmethod
    def _int(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
        mask = (1 << prefix) - 1
        value = data[pos] & mask
        pos += 1
        if value < mask:
            return value, pos
        shift = 0
        while True:
            if pos >= len(data) or shift > 28:
                raise ValueError("HPACK integer runs past the block")
            b = data[pos]
            pos += 1
            value += (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value, pos

    def _str(self, data: bytes, pos: int) -> tuple[str, int]:
        from hpack.huffman_table import decode_huffman
        huff = data[pos] & 0x80
        n, pos = self._int(data, pos, 7)
        if pos + n > len(data):
            raise ValueError("HPACK string runs past the block")
        raw = data[pos:pos + n]
        return (decode_huffman(raw) if huff else raw).decode("latin-1"), pos + n

    def _get(self, index: int) -> tuple[str, str] | None:
        if 1 <= index <= len(self.static):
            k, v = self.static[index - 1]
            return k.decode(), v.decode()
        i = index - len(self.static) - 1
        if 0 <= i < len(self.dynamic):
            return self.dynamic[i]
        self.desynced = True
        return None

    def _add(self, entry: tuple[str, str] | None) -> None:
        size = 32 + (len(entry[0]) + len(entry[1]) if entry else 0)
        self.dynamic.insert(0, entry)
        self.size += size
        while self.size > self.max_size and self.dynamic:
            old = self.dynamic.pop()
            self.size -= 32 + (len(old[0]) + len(old[1]) if old else 0)

    def decode(self, block: bytes) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        pos = 0
        while pos < len(block) and len(out) < 256:
            b = block[pos]
            if b & 0x80:                                  # indexed field
                idx, pos = self._int(block, pos, 7)
                entry = self._get(idx)
                if entry:
                    out.append(entry)
            elif b & 0xE0 == 0x20:                        # dynamic table size update
                self.max_size, pos = self._int(block, pos, 5)
            else:
                prefix, index_it = (6, True) if b & 0x40 else (4, False)
                idx, pos = self._int(block, pos, prefix)
                if idx:
                    entry = self._get(idx)
                    name = entry[0] if entry else None
                else:
                    name, pos = self._str(block, pos)
                value, pos = self._str(block, pos)
                if index_it:
                    self._add((name, value) if name is not None else None)
                if name is not None:
                    out.append((name, value))
        return out


def _h2_rows(stream: Stream, flow_id: int, start: int, is_response: bool, res: HttpResult) -> list[dict]:
    """Request/response heads from HEADERS (+CONTINUATION) frames of one direction."""
    decoder = TolerantHpack()
    data = stream.data
    rows: list[dict] = []
    pos = start
    block = b""
    block_at = None
    pushed = False
    for _ in range(MAX_H2_FRAMES):
        if pos + 9 > len(data):
            break
        length = int.from_bytes(data[pos:pos + 3], "big")
        ftype, flags = data[pos + 3], data[pos + 4]
        if pos + 9 + length > len(data):
            if ftype in (1, 9):
                res.partial = True
                res.parse_error = res.parse_error or (
                    f"HTTP/2 header frame at offset {pos} cut by the capture window ({len(data)} bytes kept)"
                    if stream.limited else f"HTTP/2 header frame of {length} bytes at offset {pos} not captured whole")
            break
        payload = data[pos + 9:pos + 9 + length]
        if ftype == 1:                                   # HEADERS
            pushed = False
            p = 0
            pad = 0
            if flags & 0x08:
                pad = payload[0] if payload else 0
                p = 1
            if flags & 0x20:
                p += 5
            block = payload[p:len(payload) - pad if pad else None]
            block_at = pos
            if not flags & 0x04:                         # END_HEADERS not set
                pos += 9 + length
                continue
        elif ftype == 5 and is_response:                 # PUSH_PROMISE: a request the server makes up
            p = 0
            pad = 0
            if flags & 0x08:
                pad = payload[0] if payload else 0
                p = 1
            p += 4                                        # promised stream id
            block = payload[p:len(payload) - pad if pad else None]
            block_at = pos
            pushed = True
            if not flags & 0x04:
                pos += 9 + length
                continue
        elif ftype == 9 and block_at is not None:        # CONTINUATION
            block += payload
            if not flags & 0x04:
                pos += 9 + length
                continue
        else:
            pos += 9 + length
            continue
        try:
            headers = decoder.decode(block)
        except Exception as exc:     # noqa: BLE001 - a malformed block ends this direction
            res.partial = True
            res.parse_error = res.parse_error or f"HPACK: {type(exc).__name__}: {exc}"[:200]
            break
        if decoder.desynced and not res.parse_error:
            res.partial = True
            res.parse_error = "HPACK: capture starts mid-connection, some header fields unknown"
        h = dict(headers)
        row = {"flow_id": flow_id, "frame": stream.frame_at(block_at), "version": "HTTP/2", "h2c": True,
               "auth": _auth_kinds(headers)}
        if pushed:
            row.update(direction="push", method=h.get(":method"), host=h.get(":authority") or h.get("host"),
                       path=redact_path(h.get(":path", "")) or None)
        elif is_response:
            try:
                row.update(direction="response", status=int(h.get(":status", "")))
            except ValueError:
                row.update(direction="response")     # trailers: no :status
                if ":status" not in h:
                    pos += 9 + length
                    block, block_at = b"", None
                    continue
        else:
            method = h.get(":method")
            row.update(direction="request", method=method, host=h.get(":authority") or h.get("host"))
            if method == "CONNECT":
                row["connect_target"] = h.get(":authority")
            else:
                row["path"] = redact_path(h.get(":path", "")) or None
        del headers, h                               # no header value outlives this point
        rows.append(row)
        block, block_at = b"", None
        pos += 9 + length
    return rows


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
        res.rows = _h2_rows(fwd, flow.flow_id, start, False, res) + _h2_rows(rev, flow.flow_id, 0, True, res)
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
        rows += _h2_rows(cli, flow.flow_id, start, False, res) + _h2_rows(srv, flow.flow_id, 0, True, res)
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

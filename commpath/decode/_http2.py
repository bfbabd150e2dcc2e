"""HTTP/2 in clear (h2c): request and response heads from HEADERS frames, HPACK that survives a mid-connection start."""

from __future__ import annotations

from ._http_common import HttpResult, auth_kinds, redact_path
from .streams import Stream

MAX_H2_FRAMES = 512


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


def h2_rows(stream: Stream, flow_id: int, start: int, is_response: bool, res: HttpResult) -> list[dict]:
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
               "auth": auth_kinds(headers)}
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


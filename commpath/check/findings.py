"""Findings as an auditor reads them: one per check × path × connection key × capture.

The connection key is (initiator address, responder address, responder port): ephemeral ports,
frame numbers and flow ids change from one capture to the next, the key does not. Each finding
lists every connection it stands for (``flow_ids``, ``count``) and opens the first
``MAX_EXAMPLES`` of them in Wireshark (``frames``, ``display_filter``); the per-connection
detail stays in the flow table. Grouping is one sort over the flagged rows; Python runs once per
finding, not once per connection.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..classify.view import address_codes
from .tables import EVIDENCE_ENTRY

#: example connections per finding: the display filter stays short enough to paste
MAX_EXAMPLES = 16


def display_filter(ip_version: int, a: str, b: str, transport: str, p: int, q: int, f1: int, f2: int) -> str:
    """A Wireshark display filter that opens exactly the packets of one connection."""
    ipf = "ipv6.addr" if ip_version == 6 or ":" in str(a) else "ip.addr"
    tp = "udp" if transport == "udp" else "tcp"
    return (f"{ipf}=={a} && {ipf}=={b} && {tp}.port=={p} && {tp}.port=={q} "
            f"&& frame.number>={f1} && frame.number<={f2}")


def fingerprint(check: str, path: str, initiator: str, responder: str, port: int) -> str:
    """Stable id of a finding: SHA-256 (first 128 bits, hex) of check, path and connection key."""
    key = "\x1f".join((check, path, initiator, responder, str(int(port))))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass
class FlowKeys:
    """The flow columns findings are grouped and described by, as numpy arrays."""

    capture: np.ndarray         # int codes into capture_names
    capture_names: list[str]
    src: np.ndarray             # int codes into address_text
    dst: np.ndarray
    address_text: pa.Array      # the distinct address texts, gathered by code without a Python object each
    dst_port: np.ndarray
    src_port: np.ndarray
    first_frame: np.ndarray
    last_frame: np.ndarray
    flow_id: np.ndarray
    ip_version: np.ndarray
    udp: np.ndarray             # bool: the connection is UDP (its display filter says udp.port)

    @property
    def addresses(self) -> np.ndarray:
        """The distinct address texts as Python strings (made when a host-level check asks)."""
        return self.address_text.to_numpy(zero_copy_only=False).astype(object, copy=False)


def flow_keys(flows) -> FlowKeys:
    """The grouping keys of ``flows`` (a classified flow DataFrame)."""
    import pandas as pd
    cap_codes, cap_names = pd.factorize(flows["capture"].astype("string").fillna(""), sort=True)
    # the addresses' factorization the classification made, when it is shared (classify.view)
    (src, dst), ips = address_codes(flows["src_ip"], flows["dst_ip"])
    n = len(flows)

    def ints(name, dtype=np.int64):
        return flows[name].to_numpy(dtype=dtype, na_value=0) if name in flows else np.zeros(n, dtype)
    return FlowKeys(capture=cap_codes, capture_names=[str(c) for c in cap_names], src=src,
                    dst=dst, address_text=_arrow_text(ips.array), dst_port=ints("dst_port"),
                    src_port=ints("src_port"), first_frame=ints("first_frame"), last_frame=ints("last_frame"),
                    flow_id=ints("flow_id"), ip_version=ints("ip_version"),
                    udp=_is_udp(flows["transport"]))


def _is_udp(transport) -> np.ndarray:
    """Whether each flow is UDP (a category column compared by its codes, not as a million texts)."""
    import pandas as pd
    if not isinstance(transport.dtype, pd.CategoricalDtype):
        transport = transport.astype("string")
    return transport.eq("udp").fillna(False).to_numpy(bool)


def _arrow_text(values) -> pa.Array:
    """A pandas text array as one Arrow large_string array (no copy when it is Arrow-backed already)."""
    arr = pa.array(values, pa.large_string(), from_pandas=True)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _text(values) -> pa.Array | str:
    """An Arrow string array from numbers or text; one ``str`` for integers that are all the same
    (:func:`_join` takes it as text between the columns)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu" and len(values) > 1 \
            and (values == values[0]).all():
        return str(int(values[0]))
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    return pc.cast(arr, pa.large_string())


def _single(arr) -> pa.Array | str:
    """``arr``'s one text where every row holds the same one (no nulls), else ``arr`` itself."""
    if len(arr) < 2 or arr.null_count or not pa.types.is_large_string(arr.type) or arr[0] != arr[-1]:
        return arr
    return arr[0].as_py() if pc.all(pc.equal(arr, arr[0])).as_py() else arr


def _join(*parts) -> pa.Array:
    """Element-wise concatenation of Arrow arrays and plain strings (broadcast; at least one array).
    A column holding one text throughout joins as that text, and adjacent strings are joined first:
    the kernel's time grows with the number of pieces (a batch's findings often share a responder)."""
    n = next(len(p) for p in parts if not isinstance(p, str))
    merged: list = []
    for part in parts:
        part = part if isinstance(part, str) else _single(part)
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    if len(merged) == 1 and isinstance(merged[0], str):
        return _repeat(merged[0], n)
    return pc.binary_join_element_wise(*[pa.scalar(p, pa.large_string()) if isinstance(p, str) else p for p in merged],
                                       pa.scalar("", pa.large_string()))


def _repeat(text: str, n: int) -> pa.Array:
    """``n`` times the same text, as Arrow text (no object array for pandas to convert back)."""
    return pa.repeat(pa.scalar(text, pa.large_string()), n)


def _constant(value: str, n: int) -> np.ndarray:
    """``n`` references to one text (``np.full`` of a text makes ``n`` copies of it: 60 bytes each)."""
    out = np.empty(n, object)
    out.fill(value)
    return out


def _either(mask: np.ndarray, yes: str, no: str) -> pa.Array | str:
    """``yes`` where ``mask``, else ``no``: as Arrow text, or as one string where ``mask`` is all alike
    (for :func:`_join`; a numpy text array would be converted from UTF-32)."""
    mask = np.asarray(mask, bool)
    if mask.all() or not mask.any():
        return yes if mask.all() and len(mask) else no
    return pc.if_else(pa.array(mask), pa.scalar(yes, pa.large_string()), pa.scalar(no, pa.large_string()))


def _lists(offsets: np.ndarray, values: pa.Array) -> pa.ListArray:
    return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values)


def _int_lists(offsets: np.ndarray, values: np.ndarray) -> pa.ListArray:
    """``values[offsets[i]:offsets[i + 1]]`` as the findings' Arrow list column (no Python list each)."""
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int64()))


def _addresses(keys: FlowKeys, codes: np.ndarray) -> pa.Array:
    return keys.address_text.take(pa.array(codes, pa.int64()))


def _clauses(keys: FlowKeys, rows: np.ndarray, src: pa.Array, dst: pa.Array) -> pa.Array:
    """:func:`display_filter` of the connections at ``rows`` (``src``/``dst``: their address texts)."""
    v6 = (keys.ip_version[rows] == 6) | pc.match_substring(src, ":").to_numpy(zero_copy_only=False)
    ipf = _either(v6, "ipv6.addr", "ip.addr")
    tp = _either(keys.udp[rows], "udp", "tcp")
    return _join(ipf, "==", src, " && ", ipf, "==", dst, " && ", tp, ".port==", _text(keys.src_port[rows]),
                 " && ", tp, ".port==", _text(keys.dst_port[rows]), " && frame.number>=",
                 _text(keys.first_frame[rows]), " && frame.number<=", _text(keys.last_frame[rows]))


def _grouped_sorted_unique(group: np.ndarray, values: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, values): the sorted distinct values of each group."""
    order = np.lexsort((values, group))
    g, v = group[order], values[order]
    keep = np.r_[True, (g[1:] != g[:-1]) | (v[1:] != v[:-1])] if len(g) else np.zeros(0, bool)
    g, v = g[keep], v[keep]
    return np.r_[0, np.cumsum(np.bincount(g, minlength=n_groups))], v


def _frames(ex_rows, ex_group, n_groups, keys: FlowKeys, handshake_frames) -> pa.ListArray:
    """First frame and handshake frames of each group's example connections, sorted, distinct."""
    parent, hs = handshake_frames(ex_rows)
    group = np.concatenate([ex_group, ex_group[parent]])
    frames = np.concatenate([keys.first_frame[ex_rows], hs]).astype(np.int64)
    offsets, values = _grouped_sorted_unique(group, frames, n_groups)
    return _int_lists(offsets, values)


def _details(detail: np.ndarray, group: np.ndarray, n_groups: int) -> pa.Array:
    """The first two (sorted) distinct non-empty details of each group, joined by "; " ("" if none)."""
    import pandas as pd
    has = np.asarray(pd.notna(detail) & (detail != ""), bool)
    if not has.any():
        return pa.array([""] * n_groups, pa.large_string())
    codes, uniq = pd.factorize(detail[has])
    rank = np.empty(len(uniq), np.int64)
    rank[np.argsort(np.asarray(uniq, dtype=str), kind="stable")] = np.arange(len(uniq))
    offsets, ranks = _grouped_sorted_unique(group[has], rank[codes], n_groups)
    within = np.arange(len(ranks)) - np.repeat(offsets[:-1], np.diff(offsets))
    first_two = within < 2
    kept = np.r_[0, np.cumsum(np.bincount(np.repeat(np.arange(n_groups), np.diff(offsets))[first_two],
                                          minlength=n_groups))]
    by_rank = np.asarray(uniq, dtype=object)[np.argsort(rank)]
    texts = pa.array(by_rank[ranks[first_two]], pa.large_string())
    return pc.binary_join(_lists(kept, texts), pa.scalar("; ", pa.large_string()))


def _endpoint(addr: pa.Array) -> pa.Array:
    v6 = pc.match_substring(addr, ":")
    return pc.if_else(v6, _join("[", addr, "]"), addr) if pc.any(v6).as_py() else addr


#: findings made at once: the intermediate text of one batch is in memory at a time
GROUP_BATCH = 16_384
#: the key of a block's deferred text columns (a callable: :func:`render` makes them)
RENDER = "_render"


def aggregate(check, path: str, rows: np.ndarray, detail: np.ndarray, keys: FlowKeys, handshake_frames,
              wire_said: np.ndarray | None = None, sources: np.ndarray | None = None) -> list[dict]:
    """The findings (as blocks of columns, GROUP_BATCH findings each: concatenated once, by the
    findings table) of ``check`` on ``path`` for the flagged flows at positions ``rows``.

    ``detail``: what was seen on each flagged flow (aligned with ``rows``);
    ``handshake_frames(positions)`` gives (index into positions, frame) of their handshake frames.
    ``wire_said`` (what the wire alone showed, where the detail joins other sources) and ``sources``
    (lists of evidence entries of other sources) are aligned with ``rows`` too: a finding's evidence
    is its first connection's, since other sources are keyed by the responder's address and port.
    """
    order = np.lexsort((keys.first_frame[rows], keys.dst_port[rows], keys.dst[rows], keys.src[rows],
                        keys.capture[rows]))
    rows, detail = rows[order], detail[order]
    wire_said = None if wire_said is None else wire_said[order]
    sources = None if sources is None else sources[order]
    k = np.stack([keys.capture[rows], keys.src[rows], keys.dst[rows], keys.dst_port[rows]])
    starts = np.r_[np.flatnonzero(np.r_[True, (k[:, 1:] != k[:, :-1]).any(axis=0)]), len(rows)]
    # the groups in the findings table's order within a check and path (capture, then the first frame):
    # the table then joins whole blocks instead of gathering every finding again
    sizes = np.diff(starts)
    by_table = np.lexsort((keys.first_frame[rows[starts[:-1]]], keys.capture[rows[starts[:-1]]]))
    sizes = sizes[by_table]
    moved = np.repeat(starts[:-1][by_table] - np.r_[0, np.cumsum(sizes)][:-1], sizes) + np.arange(len(rows))
    rows, detail = rows[moved], detail[moved]
    wire_said = None if wire_said is None else wire_said[moved]
    sources = None if sources is None else sources[moved]
    starts = np.r_[0, np.cumsum(sizes)]
    blocks = []
    for g in range(0, len(starts) - 1, GROUP_BATCH):
        bounds = starts[g:g + GROUP_BATCH + 1]
        a, b = bounds[0], bounds[-1]
        block = _columns(check, path, rows[a:b], bounds - a, keys, handshake_frames)
        block[RENDER] = partial(_texts, check, path, rows[a:b], detail[a:b], bounds - a, keys, block.pop("_digest"),
                                block["frames"], None if wire_said is None else wire_said[a:b],
                                None if sources is None else sources[a:b])
        blocks.append(block)
    return blocks


def render(block: dict) -> dict:
    """``block`` with its texts made (message, remediation, display filter, reference, evidence), in place."""
    make = block.pop(RENDER, None)
    if make is not None:
        block.update(make())
    return block


def concat_column(parts: list, combine: bool = True):
    """One finding column from its blocks: numpy arrays, Arrow arrays or Python lists (of an Arrow
    column's values where another block made it in Arrow); ``combine=False`` leaves Arrow blocks chunked."""
    arrow = [p.type for p in parts if isinstance(p, pa.Array)]
    if len(parts) == 1 and arrow and combine:       # one block: the array itself, not a copy
        return parts[0]
    if arrow:
        chunked = pa.chunked_array([p if isinstance(p, pa.Array) else pa.array(list(p), arrow[0]) for p in parts],
                                   arrow[0])
        return chunked.combine_chunks() if combine else chunked
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return [v for part in parts for v in part]


def _evidence(check, capture, frames: pa.ListArray, starts: np.ndarray, detail, wire_said,
              sources) -> pa.ListArray:
    """Each finding's evidence entries: the wire's (what its first connection showed, where), then
    the other sources' entries of that connection (Python dicts: host-level checks only)."""
    said = _said(check, (wire_said if wire_said is not None else detail)[starts])
    where = _frames_where(capture, frames)
    wire = pa.StructArray.from_arrays([_repeat("wire", len(said)).cast(pa.string()), said, said, where],
                                      fields=list(EVIDENCE_ENTRY))
    extra = [list(e) if e else [] for e in sources[starts]] if sources is not None else []
    n_extra = np.array([len(e) for e in extra], np.int64) if extra else np.zeros(len(said), np.int64)
    if not n_extra.any():
        return pa.ListArray.from_arrays(pa.array(np.arange(len(said) + 1), pa.int32()), wire)
    others = pa.array([e for entries in extra for e in entries], EVIDENCE_ENTRY)
    # each finding's wire entry, then its own entries of other sources (offsets into ``others``)
    first_other = np.r_[0, np.cumsum(n_extra)][:-1]
    size = 1 + n_extra
    pos = np.arange(size.sum()) - np.repeat(np.r_[0, np.cumsum(size)][:-1], size)
    finding = np.repeat(np.arange(len(said)), size)
    take = np.where(pos == 0, finding, len(said) + np.repeat(first_other, size) + pos - 1)
    flat = pa.concat_arrays([wire, others]).take(pa.array(take, pa.int64()))
    return pa.ListArray.from_arrays(pa.array(np.r_[0, np.cumsum(size)], pa.int32()), flat)


def _said(check, values: np.ndarray) -> pa.Array:
    """What the wire said of each finding: its first connection's text, the check's title where none."""
    try:
        said = pa.array(values, pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):       # a value not text: as str() words it
        said = pa.array([str(s) if isinstance(s, str) else None for s in values], pa.string())
    return pc.if_else(pc.fill_null(pc.equal(said, ""), True), pa.scalar(check.title, pa.string()), said)


def _frames_where(capture: np.ndarray, lists: pa.ListArray) -> pa.Array:
    """``"<capture> frames <first 8 frames>[, ...]"`` per finding (the capture alone without frames), as
    check/evidence.py's ``wire_entries`` words it, made in Arrow kernels."""
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    longer = lengths > 8
    shown = pc.binary_join(pc.cast(pc.list_slice(lists, 0, 8) if longer.any() else lists, pa.list_(pa.large_string())),
                           pa.scalar(", ", pa.large_string()))
    if longer.any():
        shown = pc.if_else(pa.array(longer), _join(shown, ", ..."), shown)
    cap = _text(capture if isinstance(capture, pa.Array) else pa.array(capture, pa.large_string()))
    where = _join(cap, " frames ", shown)
    if (lengths == 0).any():
        where = pc.if_else(pa.array(lengths == 0), cap, where)
    return where.cast(pa.string())


def _columns(check, path: str, rows: np.ndarray, bounds: np.ndarray, keys: FlowKeys, handshake_frames) -> dict:
    """The key columns of the findings of groups ``rows[bounds[i]:bounds[i + 1]]`` (their texts: :func:`_texts`)."""
    starts, counts = bounds[:-1], np.diff(bounds)
    n_groups, group = len(starts), np.repeat(np.arange(len(starts)), counts)
    first = rows[starts]
    src, dst, port = _addresses(keys, keys.src[first]), _addresses(keys, keys.dst[first]), keys.dst_port[first]
    example = (np.arange(len(rows)) - np.repeat(starts, counts)) < MAX_EXAMPLES
    fp_keys = pc.cast(_join(f"{check.id}\x1f{path}\x1f", src, "\x1f", dst, "\x1f", _text(port)), pa.large_binary())
    return {
        "check": _constant(check.id, n_groups), "severity": _constant(check.severity_for(path), n_groups),
        "path": _constant(path, n_groups),
        "flow_ids": _int_lists(bounds, keys.flow_id[rows]),
        "capture": _capture_names(keys, first),
        "frames": _frames(rows[example], group[example], n_groups, keys, handshake_frames),
        # 16 bytes each until written (their hex text is 48 with its offset)
        "_digest": _digests(fp_keys),
        "count": counts.astype(np.int64),
        "_first": keys.first_frame[first],
    }


def _digests(messages: pa.Array) -> np.ndarray:
    """The first 16 bytes of each message's SHA-256 (a large_binary array without nulls), 16 bytes each,
    hashed in C (hashlib from Python costs ≈ 1 µs a message: 0.9–1.4 s for a million findings)."""
    from ..decode._native import sha256_prefixes
    _, offsets, data = messages.buffers()
    offsets = np.frombuffer(offsets, np.int64)[messages.offset:messages.offset + len(messages) + 1]
    data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    return sha256_prefixes(data, np.ascontiguousarray(offsets), 16)


def _capture_names(keys: FlowKeys, first: np.ndarray) -> pa.Array:
    return pa.array(keys.capture_names, pa.large_string()).take(pa.array(keys.capture[first]))


def _hex(digest: np.ndarray) -> pa.Array:
    """Lower-case hex text of consecutive 16-byte digests (``hexdigest()[:32]``), one Arrow text each."""
    n = len(digest) // 16
    text = digest.tobytes().hex().encode()
    offsets = pa.py_buffer(np.arange(0, 32 * n + 1, 32, dtype=np.int64).tobytes())
    return pa.Array.from_buffers(pa.large_string(), n, [None, offsets, pa.py_buffer(text)])


def _texts(check, path: str, rows: np.ndarray, detail: np.ndarray, bounds: np.ndarray, keys: FlowKeys,
           digest: np.ndarray, frames: pa.ListArray, wire_said: np.ndarray | None, sources: np.ndarray | None) -> dict:
    """The text columns of the findings :func:`_columns` keyed: made when they are written or asked
    for, a batch at a time, so that a million findings' messages and filters are never all in memory."""
    starts, counts = bounds[:-1], np.diff(bounds)
    n_groups, group = len(starts), np.repeat(np.arange(len(starts)), counts)
    first = rows[starts]
    src, dst, port = _addresses(keys, keys.src[first]), _addresses(keys, keys.dst[first]), keys.dst_port[first]
    example = (np.arange(len(rows)) - np.repeat(starts, counts)) < MAX_EXAMPLES
    ex_rows = rows[example]
    n_ex = np.minimum(counts, MAX_EXAMPLES)
    clauses = _clauses(keys, ex_rows, _addresses(keys, keys.src[ex_rows]), _addresses(keys, keys.dst[ex_rows]))
    if (n_ex > 1).any():
        clauses = pc.if_else(pa.array(np.repeat(n_ex > 1, n_ex)), _join("(", clauses, ")"), clauses)
    details = _details(detail, group, n_groups)
    plural = _either(counts == 1, "", "s")
    message = _join(f"{check.title}: ", _text(counts), " connection", plural, f" on {path} (", _endpoint(src), " -> ",
                    _endpoint(dst), ":", _text(port), ")")
    bare = pc.equal(details, "")
    if not pc.all(bare).as_py():
        message = pc.if_else(bare, message, _join(message, ": ", details))
    return {
        "message": message,
        "remediation": _repeat(" ".join(check.remediation_for(path).split()), n_groups),
        "display_filter": clauses if (n_ex == 1).all() else pc.binary_join(_lists(np.r_[0, np.cumsum(n_ex)], clauses),
                                                                          pa.scalar(" || ", pa.large_string())),
        "reference": _repeat(check.reference_link, n_groups),
        "fingerprint": _hex(digest),
        "evidence_sources": _evidence(check, _capture_names(keys, first), frames, starts, detail, wire_said, sources),
    }


__all__ = ["MAX_EXAMPLES", "RENDER", "FlowKeys", "aggregate", "display_filter", "fingerprint", "flow_keys",
           "render"]

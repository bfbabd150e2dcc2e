"""Table columns as JSON text in Arrow kernels, joined into records without a Python object per cell.

Hand-written because neither pyarrow nor pandas writes JSON that Python's json module reads back
identically (pandas rounds floats to 15 digits; pyarrow has no JSON writer), and the json module
itself costs microseconds per cell. The text matches ``json.dumps(..., indent=2,
ensure_ascii=False)`` at the records' depth: floats as Python's ``repr``, strings escaped as the
json module escapes them (the rare value with control characters goes through it).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

STR = pa.large_string()       # 64-bit offsets: a million records outgrow 2 GB of text with room to spare


def _s(text: str) -> pa.Scalar:
    return pa.scalar(text, STR)


NULL = _s("null")


def _arrow(series) -> pa.Array:
    """A pandas column as one Arrow array (categories stay dictionaries)."""
    arr = pa.array(series, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr


def _strings(arr: pa.Array) -> pa.Array:
    """JSON string literals (null stays null)."""
    arr = pc.cast(arr, STR)
    if not _needs_escape(arr):
        return pc.binary_join_element_wise(_s('"'), arr, _s('"'), _s(""))       # nothing to escape
    text = pc.replace_substring(pc.replace_substring(arr, "\\", "\\\\"), '"', '\\"')
    text = pc.binary_join_element_wise(_s('"'), text, _s('"'), _s(""))
    odd = pc.fill_null(pc.match_substring_regex(arr, "[\\x00-\\x1f]"), False)
    if pc.any(odd).as_py():                      # control characters: the json module's escapes
        where = np.flatnonzero(odd.to_numpy(zero_copy_only=False))
        fixed = [json.dumps(arr[int(i)].as_py(), ensure_ascii=False) for i in where]
        text = _put(text, where, fixed)
    return text


def _needs_escape(arr: pa.Array) -> bool:
    """Whether any text of ``arr`` holds a quote, a backslash or a control character: one pass over
    its UTF-8 bytes in numpy (a regular expression per value cost a third of report.json's time)."""
    if isinstance(arr, pa.ChunkedArray):
        return any(_needs_escape(chunk) for chunk in arr.chunks)
    if len(arr) == 0:
        return False
    width = np.int64 if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], width, len(arr) + 1, arr.offset * np.dtype(width).itemsize)
    data = arr.buffers()[2]
    if data is None or offsets[-1] == offsets[0]:
        return False
    raw = np.frombuffer(data, np.uint8)[offsets[0]:offsets[-1]]
    # a null's bytes, where a writer left any, can only turn this into a needless (correct) escape pass;
    # a minimum and two byte searches (memchr) instead of three comparisons and their arrays
    if raw.min() < 0x20:
        return True
    raw = raw.tobytes()
    return b'"' in raw or b"\\" in raw


def _put(text: pa.Array, where: np.ndarray, values: list[str]) -> pa.Array:
    out = text.to_numpy(zero_copy_only=False).astype(object)
    out[where] = values
    return pa.array(out, STR)


def _floats(arr: pa.Array) -> pa.Array:
    """Floats as Python's repr; NaN and null as null."""
    values = arr.to_numpy(zero_copy_only=False).astype(np.float64)
    text = pc.cast(arr, STR)
    # between 1e-4 and 1e10 Arrow writes what Python's repr does, but 2.0 as "2" (repr keeps ".0");
    # tiny, large or infinite values (rare) go through repr itself (Arrow writes 3e10 as "3e+10")
    magnitude = np.abs(values)
    usual = ((magnitude >= 1e-4) & (magnitude < 1e10)) | (values == 0)
    whole = usual & (values == np.trunc(values))
    if whole.any():
        text = pc.if_else(pa.array(whole), pc.binary_join_element_wise(text, _s(".0"), _s("")), text)
    odd = ~usual & ~np.isnan(values)
    if odd.any():
        where = np.flatnonzero(odd)
        text = _put(text, where, [json.dumps(float(values[i])) for i in where])
    missing = np.isnan(values)      # NaN and null alike (to_numpy gives a null as NaN)
    return pc.if_else(pa.array(missing), NULL, text) if missing.any() else text


def _list_json(arr: pa.Array, indent: str) -> pa.Array:
    """list<string|int> cells as indented JSON arrays (``[]`` when empty)."""
    flat = arr.flatten()
    items = _json_text(flat, "") if len(flat) else pa.array([], STR)
    inner = indent + "  "
    if arr.null_count == 0 and len(flat) == len(arr) and len(arr) \
            and pc.all(pc.equal(pc.list_value_length(arr), 1)).as_py():      # one item each (a lone connection)
        return pc.binary_join_element_wise(_s("[\n" + inner), items, _s("\n" + indent + "]"), _s(""))
    offsets = arr.offsets if arr.offset == 0 else pc.subtract(arr.offsets, arr.offsets[0])  # a batch's slice
    lists = pa.ListArray.from_arrays(offsets, items, mask=arr.is_null() if arr.null_count else None)
    body = pc.binary_join(lists, _s(",\n" + inner))
    text = pc.binary_join_element_wise(_s("[\n" + inner), body, _s("\n" + indent + "]"), _s(""))
    empty = pc.equal(pc.list_value_length(arr), 0)
    return pc.if_else(pc.fill_null(empty, False), _s("[]"), text)


def _json_text(arr: pa.Array, indent: str) -> pa.Array:
    """Any supported Arrow column as JSON text, null as null (no nulls left)."""
    t = arr.type
    if pa.types.is_dictionary(t):          # each distinct value once, then one gather
        return pc.fill_null(pc.take(_json_text(arr.dictionary, indent), arr.indices), NULL)
    if pa.types.is_boolean(t):
        text = pc.if_else(arr, _s("true"), _s("false"))
    elif pa.types.is_integer(t):
        text = pc.cast(arr, STR)
    elif pa.types.is_floating(t):
        text = _floats(arr)
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        text = _list_json(arr, indent)
    elif pa.types.is_null(t):
        text = pa.nulls(len(arr), STR)
    else:
        text = _strings(arr)
    return pc.fill_null(text, NULL)


def _python_column(values, indent: str) -> pa.Array:
    """A column of Python objects (e.g. lists of dicts) through the json module, re-indented."""
    out = []
    for v in values:
        out.append(json.dumps(v, indent=2, ensure_ascii=False).replace("\n", "\n" + indent))
    return pa.array(out, STR)


class Quoted:
    """A text column whose JSON is each text in quotes (no nulls, nothing to escape): the records put
    the quotes in the text between the values, sparing a quoted copy of the column."""

    __slots__ = ("text",)

    def __init__(self, text: pa.Array):
        self.text = text


def _text_value(arr: pa.Array) -> pa.Array | Quoted:
    """JSON of a text column: :class:`Quoted` where it can be, else the quoted and escaped text."""
    if pa.types.is_dictionary(arr.type) and arr.null_count == 0 and _is_text(arr.dictionary.type) \
            and not _needs_escape(arr.dictionary):
        return Quoted(pc.take(pc.cast(arr.dictionary, STR), arr.indices))
    if _is_text(arr.type) and arr.null_count == 0 and not _needs_escape(arr):
        return Quoted(pc.cast(arr, STR))
    return _json_text(arr, "")


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


class Pieces(list):
    """The pieces of a JSON value not joined yet (literal texts, columns, :class:`Quoted`): a record
    takes them in its own join, sparing a joined copy of the nested value."""


def _flat(pieces):
    for piece in pieces:
        if isinstance(piece, Pieces):
            yield from _flat(piece)
        else:
            yield piece


def _joined(pieces: list, n: int | None = None) -> pa.Array:
    """Element-wise concatenation of literal texts and JSON columns (arrays, :class:`Quoted` or
    :class:`Pieces`); ``n`` rows of the literal where every piece is one."""
    parts, literal = [], ""
    for piece in _flat(pieces):
        if isinstance(piece, str):
            literal += piece
        elif isinstance(piece, Quoted):
            parts += [_s(literal + '"'), piece.text]
            literal = '"'
        else:
            parts += [_s(literal), piece]
            literal = ""
    if not parts:
        return pa.repeat(_s(literal), n)
    return pc.binary_join_element_wise(*parts, _s(literal), _s(""))


def column(df, key: str, indent: str) -> pa.Array | Quoted | Pieces | str:
    """``df[key]`` as JSON text: one text (a ``str``, which the records join as they join the text
    between the values) where every row's is the same, as a missing column's null throughout. A
    batch's constant columns (its capture, a path, a check's remediation, TLS facts of no TLS) then
    cost neither a text column nor a piece of the records' join, whose time grows with its pieces."""
    if key not in df:
        return "null"
    return _array_text(_arrow(df[key]), indent)


def _array_text(arr: pa.Array, indent: str) -> pa.Array | Quoted | Pieces | str:
    """:func:`column` of an Arrow column."""
    if len(arr) > 1 and _same(arr):
        return _one_text(_column_text(arr.slice(0, 1), indent))
    return _column_text(arr, indent)


def _column_text(arr: pa.Array, indent: str) -> pa.Array | Quoted | Pieces:
    if _is_text(arr.type) or (pa.types.is_dictionary(arr.type) and _is_text(arr.dictionary.type)):
        return _text_value(arr)
    if (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)) and _one_each(arr):
        # a lone connection's flow id and frame: the brackets are text between the records' values
        flat = arr.flatten()
        item = _text_value(flat) if _is_text(flat.type) else _json_text(flat, "")
        return Pieces(["[\n" + indent + "  ", item, "\n" + indent + "]"])
    return _json_text(arr, indent)


def _one_each(arr: pa.Array) -> bool:
    """Whether every cell of a list column holds exactly one item."""
    return len(arr) > 0 and arr.null_count == 0 and bool((np.diff(arr.offsets.to_numpy()) == 1).all())


def _one_text(text: pa.Array | Quoted | Pieces) -> str:
    """The JSON text of a one-row column."""
    if isinstance(text, Pieces):
        return _joined(text, 1)[0].as_py()
    return f'"{text.text[0].as_py()}"' if isinstance(text, Quoted) else text[0].as_py()


def _same(arr: pa.Array) -> bool:
    """Whether every value of ``arr`` is the same one, as its JSON text would show (the bits of a float:
    -0.0 is not 0.0); False where telling costs more than it saves (lists, structs)."""
    if arr.null_count:
        return arr.null_count == len(arr)
    t = arr.type
    if pa.types.is_dictionary(t):
        return _same(arr.indices)
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        low, high = pc.min_max(arr).values()
        return low.as_py() == high.as_py()
    if pa.types.is_floating(t):
        values = arr.to_numpy()
        bits = values.view(f"u{values.itemsize}")
        return bool((bits == bits[0]).all())
    if _is_text(t):
        return bool(pc.all(pc.equal(arr, arr[0])).as_py())
    return False


def records(fields: list[tuple[str, pa.Array]], n: int, depth: int, last: bool = True) -> pa.Buffer:
    """Records of ``n`` rows at list depth ``depth`` from (key, JSON text column), joined by ``,\\n``
    (and followed by one when more records come after them: ``last=False``)."""
    outer, inner = "  " * depth, "  " * (depth + 1)
    pieces = [outer]    # text between the values, then the value: one join over all columns
    for i, (key, text) in enumerate(fields):
        pieces += [("{\n" if i == 0 else ",\n") + f'{inner}"{key}": ', text]
    pieces.append(f"\n{outer}}},\n")     # every record followed by ",\n": the last one's is cut off
    text = _concat(_joined(pieces, n))
    return text.slice(0, text.size - 2) if last and n else text


def obj(fields: list[tuple[str, pa.Array]], depth: int, joined: bool = True, n: int | None = None) -> pa.Array | Pieces:
    """A column of ``n`` JSON objects nested in a record at ``depth`` (``{`` on the key's line); its
    :class:`Pieces` with ``joined=False``."""
    inner = "  " * (depth + 1)
    pieces = Pieces()
    for i, (key, text) in enumerate(fields):
        pieces += [("{\n" if i == 0 else ",\n") + f'{inner}"{key}": ', text]
    pieces.append(f"\n{'  ' * depth}}}")
    return _joined(pieces, n) if joined else pieces


#: rows per batch: the text of one batch is in memory at a time. report.json of 200,000 connections
#: (386 MB), alternated: 16,384 rows 1.08-1.58 s and +64-75 MB while writing; 8,192 1.19 s, +37 MB;
#: 4,096 0.78-0.93 s, +20 MB; 2,048 1.22-1.36 s (each batch's fixed cost in the kernels' calls)
BATCH = 4_096


def flow_records(flows, keys: list[str], vantage_keys: list[str], vantage_arrow: pa.Array | None = None):
    """The flows as JSON records at depth 2 of the report, joined by ``,\\n``: UTF-8 buffers by batch.

    ``vantage_arrow``: :func:`vantage_arrow_of` the flows' vantage points, when the caller has it already."""
    columns = {k: _whole(flows[k]) for k in keys if k in flows}
    vantage = flows["vantage_points"] if "vantage_points" in flows else None
    if vantage is not None and vantage_arrow is None:
        vantage_arrow = vantage_arrow_of(vantage)
    n = len(flows)
    for start in range(0, n, BATCH):
        stop = min(start + BATCH, n)
        if vantage_arrow is not None:
            lists = vantage_arrow.slice(start, stop - start)
            if isinstance(lists, pa.ChunkedArray):
                lists = lists.combine_chunks()
            vantage_part = _vantage_lists(lists, vantage_keys, " " * 6)
        else:
            vantage_part = None if vantage is None else vantage.iloc[start:stop]
        yield _flow_batch({k: _part(c, start, stop) for k, c in columns.items()}, stop - start,
                          vantage_part, keys, vantage_keys, stop >= n)


def vantage_arrow_of(cells) -> pa.Array | None:
    """Merged flows' vantage points (a column of lists of dicts) as one Arrow list<struct> array, as
    Arrow converts the column for flows.parquet, when report.json may write their texts from it: every
    cell a list (or missing), every item a dict, every value a text, number or bool, and nothing but
    floats among a float key's values (Arrow would write an int 2 as 2.0, json as 2). None otherwise:
    the texts then come from the Python values, batch by batch (:func:`_vantage_column`).

    Converted once for the whole run: flows.parquet stores this very array, and a merged run's
    vantage points were most of report.json's time taken a Python value at a time (12 hosts, 91,200
    flows: 0.9 of 1.2 s)."""
    values = cells.tolist() if hasattr(cells, "tolist") else list(cells)
    if not all(type(v) is list or v is None for v in values):
        return None
    flat = [vp for v in values if v for vp in v]
    if not all(type(vp) is dict for vp in flat):
        return None
    try:
        arr = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        return None
    if not pa.types.is_list(arr.type):     # e.g. every cell missing: Arrow's null type
        return None
    if not pa.types.is_struct(arr.type.value_type):
        return None if flat else arr
    for field in arr.type.value_type:
        t = field.type
        if not (pa.types.is_string(t) or pa.types.is_integer(t) or pa.types.is_floating(t)
                or pa.types.is_boolean(t) or pa.types.is_null(t)):
            return None
        # Arrow refuses a bool among ints, a text among numbers; it makes an int or a bool among floats a float
        if pa.types.is_floating(t) and not {type(vp.get(field.name)) for vp in flat} <= {float, type(None)}:
            return None
    return arr


def _vantage_lists(lists: pa.Array, keys: list[str], indent: str) -> pa.Array:
    """:func:`_vantage_column`'s text from a slice of :func:`vantage_arrow_of`'s array."""
    n_items = pc.fill_null(pc.list_value_length(lists), 0) if len(lists) else pa.array([], pa.int32())
    items = lists.flatten()
    if pa.types.is_struct(items.type):
        children = dict(zip([f.name for f in items.type], items.flatten()))
    else:       # every cell empty or missing: no items to write
        children = {}
    texts = {k: _json_text(children[k], "") if k in children else pa.nulls(len(items), STR).fill_null(NULL)
             for k in keys}
    return _vantage_join(texts, np.asarray(n_items, np.int64), len(items), indent)


def _whole(series) -> pa.Array | pa.ChunkedArray:
    """A flow column as Arrow once, sliced by batch: a frame's batch and its column lookups cost pandas
    more than the text of most columns. An object column stays pandas, converted by batch: the
    type Arrow infers from its values (a batch of all-null lists) is a batch's, as it always was."""
    return series if series.dtype == object else pa.array(series, from_pandas=True)


def _part(column, start: int, stop: int) -> pa.Array:
    """Rows ``start:stop`` of a :func:`_whole` column as one Arrow array."""
    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        part = column.slice(start, stop - start)
        return part.combine_chunks() if isinstance(part, pa.ChunkedArray) else part
    return _arrow(column.iloc[start:stop])


def _flow_batch(columns: dict[str, pa.Array], n: int, vantage, keys: list[str], vantage_keys: list[str],
                last: bool) -> pa.Buffer:
    indent = " " * 6
    fields = [(k, _array_text(columns[k], indent) if k in columns else "null") for k in keys]
    if isinstance(vantage, (pa.Array, pa.ChunkedArray)):      # texts made already (vantage_arrow_of)
        fields.append(("vantage_points", vantage))
    elif vantage is not None:
        fields.append(("vantage_points", _vantage_column(vantage.tolist(), vantage_keys, indent)))
    return records(fields, n, 2, last)


def _vantage_column(cells: list, keys: list[str], indent: str) -> pa.Array:
    """Merged flows' vantage points (lists of dicts of scalars) as JSON text: each key's values of
    every vantage point as one Arrow column; through the json module when a value is not a plain
    text, integer, float or boolean (a merged run has a few vantage points per connection, each
    written as ``json.dumps`` would: it was most of report.json's time on many hosts)."""
    lists = [v if isinstance(v, (list, tuple)) else [] for v in cells]
    flat = [vp for v in lists for vp in v]
    texts = _vantage_texts(flat, keys) if all(type(vp) is dict for vp in flat) else None
    if texts is None:
        from .report_json import _value
        return _python_column([[{k: _value(vp.get(k)) for k in keys} for vp in v] for v in lists], indent)
    return _vantage_join(texts, np.fromiter(map(len, lists), np.int64, len(lists)), len(flat), indent)


def _vantage_join(texts: dict[str, pa.Array], lengths: np.ndarray, n_items: int, indent: str) -> pa.Array:
    """Each cell's vantage points as a JSON list of objects: ``texts`` (key -> JSON text of every item,
    the cells' items one after the other), ``lengths`` items per cell."""
    inner, item = indent + "  ", indent + "    "
    parts = [_s(inner + "{\n")]
    for j, (k, text) in enumerate(texts.items()):
        parts += [_s(("" if j == 0 else ",\n") + f'{item}"{k}": '), text]
    entries = pc.binary_join_element_wise(*parts, _s("\n" + inner + "}"), _s("")) if n_items else pa.array([], STR)
    offsets = pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32))
    body = pc.binary_join(pa.ListArray.from_arrays(offsets, entries), _s(",\n"))
    text = pc.binary_join_element_wise(_s("[\n"), body, _s("\n" + indent + "]"), _s(""))
    return pc.if_else(pa.array(lengths == 0), _s("[]"), text)


def _vantage_texts(flat: list[dict], keys: list[str]) -> dict[str, pa.Array] | None:
    """Each key's JSON texts over ``flat`` (None: a value the Arrow path does not write as json does)."""
    out = {}
    for k in keys:
        values = [vp.get(k) for vp in flat]
        try:
            arr = pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return None
        t = arr.type
        if pa.types.is_floating(t) and any(type(v) is int for v in values):   # 1 would be written 1.0
            return None
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
                or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_null(t)):
            return None
        out[k] = _json_text(arr, "")
    return out


def finding_records(frames):
    """The findings (DataFrames of consecutive rows) as the report's records (evidence nested), joined
    by ``,\\n``: UTF-8 buffers by batch."""
    frames = (df for df in frames if len(df))
    ahead = next(frames, None)
    while ahead is not None:
        df, ahead = ahead, next(frames, None)
        n = len(df)
        for start in range(0, n, BATCH):
            part = df if n <= BATCH else df.iloc[start:start + BATCH]      # a block is one batch: no copy
            yield _finding_batch(part, ahead is None and start + BATCH >= n)


def _finding_batch(findings, last: bool) -> pa.Buffer:
    six, eight = " " * 6, " " * 8
    evidence = obj([("capture", column(findings, "capture", eight)), ("frames", _empty_lists(findings, "frames", eight)),
                    ("display_filter", column(findings, "display_filter", eight))], 3, joined=False)
    fields = [(k, column(findings, k, six)) for k in ("check", "severity", "path")]
    fields += [("flow_ids", _empty_lists(findings, "flow_ids", six)), ("message", column(findings, "message", six)),
               ("remediation", column(findings, "remediation", six)), ("evidence", evidence)]
    fields += [(k, column(findings, k, six)) for k in ("reference", "fingerprint", "count")]
    if "evidence_sources" in findings:      # what each source said (check/evidence.py), [] when none
        fields.append(("evidence_sources", _evidence_column(findings["evidence_sources"], six)))
    return records(fields, len(findings), 2, last)


#: the keys of an evidence entry, in the order check/evidence.py writes them
ENTRY_KEYS = ("source", "said", "says", "where")


def _evidence_column(values, indent: str) -> pa.Array:
    """Evidence lists as JSON text. The usual cell, one entry of four texts (the wire's), is written in
    Arrow kernels; any other cell through the json module (a million findings are a million cells)."""
    arr = _entry_lists(values)
    if arr is not None:
        entries = arr.flatten()
        one_each = len(entries) == len(arr) and pc.all(pc.equal(pc.list_value_length(arr), 1)).as_py() is not False
        if (arr.null_count == 0 and one_each and entries.null_count == 0
                and [f.name for f in entries.type] == list(ENTRY_KEYS)):
            texts = dict(zip(ENTRY_KEYS, entries.flatten()))
            if not any(t.null_count for t in texts.values()):     # the usual cells, read in Arrow
                return _entry_text(texts, indent, joined=False) if len(arr) else pa.array([], STR)
        values = arr.to_pylist()
    cells = values.tolist() if hasattr(values, "tolist") else list(values)
    usual = [type(v) is list and len(v) == 1 and type(v[0]) is dict and tuple(v[0]) == ENTRY_KEYS for v in cells]
    at = [i for i, u in enumerate(usual) if u] if not all(usual) else None
    entries = [v[0] for v in cells] if at is None else [cells[i][0] for i in at]
    try:
        texts = {k: pa.array([e[k] for e in entries], STR) for k in ENTRY_KEYS}
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        texts = None
    if texts is None or any(t.null_count for t in texts.values()):    # a value not text: the json module writes it
        return _evidence_cells(cells, [u and all(type(x) is str for x in v[0].values()) for u, v in zip(usual, cells)],
                               indent)
    text = _entry_text(texts, indent) if entries else None
    if at is None:              # every cell the usual one: the Arrow text as it is
        return text if text is not None else pa.array([], STR)
    out = np.empty(len(cells), dtype=object)
    if at:
        out[np.asarray(at, np.int64)] = text.to_numpy(zero_copy_only=False)
    other_at = [i for i, u in enumerate(usual) if not u]
    other = [list(cells[i]) if isinstance(cells[i], (list, tuple, np.ndarray)) else [] for i in other_at]
    out[np.asarray(other_at, np.int64)] = _python_column(other, indent).to_numpy(zero_copy_only=False)
    return pa.array(out, STR)


def _entry_lists(values) -> pa.Array | None:
    """An Arrow-backed column of lists of entries (the findings table's) as one Arrow array, else None."""
    import pandas as pd
    if not isinstance(getattr(values, "dtype", None), pd.ArrowDtype):
        return None
    arr = _arrow(values)
    return arr if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) else None


def _entry_text(texts: dict[str, pa.Array], indent: str, joined: bool = True) -> pa.Array | Pieces:
    """One-entry evidence lists from the entries' texts by key (their :class:`Pieces` with ``joined=False``)."""
    inner, item = indent + "  ", indent + "    "
    pieces = Pieces(["[\n" + inner + "{\n"])
    for j, k in enumerate(ENTRY_KEYS):
        pieces += [("" if j == 0 else ",\n") + f'{item}"{k}": ', _text_value(texts[k])]
    pieces.append("\n" + inner + "}\n" + indent + "]")
    return _joined(pieces) if joined else pieces


def _evidence_cells(cells: list, usual: list[bool], indent: str) -> pa.Array:
    """:func:`_evidence_column` where some entries hold values other than text."""
    out = np.empty(len(cells), dtype=object)
    at = [i for i, u in enumerate(usual) if u]
    if at:
        texts = {k: pa.array([cells[i][0][k] for i in at], STR) for k in ENTRY_KEYS}
        out[np.asarray(at, np.int64)] = _entry_text(texts, indent).to_numpy(zero_copy_only=False)
    other_at = [i for i, u in enumerate(usual) if not u]
    if other_at:
        other = [list(cells[i]) if isinstance(cells[i], (list, tuple, np.ndarray)) else [] for i in other_at]
        out[np.asarray(other_at, np.int64)] = _python_column(other, indent).to_numpy(zero_copy_only=False)
    return pa.array(out, STR)


def _empty_lists(df, key: str, indent: str) -> pa.Array:
    """A list column whose missing cells are ``[]``."""
    text = column(df, key, indent)
    if isinstance(text, str):
        return "[]" if text == "null" else text
    if isinstance(text, Pieces):            # one item each: none missing
        return text
    missing = pc.equal(text, "null")
    return pc.if_else(missing, _s("[]"), text) if pc.any(missing).as_py() else text


def _concat(arr: pa.Array) -> pa.Buffer:
    """All strings of ``arr`` back to back (UTF-8): a slice of the values buffer, no copy."""
    arr = arr.cast(STR)
    width = np.int64 if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], width, len(arr) + 1, arr.offset * np.dtype(width).itemsize)
    return arr.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


__all__ = ["Quoted", "column", "finding_records", "flow_records", "obj", "records", "vantage_arrow_of"]

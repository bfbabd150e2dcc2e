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
    if not pc.any(pc.fill_null(pc.match_substring_regex(arr, '[\\\\"\\x00-\\x1f]'), False)).as_py():
        return pc.binary_join_element_wise(_s('"'), arr, _s('"'), _s(""))       # nothing to escape
    text = pc.replace_substring(pc.replace_substring(arr, "\\", "\\\\"), '"', '\\"')
    text = pc.binary_join_element_wise(_s('"'), text, _s('"'), _s(""))
    odd = pc.fill_null(pc.match_substring_regex(arr, "[\\x00-\\x1f]"), False)
    if pc.any(odd).as_py():                      # control characters: the json module's escapes
        where = np.flatnonzero(odd.to_numpy(zero_copy_only=False))
        fixed = [json.dumps(arr[int(i)].as_py(), ensure_ascii=False) for i in where]
        text = _put(text, where, fixed)
    return text


def _put(text: pa.Array, where: np.ndarray, values: list[str]) -> pa.Array:
    out = text.to_numpy(zero_copy_only=False).astype(object)
    out[where] = values
    return pa.array(out, STR)


def _floats(arr: pa.Array) -> pa.Array:
    """Floats as Python's repr; NaN and null as null."""
    values = arr.to_numpy(zero_copy_only=False).astype(np.float64)
    text = pc.cast(arr, STR)
    # Arrow writes 2.0 as "2"; Python's repr keeps ".0". Tiny, huge or infinite values (rare) go
    # through repr itself, whose exponent form differs from Arrow's
    plain = pc.invert(pc.match_substring_regex(text, "[.en]"))
    text = pc.if_else(plain, pc.binary_join_element_wise(text, _s(".0"), _s("")), text)
    odd = np.isfinite(values) & (values != 0) & ((np.abs(values) < 1e-4) | (np.abs(values) >= 1e16))
    odd |= np.isinf(values)
    if odd.any():
        where = np.flatnonzero(odd)
        text = _put(text, where, [json.dumps(float(values[i])) for i in where])
    return pc.if_else(pc.is_nan(pc.fill_null(arr.cast(pa.float64()), float("nan"))), NULL, text)


def _list_json(arr: pa.Array, indent: str) -> pa.Array:
    """list<string|int> cells as indented JSON arrays (``[]`` when empty)."""
    flat = arr.flatten()
    items = _json_text(flat, "") if len(flat) else pa.array([], STR)
    inner = indent + "  "
    lists = pa.ListArray.from_arrays(arr.offsets, items, mask=arr.is_null())
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


def flow_records(flows, keys: list[str], vantage_keys: list[str]) -> str:
    """The flows as JSON records at depth 2 of the report, joined by ``,\\n``."""
    field_indent, n = " " * 6, len(flows)
    parts = []      # text between the values, then the value, for one join over all columns
    for k in keys:
        col = _json_text(_arrow(flows[k]), field_indent) if k in flows else pa.array(["null"] * n, STR)
        parts += [_s(("    {\n" if not parts else ",\n") + f'{field_indent}"{k}": '), col]
    if "vantage_points" in flows:
        from .report_json import _value
        vps = [[{key: _value(vp.get(key)) for key in vantage_keys} for vp in v] if isinstance(v, (list, tuple)) else []
               for v in flows["vantage_points"]]
        parts += [_s(f',\n{field_indent}"vantage_points": '), _python_column(vps, field_indent)]
    end = pc.if_else(pa.array(np.arange(n) < n - 1), _s("\n    },\n"), _s("\n    }"))
    return _concat(pc.binary_join_element_wise(*parts, end, _s("")))


def _concat(arr: pa.Array) -> str:
    """All strings of ``arr`` back to back: the values buffer, decoded once."""
    arr = arr.cast(STR)
    offsets = np.frombuffer(arr.buffers()[1], np.int64, len(arr) + 1, arr.offset * 8)
    data = arr.buffers()[2]
    return data.to_pybytes()[offsets[0]:offsets[-1]].decode("utf-8")


__all__ = ["flow_records"]

"""Address texts of the flow columns: every (hi, lo) pair formatted as Python's ipaddress writes it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import numpy as np

from commpath.decode._flow_columns import _distinct_pairs, address_texts, addresses
from commpath.decode.engine import read_columns

CAPTURES = Path(__file__).resolve().parents[1] / "captures/broken"

MAPPED = np.uint64(0xFFFF << 32)


def _expected(hi: np.ndarray, lo: np.ndarray) -> list[str]:
    out = []
    for h, l in zip(hi.tolist(), lo.tolist()):
        a = ipaddress.IPv6Address((h << 64) | l)
        out.append(str(a.ipv4_mapped) if a.ipv4_mapped is not None else str(a))
    return out


def test_mixed_ipv4_and_ipv6_addresses_as_ipaddress_writes_them():
    rng = np.random.default_rng(7)
    n = 20_000
    hi = rng.choice(np.array([0, 0x20010DB800000000, 0xFE80000000000000], np.uint64), n)
    lo = rng.integers(0, 3_000, n).astype(np.uint64)
    lo[hi == 0] |= MAPPED                     # IPv4, stored IPv4-mapped
    lo[:5] = np.uint64(0)                     # "::" among them
    hi[:5] = np.uint64(0)
    assert addresses(hi, lo).tolist() == _expected(hi, lo)


def test_ipv4_only_takes_the_same_texts():
    lo = (np.arange(1, 5_001, dtype=np.uint64) * np.uint64(7919)) | MAPPED
    hi = np.zeros_like(lo)
    assert addresses(hi, lo).tolist() == _expected(hi, lo)


def test_distinct_pairs_are_numpys_unique_rows():
    rng = np.random.default_rng(3)
    hi = rng.integers(0, 4, 50_000).astype(np.uint64)
    lo = rng.integers(0, 900, 50_000).astype(np.uint64)
    uhi, ulo, inverse = _distinct_pairs(hi, lo)
    rows, inv = np.unique(np.stack([hi, lo], axis=1), axis=0, return_inverse=True)
    assert np.array_equal(uhi, rows[:, 0]) and np.array_equal(ulo, rows[:, 1])
    assert np.array_equal(inverse, inv.reshape(-1))
    assert np.array_equal(uhi[inverse], hi) and np.array_equal(ulo[inverse], lo)


def test_address_codes_index_their_texts():
    hi = np.array([0, 0x20010DB800000000, 0, 0x20010DB800000000], np.uint64)
    lo = np.array([7 | MAPPED, 1, 7 | MAPPED, 2], np.uint64)
    codes, texts = address_texts(hi, lo)
    assert [texts[int(c)].as_py() for c in codes] == _expected(hi, lo)
    assert len(texts) == 3                    # one text per distinct address


def test_flow_columns_keep_no_view_of_the_flow_table():
    """A column sliced out of the (flows × 23) table would keep the whole table alive with it."""
    flows, _, _ = read_columns([CAPTURES], keep_streams=False)
    assert sum(len(cols["flow_id"]) for cols in flows) > 0
    for name, values in ((n, v) for cols in flows for n, v in cols.items()):
        if isinstance(values, np.ndarray):
            assert values.base is None or values.base.ndim == 1, name


def test_the_flow_table_grows_in_place_or_beside_a_live_view():
    from commpath.decode._flowtable import FlowTable
    table = FlowTable(4)
    table.fi[:] = 7
    table._grow_flows()                        # nothing else holds it: resized in place
    assert table.fi.shape[0] == 8 and (table.fi[:4] == 7).all() and (table.fi[4:] == 0).all()
    view = table.fi[:2]
    table._grow_flows()                        # a view is alive: copied, and the view still reads its rows
    assert table.fi.shape[0] == 16 and (view == 7).all() and (table.fi[:4] == 7).all() and (table.fi[8:] == 0).all()


def test_ipv4_texts_of_every_octet_width():
    rng = np.random.default_rng(11)
    v4 = np.concatenate([np.array([0, 0xFFFFFFFF, 0x010A64C8, 0x09636300], np.uint64),   # 1.10.100.200, 9.99.99.0
                         rng.integers(0, 1 << 32, 50_000, dtype=np.uint64)])
    lo, hi = v4 | MAPPED, np.zeros_like(v4)
    assert addresses(hi, lo).tolist() == _expected(hi, lo)
    assert addresses(hi[:0], lo[:0]).tolist() == []

"""The addresses' factorization shared by a run's view, role masks and findings (classify.view.shared_address_codes)."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from commpath.classify import view
from commpath.classify.view import address_codes, shared_address_codes


def _columns(n: int = 1000):
    src = pd.Series([f"10.0.{i // 256}.{i % 256}" for i in range(n)], dtype="string[pyarrow]")
    dst = pd.Series(["192.0.2.10" if i % 3 else None for i in range(n)], dtype="string[pyarrow]")
    return src, dst


def _counted(monkeypatch) -> list[int]:
    """The lengths of the columns each factorization of address_codes was computed for."""
    calls: list[int] = []
    real = view._factorized

    def factorized(columns):
        calls.append(sum(len(c) for c in columns))
        return real(columns)
    monkeypatch.setattr(view, "_factorized", factorized)
    return calls


def test_the_same_columns_are_factorized_once_within_and_every_time_outside(monkeypatch):
    src, dst = _columns()
    calls = _counted(monkeypatch)
    (s0, d0), distinct0 = address_codes(src, dst)
    address_codes(src, dst)
    assert len(calls) == 2                      # no sharing outside the context
    with shared_address_codes():
        first = address_codes(src, dst)
        # another Series over the same Arrow data (as normalize_ips and a shallow copy give) hits
        again = address_codes(src.astype("string").fillna(""), dst.copy(deep=False))
        assert again is first
        assert len(calls) == 3
        other = address_codes(dst, src)          # other columns, or another order: computed
        assert len(calls) == 4 and other is not first
    assert view._shared_codes.get() is None     # released on leaving
    (s1, d1), distinct1 = first
    assert np.array_equal(s0, s1) and np.array_equal(d0, d1) and distinct0.equals(distinct1)
    assert list(distinct1.take(d1[:3])) == ["", "192.0.2.10", "192.0.2.10"]     # missing -> ""


def test_shared_codes_are_read_only():
    src, dst = _columns()
    with shared_address_codes():
        (s, d), _ = address_codes(src, dst)
        with pytest.raises(ValueError):
            s[0] = 5


def test_equal_texts_in_another_array_are_not_taken_for_the_same(monkeypatch):
    src, dst = _columns()
    calls = _counted(monkeypatch)
    with shared_address_codes():
        address_codes(src, dst)
        copy = pd.Series(list(src), dtype="string[pyarrow]")     # new Arrow data, equal texts
        address_codes(copy, dst)
    assert len(calls) == 2


def test_object_columns_are_never_shared(monkeypatch):
    src, dst = (c.astype(object) for c in _columns())
    calls = _counted(monkeypatch)
    with shared_address_codes():
        address_codes(src, dst)
        address_codes(src, dst)
    assert len(calls) == 2


def test_another_thread_does_not_see_the_context(monkeypatch):
    src, dst = _columns()
    calls = _counted(monkeypatch)
    with shared_address_codes():
        address_codes(src, dst)
        t = threading.Thread(target=lambda: address_codes(src, dst))
        t.start()
        t.join()
    assert len(calls) == 2


def test_a_run_factorizes_its_addresses_once(monkeypatch):
    """open(): the cluster view, the role masks and the findings' keys share one factorization."""
    from pathlib import Path

    import commpath
    files = sorted((Path(__file__).resolve().parents[1] / "captures" / "default").rglob("*.pcap*"))
    assert files
    calls = _counted(monkeypatch)
    analysis = commpath.open(*files, merge=False)
    n = len(analysis.flows)
    assert n and len(analysis.findings)
    assert calls.count(2 * n) == 1, calls
    assert view._shared_codes.get() is None

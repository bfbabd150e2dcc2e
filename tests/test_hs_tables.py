"""Captures analysed apart and resolved together: handshake rows sent as tables give one analyzer's tables."""

from __future__ import annotations

import pandas as pd

import commpath
from commpath.decode.handshakes import HandshakeAnalyzer
from test_tls_resumption import needs_tcpdump, record_resumed_ticket
from test_x509_keylog import NOW, ca_chain, two_servers_under_one_intermediate  # noqa: F401 (a fixture)

TABLES = ("tls", "ssh", "http", "certs")


def _together(analyzers: list[HandshakeAnalyzer], ca=None):
    """The analyzers' parts absorbed as rows by one analyzer and as tables by another: their results,
    which must be the same tables."""
    rows, tables = HandshakeAnalyzer(ca), HandshakeAnalyzer(ca)
    for a in analyzers:            # flow ids already those of the run: base 0
        rows.absorb(a.unresolved(), 0)
        tables.absorb(a.unresolved_tables(), 0)
    by_rows, by_tables = rows.result(), tables.result()
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(by_rows, name), getattr(by_tables, name), check_exact=True)
    return by_tables


@needs_tcpdump
def test_session_resumed_in_another_part_inherits_the_client_certificate_from_tables(tmp_path):
    """The full mutual-TLS handshake analysed in one part, its ticket resumed in another: resolved from
    the parts' tables, the resumed connection inherits the client certificate, as in one analyzer."""
    pcap, resumed = record_resumed_ticket(tmp_path)
    assert resumed
    cap = commpath.read(pcap, keep_streams=True)
    flows = cap.flows.sort_values("flow_id")
    assert len(flows) == 2
    one, apart = HandshakeAnalyzer(), []
    for row in flows.itertuples():
        fs = cap.streams[row.flow_id]
        part = HandshakeAnalyzer()
        for a in (one, part):
            a.feed(fs, "tls", row.ts_start, row.dst_ip)
        apart.append(part)
    got = _together(apart)
    pd.testing.assert_frame_equal(one.result().tls, got.tls, check_exact=True)
    again = got.tls.iloc[1]
    assert again.resumed and again.client_cert_source == "resumed-from" and again.client_cert == "presented"
    assert again.resumed_from == got.tls.iloc[0].flow_id


def test_chain_completed_by_another_parts_intermediate_from_tables(tmp_path, ca_chain):
    """A server without its intermediate in one part, another (same CA) sending it in the next: the
    tables resolved over the run complete the first chain (chain_from_run), as one analyzer does."""
    bundle, inter, a, b, flow = two_servers_under_one_intermediate(ca_chain, tmp_path)
    one, apart = HandshakeAnalyzer(ca=str(bundle)), []
    for fs, dst in ((flow(1, "b.example", [b]), "192.0.2.2"), (flow(2, "a.example", [a, inter]), "192.0.2.1")):
        part = HandshakeAnalyzer(ca=str(bundle))
        for x in (one, part):
            x.feed(fs, "tls", NOW.timestamp(), dst)
        apart.append(part)
    got = _together(apart, str(bundle))
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(one.result(), name), getattr(got, name), check_exact=True)
    tls = got.tls.set_index("flow_id")
    assert tls.loc[1].server_cert_verified and tls.loc[1].chain_from_run and list(tls.loc[1].verify_reasons) == []
    assert tls.loc[2].server_cert_verified and not tls.loc[2].chain_from_run


def test_lab_run_analysed_per_capture_from_tables_equals_rows():
    """Every capture of a recorded lab run analysed apart (with its CA bundle and key log), put
    together as tables and as rows: the same tables."""
    from pathlib import Path
    folder = Path(__file__).resolve().parent.parent / "captures/default"
    ca, keylog = str(folder / "pki/ca.crt"), str(folder / "keylog.txt")
    rows, tables, base = HandshakeAnalyzer(ca, keylog), HandshakeAnalyzer(ca, keylog), 0
    for pcap in sorted(folder.glob("*/*.pcap")):
        a = HandshakeAnalyzer(ca, keylog)
        n = len(commpath.read(pcap, keep_streams=False, on_streams=a).flows)
        rows.absorb(a.unresolved(), base)
        tables.absorb(a.unresolved_tables(), base)
        base += n
    by_rows, by_tables = rows.result(), tables.result()
    assert len(by_tables.tls) and len(by_tables.http)
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(by_rows, name), getattr(by_tables, name), check_exact=True)
    assert by_rows.warnings == by_tables.warnings


def test_result_of_its_own_tables_is_its_result():
    """A Dask decode task writes its capture's own tables from the typed tables it sends the driver:
    the same tables as ``result()`` of its rows, for every capture of a lab run (CA bundle and key
    log given), and the tables it sends are left unchanged."""
    import pickle
    from pathlib import Path
    folder = Path(__file__).resolve().parent.parent / "captures/default"
    ca, keylog = str(folder / "pki/ca.crt"), str(folder / "keylog.txt")
    checked = 0
    for pcap in sorted(folder.glob("*/*.pcap")):
        by_rows, by_tables = HandshakeAnalyzer(ca, keylog), HandshakeAnalyzer(ca, keylog)
        for a in (by_rows, by_tables):
            commpath.read(pcap, keep_streams=False, on_streams=a)
        tables = by_tables.unresolved_tables()
        sent = pickle.dumps(tables)
        want, got = by_rows.result(), by_tables.result_of_tables(tables)
        for name in TABLES:
            pd.testing.assert_frame_equal(getattr(want, name), getattr(got, name), check_exact=True)
        assert want.warnings == got.warnings
        assert pickle.dumps(tables) == sent
        checked += len(got.tls)
    assert checked


def test_rows_transposed_as_zip_gives_them(monkeypatch):
    """frame_from_rows reads the rows column by column: the same values as ``zip(*rows)``, rows of
    one length (a strided slice per column) or not (zip itself: it stops at the shortest row)."""
    from commpath.decode._hs_tables import _transposed, frame_from_rows
    even = [(i, f"s{i % 3}", None if i % 2 else [i], i % 2 == 0) for i in range(1000)]
    assert [tuple(c) for c in _transposed(even)] == list(zip(*even))
    ragged = [(1, "a", True, "extra"), (2, "b", False)]
    assert [tuple(c) for c in _transposed(ragged)] == list(zip(*ragged))
    assert not isinstance(_transposed(even), zip)
    import commpath.decode._hs_tables as hs_tables
    monkeypatch.setattr(hs_tables, "FLAT_ITEMS", 3999)        # 4,000 items: past the one list's bound
    assert isinstance(_transposed(even), zip) and [tuple(c) for c in _transposed(even)] == list(zip(*even))
    columns = {"flow_id": "int64", "name": "string", "ids": "object", "even": "bool"}
    rows = [r + ("an item beyond the columns",) for r in even]
    df = frame_from_rows(rows, columns)
    assert list(df.columns) == list(columns) and len(df) == 1000
    assert df["name"].tolist() == [f"s{i % 3}" for i in range(1000)] and df["ids"][1] is None
    assert df["ids"][2] == [2] and df["even"].tolist() == [i % 2 == 0 for i in range(1000)]

"""The merge of vantage points by parts: flows split by initiator address, clock offsets reduced from
the parts' pairs, each part merged alone (as Dask workers do) give the merge of the whole run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import commpath
from commpath.classify import CLASSIFY_COLUMNS, classify_with_view, load_inventory
from commpath.decode.handshakes import HandshakeAnalyzer
from commpath.decode.merge import (adopt_labels, estimate_clock_offsets, handshake_preference, merge_run,
                                   offsets_from_pairs, representatives)
from commpath.decode.schema import FLOW_COLUMNS, concat_frames
from commpath.distributed._merge import initiator_parts, merge_part, pairs_of, split, together

REPO = Path(__file__).resolve().parents[1]
CAPTURES = REPO / "captures"
SCENARIOS = sorted(p.parent.name for p in CAPTURES.glob("*/ground-truth.yaml"))


@pytest.mark.parametrize("n", [1, 3, 7])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_merge_by_initiator_parts_equals_the_whole_run(scenario, n):
    folder = CAPTURES / scenario
    analyzer = HandshakeAnalyzer(str(folder / "pki/ca.crt") if (folder / "pki/ca.crt").is_file() else None, None)
    cap = commpath.read(folder, keep_streams=False, on_streams=analyzer)
    hs = analyzer.result()
    classified, _ = classify_with_view(cap.flows, hs.tls, load_inventory(folder / "inventory.yaml"), hs.certs,
                                       cap.captures)
    whole, offsets, representative = merge_run(classified, cap.captures, hs.tls)
    adopt_labels(whole, classified, CLASSIFY_COLUMNS)
    assert len(whole) < len(classified) and whole["vantage_points"].map(len).max() > 1
    # the merge's own map of every view to its connection's row is the one the merged rows give
    assert representative == representatives(whole) and len(representative) == len(classified)

    # each capture's flows split by initiator address, part p of every capture together
    captures = [g.reset_index(drop=True) for _, g in classified.groupby("capture", sort=False, observed=True)]
    cut = [split((c, handshake_preference(c, hs.tls)), n) for c in captures]
    pieces = [[parts[p] for parts in cut] for p in range(n)]
    assert sum(len(f) for parts in cut for f, _ in parts) == len(classified)
    parts = [together(pieces[p]) for p in range(n)]
    pairs = [pairs_of(parts[p], cap.captures) for p in range(n)]
    reduced = offsets_from_pairs(pd.concat([t for t, _ in pairs]), set().union(*(h for _, h in pairs)), cap.captures)
    assert_frame_equal(reduced, offsets, check_exact=True)
    assert_frame_equal(reduced, estimate_clock_offsets(classified, cap.captures), check_exact=True)
    merged = concat_frames([merge_part(parts[p], cap.captures, reduced) for p in range(n)], FLOW_COLUMNS)
    merged = merged.sort_values(["ts_start_aligned", "flow_id"], kind="stable").reset_index(drop=True)
    assert_frame_equal(merged, whole, check_exact=True)


def test_initiator_parts_hold_a_connection_seen_before_and_after_dnat_together():
    """A pod's connection to the VIP and its DNAT twin to the apiserver differ in destination, not in
    initiator socket: they land in one part whatever the number of parts."""
    folder = CAPTURES / "default"
    cap = commpath.read(folder)
    flows = cap.flows
    vip = flows[(flows["dst_port"] == 443) & (flows["transport"].astype(str) == "tcp")]
    assert len(vip)
    twins = flows.merge(vip[["src_ip", "src_port"]], on=["src_ip", "src_port"])
    assert (twins["dst_port"] != 443).any()       # the same socket seen toward another destination
    for n in (2, 5, 16):
        parts = initiator_parts(twins, n)
        assert twins.assign(p=parts).groupby(["src_ip", "src_port"], observed=True)["p"].nunique().max() == 1


def test_vantage_points_text_is_the_json_modules():
    """report.json's vantage points, written per key in Arrow for many-host runs, are the json module's
    text, also for nulls, NaN, escapes, numpy integers and a column mixing integers and floats."""
    import json

    import numpy as np

    from commpath.present._json_columns import _vantage_column
    from commpath.present.report_json import VANTAGE_KEYS, _value
    indent = " " * 6
    cells = [
        [{"host": "cp1", "capture": "cp1/eth0.pcap", "flow_id": 1, "first_frame": 3, "ts_start": 1700000000.123456}],
        [], None,
        [{"host": 'n"1', "capture": "é\\x", "flow_id": 2, "first_frame": 4, "ts_start": 2.0},
         {"host": None, "capture": "c", "flow_id": 3, "first_frame": 5, "ts_start": float("nan")}],
        [{"host": "x\n\x01", "capture": "c", "flow_id": np.int64(7), "first_frame": 9, "ts_start": 1e-7}],
        [{"host": "h", "capture": "c", "flow_id": 7, "first_frame": 9, "ts_start": 1},
         {"host": "h", "capture": "c", "flow_id": 8, "first_frame": 9, "ts_start": 1.5}],
    ]
    for batch in (cells, cells[:1], cells[1:3], cells[3:5]):
        expected = [json.dumps([{k: _value(vp.get(k)) for k in VANTAGE_KEYS} for vp in v] if isinstance(v, list) else [],
                               indent=2, ensure_ascii=False).replace("\n", "\n" + indent) for v in batch]
        assert _vantage_column(batch, VANTAGE_KEYS, indent).to_pylist() == expected

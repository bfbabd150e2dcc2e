"""Classification by parts: the cluster view from per-capture summaries and each capture classified
alone (as Dask workers do) give the view and the labels of classifying the whole run at once."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import commpath
from commpath.classify import classify_with_view, load_inventory
from commpath.classify.roles import (twin_rows, twin_sources, view_needs_twins, view_of_parts, view_rows, vip_flows,
                                     vip_ports)
from commpath.classify.view import tls_features
from commpath.decode.handshakes import HandshakeAnalyzer
from commpath.decode.merge import handshake_preference
from commpath.distributed._classify import classify_part

REPO = Path(__file__).resolve().parents[1]
CAPTURES = REPO / "captures"
SCENARIOS = sorted(p.parent.name for p in CAPTURES.glob("*/ground-truth.yaml"))
PUBLIC = REPO.parent / "shared/pcaps/public"
LABELS = ("path", "src_role", "dst_role", "roles_inferred")


def _by_parts(folder: Path, inventory, ca):
    analyzer = HandshakeAnalyzer(ca, None)
    cap = commpath.read(folder, keep_streams=False, on_streams=analyzer)
    hs = analyzer.result()
    whole, view = classify_with_view(cap.flows, hs.tls, inventory, hs.certs, cap.captures)
    parts = [g.reset_index(drop=True) for _, g in cap.flows.groupby("capture", sort=False, observed=True)]
    prepared = [(p, tls_features(p, hs.tls, hs.certs), handshake_preference(p, hs.tls)) for p in parts]
    rows = [view_rows(f, feat, vip_ports(inventory)) for f, feat, _ in prepared]
    twins = []
    if view_needs_twins(inventory):
        sources = set().union(*(twin_sources(r) for r in rows))
        twins = [twin_rows(f, feat, sources) for f, feat, _ in prepared] if sources else []
    parts_view = view_of_parts(rows + twins, inventory)
    vip = vip_flows(rows, parts_view)
    labelled = pd.concat([classify_part(p, parts_view, vip, cap.captures)[0] for p in prepared], ignore_index=True)
    return whole, view, labelled, parts_view, rows


@pytest.mark.parametrize("with_inventory", [True, False], ids=["inventory", "inferred"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_view_and_labels_by_capture_equal_the_whole_run(scenario, with_inventory):
    folder = CAPTURES / scenario
    inventory = load_inventory(folder / "inventory.yaml") if with_inventory else None
    ca = str(folder / "pki/ca.crt") if (folder / "pki/ca.crt").is_file() else None
    whole, view, labelled, parts_view, rows = _by_parts(folder, inventory, ca)
    assert len(rows) > 1 and len(whole) > 50
    assert parts_view == view
    assert view.apiserver_eps and view.vip_eps and view.node_addrs
    # the summaries are smaller than the flows they stand for (distinct rows, whole only toward the VIP)
    assert sum(map(len, rows)) < len(whole)
    for col in LABELS:
        assert labelled[col].tolist() == whole[col].tolist(), col
        assert labelled[col].dtype == whole[col].dtype, col
    # DNAT pairing across captures: pods' connections seen after DNAT are labelled as the pods'
    assert (whole["src_role"].astype(str) == "pod").any()


def test_public_captures_by_capture_equal_the_whole_run():
    whole, view, labelled, parts_view, rows = _by_parts(PUBLIC, None, None)
    assert len(rows) > 20
    assert parts_view == view
    for col in LABELS:
        assert labelled[col].tolist() == whole[col].tolist(), col


def test_vip_found_from_dnat_twins_in_other_captures():
    """Without an inventory the VIP is the other destination of a pod's connection seen before and
    after DNAT: the twin rows gathered from every capture find it as all the flows do."""
    folder = CAPTURES / "default"
    whole, view, labelled, parts_view, rows = _by_parts(folder, None, None)
    assert "vip_eps" in view.inferred and parts_view.vip_eps == view.vip_eps
    without_twins = view_of_parts(rows, None)      # only the flows toward port 443 kept whole
    assert without_twins.apiserver_eps == view.apiserver_eps

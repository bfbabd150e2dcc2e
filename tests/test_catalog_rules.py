"""The catalog drives classification: its rules are validated on load and applied in their order."""

from __future__ import annotations

from pathlib import Path

import pytest

from commpath.classify.catalog import default_ports, display_order, load_catalog, match_rules, path_colors
from commpath.classify.classifier import apply_rules
from commpath.classify.roles import FLOW_MASKS, INITIATOR_MASKS, RESPONDER_MASKS, role_masks
from commpath.classify.view import build_view, tls_features
from commpath.errors import InputError
from commpath.present import palette

from test_classify import INVENTORY, flows_frame, row

SMALL = str(Path(__file__).parent / "fixtures" / "cfg" / "catalog-small.yaml")
SHIPPED = Path(__file__).resolve().parents[1] / "commpath" / "cfg" / "catalog.yaml"


def _classify_with(catalog: str, rows: list[dict], inventory=None):
    flows = flows_frame(rows)
    feat = tls_features(flows, None, None)
    view = build_view(flows, feat, inventory)
    masks = role_masks(flows, feat, view)
    return apply_rules(masks, view, match_rules(catalog))


def test_rules_apply_in_their_order_not_the_file_order():
    path, src, dst = _classify_with(SMALL, [row("192.0.2.10:40000", "192.0.2.21:10250"),
                                            row("10.244.1.5:40001", "192.0.2.21:10250"),
                                            row("192.0.2.21:40002", "192.0.2.10:4789", transport="udp"),
                                            row("192.0.2.21:40003", "192.0.2.10:9999")])
    # without an inventory the 6443/10250 responders are inferred; the first flow's source then is
    # no apiserver host (nothing dials 6443), so both kubelet flows are "to-kubelet"
    assert list(path) == ["to-kubelet", "to-kubelet", "other", "other"]
    assert list(dst[:2]) == ["kubelet", "kubelet"]


def test_named_ports_follow_the_inventory(tmp_path):
    from commpath.classify import load_inventory
    inv_file = tmp_path / "inventory.yaml"
    inv_file.write_text(INVENTORY + "kubelet_port: 11250\n")
    inv = load_inventory(inv_file)
    path, src, dst = _classify_with(SMALL, [row("192.0.2.10:40000", "192.0.2.21:10250"),
                                            row("192.0.2.10:40001", "192.0.2.21:11250")], inv)
    assert list(path) == ["other", "apiserver-first"]
    assert (src[1], dst[1]) == ("apiserver", "kubelet")


def test_the_shipped_catalog_feeds_palette_and_ports():
    assert palette.PATH_ORDER == tuple(display_order())
    assert palette.PATH_COLORS == path_colors()
    assert default_ports()["kubelet_port"] == 10250
    for p in load_catalog()["paths"]:
        for alt in p["match"]["any_of"]:
            assert alt.get("initiator", "any") in INITIATOR_MASKS
            assert alt.get("responder", "any") in RESPONDER_MASKS
            assert set(alt.get("flow", [])) <= set(FLOW_MASKS)


@pytest.mark.parametrize("old, new, key", [
    ("responder: kubelet, ports: [kubelet_port]}", "responder: kublet, ports: [kubelet_port]}",
     "paths[0].match.any_of[0].responder"),
    ("ports: [kubelet_port]}\n    reference", "ports: [kubelet_prot]}\n    reference",
     "paths[0].match.any_of[0].ports[0]"),
    ("    initiator: [any]\n    responder: [kubelet]", "    initiator: [anybody]\n    responder: [kubelet]",
     "paths[0].initiator[0]"),
    ("order: 20", "order: 10", "paths[1].match.order"),
    ('color: "#000001"', 'color: "blue"', "paths[0].display.color"),
    ("        - {transport: udp, ports: [4789]}", "        - {transport: sctp, ports: [4789]}",
     "paths[2].match.any_of[0].transport"),
    ("    judged: false", "    judged: false\n    colour: red", "paths[2]"),
])
def test_a_bad_catalog_is_rejected_with_file_line_and_key(tmp_path, old, new, key):
    text = Path(SMALL).read_text()
    assert old in text
    bad = tmp_path / "catalog.yaml"
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(InputError) as err:
        load_catalog(str(bad))
    message = str(err.value)
    assert str(bad) in message and key in message
    line = int(message.split(str(bad) + ":", 1)[1].split(":", 1)[0])
    assert 1 <= line <= len(bad.read_text().splitlines())

"""The path map's node layout: networkx's multipartite layout, as the figures rescale it."""

from __future__ import annotations

import itertools

import networkx as nx
import pytest

from commpath.present._figure_data import ROLE_ORDER, is_control_plane, node_positions, role_rank


def _networkx_layout(roles: list[str]) -> dict[str, tuple[float, float]]:
    """What node_positions computed with networkx: columns evenly spaced, rescaled to x = ±1 and unit gaps."""
    if len(roles) < 2:
        return {r: (0.0, 0.0) for r in roles}
    left = sorted([r for r in roles if is_control_plane(r)], key=role_rank)
    right = sorted([r for r in roles if not is_control_plane(r)], key=role_rank)
    layers = {i: column for i, column in enumerate(c for c in (left, right) if c)}
    graph = nx.Graph()
    graph.add_nodes_from(roles)
    pos = nx.multipartite_layout(graph, subset_key=layers, align="vertical", scale=1.0)
    xs = sorted({round(float(p[0]), 9) for p in pos.values()})
    x_unit = (xs[-1] - xs[0]) / 2 if len(xs) > 1 else 1.0
    gaps = [abs(float(pos[c[i]][1]) - float(pos[c[i + 1]][1])) for c in layers.values() for i in range(len(c) - 1)]
    y_unit = min(gaps) if gaps else 1.0
    centre = (xs[0] + xs[-1]) / 2
    return {r: ((float(p[0]) - centre) / x_unit, -float(p[1]) / y_unit) for r, p in pos.items()}


ROLES = [*ROLE_ORDER, "custom-b", "custom-a"]
CASES = [list(c) for n in (0, 1, 2, 3, 5) for c in itertools.islice(itertools.combinations(ROLES, n), 40)]
CASES += [ROLES, [r for r in ROLES if is_control_plane(r)], [r for r in ROLES if not is_control_plane(r)]]


@pytest.mark.parametrize("roles", CASES, ids=lambda c: ",".join(c) or "none")
def test_the_layout_is_networkxs(roles):
    got, want = node_positions(roles), _networkx_layout(roles)
    assert got.keys() == want.keys()
    for r in roles:
        assert got[r] == pytest.approx(want[r], abs=1e-6), r


def test_control_plane_left_first_role_on_top():
    pos = node_positions(["kubelet", "apiserver", "etcd", "pod"])
    assert pos["apiserver"][0] == -1.0 and pos["kubelet"][0] == 1.0
    assert pos["apiserver"][1] > pos["etcd"][1] and pos["kubelet"][1] > pos["pod"][1]

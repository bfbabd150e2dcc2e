"""Connections linked across DNAT are grouped as networkx's connected components group them."""

import networkx as nx
import numpy as np
import pytest

from commpath.decode.merge import component_minimum


def _networkx(a, b) -> dict[int, int]:
    graph = nx.Graph()
    graph.add_edges_from(zip(a.tolist(), b.tolist()))
    return {n: min(group) for group in nx.connected_components(graph) for n in group}


@pytest.mark.parametrize("seed", range(12))
def test_component_minimum_is_networkxs(seed):
    rng = np.random.default_rng(seed)
    n_nodes = int(rng.integers(2, 400))
    n_edges = int(rng.integers(1, 2 * n_nodes))
    a = rng.integers(0, n_nodes * 3, n_edges).astype(np.int64)     # sparse ids, as connection numbers are
    b = rng.integers(0, n_nodes * 3, n_edges).astype(np.int64)
    nodes, smallest = component_minimum(a, b)
    assert dict(zip(nodes.tolist(), smallest.tolist())) == _networkx(a, b)


def test_long_chains_and_cycles():
    chain = np.arange(1000, dtype=np.int64)            # 0-1-2-...-999: one component, numbered 0
    nodes, smallest = component_minimum(chain[1:], chain[:-1])
    assert (smallest == 0).all() and len(nodes) == 1000
    a = np.array([5, 6, 7, 20, 21], np.int64)           # a cycle 5-6-7-5 and a pair 20-21; self-loop 9
    b = np.array([6, 7, 5, 21, 20], np.int64)
    nodes, smallest = component_minimum(np.r_[a, 9], np.r_[b, 9])
    assert dict(zip(nodes.tolist(), smallest.tolist())) == {5: 5, 6: 5, 7: 5, 9: 9, 20: 20, 21: 20}

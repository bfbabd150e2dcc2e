"""Each flow gets exactly one path id of the catalog and the roles of its two ends (vectorized).

The catalog's rules (``match`` of every path, tried in their ``order``) combine the named role
masks of :func:`commpath.classify.roles.role_masks`: a few column operations per rule, no Python
per flow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .catalog import match_rules, path_ids, role_names
from .inventory import Inventory
from .roles import ADDR_ROLES, RoleMasks, role_masks
from .view import ClusterView, build_view, tls_features

#: Roles an end of a flow can have (the categories of ``src_role`` and ``dst_role``).
ROLES = role_names()
#: every role text an end can get: its address role (roles.ADDR_ROLES), then the catalog's roles
ROLE_TEXTS = list(dict.fromkeys([*ADDR_ROLES, *ROLES]))
#: Columns classification adds to the flow table.
CLASSIFY_COLUMNS: dict[str, str] = {
    "path": "category",            # the flow's path id (categories: the catalog's ids)
    "src_role": "category",        # role of the initiator (categories: ROLES)
    "dst_role": "category",        # role of the responder
    "roles_inferred": "bool",      # a role or path rests on inference, not on the inventory
}


def classify(flows: pd.DataFrame, tls: pd.DataFrame | None = None, inventory: Inventory | None = None,
             certs: pd.DataFrame | None = None, captures: pd.DataFrame | None = None) -> pd.DataFrame:
    """``flows`` plus ``path``, ``src_role``, ``dst_role`` (categories) and ``roles_inferred``.

    ``certs`` (CERT_COLUMNS) lets certificate subjects and SANs name roles; ``captures``
    (CAPTURE_COLUMNS, with each host's ``role`` from its manifest) tells whose loopback a
    connection to ``127.0.0.1:<apiserver port>`` ran on.
    """
    return classify_with_view(flows, tls, inventory, certs, captures)[0]


def classify_with_view(flows: pd.DataFrame, tls: pd.DataFrame | None = None, inventory: Inventory | None = None,
                       certs: pd.DataFrame | None = None, captures: pd.DataFrame | None = None
                       ) -> tuple[pd.DataFrame, ClusterView]:
    """:func:`classify` and the cluster view it used (inventory facts plus inferred ones)."""
    # shallow: classification only adds columns (path, roles), so the decoded ones are shared with
    # ``flows``, not copied (a million flows: 235 MB); adding a column never reaches ``flows``
    out = flows.copy(deep=False)
    feat = tls_features(out, tls, certs)
    view = build_view(out, feat, inventory)
    label(out, role_masks(out, feat, view, captures), view)
    return out, view


def label(flows: pd.DataFrame, masks: RoleMasks, view: ClusterView) -> None:
    """Write ``path``, ``src_role``, ``dst_role`` and ``roles_inferred`` into ``flows`` from the catalog's rules
    (shared by the single process and the Dask tasks, which classify one capture at a time)."""
    paths, path, src_role, dst_role = rule_codes(masks, view, match_rules())
    flows["path"] = _categorical(path, paths, path_ids())
    flows["src_role"] = _categorical(src_role, ROLE_TEXTS, ROLES)
    flows["dst_role"] = _categorical(dst_role, ROLE_TEXTS, ROLES)
    flows["roles_inferred"] = masks.inferred


def _categorical(codes: np.ndarray, texts: list[str], categories: list[str]) -> pd.Categorical:
    """Codes into ``texts`` as a Categorical of ``categories`` (a text not among them is missing), made
    from the codes: a million texts would each be hashed again."""
    to_category = np.array([categories.index(t) if t in categories else -1 for t in texts], np.int64)
    return pd.Categorical.from_codes(to_category[codes], categories=categories)


def apply_rules(masks: RoleMasks, view: ClusterView, rules: list[tuple[str, list[dict]]],
                default: str = "other") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(path, src_role, dst_role) per flow as texts: the first rule alternative that holds names them."""
    paths, path, src_role, dst_role = rule_codes(masks, view, rules, default)
    texts = np.array(ROLE_TEXTS, dtype=object)
    return np.array(paths, dtype=object)[path], texts[src_role], texts[dst_role]


def rule_codes(masks: RoleMasks, view: ClusterView, rules: list[tuple[str, list[dict]]],
               default: str = "other") -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(path texts, path, src_role, dst_role): per flow, codes into the path texts and ROLE_TEXTS of
    the first rule alternative that holds."""
    n = len(masks.transport)
    paths = list(dict.fromkeys([default, *(path_id for path_id, _ in rules)]))
    path = np.zeros(n, np.int64)
    # an end's address role until a rule names it
    src_role, dst_role = masks.src_addr_role.astype(np.int64), masks.dst_addr_role.astype(np.int64)
    free = np.ones(n, bool)
    for path_id, alternatives in rules:
        for alt in alternatives:
            hit = free & rule_mask(alt, masks, view)
            if not hit.any():
                continue
            free &= ~hit
            path[hit] = paths.index(path_id)
            initiator, responder = alt.get("roles") or (alt.get("initiator"), alt.get("responder"))
            if initiator in ROLES:
                src_role[hit] = ROLE_TEXTS.index(initiator)
            if responder in ROLES:
                dst_role[hit] = ROLE_TEXTS.index(responder)
    return paths, path, src_role, dst_role


def rule_mask(alt: dict, masks: RoleMasks, view: ClusterView) -> np.ndarray:
    """The flows one rule alternative holds for (see the key list at the top of cfg/catalog.yaml)."""
    hit = np.ones(len(masks.transport), bool)
    if "transport" in alt:
        hit &= masks.transport == alt["transport"]
    if "initiator" in alt:
        hit &= masks.initiator[alt["initiator"]]
    if "responder" in alt:
        hit &= masks.responder[alt["responder"]]
    for name in alt.get("flow", ()):
        hit &= masks.flow[name]
    for name in alt.get("not_responder", ()):
        hit &= ~masks.responder[name]
    if "ports" in alt:
        hit &= np.isin(masks.dst_port, _port_numbers(alt["ports"], view))
    if "initiator_ports" in alt:
        hit &= np.isin(masks.src_port, _port_numbers(alt["initiator_ports"], view))
    return hit


def _port_numbers(ports: list, view: ClusterView) -> list[int]:
    """Port names resolved through the cluster view (the inventory's values, else the catalog's)."""
    return [view.ports[p] if isinstance(p, str) else int(p) for p in ports]

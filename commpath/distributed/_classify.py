"""Classification on the workers: each capture's flows classified in their task with the run's view.

The driver never gathers the flows to classify them: each capture's decoded flows stay on the
worker that decoded them; a task per capture renumbers them and computes their handshake features,
returns a small summary for the cluster view (``classify.roles.view_rows``), and, once the driver
has built the view from the summaries and gathered the run's few flows to the service VIP, a task
per capture classifies them with that view (``classify.roles.role_masks`` with ``vip_flows``).
"""

from __future__ import annotations

import pandas as pd

from ..classify.classifier import label
from ..classify.roles import role_masks, twin_rows, view_rows
from ..classify.view import tls_features
from ..decode.merge import handshake_preference


def decoded_light(result: dict) -> dict:
    """The decode task's summary and handshake rows, without its flows (they stay on the worker)."""
    out = {k: v for k, v in result.items() if k != "tables"}
    if "tables" in result:
        out["handshakes"] = result["tables"]["handshakes"]
    return out


def prepare(result: dict, base: int, tls: pd.DataFrame, certs: pd.DataFrame) -> tuple:
    """The capture's flows numbered as in the run (``base``: the flows of the captures before it),
    their handshake features from the run's resolved ``tls`` rows of them and ``certs``, and how
    completely each saw its connection's start (the merge's preference among vantage points)."""
    flows = result["tables"]["flows"]
    flows = flows.assign(flow_id=flows["flow_id"] + base)     # a new frame: the task's result is shared
    return flows, tls_features(flows, tls, certs), handshake_preference(flows, tls)


def summary_rows(prepared: tuple, ports: set[int]) -> pd.DataFrame:
    return view_rows(prepared[0], prepared[1], ports)


def twins(prepared: tuple, sources: set[str]) -> pd.DataFrame:
    return twin_rows(prepared[0], prepared[1], sources)


def classify_part(prepared: tuple, view, vip: pd.DataFrame, captures: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """The capture's flows classified as ``classify.classify_with_view`` classifies the whole run's,
    with their merge preference."""
    flows, feat, preference = prepared
    out = flows.copy()
    label(out, role_masks(out, feat, view, captures, vip), view)
    return out, preference

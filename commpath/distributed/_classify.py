"""Classification on the workers: each host's flows classified in their task with the run's view.

The driver never gathers the flows to classify them: each capture's decoded flows stay on the
worker that decoded them; a task per host (its consecutive captures) renumbers them and computes
their handshake features from the host's own TLS rows, returns a small summary for the cluster view
(``classify.roles.view_rows``), and, once the driver has built the view from the summaries and
gathered the run's few flows to the service VIP, a task per host classifies them with that view
(``classify.roles.role_masks`` with ``vip_flows``).
"""

from __future__ import annotations

import pandas as pd

from ..classify.classifier import label
from ..classify.roles import role_masks, twin_rows, view_rows
from ..classify.view import tls_features
from ..decode.merge import handshake_preference
from ..decode.schema import FLOW_COLUMNS, concat_frames


def decoded_light(result: dict) -> dict:
    """The decode task's summary and handshake rows, without its flows (they stay on the worker)."""
    out = {k: v for k, v in result.items() if k != "tables"}
    if "tables" in result:
        out["handshakes"] = result["tables"]["handshakes"]
    return out


#: the TLS columns a capture's task reads (``tls_features``, ``handshake_preference``)
TASK_TLS_COLUMNS = ("flow_id", "sni", "server_cert_fingerprints", "client_cert_fingerprints", "established", "partial")
#: the certificate columns ``tls_features`` reads
TASK_CERT_COLUMNS = ("fingerprint", "subject", "sans")


def task_tls(tls: pd.DataFrame) -> pd.DataFrame:
    """The capture's TLS rows (sorted by flow id, as the run's table) as the classification tasks
    read them (``TASK_TLS_COLUMNS``): each flow's first row, the leaf fingerprints only. None of
    these columns is changed by the run-level steps (sessions resumed, chains completed), so each
    capture's own rows give them, on the worker that holds them."""
    t = tls[list(TASK_TLS_COLUMNS)].drop_duplicates("flow_id")
    for c in ("server_cert_fingerprints", "client_cert_fingerprints"):
        t[c] = pd.Series([v[:1] for v in t[c]], index=t.index, dtype=object)
    return t


def host_tls(results: list[dict], bases: list[int]) -> pd.DataFrame:
    """A host's captures' :func:`task_tls` rows (``results`` of ``_decode.decode_capture``), flow ids as in the run."""
    frames = [r["tables"]["task_tls"].assign(flow_id=lambda t, b=b: t["flow_id"] + b) for r, b in zip(results, bases)]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def prepare_host(results: list[dict], bases: list[int], certs: pd.DataFrame) -> tuple:
    """:func:`prepare` of one host's decode ``results`` with their own :func:`host_tls` rows, in
    one task (a task of its own could run on another worker than the results, and fetch them twice)."""
    return prepare(results, bases, host_tls(results, bases), certs)


def task_certs(certs: pd.DataFrame) -> pd.DataFrame:
    """The certificate columns a capture's task reads, one row per fingerprint (as ``tls_features`` keeps)."""
    return certs[[c for c in TASK_CERT_COLUMNS if c in certs]].drop_duplicates("fingerprint")


def prepare(results: list[dict], bases: list[int], tls: pd.DataFrame, certs: pd.DataFrame) -> tuple:
    """One host's captures' flows (consecutive in the run) numbered as in the run (``bases``: the
    flows of the captures before each), their handshake features from the run's resolved ``tls``
    rows of them and ``certs``, and how completely each saw its connection's start (the merge's
    preference among vantage points). Per host, not per capture: half the pandas calls per row on
    a host with two interfaces, and a host's captures are decoded on one worker mostly."""
    frames = [r["tables"]["flows"] for r in results]
    frames = [f.assign(flow_id=f["flow_id"] + b) for f, b in zip(frames, bases)]   # new frames: results are shared
    flows = frames[0] if len(frames) == 1 else concat_frames(frames, FLOW_COLUMNS)
    return flows, tls_features(flows, tls, certs), handshake_preference(flows, tls)


def host_groups(summaries: list[dict], live: list[int]) -> list[list[int]]:
    """The live captures in runs of consecutive captures of one host (a capture without a host alone):
    the classification and merge tasks' units, in capture order."""
    groups: list[list[int]] = []
    for i in live:
        host = summaries[i]["capture"].get("host")
        prev = groups[-1][-1] if groups else None
        if (prev is not None and host is not None and summaries[prev]["capture"].get("host") == host
                and all(summaries[j]["error"] for j in range(prev + 1, i))):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


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

"""The DataFrames users get: closed value sets as ordered categoricals with every allowed value,
UTC datetimes beside the epoch seconds, public helpers for the catalog."""

from __future__ import annotations

import pandas as pd
import pytest

import commpath
from commpath.check import SEVERITIES
from commpath.check.tables import PATH_VERDICTS
from commpath.decode.schema import CLIENT_CERT_STATES
from test_present_data import analysis_ids, lab_analysis, lab_scenarios, real_analyses

ORDERED = [("findings", "severity", SEVERITIES), ("paths", "verdict", PATH_VERDICTS),
           ("flows", "client_cert", CLIENT_CERT_STATES), ("tls", "client_cert", CLIENT_CERT_STATES)]


@pytest.mark.parametrize("which", analysis_ids())
def test_closed_value_sets_are_ordered_categoricals_with_every_value(which):
    analysis = real_analyses(which)
    for table, column, values in ORDERED:
        dtype = getattr(analysis, table)[column].dtype
        assert isinstance(dtype, pd.CategoricalDtype) and dtype.ordered, (table, column)
        assert list(dtype.categories) == list(values), (table, column)


@pytest.mark.skipif(not {"broken", "default"} <= set(lab_scenarios()), reason="bundled lab captures missing")
def test_sorting_is_by_meaning_and_concat_keeps_the_dtype():
    a, b = lab_analysis("broken"), lab_analysis("default")
    ranks = [SEVERITIES.index(s) for s in a.findings.sort_values("severity")["severity"]]
    assert ranks == sorted(ranks)
    worst = a.paths.sort_values("verdict", ascending=False)["verdict"].iloc[0]
    assert worst == "fail"
    both = pd.concat([a.findings, b.findings], ignore_index=True)
    assert isinstance(both["severity"].dtype, pd.CategoricalDtype) and both["severity"].dtype.ordered
    paths = pd.concat([a.paths, b.paths], ignore_index=True)
    assert list(paths["verdict"].dtype.categories) == list(PATH_VERDICTS)
    assert (both["severity"] >= "high").sum() == sum(s in ("high", "critical") for s in both["severity"].astype(str))


@pytest.mark.parametrize("which", analysis_ids())
def test_datetimes_beside_epoch_seconds(which):
    analysis = real_analyses(which)
    flows, caps = analysis.flows, analysis.captures
    assert flows["ts_start"].dtype == "float64"       # the spec's column stays as it is
    for df, seconds, when in ((flows, "ts_start", "time_start"), (flows, "ts_end", "time_end"),
                              (caps, "first_ts", "time_first"), (caps, "last_ts", "time_last")):
        assert str(df[when].dtype) == "datetime64[ns, UTC]"
        back = df[when].map(lambda t: t.timestamp() if pd.notna(t) else float("nan"))
        assert ((back - df[seconds]).abs().fillna(0) < 1e-6).all()


def test_catalog_helpers_are_public():
    table = commpath.catalog()
    assert {"path", "documented", "initiator", "responder", "reference"} <= set(table.columns)
    assert "apiserver-to-kubelet" in set(table["path"])
    info = commpath.path_info("apiserver-to-kubelet")
    assert info["reference"]["anchor"] and info["title"]

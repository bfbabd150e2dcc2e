"""The checks by parts: a run's merged flows cut by initiator address, each part judged alone (as Dask
workers judge them) and the parts' findings and path facts reduced, give the whole run's evaluation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import commpath
from commpath.check import evaluate
from commpath.check.reduce import combine_findings, path_table, worst_severity
from commpath.distributed._checks import RunScope, judge_part, part_outline
from commpath.distributed._merge import initiator_parts
from test_dask import _options      # a lab run's inventory, CA bundle and key log as open()'s arguments

REPO = Path(__file__).resolve().parents[1]
CAPTURES = REPO / "captures"
SCENARIOS = sorted(p.parent.name for p in CAPTURES.glob("*/ground-truth.yaml"))


def _judged_whole(scenario: str):
    """A lab run opened with its evidence, the arguments its checks take beside the tables, and
    ``evaluate``'s findings and path verdicts of the whole run."""
    folder = CAPTURES / scenario
    opts = _options(folder)
    a = commpath.open(folder, **opts)
    args = dict(tls_known=a.tls_analyzed, keylog_given="keylog" in opts, facts={**a.facts, "requests": a.requests})
    return a, args, evaluate(a.flows, a.tls, a.certs, a.policy, a.inventory, **args)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_checks_by_initiator_parts_equal_the_whole_run(scenario):
    a, args, whole = _judged_whole(scenario)
    assert (whole[1]["flows"] > 0).any() and (len(whole[0]) or scenario == "hardened")
    for n in (1, 3, 7):
        for order in (None, list(reversed(range(n)))):
            findings, paths = _by_parts(a, n, order, keylog_given=args["keylog_given"])
            assert_frame_equal(findings, whole[0], check_exact=True, obj=f"findings, {n} parts")
            assert_frame_equal(paths, whole[1], check_exact=True, obj=f"paths, {n} parts")


def _by_parts(a, n: int, order, keylog_given: bool):
    from commpath.check.evidence import fact_tables
    facts = {**a.facts, "requests": a.requests}
    which = initiator_parts(a.flows, n)
    parts = [a.flows[which == p] for p in range(n)]
    scope = RunScope(bool(getattr(a.inventory, "konnectivity_enabled", False))
                     or any(part_outline(p)[1] for p in parts))
    results = []
    for p in (order or range(n)):
        ids = set(parts[p]["flow_id"].astype(int))
        tls = a.tls[a.tls["flow_id"].astype(int).isin(ids)].reset_index(drop=True)
        # a part's rows in any order: the keys of its first flows say where they stand in the run
        results.append(judge_part(parts[p].sample(frac=1, random_state=p), tls, a.certs, a.policy, scope,
                                  a.tls_analyzed, keylog_given, facts))
    findings = combine_findings([f for f, _ in results])
    return findings, path_table(a.policy, [facts_ for _, facts_ in results], worst_severity(findings),
                                fact_tables(**facts))


def test_parts_holding_one_connection_key_twice_are_refused():
    folder = CAPTURES / "default"
    a = commpath.open(folder, **_options(folder))
    scope = RunScope(False)
    f1, _ = judge_part(a.flows, a.tls, a.certs, a.policy, scope, True, False, {"requests": a.requests})
    assert (f1["count"] > 0).any()
    with pytest.raises(ValueError, match="whole connection keys"):
        combine_findings([f1, f1.copy()])
    assert_frame_equal(combine_findings([f1, f1[f1["count"] == 0]]), combine_findings([f1]))
    assert combine_findings([]).empty and combine_findings([None]).empty
    assert isinstance(combine_findings([f1]), pd.DataFrame)


def test_host_findings_by_parts_equal_the_whole_run(tmp_path):
    """Host configuration findings: on the connections their hosts answered (in whichever part) and,
    for a host no connection showed, one finding of its own that every part makes and the run keeps once."""
    from test_config_checks import REAL, _cp1, _node
    node3 = _node(tmp_path, "node1", rotateCertificates=False, address="0.0.0.0").rename(tmp_path / "node3")
    (node3 / "addresses").write_text("10.77.0.99\n10.244.9.1\n")
    folders = [_cp1(tmp_path), _node(tmp_path, "node2", rotateCertificates=False), node3]
    a = commpath.open(REAL, inventory=REAL / "inventory.yaml", host_config=folders)
    facts = {**a.facts, "requests": a.requests}
    whole = evaluate(a.flows, a.tls, a.certs, a.policy, a.inventory, tls_known=a.tls_analyzed, facts=facts)
    config = [any(e["source"] == "config" for e in es) for es in whole[0]["evidence_sources"]]
    counts = whole[0]["count"].to_numpy()
    assert any(c and n > 0 for c, n in zip(config, counts)) and any(c and n == 0 for c, n in zip(config, counts))
    for n in (2, 5):
        findings, paths = _by_parts(a, n, None, keylog_given=False)
        assert_frame_equal(findings, whole[0], check_exact=True)
        assert_frame_equal(paths, whole[1], check_exact=True)


def test_a_worker_dying_before_the_checks_the_run_finishes_with_the_same_results(tmp_path, monkeypatch):
    """The merged parts the checks read live on the workers: when the worker holding one dies just
    before the checks (the stages before the merge are released by then, so dask cannot make the
    part again), the driver judges the merged flows it received: the same results."""
    from distributed import Client

    from _dask_parts import dask_cluster, wait_until
    from commpath.distributed import _checks
    folder = CAPTURES / "default"
    single = commpath.open(folder, **_options(folder))
    made = _checks.checks_on_parts
    killed: list[str] = []
    with dask_cluster(tmp_path / "dask", workers=2) as c, Client(c.address, timeout=60) as client:
        client.wait_for_workers(2, timeout=180)

        def kill_a_holder(cl, parts, shared, merged=True, **kw):
            # the worker that holds the first part (every part is finished: the driver has its rows)
            holder = client.who_has([parts[0]])[parts[0].key][0]
            name = client.scheduler_info()["workers"][holder]["name"]
            c.kill_worker(name)
            killed.append(name)
            wait_until(lambda: holder not in client.scheduler_info()["workers"], "the scheduler to see the death")
            return made(cl, parts, shared, merged, **kw)
        monkeypatch.setattr(_checks, "checks_on_parts", kill_a_holder)
        on_dask = commpath.open(folder, client=client, **_options(folder))
    assert killed and on_dask.merged
    from test_dask import assert_same_analysis
    assert_same_analysis(single, on_dask)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_checks_read_only_the_declared_tls_columns(scenario):
    """The parts are sent the TLS columns of check.facts.TLS_READ alone: judged with only those, the
    run's findings and path verdicts are the same; a check reading another column is an error."""
    from commpath.check.facts import TLS_READ, flow_facts, tls_read
    a, args, whole = _judged_whole(scenario)
    narrow = evaluate(a.flows, tls_read(a.tls), a.certs, a.policy, a.inventory, **args)
    assert list(tls_read(a.tls).columns) == [c for c in TLS_READ if c in a.tls] and len(a.tls.columns) > len(TLS_READ)
    assert_frame_equal(narrow[0], whole[0], check_exact=True)
    assert_frame_equal(narrow[1], whole[1], check_exact=True)
    f = flow_facts(a.flows, a.tls, a.certs)
    assert f.tls is None or set(f.tls.columns) <= set(TLS_READ)
    with pytest.raises(KeyError, match="TLS_READ"):
        f.tls_list("sni", [0])

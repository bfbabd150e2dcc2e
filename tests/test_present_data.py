"""Real analyses for the present-layer tests, and checks that derived views keep the DataFrames' numbers.

The analyses come from the bundled lab captures (captures/<scenario>/) and from public captures
(../shared/pcaps/public) with an inventory written here that names their hosts as cluster roles.
Other test modules import ``real_analyses`` / ``analysis_ids`` from here.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import commpath
from commpath.present import _model, palette, plots

REPO = Path(__file__).resolve().parents[1]
CAPTURES = REPO / "captures"
PUBLIC = REPO.parent / "shared/pcaps/public"
ZEEK = PUBLIC / "zeek/testing/btest/Traces"

#: Public captures and the cluster roles their hosts play here.
PUBLIC_FILES = [
    ZEEK / "tls/client-certificate.pcap",   # node 192.168.0.64 -> apiserver :443, mutual TLS 1.2
    PUBLIC / "arkime/openssl-tls1.pcap",     # node 10.0.0.1 -> apiserver :443, TLS 1.0, no client cert
    ZEEK / "tls/tls1.2.pcap",                # control plane 10.0.0.80 -> apiserver :443
    ZEEK / "ssh/single-conn.pcap",           # apiserver host -> node :22 (ssh-tunnel)
    ZEEK / "tls/tls13_wolfssl.pcap",         # apiserver host -> node :9090 over TLS 1.3 (apiserver-proxy)
]
PUBLIC_INVENTORY = """\
apiVersion: commpath/v1
kind: Inventory
cluster: public-captures
apiserver:
  endpoints: ["54.36.191.227:443", "74.125.228.39:443", "68.233.76.12:443",
              "192.150.186.169:6443", "192.168.186.133:6443"]
control_plane:
  - {name: cp-ssh, addresses: ["192.150.186.169"]}
  - {name: cp-proxy, addresses: ["192.168.186.133"]}
  - {name: cp-scheduler, addresses: ["10.0.0.80"]}
nodes:
  - {name: node-mtls, addresses: ["192.168.0.64"]}
  - {name: node-tls10, addresses: ["10.0.0.1"]}
  - {name: node-ssh, addresses: ["131.159.14.23"]}
  - {name: node-proxy, addresses: ["192.168.186.134"]}
"""


def lab_scenarios() -> list[str]:
    """Bundled lab scenarios: folders of captures/ with an inventory and at least one capture."""
    if not CAPTURES.is_dir():
        return []
    return sorted(p.name for p in CAPTURES.iterdir()
                  if (p / "inventory.yaml").is_file() and any(p.rglob("*.pcap*")))


@functools.cache
def lab_analysis(name: str, keylog: bool = True):
    """A bundled scenario, with its TLS key log (certificates of TLS 1.3 visible) unless told not to."""
    folder = CAPTURES / name
    log = folder / "keylog.txt"
    return commpath.open(folder, inventory=folder / "inventory.yaml",
                         keylog=log if keylog and log.is_file() else None)


@functools.cache
def public_analysis():
    with tempfile.TemporaryDirectory(prefix="commpath-present-") as folder:     # read by open(), then removed
        inventory = Path(folder) / "inventory.yaml"
        inventory.write_text(PUBLIC_INVENTORY, encoding="utf-8")
        return commpath.open(*PUBLIC_FILES, inventory=inventory)


def analysis_ids() -> list[str]:
    """Every bundled scenario with its key log, the hardened one also without (TLS 1.3 blind), and the
    public captures."""
    scenarios = lab_scenarios()
    blind = [f"lab-{s}-nokeylog" for s in ("hardened",) if s in scenarios]
    return [f"lab-{s}" for s in scenarios] + blind + ["public"]


def real_analyses(which: str):
    if which == "public":
        return public_analysis()
    name = which.removeprefix("lab-")
    if name.endswith("-nokeylog"):
        return lab_analysis(name.removesuffix("-nokeylog"), keylog=False)
    return lab_analysis(name)


@pytest.fixture(params=analysis_ids(), scope="module")
def analysis(request):
    return real_analyses(request.param)


def test_lab_scenarios_are_bundled():
    """The tests run on the lab's recorded scenarios (captures/), not only on public captures."""
    assert {"default", "hardened", "legacy", "broken"} <= set(lab_scenarios())


def test_lab_verdicts_as_the_scenarios_promise():
    """The figures' input: the bundled scenarios judged as the lab designed them."""
    broken = lab_analysis("broken")
    checks = set(zip(broken.findings["check"].astype(str), broken.findings["path"].astype(str)))
    assert {("cert-expired", "apiserver-to-kubelet"), ("client-cert-missing", "node-to-apiserver"),
            ("konnectivity-bypass", "apiserver-to-kubelet")} <= checks
    assert "expired" in set(_model.cert_states(broken)["state"])
    blind = lab_analysis("hardened", keylog=False)
    assert "not-observable" in set(_model.check_results(blind)["status"])


# ------------------------------------------------------------------------------------------ tests

def test_public_analysis_is_real_and_judged():
    a = public_analysis()
    judged = dict(zip(a.paths["id"].astype(str), a.paths["verdict"].astype(str)))
    assert judged["node-to-apiserver"] != "not-observed"
    assert judged["ssh-tunnel"] != "not-observed"
    assert judged["apiserver-proxy"] != "not-observed"
    assert {"ssh-tunnel-deprecated", "tls-version-weak"} <= set(a.findings["check"].astype(str))


def test_path_table_matches_paths_and_findings(analysis):
    table = _model.path_table(analysis)
    paths = analysis.paths.set_index(analysis.paths["id"].astype(str))
    assert list(table["id"]) == sorted(paths.index, key=palette.path_sort_key)
    for _, row in table.iterrows():
        assert row["flows"] == paths.loc[row["id"], "flows"]
        assert row["verdict"] == str(paths.loc[row["id"], "verdict"])
        on_path = analysis.findings[analysis.findings["path"].astype(str) == row["id"]]
        assert row["findings"] == len(on_path)
        for sev in palette.SEVERITY_ORDER:
            assert row[f"findings_{sev}"] == int((on_path["severity"].astype(str) == sev).sum())
    # the paths' flow counts are the classified flows
    counts = analysis.flows["path"].astype(str).value_counts()
    for pid, n in paths["flows"].items():
        assert n == counts.get(pid, 0)


def test_check_results_agree_with_findings_and_verdicts(analysis):
    results = _model.check_results(analysis)
    fail_at, warn_at = _model.thresholds(analysis)
    findings = analysis.findings
    for _, r in results.iterrows():
        mine = findings[(findings["path"].astype(str) == r["path"]) & (findings["check"].astype(str) == r["check"])]
        assert r["findings"] == len(mine)
        if r["status"] == "fail":
            assert mine["severity"].astype(str).map(palette.severity_rank).max() >= palette.severity_rank(fail_at)
    verdicts = dict(zip(analysis.paths["id"].astype(str), analysis.paths["verdict"].astype(str)))
    for path, group in results.groupby("path"):
        statuses = set(group["status"])
        assert ("fail" in statuses) == (verdicts[path] == "fail"), path
        if verdicts[path] == "not-observed":
            assert statuses == {"not-observed"}
    # every finding lands in exactly one cell of a documented path
    documented = set(results["path"])
    on_documented = findings[findings["path"].astype(str).isin(documented)]
    assert results["findings"].sum() == len(on_documented)


def test_path_map_edges_count_every_flow(analysis):
    edges = plots.path_map_edges(analysis)
    flows = analysis.flows[analysis.flows["path"].astype(str) != "other"]
    assert edges["flows"].sum() == len(flows)
    per_path = edges.groupby("path")["flows"].sum()
    paths = analysis.paths.set_index(analysis.paths["id"].astype(str))
    for pid, n in per_path.items():
        if pid in paths.index:
            assert n == paths.loc[pid, "flows"]
            assert set(edges.loc[edges["path"] == pid, "verdict"]) == {str(paths.loc[pid, "verdict"])}


def test_tls_counts_equal_flow_table(analysis):
    counts = plots.tls_counts(analysis)
    flows = analysis.flows
    tls = flows[(flows["app_protocol"].astype(str) == "tls") | flows["tls_version"].notna()]
    if not len(tls):
        assert counts == {}
        return
    for key, col in (("version", "tls_version"), ("client_cert", "client_cert"), ("cipher", "cipher")):
        table = counts[key]
        assert int(table.values.sum()) == len(tls)
        for path, row in table.iterrows():
            sub = tls[tls["path"].astype(str) == path]
            values = sub[col].astype("string").fillna("unknown")
            if key == "client_cert" and path not in set(_model.client_cert_paths(analysis)):
                values = values.where(~values.isin(["empty", "inferred-absent"]), values + " (not required)")
            for value, n in row.items():
                assert n == int((values == value).sum())


def test_timeline_rows_cover_all_flows(analysis):
    rows = plots.timeline_rows(analysis)
    assert len(rows) == len(analysis.flows)
    hosts = set(_model.host_of_capture(analysis).values())
    if len(set(rows["_host"])) > 1:
        assert all(" · " in r for r in rows["row"])
        assert set(rows["_host"]) <= hosts | set(analysis.flows["capture"].astype(str))


def test_cert_states_against_the_time_they_were_seen(analysis):
    certs = _model.cert_states(analysis)
    assert len(certs) == len(analysis.certs)
    flows = analysis.flows.set_index("flow_id")
    for _, c in certs.iterrows():
        ids = [int(i) for i in c["flow_ids"]]
        seen0 = flows.loc[ids, "ts_start"].min()
        seen1 = flows.loc[ids, "ts_end"].max()
        assert c["seen_start"].timestamp() == pytest.approx(seen0)
        na = pd.Timestamp(c["not_after"]).timestamp()
        nb = pd.Timestamp(c["not_before"]).timestamp()
        if c["state"] == "expired":
            assert na < seen0
        elif c["state"] == "not-yet-valid":
            assert nb > seen1
        elif c["state"] == "expiring":
            assert seen0 <= na < seen1 + palette.EXPIRING_DAYS * 86400
        else:
            assert c["state"] == "valid" and nb <= seen1 and na >= seen1 + palette.EXPIRING_DAYS * 86400


def test_public_certificates_states():
    """The public captures carry certificates that were valid then; none expired when seen."""
    certs = _model.cert_states(public_analysis())
    assert len(certs) >= 5
    assert set(certs["state"]) <= {"valid", "expiring"}
    leaf = certs[certs["subject"].astype(str).str.contains("johanna@corelight.com", regex=False)]
    assert list(leaf["state"]) == ["valid"]


def test_capture_window_is_the_captures(analysis):
    t0, t1 = _model.capture_window(analysis)
    assert t0 == pytest.approx(float(analysis.captures["first_ts"].min()))
    assert t1 == pytest.approx(float(analysis.captures["last_ts"].max()))
    assert (analysis.flows["ts_start"] >= t0 - 1e-6).all() and (analysis.flows["ts_end"] <= t1 + 1e-6).all()


def test_palette_is_complete():
    for path in palette.PATH_ORDER:
        assert palette.path_color(path).startswith("#")
    for verdict in palette.VERDICT_ORDER:
        assert verdict in palette.VERDICT_COLORS and verdict in palette.VERDICT_BACKGROUNDS
    assert len(set(palette.PATH_COLORS.values())) == len(palette.PATH_COLORS)
    assert np.all([palette.severity_rank(s) == i for i, s in enumerate(palette.SEVERITY_ORDER)])


@pytest.mark.parametrize("column", [
    pd.Series(["b", None, "a", "b"], dtype="category"), pd.Series(pd.Categorical([None, None], categories=["z"])),
    pd.Series(pd.Categorical([1, None, 2])), pd.Series(["x", None], dtype="string"), pd.Series([1, 2]),
    pd.Series(pd.Categorical([], categories=["a"])), pd.Series(["p", "q"], dtype=object)])
def test_str_array_is_astype_str_made_per_category(column):
    from commpath.present._model import str_array
    got, want = str_array(column), column.astype(str).to_numpy(object)
    assert got.dtype == object and len(got) == len(want)
    assert all(g == w or (g != g and w != w) for g, w in zip(got, want)), (list(got), list(want))

"""The machine formats written a batch at a time (SARIF results streamed, findings.csv by batch,
Community IDs without per-flow objects) equal what the whole-document code wrote."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from commpath.check.suppress import apply, load_suppressions
from commpath.present import _model, sarif, tables_csv, zeek
from test_present_data import lab_analysis, lab_scenarios

needs_lab = pytest.mark.skipif("broken" not in lab_scenarios(), reason="bundled lab captures missing")


@pytest.fixture(scope="module")
def broken():
    return lab_analysis("broken")


def reference_sarif(analysis, fail_on: str = "high") -> str:
    """What build_sarif_text wrote before it streamed: the whole document through json.dumps."""
    return json.dumps(sarif.build_sarif(analysis, fail_on), indent=2, ensure_ascii=False) + "\n"


class Batched:
    """``analysis`` with its findings replaced by ``findings``, read back in batches of ``size`` rows
    (a FindingSet of several blocks, as the check layer makes at scale)."""

    def __init__(self, analysis, findings: pd.DataFrame, size: int):
        self._analysis, self.findings, self._size = analysis, findings.reset_index(drop=True), size

    def __getattr__(self, name):
        return getattr(self._analysis, name)

    @property
    def finding_set(self):
        return self

    def __len__(self):
        return len(self.findings)

    def keys_frame(self):
        return self.findings

    def batches(self):
        for start in range(0, len(self.findings), self._size):
            yield self.findings.iloc[start:start + self._size].reset_index(drop=True)


@needs_lab
@pytest.mark.parametrize("slice_rows", [2, sarif.SLICE])
def test_streamed_sarif_is_the_whole_documents_text(broken, tmp_path, monkeypatch, slice_rows):
    monkeypatch.setattr(sarif, "SLICE", slice_rows)
    assert len(broken.finding_set) >= 3
    ref = reference_sarif(broken)
    text = sarif.build_sarif_text(broken)
    assert text == ref
    assert json.loads(text) == sarif.build_sarif(broken)
    assert len(json.loads(text)["runs"][0]["results"]) == len(broken.findings)
    written = sarif.write_sarif(broken, tmp_path / "r.sarif")
    assert written.read_bytes() == ref.encode("utf-8")
    assert "".join(sarif.sarif_chunks(broken, "critical")) == reference_sarif(broken, "critical")


@needs_lab
def test_streamed_sarif_of_suppressed_findings_in_batches(broken, tmp_path):
    high = [i for i, s in enumerate(broken.findings["severity"].astype(str)) if s == "high"]
    fps = _model.finding_fingerprints(broken)
    path = tmp_path / "suppress.yaml"
    path.write_text("suppressions:\n"
                    f"  - {{fingerprint: {fps[high[0]]}, reason: \"accepted — CA rollout\", expires: 2999-01-01}}\n",
                    encoding="utf-8")
    marked, _ = apply(broken.findings, load_suppressions(path))
    run = Batched(broken, marked, 2)
    text = sarif.build_sarif_text(run)
    assert text == reference_sarif(run)
    muted = [r for r in json.loads(text)["runs"][0]["results"] if "suppressions" in r]
    assert len(muted) == 1 and muted[0]["suppressions"][0]["justification"].startswith("accepted — CA rollout (until 2999")


@needs_lab
def test_streamed_sarif_fingerprints_fall_back_for_all_as_the_whole_table_does(broken, tmp_path):
    findings = broken.findings.copy()
    findings["fingerprint"] = findings["fingerprint"].astype("string")
    findings.loc[len(findings) - 1, "fingerprint"] = pd.NA     # the last batch lacks one: every finding falls back
    run = Batched(broken, findings, 2)
    text = sarif.build_sarif_text(run)
    assert text == reference_sarif(run)
    fps = [r["partialFingerprints"]["commpath/v1"] for r in json.loads(text)["runs"][0]["results"]]
    assert fps == _model.finding_fingerprints(run) and fps[0] != str(broken.findings["fingerprint"].iloc[0])
    assert sarif.write_sarif(run, tmp_path / "r.sarif").read_text(encoding="utf-8") == text
    no_column = Batched(broken, broken.findings.drop(columns=["fingerprint"]), 2)
    assert sarif.build_sarif_text(no_column) == reference_sarif(no_column)


@needs_lab
def test_streamed_sarif_without_findings(broken):
    run = Batched(broken, broken.findings.iloc[:0], 2)
    text = sarif.build_sarif_text(run)
    assert text == reference_sarif(run) and '"results": [],' in text


def reference_flat(df: pd.DataFrame) -> pd.DataFrame:
    """tables_csv._flat as it was: a deep copy, Arrow lists by Series.tolist, json.dumps per cell."""
    out = df.copy()
    for col in out.columns:
        dtype = out[col].dtype
        if isinstance(dtype, pd.ArrowDtype) and pa.types.is_nested(dtype.pyarrow_dtype):
            out[col] = pd.Series(out[col].tolist(), index=out.index, dtype=object)
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: json.dumps(_model.as_list(v) if isinstance(v, (list, tuple, np.ndarray))
                                                         else v, default=str)
                                    if isinstance(v, (list, tuple, np.ndarray, dict)) else v)
    return out


@needs_lab
def test_csv_tables_equal_the_whole_table_writers(broken, tmp_path):
    written = tables_csv.write_csv_tables(broken, tmp_path / "a")
    assert set(written) == set(tables_csv.TABLES)
    for name, path in written.items():
        assert path.read_text(encoding="utf-8") == reference_flat(getattr(broken, name)).to_csv(index=False), name
    odd = pd.DataFrame({"n": pd.Series([1, None], dtype=object), "d": [{"a": "é"}, None],
                        "l": pd.Series([[1, 2], None], dtype=pd.ArrowDtype(pa.list_(pa.int64())))})
    assert tables_csv._flat(odd).to_csv(index=False) == reference_flat(odd).to_csv(index=False)
    run = Batched(broken, broken.findings, 2)      # findings.csv a batch at a time
    again = tables_csv.write_csv_tables(run, tmp_path / "b")
    assert again["findings"].read_bytes() == written["findings"].read_bytes()
    assert pd.read_csv(again["findings"])["fingerprint"].notna().all()


def library_community_ids(flows: pd.DataFrame) -> list:
    """community_ids as it was: the communityid library's FlowTuple and calc per flow."""
    import communityid
    cid = communityid.CommunityID(seed=0)
    out = []
    for src, dst, sport, dport, transport in zip(flows["src_ip"].astype(str), flows["dst_ip"].astype(str),
                                                 flows["src_port"].astype(int), flows["dst_port"].astype(int),
                                                 flows["transport"].astype(str)):
        proto = zeek.IP_PROTOCOLS.get(transport)
        if proto is None:
            out.append(None)
        elif proto in (6, 17):
            out.append(cid.calc(communityid.FlowTuple(proto, src, dst, sport, dport)))
        else:
            out.append(cid.calc(communityid.FlowTuple(proto, src, dst)))
    return out


def test_community_ids_equal_the_librarys():
    rng = random.Random(7)
    addrs = ["10.0.0.1", "10.0.0.2", "192.168.1.10", "fe80::1", "2001:db8::5", "::ffff:10.0.0.1", "0.0.0.0"]
    ports = [0, 1, 443, 6443, 10250, 65535]
    flows = pd.DataFrame([{"src_ip": rng.choice(addrs), "dst_ip": rng.choice(addrs), "src_port": rng.choice(ports),
                           "dst_port": rng.choice(ports), "transport": rng.choice(["tcp", "udp", "esp", "icmp"])}
                          for _ in range(3000)])
    ours = zeek.community_ids(flows)
    assert ours == library_community_ids(flows)
    assert sum(c is not None for c in ours) > 2000 and len(set(ours)) > 500


@needs_lab
def test_community_ids_of_the_lab_flows_equal_the_librarys(broken):
    assert zeek.community_ids(broken.flows) == library_community_ids(broken.flows)


@needs_lab
def test_zeek_logs_written_in_chunks_equal_the_whole_logs_text(broken, tmp_path, monkeypatch):
    logs = zeek.zeek_logs(broken)
    whole = {name: log.to_json(orient="records", lines=True, force_ascii=False, double_precision=6) if len(log) else ""
             for name, log in logs.items()}
    assert len(logs["conn"]) > 3 and len(logs["ssl"]) > 3
    monkeypatch.setattr(zeek, "CHUNK", 3)
    written = zeek.write_zeek_logs(broken, tmp_path)
    for name, text in whole.items():
        assert written[name].read_text(encoding="utf-8") == (text if text.endswith("\n") or not text else text + "\n")


@needs_lab
def test_streamed_sarif_of_odd_cells(broken):
    """More than 20 frames, a capture outside the artifacts, texts with quotes, newlines, non-ASCII
    and control characters, a missing count, message and display filter: the same text as json.dumps."""
    findings = broken.findings.copy()
    findings["frames"] = pd.Series([list(range(1, 31))] + [[int(x) for x in v] for v in findings["frames"].iloc[1:]],
                                   index=findings.index, dtype=object)
    findings["capture"] = findings["capture"].astype(object)
    findings.loc[1, "capture"] = "/elsewhere/other capture.pcap"
    findings["message"] = findings["message"].astype(object)
    findings.loc[0, "message"] = 'quote " backslash \\ newline \n tab \t bell \x07 é ü 日本 \u2028'
    findings.loc[2, "message"] = None
    findings["display_filter"] = findings["display_filter"].astype(object)
    findings.loc[2, "display_filter"] = float("nan")
    findings["count"] = findings["count"].astype("Int64")
    findings.loc[0, "count"] = pd.NA
    run = Batched(broken, findings, 2)
    text = sarif.build_sarif_text(run)
    assert text == reference_sarif(run)
    results = json.loads(text)["runs"][0]["results"]
    assert results[0]["locations"][0]["message"]["text"].endswith(", 20 …")
    assert results[0]["properties"]["count"] == len(results[0]["properties"]["flow_ids"])
    assert "index" not in results[1]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert results[0]["message"]["text"].startswith('quote " backslash') and results[2]["message"]["text"] == ""
    no_count = Batched(broken, findings.drop(columns=["count"]), 2)
    assert sarif.build_sarif_text(no_count) == reference_sarif(no_count)


@pytest.mark.parametrize(("columns", "rows"), [(2, 6000), (48, 6000), (700, 1000)])
def test_csv_utc_datetimes_as_to_csv_writes_them(columns, rows):
    """Times at whole seconds, ms, µs and ns, before 1970, missing, in to_csv's chunks of rows (each
    chunk one precision: 1 chunk, 3, 8): the same text as to_csv of the datetime column."""
    rng = random.Random(columns)
    ns = []
    for i in range(rows):
        value = rng.randrange(-10**18, 3 * 10**18) if rng.random() < 0.05 else 1_700_000_000 * 10**9 + rng.randrange(10**15)
        value -= value % (10**9 if i < rows // 3 else 10**6 if i < rows * 2 // 5 else 10**3 if i < rows * 2 // 3 else 1)
        ns.append(None if rng.random() < 0.02 else value)
    df = pd.DataFrame({**{f"c{i}": [1] * rows for i in range(columns - 1)}, "t": pd.to_datetime(ns, utc=True)})
    assert isinstance(df["t"].dtype, pd.DatetimeTZDtype) and df["t"].isna().any()
    flat = tables_csv._flat(df)
    assert flat["t"].dtype != df["t"].dtype
    assert flat.to_csv(index=False) == df.to_csv(index=False)


def test_uids_equal_uid_one_by_one():
    rng = random.Random(5)
    captures = [rng.choice(["a.pcap", "/x/é b.pcap", "", "captures/broken/cp.pcap"]) for _ in range(5000)]
    flow_ids = [rng.choice([0, 1, 2**40, rng.randrange(10**9)]) for _ in range(5000)]
    uids = zeek._uids(captures, flow_ids)
    assert uids == [zeek._uid(c, i) for c, i in zip(captures, flow_ids)]
    assert len(set(uids)) > 1000 and all(len(u) == 18 and u[0] == "C" for u in uids)
    assert zeek._uids([], []) == []

"""`commpath flows`: the connection table as text, equal to the DataFrame of `commpath.read`."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import commpath
from commpath.present.flows_table import FLOW_TABLE_COLUMNS, clock_times

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ROOT.parent / "shared/pcaps/public"
LAB = sorted((ROOT / "captures").glob("*/*/*.pcap"))


def _flows_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "commpath.cli", "flows", *args], capture_output=True, text=True,
                          timeout=120)


def _tables(text: str) -> dict[str, list[list[str]]]:
    """{file: rows split on blanks} of the printed tables (the tunnel column is blank when empty)."""
    tables, rows = {}, None
    for line in text.splitlines():
        if line.startswith("# "):
            rows = tables.setdefault(line[2:].rsplit(":", 1)[0], [])
        elif rows is not None and not line.lstrip().startswith("flow_id"):
            rows.append(line.split())
    return tables


@pytest.mark.parametrize("path", LAB[:4], ids=lambda p: p.name)
def test_printed_table_is_the_flow_dataframe(path):
    proc = _flows_cli(str(path))
    assert proc.returncode == 0, proc.stderr
    header = [line for line in proc.stdout.splitlines() if line.lstrip().startswith("flow_id")]
    assert header and header[0].split() == FLOW_TABLE_COLUMNS
    flows = commpath.read(path).flows
    rows = _tables(proc.stdout)[str(path)]
    assert len(rows) == len(flows) > 0
    expected = flows[FLOW_TABLE_COLUMNS].assign(
        ts_start=pd.to_datetime(flows["ts_start"], unit="s", utc=True).dt.strftime("%H:%M:%S.%f"))
    for row, want in zip(rows, expected.astype(str).itertuples(index=False)):
        want = [w for w in want if w != ""]            # an empty tunnel prints as blanks
        assert row == want


def test_clock_times_match_pandas_on_public_and_lab_captures():
    paths = sorted(PUBLIC.rglob("*.pcap")) + LAB
    ts = np.concatenate([commpath.read(p).flows["ts_start"].to_numpy() for p in paths]
                        + [np.array([np.nan, 0.0, 1.9999999, 1763856902.9075689])])
    mine = clock_times(ts)
    theirs = pd.to_datetime(pd.Series(ts), unit="s", utc=True).dt.strftime("%H:%M:%S.%f").fillna("NaT").tolist()
    assert len(ts) > 100 and mine == theirs


def test_limit_and_one_table_per_file():
    a, b = LAB[0], LAB[1]
    proc = _flows_cli("--limit", "2", str(a), str(b))
    assert proc.returncode == 0, proc.stderr
    tables = _tables(proc.stdout)
    assert list(tables) == [str(a), str(b)] and all(len(rows) == 2 for rows in tables.values())


def test_flows_command_does_not_load_pandas():
    code = ("import sys, io, contextlib; from commpath.cli import main; "
            "out = io.StringIO(); ctx = contextlib.redirect_stdout(out); ctx.__enter__(); "
            f"rc = main(['flows', {str(LAB[0])!r}]); ctx.__exit__(None, None, None); "
            "print(rc, 'pandas' in sys.modules, out.getvalue().count('connections'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["0", "False", "1"], proc.stderr

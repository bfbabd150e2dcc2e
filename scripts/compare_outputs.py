"""Digest commpath's outputs on every bundled and public capture, and compare two digests.

A refactoring must leave what users see unchanged. This script runs the whole analysis
(`commpath.open` + `write_outputs`, then a reload of the written folder) on

- every recorded lab run in ``captures/`` with its inventory, CA bundle and key log, and
  once more without any of them (roles inferred, TLS 1.3 certificates not observable);
- every public capture in ``../shared/pcaps/public/`` (no inventory);

and writes one normalized JSON digest per case into a folder: the flows, tls, certs, ssh,
http, findings, paths and captures tables (columns, dtypes and every cell), the
``report.json`` written by ``write_outputs`` (timing fields removed), the tables of the
reloaded output folder, and the path catalog as ``commpath paths --format json`` prints it.

    python scripts/compare_outputs.py --out /tmp/digest-before
    python scripts/compare_outputs.py --out /tmp/digest-after --against /tmp/digest-before

``--against DIR`` prints every difference (case, table, row, column, old → new) and exits 1
when there is one. ``--only SUBSTRING`` restricts the cases (for a quick look).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PUBLIC = REPO.parent / "shared" / "pcaps" / "public"
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz")
TABLES = ("flows", "tls", "certs", "ssh", "http", "findings", "paths", "captures")
#: report.json keys that measure the run rather than describe the traffic
TIMING_KEYS = {"elapsed", "elapsed_s", "duration_s", "generated", "generated_at", "timing", "timings",
               "started", "finished", "wall_s", "cpu_s"}


def cases(only: str | None) -> list[tuple[str, list[Path], dict]]:
    """(name, inputs, open() keyword arguments) for every capture this script digests."""
    out = []
    for run in sorted(p for p in (REPO / "captures").iterdir() if (p / "inventory.yaml").is_file()):
        full = {"inventory": str(run / "inventory.yaml"), "ca": str(run / "pki" / "ca.crt")}
        if (run / "keylog.txt").is_file():
            full["keylog"] = str(run / "keylog.txt")
        out.append((f"captures/{run.name}", [run], full))
        out.append((f"captures/{run.name}+bare", [run], {}))
    if PUBLIC.is_dir():
        for f in sorted(PUBLIC.rglob("*")):
            if f.is_file() and f.name.lower().endswith(CAPTURE_SUFFIXES):
                out.append((f"public/{f.relative_to(PUBLIC)}", [f], {}))
    return [c for c in out if only is None or only in c[0]]


def _cell(v):
    """A table cell as plain JSON (NA → None, numpy → Python, floats exact via repr)."""
    import numpy as np
    import pandas as pd
    if isinstance(v, dict):
        return {str(k): _cell(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_cell(x) for x in v]
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else repr(float(v))
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def _table(df) -> dict:
    if df is None:
        return {"columns": None}
    return {"columns": {str(c): str(t) for c, t in df.dtypes.items()},
            "rows": [[_cell(v) for v in row] for row in df.astype(object).itertuples(index=False, name=None)]}


def _strip_timing(obj):
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def digest_case(inputs: list[Path], kwargs: dict) -> dict:
    """Everything one analysis shows a user, as plain JSON."""
    import commpath
    from commpath._pipeline import write_outputs
    out: dict = {}
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            a = commpath.open(*inputs, **kwargs)
        except commpath.CommpathError as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        out["tables"] = {name: _table(getattr(a, name, None)) for name in TABLES}
        out["summary"] = _cell(a.summary())
        out["warnings"] = list(a.warnings)
        out["exit_code"] = {lvl: a.exit_code(lvl) for lvl in ("info", "high")}
        with tempfile.TemporaryDirectory(prefix="commpath-digest-") as tmp:
            written = write_outputs(a, tmp)
            out["files"] = sorted(Path(p).name for p in written.values())
            out["report.json"] = _strip_timing(json.loads((Path(tmp) / "report.json").read_text(encoding="utf-8")))
            again = commpath.open(tmp, **{k: v for k, v in kwargs.items() if k != "keylog"})
            out["reloaded"] = {name: _table(getattr(again, name, None)) for name in TABLES}
    return out


def catalog_digest() -> dict:
    from commpath.cli import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main(["paths", "--format", "json"])
    return json.loads(buf.getvalue())


def _portable(text: str) -> str:
    """Paths of this checkout and of the public captures as placeholders: digests of two checkouts compare."""
    return text.replace(str(PUBLIC), "<public>").replace(str(REPO), "<repo>")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "__", name) + ".json"


def write_digest(folder: Path, only: str | None) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    todo = cases(only)
    for i, (name, inputs, kwargs) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {name}", file=sys.stderr, flush=True)
        data = {"case": name, **digest_case(inputs, kwargs)}
        (folder / _slug(name)).write_text(_portable(json.dumps(data, indent=1)) + "\n", encoding="utf-8")
    (folder / "_catalog.json").write_text(json.dumps({"case": "catalog", "paths": catalog_digest()}, indent=1) + "\n",
                                          encoding="utf-8")
    return len(todo)


def _diff(old, new, where: str, out: list[str]) -> None:
    """Every difference between two JSON values, one line each."""
    if isinstance(old, dict) and isinstance(new, dict):
        if "rows" in old and "columns" in old and "rows" in new and "columns" in new:
            _diff_table(old, new, where, out)
            return
        for k in list(old) + [k for k in new if k not in old]:
            if k not in new:
                out.append(f"{where}.{k}: removed (was {_short(old[k])})")
            elif k not in old:
                out.append(f"{where}.{k}: added ({_short(new[k])})")
            else:
                _diff(old[k], new[k], f"{where}.{k}", out)
    elif isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            if i >= len(new):
                out.append(f"{where}[{i}]: removed (was {_short(old[i])})")
            elif i >= len(old):
                out.append(f"{where}[{i}]: added ({_short(new[i])})")
            else:
                _diff(old[i], new[i], f"{where}[{i}]", out)
    elif old != new:
        out.append(f"{where}: {_short(old)} -> {_short(new)}")


def _diff_table(old: dict, new: dict, where: str, out: list[str]) -> None:
    oc, nc = list(old["columns"] or {}), list(new["columns"] or {})
    if oc != nc:
        out.append(f"{where}: columns {oc} -> {nc}")
    for c in oc:
        if c in nc and old["columns"][c] != new["columns"][c]:
            out.append(f"{where}.{c}: dtype {old['columns'][c]} -> {new['columns'][c]}")
    orows, nrows = old["rows"], new["rows"]
    if len(orows) != len(nrows):
        out.append(f"{where}: {len(orows)} rows -> {len(nrows)} rows")
    for i in range(min(len(orows), len(nrows))):
        o = dict(zip(oc, orows[i]))
        n = dict(zip(nc, nrows[i]))
        for c in oc:
            if c in n and o[c] != n[c]:
                out.append(f"{where}[{i}].{c}: {_short(o[c])} -> {_short(n[c])}")


def _short(v, limit: int = 160) -> str:
    s = json.dumps(v, ensure_ascii=False)
    return s if len(s) <= limit else s[:limit] + "…"


def compare(before: Path, after: Path, partial: bool = False) -> tuple[int, int]:
    """Print the differences between two digest folders; (cases compared, differences).
    ``partial``: only the cases of ``after`` (a digest made with ``--only``)."""
    total, n = 0, 0
    names = {p.name for p in after.glob("*.json")}
    if not partial:
        names |= {p.name for p in before.glob("*.json")}
    names = sorted(names)
    for name in names:
        a, b = before / name, after / name
        if not a.is_file() or not b.is_file():
            print(f"{name}: only in {'the new digest' if b.is_file() else 'the baseline'}")
            total += 1
            continue
        lines: list[str] = []
        old, new = json.loads(a.read_text(encoding="utf-8")), json.loads(b.read_text(encoding="utf-8"))
        _diff(old, new, old.get("case", name), lines)
        n += 1
        for line in lines:
            print(line)
        total += len(lines)
    return n, total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="folder to write the digest into")
    ap.add_argument("--against", type=Path, help="an earlier digest folder to compare with")
    ap.add_argument("--only", help="digest only the cases whose name contains this")
    args = ap.parse_args(argv)
    if args.out is None and args.against is None:
        ap.error("give --out DIR (and optionally --against DIR)")
    sys.path.insert(0, str(REPO))
    if args.out is not None:
        count = write_digest(args.out, args.only)
        print(f"digest of {count} case(s) written to {args.out}", file=sys.stderr)
    if args.against is not None:
        if args.out is None:
            ap.error("--against needs --out (the new digest)")
        compared, differences = compare(args.against, args.out, partial=args.only is not None)
        print(f"{compared} case(s) compared, {differences} difference(s)", file=sys.stderr)
        return 1 if differences else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

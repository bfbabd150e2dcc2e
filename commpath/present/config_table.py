"""`commpath config HOST_DIR...`: the host configuration of clusters captured otherwise, as a table and files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:       # the command line imports this module for register(): the rest loads when used
    from ..decode.hostconfig import ConfigFacts

#: what `commpath config` prints of each row
SHOWN_COLUMNS = ["host", "component", "setting", "value", "source"]
_MAX_VALUE = 72


def register(sub) -> None:
    """Add `commpath config` to the command line's subparsers."""
    import argparse
    text = "read host configuration folders: the settings that matter per component, as a table and Parquet/JSON"
    p = sub.add_parser("config", help=text, description=text + (
        "\n\nHOST_DIR: a host's host_config.json or agent manifest.json, or cmdline/<component> files with the\n"
        "files they name under root/ (docs/host-config.md)."), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("hosts", nargs="+", metavar="HOST_DIR", help="one folder per host")
    p.add_argument("--out", metavar="DIR", help="write config.parquet and config.json there")
    p.add_argument("--all", action="store_true", help="print every flag and key, not only the settings that matter")
    p.add_argument("--policy", metavar="NAME|FILE", default="default",
                   help="policy for the findings of the configuration alone (built-in: default, untrusted-network)")


def config_findings(facts: ConfigFacts, policy: str = "default"):
    """The checks that read host configuration, judged from it alone (no captures): every finding names a
    host no connection showed (FINDING_COLUMNS, with ``evidence_sources``)."""
    from ..check import evaluate
    from ..classify import CLASSIFY_COLUMNS
    from ..decode.schema import FLOW_COLUMNS, empty_frame
    findings, _ = evaluate(empty_frame({**FLOW_COLUMNS, **CLASSIFY_COLUMNS}), None, None, policy, None,
                           tls_known=False, facts={"config": facts.table})
    return findings


def findings_text(findings) -> str:
    lines = [f"# findings from the host configuration alone: {len(findings)}"]
    for r in findings.itertuples(index=False):
        said = "; ".join(e["said"] for e in r.evidence_sources if e["source"] == "config")
        lines.append(f"{r.severity:<8}  {r.check}  {r.path}: {said}")
    return "\n".join(lines)


def read_host_dirs(folders) -> ConfigFacts:
    """The ``config`` facts of host folders; a folder with nothing usable raises InputError."""
    from ..capture.hostconfig import from_folder
    from ..decode.hostconfig import config_table
    return config_table([from_folder(f) for f in folders])


def shown_rows(facts: ConfigFacts, everything: bool = False):
    """The rows `commpath config` prints: the effective value of each setting of cfg/host_settings.yaml, and
    the kubeconfigs' servers."""
    import pandas as pd
    df = facts.table
    df = df[df["effective"]]
    if not everything:
        from ..capture.host_settings import load as load_settings
        settings = load_settings()
        known = {(c.name, s.name) for c in settings.components.values() for s in c.settings}
        # and the server each kubeconfig points the component at
        mask = [(c, k) in known or k.endswith(".clusters[].cluster.server")
                for c, k in zip(df["component"].astype(str), df["key"].astype(str))]
        df = df[pd.Series(mask, index=df.index, dtype=bool)]
    return df.sort_values(["host", "component", "key"], kind="stable")


def table_text(facts: ConfigFacts, everything: bool = False) -> str:
    import pandas as pd
    df = shown_rows(facts, everything)
    cells = {c: [] for c in SHOWN_COLUMNS}
    for row in df.itertuples(index=False):
        value = "(unset)" if pd.isna(row.value) else str(row.value)
        if len(value) > _MAX_VALUE:
            value = value[: _MAX_VALUE - 1] + "…"
        cells["host"].append(str(row.host))
        cells["component"].append(str(row.component))
        cells["setting"].append(str(row.setting))
        cells["value"].append(value)
        cells["source"].append("default" if row.is_default else str(row.source))
    return _left_table(cells)


def _left_table(cells: dict[str, list[str]]) -> str:
    widths = [max([len(name), *map(len, column)]) for name, column in cells.items()]
    lines = ["  ".join(name.ljust(w) for name, w in zip(cells, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in zip(*cells.values())]
    return "\n".join(lines)


def write(facts: ConfigFacts, out: str | Path, findings=None) -> dict[str, Path]:
    """config.parquet (CONFIG_COLUMNS) and config.json (the hosts' redacted configuration, the rows and the
    findings of the configuration alone)."""
    from ..decode.hostconfig import CONFIG_COLUMNS
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        files = {"parquet": folder / "config.parquet", "json": folder / "config.json"}
        facts.table.to_parquet(files["parquet"], index=False)
        rows = json.loads(facts.table.to_json(orient="records"))
        found = [] if findings is None else [
            {"check": str(r.check), "path": str(r.path), "severity": str(r.severity), "message": str(r.message),
             "remediation": str(r.remediation), "reference": str(r.reference), "evidence_sources": list(r.evidence_sources)}
            for r in findings.itertuples(index=False)]
        files["json"].write_text(json.dumps({"schema": "commpath.config/v1", "columns": list(CONFIG_COLUMNS),
                                             "partial": facts.partial, "errors": facts.errors,
                                             "hosts": facts.raw, "config": rows, "findings": found}, indent=1) + "\n")
    except OSError as exc:
        raise InputError(folder, f"cannot write: {exc.strerror or exc}") from None
    return files


def main(args) -> int:
    """Exit 0 (warnings for unreadable files, the rest kept), 2 when a folder holds nothing usable."""
    facts = read_host_dirs(args.hosts)
    for err in facts.errors:
        print(f"commpath: warning: {err}", file=sys.stderr)
    print(table_text(facts, args.all))
    findings = config_findings(facts, args.policy)
    print()
    print(findings_text(findings))
    if args.out:
        for path in write(facts, args.out, findings).values():
            print(f"written: {path}", file=sys.stderr)
    return 0


__all__ = ["SHOWN_COLUMNS", "config_findings", "findings_text", "main", "read_host_dirs", "register", "shown_rows",
           "table_text", "write"]

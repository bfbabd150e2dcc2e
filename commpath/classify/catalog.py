"""The path catalog (cfg/catalog.yaml) and `commpath paths`, which prints it."""

from __future__ import annotations

import functools
import json
import sys
import textwrap
from importlib import resources

import yaml

CFG = resources.files("commpath") / "cfg"
REFERENCE_DOC = "control-plane-node-communication.md"


@functools.cache
def load_catalog() -> dict:
    """The parsed catalog: ``{"version", "document", "paths": [...]}``."""
    return yaml.safe_load((CFG / "catalog.yaml").read_text(encoding="utf-8"))


def path_ids() -> list[str]:
    """All path ids in catalog order."""
    return [p["id"] for p in load_catalog()["paths"]]


def judged_path_ids() -> list[str]:
    """Path ids that get a verdict (all but ``other``)."""
    return [p["id"] for p in load_catalog()["paths"] if p.get("judged", True)]


def path_info(path_id: str) -> dict:
    for p in load_catalog()["paths"]:
        if p["id"] == path_id:
            return p
    raise KeyError(path_id)


def reference_link(anchor: str) -> str:
    """``control-plane-node-communication.md#anchor``."""
    return f"{load_catalog()['document']['file']}#{anchor}"


def _text(catalog: dict) -> str:
    out = [f"{catalog['document']['title']} — path catalog v{catalog['version']}",
           f"{catalog['document']['url']}", ""]
    for p in catalog["paths"]:
        ports = ", ".join(str(x) for x in p.get("ports") or []) or "any"
        tag = "documented" if p.get("documented") else "neighbour"
        out.append(f"{p['id']}  [{tag}]  {p['title']}")
        out.append(f"    {' | '.join(p['initiator'])} -> {' | '.join(p['responder'])}  ports: {ports}")
        for req in p.get("requirements", []):
            out.append(f"    - {req}")
        ref = p["reference"]
        out.append(f"    reference: {reference_link(ref['anchor'])}")
        out.extend(textwrap.wrap(f'"{ref["quote"]}"', 96, initial_indent="      ", subsequent_indent="      "))
        if p.get("remediation"):
            out.extend(textwrap.wrap(f"remediation: {p['remediation']}", 96,
                                     initial_indent="    ", subsequent_indent="      "))
        out.append("")
    return "\n".join(out)


def main(args) -> int:
    """`commpath paths [--format text|yaml|json]`."""
    catalog = load_catalog()
    fmt = getattr(args, "format", "text") or "text"
    if fmt == "json":
        sys.stdout.write(json.dumps(catalog, indent=2) + "\n")
    elif fmt == "yaml":
        sys.stdout.write(yaml.safe_dump(catalog, sort_keys=False, allow_unicode=True, width=100))
    else:
        sys.stdout.write(_text(catalog) + "\n")
    return 0

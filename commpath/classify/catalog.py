"""The path catalog (cfg/catalog.yaml), validated on load, and `commpath paths`, which prints it."""

from __future__ import annotations

import functools
import json
import re
import sys
import textwrap
from importlib import resources
from pathlib import Path

import yaml

from ._yamldoc import YamlDoc, expect_bool, expect_int, expect_list, expect_mapping, expect_str, load_yaml

CFG = resources.files("commpath") / "cfg"
TOP_KEYS = {"apiVersion", "kind", "version", "document", "ports", "roles", "paths"}
PATH_KEYS = {"id", "title", "documented", "judged", "initiator", "responder", "ports", "protocols", "tls",
             "client_cert", "display", "match", "requirements", "reference", "remediation"}
RULE_KEYS = {"transport", "initiator", "responder", "flow", "not_responder", "ports", "initiator_ports", "roles"}
TLS_EXPECTATIONS = ("required", "optional", "none")
CLIENT_CERT_EXPECTATIONS = ("expected", "not-expected")
_COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")


@functools.cache
def load_catalog(file: str | None = None) -> dict:
    """The validated catalog: ``{"version", "document", "ports", "roles", "paths": [...]}``.

    ``file``: another catalog (tests use a small one); the shipped ``cfg/catalog.yaml`` by default.
    Raises :class:`~commpath.errors.InputError` naming file, line and key of the first problem."""
    if file is None:
        doc = load_yaml("commpath/cfg/catalog.yaml", (CFG / "catalog.yaml").read_text(encoding="utf-8"))
    else:
        doc = load_yaml(Path(file))
    return validate_catalog(doc)


def validate_catalog(doc: YamlDoc) -> dict:
    """Check every key of a parsed catalog; returns its data."""
    data = expect_mapping(doc, "", doc.data, TOP_KEYS)
    for key in ("document", "ports", "roles", "paths"):
        if key not in data:
            raise doc.error(key, "missing")
    ports = expect_mapping(doc, "ports", data["ports"])
    for name, value in ports.items():
        expect_int(doc, f"ports.{name}", value, 1)
    roles = [expect_str(doc, f"roles[{i}]", r) for i, r in enumerate(expect_list(doc, "roles", data["roles"]))]
    seen_ids, seen_orders, seen_display = set(), set(), set()
    for i, entry in enumerate(expect_list(doc, "paths", data["paths"])):
        key = f"paths[{i}]"
        p = expect_mapping(doc, key, entry, PATH_KEYS)
        for required in ("id", "title", "initiator", "responder", "reference", "match", "display"):
            if required not in p:
                raise doc.error(f"{key}.{required}", "missing")
        pid = expect_str(doc, f"{key}.id", p["id"])
        if pid in seen_ids:
            raise doc.error(f"{key}.id", f"duplicate path id {pid!r}")
        seen_ids.add(pid)
        _validate_path(doc, key, p, roles, ports)
        order = p["match"]["order"]
        if order in seen_orders:
            raise doc.error(f"{key}.match.order", f"order {order} is used by another path")
        seen_orders.add(order)
        shown = p["display"]["order"]
        if shown in seen_display:
            raise doc.error(f"{key}.display.order", f"display order {shown} is used by another path")
        seen_display.add(shown)
    return data


def _validate_path(doc: YamlDoc, key: str, p: dict, roles: list[str], ports: dict) -> None:
    for k in ("documented", "judged"):
        if k in p:
            expect_bool(doc, f"{key}.{k}", p[k])
    for k in ("initiator", "responder"):
        for j, r in enumerate(expect_list(doc, f"{key}.{k}", p[k])):
            if r != "any" and r not in roles:
                raise doc.error(f"{key}.{k}[{j}]", f"unknown role {r!r} (roles: {', '.join(roles)}, any)")
    for j, port in enumerate(expect_list(doc, f"{key}.ports", p.get("ports", []))):
        expect_int(doc, f"{key}.ports[{j}]", port, 1)
    if p.get("tls", "none") not in TLS_EXPECTATIONS:
        raise doc.error(f"{key}.tls", f"must be one of {', '.join(TLS_EXPECTATIONS)}")
    if p.get("client_cert", "not-expected") not in CLIENT_CERT_EXPECTATIONS:
        raise doc.error(f"{key}.client_cert", f"must be one of {', '.join(CLIENT_CERT_EXPECTATIONS)}")
    display = expect_mapping(doc, f"{key}.display", p["display"], {"order", "color"})
    expect_int(doc, f"{key}.display.order", display.get("order"), 0, 10_000)
    if not _COLOR.match(str(display.get("color", ""))):
        raise doc.error(f"{key}.display.color", "must be a colour like \"#0072B2\"")
    ref = expect_mapping(doc, f"{key}.reference", p["reference"], {"anchor", "quote", "also"})
    for k in ("anchor", "quote"):
        expect_str(doc, f"{key}.reference.{k}", ref.get(k))
    match = expect_mapping(doc, f"{key}.match", p["match"], {"order", "any_of"})
    expect_int(doc, f"{key}.match.order", match.get("order"), 0, 10_000)
    for j, rule in enumerate(expect_list(doc, f"{key}.match.any_of", match.get("any_of"))):
        _validate_rule(doc, f"{key}.match.any_of[{j}]", rule, roles, ports)


def _validate_rule(doc: YamlDoc, key: str, rule, roles: list[str], ports: dict) -> None:
    from .roles import FLOW_MASKS, INITIATOR_MASKS, RESPONDER_MASKS
    rule = expect_mapping(doc, key, rule, RULE_KEYS)
    if rule.get("transport", "tcp") not in ("tcp", "udp"):
        raise doc.error(f"{key}.transport", "must be tcp or udp")
    named = {"initiator": INITIATOR_MASKS, "responder": RESPONDER_MASKS}
    for k, known in named.items():
        if k in rule and rule[k] not in known:
            raise doc.error(f"{key}.{k}", f"unknown {k} mask {rule[k]!r} (known: {', '.join(sorted(known))})")
    for k, known in (("flow", FLOW_MASKS), ("not_responder", RESPONDER_MASKS)):
        for j, name in enumerate(expect_list(doc, f"{key}.{k}", rule.get(k, []))):
            if name not in known:
                raise doc.error(f"{key}.{k}[{j}]", f"unknown mask {name!r} (known: {', '.join(sorted(known))})")
    for k in ("ports", "initiator_ports"):
        for j, port in enumerate(expect_list(doc, f"{key}.{k}", rule.get(k, []))):
            if isinstance(port, str) and port not in ports:
                raise doc.error(f"{key}.{k}[{j}]", f"unknown port name {port!r} (known: {', '.join(ports)})")
            if not isinstance(port, str):
                expect_int(doc, f"{key}.{k}[{j}]", port, 1)
    if "roles" in rule:
        pair = expect_list(doc, f"{key}.roles", rule["roles"])
        if len(pair) != 2 or any(r not in roles for r in pair):
            raise doc.error(f"{key}.roles", "must be [initiator role, responder role], both catalog roles")


def path_ids(file: str | None = None) -> list[str]:
    """All path ids in catalog order."""
    return [p["id"] for p in load_catalog(file)["paths"]]


def judged_path_ids(file: str | None = None) -> list[str]:
    """Path ids that get a verdict (all but ``other``)."""
    return [p["id"] for p in load_catalog(file)["paths"] if p.get("judged", True)]


def path_info(path_id: str, file: str | None = None) -> dict:
    for p in load_catalog(file)["paths"]:
        if p["id"] == path_id:
            return p
    raise KeyError(path_id)


def role_names(file: str | None = None) -> list[str]:
    """Roles of flow ends (the categories of ``src_role`` / ``dst_role``), in catalog order."""
    return list(load_catalog(file)["roles"])


def default_ports(file: str | None = None) -> dict[str, int]:
    """Port name -> number; the inventory's keys of the same name override these."""
    return dict(load_catalog(file)["ports"])


def match_rules(file: str | None = None) -> list[tuple[str, list[dict]]]:
    """(path id, alternatives) in the order the classifier tries them."""
    paths = sorted(load_catalog(file)["paths"], key=lambda p: p["match"]["order"])
    return [(p["id"], list(p["match"]["any_of"])) for p in paths]


def display_order(file: str | None = None) -> list[str]:
    """Path ids in the order reports and plots show them."""
    return [p["id"] for p in sorted(load_catalog(file)["paths"], key=lambda p: p["display"]["order"])]


def path_colors(file: str | None = None) -> dict[str, str]:
    """Path id -> display colour."""
    return {p["id"]: p["display"]["color"] for p in load_catalog(file)["paths"]}


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

"""Checks (cfg/checks.yaml) and policies (cfg/policies/*.yaml or a user file), validated."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..classify._yamldoc import YamlDoc, expect_bool, expect_list, expect_mapping, expect_str, load_yaml
from ..classify.catalog import path_ids, reference_link
from ..errors import InputError
from .kinds import TESTS

SEVERITIES = ["info", "low", "medium", "high", "critical"]
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
POLICY_DIR = resources.files("commpath") / "cfg" / "policies"


@dataclass
class Check:
    """One check as a policy applies it."""

    id: str
    title: str
    severity: str
    paths: list[str]
    test: str
    reference: dict
    remediation: str
    scored: bool = True
    enabled: bool = True
    params: dict = field(default_factory=dict)
    severity_by_path: dict[str, str] = field(default_factory=dict)
    #: the audit frameworks' controls this check evidences: [{framework, id, title}]
    controls: list[dict] = field(default_factory=list)
    #: path -> what fixes the check on that path only (its flags), where ``remediation`` covers several
    remediation_by_path: dict[str, str] = field(default_factory=dict)

    def severity_for(self, path: str) -> str:
        return self.severity_by_path.get(path, self.severity)

    def remediation_for(self, path: str) -> str:
        """The remediation of this check on ``path`` (its own entry, else the general one)."""
        return self.remediation_by_path.get(path, self.remediation)

    @property
    def reference_link(self) -> str:
        """``control-plane-node-communication.md#anchor``."""
        return reference_link(self.reference["anchor"])


@dataclass
class Policy:
    """Which checks run, on which paths, how severe, and where verdicts turn to warn and fail."""

    name: str
    checks: dict[str, Check]
    fail_at: str = "high"
    warn_at: str = "low"
    file: str | None = None
    description: str = ""

    def enabled_checks(self) -> list[Check]:
        return [c for c in self.checks.values() if c.enabled]


CHECKS_FILE = "commpath/cfg/checks.yaml"
CHECKS_TOP_KEYS = {"apiVersion", "kind", "version", "checks"}
CHECK_ENTRY_KEYS = {"id", "title", "severity", "paths", "test", "scored", "reference", "remediation", "params",
                    "controls", "remediation_by_path"}
CHECK_REQUIRED = ("id", "title", "severity", "paths", "test", "reference", "remediation")
CONTROL_KEYS = {"framework", "id", "title"}


@functools.cache
def _checks_doc() -> YamlDoc:
    return load_yaml(CHECKS_FILE, (resources.files("commpath") / "cfg" / "checks.yaml").read_text(encoding="utf-8"))


def _params(doc: YamlDoc, key: str, value, test) -> dict:
    """``params`` of a check: only the names its test declares, each with one of its allowed values."""
    params = expect_mapping(doc, key, value, set(test.params))
    for name, v in params.items():
        if v not in test.params[name]:
            raise doc.error(f"{key}.{name}", f"unknown value {v!r} (one of: {', '.join(map(str, test.params[name]))})")
    return dict(params)


def _remediation_by_path(doc: YamlDoc, key: str, value, paths) -> dict[str, str]:
    """``remediation_by_path``: path (one the check judges) -> non-empty remediation text."""
    out = {}
    for path, text in expect_mapping(doc, key, value).items():
        if path not in (paths or []):
            raise doc.error(f"{key}.{path}", f"not a path of this check ({', '.join(paths or [])})")
        out[path] = " ".join(expect_str(doc, f"{key}.{path}", text).split())
    return out


def _controls(doc: YamlDoc, key: str, value) -> list[dict]:
    """``controls``: a list of {framework, id, title}, each a non-empty string (quote ids like "1.2")."""
    out = []
    for i, c in enumerate(expect_list(doc, key, value)):
        item = expect_mapping(doc, f"{key}[{i}]", c, CONTROL_KEYS)
        for name in sorted(CONTROL_KEYS):
            if name not in item:
                raise doc.error(f"{key}[{i}]", f"missing key {name!r}")
            expect_str(doc, f"{key}[{i}].{name}", item[name])
        out.append({k: item[k] for k in ("framework", "id", "title")})
    return out


def check_from_entry(doc: YamlDoc, key: str, entry) -> Check:
    """One validated entry of checks.yaml: unknown keys, test kinds, paths, params are errors."""
    expect_mapping(doc, key, entry, CHECK_ENTRY_KEYS)
    for name in CHECK_REQUIRED:
        if name not in entry:
            raise doc.error(key, f"missing key {name!r}")
    test = expect_str(doc, f"{key}.test", entry["test"])
    if test not in TESTS:
        raise doc.error(f"{key}.test", f"unknown test kind {test!r} (known: {', '.join(sorted(TESTS))})")
    reference = expect_mapping(doc, f"{key}.reference", entry["reference"], {"anchor", "quote"})
    expect_str(doc, f"{key}.reference.anchor", reference.get("anchor"))
    return Check(id=expect_str(doc, f"{key}.id", entry["id"]), title=expect_str(doc, f"{key}.title", entry["title"]),
                 severity=_severity(doc, f"{key}.severity", entry["severity"]),
                 paths=_path_list(doc, f"{key}.paths", entry["paths"]), test=test, reference=dict(reference),
                 remediation=expect_str(doc, f"{key}.remediation", entry["remediation"]),
                 scored=expect_bool(doc, f"{key}.scored", entry.get("scored", True)),
                 params=_params(doc, f"{key}.params", entry.get("params") or {}, TESTS[test]),
                 controls=_controls(doc, f"{key}.controls", entry.get("controls") or []),
                 remediation_by_path=_remediation_by_path(doc, f"{key}.remediation_by_path",
                                                          entry.get("remediation_by_path") or {}, entry["paths"]))


def checks_from_doc(doc: YamlDoc) -> dict[str, Check]:
    """The validated checks of a checks.yaml document, by id."""
    data = expect_mapping(doc, "", doc.data, CHECKS_TOP_KEYS)
    if data.get("apiVersion") != "commpath/v1":
        raise doc.error("apiVersion", f"expected 'commpath/v1', got {data.get('apiVersion')!r}")
    if data.get("kind") != "Checks":
        raise doc.error("kind", f"expected 'Checks', got {data.get('kind')!r}")
    checks: dict[str, Check] = {}
    for i, entry in enumerate(expect_list(doc, "checks", data.get("checks"))):
        check = check_from_entry(doc, f"checks[{i}]", entry)
        if check.id in checks:
            raise doc.error(f"checks[{i}].id", f"duplicate check id {check.id!r}")
        checks[check.id] = check
    return checks


@functools.cache
def _load_checks() -> dict[str, Check]:
    return checks_from_doc(_checks_doc())


def load_checks() -> dict[str, Check]:
    """The checks of cfg/checks.yaml (validated) with their default severities and paths."""
    return copy.deepcopy(_load_checks())


def catalog_checks() -> list[dict]:
    """The checks of cfg/checks.yaml as plain dicts (id, title, severity, paths, reference, ...)."""
    return copy.deepcopy(list(_checks_doc().data["checks"]))


def builtin_policies() -> list[str]:
    return sorted(p.name[:-5] for p in POLICY_DIR.iterdir() if p.name.endswith(".yaml"))


POLICY_KEYS = {"apiVersion", "kind", "name", "version", "description", "extends", "verdicts", "checks"}
CHECK_KEYS = {"enabled", "severity", "paths", "severity_by_path", "params"}


def _severity(doc: YamlDoc, key: str, value) -> str:
    if value not in SEVERITY_RANK:
        raise doc.error(key, f"unknown severity {value!r} (one of: {', '.join(SEVERITIES)})")
    return value


def _path_list(doc: YamlDoc, key: str, value) -> list[str]:
    known = set(path_ids())
    out = []
    for i, p in enumerate(expect_list(doc, key, value)):
        if p not in known:
            raise doc.error(f"{key}[{i}]", f"unknown path {p!r} (see `commpath paths`)")
        out.append(p)
    return out


def policy_from_doc(doc: YamlDoc, _depth: int = 0) -> Policy:
    """Validate a parsed policy document; unknown keys, checks, paths or severities are errors."""
    data = doc.data if doc.data is not None else {}
    expect_mapping(doc, "", data, POLICY_KEYS)
    if "apiVersion" in data and data["apiVersion"] != "commpath/v1":
        raise doc.error("apiVersion", f"expected 'commpath/v1', got {data['apiVersion']!r}")
    if "kind" in data and data["kind"] != "Policy":
        raise doc.error("kind", f"expected 'Policy', got {data['kind']!r}")
    if "extends" in data:
        base_name = expect_str(doc, "extends", data["extends"])
        if base_name not in builtin_policies() or _depth > 0:
            raise doc.error("extends", f"unknown built-in policy {base_name!r} (one of: {', '.join(builtin_policies())})")
        base = _builtin(base_name)
        checks = copy.deepcopy(base.checks)
        fail_at, warn_at = base.fail_at, base.warn_at
    else:
        checks = load_checks()
        fail_at, warn_at = "high", "low"
    verdicts = expect_mapping(doc, "verdicts", data.get("verdicts", {}), {"fail", "warn"})
    if "fail" in verdicts:
        fail_at = _severity(doc, "verdicts.fail", verdicts["fail"])
    if "warn" in verdicts:
        warn_at = _severity(doc, "verdicts.warn", verdicts["warn"])
    if SEVERITY_RANK[warn_at] > SEVERITY_RANK[fail_at]:
        raise doc.error("verdicts.warn", f"{warn_at!r} is above verdicts.fail {fail_at!r}")
    for cid, raw in expect_mapping(doc, "checks", data.get("checks", {})).items():
        key = f"checks.{cid}"
        if cid not in checks:
            raise doc.error(key, f"unknown check (known: {', '.join(sorted(checks))})")
        if raw is None:
            continue
        if isinstance(raw, bool):
            checks[cid].enabled = raw
            continue
        expect_mapping(doc, key, raw, CHECK_KEYS)
        c = checks[cid]
        if "enabled" in raw:
            c.enabled = expect_bool(doc, f"{key}.enabled", raw["enabled"])
        if "severity" in raw:
            c.severity = _severity(doc, f"{key}.severity", raw["severity"])
        if "paths" in raw:
            c.paths = _path_list(doc, f"{key}.paths", raw["paths"])
        if "severity_by_path" in raw:
            sbp = expect_mapping(doc, f"{key}.severity_by_path", raw["severity_by_path"], set(path_ids()))
            c.severity_by_path = {p: _severity(doc, f"{key}.severity_by_path.{p}", s) for p, s in sbp.items()}
        if "params" in raw:
            c.params.update(_params(doc, f"{key}.params", raw["params"], TESTS[c.test]))
    name = str(data.get("name") or Path(doc.file).stem)
    return Policy(name=name, checks=checks, fail_at=fail_at, warn_at=warn_at, file=doc.file,
                  description=str(data.get("description") or ""))


@functools.cache
def _builtin(name: str) -> Policy:
    res = POLICY_DIR / f"{name}.yaml"
    return policy_from_doc(load_yaml(f"commpath/cfg/policies/{name}.yaml", res.read_text(encoding="utf-8")), 1)


def load_policy(name_or_file: str | Path | Policy = "default") -> Policy:
    """A built-in policy by name (``default``, ``untrusted-network``) or a user policy file."""
    if isinstance(name_or_file, Policy):
        return name_or_file
    text = str(name_or_file)
    if text in builtin_policies():
        return copy.deepcopy(_builtin(text))
    path = Path(text)
    if not path.exists():
        raise InputError(text, f"no such policy file (built-in policies: {', '.join(builtin_policies())})")
    return policy_from_doc(load_yaml(path))

"""The component settings that matter (cfg/host_settings.yaml), validated, and command-line flag parsing."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath

import yaml

from ..errors import InputError

SETTINGS_FILE = "commpath/cfg/host_settings.yaml"
RECORD_KINDS = ("config", "kubeconfig", "certificates", "egress-selector", "dropin-dir")
_COMPONENT_KEYS = {"executables", "config_flag", "documents", "settings", "environ_prefix", "config_file_wins"}
_SETTING_KEYS = {"flag", "key", "default", "config_default", "record", "paths"}


@dataclass(frozen=True)
class Setting:
    """One setting of a component: its flag and/or config key, defaults, and what to record of its file."""

    flag: str | None
    key: str | None
    default: object
    config_default: object
    record: str | None
    #: the documented paths the setting governs (path ids of cfg/catalog.yaml; the check layer validates them)
    paths: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The setting's one name across sources: its configuration key where it has one, else its flag."""
        return self.key or self.flag or ""


@dataclass(frozen=True)
class Component:
    name: str
    executables: tuple[str, ...]
    config_flag: str | None
    documents: tuple[str, ...]
    settings: tuple[Setting, ...]
    #: environment variables that set flags (etcd: ETCD_CLIENT_CERT_AUTH is --client-cert-auth)
    environ_prefix: str | None = None
    #: with its config file given, the component ignores its other flags and variables (etcd)
    config_file_wins: bool = False

    def flag_of_variable(self, name: str) -> str | None:
        """``ETCD_CLIENT_CERT_AUTH`` -> ``--client-cert-auth`` (None for another variable)."""
        if not self.environ_prefix or not name.startswith(self.environ_prefix) or name == self.environ_prefix:
            return None
        return "--" + name[len(self.environ_prefix):].lower().replace("_", "-")

    def by_flag(self, flag: str) -> Setting | None:
        return next((s for s in self.settings if s.flag == flag), None)

    def by_key(self, key: str) -> Setting | None:
        return next((s for s in self.settings if s.key == key), None)


@dataclass(frozen=True)
class HostSettings:
    release: str
    components: dict[str, Component]

    def component_of(self, argv: list[str]) -> tuple[str | None, list[str]]:
        """The component a command line runs (by its program's file name; ``hyperkube NAME``) and its
        arguments after the program."""
        if not argv:
            return None, []
        prog = PurePosixPath(argv[0]).name
        args = argv[1:]
        if prog == "hyperkube" and args:
            prog, args = args[0], args[1:]
        for comp in self.components.values():
            if prog in comp.executables:
                return comp.name, args
        return None, args


def _fail(key: str, reason: str) -> InputError:
    return InputError(SETTINGS_FILE, f"{key}: {reason}")


def _setting(key: str, raw) -> Setting:
    if not isinstance(raw, dict) or set(raw) - _SETTING_KEYS:
        raise _fail(key, f"a mapping of {sorted(_SETTING_KEYS)}")
    flag, ckey = raw.get("flag"), raw.get("key")
    if not flag and not ckey:
        raise _fail(key, "needs a flag or a key")
    if flag is not None and not (isinstance(flag, str) and flag.startswith("--")):
        raise _fail(f"{key}.flag", f"{flag!r} is not a --flag")
    if "default" not in raw:
        raise _fail(key, "missing default (null when unset)")
    if raw.get("record") is not None and raw["record"] not in RECORD_KINDS:
        raise _fail(f"{key}.record", f"unknown {raw['record']!r} (one of: {', '.join(RECORD_KINDS)})")
    paths = raw.get("paths") or []
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise _fail(f"{key}.paths", "a list of path ids")
    return Setting(flag, ckey, raw["default"], raw.get("config_default", raw["default"]), raw.get("record"),
                   tuple(paths))


@functools.cache
def load() -> HostSettings:
    """cfg/host_settings.yaml, validated: unknown keys, flags without dashes, unknown record kinds are errors."""
    text = (resources.files("commpath") / "cfg" / "host_settings.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or data.get("kind") != "HostSettings" or data.get("apiVersion") != "commpath/v1":
        raise _fail("(document)", "expected apiVersion commpath/v1, kind HostSettings")
    components = {}
    for name, raw in (data.get("components") or {}).items():
        key = f"components.{name}"
        if not isinstance(raw, dict) or set(raw) - _COMPONENT_KEYS or not raw.get("executables"):
            raise _fail(key, f"a mapping of {sorted(_COMPONENT_KEYS)} with executables")
        settings = tuple(_setting(f"{key}.settings[{i}]", s) for i, s in enumerate(raw.get("settings") or []))
        prefix = raw.get("environ_prefix")
        if prefix is not None and not (isinstance(prefix, str) and prefix.isupper() and prefix.endswith("_")):
            raise _fail(f"{key}.environ_prefix", f"{prefix!r} is not an upper-case variable prefix ending in _")
        components[name] = Component(name, tuple(raw["executables"]), raw.get("config_flag"),
                                     tuple(raw.get("documents") or ()), settings, prefix,
                                     bool(raw.get("config_file_wins", False)))
    return HostSettings(str(data.get("defaults_release", "")), components)


#: the most nodes (mappings, lists, scalars, each alias use counted) one YAML document may hold
MAX_YAML_NODES = 20000


def _nodes_within(doc, limit: int) -> bool:
    """Whether ``doc`` has at most ``limit`` nodes, aliases counted at every use (an alias bomb has billions)."""
    stack, seen = [doc], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > limit:
            return False
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return True


def yaml_document(text: str, limit: int = MAX_YAML_NODES):
    """(document, None) or (None, reason): YAML (or JSON) text, refused when it is not YAML or expands
    beyond ``limit`` nodes."""
    try:
        doc = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"not YAML: {first}"
    if not _nodes_within(doc, limit):
        return None, f"more than {limit} YAML nodes (aliases expanded): refused"
    return doc, None


def parse_flags(args: list[str], booleans: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """``(--flag, value)`` in command-line order, as Go's flag packages read them: ``--f=v``, ``-f=v``,
    ``--f v`` (unless ``--f`` is a known boolean or the next argument is a flag), a bare ``--f`` is
    ``true``; positional arguments are skipped."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            continue
        name = "--" + arg.lstrip("-")
        if "=" in name:
            name, _, value = name.partition("=")
            out.append((name, value))
        elif name not in booleans and i < len(args) and not args[i].startswith("-"):
            out.append((name, args[i]))
            i += 1
        else:
            out.append((name, "true"))
    return out


def boolean_flags(component: Component) -> frozenset[str]:
    """The component's flags whose default is a boolean (a bare flag sets them)."""
    return frozenset(s.flag for s in component.settings if s.flag and isinstance(s.default, bool))


__all__ = ["Component", "HostSettings", "MAX_YAML_NODES", "RECORD_KINDS", "Setting", "boolean_flags", "load", "parse_flags",
           "yaml_document"]

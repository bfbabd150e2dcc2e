"""YAML documents with the line of every key, for validation errors naming file, line and key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError


@dataclass
class YamlDoc:
    """A parsed YAML file: ``data`` as plain Python and ``lines`` from key path to 1-based line."""

    file: str
    data: Any
    lines: dict[str, int] = field(default_factory=dict)

    def line(self, key: str) -> int:
        """The line of ``key`` (or of its nearest enclosing key that has one)."""
        while key:
            if key in self.lines:
                return self.lines[key]
            key = _parent(key)
        return self.lines.get("", 1)

    def error(self, key: str, reason: str) -> InputError:
        """The one-line error ``file:line: key: reason``."""
        return InputError(f"{self.file}:{self.line(key)}", f"{key or '(document)'}: {reason}")


def _parent(key: str) -> str:
    if key.endswith("]"):
        return key[: key.rindex("[")]
    return key.rpartition(".")[0]


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _to_python(node: yaml.Node, key: str, lines: dict[str, int], file: str) -> Any:
    lines.setdefault(key, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                raise InputError(f"{file}:{knode.start_mark.line + 1}", f"{key or '(document)'}: keys must be plain names")
            name = knode.value
            child = _join(key, name)
            if name in out:
                raise InputError(f"{file}:{knode.start_mark.line + 1}", f"{child}: duplicate key")
            lines[child] = knode.start_mark.line + 1
            out[name] = _to_python(vnode, child, lines, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, f"{key}[{i}]", lines, file) for i, item in enumerate(node.value)]
    return yaml.SafeLoader(_EmptyStream()).construct_object(node, deep=True)


class _EmptyStream(str):
    """The SafeLoader needs a stream to be constructed; the scalars come from composed nodes."""


def _compose(text: str) -> yaml.Node | None:
    """The node tree of ``text``: libyaml's parser when present (a tenth of the pure-Python
    parser's time, paid by every run for the catalog and checks); a document it rejects is parsed
    again in Python so that the error message is the same whichever is installed."""
    loader = getattr(yaml, "CSafeLoader", None)
    if loader is not None:
        try:
            return yaml.compose(text, Loader=loader)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def load_yaml(path: str | Path, text: str | None = None) -> YamlDoc:
    """Parse ``path`` (or ``text`` attributed to it); syntax errors name the file and line."""
    file = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(file, "no such file") from None
        except IsADirectoryError:
            raise InputError(file, "is a directory, expected a YAML file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(file, f"cannot read: {exc}") from None
    try:
        node = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise InputError(f"{file}:{line}", f"invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise InputError(file, f"invalid YAML: {exc}") from None
    lines: dict[str, int] = {}
    if node is None:
        return YamlDoc(file, None, {"": 1})
    try:
        data = _to_python(node, "", lines, file)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise InputError(f"{file}:{mark.line + 1 if mark else 1}", f"invalid YAML value: {exc.problem}") from None
    return YamlDoc(file, data, lines)


# -- small typed accessors used by the inventory and policy validators ------------------------

def expect_mapping(doc: YamlDoc, key: str, value: Any, allowed: set[str] | None = None) -> dict:
    """``value`` must be a mapping whose keys are all in ``allowed`` (when given)."""
    if not isinstance(value, dict):
        raise doc.error(key, f"expected a mapping, got {_kind(value)}")
    if allowed is not None:
        for name in value:
            if name not in allowed:
                raise doc.error(_join(key, name), f"unknown key (allowed: {', '.join(sorted(allowed))})")
    return value


def expect_list(doc: YamlDoc, key: str, value: Any) -> list:
    if not isinstance(value, list):
        raise doc.error(key, f"expected a list, got {_kind(value)}")
    return value


def expect_str(doc: YamlDoc, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise doc.error(key, f"expected a non-empty string, got {_kind(value)}")
    return value


def expect_int(doc: YamlDoc, key: str, value: Any, lo: int = 0, hi: int = 65535) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise doc.error(key, f"expected an integer in {lo}..{hi}, got {value!r}")
    return value


def expect_bool(doc: YamlDoc, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise doc.error(key, f"expected true or false, got {value!r}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"

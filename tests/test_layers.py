"""The package's layers import in one direction only: capture → decode → classify → check → present,
with the pipeline (and the command line, the lab, the distributed runner) above all five."""

from __future__ import annotations

import ast
from pathlib import Path

import commpath

PACKAGE = Path(commpath.__file__).parent
#: rank of each part of the package; a module may import only from its own rank or below
RANKS = {"errors": 0, "_version": 0, "cfg": 0, "capture": 1, "decode": 2, "classify": 3, "check": 4, "present": 5}
TOP = 6     # _pipeline, cli, __init__, __main__, lab, distributed, and anything new at the top level
LAYERS = ("capture", "decode", "classify", "check", "present")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _rank(module: str) -> int:
    parts = module.split(".")
    if parts[0] != "commpath":
        raise ValueError(module)
    if len(parts) == 1:
        return TOP
    return RANKS.get(parts[1], TOP)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every commpath import in the file, at any depth, and of every
    ``importlib.import_module("commpath...")`` string."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "commpath":
                continue
            if node.module is None or target in ("commpath",):
                # "from . import x" / "from .. import x": each name may be a submodule
                out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "commpath"]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("commpath")):
            out.append((node.lineno, str(node.args[0].value)))
    return out


def _upward_imports() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        rank = _rank(module)
        for line, target in _imports(path):
            if target == "commpath.__version__":
                target = "commpath._version"
            if _rank(target) > rank or (rank < TOP and target.startswith("commpath._pipeline")):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} imports {target}")
    return bad


def test_no_layer_imports_a_layer_above_it():
    assert _upward_imports() == []


def test_the_walker_sees_every_kind_of_import(tmp_path, monkeypatch):
    """The check itself: relative, absolute, nested and importlib-string imports are all found."""
    fake = tmp_path / "commpath"
    (fake / "decode").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "decode" / "__init__.py").write_text("")
    (fake / "decode" / "bad.py").write_text(
        "from ..classify import classify\n"
        "import commpath.check.engine\n"
        "def f():\n    from ..present.html import build_html\n"
        "    import importlib\n    importlib.import_module('commpath._pipeline')\n"
        "from . import schema\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    found = _upward_imports()
    assert [line.split(" imports ")[1] for line in found] == [
        "commpath.classify", "commpath.check.engine", "commpath.present.html", "commpath._pipeline"]


def test_every_layer_is_a_package_of_the_ranks():
    for layer in LAYERS:
        assert (PACKAGE / layer / "__init__.py").is_file()
        assert layer in RANKS

"""The notebooks run top to bottom on the bundled captures with no error and produce their figures."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from test_present_data import lab_analysis, lab_scenarios

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: notebook -> figures it must produce
FIGURES = {"quickstart.ipynb": 5, "path-compliance.ipynb": 3}

needs_captures = pytest.mark.skipif(not lab_scenarios(), reason="no bundled lab captures in captures/")


def run(name: str):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    return nb


def outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            for out in cell.get("outputs", []):
                yield cell, out


def test_notebooks_are_stored_without_outputs():
    for name in FIGURES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), name
        assert all(c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"), name
        assert "widgets" not in nb.metadata, name   # no stale progress-bar widgets


def test_notebooks_import_only_public_names():
    """Notebooks use commpath's public API: no private module, nothing below the top package."""
    for name in FIGURES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            source = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.ImportFrom):
                    assert not (node.module or "").startswith("commpath"), (name, node.module)
                elif isinstance(node, ast.Import):
                    assert all(a.name == "commpath" or not a.name.startswith("commpath") for a in node.names)


@needs_captures
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_runs_and_draws(name):
    nb = run(name)
    errors = [o for _, o in outputs(nb) if o.output_type == "error"]
    assert not errors, errors[0].get("evalue") if errors else ""
    images = [o for _, o in outputs(nb) if "image/png" in o.get("data", {})]
    assert len(images) >= FIGURES[name]
    html = [o for _, o in outputs(nb) if 'id="verdict-table"' in o.get("data", {}).get("text/html", "")]
    assert html, "the analysis' rich summary is shown"
    if name == "quickstart.ipynb":
        scenario = "default" if "default" in lab_scenarios() else lab_scenarios()[0]
        cell = next(c for c in nb.cells if c.source.strip() == "analysis.summary()")
        shown = ast.literal_eval(cell.outputs[0]["data"]["text/plain"])
        assert shown == lab_analysis(scenario).summary()

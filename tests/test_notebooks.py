"""The notebooks run top to bottom on tiny settings (SEGJAX_NOTEBOOK_SMOKE=1), and the committed files are what
notebooks/build_notebooks.py generates, without outputs."""

import pathlib

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


@pytest.mark.parametrize("name", ["operators_tour.ipynb", "inspect_run.ipynb"])
def test_notebook_executes(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("SEGJAX_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("SEGJAX_NOTEBOOK_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


def test_committed_notebooks_are_generated_and_have_no_outputs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS / "build_notebooks.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    for name, cells in builder.NOTEBOOKS.items():
        committed = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert [c.source for c in committed.cells] == [src for _, src in cells], f"rerun build_notebooks.py ({name})"
        assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code"), name

"""Every notebook in colabs/ runs top to bottom."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

COLABS = pathlib.Path(__file__).resolve().parents[2] / "colabs"


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(COLABS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_runs(path):
  nb = nbformat.read(path, as_version=4)
  client = NotebookClient(
    nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(COLABS)}}
  )
  client.execute()
  errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
  assert not errors

"""Builds a notebook from (kind, source) cells; shared by the colabs/make_*_notebook.py scripts."""

import nbformat


def write(cells, path):
  """cells: ("md" | "code", source) pairs, in order; writes the .ipynb at `path`."""
  nb = nbformat.v4.new_notebook()
  for kind, src in cells:
    cell = nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
    nb.cells.append(cell)
  nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
  nbformat.write(nb, path)

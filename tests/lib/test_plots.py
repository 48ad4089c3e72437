"""lib/plots.py: every helper writes a non-empty PNG and returns its path."""

import os

import numpy as np
import pytest

from jaxsys.lib import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path):
  assert os.path.isfile(path)
  with open(path, "rb") as f:
    assert f.read(8) == PNG_MAGIC
  assert os.path.getsize(path) > 1000
  # no temporary file left beside it
  assert [n for n in os.listdir(os.path.dirname(path)) if n.endswith(".tmp")] == []


def test_line_plot(tmp_path):
  x = [0.5, 1.0, 1.5]
  path = str(tmp_path / "sub" / "line.png")
  out = plots.line_plot(
    path, x, {"a": [1.0, 10.0, 100.0], "b": np.array([2.0, np.nan, 0.0])}, logy=True, title="t"
  )
  assert out == path
  _check_png(path)
  with pytest.raises(ValueError, match="series 'a' has 2 values for 3 x values"):
    plots.line_plot(str(tmp_path / "bad.png"), x, {"a": [1, 2]})


def test_line_plot_log_of_nothing_positive(tmp_path):
  _check_png(plots.line_plot(str(tmp_path / "z.png"), [1, 2], {"z": [0.0, np.nan]}, logy=True))


def test_bar_plot(tmp_path):
  path = plots.bar_plot(
    str(tmp_path / "bar.png"), ["x", "y", "z"], [1.0, 2.0, np.nan], errors=[0.1, 0.2, 0.0]
  )
  _check_png(path)
  with pytest.raises(ValueError, match="2 names for 3 values"):
    plots.bar_plot(str(tmp_path / "bad.png"), ["x", "y"], [1, 2, 3])


def test_cdf_plot(tmp_path):
  rng = np.random.default_rng(0)
  samples = {"a": rng.exponential(size=100), "b": np.array([0.0, np.inf, 1.0]), "empty": []}
  _check_png(plots.cdf_plot(str(tmp_path / "cdf.png"), samples, logx=True, xlabel="s"))


def test_line_grid_and_custom(tmp_path):
  panels = {f"p{i}": {"a": np.arange(4.0) * i, "b": np.ones(4)} for i in range(4)}
  _check_png(plots.line_grid(str(tmp_path / "grid.png"), np.arange(4), panels, ncols=3))
  _check_png(plots.custom_plot(str(tmp_path / "c.png"), lambda ax: ax.plot([0, 1], [1, 0])))

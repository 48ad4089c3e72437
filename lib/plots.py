"""Small matplotlib helpers that write PNG files atomically and return their paths.

Figures are drawn on matplotlib's Agg canvas without pyplot, so there is no global figure state
and importing this module never changes the backend of a notebook. NaN values leave gaps;
non-positive values are masked on log axes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxsys.lib.writer import atomic_write

DPI = 120


def _figure(figsize=(6.0, 4.0), **subplots_kw) -> tuple[Figure, Any]:
  fig = Figure(figsize=figsize, layout="constrained")
  FigureCanvasAgg(fig)
  return fig, fig.subplots(**subplots_kw)


def save(fig: Figure, path: str) -> str:
  """Renders `fig` to PNG and writes it to `path` atomically; returns the path."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=DPI)
  return atomic_write(path, buf.getvalue())


def _floats(y) -> np.ndarray:
  return np.asarray(y, dtype=np.float64).ravel()


def _log_ok(values: Sequence[np.ndarray]) -> bool:
  """Whether a log axis has anything to show (some finite positive value)."""
  return any(np.any(np.isfinite(v) & (v > 0)) for v in values)


def _set_log(ax: Axes, which: str, values: Sequence[np.ndarray]) -> None:
  """Log scale on axis `which` ('x' or 'y') if any value is positive; over a narrow range
  (up to three decades) ticks at 1, 2, 5 x 10^k with plain labels instead of crowded minors."""
  if not _log_ok(values):
    return
  (ax.set_xscale if which == "x" else ax.set_yscale)("log", nonpositive="mask")
  v = np.concatenate([np.ravel(x) for x in values])
  v = v[np.isfinite(v) & (v > 0)]
  if np.log10(v.max() / v.min()) <= 3:
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda t, _: f"{t:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _decorate(ax: Axes, xlabel: str, ylabel: str, title: str, legend: bool) -> None:
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.grid(True, alpha=0.3)
  if legend and ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize="small")


def _lines(ax: Axes, x, series: Mapping[str, Any], logx: bool, logy: bool, markers: bool) -> None:
  x = _floats(x)
  ys = {name: _floats(y) for name, y in series.items()}
  for name, y in ys.items():
    if y.shape != x.shape:
      raise ValueError(f"series {name!r} has {y.size} values for {x.size} x values")
    ax.plot(x, y, marker="o" if markers else None, markersize=3, label=str(name))
  if logx:
    _set_log(ax, "x", [x])
  if logy:
    _set_log(ax, "y", list(ys.values()))


def line_plot(
  path: str,
  x,
  series: Mapping[str, Any],
  *,
  xlabel: str = "",
  ylabel: str = "",
  title: str = "",
  logx: bool = False,
  logy: bool = False,
  markers: bool = True,
  figsize=(6.0, 4.0),
) -> str:
  """One line per entry of `series` (name -> y values over `x`); returns `path`."""
  fig, ax = _figure(figsize)
  _lines(ax, x, series, logx, logy, markers)
  _decorate(ax, xlabel, ylabel, title, legend=True)
  return save(fig, path)


def bar_plot(
  path: str,
  names: Sequence[str],
  values,
  *,
  errors=None,
  xlabel: str = "",
  ylabel: str = "",
  title: str = "",
  logy: bool = False,
  figsize=(6.0, 4.0),
) -> str:
  """One bar per name (optional symmetric error bars); returns `path`."""
  values = _floats(values)
  if len(names) != values.size:
    raise ValueError(f"bar_plot: {len(names)} names for {values.size} values")
  fig, ax = _figure(figsize)
  pos = np.arange(values.size)
  ax.bar(pos, np.nan_to_num(values, nan=0.0), yerr=None if errors is None else _floats(errors))
  rotate = len(names) > 4 or max((len(str(n)) for n in names), default=0) > 10
  ax.set_xticks(pos, [str(n) for n in names], rotation=30 if rotate else 0)
  if rotate:
    for label in ax.get_xticklabels():
      label.set_horizontalalignment("right")
  ax.set_axisbelow(True)
  if logy:
    _set_log(ax, "y", [values])
  _decorate(ax, xlabel, ylabel, title, legend=False)
  return save(fig, path)


def cdf_plot(
  path: str,
  samples: Mapping[str, Any],
  *,
  xlabel: str = "",
  ylabel: str = "fraction",
  title: str = "",
  logx: bool = False,
  figsize=(6.0, 4.0),
) -> str:
  """Empirical CDF of each sample set (non-finite values dropped); returns `path`."""
  fig, ax = _figure(figsize)
  kept = []
  for name, s in samples.items():
    s = _floats(s)
    s = np.sort(s[np.isfinite(s)])
    if logx:
      s = s[s > 0]
    if s.size:
      ax.step(s, np.arange(1, s.size + 1) / s.size, where="post", label=str(name))
      kept.append(s)
  if logx:
    _set_log(ax, "x", kept)
  ax.set_ylim(0.0, 1.02)
  _decorate(ax, xlabel, ylabel, title, legend=True)
  return save(fig, path)


def line_grid(
  path: str,
  x,
  panels: Mapping[str, Mapping[str, Any]],
  *,
  ncols: int = 3,
  xlabel: str = "",
  ylabel: str = "",
  title: str = "",
  logx: bool = False,
  logy: bool = False,
  panel_size=(4.0, 3.0),
) -> str:
  """A grid of line plots sharing `x`: panel title -> (series name -> y); returns `path`."""
  if not panels:
    raise ValueError("line_grid: no panels")
  ncols = max(1, min(ncols, len(panels)))
  nrows = math.ceil(len(panels) / ncols)
  fig, axes = _figure(
    (panel_size[0] * ncols, panel_size[1] * nrows), nrows=nrows, ncols=ncols, squeeze=False
  )
  flat = axes.ravel()
  for ax, (panel, series) in zip(flat, panels.items(), strict=False):
    _lines(ax, x, series, logx, logy, markers=True)
    _decorate(ax, xlabel, ylabel, panel, legend=ax is flat[0])
  for ax in flat[len(panels) :]:
    ax.set_visible(False)
  if title:
    fig.suptitle(title)
  return save(fig, path)


def custom_plot(path: str, draw: Callable[[Axes], Any], *, figsize=(6.0, 4.0)) -> str:
  """Calls `draw(ax)` on a fresh axes and writes the PNG; for one-off figures."""
  fig, ax = _figure(figsize)
  draw(ax)
  return save(fig, path)

"""Run outputs: config.json, metrics.jsonl, other JSON files, and a progress logger.

  writer = MetricWriter(workdir)
  writer.write_config(config)                     # config.json, written atomically
  progress = Progress(num_steps, every_steps=100)
  for step in range(start, num_steps):
    ...
    if step % log_every == 0:
      writer.write_scalars(step, {"loss": loss})  # one line of metrics.jsonl
    progress(step)                                 # absl log: steps/s and ETA
  writer.write_json("results.json", results)
  writer.close()

Whole files are written to a temporary file and renamed, so a reader never sees half of one.
metrics.jsonl is appended one flushed line at a time (a resumed run appends to it).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from absl import logging

from jaxsys.lib import config as config_lib

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone gives 0o600


def atomic_write(path: str, data: str | bytes) -> str:
  """Writes `data` to `path` via a temporary file in the same folder and a rename."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  mode = "wb" if isinstance(data, bytes) else "w"
  fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, mode) as f:
      f.write(data)
    os.chmod(tmp, _FILE_MODE)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def to_python(x: Any) -> Any:
  """JSON-ready Python value of numbers, numpy/jax scalars and arrays, and nested containers."""
  if isinstance(x, Mapping):
    return {str(k): to_python(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_python(v) for v in x]
  if isinstance(x, (str, bool, int, float)) or x is None:
    return x
  if isinstance(x, np.generic):
    return x.item()
  if hasattr(x, "__array__"):  # np.ndarray, jax.Array (fetched to host here)
    a = np.asarray(x)
    return a.item() if a.ndim == 0 else a.tolist()
  raise TypeError(f"cannot write {type(x).__name__} value {x!r} as JSON")


def dumps(obj: Any, indent: int | None = 1) -> str:
  """JSON text of `obj` after `to_python` (NaN and inf are written as NaN / Infinity)."""
  return json.dumps(to_python(obj), indent=indent)


class MetricWriter:
  """Writes config.json, metrics.jsonl and named JSON files into `workdir`.

  Args:
    workdir: output folder (created).
    check_nan: raise FloatingPointError when a float scalar is NaN or infinite, naming the step
      and the metric; nothing of that step is written.
  """

  def __init__(self, workdir: str, *, check_nan: bool = False):
    self.workdir = workdir
    self.check_nan = check_nan
    os.makedirs(workdir, exist_ok=True)
    self._metrics = None

  def path(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  def write_config(self, config: Any) -> str:
    """config.json from a ConfigDict or mapping; returns its path."""
    return atomic_write(self.path(CONFIG_FILE), json.dumps(config_lib.to_dict(config), indent=1))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Appends `{"step": step, **scalars}` as one line of metrics.jsonl.

    Values may be Python, numpy or jax scalars (fetched here: call on log steps only), strings
    or small nested lists/dicts.
    """
    row = {"step": int(step)}
    for k, v in scalars.items():
      if k == "step":
        raise ValueError("'step' is reserved in write_scalars; pass it as the step argument")
      row[str(k)] = to_python(v)
    if self.check_nan:
      bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
      if bad:
        raise FloatingPointError(
          f"step {step}: non-finite {', '.join(f'{k}={row[k]}' for k in bad)}"
        )
    if self._metrics is None:
      self._metrics = open(self.path(METRICS_FILE), "a")  # closed in close()
    self._metrics.write(json.dumps(row) + "\n")
    self._metrics.flush()

  def truncate_after(self, step: int) -> int:
    """Drops the metrics rows with step > `step` (a resumed run rewrites them); returns how many.

    A run killed after its last checkpoint has logged steps that the restart replays; without
    this the file would hold them twice.
    """
    self.close()
    path = self.path(METRICS_FILE)
    if not os.path.exists(path):
      return 0
    with open(path) as f:
      lines = [line for line in f if line.strip()]
    rows = []
    for i, line in enumerate(lines):
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        if i != len(lines) - 1:  # only the line being written when the run died may be cut
          raise
    kept = [r for r in rows if r.get("step", 0) <= step]
    if len(kept) < len(lines):
      atomic_write(path, "".join(json.dumps(r) + "\n" for r in kept))
    return len(lines) - len(kept)

  def write_json(self, name: str, obj: Any) -> str:
    """Writes `obj` as JSON to `workdir/name` atomically; returns the path."""
    return atomic_write(self.path(name), dumps(obj))

  def close(self) -> None:
    if self._metrics is not None:
      self._metrics.close()
      self._metrics = None

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The rows of `workdir/metrics.jsonl` (empty if there is none)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
  """Logs step, steps/s and ETA every `every_steps` steps and/or `every_secs` seconds.

  A per-step hook in the style of CLU's ReportProgress (our own code). Call it with the step
  just finished; it returns the log line when it logged, else None. The rate is measured over
  the steps since the previous log, so compile time on the first step only delays the first line.

  Args:
    total_steps: the last step, for the percentage and ETA (None: no ETA).
    every_steps: log when `step % every_steps == 0` (None: never by step count).
    every_secs: log when this many seconds passed since the last line (None: never by time).
    name: prefix of the log line.
    clock: seconds, monotonic (injectable for tests).
  """

  def __init__(
    self,
    total_steps: int | None = None,
    every_steps: int | None = 100,
    every_secs: float | None = None,
    name: str = "progress",
    clock: Callable[[], float] = time.monotonic,
  ):
    if every_steps is not None and every_steps < 1:
      raise ValueError(f"every_steps={every_steps!r}: must be >= 1 or None")
    self.total_steps = total_steps
    self.every_steps = every_steps
    self.every_secs = every_secs
    self.name = name
    self._clock = clock
    self._last_step: int | None = None
    self._last_time = 0.0

  def __call__(self, step: int) -> str | None:
    now = self._clock()
    if self._last_step is None:  # first call: start measuring
      self._last_step, self._last_time = step, now
      return None
    due = self.every_steps is not None and step % self.every_steps == 0
    due |= self.every_secs is not None and now - self._last_time >= self.every_secs
    due |= self.total_steps is not None and step >= self.total_steps
    if not due or step == self._last_step:
      return None
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    line = f"{self.name}: step {step}"
    if self.total_steps:
      left = max(self.total_steps - step, 0)
      eta = left / rate if rate > 0 else float("inf")
      line += f"/{self.total_steps} ({100.0 * step / self.total_steps:.1f}%)"
      line += f", {rate:.3g} steps/s, ETA {_duration(eta)}"
    else:
      line += f", {rate:.3g} steps/s"
    logging.info("%s", line)
    self._last_step, self._last_time = step, now
    return line

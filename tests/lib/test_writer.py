"""lib/writer.py: atomic files, metrics.jsonl lines, scalar conversion, progress logging."""

import json
import math
import os
import pathlib

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxsys.lib import writer as writer_lib


def _config():
  c = ml_collections.ConfigDict()
  c.lr = 1e-3
  c.sizes = (1, 2)
  return c


def test_config_and_json_files(tmp_path):
  w = writer_lib.MetricWriter(str(tmp_path / "run"))
  path = w.write_config(_config())
  assert json.loads(pathlib.Path(path).read_text()) == {"lr": 1e-3, "sizes": [1, 2]}
  path = w.write_json("results.json", {"a": np.arange(3), "b": {"c": jnp.float32(2.0)}})
  assert json.loads(pathlib.Path(path).read_text()) == {"a": [0, 1, 2], "b": {"c": 2.0}}
  w.close()
  # no temporary files left behind
  assert sorted(os.listdir(tmp_path / "run")) == ["config.json", "results.json"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
  path = str(tmp_path / "x.json")
  writer_lib.atomic_write(path, "old")
  w = writer_lib.MetricWriter(str(tmp_path))
  with pytest.raises(TypeError, match="cannot write object"):
    w.write_json("x.json", {"bad": object()})
  assert pathlib.Path(path).read_text() == "old"
  assert os.listdir(tmp_path) == ["x.json"]
  writer_lib.atomic_write(path, b"\x00bytes")
  assert pathlib.Path(path).read_bytes() == b"\x00bytes"


def test_scalars_appended_as_lines(tmp_path):
  with writer_lib.MetricWriter(str(tmp_path)) as w:
    w.write_scalars(0, {"loss": jnp.float32(1.5), "count": np.int64(3), "name": "fcfs"})
    w.write_scalars(np.int32(10), {"loss": jnp.array(0.25), "ok": np.bool_(True), "v": [1, 2]})
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line) for line in lines] == [
    {"step": 0, "loss": 1.5, "count": 3, "name": "fcfs"},
    {"step": 10, "loss": 0.25, "ok": True, "v": [1, 2]},
  ]
  rows = writer_lib.read_metrics(str(tmp_path))
  assert type(rows[0]["count"]) is int and type(rows[1]["ok"]) is bool
  # a second writer (a resumed run) appends
  with writer_lib.MetricWriter(str(tmp_path)) as w:
    w.write_scalars(20, {"loss": 0.1})
  assert [r["step"] for r in writer_lib.read_metrics(str(tmp_path))] == [0, 10, 20]


def test_nan_check(tmp_path):
  w = writer_lib.MetricWriter(str(tmp_path), check_nan=True)
  w.write_scalars(1, {"loss": 1.0})
  with pytest.raises(FloatingPointError, match=r"step 2: non-finite loss=nan"):
    w.write_scalars(2, {"loss": jnp.float32(jnp.nan), "acc": 0.5})
  w.close()
  assert [r["step"] for r in writer_lib.read_metrics(str(tmp_path))] == [1]
  # without the check NaN is written (Python's json reads it back)
  with writer_lib.MetricWriter(str(tmp_path / "b")) as w:
    w.write_scalars(0, {"loss": np.nan})
  assert math.isnan(writer_lib.read_metrics(str(tmp_path / "b"))[0]["loss"])


def test_step_key_reserved(tmp_path):
  with writer_lib.MetricWriter(str(tmp_path)) as w, pytest.raises(ValueError, match="reserved"):
    w.write_scalars(0, {"step": 1})


def test_read_metrics_missing(tmp_path):
  assert writer_lib.read_metrics(str(tmp_path)) == []


def test_progress_rate_and_eta():
  now = [0.0]
  p = writer_lib.Progress(total_steps=1000, every_steps=100, name="train", clock=lambda: now[0])
  assert p(0) is None  # starts the clock
  now[0] = 10.0
  assert p(50) is None  # not a multiple of 100
  line = p(100)
  assert line == "train: step 100/1000 (10.0%), 10 steps/s, ETA 1m30s"
  now[0] = 15.0
  line = p(200)  # rate since the previous line: 100 steps in 5 s
  assert line == "train: step 200/1000 (20.0%), 20 steps/s, ETA 40s"


def test_progress_by_time_without_total():
  now = [0.0]
  p = writer_lib.Progress(every_steps=None, every_secs=2.0, clock=lambda: now[0])
  p(0)
  now[0] = 1.0
  assert p(7) is None
  now[0] = 2.5
  assert p(9) == "progress: step 9, 3.6 steps/s"
  with pytest.raises(ValueError, match="every_steps=0"):
    writer_lib.Progress(every_steps=0)

"""The EchoLM reproduction's smoke config runs end to end (real part off) and reports."""

from __future__ import annotations

import os

import numpy as np
import pytest

from jaxsys.launch import echolm
from jaxsys.launch.configs.serving import echolm_routing


@pytest.mark.slow
def test_smoke_run_and_report(tmp_path):
  config = echolm_routing.get_config("smoke")
  summary = echolm.run(config, str(tmp_path))
  rows = {(r["label"], r["rho"]): r for r in summary["rows"]}
  top = max(config.loads)
  # the large tier saturates: off-loading to the small tier serves more requests per second
  assert rows[("small_only", top)]["throughput_rps"] > rows[("large_only", top)]["throughput_rps"]
  assert rows[("large_only", top)]["quality"] > rows[("small_only", top)]["quality"]
  sem = [r for r in summary["rows"] if r["kind"] == "semantic_cache"]
  assert all(r["hit_rate"] > 0 for r in sem)
  for r in summary["rows"]:
    assert 0 <= r["quality"] <= 1 and np.isfinite(r["e2e_mean"]) and r["e2e_mean"] > 0
  text = echolm.report_markdown(summary, config)
  assert "| large_only |" in text and "Paper: throughput" in text
  for fig in summary["figures"].values():
    assert os.path.exists(fig) and os.path.basename(fig) in text
  for name in ("config.json", "metrics.jsonl", "results.json"):
    assert os.path.exists(tmp_path / name)


def test_config_variants():
  for arg in ("", "quick", "smoke"):
    assert echolm_routing.get_config(arg).experiment == "echolm_routing"
  with pytest.raises(ValueError, match="huge"):
    echolm_routing.get_config("huge")


def test_benchmark_hooks_agree():
  config, stacked, plist, stream, cache0 = echolm.bench_setup(
    n_requests=60, capacity=32, dim=8, sizes=(4, 32)
  )
  caches, outs = echolm.cache_sweep_jitted(config, stacked, stream, cache0)
  refs = echolm.cache_sweep_reference(config, plist, stream)
  for i, (state, rows) in enumerate(refs):
    np.testing.assert_array_equal(np.asarray(outs.chosen)[i], [r["chosen"] for r in rows])
    np.testing.assert_array_equal(np.asarray(caches.valid)[i], state["valid"])

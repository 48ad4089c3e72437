"""`make demo`'s job at its smoke size: every reproduction runs and the report links its figures."""

import os
import re

import pytest

from jaxsys.launch import reproduce


@pytest.mark.slow
def test_reproduce_smoke_writes_report(tmp_path):
  path = reproduce.reproduce(str(tmp_path), setting="smoke")
  text = open(path).read()
  assert "## Tempo" in text
  assert "| tempo |" in text and "| sarathi |" in text
  figures = re.findall(r"\]\(([^)]+\.png)\)", text)
  assert len(figures) >= 5
  for fig in figures:
    assert os.path.getsize(tmp_path / fig) > 1000, fig
  metrics = (tmp_path / "tempo" / "metrics.jsonl").read_text().splitlines()
  assert len(metrics) >= 8
  # The uncertainty reproduction: a real model's answers, labelled and scored by every estimator.
  assert "## Uncertainty" in text and "| inv_entropy |" in text and "| degmat[emb] |" in text
  assert re.search(r"basic_arithmetic: \d+/8 right", text)
  assert (tmp_path / "uq" / "scores_reasoning_gym_basic_arithmetic.csv").exists()
  # The RL reproduction: three methods trained from one warm start, compared in one table.
  assert "## RL: GRPO vs DAPO dynamic sampling vs GRESO" in text
  for method in ("grpo", "ds", "greso"):
    assert f"| {method} |" in text
    assert (tmp_path / "rl" / f"{method}_seed0" / "metrics.jsonl").exists()
  # The DiSCo reproduction: every dispatch policy across the budget, both regimes.
  assert "## DiSCo: device-server cooperative serving across the budget" in text
  assert (tmp_path / "disco" / "results.json").exists()
  # The EchoLM reproduction (smoke: simulated part only): every router and cache across load.
  assert "## EchoLM: in-context caching and routing" in text and "| large_only |" in text
  # The HyGen reproduction: four co-location policies on a fresh workload after profiling.
  assert "## HyGen: online/offline co-location" in text and "| hygen* |" in text

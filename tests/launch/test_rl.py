"""The RL loop end to end at smoke size: a SIGKILLed run resumes exactly; bad configs fail early."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from jaxsys.launch import rl
from jaxsys.launch.configs.rl import greso

CONFIG = os.path.join(os.path.dirname(rl.__file__), "configs", "rl", "greso.py")


def _train(workdir, sft_dir, *extra, wait=True):
  cmd = [sys.executable, "-m", "jaxsys.launch.train_rl", f"--config={CONFIG}:smoke"]
  cmd += [f"--workdir={workdir}", f"--sft_dir={sft_dir}", "--config.steps=8", *extra]
  env = {**os.environ, "XLA_FLAGS": ""}  # one CPU device, as a user's run
  if wait:
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=600)
    return None
  return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  # wall times differ between runs; everything else must not
  return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


@pytest.mark.slow
def test_killed_run_resumes_with_the_same_metrics(tmp_path):
  sft_dir = str(tmp_path / "sft")
  _train(tmp_path / "whole", sft_dir)  # also trains the shared warm start
  killed = _train(tmp_path / "killed", sft_dir, wait=False)
  metrics = tmp_path / "killed" / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline:  # kill after step 5: past the checkpoint of step 4
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 6:
      break
    time.sleep(0.2)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  done = len(metrics.read_text().splitlines()) - 1
  assert 5 <= done < 8, f"killed after step {done}, not mid-run"
  _train(tmp_path / "killed", sft_dir)
  whole, resumed = _rows(tmp_path / "whole"), _rows(tmp_path / "killed")
  assert [r["step"] for r in resumed] == list(range(9))
  assert resumed == whole


@pytest.mark.parametrize(
  "overrides, match",
  [
    ({"group_size": 1}, "at least 2 responses"),
    ({"method": "ppo"}, "method='ppo'"),
    ({"mesh": "dp", "train_groups": 6}, "not divisible by the 8 devices"),
    ({"mesh": "tpu"}, "mesh='tpu'"),
    ({"steps": 0}, "must be >= 1"),
    ({"micro_batches": 3}, "must divide the batch's 64 rows"),
  ],
)
def test_bad_configs_fail_at_start(overrides, match, tmp_path):
  config = rl.with_overrides(greso.get_config("smoke"), **overrides)
  with pytest.raises(ValueError, match=match):
    rl.train(config, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()


def test_missing_or_bad_dataset_files_fail_at_start(tmp_path):
  config = rl.with_overrides(greso.get_config("smoke"), dataset=str(tmp_path / "nope.jsonl"))
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    rl.train(config, str(tmp_path / "run"))
  bad = tmp_path / "letters.jsonl"
  lines = [json.dumps({"prompt": f"{i}+1=", "answer": str(i + 1)}) for i in range(40)]
  bad.write_text("\n".join([*lines, json.dumps({"prompt": "two+2=", "answer": "4"})]) + "\n")
  config = rl.with_overrides(config, dataset=str(bad), eval_size=8)
  with pytest.raises(ValueError, match="eval problem 7 .'two\\+2='"):
    rl.train(config, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_jsonl_dataset_trains(tmp_path):
  path = tmp_path / "sums.jsonl"
  rows = [
    {"prompt": f"{a}+{b}=", "answer": str(a + b), "level": 1} for a in range(9) for b in range(9)
  ]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  config = rl.with_overrides(greso.get_config("smoke"), dataset=str(path), eval_size=16, steps=2)
  out = rl.train(config, str(tmp_path / "run"))
  assert out["final"]["rollout/responses_total"] > 0
  assert "eval/acc_level1" in out["final"]

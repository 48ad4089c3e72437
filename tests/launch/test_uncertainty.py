import numpy as np

from jaxsys.algorithms.uq import pipeline
from jaxsys.launch import uncertainty
from jaxsys.launch.configs.uq import inv_entropy

DATASET = "reasoning_gym:basic_arithmetic"


def test_tsu_covers_the_spec_pairs_and_chains():
  rng = np.random.default_rng(0)
  base = rng.normal(size=30)
  rising = [{"degmat": base + t} for t in range(4)]  # every question rises with temperature
  table = uncertainty._tsu(rising, (0.3, 0.7, 1.0, 1.4))["degmat[emb]"]
  pairs = ["(0.3,0.7)", "(0.3,1.0)", "(0.3,1.4)", "(0.7,1.0)", "(0.7,1.4)", "(1.0,1.4)"]
  assert list(table) == [*pairs, "0.3-1.0", "0.7-1.4", "0.3-1.4"]
  assert all(row["tsu"] == 100.0 for row in table.values())
  assert table["0.3-1.4"]["chance"] == 100.0 / 24
  flat = [{"degmat": base} for _ in range(4)]  # ties never count
  assert all(
    r["tsu"] == 0.0 for r in uncertainty._tsu(flat, (0.3, 0.7, 1.0, 1.4))["degmat[emb]"].values()
  )


class _ZeroBackend:
  """Answers every prompt with "0"; counts the prompts it was asked."""

  def __init__(self):
    self.asked = 0

  def sample(self, prompts, n, temperature, max_new_tokens, *, seed=None):
    self.asked += len(prompts)
    return [["0"] * n for _ in prompts]


def _arithmetic_config(questions, min_correct):
  config = inv_entropy.get_config("smoke")
  config.questions, config.min_correct = questions, min_correct
  return config


def test_labelled_task_doubles_until_enough_answers_are_right(tmp_path):
  config = _arithmetic_config(8, 4)
  backend = _ZeroBackend()
  base = uncertainty._pipeline_config(config, 0.7)
  task = uncertainty.labelled_task(config, DATASET, backend, base, str(tmp_path))
  right = pipeline.label(task, ["0"] * len(task.questions))
  assert right.sum() >= 4
  assert len(task.questions) in (16, 32, 64, 128)
  smaller = uncertainty.make_task(config, DATASET, len(task.questions) // 2)
  assert pipeline.label(smaller, ["0"] * len(smaller.questions)).sum() < 4
  # the labels are cached: labelling again asks the model nothing
  asked = backend.asked
  uncertainty.labelled_task(config, DATASET, backend, base, str(tmp_path))
  assert backend.asked == asked


def test_labelled_task_stops_growing(tmp_path):
  config = _arithmetic_config(4, 10_000)
  base = uncertainty._pipeline_config(config, 0.7)
  task = uncertainty.labelled_task(config, DATASET, _ZeroBackend(), base, str(tmp_path))
  assert len(task.questions) == 4 * uncertainty.MAX_GROWTH


class _EchoBackend:
  """Answers "<temperature-dependent number>" and records (prompt, temperature) pairs."""

  def __init__(self):
    self.calls = []

  def sample(self, prompts, n, temperature, max_new_tokens, *, seed=None):
    self.calls += [(p, temperature) for p in prompts]
    rng = np.random.default_rng(seed)
    return [[str(rng.integers(0, 1 + int(10 * temperature))) for _ in range(n)] for _ in prompts]


class _HashEncoder:
  def encode(self, texts):
    return np.stack([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=8) for t in texts])


def test_tsu_runs_on_the_first_questions_with_the_main_rewordings(tmp_path, monkeypatch):
  from jaxsys.lib.models import bert

  backend = _EchoBackend()
  monkeypatch.setattr(uncertainty, "make_backend", lambda config: backend)
  monkeypatch.setattr(bert.Encoder, "load", classmethod(lambda cls: _HashEncoder()))
  config = _arithmetic_config(8, 0)
  config.tsu_temperatures, config.tsu_questions = (0.3, 0.7, 1.4), 3
  summary = uncertainty.run(config, str(tmp_path))
  row = summary["datasets"][DATASET]
  assert row["tsu_questions"] == 3 and set(next(iter(row["tsu"].values()))) >= {"(0.3,1.4)"}
  at_main = {p for p, t in backend.calls if t == 0.7}
  for temperature in (0.3, 1.4):
    asked = {p for p, t in backend.calls if t == temperature}
    assert asked and asked <= at_main  # the same rewordings, a subset of the questions
  sampled = {p for p, t in backend.calls if t == 0.3}
  assert len(sampled) < len({p for p, t in backend.calls if t == 0.7})

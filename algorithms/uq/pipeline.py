"""The UQ loop: perturb -> generate -> embed -> score -> label -> evaluate (spec section 10).

One readable function per stage; `run` chains them and caches each stage's output in the
workdir (JSON for texts, NPZ for embeddings), keyed by the settings that stage depends on, so a
rerun, a new estimator or a new metric never regenerates text. Texts stay on the host; the
scoring reads one `UQInputs` pytree (algorithms/uq/estimators.py).

  task = tasks.reasoning_gym("basic_arithmetic", size=100, seed=0)
  result = pipeline.run(task, backend, encoder.encode, config, key, workdir)
  result.metrics["inv_entropy"]["auroc"].mean
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import logging

from jaxsys.algorithms.uq import baselines, estimators, labels, metrics, perturb
from jaxsys.lib.writer import atomic_write

Embed = Callable[[Sequence[str]], np.ndarray]

QA_SUFFIX = " Answer concisely and return only the name."  # the paper's QA prompt
MATH_SUFFIX = " Answer concisely and return only the result itself."  # the paper's GSM8K prompt


@dataclasses.dataclass(frozen=True)
class Task:
  """Questions with a correctness rule. `correct(answer, i)` judges an answer to question i."""

  name: str
  questions: tuple[str, ...]
  correct: Callable[[str, int], bool]
  prompt_suffix: str = QA_SUFFIX
  max_new_tokens: int = 32


@dataclasses.dataclass(frozen=True)
class Config:
  """Pipeline settings (paper defaults; spec section 9)."""

  perturber: str = "gaap"  # PERTURBERS name
  n: int = 9  # perturbations per question (m = n + 1 inputs)
  r: int = 5  # responses per input
  r0: int = 10  # baseline samples of the original question
  temperature: float = 0.7
  num_bootstrap: int = 30
  estimators: tuple[str, ...] = ()  # empty: every estimator the inputs support
  verbalized: bool = True  # one extra greedy generation per question
  p_true_samples: int = 5  # p_true_empirical: sampled A/B verdicts per question (0: off)
  p_true_logits: bool = True  # P(True) from next-token log-probs, where the backend has them
  eval_bootstrap: int = 40
  seed: int = 0

  def __post_init__(self):
    for name in ("n", "r", "r0", "num_bootstrap", "eval_bootstrap"):
      if getattr(self, name) < 1:
        raise ValueError(f"Config.{name} must be >= 1, got {getattr(self, name)}")
    if self.temperature < 0:
      raise ValueError(f"Config.temperature must be >= 0, got {self.temperature}")


class Generations(NamedTuple):
  inputs: list[list[str]]  # [Q][m] original question first, then its n perturbations
  responses: list[list[list[str]]]  # [Q][m][r]
  baseline: list[list[str]]  # [Q][r0] samples of the original question
  greedy: list[str]  # [Q] the labelled answer (temperature 0)
  verbalized: list[str]  # [Q] greedy answer to the verbalized-confidence prompt ([] if off)
  p_true: list[list[str]]  # [Q][k] sampled verdicts on the greedy answer ([] if off)
  degenerate: list[bool]  # [Q] perturbation found no valid rewording
  p_true_logprobs: list = []  # [Q][2] log p("A"), log p("B") of the verdict (local models)


class Result(NamedTuple):
  scores: dict[str, np.ndarray]  # estimator -> [Q] uncertainty
  correct: np.ndarray  # bool [Q] the greedy answer is right
  metrics: dict[str, dict[str, metrics.BootstrapStat]]  # estimator -> metric -> stat
  generations: Generations


def _cache_path(workdir: str, stage: str, settings: dict) -> str:
  digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
  return os.path.join(workdir, "cache", f"{stage}-{digest}.json")


def _cached(workdir: str | None, stage: str, settings: dict, compute: Callable[[], Any]):
  """compute() once per settings: stored as JSON in workdir/cache (atomic), reread after."""
  if workdir is None:
    return compute()
  path = _cache_path(workdir, stage, settings)
  if os.path.exists(path):
    with open(path) as f:
      logging.info("%s: reusing %s", stage, path)
      return json.load(f)["value"]
  start = time.time()
  value = compute()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  atomic_write(path, json.dumps({"settings": settings, "value": value}))
  logging.info("%s: %.1f s, cached in %s", stage, time.time() - start, path)
  return value


def _settings(task: Task, config: Config) -> dict:
  """What every generation stage of `task` depends on (its cache key, with the stage's own)."""
  return {
    "task": task.name,
    "questions": list(task.questions),
    "seed": config.seed,
    "perturber": config.perturber,
    "n": config.n,
  }


def _sample(task, backend, config, workdir, stage, prompts, n, temperature, seed):
  """One cached sampling stage: n answers per prompt, each cut at its first line."""
  settings = {**_settings(task, config), "prompts": prompts, "r": n, "T": temperature}
  settings.update(seed=seed, max_new_tokens=task.max_new_tokens)
  run = lambda: _cut(backend.sample(prompts, n, temperature, task.max_new_tokens, seed=seed))  # noqa: E731
  return _cached(workdir, stage, settings, run)


_GREEDY_SEED = 3  # stage seeds are config.seed * 100 + 1 (responses) ... + 5 (p_true)


def _asked(task: Task) -> list[str]:
  return [q + task.prompt_suffix for q in task.questions]


def greedy_answers(task: Task, backend, config: Config, workdir=None) -> list[str]:
  """[Q] the labelled (temperature 0) answers; the same cached stage as `generate` uses."""
  seed = config.seed * 100 + _GREEDY_SEED
  return [
    s[0] for s in _sample(task, backend, config, workdir, "greedy", _asked(task), 1, 0.0, seed)
  ]


def label(task: Task, answers: Sequence[str]) -> np.ndarray:
  return np.asarray([task.correct(a, i) for i, a in enumerate(answers)], bool)


def generate(
  task: Task, backend, config: Config, key, workdir=None, perturb_kwargs=None, perturbations=None
):
  """Perturbations and every generation the estimators need, each stage cached.

  `perturbations` ({"texts": [Q][n], "degenerate": [Q]}) replaces the perturb stage, e.g. to
  rerun a subset of questions at another temperature with the rewordings it already has.
  """
  settings = _settings(task, config)

  def do_perturb():
    out = perturb.PERTURBERS.get(config.perturber)(
      list(task.questions), config.n, jax.random.fold_in(key, 0), **(perturb_kwargs or {})
    )
    return {"texts": out.texts, "degenerate": out.degenerate}

  perturbed = perturbations or _cached(workdir, "perturb", settings, do_perturb)
  inputs = [[q, *p] for q, p in zip(task.questions, perturbed["texts"], strict=True)]

  def sample(stage, prompts, n, temperature, seed):
    return _sample(task, backend, config, workdir, stage, prompts, n, temperature, seed)

  asked = _asked(task)
  flat = [x + task.prompt_suffix for row in inputs for x in row]
  m, seed = config.n + 1, config.seed * 100
  responses = sample("responses", flat, config.r, config.temperature, seed + 1)
  responses = [responses[i * m : (i + 1) * m] for i in range(len(inputs))]
  baseline = sample("baseline", asked, config.r0, config.temperature, seed + 2)
  greedy = greedy_answers(task, backend, config, workdir)
  verbalized, p_true = [], []
  if config.verbalized:
    asks = [a + baselines.VERBALIZED_SUFFIX for a in asked]
    verbalized = [s[0] for s in sample("verbalized", asks, 1, 0.0, seed + 4)]
  asks = [baselines.p_true_prompt(q, a) for q, a in zip(task.questions, greedy, strict=True)]
  if config.p_true_samples:
    p_true = sample("p_true", asks, config.p_true_samples, 1.0, seed + 5)
  p_true_logprobs = []
  if config.p_true_logits and hasattr(backend, "next_token_logprobs"):
    p_true_logprobs = _cached(
      workdir,
      "p_true_logprobs",
      {**settings, "prompts": asks},
      lambda: backend.next_token_logprobs(asks, ["A", "B"]).tolist(),
    )
  degenerate = perturbed["degenerate"]
  return Generations(
    inputs, responses, baseline, greedy, verbalized, p_true, degenerate, p_true_logprobs
  )


def _cut(samples):
  """Answers end at their first non-empty line (spec section 9)."""
  return [[labels.first_line(s) for s in row] for row in samples]


def build_inputs(gens: Generations, embed: Embed) -> estimators.UQInputs:
  """Embeds every text once and gathers the host-side estimator values."""
  q = len(gens.inputs)
  m, r, r0 = len(gens.inputs[0]), len(gens.responses[0][0]), len(gens.baseline[0])
  flat_x = [x for row in gens.inputs for x in row]
  flat_y = [y for row in gens.responses for ys in row for y in ys]
  flat_b = [b for row in gens.baseline for b in row]
  emb = np.asarray(embed(flat_x + flat_y + flat_b), np.float32)
  d = emb.shape[1]
  emb_x = emb[: len(flat_x)].reshape(q, m, d)
  emb_y = emb[len(flat_x) : len(flat_x) + len(flat_y)].reshape(q, m, r, d)
  emb_b = emb[len(flat_x) + len(flat_y) :].reshape(q, r0, d)
  host = {}
  if gens.verbalized:
    host["verbalized"] = [baselines.parse_verbalized(v)[0] for v in gens.verbalized]
  if gens.p_true:
    host["p_true_empirical"] = [baselines.p_true_empirical(c) for c in gens.p_true]
  if gens.p_true_logprobs:
    lp = np.asarray(gens.p_true_logprobs, np.float32)
    host["p_true"] = np.asarray(baselines.p_true_from_logits(lp[:, 0], lp[:, 1]))
  return estimators.UQInputs.from_embeddings(
    emb_x, emb_y, emb_b, texts_b=gens.baseline, host=host, normalise=labels.normalise
  )


def score_outputs(
  questions: Sequence[Sequence[str]],
  outputs: Sequence[Sequence[Sequence[str]]],
  embed: Embed,
  key,
  *,
  baseline: Sequence[Sequence[str]] | None = None,
  names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
  """Scores texts a user already has: no model call.

  questions: [Q][m] the original question first, then its perturbations; outputs: [Q][m][r]
  responses to each. `baseline`: [Q][r0] samples of the original question for the baselines
  (default: the responses to the original question). Returns {estimator: [Q] uncertainty}.
  """
  if len(questions) != len(outputs):
    raise ValueError(f"{len(questions)} question sets but {len(outputs)} output sets")
  baseline = [list(o[0]) for o in outputs] if baseline is None else baseline
  gens = Generations(
    [list(q) for q in questions],
    [[list(ys) for ys in o] for o in outputs],
    [list(b) for b in baseline],
    [],
    [],
    [],
    [False] * len(questions),
  )
  inputs = build_inputs(gens, embed)
  return estimators.score_all(inputs, key, list(names or estimators.available(inputs)))


def evaluate(scores: dict[str, np.ndarray], correct: np.ndarray, config: Config):
  """AUROC, PRR, paper PRR (AP) and isotonic Brier with paired bootstrap (spec section 6.2)."""
  return metrics.bootstrap(
    metrics.STANDARD_METRICS,
    scores,
    correct.astype(np.int32),
    num=config.eval_bootstrap,
    seed=config.seed,
  )


def run(
  task: Task,
  backend,
  embed: Embed,
  config: Config,
  key,
  workdir=None,
  perturb_kwargs=None,
  perturbations=None,
  with_metrics: bool = True,
):
  """The whole loop for one task; returns scores, labels and metrics (and caches stages).

  `with_metrics=False` skips the bootstrap of AUROC/PRR/Brier (metrics {}), for runs whose
  scores feed something else, such as TSU.
  """
  gens = generate(task, backend, config, key, workdir, perturb_kwargs, perturbations)
  inputs = build_inputs(gens, embed)
  names = list(config.estimators) or estimators.available(inputs)
  scores = estimators.score_all(inputs, jax.random.fold_in(key, 1), names)
  correct = label(task, gens.greedy)
  logging.info("%s: %d questions, %d correct", task.name, len(correct), int(correct.sum()))
  stats = evaluate(scores, correct, config) if with_metrics else {}
  return Result(scores, correct, stats, gens)

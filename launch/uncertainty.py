"""The uncertainty experiment behind launch/uq.py and `make demo`: `run(config, workdir)`.

Inv-Entropy and the baselines on real questions (spec section 9). Writes config.json,
metrics.jsonl (one row per dataset x estimator: AUROC, PRR, paper PRR (AP), isotonic Brier with
bootstrap mean/std), scores_<dataset>.csv (per question), results.json and PNGs, and a
generation cache under workdir/cache that makes a rerun resume where it stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import time

import jax
import numpy as np
from absl import logging

from jaxsys.algorithms.uq import estimators, gaap, metrics, pipeline, tasks, wordnet
from jaxsys.lib import plots
from jaxsys.lib.writer import MetricWriter


def make_backend(config):
  """The generator: the local JAX model or an OpenAI-compatible server."""
  if config.backend == "local":
    from jaxsys.lib.llm import local

    return local.LocalBackend.load(config.model)
  if config.backend == "openai":
    from jaxsys.lib.llm import openai_client

    if not config.base_url:
      raise ValueError("config.base_url is empty: the openai backend needs a server URL")
    return openai_client.OpenAIClient(config.base_url, model=config.model)
  raise ValueError(f"config.backend={config.backend!r}; use 'local' or 'openai'")


DATA_FILES = {"nq_open": "nq_open_efficientqa_dev.jsonl", "gsm8k": "gsm8k_test.jsonl"}


def make_task(config, name: str, size: int | None = None) -> pipeline.Task:
  size, seed = size or config.questions, config.seed
  if name.startswith("reasoning_gym:"):
    options = dict(config.rg_options) if "basic_arithmetic" in name else {}
    return tasks.reasoning_gym(name.split(":", 1)[1], size=size, seed=seed, **options)
  if name == "nq_open":
    return tasks.nq_open(os.path.join(config.data_dir, DATA_FILES[name]), size, seed)
  if name == "gsm8k":
    return tasks.gsm8k(os.path.join(config.data_dir, DATA_FILES[name]), size, seed)
  raise ValueError(f"unknown dataset {name!r}; use reasoning_gym:<task>, nq_open or gsm8k")


def labelled_task(config, name, backend, base: pipeline.Config, workdir) -> pipeline.Task:
  """`config.questions` questions, doubled until `config.min_correct` greedy answers are right.

  A dataset the model rarely gets right (SmolLM2-135M on NQ-open: about 1 in 20) has too few
  positives for AUROC to mean much; labelling costs one greedy answer per question (cached),
  far less than the n x r samples that scoring needs.
  """
  size = config.questions
  while True:
    task = make_task(config, name, size)
    right = int(pipeline.label(task, pipeline.greedy_answers(task, backend, base, workdir)).sum())
    logging.info("%s: %d of %d greedy answers right", name, right, len(task.questions))
    exhausted = len(task.questions) < size or size >= config.questions * MAX_GROWTH
    if right >= config.min_correct or exhausted:
      if right < config.min_correct:
        logging.warning("%s: only %d right answers; AUROC will be noisy", name, right)
      return task
    size *= 2


MAX_GROWTH = 16  # labelled_task stops doubling at this multiple of config.questions


def _available(config, name):
  if name in DATA_FILES:
    return os.path.exists(os.path.join(config.data_dir, DATA_FILES[name]))
  return True


def perturb_kwargs(config, backend, encoder):
  if config.perturber == "gaap":
    wn = wordnet.WordNet.load() if wordnet.default_path() else None
    vocab = []
    if wn is None:  # the spec's fallback: nearest whole words of the encoder's vocabulary
      logging.warning("WordNet data absent: GAAP substitutes encoder neighbours")
      vocab = [w for w in encoder.tokenizer.get_vocab() if w.isalpha() and len(w) >= 3]
    subs = gaap.Substitutions(encoder.encode, wn, vocabulary=sorted(vocab))
    return {"embed": encoder.encode, "substitutions": subs}
  if config.perturber == "llm_paraphrase":
    return {"backend": backend}
  return {}


def run(config, workdir):
  """Every dataset at the main temperature, then TSU over temperatures; returns a summary."""
  from jaxsys.lib.models import bert

  os.makedirs(workdir, exist_ok=True)
  writer = MetricWriter(workdir)
  writer.write_config(config)
  start = time.perf_counter()
  backend = make_backend(config)
  encoder = bert.Encoder.load()
  kwargs = perturb_kwargs(config, backend, encoder)
  key = jax.random.key(config.seed)
  summary = {"datasets": {}, "figures": []}
  for d_index, name in enumerate(config.datasets):
    if not _available(config, name):
      logging.warning("%s: data not found under %s, skipped", name, config.data_dir)
      continue
    base = _pipeline_config(config, config.temperature)
    task = labelled_task(config, name, backend, base, workdir)
    result = pipeline.run(task, backend, encoder.encode, base, key, workdir, kwargs)
    row = _dataset_summary(result, base)
    if len(config.tsu_temperatures) >= 2:
      # TSU needs no labels, so it may run on the first tsu_questions only (one generation per
      # temperature); those keep the rewordings of the main run, and at the main temperature
      # their scores are the main run's (a question's scores never depend on the others)
      k = len(task.questions)
      if 0 < config.tsu_questions < k:
        k = config.tsu_questions
      tsu_task = dataclasses.replace(task, questions=task.questions[:k])
      g = result.generations
      reworded = {"texts": [x[1:] for x in g.inputs[:k]], "degenerate": g.degenerate[:k]}
      by_t = []
      for t in config.tsu_temperatures:
        if t == config.temperature:
          by_t.append({est: s[:k] for est, s in result.scores.items()})
          continue
        res_t = pipeline.run(tsu_task, backend, encoder.encode, _pipeline_config(config, t), key,
                             workdir, kwargs, reworded, with_metrics=False)  # fmt: skip
        by_t.append(res_t.scores)
      row["tsu"] = _tsu(by_t, config.tsu_temperatures)
      row["tsu_questions"] = k
    summary["datasets"][name] = row
    for est, stats in row["metrics"].items():
      writer.write_scalars(d_index, {"dataset": name, "estimator": est, **_flat(stats)})
    _write_scores(os.path.join(workdir, f"scores_{_slug(name)}.csv"), result)
    summary["figures"] += _plots(workdir, name, row)
  summary["wall_s"] = time.perf_counter() - start
  writer.write_json("results.json", summary)
  writer.close()
  return summary


def _pipeline_config(config, temperature):
  return pipeline.Config(
    perturber=config.perturber,
    n=config.n,
    r=config.r,
    r0=config.r0,
    temperature=float(temperature),
    num_bootstrap=config.num_bootstrap,
    estimators=tuple(config.estimators),
    eval_bootstrap=config.eval_bootstrap,
    seed=config.seed,
  )


def _dataset_summary(result, config):
  n_pos = int(result.correct.sum())
  names = list(result.scores)
  return {
    "questions": len(result.correct),
    "correct": n_pos,
    "low_power": n_pos < 15 or len(result.correct) - n_pos < 15,
    "degenerate_perturbations": int(np.sum(result.generations.degenerate)),
    "metrics": {
      estimators.display_name(n): {m: s._asdict() for m, s in result.metrics[n].items()}
      for n in names
    },
  }


def _tsu(scores_by_t, temps):
  """TSU (%) per estimator for every pair of temperatures and every run of 3+ consecutive ones
  (spec section 7: for 0.3/0.7/1.0/1.4, six pairs and the chains 0.3-1.0, 0.7-1.4, 0.3-1.4)."""
  k = len(temps)
  chains = {f"({temps[i]},{temps[j]})": [i, j] for i in range(k) for j in range(i + 1, k)}
  for length in range(3, k + 1):
    for i in range(k - length + 1):
      chains[f"{temps[i]}-{temps[i + length - 1]}"] = list(range(i, i + length))
  out = {}
  for name in scores_by_t[0]:
    uq = np.stack([s[name] for s in scores_by_t], axis=1)  # [Q, T]
    out[estimators.display_name(name)] = {
      c: {"tsu": metrics.tsu(uq, idx), "chance": metrics.tsu_chance(uq, idx)}
      for c, idx in chains.items()
    }
  return out


def _flat(stats):
  return {f"{m}_{k}": v for m, s in stats.items() for k, v in s.items()}


def _slug(name):
  return name.replace(":", "_")


def _write_scores(path, result):
  names = list(result.scores)
  with open(path + ".tmp", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["question", "correct", *names])
    for i, q in enumerate(result.generations.inputs):
      w.writerow([q[0], int(result.correct[i]), *(f"{result.scores[n][i]:.6g}" for n in names)])
  os.replace(path + ".tmp", path)


def _plots(workdir, name, row):
  names = list(row["metrics"])
  auroc = [row["metrics"][n]["auroc"] for n in names]
  order = np.argsort([-(a["mean"] if np.isfinite(a["mean"]) else -1) for a in auroc])
  path = os.path.join(workdir, f"auroc_{_slug(name)}.png")
  plots.bar_plot(
    path,
    [names[i] for i in order],
    [auroc[i]["mean"] for i in order],
    errors=[auroc[i]["std"] for i in order],
    ylabel="AUROC (bootstrap mean +- std)",
    title=f"{name}: {row['correct']}/{row['questions']} answered right",
    figsize=(9.0, 4.5),
  )
  figures = [path]
  if "tsu" in row:
    chain = list(next(iter(row["tsu"].values())))[-1]
    tsu_names = list(row["tsu"])
    path = os.path.join(workdir, f"tsu_{_slug(name)}.png")
    plots.bar_plot(
      path,
      tsu_names,
      [row["tsu"][n][chain]["tsu"] for n in tsu_names],
      ylabel=f"TSU {chain} (%)",
      title=f"{name}: temperature sensitivity",
      figsize=(9.0, 4.5),
    )
    figures.append(path)
  return figures


def report_markdown(summary, config) -> str:
  lines = ["## Uncertainty: Inv-Entropy vs baselines (SmolLM2-135M, MiniLM)", ""]
  lines.append(
    f"Perturber {config.perturber}, n = {config.n}, r = {config.r}, r0 = {config.r0}, "
    f"T = {config.temperature}, B = {config.num_bootstrap}; metrics: point value on all "
    f"questions, bootstrap mean +- std over {config.eval_bootstrap} paired resamples."
  )
  for name, row in summary["datasets"].items():
    power = " (low power: fewer than 15 right or wrong)" if row["low_power"] else ""
    lines += ["", f"### {name}: {row['correct']}/{row['questions']} right{power}", ""]
    lines.append("| estimator | AUROC | PRR | paper PRR (AP) | Brier (iso) |")
    lines.append("|---|---|---|---|---|")
    ranked = sorted(row["metrics"].items(), key=lambda kv: -_nan_low(kv[1]["auroc"]["point"]))
    for est, m in ranked:
      cells = [_ms(m[k]) for k in ("auroc", "prr", "ap_correct", "brier_iso")]
      lines.append(f"| {est} | " + " | ".join(cells) + " |")
    if "tsu" in row:
      chains = list(next(iter(row["tsu"].values())))
      on = f" on the first {row['tsu_questions']} questions" if "tsu_questions" in row else ""
      lines += ["", f"TSU (%){on}, chance (tie-aware) in brackets:", ""]
      lines.append("| estimator | " + " | ".join(chains) + " |")
      lines.append("|---" * (len(chains) + 1) + "|")
      for est, t in row["tsu"].items():
        cells = [f"{t[c]['tsu']:.1f} ({t[c]['chance']:.1f})" for c in chains]
        lines.append(f"| {est} | " + " | ".join(cells) + " |")
  for fig in summary["figures"]:
    lines += ["", f"![{os.path.basename(fig)}]({os.path.basename(fig)})"]
  return "\n".join(lines) + "\n"


def _nan_low(v):
  return v if np.isfinite(v) else -1.0


def _ms(stat):
  return f"{stat['point']:.3f} ({stat['mean']:.3f} +- {stat['std']:.3f})"

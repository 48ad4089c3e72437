"""Scheduling policies for the jaxsys environments, selectable by name (`build`)."""

from __future__ import annotations

import numpy as np

from jaxsys.scheduling import baselines, common, tempo

SERVING_POLICIES = (
  "vllm",
  "sarathi",
  "ltr",
  "srtf",
  "edf",
  "las",
  "vtc",
  "tempo",
  "tempo_oracle",
)
ABLATIONS = ("tempo_norefine", "tempo_noisy25", "tempo_noisy50", "tempo_nogmax", "tempo_noswap")
# Not in the paper's list: SRTF on request-level instead of token-level deadlines.
EXTRA = ("srtf_ttlt",)


def build(name: str, *, bound=None, true_lengths=None, n_jobs=1, n_clients=1, batch=32, seed=0):
  """(policy, policy params, chunked prefill) for a serving policy name.

  `bound` is the calibrated `common.LengthBound` (Tempo, LTR); `true_lengths` the workload's
  output lengths, read only by the oracle and the noisy-bound ablations.
  """

  def need(value, what):
    if value is None:
      raise ValueError(f"policy {name!r} needs {what}")
    return value

  if name == "vllm":
    return baselines.fcfs(), (), False
  if name == "fcfs":
    return baselines.fcfs(), (), True
  if name == "sarathi":
    return baselines.sarathi(), (), True
  if name == "ltr":
    return baselines.ltr(), need(bound, "bound"), True
  if name == "edf":
    return baselines.edf(), (), True
  if name == "srtf":
    return baselines.srtf(), (), True
  if name == "srtf_ttlt":
    return baselines.srtf_ttlt(), need(bound, "bound"), True
  if name == "las":
    return baselines.las(n_jobs), (), True
  if name == "vtc":
    return baselines.vtc(n_clients), (), True
  if name.startswith("tempo"):
    gmax = name != "tempo_nogmax"
    swaps = 0 if name == "tempo_noswap" else 4  # no recompute preemptions: order only
    if name == "tempo_oracle":
      lb = common.LengthBound.from_lengths(need(true_lengths, "true_lengths"))
    elif name.startswith("tempo_noisy"):
      sigma = int(name.removeprefix("tempo_noisy")) / 100
      lengths = np.asarray(need(true_lengths, "true_lengths"), np.float64)
      noise = np.random.default_rng(seed).standard_normal(lengths.shape)
      lb = common.LengthBound.from_lengths(np.maximum(np.rint(lengths * np.exp(sigma * noise)), 1))
    elif name == "tempo_norefine":
      b = need(bound, "bound")
      lb = common.LengthBound.from_table(b.edges, b.table[:, :1], b.mark_every)
    elif name in ("tempo", "tempo_nogmax", "tempo_noswap"):
      lb = need(bound, "bound")
    else:
      raise KeyError(f"unknown policy {name!r}")
    return tempo.tempo(), tempo.default_params(lb, batch, gmax=gmax, max_swaps=swaps), True
  raise KeyError(
    f"unknown policy {name!r}; known: {', '.join(SERVING_POLICIES + ABLATIONS + EXTRA + ('fcfs',))}"
  )

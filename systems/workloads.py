"""Serving workloads: the `Workload` arrays and host-side generators and loaders.

A workload is plain arrays (numpy on the host, jax inside jit), one entry per request in the
online stream, sorted by arrival. DAG jobs keep their nodes consecutive, ordered by stage.
Semantics of every field: docs/llm_serving_semantics.md.
"""

from __future__ import annotations

import flax.struct
import numpy as np

LATENCY, DEADLINE, COLLECTIVE = 0, 1, 2
CLASS_NAMES = ("latency", "deadline", "collective")


@flax.struct.dataclass
class Workload:
  """Requests of one run. Leading axis `n_total` for request fields, `n_jobs` for job fields."""

  arrival: np.ndarray  # f64[n]: arrival time (s), non-decreasing; DAG nodes carry the job arrival
  prompt_len: np.ndarray  # i32[n]: prompt tokens, >= 1
  out_len: np.ndarray  # i32[n]: true output tokens, >= 1 (hidden from policies)
  cls: np.ndarray  # i32[n]: LATENCY, DEADLINE or COLLECTIVE
  slo_ttft: np.ndarray  # f64[n]: time-to-first-token SLO (s), class LATENCY
  slo_tbt: np.ndarray  # f64[n]: time-between-tokens SLO (s), class LATENCY
  deadline: np.ndarray  # f64[n]: e2e deadline relative to arrival (s); job deadline for nodes
  job_id: np.ndarray  # i32[n]: DAG job index, -1 for a plain request
  stage: np.ndarray  # i32[n]: DAG stage of the node, 0 for a plain request
  client_id: np.ndarray  # i32[n]: client (tenant) id in [0, n_clients)
  job_arrival: np.ndarray  # f64[n_jobs]: arrival of each DAG job (s)
  job_deadline: np.ndarray  # f64[n_jobs]: deadline of each job relative to its arrival (s)
  n_stages: np.ndarray  # i32[n_jobs]: stages of each job
  width: np.ndarray  # i32[n_jobs, max_stages]: nodes per stage, 0 past the last stage

  @property
  def n_total(self) -> int:
    return int(self.arrival.shape[-1])

  @property
  def n_jobs(self) -> int:
    return int(self.job_arrival.shape[-1])

  @property
  def max_stages(self) -> int:
    return int(self.width.shape[-1])

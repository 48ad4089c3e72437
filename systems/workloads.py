"""Serving workloads: the `Workload` arrays and host-side generators and loaders.

A workload is plain arrays (numpy on the host, jax inside jit), one entry per request in the
online stream, sorted by arrival. DAG jobs keep their nodes consecutive, ordered by stage.
Semantics of every field: docs/llm_serving_semantics.md. Generators and loaders here follow
../shared/papers/serving.md sections 1.4 and 2.1; everything is numpy, deterministic given the
`np.random.Generator` passed in, and every generator calls `validate` before returning.

Conventions [R]: arrival processes start at t = 0 and the first arrival comes one inter-arrival
gap after it (not at 0), so `n / arrival[-1]` estimates the rate without bias. A field that does
not apply to a request's class holds a harmless value: latency requests have `deadline = inf`;
deadline requests and DAG nodes carry the (tiered) latency SLOs, which nothing reads.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence

import flax.struct
import numpy as np

LATENCY, DEADLINE, COLLECTIVE, OFFLINE = 0, 1, 2, 3
CLASS_NAMES = ("latency", "deadline", "collective")  # the online classes

# (median, sigma, max) of clipped lognormal lengths: chat-like defaults [R, serving.md 1.4]
CHAT_PROMPT = (256.0, 1.0, 4096)
CHAT_OUTPUT = (200.0, 1.0, 2048)
# DAG templates of the Tempo mix [R]: 6, 7 and 8 nodes (mean 7, matching the artifact's
# "one collective = 7 requests" weighting), 6, 3 and 4 stages.
TEMPO_SHAPES = (("chain", 6), ("fanout", 5), ("tot", 3))
AZURE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


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
  # Optional (None: no shared prefixes; `co_locate` always fills them):
  prefix_id: np.ndarray | None = None  # i32[n]: shared-prefix group, -1 for none
  prefix_len: np.ndarray | None = None  # i32[n]: tokens of that prefix, 0 for none

  @property
  def n_total(self) -> int:
    return int(self.arrival.shape[-1])

  @property
  def n_jobs(self) -> int:
    return int(self.job_arrival.shape[-1])

  @property
  def max_stages(self) -> int:
    return int(self.width.shape[-1])

  @property
  def n_online(self) -> int:
    """Rows of the online stream (the offline rows, class OFFLINE, follow them)."""
    return int(np.max(np.sum(np.asarray(self.cls) != OFFLINE, axis=-1)))


_F64_FIELDS = ("arrival", "slo_ttft", "slo_tbt", "deadline", "job_arrival", "job_deadline")
_OPTIONAL_FIELDS = ("prefix_id", "prefix_len")
_REQUEST_FIELDS = (
  "arrival",
  "prompt_len",
  "out_len",
  "cls",
  "slo_ttft",
  "slo_tbt",
  "deadline",
  "job_id",
  "stage",
  "client_id",
)


# ----------------------------------------------------------------------------- arrivals


def poisson_arrivals(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
  """Arrival times f64[n] of a Poisson process of `rate` per second started at t = 0.

  The first arrival is the first exponential gap (not 0).
  """
  if rate <= 0:
    raise ValueError(f"poisson_arrivals: rate must be > 0, got {rate}")
  return np.cumsum(rng.exponential(1.0 / rate, n)).astype(np.float64)


def gamma_arrivals(rng: np.random.Generator, n: int, rate: float, cv: float) -> np.ndarray:
  """Arrival times f64[n] with Gamma inter-arrivals of mean 1/rate and coefficient of variation cv.

  Shape `1/cv^2`, scale `cv^2/rate` (vidur's parameterisation); cv = 1 is Poisson, cv = 0 a
  fixed gap. The first arrival is the first gap (not 0).
  """
  if rate <= 0 or cv < 0:
    raise ValueError(f"gamma_arrivals: need rate > 0 and cv >= 0, got rate={rate}, cv={cv}")
  if cv == 0:
    gaps = np.full(n, 1.0 / rate)
  else:
    gaps = rng.gamma(1.0 / cv**2, cv**2 / rate, n)
  return np.cumsum(gaps).astype(np.float64)


# ----------------------------------------------------------------------------- lengths


def lognormal_lengths(
  rng: np.random.Generator, n: int, median: float, sigma: float, max_len: int, min_len: int = 1
) -> np.ndarray:
  """Token counts i32[n]: `round(median * exp(sigma * N(0, 1)))` clipped to [min_len, max_len]."""
  if not 1 <= min_len <= max_len:
    raise ValueError(f"lognormal_lengths: need 1 <= min_len <= max_len, got {min_len}, {max_len}")
  x = np.rint(median * np.exp(sigma * rng.standard_normal(n)))
  return np.clip(x, min_len, max_len).astype(np.int32)


def fixed_lengths(n: int, value: int) -> np.ndarray:
  """Token counts i32[n], all `value` (>= 1)."""
  if value < 1:
    raise ValueError(f"fixed_lengths: value must be >= 1, got {value}")
  return np.full(n, value, np.int32)


def uniform_lengths(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
  """Token counts i32[n], uniform on the integers low..high (both included)."""
  if not 1 <= low <= high:
    raise ValueError(f"uniform_lengths: need 1 <= low <= high, got {low}, {high}")
  return rng.integers(low, high + 1, n).astype(np.int32)


# ----------------------------------------------------------------------------- builders


def _no_jobs(max_stages: int = 1) -> dict:
  """Job arrays of one dummy job that no request references (the env needs n_jobs >= 1)."""
  return dict(
    job_arrival=np.zeros(1, np.float64),
    job_deadline=np.full(1, np.inf),
    n_stages=np.ones(1, np.int32),
    width=np.zeros((1, max_stages), np.int32),
  )


def _build(fields: dict, jobs: dict) -> Workload:
  """Casts to the canonical dtypes, builds and validates (no shared prefixes unless given)."""
  n = len(fields["arrival"])
  fields = {"prefix_id": np.full(n, -1), "prefix_len": np.zeros(n), **fields}
  out = {}
  for name, value in {**fields, **jobs}.items():
    out[name] = np.asarray(value, np.float64 if name in _F64_FIELDS else np.int32)
  return validate(Workload(**out))


def _clients(rng, n, n_clients, clients):
  if n_clients < 1:
    raise ValueError(f"n_clients must be >= 1, got {n_clients}")
  if clients == "round_robin":
    return np.arange(n) % n_clients
  if clients == "random":
    return rng.integers(0, n_clients, n)
  raise ValueError(f"clients={clients!r}: use 'round_robin' or 'random'")


def make_requests(
  rng: np.random.Generator | None,
  arrival,
  prompt_len,
  out_len,
  *,
  cls=LATENCY,
  slo_ttft=1.0,
  slo_tbt=0.1,
  deadline=10.0,
  n_clients: int = 1,
  clients: str = "round_robin",
) -> Workload:
  """A workload of plain requests (no DAG jobs), in the given (sorted) arrival order.

  Args:
    rng: used only for a drawn class mix and for random clients (may be None otherwise).
    arrival, prompt_len, out_len: arrays of length n.
    cls: LATENCY or DEADLINE for all, an i32[n] array, or a pair of weights
      (latency, deadline) from which each request's class is drawn.
    slo_ttft, slo_tbt: latency SLOs (s), scalars or arrays of length n.
    deadline: e2e deadline (s) of DEADLINE requests, scalar or array; latency requests get inf.
    n_clients, clients: client ids "round_robin" (i mod n_clients) or "random".

  Returns:
    The validated Workload: n requests, one dummy job (width [1, 1]).
  """
  arrival = np.asarray(arrival, np.float64)
  n = arrival.shape[0]
  if isinstance(cls, tuple):
    p = np.asarray(cls, np.float64)
    if p.shape != (2,) or np.any(p < 0) or p.sum() <= 0:
      raise ValueError(f"make_requests: cls weights must be (latency, deadline) >= 0, got {cls}")
    cls = rng.choice(2, n, p=p / p.sum())
  cls = np.broadcast_to(np.asarray(cls, np.int32), (n,))
  if np.any(cls == COLLECTIVE):
    raise ValueError("make_requests builds plain requests; COLLECTIVE requests are DAG nodes")
  fields = dict(
    arrival=arrival,
    prompt_len=prompt_len,
    out_len=out_len,
    cls=cls,
    slo_ttft=np.broadcast_to(np.asarray(slo_ttft, np.float64), (n,)),
    slo_tbt=np.broadcast_to(np.asarray(slo_tbt, np.float64), (n,)),
    deadline=np.where(cls == DEADLINE, np.broadcast_to(deadline, (n,)), np.inf),
    job_id=np.full(n, -1),
    stage=np.zeros(n),
    client_id=_clients(rng, n, n_clients, clients),
  )
  return _build(fields, _no_jobs())


def dag_widths(kind: str, size: int) -> tuple[int, ...]:
  """Nodes per stage of a DAG template [R, serving.md 1.4].

  chain(S) = [1] * S, fan-out(F) = [1, F, 1], tree-of-thought ToT(b) = [1, b, b, 1].
  """
  if size < 1:
    raise ValueError(f"dag_widths: size must be >= 1, got {size}")
  if kind == "chain":
    return (1,) * size
  if kind == "fanout":
    return (1, size, 1)
  if kind == "tot":
    return (1, size, size, 1)
  raise ValueError(f"unknown DAG kind {kind!r}: use 'chain', 'fanout' or 'tot'")


def _job_rows(rng, widths, prompt, output, max_prompt):
  """Per-node (stage, prompt_len, out_len) of each job, nodes ordered by stage.

  A node's prompt is its own base prompt plus the outputs of every node of the previous stage
  (layered DAGs: each node reads all of the previous stage), capped at `max_prompt`.
  """
  n_nodes = [sum(w) for w in widths]
  total = sum(n_nodes)
  base = lognormal_lengths(rng, total, *prompt)
  out = lognormal_lengths(rng, total, *output)
  stage = np.empty(total, np.int32)
  plen = np.empty(total, np.int32)
  pos = 0
  for w in widths:
    parents = 0
    for s, k in enumerate(w):
      sl = slice(pos, pos + k)
      stage[sl] = s
      plen[sl] = np.minimum(base[sl].astype(np.int64) + parents, max_prompt)
      parents = int(out[sl].sum())
      pos += k
  return stage, plen, out


def _template_widths(rng, n_jobs, shapes):
  """Widths of n_jobs jobs: the templates cycled (exact counts), in a random order."""
  templates = [dag_widths(kind, size) for kind, size in shapes]
  if not templates:
    raise ValueError("at least one DAG shape is needed")
  order = rng.permutation(n_jobs) % len(templates)
  return [templates[i] for i in order], max(len(t) for t in templates)


def _width_array(widths, max_stages):
  out = np.zeros((max(len(widths), 1), max_stages), np.int32)
  for j, w in enumerate(widths):
    out[j, : len(w)] = w
  return out


def agentic_jobs(
  rng: np.random.Generator,
  job_arrival,
  shapes: Sequence[tuple[str, int]] = TEMPO_SHAPES,
  *,
  prompt=CHAT_PROMPT,
  output=CHAT_OUTPUT,
  max_prompt: int = 4096,
  per_stage_budget: float = 20.0,
  tier=1.0,
  slo_ttft: float = 1.0,
  slo_tbt: float = 0.1,
  n_clients: int = 1,
) -> Workload:
  """A workload of DAG jobs only (class COLLECTIVE) [R, serving.md 1.4].

  Args:
    rng: random source (templates order, lengths, clients).
    job_arrival: f64[n_jobs] sorted job arrival times (n_jobs >= 1).
    shapes: (kind, size) templates, see `dag_widths`; cycled over the jobs (exact counts per
      template) in a random order.
    prompt, output: (median, sigma, max) of the base prompt and of each node's output.
    max_prompt: cap of base prompt + parent outputs.
    per_stage_budget: job deadline D = per_stage_budget * n_stages * tier (NSDI: 20 s x stages).
    tier: SLO multiplier, scalar or f64[n_jobs]; also multiplies the (unused) latency SLOs.
    n_clients: each job's client is drawn uniformly; all its nodes share it.

  Returns:
    The validated Workload: one row per node, nodes of a job consecutive and ordered by stage,
    job arrays of length n_jobs, width [n_jobs, max stages over the templates].
  """
  job_arrival = np.asarray(job_arrival, np.float64)
  n_jobs = job_arrival.shape[0]
  if n_jobs < 1:
    raise ValueError("agentic_jobs needs at least one job")
  widths, max_stages = _template_widths(rng, n_jobs, shapes)
  tier = np.broadcast_to(np.asarray(tier, np.float64), (n_jobs,))
  stage, plen, out = _job_rows(rng, widths, prompt, output, max_prompt)
  n_nodes = np.array([sum(w) for w in widths])
  job = np.repeat(np.arange(n_jobs), n_nodes)
  n_stages = np.array([len(w) for w in widths], np.int32)
  job_deadline = per_stage_budget * n_stages * tier
  client = _clients(rng, n_jobs, n_clients, "random")
  fields = dict(
    arrival=job_arrival[job],
    prompt_len=plen,
    out_len=out,
    cls=np.full(job.shape, COLLECTIVE),
    slo_ttft=slo_ttft * tier[job],
    slo_tbt=slo_tbt * tier[job],
    deadline=job_deadline[job],
    job_id=job,
    stage=stage,
    client_id=client[job],
  )
  jobs = dict(
    job_arrival=job_arrival,
    job_deadline=job_deadline,
    n_stages=n_stages,
    width=_width_array(widths, max_stages),
  )
  return _build(fields, jobs)


def tempo_mix(
  rng: np.random.Generator,
  n: int,
  rate: float | None,
  *,
  n_clients: int = 1,
  arrivals: str = "poisson",
  cv: float = 1.0,
  azure_path: str | None = None,
  azure_start: int = 0,
  prompt=CHAT_PROMPT,
  output=CHAT_OUTPUT,
  mix: tuple[float, float, float] = (1.0, 1.0, 1.0),
  collective_divisor: float = 7.0,
  shapes: Sequence[tuple[str, int]] = TEMPO_SHAPES,
  slo_ttft: float = 1.0,
  slo_tbt: float = 0.1,
  deadline: float = 10.0,
  per_stage_budget: float = 20.0,
  n_tiers: int = 4,
  max_prompt: int = 4096,
) -> Workload:
  """The Tempo reproduction workload (serving.md sections 1.4, 2.1 and 6), exactly n requests.

  Items are plain latency requests, plain deadline requests and DAG jobs (`agentic_jobs`'s
  shapes, chain 6 / fan-out 5 / ToT 3 by default). Counts [R, our reading of JITServe
  `create_trace`]: the class mix `latency : deadline : collective` weighs *items*, with the
  collective weight divided by `collective_divisor` (the artifact counts one collective job as
  about 7 requests); so with the defaults items come as 7 : 7 : 1 and, with 7 nodes per job on
  average, requests as about 1 : 1 : 1. The job count is
  `floor(n * w_c / (w_l + w_d + w_c * mean_nodes))`, `w_c = mix[2] / collective_divisor`; the
  templates are cycled, so node counts do not depend on the seed; the remaining
  `n - nodes` plain requests split latency : deadline by `mix[0] : mix[1]` (latency takes the
  rounding). So n_total = n, n_jobs and max_stages depend only on (n, mix, shapes): workloads of
  different seeds stack.

  Arrivals (one per item; a job's nodes share it), all starting at t = 0:
    "poisson" / "gamma" (with `cv`): item rate `rate * m / n` for m items, so that the n
      requests span about `n / rate` seconds: `rate` is in requests per second, nodes included.
    "azure": the trace's arrival times (`load_azure_trace(azure_path)`) from row `azure_start`,
      shifted to start at 0 and, unless `rate` is None, scaled so the last item arrives at
      `n / rate` (burstiness kept, mean load set by `rate`).

  SLOs (the artifact's `benchmark_oracle.sh` values [C]): TTFT `slo_ttft` 1 s and TBT `slo_tbt`
  0.1 s for latency requests, `deadline` 10 s for deadline requests, `per_stage_budget` 20 s
  times the job's stages for DAG jobs (the NSDI paper's rule; the artifact's TTLT for jobs is not
  used). Every SLO of item k (its collection id, k = rank in arrival order; a job's nodes share
  it) is multiplied by the tier `1 + (k mod n_tiers)`, as the artifact's metric does [C
  `benchmark_scheduler.py`]. Lengths: clipped lognormal chat-like prompts and outputs; a DAG
  node's prompt is its base prompt plus the outputs of the previous stage, capped at
  `max_prompt`. Clients are drawn uniformly per item (a job's nodes share one).

  Returns:
    The validated Workload of n requests sorted by arrival, DAG nodes consecutive by stage, job
    arrays of length max(n_jobs, 1) (one dummy job when there are none) and width
    [., max stages over `shapes`].
  """
  w_l, w_d, w_c = float(mix[0]), float(mix[1]), float(mix[2]) / collective_divisor
  templates = [dag_widths(kind, size) for kind, size in shapes]
  mean_nodes = float(np.mean([sum(t) for t in templates]))
  n_jobs = int(np.floor(n * w_c / (w_l + w_d + w_c * mean_nodes))) if w_c > 0 else 0
  # cycled templates: the node count is fixed; only the order of the templates is random
  per_job = [sum(templates[j % len(templates)]) for j in range(n_jobs)]
  n_plain = n - sum(per_job)
  if n_plain < 0 or n < 1:
    raise ValueError(f"tempo_mix: n={n} too small for {n_jobs} jobs of {sum(per_job)} nodes")
  n_dl = int(np.floor(n_plain * w_d / (w_l + w_d))) if w_l + w_d > 0 else 0
  n_lat = n_plain - n_dl
  if w_l + w_d == 0 and n_plain > 0:
    raise ValueError(f"tempo_mix: mix={mix} has no plain requests but {n_plain} are left over")
  m = n_lat + n_dl + n_jobs

  # item kinds in a random order; item k arrives k-th (collection id k)
  kind = rng.permutation(np.repeat([LATENCY, DEADLINE, COLLECTIVE], [n_lat, n_dl, n_jobs]))
  if arrivals == "poisson":
    times = poisson_arrivals(rng, m, _item_rate(rate, m, n))
  elif arrivals == "gamma":
    times = gamma_arrivals(rng, m, _item_rate(rate, m, n), cv)
  elif arrivals == "azure":
    times = _azure_times(azure_path, azure_start, m, None if rate is None else n / rate)
  else:
    raise ValueError(f"tempo_mix: arrivals={arrivals!r}: use 'poisson', 'gamma' or 'azure'")
  tier = 1.0 + (np.arange(m) % n_tiers)

  # plain rows, one per plain item
  plain = np.flatnonzero(kind != COLLECTIVE)
  plain_cls = kind[plain]
  rows = dict(
    item=plain,
    arrival=times[plain],
    prompt_len=lognormal_lengths(rng, plain.size, *prompt),
    out_len=lognormal_lengths(rng, plain.size, *output),
    cls=plain_cls,
    slo_ttft=slo_ttft * tier[plain],
    slo_tbt=slo_tbt * tier[plain],
    deadline=np.where(plain_cls == DEADLINE, deadline * tier[plain], np.inf),
    job_id=np.full(plain.size, -1),
    stage=np.zeros(plain.size),
    client_id=_clients(rng, plain.size, n_clients, "random"),
  )
  if n_jobs:
    # job j is the j-th job item in arrival order
    job_items = np.flatnonzero(kind == COLLECTIVE)
    dag = agentic_jobs(
      rng,
      times[job_items],
      shapes,
      prompt=prompt,
      output=output,
      max_prompt=max_prompt,
      per_stage_budget=per_stage_budget,
      tier=tier[job_items],
      slo_ttft=slo_ttft,
      slo_tbt=slo_tbt,
      n_clients=n_clients,
    )
    nodes = {k: getattr(dag, k) for k in _REQUEST_FIELDS}
    nodes["item"] = job_items[dag.job_id]
    rows = {k: np.concatenate([rows[k], nodes[k]]) for k in rows}
    jobs = {k: getattr(dag, k) for k in ("job_arrival", "job_deadline", "n_stages", "width")}
  else:
    jobs = _no_jobs(max(len(t) for t in templates))
  # merge by item index; stable, so a job's nodes stay consecutive and in stage order
  order = np.argsort(rows.pop("item"), kind="stable")
  return _build({k: v[order] for k, v in rows.items()}, jobs)


def _item_rate(rate, m, n):
  if rate is None or rate <= 0:
    raise ValueError(f"tempo_mix: rate must be > 0 for synthetic arrivals, got {rate}")
  return rate * m / n


def _azure_times(path, start, m, span):
  """m arrival times from the Azure trace rows start.., from 0, last one at `span` if given."""
  if path is None:
    raise ValueError("tempo_mix: arrivals='azure' needs azure_path")
  arrival, _, _ = load_azure_trace(path, limit=start + m)
  if arrival.shape[0] < start + m:
    raise ValueError(
      f"tempo_mix: the Azure trace {path} has {arrival.shape[0]} rows, need {start + m} "
      f"(azure_start={start} + {m} arrivals)"
    )
  times = arrival[start : start + m] - arrival[start]
  if span is not None:
    if times[-1] <= 0:
      raise ValueError(f"tempo_mix: Azure rows {start}..{start + m - 1} all arrive at once")
    times = times * (span / times[-1])
  return times


# ----------------------------------------------------------------------------- Azure trace

_TIMESTAMP = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?")


def _parse_timestamp(text: str) -> int:
  """Nanoseconds since 0001-01-01 of 'YYYY-MM-DD HH:MM:SS[.fffffff]'; ValueError if malformed."""
  match = _TIMESTAMP.fullmatch(text)
  if match is None:
    raise ValueError("not of the form 'YYYY-MM-DD HH:MM:SS.fffffff'")
  y, mo, d, h, mi, s, frac = match.groups()
  day = datetime.date(int(y), int(mo), int(d)).toordinal()  # raises on an impossible date
  if int(h) > 23 or int(mi) > 59 or int(s) > 59:
    raise ValueError("time of day out of range")
  seconds = ((day * 24 + int(h)) * 60 + int(mi)) * 60 + int(s)
  # integer nanoseconds: the 7 fractional digits stay exact
  return seconds * 10**9 + int((frac or "0").ljust(9, "0"))


def load_azure_trace(path, limit: int | None = None):
  """Reads the Azure LLM inference trace 2023 CSV `TIMESTAMP,ContextTokens,GeneratedTokens`.

  Timestamps look like `2023-11-16 18:15:46.6805900` (7 fractional digits, parsed exactly as
  integer nanoseconds); the first data row is t = 0. Token counts of 0 are clipped to 1 (the env
  needs prompts and outputs of at least one token) [R]. Blank lines are skipped.

  Args:
    path: the CSV file.
    limit: read at most this many data rows (None: all).

  Returns:
    (arrival f64[n] seconds since the first row, prompt_len i32[n], out_len i32[n]).

  Raises:
    ValueError naming the line number, the field and the value: bad header, wrong field count,
    unparsable timestamp, non-integer or negative token count, timestamp earlier than the one
    before, or no data rows.
  """
  if limit is not None and limit < 1:
    raise ValueError(f"load_azure_trace: limit must be >= 1 or None, got {limit}")
  ticks, prompt, out = [], [], []
  with open(path, encoding="utf-8-sig") as f:
    header = f.readline()
    names = tuple(x.strip() for x in header.strip().split(","))
    if names != AZURE_HEADER:
      raise ValueError(f"{path}:1: header {header.strip()!r} is not {','.join(AZURE_HEADER)!r}")
    for lineno, line in enumerate(f, start=2):
      if limit is not None and len(ticks) >= limit:
        break
      line = line.strip()
      if not line:
        continue
      parts = [x.strip() for x in line.split(",")]
      if len(parts) != 3:
        raise ValueError(f"{path}:{lineno}: expected 3 fields, got {len(parts)} in {line!r}")
      try:
        t = _parse_timestamp(parts[0])
      except ValueError as e:
        raise ValueError(f"{path}:{lineno}: field TIMESTAMP value {parts[0]!r}: {e}") from None
      if ticks and t < ticks[-1]:
        raise ValueError(
          f"{path}:{lineno}: field TIMESTAMP value {parts[0]!r} is earlier than the previous row"
        )
      counts = []
      for name, text in zip(AZURE_HEADER[1:], parts[1:], strict=True):
        if not re.fullmatch(r"[+-]?\d+", text):
          raise ValueError(f"{path}:{lineno}: field {name} value {text!r} is not an integer")
        if int(text) < 0:
          raise ValueError(f"{path}:{lineno}: field {name} value {text!r} is negative")
        counts.append(int(text))
      ticks.append(t)
      prompt.append(counts[0])
      out.append(counts[1])
  if not ticks:
    raise ValueError(f"{path}: no data rows after the header")
  # relative ticks first: absolute nanoseconds since year 1 overflow int64
  arrival = np.asarray([t - ticks[0] for t in ticks], np.int64).astype(np.float64) / 1e9
  prompt = np.maximum(np.asarray(prompt, np.int64), 1).astype(np.int32)
  out = np.maximum(np.asarray(out, np.int64), 1).astype(np.int32)
  return arrival, prompt, out


def azure_workload(
  path,
  limit: int | None = None,
  *,
  slo_ttft: float = 1.0,
  slo_tbt: float = 0.1,
  n_clients: int = 1,
  clients: str = "round_robin",
  rng: np.random.Generator | None = None,
) -> Workload:
  """The Azure trace as a Workload of LATENCY requests (trace arrival times and lengths).

  Returns:
    The validated Workload of the first `limit` rows (all by default); see `make_requests` for
    SLOs and clients (`rng` is needed only for clients="random").
  """
  arrival, prompt, out = load_azure_trace(path, limit)
  return make_requests(
    rng,
    arrival,
    prompt,
    out,
    cls=LATENCY,
    slo_ttft=slo_ttft,
    slo_tbt=slo_tbt,
    n_clients=n_clients,
    clients=clients,
  )


# ----------------------------------------------------------------------------- offline pools

# Offline pools of HyGen's reproduction [R, serving.md 1.4]: (median, sigma, max) lengths.
SUMMARY_PROMPT = (4000.0, 0.4, 8000)
SUMMARY_OUTPUT = (200.0, 0.5, 1024)
MMLU_GROUPS = 57  # subjects, each with its own few-shot prefix
MMLU_PREFIX = (600.0, 0.2, 1200)  # shared few-shot prefix of a subject
MMLU_QUESTION = (80.0, 0.4, 400)


def offline_pool(
  rng: np.random.Generator,
  n: int,
  kind: str = "summarisation",
  *,
  available=0.0,
  n_groups: int = MMLU_GROUPS,
) -> dict:
  """Rows of an offline pool (class OFFLINE), in a random order [R, serving.md 1.4].

  Args:
    rng: random source.
    n: requests.
    kind: "summarisation" (long prompts, ~200-token outputs, no shared prefix) or "mmlu"
      (`n_groups` subjects; a prompt is its subject's shared few-shot prefix plus a question,
      the output 1-4 tokens; `prefix_id` is the subject).
    available: availability time(s) (s), scalar or f64[n]; the pool is there from t0 by default.

  Returns:
    dict of request arrays (prompt_len, out_len, arrival, prefix_id, prefix_len) for `co_locate`.
  """
  if n < 1:
    raise ValueError(f"offline_pool: n must be >= 1, got {n}")
  if kind == "summarisation":
    prompt = lognormal_lengths(rng, n, *SUMMARY_PROMPT)
    out = lognormal_lengths(rng, n, *SUMMARY_OUTPUT)
    pid = np.full(n, -1, np.int32)
    plen = np.zeros(n, np.int32)
  elif kind == "mmlu":
    if n_groups < 1:
      raise ValueError(f"offline_pool: n_groups must be >= 1, got {n_groups}")
    group_len = lognormal_lengths(rng, n_groups, *MMLU_PREFIX, min_len=16)
    pid = rng.integers(0, n_groups, n).astype(np.int32)
    plen = group_len[pid]
    prompt = (plen + lognormal_lengths(rng, n, *MMLU_QUESTION)).astype(np.int32)
    out = uniform_lengths(rng, n, 1, 4)
  else:
    raise ValueError(f"offline_pool: kind={kind!r}: use 'summarisation' or 'mmlu'")
  arrival = np.broadcast_to(np.asarray(available, np.float64), (n,)).copy()
  return dict(arrival=arrival, prompt_len=prompt, out_len=out, prefix_id=pid, prefix_len=plen)


def co_locate(online: Workload, *pools: dict, order=None) -> Workload:
  """The online workload followed by offline rows: HyGen's two streams in one Workload.

  Args:
    online: a Workload without OFFLINE rows (its rows stay first, unchanged).
    pools: `offline_pool` dicts, concatenated in this order; prefix groups of later pools are
      shifted so that ids of different pools never collide.
    order: optional permutation of the offline rows: the host-fixed offline stream order (say
      `scheduling.hygen.psm_order`); default as concatenated.

  Returns:
    The validated Workload; `prefix_id`/`prefix_len` are filled (online rows -1 / 0 unless the
    online workload carries its own).
  """
  if np.any(np.asarray(online.cls) == OFFLINE):
    raise ValueError("co_locate: the online workload already holds OFFLINE rows")
  n_on = online.n_total
  pid_on = online.prefix_id if online.prefix_id is not None else np.full(n_on, -1, np.int32)
  plen_on = online.prefix_len if online.prefix_len is not None else np.zeros(n_on, np.int32)
  cols = {k: [np.asarray(getattr(online, k))] for k in _REQUEST_FIELDS}
  cols["prefix_id"], cols["prefix_len"] = [np.asarray(pid_on)], [np.asarray(plen_on)]
  shift = int(np.max(pid_on, initial=-1)) + 1
  n_off = 0
  for pool in pools:
    m = len(pool["prompt_len"])
    n_off += m
    pid = np.asarray(pool["prefix_id"], np.int64)
    rows = dict(
      arrival=pool["arrival"],
      prompt_len=pool["prompt_len"],
      out_len=pool["out_len"],
      cls=np.full(m, OFFLINE),
      slo_ttft=np.full(m, np.inf),
      slo_tbt=np.full(m, np.inf),
      deadline=np.full(m, np.inf),
      job_id=np.full(m, -1),
      stage=np.zeros(m),
      client_id=np.zeros(m),
      prefix_id=np.where(pid >= 0, pid + shift, -1),
      prefix_len=pool["prefix_len"],
    )
    shift += int(np.max(pid, initial=-1)) + 1
    for k, v in rows.items():
      cols[k].append(np.asarray(v))
  fields = {k: np.concatenate(v) for k, v in cols.items()}
  if order is not None:
    order = np.asarray(order, np.int64)
    if sorted(order.tolist()) != list(range(n_off)):
      raise ValueError(f"co_locate: order must be a permutation of the {n_off} offline rows")
    perm = np.concatenate([np.arange(n_on), n_on + order])
    fields = {k: v[perm] for k, v in fields.items()}
  jobs = {k: getattr(online, k) for k in ("job_arrival", "job_deadline", "n_stages", "width")}
  return _build(fields, jobs)


# ----------------------------------------------------------------------------- validation


def _fail(field, index, value, why):
  idx = ", ".join(str(int(i)) for i in np.atleast_1d(index))
  value = value.item() if isinstance(value, np.generic) else value  # plain repr: 3, nan
  raise ValueError(f"Workload.{field}[{idx}] = {value!r}: {why}")


def _first(mask):
  return int(np.flatnonzero(mask)[0])


def validate(workload: Workload) -> Workload:
  """Checks a host workload against docs/llm_serving_semantics.md; returns it unchanged.

  Raises:
    ValueError naming the field, the index and the value of the first problem: wrong dtype or
    shape, arrival NaN/inf/unsorted, prompt_len or out_len < 1, cls out of range, job_id out of
    range or inconsistent with cls (COLLECTIVE iff job_id >= 0), stage out of range, nodes of a
    job not consecutive or not ordered by stage, node arrival/deadline differing from the job's,
    width inconsistent with the node count, negative or NaN SLOs, negative client ids.
  """
  w = {k: np.asarray(getattr(workload, k)) for k in Workload.__dataclass_fields__}
  optional = [k for k in _OPTIONAL_FIELDS if getattr(workload, k) is None]
  if len(optional) == 1:
    raise ValueError(f"Workload.{optional[0]} is None but the other prefix field is set")
  for k in optional:
    del w[k]
  for name, x in w.items():
    want = np.float64 if name in _F64_FIELDS else np.int32
    if x.dtype != want:
      raise ValueError(f"Workload.{name} has dtype {x.dtype}, expected {np.dtype(want)}")
  n = w["arrival"].shape
  if len(n) != 1 or n[0] < 1:
    raise ValueError(f"Workload.arrival must be 1-D and non-empty, got shape {n}")
  for name in _REQUEST_FIELDS + tuple(k for k in _OPTIONAL_FIELDS if k in w):
    if w[name].shape != n:
      raise ValueError(f"Workload.{name} has shape {w[name].shape}, expected {n}")
  n_jobs = w["job_arrival"].shape
  if len(n_jobs) != 1 or n_jobs[0] < 1:
    raise ValueError(f"Workload.job_arrival must be 1-D with n_jobs >= 1, got shape {n_jobs}")
  for name in ("job_deadline", "n_stages"):
    if w[name].shape != n_jobs:
      raise ValueError(f"Workload.{name} has shape {w[name].shape}, expected {n_jobs}")
  if w["width"].ndim != 2 or w["width"].shape[0] != n_jobs[0] or w["width"].shape[1] < 1:
    raise ValueError(f"Workload.width has shape {w['width'].shape}, expected ({n_jobs[0]}, S>=1)")
  n_jobs, max_stages = n_jobs[0], w["width"].shape[1]

  arrival = w["arrival"]
  if not np.all(np.isfinite(arrival)):
    i = _first(~np.isfinite(arrival))
    _fail("arrival", i, arrival[i], "not finite")
  cls = w["cls"]
  offline = cls == OFFLINE
  n_online = int(np.sum(~offline))
  if np.any(offline[:n_online]):
    i = _first(offline[:n_online])
    _fail("cls", i, OFFLINE, f"offline rows must follow the {n_online} online rows")
  online = arrival[:n_online]  # the offline stream keeps its host order, not sorted
  if np.any(np.diff(online) < 0):
    i = _first(np.diff(online) < 0) + 1
    _fail("arrival", i, arrival[i], f"earlier than arrival[{i - 1}] = {float(arrival[i - 1])!r}")
  if np.any(arrival[n_online:] < 0):
    i = n_online + _first(arrival[n_online:] < 0)
    _fail("arrival", i, arrival[i], "offline availability time must be >= 0")
  for name in ("prompt_len", "out_len"):
    if np.any(w[name] < 1):
      i = _first(w[name] < 1)
      _fail(name, i, int(w[name][i]), "must be >= 1")
  if np.any((cls < 0) | (cls > OFFLINE)):
    i = _first((cls < 0) | (cls > OFFLINE))
    _fail("cls", i, int(cls[i]), f"must be in [0, {OFFLINE}]")
  for name in ("slo_ttft", "slo_tbt", "deadline"):
    bad = ~(w[name] >= 0)  # also catches NaN
    if np.any(bad):
      i = _first(bad)
      _fail(name, i, float(w[name][i]), "must be >= 0")
  if np.any(w["client_id"] < 0):
    i = _first(w["client_id"] < 0)
    _fail("client_id", i, int(w["client_id"][i]), "must be >= 0")
  bad = ~(w["job_deadline"] >= 0)
  if np.any(bad):
    i = _first(bad)
    _fail("job_deadline", i, float(w["job_deadline"][i]), "must be >= 0")
  if np.any((w["n_stages"] < 1) | (w["n_stages"] > max_stages)):
    i = _first((w["n_stages"] < 1) | (w["n_stages"] > max_stages))
    _fail("n_stages", i, int(w["n_stages"][i]), f"must be in [1, {max_stages}] (width columns)")

  job, stage = w["job_id"], w["stage"]
  bad = (job < -1) | (job >= n_jobs)
  if np.any(bad):
    i = _first(bad)
    _fail("job_id", i, int(job[i]), f"must be -1 or in [0, {n_jobs})")
  node = job >= 0
  bad = node != (cls == COLLECTIVE)
  if np.any(bad):
    i = _first(bad)
    _fail("job_id", i, int(job[i]), f"with cls {int(cls[i])}: COLLECTIVE iff job_id >= 0")
  bad = ~node & (stage != 0)
  if np.any(bad):
    i = _first(bad)
    _fail("stage", i, int(stage[i]), "must be 0 for a plain request")
  jn = np.where(node, job, 0)
  bad = node & ((stage < 0) | (stage >= w["n_stages"][jn]))
  if np.any(bad):
    i = _first(bad)
    _fail("stage", i, int(stage[i]), f"out of range for job {job[i]} of {w['n_stages'][jn[i]]}")
  bad = node & (arrival != w["job_arrival"][jn])
  if np.any(bad):
    i = _first(bad)
    _fail("arrival", i, arrival[i], f"differs from job_arrival[{job[i]}] of its job")
  bad = node & (w["deadline"] != w["job_deadline"][jn])
  if np.any(bad):
    i = _first(bad)
    _fail("deadline", i, w["deadline"][i], f"differs from job_deadline[{job[i]}] of its job")

  idx = np.flatnonzero(node)
  if idx.size:
    # consecutive: every job's rows form one block; stage order: non-decreasing in the block
    first = np.full(n_jobs, np.iinfo(np.int64).max)
    last = np.full(n_jobs, -1)
    count = np.zeros(n_jobs, np.int64)
    np.minimum.at(first, job[idx], idx)
    np.maximum.at(last, job[idx], idx)
    np.add.at(count, job[idx], 1)
    used = count > 0
    bad = used & (last - first + 1 != count)
    if np.any(bad):
      j = _first(bad)
      i = first[j] + _first(job[first[j] : last[j] + 1] != j)
      _fail("job_id", i, int(job[i]), f"inside the rows {first[j]}..{last[j]} of job {j}")
    same = job[1:] == job[:-1]
    bad = same & node[1:] & (stage[1:] < stage[:-1])
    if np.any(bad):
      i = _first(bad) + 1
      _fail("stage", i, int(stage[i]), f"after stage {stage[i - 1]} in job {job[i]}")
    per_stage = np.zeros((n_jobs, max_stages), np.int64)
    np.add.at(per_stage, (job[idx], stage[idx]), 1)
  else:
    per_stage = np.zeros((n_jobs, max_stages), np.int64)
    used = np.zeros(n_jobs, bool)
  if "prefix_id" in w:
    pid, plen = w["prefix_id"], w["prefix_len"]
    bad = pid < -1
    if np.any(bad):
      i = _first(bad)
      _fail("prefix_id", i, int(pid[i]), "must be -1 or >= 0")
    bad = np.where(pid >= 0, (plen < 1) | (plen >= w["prompt_len"]), plen != 0)
    if np.any(bad):
      i = _first(bad)
      _fail("prefix_len", i, int(plen[i]), "must be in [1, prompt_len) with a prefix, else 0")
    if np.any(pid >= 0):
      groups = pid[pid >= 0]
      first_len = np.zeros(int(groups.max()) + 1, np.int64)
      first_len[groups[::-1]] = plen[pid >= 0][::-1]  # the first row of each group wins
      bad = (pid >= 0) & (plen != first_len[np.maximum(pid, 0)])
      if np.any(bad):
        i = _first(bad)
        _fail("prefix_len", i, int(plen[i]), f"differs within prefix group {int(pid[i])}")
  width = w["width"]
  in_range = np.arange(max_stages)[None, :] < w["n_stages"][:, None]
  bad = used[:, None] & ((width != per_stage) | (in_range & (width < 1)))
  bad = bad | (~used[:, None] & (width != 0))  # unreferenced (dummy) jobs: no width
  if np.any(bad):
    j, s = np.argwhere(bad)[0]
    _fail("width", (j, s), int(width[j, s]), f"job {j} has {per_stage[j, s]} node(s) in stage {s}")
  return workload


# ----------------------------------------------------------------------------- length bound


def length_bound_table(
  prompt_len,
  out_len,
  n_buckets: int = 16,
  mark_every: int = 50,
  n_marks: int | None = None,
  quantile: float = 0.95,
  max_out: int | None = None,
):
  """Conditional-quantile table of the output length [R after Tempo, serving.md 2.4].

  `table[b, m] = Q_quantile(L | L > mark_every * m, bucket b)` over a calibration set, with
  log-spaced prompt-length buckets; the bucket of a prompt at run time is
  `searchsorted(edges, prompt_len, side='right')` and the mark `min(generated // mark_every,
  n_marks - 1)`. The quantile uses numpy's "higher" method, so every value is an observed length
  (> mark_every * m). A cell without data falls back to the pooled (all-bucket) value for that
  mark, then to `max(max_out, mark_every * m + 1)`; each row is then made non-decreasing in m
  (a bound never falls as generation proceeds) [R].

  Args:
    prompt_len, out_len: calibration lengths, arrays of equal length >= 1.
    n_buckets: prompt-length buckets.
    mark_every: tokens between refinements.
    n_marks: marks; default `max_out // mark_every + 1` (covers every length up to max_out).
    quantile: the quantile level.
    max_out: the longest output; default max(out_len).

  Returns:
    (edges f32[n_buckets - 1], table f32[n_buckets, n_marks]).
  """
  prompt = np.asarray(prompt_len, np.float64)
  out = np.asarray(out_len, np.float64)
  if prompt.shape != out.shape or prompt.ndim != 1 or prompt.size < 1:
    raise ValueError(f"length_bound_table: need equal 1-D arrays, got {prompt.shape}, {out.shape}")
  if n_buckets < 1 or mark_every < 1:
    raise ValueError(
      f"length_bound_table: need n_buckets, mark_every >= 1, got {n_buckets}, {mark_every}"
    )
  max_out = int(out.max()) if max_out is None else int(max_out)
  n_marks = max_out // mark_every + 1 if n_marks is None else int(n_marks)
  lo, hi = max(prompt.min(), 1.0), max(prompt.max(), 1.0)
  edges = np.geomspace(lo, hi, n_buckets + 1)[1:-1]
  bucket = np.searchsorted(edges.astype(np.float32), prompt.astype(np.float32), side="right")
  table = np.empty((n_buckets, n_marks))
  for m in range(n_marks):
    alive = out > mark_every * m
    fallback = max(max_out, mark_every * m + 1)
    pooled = np.quantile(out[alive], quantile, method="higher") if alive.any() else fallback
    for b in range(n_buckets):
      cell = out[alive & (bucket == b)]
      table[b, m] = np.quantile(cell, quantile, method="higher") if cell.size else pooled
  table = np.maximum.accumulate(table, axis=1)
  return edges.astype(np.float32), table.astype(np.float32)

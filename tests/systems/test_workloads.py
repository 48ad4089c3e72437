"""Workload generators, the Azure loader, validation and the length-bound table."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from jaxsys.systems import workloads as W

AZURE = os.path.join(
  os.path.dirname(__file__), "..", "..", "..", "shared", "data", "azure_llm_2023_code.csv"
)
needs_azure = pytest.mark.skipif(
  not os.path.exists(AZURE), reason=f"Azure trace not found at {AZURE} (../shared/data absent)"
)

F64 = ("arrival", "slo_ttft", "slo_tbt", "deadline", "job_arrival", "job_deadline")


def check_dtypes(wl):
  for f in dataclasses.fields(W.Workload):
    x = getattr(wl, f.name)
    assert isinstance(x, np.ndarray), f.name
    assert x.dtype == (np.float64 if f.name in F64 else np.int32), f.name
  assert wl.width.shape == (wl.n_jobs, wl.max_stages)


def test_poisson_rate_and_first_arrival():
  rng = np.random.default_rng(0)
  t = W.poisson_arrivals(rng, 20_000, rate=5.0)
  assert t.dtype == np.float64 and t.shape == (20_000,)
  assert np.all(np.diff(t) >= 0) and t[0] > 0
  assert 20_000 / t[-1] == pytest.approx(5.0, rel=0.03)
  gaps = np.diff(t)
  assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_gamma_rate_and_cv(cv):
  t = W.gamma_arrivals(np.random.default_rng(1), 40_000, rate=3.0, cv=cv)
  gaps = np.diff(np.concatenate([[0.0], t]))
  assert 1 / gaps.mean() == pytest.approx(3.0, rel=0.05)
  assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.08)
  assert np.all(np.diff(W.gamma_arrivals(np.random.default_rng(1), 5, 2.0, 0.0)) == 0.5)


def test_lengths():
  x = W.lognormal_lengths(np.random.default_rng(0), 20_000, 256, 1.0, 4096)
  assert x.dtype == np.int32 and x.min() >= 1 and x.max() <= 4096
  assert np.median(x) == pytest.approx(256, rel=0.05)
  assert W.lognormal_lengths(np.random.default_rng(0), 100, 5, 3.0, 50, min_len=3).min() >= 3
  assert np.all(W.fixed_lengths(4, 7) == 7)
  u = W.uniform_lengths(np.random.default_rng(0), 5000, 2, 5)
  assert set(np.unique(u)) == {2, 3, 4, 5}


def test_determinism():
  a = W.tempo_mix(np.random.default_rng(7), 300, 4.0, n_clients=3)
  b = W.tempo_mix(np.random.default_rng(7), 300, 4.0, n_clients=3)
  for f in dataclasses.fields(W.Workload):
    np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name))


def test_make_requests():
  rng = np.random.default_rng(0)
  n = 500
  arr = W.poisson_arrivals(rng, n, 2.0)
  p = W.lognormal_lengths(rng, n, 100, 0.5, 1000)
  o = W.fixed_lengths(n, 10)
  wl = W.make_requests(rng, arr, p, o, n_clients=3)
  check_dtypes(wl)
  assert wl.n_total == n and wl.n_jobs == 1 and np.all(wl.cls == W.LATENCY)
  np.testing.assert_array_equal(wl.client_id, np.arange(n) % 3)
  assert np.all(wl.job_id == -1) and np.all(np.isinf(wl.deadline))
  mixed = W.make_requests(rng, arr, p, o, cls=(1.0, 3.0), deadline=5.0, clients="random")
  share = np.mean(mixed.cls == W.DEADLINE)
  assert 0.68 < share < 0.82
  assert np.all(mixed.deadline[mixed.cls == W.DEADLINE] == 5.0)
  with pytest.raises(ValueError, match="COLLECTIVE"):
    W.make_requests(rng, arr, p, o, cls=W.COLLECTIVE)


def test_dag_widths():
  assert W.dag_widths("chain", 3) == (1, 1, 1)
  assert W.dag_widths("fanout", 4) == (1, 4, 1)
  assert W.dag_widths("tot", 2) == (1, 2, 2, 1)
  with pytest.raises(ValueError, match="'star'"):
    W.dag_widths("star", 2)


def test_agentic_jobs_structure():
  rng = np.random.default_rng(3)
  arr = W.poisson_arrivals(rng, 30, 1.0)
  shapes = (("chain", 3), ("fanout", 4), ("tot", 2))
  wl = W.agentic_jobs(rng, arr, shapes, per_stage_budget=20.0, max_prompt=4096)
  check_dtypes(wl)
  assert wl.n_jobs == 30 and wl.max_stages == 4 and np.all(wl.cls == W.COLLECTIVE)
  # cycled templates: exactly 10 jobs of each
  widths = sorted(tuple(int(x) for x in w[w > 0]) for w in wl.width)
  assert widths.count((1, 1, 1)) == widths.count((1, 4, 1)) == widths.count((1, 2, 2, 1)) == 10
  np.testing.assert_allclose(wl.job_deadline, 20.0 * wl.n_stages)
  for j in range(wl.n_jobs):
    idx = np.flatnonzero(wl.job_id == j)
    assert np.all(np.diff(idx) == 1)  # consecutive
    assert np.all(np.diff(wl.stage[idx]) >= 0)  # by stage
    assert np.bincount(wl.stage[idx], minlength=wl.max_stages).tolist() == wl.width[j].tolist()
    assert np.all(wl.arrival[idx] == wl.job_arrival[j])
    assert np.all(wl.deadline[idx] == wl.job_deadline[j])
    assert len(set(wl.client_id[idx])) == 1
    # prompt = base + outputs of the whole previous stage, capped
    for s in range(1, int(wl.n_stages[j])):
      parents = int(wl.out_len[idx][wl.stage[idx] == s - 1].sum())
      kids = wl.prompt_len[idx][wl.stage[idx] == s]
      assert np.all((kids > min(parents, 4095)) | (kids == 4096))


def test_tempo_mix_counts_tiers_and_order():
  n = 2000
  wl = W.tempo_mix(np.random.default_rng(0), n, rate=4.0, n_clients=8)
  check_dtypes(wl)
  assert wl.n_total == n
  counts = np.bincount(wl.cls, minlength=3)
  # items 7 : 7 : 1 (latency : deadline : jobs), 7 nodes per job on average: ~1 : 1 : 1 requests
  assert wl.n_jobs == n // 21 == 95
  assert abs(counts[0] - counts[1]) <= 1
  assert counts[0] / wl.n_jobs == pytest.approx(7, rel=0.01)
  np.testing.assert_allclose(counts / n, 1 / 3, atol=0.02)
  # shapes fixed across seeds: the workloads stack
  other = W.tempo_mix(np.random.default_rng(1), n, rate=4.0, n_clients=8)
  assert (other.n_total, other.n_jobs, other.max_stages) == (n, wl.n_jobs, wl.max_stages)
  np.testing.assert_array_equal(np.bincount(other.cls), counts)
  # n requests at 4 req/s span about n / 4 s
  assert wl.arrival[-1] == pytest.approx(n / 4.0, rel=0.1)
  assert np.all(np.diff(wl.arrival) >= 0)
  # SLO tiers 1..4 for each class, on the artifact's base values
  lat = wl.cls == W.LATENCY
  assert set(np.round(wl.slo_ttft[lat], 9)) == {1.0, 2.0, 3.0, 4.0}
  np.testing.assert_allclose(wl.slo_tbt[lat], 0.1 * wl.slo_ttft[lat])
  dl = wl.cls == W.DEADLINE
  assert set(np.round(wl.deadline[dl], 9)) == {10.0, 20.0, 30.0, 40.0}
  tiers = wl.job_deadline / (20.0 * wl.n_stages)
  assert set(np.round(tiers, 9)) <= {1.0, 2.0, 3.0, 4.0}
  assert set(wl.client_id) == set(range(8))
  # lengths chat-like for plain requests
  plain = wl.job_id < 0
  assert np.median(wl.prompt_len[plain]) == pytest.approx(256, rel=0.15)
  assert np.median(wl.out_len) == pytest.approx(200, rel=0.15)
  assert wl.prompt_len.max() <= 4096 and wl.out_len.max() <= 2048


def test_tempo_mix_small_n_and_gamma():
  wl = W.tempo_mix(np.random.default_rng(0), 10, rate=1.0)
  assert wl.n_total == 10 and wl.n_jobs == 1 and np.all(wl.job_id == -1)
  assert wl.max_stages == 6
  g = W.tempo_mix(np.random.default_rng(0), 300, rate=2.0, arrivals="gamma", cv=3.0)
  assert g.n_total == 300
  with pytest.raises(ValueError, match="'weibull'"):
    W.tempo_mix(np.random.default_rng(0), 30, 1.0, arrivals="weibull")
  with pytest.raises(ValueError, match="azure_path"):
    W.tempo_mix(np.random.default_rng(0), 30, 1.0, arrivals="azure")


@needs_azure
def test_azure_trace_numbers():
  arrival, prompt, out = W.load_azure_trace(AZURE)
  assert arrival.dtype == np.float64 and prompt.dtype == out.dtype == np.int32
  assert arrival.shape == (8_819,) and arrival[0] == 0.0
  assert arrival[-1] == pytest.approx(3_436, abs=1)
  assert prompt.mean() == pytest.approx(2_048, abs=1) and np.median(prompt) == 1_469
  assert prompt.max() == 7_437
  assert out.mean() == pytest.approx(28, abs=0.5) and np.median(out) == 13
  assert out.max() == 1_899
  gaps = np.diff(arrival)
  assert gaps.std() / gaps.mean() == pytest.approx(13, rel=0.05)
  # 7 fractional digits parse exactly: 18:17:04.0319600 - 18:17:03.9799600
  assert arrival[1] == pytest.approx(0.052, abs=1e-12)
  head = W.load_azure_trace(AZURE, limit=100)
  np.testing.assert_array_equal(head[0], arrival[:100])
  wl = W.azure_workload(AZURE, limit=500, n_clients=4)
  check_dtypes(wl)
  assert wl.n_total == 500 and np.all(wl.cls == W.LATENCY)


@needs_azure
def test_tempo_mix_azure_arrivals():
  arrival, _, _ = W.load_azure_trace(AZURE, limit=1000)
  wl = W.tempo_mix(np.random.default_rng(0), 600, rate=4.0, arrivals="azure", azure_path=AZURE)
  assert wl.n_total == 600 and wl.arrival[0] == 0.0
  assert wl.arrival[-1] == pytest.approx(600 / 4.0)
  items = np.unique(wl.arrival)
  m = items.size  # distinct item times (the trace has no ties in its first rows)
  np.testing.assert_allclose(items, arrival[:m] * (150.0 / arrival[m - 1]), rtol=1e-12)
  raw = W.tempo_mix(
    np.random.default_rng(0), 600, rate=None, arrivals="azure", azure_path=AZURE, azure_start=5
  )
  np.testing.assert_allclose(np.unique(raw.arrival), arrival[5 : 5 + m] - arrival[5], rtol=1e-12)


HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
ROW0 = "2023-11-16 18:15:46.6805900,10,2\n"


@pytest.mark.parametrize(
  "text, match",
  [
    ("time,prompt,out\n" + ROW0, r":1: header 'time,prompt,out'"),
    (HEADER + ROW0 + "2023-11-16 18:15:47,5\n", r":3: expected 3 fields"),
    (HEADER + ROW0 + "2023-11-16 25:15:47.1,5,5\n", r":3: field TIMESTAMP value '2023-11-16 25"),
    (HEADER + ROW0 + "16/11/2023 18:15:47,5,5\n", r":3: field TIMESTAMP value '16/11/2023"),
    (HEADER + ROW0 + "2023-02-30 18:15:47.1,5,5\n", r":3: field TIMESTAMP value '2023-02-30"),
    (HEADER + ROW0 + "2023-11-16 18:15:47.1,5.5,5\n", r":3: field ContextTokens value '5.5'"),
    (HEADER + ROW0 + "2023-11-16 18:15:47.1,5,-2\n", r":3: field GeneratedTokens value '-2'"),
    (HEADER + ROW0 + "2023-11-16 18:15:46.6805899,5,5\n", r":3: field TIMESTAMP .*earlier"),
    (HEADER, "no data rows"),
  ],
)
def test_azure_malformed(tmp_path, text, match):
  path = tmp_path / "trace.csv"
  path.write_text(text)
  with pytest.raises(ValueError, match=match):
    W.load_azure_trace(path)


def test_azure_small_file(tmp_path):
  path = tmp_path / "trace.csv"
  path.write_text(HEADER + ROW0 + "2023-11-16 18:15:47.6805901,0,5\n\n2023-11-17 00:00:00,3,0\n")
  arrival, prompt, out = W.load_azure_trace(path)
  np.testing.assert_allclose(arrival, [0.0, 1.0000001, 20653.31941])
  np.testing.assert_array_equal(prompt, [10, 1, 3])  # 0 tokens clipped to 1
  np.testing.assert_array_equal(out, [2, 5, 1])


def test_validate_errors():
  rng = np.random.default_rng(0)
  wl = W.tempo_mix(rng, 200, 4.0)
  assert W.validate(wl) is wl
  plain = int(np.flatnonzero(wl.job_id < 0)[0])

  def broken(field, i, value):
    x = getattr(wl, field).copy()
    x[i] = value
    return wl.replace(**{field: x})

  cases = [
    (broken("arrival", 5, np.nan), r"arrival\[5\] = nan"),
    (broken("arrival", 5, -1.0), r"arrival\[5\] = -1.0: earlier than arrival\[4\] = 3.8"),
    (broken("prompt_len", 3, 0), r"prompt_len\[3\] = 0"),
    (broken("out_len", 4, -2), r"out_len\[4\] = -2"),
    (broken("cls", 2, 7), r"cls\[2\] = 7"),
    (broken("slo_ttft", 1, -0.5), r"slo_ttft\[1\] = -0.5"),
    (broken("slo_tbt", 1, np.nan), r"slo_tbt\[1\] = nan"),
    (broken("job_deadline", 0, -3.0), r"job_deadline\[0\] = -3.0"),
    (broken("job_id", plain, 10_000), rf"job_id\[{plain}\] = 10000"),
    (broken("job_id", plain, 0), rf"job_id\[{plain}\] = 0.*COLLECTIVE"),
    (broken("stage", plain, 1), rf"stage\[{plain}\] = 1"),
    (broken("client_id", 0, -1), r"client_id\[0\] = -1"),
    (wl.replace(prompt_len=wl.prompt_len.astype(np.int64)), "prompt_len has dtype int64"),
    (wl.replace(out_len=wl.out_len[:-1]), "out_len has shape"),
  ]
  # a job's width that disagrees with its node count
  width = wl.width.copy()
  width[0, 1] += 1
  cases.append((wl.replace(width=width), r"width\[0, 1\] = \d+: job 0 has \d+ node"))
  for bad, match in cases:
    with pytest.raises(ValueError, match=match):
      W.validate(bad)


def test_validate_job_layout():
  # two chain(2) jobs arriving together: rows j0s0, j0s1, j1s0, j1s1
  wl = W.agentic_jobs(np.random.default_rng(0), [1.0, 1.0], (("chain", 2),))
  np.testing.assert_array_equal(wl.job_id, [0, 0, 1, 1])

  def reorder(order):
    fields = ("arrival", "prompt_len", "out_len", "cls", "slo_ttft", "slo_tbt", "deadline")
    fields += ("job_id", "stage", "client_id")
    return wl.replace(**{k: getattr(wl, k)[order] for k in fields})

  with pytest.raises(ValueError, match=r"job_id\[1\] = 1: inside the rows 0..2 of job 0"):
    W.validate(reorder([0, 2, 1, 3]))
  with pytest.raises(ValueError, match=r"stage\[1\] = 0: after stage 1 in job 0"):
    W.validate(reorder([1, 0, 2, 3]))
  width = wl.width.copy()
  width[1] = 0
  with pytest.raises(ValueError, match=r"width\[1, 0\] = 0: job 1 has 1 node"):
    W.validate(wl.replace(width=width))


def test_length_bound_table():
  rng = np.random.default_rng(0)
  n = 4000
  prompt = W.lognormal_lengths(rng, n, 256, 1.0, 4096)
  # longer prompts get longer outputs, so buckets differ
  out = np.rint(prompt * 0.5 * np.exp(0.5 * rng.standard_normal(n))) + 1
  out = np.minimum(out, 2048).astype(np.int32)
  edges, table = W.length_bound_table(prompt, out)
  assert edges.dtype == table.dtype == np.float32
  n_marks = int(out.max()) // 50 + 1
  assert edges.shape == (15,) and table.shape == (16, n_marks)
  assert np.all(np.diff(edges) > 0)
  bucket = np.searchsorted(edges, prompt.astype(np.float32), side="right")
  assert bucket.min() == 0 and bucket.max() == 15
  marks = 50 * np.arange(n_marks)
  assert np.all(table > marks[None, :])  # a bound at mark m exceeds 50 m
  assert np.all(np.diff(table, axis=1) >= 0)  # never falls as tokens are generated
  assert np.all(table <= out.max())
  # mark 0 is the bucket's 95th percentile; larger prompts, larger bound
  for b in (3, 8, 14):
    cell = out[bucket == b]
    assert table[b, 0] == np.quantile(cell, 0.95, method="higher")
  assert table[14, 0] > table[3, 0]
  # coverage: about 95% of calibration lengths are under their mark-0 bound
  assert np.mean(out <= table[bucket, 0]) == pytest.approx(0.95, abs=0.02)
  # an empty bucket falls back to the pooled value, an empty mark to max_out
  e2, t2 = W.length_bound_table([10, 10, 1000], [5, 300, 7], n_buckets=4, max_out=500)
  assert t2.shape == (4, 11)
  assert t2[0, 0] == 300 and t2[3, 0] == 7
  assert t2[1, 0] == 300  # empty bucket: pooled
  assert t2[3, 1] == 300  # bucket 3 has nothing above 50: pooled
  assert t2[0, 6] == 500  # nothing above 300 anywhere: max_out

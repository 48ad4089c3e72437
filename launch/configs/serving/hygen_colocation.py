"""HyGen: online/offline co-location under an SLO-profiled latency budget (serving.md 6).

  python -m jaxsys.launch.simulate --config=launch/configs/serving/hygen_colocation.py:quick \
      --workdir=/tmp/hygen

Online: a slice of the Azure LLM 2023 code trace, arrivals scaled to about 40% busy time of an
online-only engine; offline: a summarisation-like pool (and an MMLU-like prefix pool in PSM
order) from t0; Llama-2-7B on an A100 (roofline, 2% noise), Sarathi chunk 512. Shows the
predictor's MAPE, the feasible L per tolerance, offline and overall tokens/s with online P99
TTFT / mean TBT for Sarathi (online only), Sarathi++, HyGen* and HyGen on several fresh slices,
and offline tokens/s over time against the online rate. Expected (paper): Sarathi++ fastest
but over the SLO, HyGen within tolerance at several x HyGen*'s offline throughput. `:smoke` < 60 s,
`:quick` a few minutes.
"""

import ml_collections


def get_config(arg: str = ""):
  c = ml_collections.ConfigDict()
  c.experiment = "hygen_colocation"
  c.model = "llama2_7b_a100"
  c.noise_sigma = 0.02
  c.token_budget = 512
  c.max_seqs = 128
  c.n_slots = 256
  c.admit_max = 32
  c.online = "azure"  # or "synthetic": Azure-like draws, no data file needed (smoke)
  c.azure_path = "../shared/data/azure_llm_2023_code.csv"
  c.azure_start = 0
  c.n_online = 1500
  c.target_util = 0.4  # busy fraction of the online-only engine after scaling the arrivals
  c.slo_ttft, c.slo_tbt = 2.0, 0.2  # online SLOs (for the attainment column) [R]
  c.n_summary = 3000  # offline summarisation pool (more than the window can finish)
  c.n_mmlu = 60_000  # MMLU-like prefix pool (PSM order experiment; more than a window uses)
  # GPU memory of the PSM lanes (the A100 time model throughout): at 24 GB the KV cache cannot
  # hold all 57 prefixes (~2,100 blocks) at once
  c.psm_hbm_gb = (80.0, 40.0, 24.0)
  c.offline_slots = 16  # offline quota in the table
  c.predictor_batches = 80_000
  c.grid = 32  # budgets (and caps) per vmapped profiling sweep
  c.taus = (0.05, 0.1, 0.2)
  c.tau = 0.1  # the tolerance of the headline comparison
  # HyGen* cap grid: geometric, as fractions of the offline start rate at the top budget
  c.cap_range = (0.02, 1.0)
  # Trace slices profiled at once (feasible: on every one) [R], and evaluation slices, none of
  # the profiling ones, interleaved with them: the code trace's slices differ in kind (burst-
  # queued ones, mean TBT ~ 35-40 ms online-only, and light decode-heavy ones, ~ 23 ms), and a
  # budget profiled on one kind does not carry over to the other. 5 slices of 1,500 rows.
  c.profile_seeds = (0, 2, 4)
  c.fresh_seeds = (1, 3)
  c.bin_s = 60.0
  c.chunk_steps = 2048
  if arg == "quick":
    c.n_online, c.n_summary, c.grid = 500, 1200, 16
    c.profile_seeds, c.fresh_seeds = (0, 2, 4, 6, 8), (1, 3, 5, 7, 9)
    c.predictor_batches = 40_000
  elif arg == "smoke":
    c.online = "synthetic"
    c.n_online, c.n_summary, c.n_mmlu, c.grid = 80, 150, 400, 4
    c.predictor_batches = 8_000
    c.n_slots, c.max_seqs, c.offline_slots = 96, 32, 8
    c.taus = (0.1, 0.2)
    c.profile_seeds = (0, 1)
    c.fresh_seeds = (2, 3)
    c.bin_s = 10.0
    c.chunk_steps = 1024
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}: use '', 'quick' or 'smoke'")
  c.lock()
  return c

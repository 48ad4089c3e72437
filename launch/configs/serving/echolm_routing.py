"""EchoLM: in-context caching and load-aware routing over two tiers (serving.md sections 5, 6).

  python -m jaxsys.launch.simulate --config=launch/configs/serving/echolm_routing.py \
      --workdir=/tmp/echolm
  python -m jaxsys.launch.simulate --config=launch/configs/serving/echolm_routing.py:smoke ...

Real part: MiniLM embeddings of NQ-open and GSM8K questions (history half = cache, query half
= requests): near-neighbour share, exact and semantic response-cache accuracy, SmolLM2-135M
accuracy with k retrieved examples, and the small-tier quality model fitted to it. Simulated
part: N requests resampled from those embeddings (near-duplicates by paraphrase noise), routed
by every policy across load (one vmapped routing scan per policy kind), then each tier
(Llama-3.1-8B on one H100, Llama-3.1-70B on four) simulated by the serving engine.
Expected (paper): throughput 1.4-5.9x, latency -28-71%, quality not hurt; EchoLM above RouteLLM
and the semantic cache at equal quality. On a 2-core CPU `:quick` takes a few minutes (SmolLM2
dominates; its answers are cached in the workdir) and `:smoke` under a minute (real part off).
"""

import ml_collections


def get_config(arg: str = ""):
  c = ml_collections.ConfigDict()
  c.experiment = "echolm_routing"
  # ---- real part
  c.real = True
  c.nq_path = "../shared/data/nq_open_efficientqa_dev.jsonl"
  c.gsm8k_path = "../shared/data/gsm8k_test.jsonl"
  c.routellm_path = "../shared/data/routellm_gsm8k_correctness.csv"
  # questions per set (half history, half queries); GSM8K's 256-token worked answers cost
  # ~20 s each for SmolLM2 on a 2-core CPU, so it gets fewer
  c.n_nq, c.n_gsm8k = 500, 100
  c.ks = (0, 1, 2, 4)  # retrieved examples given to SmolLM2
  c.nq_max_new_tokens = 24
  c.gsm8k_max_new_tokens = 256  # worked solutions need room before the final number
  c.taus = (0.95, 0.9, 0.8, 0.7)  # semantic response-cache thresholds
  c.batch_rows = 16
  # ---- simulated part
  c.n_requests = 10_000
  c.dim = 384  # synthetic embedding width when the real part is off
  c.n_base = 2000  # synthetic base questions when the real part is off
  c.zipf = 1.2  # popularity of base questions
  # share of new questions: 60-70% of requests have an earlier one at cosine > 0.8 (paper)
  c.p_novel = 0.35
  c.p_exact = 0.1  # share of the others that repeat a base question verbatim
  c.paraphrase = 0.45  # noise of a paraphrase (||noise|| ~ this): similarity ~ 0.9
  c.difficulty_sigma = 1.0  # question difficulty (logit offset) [R]
  c.loads = (0.5, 1.0, 2.0, 4.0)  # x the large-only capacity
  c.capacity = 4096  # cache rows
  c.q_targets = (0.8, 0.7, 0.6, 0.5)
  c.taus_sim = (0.95, 0.9, 0.8)
  c.strong_shares = (0.8, 0.5, 0.2)
  c.betas = (0.5, 2.0)
  c.queue_cap = 10.0
  c.slo_e2e = 15.0  # seconds: a request meets the SLO when its e2e is below this
  c.hit_latency = 0.05  # seconds to answer from a response cache
  c.small_model, c.large_model, c.large_tp = "llama31_8b_h100", "llama31_70b_h100", 4
  c.max_seqs, c.token_budget, c.n_slots, c.macro_steps = 64, 512, 256, 16
  c.seed = 0
  if arg == "quick":
    c.n_nq, c.n_gsm8k, c.ks = 100, 40, (0, 2)
    c.nq_max_new_tokens, c.gsm8k_max_new_tokens = 16, 160
    c.n_requests, c.capacity = 2000, 1024
    c.q_targets, c.taus_sim, c.strong_shares, c.betas = (0.75, 0.6), (0.9, 0.8), (0.7, 0.3), (1.0,)
  elif arg == "smoke":
    c.real = False
    c.n_requests, c.capacity, c.dim, c.n_base = 240, 128, 32, 60
    c.loads = (1.0, 4.0)
    c.q_targets, c.taus_sim, c.strong_shares, c.betas = (0.6,), (0.8,), (0.5,), (1.0,)
    c.n_slots, c.macro_steps = 96, 16
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}: use '', 'quick' or 'smoke'")
  c.lock()
  return c

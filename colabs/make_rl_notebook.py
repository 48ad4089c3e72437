"""Writes colabs/rl.ipynb from the cells below (run after editing them)."""

import pathlib

import _notebook  # colabs/_notebook.py (the script's folder is on sys.path)

CELLS = [
  (
    "md",
    """# jaxsys: GRPO with selective rollouts (GRESO)

GRPO learns only from groups whose responses disagree: when every response to a prompt is
right (or every one wrong), all advantages are zero and the rollout was wasted. DAPO's dynamic
sampling drops such groups and samples more; GRESO (Zheng et al. 2025) predicts them from each
prompt's recent history and skips them before rolling out. This notebook walks through the task,
the loss pieces on numbers you can check by hand, GRESO's skip rule, and a short training run of
all three methods. Runs on CPU in about a minute. Install: `make install` from the repository
root.""",
  ),
  (
    "code",
    """import tempfile

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from jaxsys.algorithms.rl import advantages, greso, losses, tasks""",
  ),
  (
    "md",
    """## The task: arithmetic at five levels
A fixed pool of generated problems, from one-digit sums (level 1) to two-digit products
(level 5). The mix matters: easy prompts soon give all-correct groups and the hardest give
all-wrong ones, exactly the groups GRESO learns to skip. Rewards are exact match.""",
  ),
  (
    "code",
    """pool = tasks.make_pool(40, seed=0)
for level in tasks.LEVELS:
  idx = np.flatnonzero(pool.levels == level)[:3]
  print(f"level {level}:", "   ".join(f"{pool.prompts[i]}{pool.answers[i]}" for i in idx))

tok = tasks.CharTokenizer()
ids = tok.encode(pool.prompts[0])
print("vocabulary:", tok.symbols, f"({tok.vocab_size} ids)")
print(f"{pool.prompts[0]!r} ->", ids, "->", repr(tok.decode(ids)))
print("answer ids:", tok.encode_answer(pool.answers[0]))
answer = pool.answers[0]
# exact match after removing spaces: a leading zero is wrong
print("rewards:", tasks.rewards([answer, " " + answer, "0" + answer], [answer] * 3))""",
  ),
  (
    "md",
    """## GRPO on toy numbers
Group advantages standardise each prompt's rewards within its group (unbiased std). Rewards
[1, 0, 0, 1] give ±0.866; a group whose rewards are all equal gives exactly zero.""",
  ),
  (
    "code",
    """rewards = jnp.array([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
adv = advantages.grpo(rewards, group_mask=jnp.array([True, True]))
print(np.round(adv, 6))""",
  ),
  (
    "md",
    """The per-token loss is PPO's clipped surrogate with DAPO's decoupled bounds
(1 - 0.2, 1 + 0.28) and a dual clip c = 3 for negative advantages. Below, one token per row
with ratio rho = pi/pi_old and advantage A.""",
  ),
  (
    "code",
    """rho = jnp.array([5.0, 0.5, 5.0, 1.1])
adv_tok = jnp.array([1.0, 1.0, -1.0, -1.0])
logp, old_logp = jnp.log(rho)[:, None], jnp.zeros((4, 1))
per_token, info = losses.clipped_surrogate(logp, old_logp, adv_tok)
no_dual, _ = losses.clipped_surrogate(logp, old_logp, adv_tok, dual_clip=None)
for r, a, l, l0, c, d in zip(rho, adv_tok, per_token[:, 0], no_dual[:, 0], info["clipped"][:, 0],
                             info["dual_clipped"][:, 0]):
  print(f"rho {float(r):3.1f}  A {float(a):+.0f}  loss {float(l):+.2f}  (no dual clip "
        f"{float(l0):+.2f})  clipped {bool(c)}  dual-clipped {bool(d)}")""",
  ),
  (
    "md",
    """How token losses become one number matters when responses differ in length. Two responses
with per-token losses [2] and [1, 1, 1]: DAPO/GRESO's token mean weighs every token equally
(5 / 4 = 1.25); the original GRPO averages each response first ((2 + 1) / 2 = 1.5).
`aggregate` returns (numerator, denominator) so micro-batches add up exactly.""",
  ),
  (
    "code",
    """token_loss = jnp.array([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
mask = jnp.array([[1, 0, 0], [1, 1, 1]], bool)
for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
  num, den = losses.aggregate(token_loss, mask, mode)
  print(f"{mode:22s} {float(num):.0f} / {float(den):.0f} = {float(num / den):.3f}")""",
  ),
  (
    "md",
    """## GRESO: skip by streak
For every prompt GRESO counts how many of its latest groups in a row were all-correct (easy) or
all-wrong (hard), and skips it with probability 1 - max(p^streak, 0.01). The base probability p
adapts during training (separately for easy and hard) towards a target share of zero-variance
groups. Here one prompt gets all-correct groups in a row; a mixed group resets its streak.""",
  ),
  (
    "code",
    """G = 8
streaks = np.arange(9)
fig, ax = plt.subplots(figsize=(5, 3))
for p in (0.25, 0.5, 0.75):
  cfg = greso.GresoConfig(p_easy0=p)
  state = greso.init(1, cfg)
  probs = []
  for _ in streaks:
    probs.append(float(greso.skip_probability(state, jnp.array([0]), cfg)[0]))
    state = greso.update(state, jnp.array([0]), jnp.ones((1, G)), jnp.array([True]), cfg, G)
  ax.plot(streaks, probs, "o-", label=f"p = {p}")
ax.set_xlabel("easy streak (all-correct groups in a row)")
ax.set_ylabel("P(skip)")
ax.legend()
ax.grid(alpha=0.3)
plt.show()

mixed = jnp.array([[1.0, 0, 0, 0, 0, 0, 0, 0]])
state = greso.update(state, jnp.array([0]), mixed, jnp.array([True]), cfg, G)
print("after a mixed group: streak", int(state.easy_streak[0]),
      " P(skip) =", float(greso.skip_probability(state, jnp.array([0]), cfg)[0]))""",
  ),
  (
    "md",
    """When a step's batch is still short of informative groups, GRESO sizes the next rollout round
from what is missing and the zero-variance share z of the last round (with a safety factor
beta = 1.25), between `min_rollout` and `default_rollout` prompts.""",
  ),
  (
    "code",
    """cfg = greso.GresoConfig()  # laptop defaults: rounds of 8 to 48 prompts
for missing, z in [(32, 0.0), (32, 0.5), (10, 0.2), (4, 0.0), (20, 0.9)]:
  size, last = greso.next_rollout_size(missing, z, cfg, group_size=8)
  print(f"missing {missing:2d}, zero-variance share {z:.1f} -> roll out {size:2d} prompts"
        f"{' (last round)' if last else ''}")""",
  ),
  (
    "md",
    """## A short training run: GRPO vs dynamic sampling vs GRESO
The smoke configuration: a 2-layer Llama over characters, warm-started by 150 supervised steps
(trained once into `sft_dir` and shared by all methods), then 8 RL steps per method. Plain GRPO
trains on whatever it samples; DS keeps sampling until the batch holds only informative groups;
GRESO does the same but skips prompts it predicts to be uninformative.""",
  ),
  (
    "code",
    """from jaxsys.launch import rl
from jaxsys.launch.configs.rl import greso as greso_config
from jaxsys.lib.writer import read_metrics

config = rl.with_overrides(greso_config.get_config("smoke"), steps=8, eval_every=2,
                           checkpoint_every=8)
config.sft.steps = 150  # a longer warm start than the smoke test's, still a few seconds
sft_dir = tempfile.mkdtemp()
runs = {}
for method in ("grpo", "ds", "greso"):
  workdir = tempfile.mkdtemp()
  rl.train(rl.with_overrides(config, method=method), workdir, sft_dir=sft_dir)
  runs[method] = read_metrics(workdir)""",
  ),
  (
    "code",
    """fig, ax = plt.subplots(figsize=(5, 3))
for method, rows in runs.items():
  ev = [r for r in rows if "eval/acc_greedy" in r]
  ax.plot([r["rollout/responses_total"] for r in ev], [r["eval/acc_greedy"] for r in ev], "o-",
          label=method)
ax.set_xlabel("responses generated")
ax.set_ylabel("held-out greedy accuracy")
ax.set_ylim(bottom=0)
ax.legend()
ax.grid(alpha=0.3)
plt.show()

print(f"{'method':8s} {'responses':>10s} {'final acc':>10s} {'mean skip rate':>15s}")
for method, rows in runs.items():
  skip = np.mean([r["greso/skip_rate"] for r in rows if "greso/skip_rate" in r])
  last = rows[-1]
  print(f"{method:8s} {last['rollout/responses_total']:10d} {last['eval/acc_greedy']:10.3f} "
        f"{skip:15.2f}")""",
  ),
  (
    "md",
    """In 8 steps this tiny model barely moves, so the accuracy curves say little; what shows
already is the cost: DS needs many more responses than GRPO per step, and GRESO, once it has
seen prompts, skips a growing share of them and spends fewer. For the real comparison (a 1M-
parameter model, 200 steps, three seeds, accuracy against rollouts and wall time) run
`python -m jaxsys.launch.reproduce --only=rl --setting=full`.""",
  ),
]


if __name__ == "__main__":
  _notebook.write(CELLS, str(pathlib.Path(__file__).resolve().with_name("rl.ipynb")))

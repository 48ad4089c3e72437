"""Writes colabs/serving.ipynb from the cells below (run after editing them)."""

import _notebook  # colabs/_notebook.py (the script's folder is on sys.path)

CELLS = [
  (
    "md",
    """# jaxsys: the LLM-serving environment and Tempo

A jittable continuous-batching engine (`jaxsys.systems.llm_serving`), the Tempo scheduler and
its baselines (`jaxsys.scheduling`), and a vmapped load sweep, on CPU in about a minute.
Install: `pip install -e .` from the repository root (or `make install`).""",
  ),
  (
    "code",
    """import jax
jax.config.update("jax_enable_x64", True)  # the engine keeps time in float64
import jax.numpy as jnp
import numpy as np
import matplotlib.pyplot as plt

from jaxsys import scheduling
from jaxsys.lib import sim
from jaxsys.scheduling import common
from jaxsys.systems import llm_serving as ls, serving_metrics, timing, workloads""",
  ),
  (
    "md",
    """## A workload: chat, deadline and agentic DAG requests
`tempo_mix` draws the Tempo reproduction's mix; every field is a plain array.""",
  ),
  (
    "code",
    """wl = workloads.tempo_mix(np.random.default_rng(0), 400, rate=4.0, n_clients=4)
calib = workloads.tempo_mix(np.random.default_rng(1), 2000, rate=4.0, n_clients=4)
edges, table = workloads.length_bound_table(calib.prompt_len, calib.out_len)
bound = common.LengthBound.from_table(edges, table)
print(wl.n_total, "requests;", np.bincount(np.asarray(wl.cls)), "per class")""",
  ),
  (
    "md",
    """## One run per policy
`sim.rollout` scans the engine under a policy until every request has finished.""",
  ),
  (
    "code",
    """coef = timing.get_preset("llama31_8b_a100")
env = ls.make(ls.EnvConfig(n_slots=256))
params = ls.EnvParams(max_seqs=32, num_blocks=timing.kv_blocks_capacity(coef, 80e9),
                      time_coef=coef, arrival_scale=2.0)
rows = {}
for name in ("sarathi", "ltr", "tempo"):
  policy, pparams, _ = scheduling.build(name, bound=bound, batch=32)
  state, _ = sim.rollout(env, policy, params, pparams, jax.random.key(0), wl)
  rows[name] = serving_metrics.summarize(wl, state.outputs, arrival_scale=2.0)
for name, m in rows.items():
  print(f"{name:8s} gain {m['service_gain']:12,.0f}  goodput {m['goodput_rps']:.2f} req/s  "
        f"throughput {m['throughput_rps']:.2f} req/s")""",
  ),
  (
    "md",
    """## A load sweep is one vmap
Stack the parameters (here the arrival-rate multiplier) and run all lanes at once.""",
  ),
  (
    "code",
    """scales = [1.0, 2.0, 3.0, 4.0]
stacked = sim.stack([params.replace(arrival_scale=s) for s in scales])
keys = jax.random.split(jax.random.key(0), len(scales))
gains = {}
for name in ("sarathi", "tempo"):
  policy, pparams, _ = scheduling.build(name, bound=bound, batch=32)
  pp = sim.stack([pparams] * len(scales))
  state, _ = sim.sweep(env, policy, stacked, pp, keys, wl)
  gains[name] = [serving_metrics.summarize(wl, serving_metrics.lane(state.outputs, i), s)["service_gain"]
                 for i, s in enumerate(scales)]
for name, g in gains.items():
  plt.plot(scales, g, marker="o", label=name)
plt.xlabel("arrival-rate multiplier"); plt.ylabel("service gain"); plt.yscale("log"); plt.legend()
plt.show()""",
  ),
  (
    "md",
    """## HyGen: offline work in the online engine's spare time
Offline requests (class 3) join the same table under a quota. HyGen predicts each batch's time
with a small linear model, serves the online requests first, and adds offline work only while
the predicted batch time stays under a budget L. A sweep over L is one vmap; the first lane runs
online requests only, as the baseline.""",
  ),
  (
    "code",
    """from jaxsys.scheduling import hygen

rng = np.random.default_rng(0)
arrival = workloads.poisson_arrivals(rng, 150, 1.5)
online = workloads.make_requests(  # Azure code-trace-like lengths: long prompts, short answers
  rng, arrival, workloads.lognormal_lengths(rng, 150, 1469, 0.8, 7437),
  workloads.lognormal_lengths(rng, 150, 13, 1.2, 1899))
hybrid = workloads.co_locate(online, workloads.offline_pool(rng, 200, "summarisation"))
span = float(arrival[-1])
coef7 = timing.get_preset("llama2_7b_a100")
hp = ls.EnvParams(num_blocks=timing.kv_blocks_capacity(coef7, 80e9), time_coef=coef7,
                  noise_sigma=0.02, offline_slots=16, offline_stop=span)
predictor = hygen.fit_predictor(jax.random.key(0), hp, 20_000)
_, held = hygen.split_holdout(hygen.draw_batches(jax.random.key(0), hp, 20_000))
print(f"predictor MAPE on held-out batches: {hygen.mape(predictor, held):.2%}")

budgets = hygen.budget_grid(predictor, hp, 6)
lanes = [hp.replace(offline_slots=0)] + [hp] * len(budgets)
pps = [hygen.params(hp, predictor)] + [hygen.params(hp, predictor, float(b)) for b in budgets]
env16 = ls.make(ls.EnvConfig(n_slots=256, macro_steps=16))
state, _ = sim.sweep(env16, hygen.hygen(), sim.stack(lanes), sim.stack(pps),
                     jax.random.split(jax.random.key(0), len(lanes)), hybrid)
rows = [serving_metrics.hybrid_summary(hybrid, serving_metrics.lane(state.outputs, i), span,
                                       state.offline_tokens[i]) for i in range(len(lanes))]
base = rows[0]
for label, r in zip(["online only"] + [f"L = {b * 1e3:.0f} ms" for b in budgets], rows,
                    strict=True):
  print(f"{label:12s} offline {r['offline_tokens_s']:7.0f} tok/s  P99 TTFT x"
        f"{r['ttft_p99'] / base['ttft_p99']:.2f}  mean TBT x{r['tbt_mean'] / base['tbt_mean']:.2f}")""",
  ),
  (
    "md",
    """## DiSCo: a device and a server racing for the first token
`systems.edge_cloud` simulates each request on a phone-like device and a cloud server (TTFT,
token stream, cost, migration); `scheduling.disco` calibrates the wait-time dispatch for a
device budget and sweeps every budget in one vmap.""",
  ),
  (
    "code",
    """from jaxsys.scheduling import disco
from jaxsys.systems import edge_cloud as ec

rng = np.random.default_rng(0)
prompts = workloads.lognormal_lengths(rng, 2000, 55, 0.5, 1024)  # question-sized chat prompts
test = ec.make_workload(rng, prompts[:1000], 1000, rate=1.0, out_median=150.0, max_out=512)
calib = ec.make_workload(rng, prompts[1000:], 1000, rate=1.0, out_median=150.0, max_out=512)
p = ec.EnvParams(device=ec.DeviceParams(), server=ec.ServerParams())
budgets = [0.1, 0.3, 0.5, 0.7, 0.9]
wait = disco.calibrate_wait(p, calib, budgets)  # w(l) per budget, from one vmapped grid
res = jax.vmap(ec.summarize)(disco.sweep(p, test, disco.POLICIES["disco_wait"], wait))
plt.plot(budgets, res["ttft_mean"], marker="o", label="mean")
plt.plot(budgets, res["ttft_p99"], marker="o", label="P99")
plt.xlabel("device budget (share of prompt tokens)"); plt.ylabel("TTFT (s)"); plt.legend()
plt.show()""",
  ),
  (
    "md",
    """## EchoLM: an in-context cache of past requests
`systems.context_cache` keeps (embedding, response, quality) rows, retrieves the top-k, picks
examples by utility under a token cap and evicts the least useful; a whole request stream is
one `lax.scan`, and a sweep over the cache size one vmap.""",
  ),
  (
    "code",
    """from jaxsys.systems import context_cache as cc

config = cc.CacheConfig(capacity=256, dim=64)
stream = cc.random_stream(np.random.default_rng(0), config, 2000, n_topics=32)
sizes = [16, 64, 256]
caches, outs = cc.sweep(config, sim.stack([cc.CacheParams(active=s) for s in sizes]),
                        cc.init(config, jnp.float64), stream)
for size, n in zip(sizes, np.asarray(outs.n_chosen).mean(axis=1)):
  print(f"cache of {size:4d} rows: {n:.2f} in-context examples per request")""",
  ),
]


if __name__ == "__main__":
  _notebook.write(CELLS, "colabs/serving.ipynb")

"""Device-server cooperative LLM serving (DiSCo, serving.md section 4), one request per lane.

Every request is independent here (the server's queueing is a drawn delay, not a shared queue),
so the whole workload is one `vmap` over requests of a fixed-shape per-request simulation and a
policy sweep is one more `vmap` over the policy's parameters:

  p = edge_cloud.EnvParams(device=edge_cloud.DeviceParams(), server=edge_cloud.ServerParams())
  wl = edge_cloud.make_workload(rng, prompt_len, out_median=150.0, max_out=768, rate=1.0)
  start_srv, start_dev = disco.wait_time(disco.WaitParams(0.2, 1e-3, 2.0), wl.prompt_len)
  out = edge_cloud.simulate(p, wl, start_srv, start_dev)     # Outputs, leading axis n
  edge_cloud.summarize(out)                                  # means and tails

Semantics (the plain-Python twin systems/edge_cloud_reference.py follows the same rules):

1. Endpoints [R constants]. Device: `ttft_dev(l) = a_d + l / prefill_dev`, every later token
   `1 / decode_dev`, `energy_per_token` J per processed token (prefill or decode, FLOP-linear).
   Server: `ttft_srv(l) = rtt + q + l / prefill_srv`, `q = q_median * exp(q_sigma * z_q)`;
   token k >= 1 after `tbt_median * exp(tbt_sigma * z_tok[k])`; prices `p_in`, `p_out` $/token.
2. Dispatch. A policy gives each request a start offset per endpoint (inf = never). The
   endpoint with the earlier offset starts (ties: both); the other starts only if no first
   token has come by its offset (so "start both" is offsets (0, 0), DiSCo's wait-time rule is
   (0, w(l))). TTFT = min over started endpoints of start + that endpoint's TTFT; the server
   wins a tie. The loser is cancelled at the first token and pays its whole prompt [R].
3. Stream. The winner generates every token; token k is generated at
   `gen[k] = gen[k-1] + tbt[k]`. The reader's display is a `lax.scan` over tokens:
   `disp[0] = gen[0]`, `disp[k] = max(gen[k], disp[k-1] + 1 / r_c)`. A stall is a display gap
   above `tbt_slo`; stall time sums `gap - tbt_slo` over stalls.
4. Token-level migration [2; decision and sizing R]. At the first token, decode moves to the
   other endpoint T when it is cheaper per output token and
   `(c_out_W - c_out_T) * rem_est > c_in_T * (l + 1)` (the re-prefill cost at that point;
   `rem_est` is the policy's length estimate, never the true length). The source keeps
   generating until the switch: the first token index s <= n - 2 after which at least
   `B(s) = ceil(buffer_scale * r_c * t_m(s))` generated tokens are still unread, with
   `t_m(s) = (l + s + 1) / prefill_T + rtt` (T re-prefills prompt + generated tokens; no KV
   transfer). The source stops at the switch, T's first token comes `t_m(s)` later, then T's
   own TBT. `buffer_scale = 1` is DiSCo's buffer, 0 switches right after the first token. The
   paper lets the source keep generating during T's prefill; we stop it at the switch so a
   switch frees the expensive endpoint at once and the buffer alone hides `t_m` [R]. With the
   buffer and `tbt_slo >= 1 / r_c` the switch gap is at most `1 / r_c` (tested).
5. Cost: `C = p_in * server prompt tokens + p_out * server output tokens + lam * energy`, the
   migration re-prefill charged to its target. Budget usage is the prompt tokens each
   endpoint was started with (`prompt_srv`, `prompt_dev`; migration excluded).

Times in outputs are relative to the request's arrival except `finish` (absolute).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

SERVER, DEVICE = 0, 1
# GPT-4o-mini list prices, USD per token: $0.15 / 1M input, $0.60 / 1M output tokens
# (https://openai.com/api/pricing/, model gpt-4o-mini, July 2024 release price).
GPT4O_MINI_P_IN = 0.15e-6
GPT4O_MINI_P_OUT = 0.60e-6
SMOLLM2_135M_PARAMS = 134_515_008


@flax.struct.dataclass
class DeviceParams:
  """The on-device model. Defaults: SmolLM2-135M measured on the laptop CPU (configs)."""

  a_d: float = 0.0  # s: fixed part of the device TTFT
  prefill_tps: float = 635.0  # prompt tokens/s at batch 1
  decode_tps: float = 46.0  # output tokens/s at batch 1
  energy_per_token: float = 0.33  # J per processed token [R: power / decode_tps, 15 W]


@flax.struct.dataclass
class ServerParams:
  """The cloud endpoint [R]: lognormal queueing and TBT, list prices of GPT-4o-mini."""

  rtt: float = 0.05  # s: network round trip, in the TTFT and in every migration
  q_median: float = 0.5  # s: median queueing + prefill delay
  q_sigma: float = 0.8  # lognormal sigma of that delay
  prefill_tps: float = 5000.0  # prompt tokens/s: length part of TTFT, migration re-prefill
  tbt_median: float = 0.012  # s between output tokens (median)
  tbt_sigma: float = 0.3  # lognormal sigma of the TBT
  p_in: float = GPT4O_MINI_P_IN  # $ per prompt token
  p_out: float = GPT4O_MINI_P_OUT  # $ per output token


@flax.struct.dataclass
class EnvParams:
  """Everything numeric of one run; a sweep vmaps over a stack of these."""

  device: DeviceParams = DeviceParams()
  server: ServerParams = ServerParams()
  lam: float = 1.8e-7  # $ per J of device energy (the exchange rate) [R]
  r_c: float = 4.5  # reader's tokens/s [2]
  tbt_slo: float = 0.25  # s: a display gap above this is a stall [R]
  migrate: bool = False  # token-level migration on/off
  buffer_scale: float = 1.0  # B = ceil(buffer_scale * r_c * t_m); 0: no buffer
  rem_est: float = 150.0  # tokens the policy expects after the first one [R]


@flax.struct.dataclass
class Workload:
  """Requests of one run, leading axis n; noise pre-drawn so every policy sees the same."""

  arrival: np.ndarray  # f64[n]: arrival time (s)
  prompt_len: np.ndarray  # i32[n]: prompt tokens, >= 1
  out_len: np.ndarray  # i32[n]: output tokens, in [1, max_out]
  z_q: np.ndarray  # f64[n]: standard normal draw of the server queueing delay
  z_tok: np.ndarray  # f64[n, max_out]: standard normal draws of the server TBT per token
  u: np.ndarray  # f64[n]: uniform draw for random-split policies

  @property
  def n(self) -> int:
    return int(self.prompt_len.shape[-1])

  @property
  def max_out(self) -> int:
    return int(self.z_tok.shape[-1])


@flax.struct.dataclass
class Outputs:
  """Per-request results (leading axis n)."""

  ttft: jnp.ndarray  # f64: first token - arrival (s)
  winner: jnp.ndarray  # i32: SERVER or DEVICE, the endpoint of the first token
  started_srv: jnp.ndarray  # bool: the server was started
  started_dev: jnp.ndarray  # bool: the device was started
  prompt_srv: jnp.ndarray  # i32: budget usage, prompt tokens started on the server
  prompt_dev: jnp.ndarray  # i32: budget usage, prompt tokens started on the device
  tokens_srv: jnp.ndarray  # i32: output tokens generated by the server
  tokens_dev: jnp.ndarray  # i32: output tokens generated by the device
  migrated: jnp.ndarray  # bool: decoding switched endpoints
  switch: jnp.ndarray  # i32: index of the last source token, -1 without migration
  t_m: jnp.ndarray  # f64: migration time (s), 0 without migration
  server_cost: jnp.ndarray  # f64: $ paid to the server
  energy: jnp.ndarray  # f64: device energy (J)
  cost: jnp.ndarray  # f64: server_cost + lam * energy ($)
  stalls: jnp.ndarray  # i32: display gaps above tbt_slo
  stall_time: jnp.ndarray  # f64: sum of (gap - tbt_slo) over stalls (s)
  tbt_p99: jnp.ndarray  # f64: P99 of the display gaps (0 for one token)
  tbt_max: jnp.ndarray  # f64: largest display gap (0 for one token)
  delayed: jnp.ndarray  # i32: tokens displayed later than without migration
  finish: jnp.ndarray  # f64: absolute display time of the last token


@flax.struct.dataclass
class Streams:
  """Per-token arrays of `simulate(..., streams=True)`, shape [n, max_out], past out_len NaN/-1."""

  gen: jnp.ndarray  # f64: generation time relative to arrival
  disp: jnp.ndarray  # f64: display time relative to arrival
  endpoint: jnp.ndarray  # i32: SERVER / DEVICE that generated the token, -1 past the end


def server_ttft(srv: ServerParams, prompt_len, z_q):
  """f64: server TTFT from its start, `rtt + q_median * exp(q_sigma * z_q) + l / prefill`."""
  q = srv.q_median * jnp.exp(srv.q_sigma * z_q)
  return srv.rtt + q + prompt_len / srv.prefill_tps


def device_ttft(dev: DeviceParams, prompt_len):
  """f64: device TTFT from its start, `a_d + l / prefill`."""
  return dev.a_d + prompt_len / dev.prefill_tps


def _request(p: EnvParams, plen, n, z_q, z_tok, s_srv, s_dev):
  """One request; scalars except z_tok f64[G]. Returns (Outputs fields, Streams fields)."""
  g_max = z_tok.shape[0]
  dev, srv = p.device, p.server
  lf = plen.astype(jnp.float64)
  ttft_e = jnp.stack([server_ttft(srv, lf, z_q), device_ttft(dev, lf)])
  start = jnp.stack([s_srv, s_dev]).astype(jnp.float64)
  # The earlier endpoint starts; the later one only while no first token has come.
  first = jnp.where(start[DEVICE] < start[SERVER], DEVICE, SERVER)
  other = 1 - first
  first_ok = jnp.isfinite(start[first])
  other_ok = jnp.isfinite(start[other]) & (start[other] < start[first] + ttft_e[first])
  started = jnp.zeros(2, bool).at[first].set(first_ok).at[other].set(other_ok)
  arrive = jnp.where(started, start + ttft_e, jnp.inf)
  winner = jnp.where(arrive[DEVICE] < arrive[SERVER], DEVICE, SERVER)
  ttft = arrive[winner]
  target = 1 - winner

  k = jnp.arange(g_max)
  valid = k < n
  tbt_e = jnp.stack(
    [
      srv.tbt_median * jnp.exp(srv.tbt_sigma * z_tok),
      jnp.full((g_max,), 1.0 / dev.decode_tps),
    ]
  )
  tbt_w = tbt_e[winner]
  gen0 = ttft + jnp.cumsum(jnp.where(k >= 1, tbt_w, 0.0))
  inv_rc = 1.0 / p.r_c
  disp0 = _display(gen0, inv_rc)

  # Migration: decision at the first token, switch once the buffer covers t_m.
  out_price = jnp.stack([srv.p_out, p.lam * dev.energy_per_token])
  in_price = jnp.stack([srv.p_in, p.lam * dev.energy_per_token])
  prefill_t = jnp.stack([srv.prefill_tps, dev.prefill_tps])[target]
  gain = (out_price[winner] - out_price[target]) * p.rem_est
  want = p.migrate & (gain > in_price[target] * (lf + 1.0))
  t_m_all = (lf + k + 1.0) / prefill_t + srv.rtt
  need = jnp.ceil(p.buffer_scale * p.r_c * t_m_all)
  shown = jnp.minimum(jnp.searchsorted(jnp.where(valid, disp0, jnp.inf), gen0, side="right"), k + 1)
  unread = k + 1 - shown
  ok = (unread >= need) & (k <= n - 2)
  can = jnp.any(ok)
  migrated = want & can
  s = jnp.where(migrated, jnp.argmax(ok), -1)
  t_m = jnp.where(migrated, t_m_all[jnp.maximum(s, 0)], 0.0)
  step = jnp.where(k <= s, tbt_w, jnp.where(k == s + 1, t_m, tbt_e[target]))
  step = jnp.where(migrated, step, tbt_w)
  gen = ttft + jnp.cumsum(jnp.where(k >= 1, step, 0.0))
  disp = _display(gen, inv_rc)

  endpoint = jnp.where(migrated & (k > s), target, winner)
  endpoint = jnp.where(valid, endpoint, -1)
  tokens_srv = jnp.sum(endpoint == SERVER).astype(jnp.int32)
  tokens_dev = jnp.sum(endpoint == DEVICE).astype(jnp.int32)
  started_prompt = jnp.where(started, plen, 0).astype(jnp.int32)
  mig_tokens = jnp.where(migrated, plen + s + 1, 0)
  mig_srv = jnp.where(target == SERVER, mig_tokens, 0)
  mig_dev = jnp.where(target == DEVICE, mig_tokens, 0)
  server_cost = srv.p_in * (started_prompt[SERVER] + mig_srv) + srv.p_out * tokens_srv
  energy = dev.energy_per_token * (started_prompt[DEVICE] + mig_dev + tokens_dev)
  cost = server_cost + p.lam * energy

  gap_ok = valid & (k >= 1)
  gaps = jnp.where(gap_ok, disp - jnp.roll(disp, 1), jnp.nan)
  stall = gap_ok & (gaps > p.tbt_slo)
  stall_time = jnp.sum(jnp.where(stall, gaps - p.tbt_slo, 0.0))
  tbt_p99 = jnp.where(n > 1, jnp.nanquantile(gaps, 0.99), 0.0)
  tbt_max = jnp.where(n > 1, jnp.nanmax(gaps), 0.0)
  delayed = jnp.sum(valid & (disp > disp0 + 1e-12)).astype(jnp.int32)
  last = disp[jnp.maximum(n - 1, 0)]
  out = dict(
    ttft=ttft,
    winner=winner.astype(jnp.int32),
    started_srv=started[SERVER],
    started_dev=started[DEVICE],
    prompt_srv=started_prompt[SERVER],
    prompt_dev=started_prompt[DEVICE],
    tokens_srv=tokens_srv,
    tokens_dev=tokens_dev,
    migrated=migrated,
    switch=s.astype(jnp.int32),
    t_m=t_m,
    server_cost=server_cost,
    energy=energy,
    cost=cost,
    stalls=jnp.sum(stall).astype(jnp.int32),
    stall_time=stall_time,
    tbt_p99=tbt_p99,
    tbt_max=tbt_max,
    delayed=delayed,
    finish=last,
  )
  streams = dict(
    gen=jnp.where(valid, gen, jnp.nan),
    disp=jnp.where(valid, disp, jnp.nan),
    endpoint=endpoint.astype(jnp.int32),
  )
  return out, streams


def _display(gen, inv_rc):
  """f64[G]: the reader's display times, a scan `max(gen[k], disp[k-1] + 1/r_c)`."""

  def body(prev, g):
    d = jnp.maximum(g, prev + inv_rc)
    return d, d

  _, disp = jax.lax.scan(body, -jnp.inf, gen)
  return disp


def simulate(p: EnvParams, wl: Workload, start_srv, start_dev, streams: bool = False):
  """Runs every request of `wl` under the dispatch offsets `start_srv`, `start_dev` (f64[n],
  inf = never). Returns `Outputs` (and `Streams` when `streams`). Jittable; vmappable over `p`
  and the offsets (call it under `jax.vmap` for a sweep)."""
  outs, strs = jax.vmap(_request, in_axes=(None, 0, 0, 0, 0, 0, 0))(
    p,
    jnp.asarray(wl.prompt_len),
    jnp.asarray(wl.out_len),
    jnp.asarray(wl.z_q),
    jnp.asarray(wl.z_tok),
    jnp.asarray(start_srv, jnp.float64),
    jnp.asarray(start_dev, jnp.float64),
  )
  outs["finish"] = outs["finish"] + jnp.asarray(wl.arrival)
  out = Outputs(**outs)
  return (out, Streams(**strs)) if streams else out


simulate_jit = jax.jit(simulate, static_argnames=("streams",))


def summarize(out: Outputs, streams: Streams | None = None) -> dict:
  """Aggregates (jittable, vmappable): mean/P99 TTFT, cost, stalls, migration, budget usage.

  `tbt_p99` is the P99 of all display gaps when `streams` is given, else the mean over requests
  of their own P99.
  """
  n = out.ttft.shape[-1]
  res = dict(
    ttft_mean=jnp.mean(out.ttft),
    ttft_p99=jnp.quantile(out.ttft, 0.99),
    cost_mean=jnp.mean(out.cost),
    server_cost_mean=jnp.mean(out.server_cost),
    energy_mean=jnp.mean(out.energy),
    stalls_per_request=jnp.sum(out.stalls) / n,
    stall_time_per_request=jnp.sum(out.stall_time) / n,
    migrated_share=jnp.mean(out.migrated.astype(jnp.float64)),
    delayed_mean=jnp.mean(out.delayed.astype(jnp.float64)),
    device_share=jnp.mean((out.winner == DEVICE).astype(jnp.float64)),
    tokens_srv_share=jnp.sum(out.tokens_srv) / jnp.sum(out.tokens_srv + out.tokens_dev),
    prompt_srv_total=jnp.sum(out.prompt_srv),
    prompt_dev_total=jnp.sum(out.prompt_dev),
    tbt_p99=jnp.mean(out.tbt_p99),
  )
  if streams is not None:
    gaps = streams.disp - jnp.roll(streams.disp, 1, axis=-1)
    gaps = jnp.where(jnp.arange(gaps.shape[-1]) >= 1, gaps, jnp.nan)
    res["tbt_p99"] = jnp.nanquantile(gaps, 0.99)
  return res


def check_workload(wl: Workload) -> Workload:
  """Host-side validation: shapes agree, lengths in range, draws finite. Returns `wl`."""
  n = np.asarray(wl.prompt_len).shape
  if len(n) != 1:
    raise ValueError(f"prompt_len must be 1-D, got shape {n}")
  for name in ("arrival", "out_len", "z_q", "u"):
    if np.asarray(getattr(wl, name)).shape != n:
      raise ValueError(f"{name} must have shape {n}, got {np.asarray(getattr(wl, name)).shape}")
  z_tok = np.asarray(wl.z_tok)
  if z_tok.ndim != 2 or z_tok.shape[0] != n[0]:
    raise ValueError(f"z_tok must have shape ({n[0]}, max_out), got {z_tok.shape}")
  pl, ol = np.asarray(wl.prompt_len), np.asarray(wl.out_len)
  if pl.size and pl.min() < 1:
    raise ValueError(f"prompt_len must be >= 1, got min {pl.min()}")
  if ol.size and (ol.min() < 1 or ol.max() > z_tok.shape[1]):
    raise ValueError(
      f"out_len must lie in [1, max_out={z_tok.shape[1]}], got [{ol.min()}, {ol.max()}]"
    )
  for name in ("arrival", "z_q", "u"):
    if not np.all(np.isfinite(np.asarray(getattr(wl, name)))):
      raise ValueError(f"{name} must be finite")
  return wl


def check_params(p: EnvParams) -> EnvParams:
  """Host-side validation of one (unstacked) EnvParams. Returns `p`."""
  positive = {
    "device.prefill_tps": p.device.prefill_tps,
    "device.decode_tps": p.device.decode_tps,
    "server.prefill_tps": p.server.prefill_tps,
    "server.q_median": p.server.q_median,
    "server.tbt_median": p.server.tbt_median,
    "r_c": p.r_c,
    "tbt_slo": p.tbt_slo,
  }
  for name, v in positive.items():
    if not np.all(np.asarray(v) > 0):
      raise ValueError(f"EnvParams.{name} must be > 0, got {v!r}")
  nonneg = {
    "device.a_d": p.device.a_d,
    "device.energy_per_token": p.device.energy_per_token,
    "server.rtt": p.server.rtt,
    "server.q_sigma": p.server.q_sigma,
    "server.tbt_sigma": p.server.tbt_sigma,
    "server.p_in": p.server.p_in,
    "server.p_out": p.server.p_out,
    "lam": p.lam,
    "buffer_scale": p.buffer_scale,
    "rem_est": p.rem_est,
  }
  for name, v in nonneg.items():
    if not np.all(np.asarray(v) >= 0):
      raise ValueError(f"EnvParams.{name} must be >= 0, got {v!r}")
  return p


def make_workload(
  rng: np.random.Generator,
  prompt_pool,
  n: int,
  *,
  rate: float = 1.0,
  out_median: float = 150.0,
  out_sigma: float = 0.6,
  max_out: int = 768,
) -> Workload:
  """n requests: prompt lengths resampled from `prompt_pool` (token counts of real prompts),
  lognormal output lengths (median, sigma, clipped to [1, max_out]) [R], Poisson arrivals."""
  pool = np.asarray(prompt_pool, np.int64)
  if pool.ndim != 1 or pool.size == 0 or pool.min() < 1:
    raise ValueError("prompt_pool must be a non-empty 1-D array of lengths >= 1")
  if n < 1 or rate <= 0 or out_median <= 0 or out_sigma < 0 or max_out < 1:
    raise ValueError(
      f"need n >= 1, rate > 0, out_median > 0, out_sigma >= 0, max_out >= 1; got n={n}, "
      f"rate={rate}, out_median={out_median}, out_sigma={out_sigma}, max_out={max_out}"
    )
  prompt = rng.choice(pool, size=n).astype(np.int32)
  out = np.rint(out_median * np.exp(out_sigma * rng.standard_normal(n)))
  out = np.clip(out, 1, max_out).astype(np.int32)
  arrival = np.cumsum(rng.exponential(1.0 / rate, n))
  return check_workload(
    Workload(
      arrival=arrival,
      prompt_len=prompt,
      out_len=out,
      z_q=rng.standard_normal(n),
      z_tok=rng.standard_normal((n, max_out)),
      u=rng.random(n),
    )
  )

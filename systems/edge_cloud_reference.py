"""Plain-Python twin of systems/edge_cloud.py: the same rules, one request at a time, loops only.

  out = edge_cloud_reference.simulate(p, wl, start_srv, start_dev)   # dict of numpy arrays

Written from the rules in edge_cloud's module docstring, not from its array code: the
buffer is tracked with a read pointer, streams are built token by token. It is the speed
baseline and the oracle of tests/systems/test_edge_cloud.py.
"""

from __future__ import annotations

import math

import numpy as np

SERVER, DEVICE = 0, 1
FIELDS = (
  "ttft",
  "winner",
  "started_srv",
  "started_dev",
  "prompt_srv",
  "prompt_dev",
  "tokens_srv",
  "tokens_dev",
  "migrated",
  "switch",
  "t_m",
  "server_cost",
  "energy",
  "cost",
  "stalls",
  "stall_time",
  "tbt_p99",
  "tbt_max",
  "delayed",
  "finish",
)


def _f(x) -> float:
  return float(np.asarray(x))


def _reader(gen, inv_rc):
  shown = []
  for g in gen:
    shown.append(g if not shown else max(g, shown[-1] + inv_rc))
  return shown


def one_request(p, plen, n, z_q, z_tok, s_srv, s_dev, arrival=0.0, with_streams=False):
  """Simulates one request; returns a dict with the `Outputs` fields (and the streams)."""
  dev, srv = p.device, p.server
  rtt = _f(srv.rtt)
  ttft_srv = rtt + _f(srv.q_median) * math.exp(_f(srv.q_sigma) * z_q) + plen / _f(srv.prefill_tps)
  ttft_dev = _f(dev.a_d) + plen / _f(dev.prefill_tps)
  ttft_of = {SERVER: ttft_srv, DEVICE: ttft_dev}
  begin = {SERVER: float(s_srv), DEVICE: float(s_dev)}

  # Who starts: the earlier offset unconditionally, the later one only before a first token.
  if begin[DEVICE] < begin[SERVER]:
    early, late = DEVICE, SERVER
  else:
    early, late = SERVER, DEVICE
  running = set()
  if math.isfinite(begin[early]):
    running.add(early)
  if math.isfinite(begin[late]) and begin[late] < begin[early] + ttft_of[early]:
    running.add(late)
  best, winner = math.inf, SERVER
  for e in (SERVER, DEVICE):  # server first: it keeps a tie
    if e in running and begin[e] + ttft_of[e] < best:
      best, winner = begin[e] + ttft_of[e], e
  other = DEVICE if winner == SERVER else SERVER

  def tbt(e, k):
    if e == SERVER:
      return _f(srv.tbt_median) * math.exp(_f(srv.tbt_sigma) * z_tok[k])
    return 1.0 / _f(dev.decode_tps)

  gen_plain = [best]
  for k in range(1, n):
    gen_plain.append(gen_plain[-1] + tbt(winner, k))
  inv_rc = 1.0 / _f(p.r_c)
  shown_plain = _reader(gen_plain, inv_rc)

  per_in = {SERVER: _f(srv.p_in), DEVICE: _f(p.lam) * _f(dev.energy_per_token)}
  per_out = {SERVER: _f(srv.p_out), DEVICE: _f(p.lam) * _f(dev.energy_per_token)}
  speed = {SERVER: _f(srv.prefill_tps), DEVICE: _f(dev.prefill_tps)}
  wants = bool(np.asarray(p.migrate)) and (per_out[winner] - per_out[other]) * _f(
    p.rem_est
  ) > per_in[other] * (plen + 1.0)
  switch, t_m = -1, 0.0
  if wants:
    read = 0  # tokens displayed by the current generation time (a moving pointer)
    for s in range(0, n - 1):
      now = gen_plain[s]
      while read <= s and shown_plain[read] <= now:
        read += 1
      cand = (plen + s + 1) / speed[other] + rtt
      if s + 1 - read >= math.ceil(_f(p.buffer_scale) * _f(p.r_c) * cand):
        switch, t_m = s, cand
        break
  moved = switch >= 0

  gen, who = [], []
  for k in range(n):
    if k == 0:
      gen.append(best)
      who.append(winner)
    elif not moved or k <= switch:
      gen.append(gen[-1] + tbt(winner, k))
      who.append(winner)
    elif k == switch + 1:
      gen.append(gen[-1] + t_m)
      who.append(other)
    else:
      gen.append(gen[-1] + tbt(other, k))
      who.append(other)
  shown = _reader(gen, inv_rc)

  tokens = {SERVER: who.count(SERVER), DEVICE: who.count(DEVICE)}
  prompt = {e: (plen if e in running else 0) for e in (SERVER, DEVICE)}
  extra = {SERVER: 0, DEVICE: 0}
  if moved:
    extra[other] = plen + switch + 1
  server_cost = _f(srv.p_in) * (prompt[SERVER] + extra[SERVER]) + _f(srv.p_out) * tokens[SERVER]
  energy = _f(dev.energy_per_token) * (prompt[DEVICE] + extra[DEVICE] + tokens[DEVICE])
  gaps = [shown[k] - shown[k - 1] for k in range(1, n)]
  slo = _f(p.tbt_slo)
  stall_gaps = [g for g in gaps if g > slo]
  res = dict(
    ttft=best,
    winner=winner,
    started_srv=SERVER in running,
    started_dev=DEVICE in running,
    prompt_srv=prompt[SERVER],
    prompt_dev=prompt[DEVICE],
    tokens_srv=tokens[SERVER],
    tokens_dev=tokens[DEVICE],
    migrated=moved,
    switch=switch,
    t_m=t_m,
    server_cost=server_cost,
    energy=energy,
    cost=server_cost + _f(p.lam) * energy,
    stalls=len(stall_gaps),
    stall_time=sum(g - slo for g in stall_gaps),
    tbt_p99=float(np.percentile(gaps, 99)) if gaps else 0.0,
    tbt_max=max(gaps) if gaps else 0.0,
    delayed=sum(1 for a, b in zip(shown, shown_plain, strict=True) if a > b + 1e-12),
    finish=arrival + shown[-1],
  )
  if with_streams:
    res["streams"] = (gen, shown, who)
  return res


def simulate(p, wl, start_srv, start_dev, with_streams=False):
  """Every request of `wl` in turn; a dict field -> numpy array (streams as lists when asked)."""
  rows = [
    one_request(
      p,
      int(wl.prompt_len[i]),
      int(wl.out_len[i]),
      float(wl.z_q[i]),
      np.asarray(wl.z_tok[i]).tolist(),
      float(start_srv[i]),
      float(start_dev[i]),
      float(wl.arrival[i]),
      with_streams,
    )
    for i in range(len(wl.prompt_len))
  ]
  out = {f: np.array([r[f] for r in rows]) for f in FIELDS}
  if with_streams:
    out["streams"] = [r["streams"] for r in rows]
  return out

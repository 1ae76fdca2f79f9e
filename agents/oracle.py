"""Hindsight oracles for DynoSim-v0: what a controller that knew the load could reach.

Both are evaluation procedures, not policies (they replay each episode several times with
full knowledge of its future); they run on exactly the episodes ``dynosim evaluate`` uses
(seeded held-out episodes or pinned trace windows) and report the same metrics.

* ``oracle:static`` -- the best static count per episode in hindsight: every count N in
  ``[min_endpoint, max_workers]`` replays the episode with N workers from the start
  (``initial_workers = N``) and never changes; the oracle keeps the cheapest N whose
  episode SLA attainment reaches ``reward.sla_target`` (if none does, the largest N),
  found by bisection (attainment grows with N).
* ``oracle:schedule`` -- an offline schedule over the known load, the upper bound: the
  episode is cut into segments of ``segment_s`` (default 120 s). Segment by segment, in
  order, it picks the smallest worker count whose segment attainment (requests decided
  in that segment) reaches the target (the largest if none does; bisection), replaying
  from the episode start with the counts chosen so far. Scale-ups are issued ``startup_time_s`` ahead of their segment (so new
  workers are serving when the segment starts, paid for while starting), scale-downs at
  the segment start. Greedy, not a global optimum: a lower bound on what hindsight can
  reach, reported as such.
"""
from __future__ import annotations

import math
from typing import Any

from sim.errors import InputError

from .evaluate import (Evaluation, PolicySpec, episode_plan, make_eval_env, resolved_reward,
                       run_episode, summarise, trace_workload)

ORACLES = ("oracle:static", "oracle:schedule")


class SchedulePolicy:
    """Provision ``targets[step]`` workers at each step (within the action's step limit)."""

    def __init__(self, env, targets: list[int]) -> None:
        self.env, self.targets = env.unwrapped, targets

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        k = min(self.env._steps, len(self.targets) - 1)
        return self.env.target_action(self.targets[k]), state


def _segment_targets(counts: list[int], seg_steps: int, lead_steps: int,
                     steps: int) -> list[int]:
    """Per-step targets: segment j's count, raised early (``lead_steps`` before a segment
    whose count is higher)."""
    out = []
    for t in range(steps):
        j = min(t // seg_steps, len(counts) - 1)
        n = counts[j]
        ahead = (t + lead_steps) // seg_steps
        if ahead < len(counts) and ahead != j:
            n = max(n, counts[ahead])
        out.append(n)
    return out


def _episode_sla(res: dict) -> float:
    s = res["summary"]
    return s["requests_met"] / s["requests_decided"] if s["requests_decided"] else 1.0


def smallest_meeting(lo: int, hi: int, target: float, sla_of) -> int:
    """Smallest count in ``[lo, hi]`` whose attainment ``sla_of(n)`` reaches ``target``, by
    bisection (attainment grows with the worker count); ``hi`` if none does."""
    if sla_of(hi) < target:
        return hi
    while lo < hi:
        mid = (lo + hi) // 2
        if sla_of(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def best_static(make_env, opts: dict, seed: int, lo: int, hi: int, target: float) -> dict:
    """The cheapest static count reaching ``target`` over the episode (module doc)."""
    runs: dict[int, dict] = {}

    def sla_of(n: int) -> float:
        if n not in runs:
            env = make_env({"env.initial_workers": n})
            runs[n] = run_episode(env, SchedulePolicy(env, [n]), opts, seed, keep_trace=True)
            env.close()
        return _episode_sla(runs[n])

    n = smallest_meeting(lo, hi, target, sla_of)
    sla_of(n)
    return dict(runs[n], workers=n)


def best_schedule(env, opts: dict, seed: int, lo: int, hi: int, target: float,
                  segment_s: float, interval_s: float, steps: int) -> dict:
    """The greedy hindsight schedule (module doc)."""
    seg = max(1, int(round(segment_s / interval_s)))
    n_seg = math.ceil(steps / seg)
    u = env.unwrapped
    counts: list[int] = []

    def segment_sla(j: int, n: int) -> float:
        env.reset(seed=seed, options=opts)
        lead = math.ceil(u.sim.cluster_cfg.startup_time_s / interval_s)
        targets = _segment_targets(counts + [n], seg, lead, min(steps, (j + 1) * seg))
        met = dec = 0
        for t, want in enumerate(targets):
            _, _, _, trunc, info = env.step(u.target_action(want))
            if t >= j * seg:
                met += info["requests_met"]
                dec += info["requests_decided"]
            if trunc:
                break
        return met / dec if dec else 1.0

    for j in range(n_seg):
        counts.append(smallest_meeting(lo, hi, target, lambda n: segment_sla(j, n)))
    env.reset(seed=seed, options=opts)
    lead = math.ceil(u.sim.cluster_cfg.startup_time_s / interval_s)
    res = run_episode(env, SchedulePolicy(env, _segment_targets(counts, seg, lead, steps)),
                      opts, seed, keep_trace=True)
    res["segment_counts"] = counts
    return res


def evaluate_oracle(spec: str, *, config: Any = None, episodes: int = 5, seed: int = 0,
                    split: str = "eval", overrides: dict[str, Any] | None = None,
                    trace: str | None = None, window_s: float | None = None,
                    windows: int | None = None, segment_s: float = 120.0) -> Evaluation:
    """Score ``oracle:static`` or ``oracle:schedule`` (module doc) on the same episodes as
    :func:`agents.evaluate.evaluate`."""
    if spec not in ORACLES:
        raise InputError(f"unknown oracle {spec!r}; expected one of {', '.join(ORACLES)}",
                         field="--policy")
    if episodes < 1:
        raise InputError(f"must be >= 1, got {episodes}", field="--episodes")
    pol = PolicySpec(spec, "oracle", "DynoSim-v0")
    over = dict(overrides or {})
    env, cfg, runs, plan = episode_plan(pol, "DynoSim-v0", config, over, trace, window_s,
                                        windows, episodes, seed, split)
    steps = cfg.env.episode_steps
    if trace is not None:
        over.update({"env.episode_steps": steps, "workload": trace_workload(trace)})
    lo, hi = cfg.env.min_endpoint, cfg.max_workers
    target = cfg.env.reward.sla_target
    u = env.unwrapped

    def make_env(extra: dict[str, Any]):
        e, _ = make_eval_env(pol, "DynoSim-v0", config, {**over, **extra})
        return e

    results = []
    for opts, s in runs:
        if spec == "oracle:static":
            res = best_static(make_env, opts, s, lo, hi, target)
        else:
            res = best_schedule(env, opts, s, lo, hi, target, segment_s, cfg.env.interval_s,
                                steps)
        results.append(res)
    reward_cfg = resolved_reward(cfg, u)
    env.close()
    ev = summarise(spec, results, cfg, reward_cfg, {}, dict(plan, sla_target=target,
                                                            segment_s=segment_s))
    for e, r in zip(ev.per_episode, results):
        e["oracle_workers"] = r.get("workers", r.get("segment_counts"))
    return ev

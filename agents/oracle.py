"""Hindsight oracles for DynoSim-v0: what a controller that knew the load could reach.

Both are evaluation procedures, not policies (they replay each episode several times with
full knowledge of its future); they run on exactly the episodes ``dynosim evaluate`` uses
(seeded held-out episodes or pinned trace windows) and report the same metrics.

* ``oracle:static`` -- the best static count per episode in hindsight: every count N in
  ``[min_endpoint, max_workers]`` replays the episode with N workers from the start
  (``initial_workers = N``) and never changes; the oracle keeps the cheapest N whose
  episode SLA attainment reaches ``reward.sla_target`` (if none does, the smallest N
  within half a point of the largest N's), found by bisection (attainment grows with N).
* ``oracle:schedule`` -- an offline schedule over the known load, the upper bound: the
  episode is cut into segments of ``segment_s`` (default 120 s). Segment by segment, in
  order, it picks the smallest worker count whose attainment over the requests that
  *arrive* in the segment (followed for 60 s more at the same count; unfinished = missed)
  reaches the target (if none does: within half a point of the largest count's;
  bisection), replaying from the episode start with the counts chosen so far. Scale-ups are issued ``startup_time_s`` ahead of their segment (so new
  workers are serving when the segment starts, paid for while starting), scale-downs at
  the segment start. Greedy, not a global optimum: a lower bound on what hindsight can
  reach, reported as such.
"""
from __future__ import annotations

import math
import sys
import time
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


class _Progress:
    """An oracle's progress on stderr (none when ``quiet``): a tqdm bar of finished units
    (episodes for ``oracle:static``, segments for ``oracle:schedule``) on a terminal, else
    one line at every tenth of them, so a log shows the run is alive. Each line gives the
    units done, the episode replays run so far and the elapsed wall time."""

    def __init__(self, desc: str, total: int, unit: str, quiet: bool) -> None:
        self.desc, self.total, self.unit, self.quiet = desc, total, unit, quiet
        self.done = self.replays = 0
        self.every = max(1, total // 10)
        self.t0 = time.perf_counter()
        self.bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
                            dynamic_ncols=True, leave=False)

    def replay(self) -> None:
        self.replays += 1
        if self.bar is not None:
            self.bar.set_postfix(replays=self.replays)

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif not self.quiet and (self.done % self.every == 0 or self.done == self.total):
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}s, {self.replays} "
                  f"replays, {time.perf_counter() - self.t0:,.0f} s", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _segment_targets(counts: list[int], seg_steps: int, lead_steps: int,
                     steps: int) -> list[int]:
    """Per-step targets: segment j's count, raised early for every later segment that
    starts within ``lead_steps`` (so its workers have started by then)."""
    out = []
    for t in range(steps):
        j = min(t // seg_steps, len(counts) - 1)
        last = min((t + lead_steps) // seg_steps, len(counts) - 1)
        out.append(max(counts[j:last + 1]))
    return out


def _episode_sla(res: dict) -> float:
    s = res["summary"]
    return s["requests_met"] / s["requests_decided"] if s["requests_decided"] else 1.0


#: When no count reaches the target, aim this close to what the largest count reaches.
SLACK = 0.005


def smallest_meeting(lo: int, hi: int, target: float, sla_of) -> int:
    """Smallest count in ``[lo, hi]`` whose attainment ``sla_of(n)`` reaches ``target``, by
    bisection (attainment grows with the worker count); if even ``hi`` misses it, the
    smallest count within :data:`SLACK` of what ``hi`` reaches (more workers would not
    help)."""
    best = sla_of(hi)
    if best < target:
        target = best - SLACK
    while lo < hi:
        mid = (lo + hi) // 2
        if sla_of(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def best_static(make_env, opts: dict, seed: int, lo: int, hi: int, target: float,
                progress: _Progress | None = None) -> dict:
    """The cheapest static count reaching ``target`` over the episode (module doc)."""
    runs: dict[int, dict] = {}

    def sla_of(n: int) -> float:
        if n not in runs:
            if progress is not None:
                progress.replay()
            env = make_env({"env.initial_workers": n})
            runs[n] = run_episode(env, SchedulePolicy(env, [n]), opts, seed, keep_trace=True)
            env.close()
        return _episode_sla(runs[n])

    n = smallest_meeting(lo, hi, target, sla_of)
    sla_of(n)
    return dict(runs[n], workers=n)


def arrivals_outcome(sim, t0_ms: float, t1_ms: float, ttft_sla: float, itl_sla: float
                     ) -> tuple[int, int]:
    """(met, arrived) over the requests that arrived in ``[t0_ms, t1_ms)``: finished ones
    from the metrics columns (met = completed within both SLAs), plus those still in the
    engines (not met)."""
    from sim.metrics import STATUS_COMPLETED
    c = sim.metrics.cols
    met = arrived = 0
    arr, st, ft, lt, out = (c["arrival_time_ms"], c["status"], c["first_token_ms"],
                            c["last_token_ms"], c["output_length"])
    for i in range(len(st)):
        if t0_ms <= arr[i] < t1_ms:
            arrived += 1
            if st[i] == STATUS_COMPLETED:
                o = out[i]
                tpot = (lt[i] - ft[i]) / (o - 1) if o > 1 else 0.0
                met += (ft[i] - arr[i]) <= ttft_sla and tpot <= itl_sla
    for w in sim.workers:
        eng = w.engine
        if eng is None:
            continue
        for lst in (eng.waiting, eng.running):
            for q in lst:
                arrived += t0_ms <= q.req.arrival_ms < t1_ms
    return met, arrived


def best_schedule(env, opts: dict, seed: int, lo: int, hi: int, target: float,
                  segment_s: float, interval_s: float, steps: int, drain_s: float = 60.0,
                  progress: _Progress | None = None) -> dict:
    """The greedy hindsight schedule (module doc)."""
    seg = max(1, int(round(segment_s / interval_s)))
    drain = int(math.ceil(drain_s / interval_s))
    n_seg = math.ceil(steps / seg)
    u = env.unwrapped
    sla = u.cfg.sim.sla
    counts: list[int] = []

    def segment_sla(j: int, n: int) -> float:
        if progress is not None:
            progress.replay()
        env.reset(seed=seed, options=opts)
        lead = math.ceil(u.sim.cluster_cfg.startup_time_s / interval_s)
        end = min(steps, (j + 1) * seg)
        targets = _segment_targets(counts + [n], seg, lead, end)
        targets += [n] * max(0, min(steps, end + drain) - end)    # let the segment finish
        for want in targets:
            env.step(u.target_action(want))
        met, arrived = arrivals_outcome(u.sim, j * seg * interval_s * 1000.0,
                                        end * interval_s * 1000.0, sla.ttft_ms, sla.itl_ms)
        return met / arrived if arrived else 1.0

    for j in range(n_seg):
        counts.append(smallest_meeting(lo, hi, target, lambda n: segment_sla(j, n)))
        if progress is not None:
            progress.advance()
    env.reset(seed=seed, options=opts)
    lead = math.ceil(u.sim.cluster_cfg.startup_time_s / interval_s)
    targets = _segment_targets(counts, seg, lead, steps)
    res = run_episode(env, SchedulePolicy(env, targets), opts, seed, keep_trace=True)
    res["segment_counts"] = counts
    res["targets"] = targets            # per step (a teacher for behaviour cloning)
    return res


def evaluate_oracle(spec: str, *, config: Any = None, episodes: int = 5, seed: int = 0,
                    split: str = "eval", overrides: dict[str, Any] | None = None,
                    trace: str | None = None, window_s: float | None = None,
                    windows: int | None = None, segment_s: float = 120.0,
                    quiet: bool = False) -> Evaluation:
    """Score ``oracle:static`` or ``oracle:schedule`` (module doc) on the same episodes as
    :func:`agents.evaluate.evaluate`. Progress goes to stderr unless ``quiet``
    (:class:`_Progress`)."""
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
    if spec == "oracle:static":
        progress = _Progress(spec, len(runs), "episode", quiet)
    else:
        seg = max(1, int(round(segment_s / cfg.env.interval_s)))
        progress = _Progress(spec, len(runs) * math.ceil(steps / seg), "segment", quiet)
    try:
        for opts, s in runs:
            if spec == "oracle:static":
                res = best_static(make_env, opts, s, lo, hi, target, progress)
                progress.advance()
            else:
                res = best_schedule(env, opts, s, lo, hi, target, segment_s,
                                    cfg.env.interval_s, steps, progress=progress)
            results.append(res)
    finally:
        progress.close()
    reward_cfg = resolved_reward(cfg, u)
    env.close()
    ev = summarise(spec, results, cfg, reward_cfg, {}, dict(plan, sla_target=target,
                                                            segment_s=segment_s))
    for e, r in zip(ev.per_episode, results):
        e["oracle_workers"] = r.get("workers", r.get("segment_counts"))
    return ev

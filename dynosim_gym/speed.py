"""Environment speed: steps per second of the dynosim_gym environments.

Each case runs whole episodes (reset included) with a fixed policy and reports steps per
wall-second and the simulated requests per step. Repeats are interleaved and the median
reported, because shared machines are noisy. Used by ``bench/env_speed.py`` and
``dynosim bench``.
"""
from __future__ import annotations

import gc
import statistics
import sys
import time
from typing import Callable

import gymnasium as gym
import numpy as np

from sim.wording import plural

import dynosim_gym  # noqa: F401  (registers the ids)

CASES = [
    # (label, env id, config, overrides, policy)
    ("DynoSim-v0 default (workload families, Qwen3-32B TP2 H200), hold", "DynoSim-v0", None, {},
     "hold"),
    ("DynoSim-v0 autoscale_legacy (v0.1 default), hold", "DynoSim-v0", "autoscale_legacy", {},
     "hold"),
    ("DynoSim-v0 default, random actions", "DynoSim-v0", None, {}, "random"),
    ("DynoSim-v0 default, load planner", "DynoSim-v0", None, {}, "load"),
    ("DynoSim-v0 autoscale_tiny, hold", "DynoSim-v0", "autoscale_tiny", {}, "hold"),
    ("DynoSim-v0 autoscale_mooncake (trace windows, KV router), hold", "DynoSim-v0",
     "autoscale_mooncake", {}, "hold"),
    ("DynoSimRouting-v0 default, round robin", "DynoSimRouting-v0", None, {}, "rr"),
    ("DynoSim-v0 default, hold, SB3 SubprocVecEnv x2 (env steps, both cores)", "DynoSim-v0",
     None, {}, "hold-vec2"),
]


def run_vec_case(env_id, config, overrides, episodes: int, seed: int, n_envs: int = 2) -> dict:
    """Env steps per second through SB3's SubprocVecEnv, one env per core (how training
    runs use both cores). Synchronous: each vector step waits for the slower env."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv
    kwargs = {"config": config, **overrides}
    venv = make_vec_env(env_id, n_envs=n_envs, seed=seed, vec_env_cls=SubprocVecEnv,
                        env_kwargs=kwargs)
    try:
        hold = np.array(venv.env_method("hold_action"))
        horizon = venv.get_attr("cfg")[0].env.episode_steps
        t0 = time.perf_counter()
        venv.reset()
        for _ in range(episodes * horizon):
            venv.step(hold)       # episodes auto-reset at the horizon
        wall = time.perf_counter() - t0
    finally:
        venv.close()
    return {"steps_per_s": n_envs * episodes * horizon / wall, "requests_per_step": float("nan"),
            "steps": n_envs * episodes * horizon}


MIN_STEPS = 150   # a case runs more episodes until it has at least this many steps


def run_case(env_id, config, overrides, policy, episodes: int, seed: int,
             min_steps: int = MIN_STEPS) -> dict:
    """Steps per wall-second over ``episodes`` episodes (seeds seed, seed+1, ...), or more
    until ``min_steps`` steps: a tiny scenario's few milliseconds would otherwise be at the
    mercy of one garbage collection or scheduler hiccup."""
    env = gym.make(env_id, config=config, **overrides).unwrapped
    rng = np.random.default_rng(seed)
    steps = 0
    requests = 0
    gc.collect()
    t0 = time.perf_counter()
    ep = 0
    while ep < episodes or steps < min_steps:
        env.reset(seed=seed + ep)
        done = False
        k = 0
        while not done:
            if policy == "hold":
                a = env.hold_action()
            elif policy == "random":
                a = int(rng.integers(env.action_space.n))
            elif policy == "load":
                a = env.planner_action("load")
            else:
                a = k % env.action_space.n
            k += 1
            _, _, term, trunc, _ = env.step(a)
            steps += 1
            done = term or trunc
        requests += env.sim.num_arrived
        ep += 1
    wall = time.perf_counter() - t0
    return {"steps_per_s": steps / wall, "requests_per_step": requests / steps,
            "steps": steps}


def measure(cases: list[tuple], repeats: int, episodes: int, seed: int = 0,
            log: Callable[[str], None] | None = None) -> dict[str, list[dict]]:
    """Run every case ``repeats`` times, interleaved; per case the list of runs."""
    results: dict[str, list[dict]] = {c[0]: [] for c in cases}
    for r in range(repeats):
        for label, env_id, config, overrides, policy in cases:
            if policy == "hold-vec2":
                res = run_vec_case(env_id, config, overrides, episodes, seed)
            else:
                res = run_case(env_id, config, overrides, policy, episodes, seed)
            results[label].append(res)
            if log is not None:
                log(f"[{r + 1}/{repeats}] {label}: {res['steps_per_s']:.0f} steps/s")
    return results


def summary(results: dict[str, list[dict]]) -> list[dict]:
    """Median, min and max steps/s and requests per step of each case."""
    out = []
    for label, runs in results.items():
        sps = [x["steps_per_s"] for x in runs]
        out.append({"case": label, "steps_per_s_median": statistics.median(sps),
                    "steps_per_s_min": min(sps), "steps_per_s_max": max(sps),
                    "requests_per_step": runs[0]["requests_per_step"], "repeats": len(runs)})
    return out


#: The yardstick row: v0.1's default, whose speed is known on several machines. Speeds on
#: a shared or slower machine are comparable as ratios to it, measured in the same run.
YARDSTICK = "autoscale_legacy"


def markdown(rows: list[dict], repeats: int, episodes: int) -> str:
    ref = next((r["steps_per_s_median"] for r in rows if YARDSTICK in r["case"]), None)
    lines = ["| environment, config, policy | steps/s (median) | min–max | requests/step |"
             + (f" × {YARDSTICK} |" if ref else ""),
             "|---|---:|---:|---:|" + ("---:|" if ref else "")]
    for r in rows:
        rps = r["requests_per_step"]
        line = (f"| {r['case']} | {r['steps_per_s_median']:,.0f} | {r['steps_per_s_min']:,.0f}–"
                f"{r['steps_per_s_max']:,.0f} | {'—' if rps != rps else f'{rps:.1f}'} |")
        if ref:
            line += f" {r['steps_per_s_median'] / ref:.2f} |"
        lines.append(line)
    note = (f"\n\n{plural(repeats, 'interleaved repeat')} x {plural(episodes, 'episode')} "
            "each (more for short "
            f"episodes: at least {MIN_STEPS} steps; reset included), one process unless "
            "stated, Python " + sys.version.split()[0] + ".\n")
    return "\n".join(lines) + note

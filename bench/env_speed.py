"""Environment speed: steps per second of the dynosim_gym environments (issue 5).

Each row runs whole episodes (reset included) with a fixed policy and reports steps per
wall-second, the simulated requests per step, and where the time goes (simulator vs the
environment's own observation/reward code). Repeats are interleaved and the median is
reported, because these machines are noisy.

    python bench/env_speed.py [--repeats 3] [--episodes 4] [--out bench/results/env_speed.md]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gymnasium as gym  # noqa: E402

import dynosim_gym  # noqa: E402,F401

CASES = [
    # (label, env id, config, overrides, policy)
    ("DynoSim-v0 default (synthetic, Qwen3-32B TP2 H200), hold", "DynoSim-v0", None, {}, "hold"),
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
    import numpy as np
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


def run_case(env_id, config, overrides, policy, episodes: int, seed: int) -> dict:
    env = gym.make(env_id, config=config, **overrides).unwrapped
    rng = __import__("numpy").random.default_rng(seed)
    steps = 0
    requests = 0
    t0 = time.perf_counter()
    for ep in range(episodes):
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
    wall = time.perf_counter() - t0
    return {"steps_per_s": steps / wall, "requests_per_step": requests / steps,
            "steps": steps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "env_speed.md"))
    ap.add_argument("--only", default=None, help="substring of the case labels to run")
    args = ap.parse_args(argv)
    cases = [c for c in CASES if args.only is None or args.only in c[0]]
    results: dict[str, list[dict]] = {c[0]: [] for c in cases}
    for r in range(args.repeats):
        for label, env_id, config, overrides, policy in cases:
            if policy == "hold-vec2":
                res = run_vec_case(env_id, config, overrides, args.episodes, args.seed)
            else:
                res = run_case(env_id, config, overrides, policy, args.episodes, args.seed)
            results[label].append(res)
            print(f"[{r + 1}/{args.repeats}] {label}: {res['steps_per_s']:.0f} steps/s",
                  file=sys.stderr)
    lines = ["| environment, config, policy | steps/s (median) | min–max | requests/step |",
             "|---|---:|---:|---:|"]
    for label, runs in results.items():
        sps = [x["steps_per_s"] for x in runs]
        lines.append(f"| {label} | {statistics.median(sps):,.0f} | {min(sps):,.0f}–"
                     f"{max(sps):,.0f} | {_fmt(runs[0]['requests_per_step'])} |")
    table = "\n".join(lines)
    note = (f"\n\n{args.repeats} interleaved repeats x {args.episodes} episodes each (reset "
            "included), one process unless stated, Python " + sys.version.split()[0] + ".\n")
    print(table)
    Path(args.out).write_text("# Environment speed\n\n" + table + note)
    return 0


def _fmt(x: float) -> str:
    return "—" if x != x else f"{x:.1f}"


if __name__ == "__main__":
    raise SystemExit(main())

"""Round 13's training-split measurements (issue 11; rules in this directory's rules.md).

Run from the repository root with the project's venv::

    # the seed-0 clone of a recipe (the policy before any PPO update), then stop
    python docs/benchmark/round13/probe.py clone RECIPE.yml OUT_DIR [--set KEY=VALUE ...]
    # clone + PPO (dynosim train), keeping OUT_DIR/clone.zip beside the run
    python docs/benchmark/round13/probe.py train RECIPE.yml OUT_DIR --timesteps N
    # a model on training episodes 200-203 (the recipe's env, --set on top), actions
    # sampled (torch seeded 0) or deterministic: one JSON object on stdout
    python docs/benchmark/round13/probe.py run MODEL.zip RECIPE.yml sample|det [--set ...]
    # the action distributions of models on the deterministic states of the first model
    python docs/benchmark/round13/probe.py dist RECIPE.yml CLONE.zip [MODEL.zip ...]

Only training-split episodes are read. Flaps per hour are the episodes' flaps over their
simulated hours (4 x 0.5 h).
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

EPISODES, FIRST = 4, 200


def _recipe_env(recipe: str, sets: list[str]) -> dict:
    from agents.algos import load_hyperparams
    from agents.cli import _set
    hp = load_hyperparams("ppo", "DynoSim-v0", recipe)
    return {**(hp.get("env_kwargs") or {}), **dict(_set(s) for s in sets)}


def _env(recipe: str, sets: list[str]):
    import gymnasium as gym

    import dynosim_gym  # noqa: F401
    return gym.make("DynoSim-v0", **_recipe_env(recipe, sets))


class _Stop(Exception):
    pass


def train(args, stop_after_clone: bool) -> None:
    from agents import router_train
    from agents.cli import _set
    from agents.train import train as sb3_train
    orig = router_train.behaviour_clone
    out = Path(args.out)

    @functools.wraps(orig)          # the recipe check reads its signature
    def keep_clone(model, *a, **kw):
        res = orig(model, *a, **kw)
        out.mkdir(parents=True, exist_ok=True)
        model.save(out / "clone.zip")
        print(f"probe: clone saved to {out / 'clone.zip'}", file=sys.stderr)
        if stop_after_clone:
            raise _Stop
        return res
    router_train.behaviour_clone = keep_clone
    t0 = time.perf_counter()
    try:
        sb3_train("ppo", hyperparams=args.recipe, out=out, seed=args.seed,
                  timesteps=args.timesteps, checkpoint_every=args.checkpoint_every,
                  overrides=dict(_set(s) for s in args.set))
    except _Stop:
        pass
    print(f"probe: wall {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def run(args) -> dict:
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    torch.manual_seed(0)
    torch.set_num_threads(1)
    env = _env(args.recipe, args.set)
    u = env.unwrapped
    model = PPO.load(args.model, device="cpu")
    det = args.how == "det"
    steps = above = below = req_below = nonzero = held = 0
    off_sum, hist = 0, {}
    met = decided = flaps = scaling = 0
    gpu = 0.0
    per_ep = []
    for s in range(FIRST, FIRST + EPISODES):
        obs, _ = env.reset(seed=s, options={"split": "train"})
        done = False
        while not done:
            a, _ = model.predict(obs, deterministic=det)
            obs, _, term, trunc, info = env.step(int(a))
            done = term or trunc
            b, t = info["base_workers"], info["target_workers"]
            off = info.get("applied_offset", info["requested_workers"] - b)
            steps += 1
            above += t > b
            below += t < b
            req_below += info["requested_workers"] < b
            nonzero += off != 0
            held += bool(info.get("offset_held", False))
            off_sum += off
            hist[off] = hist.get(off, 0) + 1
        sm = info["episode_summary"]
        met += sm["requests_met"]
        decided += sm["requests_decided"]
        gpu += sm["gpu_hours"]
        flaps += sm["flaps"]
        scaling += sm["scaling_events"]
        per_ep.append(sm["sla_attainment"])
    hours = EPISODES * u.cfg.env.episode_steps * u.cfg.env.interval_s / 3600.0
    return {"model": args.model, "deterministic": det,
            "offset_dwell_s": u.cfg.env.action.offset_dwell_s, "steps": steps,
            "sla_attainment": met / decided, "mean_episode_sla_attainment":
            float(np.mean(per_ep)), "gpu_hours_per_episode": gpu / EPISODES,
            "flaps_per_hour": flaps / hours, "scaling_events_per_episode": scaling / EPISODES,
            "share_steps_nonzero_offset": nonzero / steps, "share_steps_held": held / steps,
            "share_provisioned_above_base": above / steps,
            "share_provisioned_below_base": below / steps,
            "share_requested_below_base": req_below / steps, "mean_offset": off_sum / steps,
            "offsets_histogram": {str(k): hist[k] for k in sorted(hist)}}


def dist(args) -> dict:
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    env = _env(args.recipe, args.set)
    lo = env.unwrapped.action_type.off_lo
    clone = PPO.load(args.models[0], device="cpu")
    states = []
    for s in range(FIRST, FIRST + EPISODES):
        obs, _ = env.reset(seed=s, options={"split": "train"})
        done = False
        while not done:
            states.append(obs)
            a, _ = clone.predict(obs, deterministic=True)
            obs, _, term, trunc, _ = env.step(int(a))
            done = term or trunc
    x = torch.as_tensor(np.array(states))
    out = {"states": len(states)}
    for path in args.models:
        m = PPO.load(path, device="cpu")
        with torch.no_grad():
            p = m.policy.get_distribution(x).distribution.probs.numpy()
        arg = p.argmax(1) + lo
        out[path] = {"mean_p_offset0": float(p[:, -lo].mean()),
                     "share_argmax_nonzero": float((arg != 0).mean()),
                     "mean_p_by_offset": {str(k + lo): round(float(p[:, k].mean()), 4)
                                          for k in range(p.shape[1])}}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("clone", "train"):
        p = sub.add_parser(name)
        p.add_argument("recipe")
        p.add_argument("out")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--timesteps", type=int, default=None)
        p.add_argument("--checkpoint-every", type=int, default=3072)
        p.add_argument("--set", action="append", default=[])
    p = sub.add_parser("run")
    p.add_argument("model")
    p.add_argument("recipe")
    p.add_argument("how", choices=("sample", "det"))
    p.add_argument("--set", action="append", default=[])
    p = sub.add_parser("dist")
    p.add_argument("recipe")
    p.add_argument("models", nargs="+")
    p.add_argument("--set", action="append", default=[])
    args = ap.parse_args(argv)
    if args.cmd in ("clone", "train"):
        train(args, stop_after_clone=args.cmd == "clone")
    else:
        print(json.dumps(run(args) if args.cmd == "run" else dist(args), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

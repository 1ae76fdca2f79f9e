"""``dynosim train`` and ``dynosim evaluate`` (imported lazily: ``sim`` needs no torch)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sim.errors import InputError


def _set(text: str) -> tuple[str, Any]:
    """``--set key=value`` with a YAML value (``--set reward.gpu_weight=0.001``)."""
    import yaml
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"bad value in {text!r}") from None


def _pos_int(text: str) -> int:
    try:
        n = int(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def add_parsers(sub) -> None:
    kw: dict[str, Any] = {}
    t = sub.add_parser("train", help="train an RL autoscaler or router (SB3 / sb3-contrib)",
                       description="Train on a dynosim_gym env with RL-Zoo-style "
                       "hyperparameters (agents/hyperparams/ALGO.yml). Writes DIR/model.zip, "
                       "DIR/run.json, DIR/checkpoints/ and TensorBoard logs in DIR/tb.", **kw)
    t.add_argument("--algo", required=True,
                   help="ppo | a2c | dqn | ppo_mask (MaskablePPO) | ppo_lstm (RecurrentPPO)")
    t.add_argument("--env", default="DynoSim-v0", help="DynoSim-v0 | DynoSimRouting-v0")
    t.add_argument("--config", metavar="YAML", help="env config (default: the env's default)")
    t.add_argument("--timesteps", type=_pos_int, metavar="N", help="default: the YAML's")
    t.add_argument("--out", required=True, metavar="DIR", help="run directory (created)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--n-envs", type=_pos_int, metavar="N", help="default: the YAML's")
    t.add_argument("--hyperparams", metavar="YAML", help="RL-Zoo-style file (default: ours)")
    t.add_argument("--set", type=_set, action="append", default=[], metavar="KEY=VALUE",
                   help="env config override, e.g. reward.gpu_weight=0.001 (repeatable)")
    t.add_argument("--checkpoint-every", type=_pos_int, default=50_000, metavar="N")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    from . import rllib_train
    rllib_train.add_args(t)

    e = sub.add_parser("evaluate", help="score a policy, or write a leaderboard",
                       description="Evaluate on held-out episodes (split=eval): mean reward, "
                       "SLA attainment, GPU-hours, p90 TTFT/ITL.", **kw)
    e.add_argument("--policy", metavar="SPEC",
                   help="heuristic:load | heuristic:throughput | heuristic:static | PATH "
                   "(model.zip or a train --out directory)")
    e.add_argument("--leaderboard", metavar="DIR",
                   help="evaluate the heuristics and every model under DIR; write "
                   "DIR/leaderboard.{md,csv,json}, DIR/replicas_vs_load.png and DIR/sla_vs_gpu_hours.png")
    e.add_argument("--env", default="DynoSim-v0")
    e.add_argument("--config", metavar="YAML",
                   help="env config (default: the model's training config, else the default)")
    e.add_argument("--episodes", type=_pos_int, default=5)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--split", choices=("eval", "train"), default="eval")
    e.add_argument("--reference", default="heuristic:load",
                   help="leaderboard ratios are relative to this policy")
    e.add_argument("--set", type=_set, action="append", default=[], metavar="KEY=VALUE")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.add_argument("--quiet", action="store_true")


def run(args) -> int:
    if args.command == "train":
        return _train(args)
    return _evaluate(args)


def _train(args) -> int:
    from . import rllib_train
    rllib_train.check_args(args)
    if args.framework == "rllib":
        return rllib_train.run(args)
    from .train import train
    out = train(args.algo, args.env, config=args.config, timesteps=args.timesteps,
                out=args.out, seed=args.seed, n_envs=args.n_envs, hyperparams=args.hyperparams,
                overrides=dict(args.set), checkpoint_every=args.checkpoint_every,
                quiet=args.quiet)
    if not args.quiet:
        print(f"dynosim: saved {out / 'model.zip'} (TensorBoard: tensorboard --logdir "
              f"{out / 'tb'})", file=sys.stderr)
    return 0


def _evaluate(args) -> int:
    from .evaluate import evaluate, leaderboard
    if (args.policy is None) == (args.leaderboard is None):
        raise InputError("give exactly one of --policy and --leaderboard", field="--policy")
    if args.leaderboard is not None:
        res = leaderboard(args.leaderboard, env_id=args.env, config=args.config,
                          episodes=args.episodes, seed=args.seed, reference=args.reference,
                          quiet=args.quiet)
        if args.json:
            print(json.dumps([r.as_dict(with_episodes=False) for r in res], indent=1))
        else:
            print((__import__("pathlib").Path(args.leaderboard) / "leaderboard.md").read_text(),
                  end="")
        return 0
    res = evaluate(args.policy, args.env, config=args.config, episodes=args.episodes,
                   seed=args.seed, split=args.split, overrides=dict(args.set),
                   quiet=args.quiet)
    if args.json:
        print(json.dumps(res.as_dict(), indent=1, default=str))
    else:
        print(f"{res.policy}: mean reward {res.mean_reward:.3f} ± {res.std_reward:.3f} over "
              f"{res.episodes} episodes; SLA attainment {res.sla_attainment:.1%}; "
              f"GPU-hours/episode {res.gpu_hours:.3f}; p90 TTFT {res.ttft_p90_ms:.0f} ms; "
              f"p90 ITL {res.itl_p90_ms:.1f} ms")
    return 0

"""The bare base of ``env.action.type: residual`` (issue 11, round 7b): offset 0 at every
step, i.e. Dynamo's throughput planner's count ``ceil(predicted demand / one engine's rate
at the SLA)`` re-computed every env step, with the recipe's scale-down window. The
reference a residual policy's own contribution is measured against.

    python scripts/residual_base.py [--split train --episodes 3 --seed 0] \\
        [--set env.action.scale_down_window_s=60 ...] [--out FILE.json]

Prints (and writes with ``--out``) the evaluation's JSON (as ``dynosim evaluate --json``):
pooled SLA attainment, GPU-hours per episode, reversals per hour, per-family and
per-episode rows.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gymnasium as gym

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    """Exit code: 0, or 2 with one stderr line on bad input (the ``dynosim`` CLI's path)."""
    from agents.cli import _pos_int, _seed, _set
    from dynosim.options import Parser, ScriptHelpFormatter
    from sim.schema import int_arg

    ap = Parser(prog="residual_base.py", description=__doc__, formatter_class=ScriptHelpFormatter)
    ap.add_argument("--split", default="train", choices=("train", "eval"),
                    help="training or held-out episodes")
    ap.add_argument("--episodes", type=_pos_int, default=3, help="seeded episodes")
    ap.add_argument("--seed", type=_seed, default=0, help="seed of the first episode")
    ap.add_argument("--offset", type=int_arg, default=0,
                    help="the residual offset held at every step")
    ap.add_argument("--set", type=_set, action="append", default=[], metavar="KEY=VALUE",
                    help="env config override (repeatable; default: none)")
    ap.add_argument("--out", metavar="FILE",
                    help="also write the JSON to this file (default: none, print only)")
    from dynosim.cli import run_script
    return run_script(ap, argv, _checked_run)


def _checked_run(args) -> int:
    """The ``--out`` path checked (its directory made) before any episode runs."""
    from agents.cli import _check_out_file
    if args.out:
        _check_out_file(args.out)
    return run(args)


def run(args: argparse.Namespace) -> int:
    import dynosim_gym  # noqa: F401  (registers the envs)
    from agents.evaluate import resolved_reward, run_episode, summarise
    from agents.heuristics import OffsetPolicy

    overrides = {"env.action.type": "residual", **dict(args.set)}
    env = gym.make("DynoSim-v0", **overrides)
    u = env.unwrapped
    policy = OffsetPolicy(env, args.offset, field="--set env.action.type")
    seeds = list(range(args.seed, args.seed + args.episodes))
    results = [run_episode(env, policy, {"split": args.split}, s) for s in seeds]
    ev = summarise(f"residual offset {args.offset}", results, u.cfg, resolved_reward(u.cfg, u),
                   {"env": {"action": u.cfg.to_dict()["env"]["action"]}},
                   {"split": args.split, "seeds": seeds})
    out = ev.as_dict()
    out["overrides"] = overrides
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How rugged the direct search's objective is near a policy (issue 11, round 16).

Scores an ``scripts/es_search.py`` run's kept policy (``policy.json``), and the same policy
with its weights moved by ``--step`` (default 1e-3, Euclidean length) along ``--directions``
seeded unit directions (direction ``k``: a standard normal vector from
``numpy.random.default_rng(k)``, normalised), on the run's own search episodes, env config
and objective (``run.json``, ``search.json``). ``--bare-base`` does the same for the bare
base (``w = 0, b = 0``) with the run's feature standardisation, if any. The weights are
moved in the space the policy reads (standardised features if the run standardised); the
bias is not moved. A measurement only: nothing here feeds a search or a decision.

    python scripts/es_ruggedness.py RUN_DIR [--bare-base] [--directions 3] [--step 1e-3]
        --out FILE.json

Writes ``--out``: per point (``unperturbed``, ``direction 0`` ...) pooled and
mean-of-episodes attainment, GPU-h per episode and objective; and the largest absolute
objective change. Progress: one stderr line per point. Exit 0, or 2 with one stderr line on
bad input.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def main(argv=None) -> int:
    from agents.cli import _pos_int
    from dynosim.options import Parser, ScriptHelpFormatter

    ap = Parser(prog="es_ruggedness.py", description=__doc__,
                formatter_class=ScriptHelpFormatter)
    ap.add_argument("run", metavar="RUN_DIR", help="an es_search.py --out directory")
    ap.add_argument("--bare-base", action="store_true",
                    help="perturb the bare base (w = 0, b = 0) instead of the kept policy")
    ap.add_argument("--directions", type=_pos_int, default=3, help="seeded directions")
    ap.add_argument("--step", type=float, default=1e-3, help="length of the weight move")
    ap.add_argument("--out", required=True, metavar="FILE", help="JSON to write")
    from dynosim.cli import run_script
    return run_script(ap, argv, run)


def run(args) -> int:
    import gymnasium as gym
    import numpy as np

    import dynosim_gym  # noqa: F401  (registers the envs)
    from agents.linear_policy import LinearResidualPolicy, load_policy
    from dynosim.options import read_json
    from es_search import objective_value, score
    from sim.errors import InputError

    if not (math.isfinite(args.step) and args.step > 0):
        raise InputError(f"must be a finite number > 0, got {args.step}", field="--step")
    d = Path(args.run)
    recs = {}
    for name in ("run.json", "search.json"):
        f = d / name
        if not f.is_file():
            raise InputError(f"no {name} in the es run directory {d}", file=str(f),
                             field="RUN_DIR")
        recs[name] = read_json(f, dict)
    run_rec, search = recs["run.json"], recs["search.json"]
    pol = load_policy(d)
    if args.bare_base:
        pol = LinearResidualPolicy(pol.features, np.zeros(len(pol.features)), 0.0,
                                   [pol.lo, pol.hi], pol.feature_mean, pol.feature_std)
    target, mean_target = float(search["target"]), search.get("mean_target")
    seeds = [int(s) for s in search["episodes"]]
    env = gym.make("DynoSim-v0", config=run_rec["env_config"])
    points = []
    for k in [None, *range(args.directions)]:
        w = pol.weights.copy()
        if k is not None:
            v = np.random.default_rng(k).standard_normal(len(w))
            w = w + args.step * v / np.linalg.norm(v)
        p = LinearResidualPolicy(pol.features, w, pol.bias, [pol.lo, pol.hi],
                                 pol.feature_mean, pol.feature_std)
        m = score(env, p, seeds)
        f = objective_value(m["sla_attainment"], m["gpu_hours_per_episode"], target,
                            m["mean_episode_sla_attainment"], mean_target)
        points.append({"point": "unperturbed" if k is None else f"direction {k}", **m,
                       "objective": f})
        print(f"es_ruggedness: {points[-1]['point']}: {100 * m['sla_attainment']:.1f} % "
              f"({100 * m['mean_episode_sla_attainment']:.1f} % mean) at "
              f"{m['gpu_hours_per_episode']:.3f} GPU-h, objective {f:.3f}",
              file=sys.stderr, flush=True)
    env.close()
    f0 = points[0]["objective"]
    result = {"run": str(d), "policy": "bare base" if args.bare_base else "kept",
              "step": args.step, "directions": args.directions,
              "direction_rule": "numpy.random.default_rng(k).standard_normal(n), unit length",
              "episodes": {"split": "train", "seeds": seeds}, "target": target,
              "mean_target": mean_target, "points": points,
              "max_abs_objective_change": max(abs(p["objective"] - f0) for p in points[1:])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

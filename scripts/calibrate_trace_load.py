"""Calibrate a trace family's ``TRACE_LOAD`` (dynosim_gym/scenarios.py) the way the synthetic
families are scaled: their drawn peak is a load the full budget serves at the SLA.

On the TRAINING split only, at constant load (swing 1), with the full budget of workers
(``max_gpu_budget / gpus_per_worker``), seeds ``--seed ..`` (pooled attainment):

1. the reference (synthetic) family's ceiling = attainment at a near-idle rate, and the rate
   ``R_ref`` at which the full budget just reaches ``reward.sla_target`` (bisection); the
   load costs it ``margin = ceiling - target`` points there;
2. the trace family's own ceiling at a near-idle rate (its requests that miss the SLA even
   on an idle worker: Mooncake's long prompts), and the rate ``R_trace`` at which the full
   budget loses the same ``margin`` below that ceiling (bisection);
3. ``TRACE_LOAD = R_trace / R_ref``: the trace family's peak then loads the full budget as
   the synthetic families' peaks do.

    python scripts/calibrate_trace_load.py --family mooncake_mod      # ~2 CPU-minutes
"""
from __future__ import annotations

import json
import sys

from agents.evaluate import PolicySpec, make_eval_env, run_episode
from agents.oracle import SchedulePolicy


def attainment(env, n: int, family: str, rate: float, seeds: list[int], scale: float) -> float:
    """Pooled SLA attainment of ``n`` static workers at a constant ``rate`` (req/s, actual)."""
    met = dec = 0
    for s in seeds:
        opts = {"scenario": family, "rate_rps": rate / scale, "swing": 1.0, "split": "train"}
        x = run_episode(env, SchedulePolicy(env, [n]), opts, s)["summary"]
        met, dec = met + x["requests_met"], dec + x["requests_decided"]
    return met / dec if dec else 1.0


def rate_reaching(level: float, sla_of, lo: float, hi: float, tol: float) -> float:
    """Rate in ``[lo, hi]`` where ``sla_of`` (decreasing in the rate) crosses ``level``."""
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sla_of(mid) >= level else (lo, mid)
    return (lo + hi) / 2


def calibrate(family: str, reference: str, seeds: list[int], idle_rps: float) -> dict:
    from dynosim_gym.scenarios import TRACE_LOAD
    pol = PolicySpec("oracle", "oracle", "DynoSim-v0")
    probe, cfg = make_eval_env(pol, "DynoSim-v0", None, {})
    n, target = cfg.max_workers, cfg.env.reward.sla_target
    probe.close()
    env, _ = make_eval_env(pol, "DynoSim-v0", None, {"env.initial_workers": n})
    scale = TRACE_LOAD[family]     # undone: rates below are actual req/s

    def ref(r):
        return attainment(env, n, reference, r, seeds, 1.0)

    def trace(r):
        return attainment(env, n, family, r, seeds, scale)
    ceil_ref, ceil_trace = ref(idle_rps), trace(idle_rps)
    r_ref = rate_reaching(target, ref, cfg.env.rate_min_rps, 1.5 * cfg.env.rate_max_rps, 0.1)
    margin = ceil_ref - target
    r_trace = rate_reaching(ceil_trace - margin, trace, idle_rps, r_ref, 0.02)
    env.close()
    return {"family": family, "reference": reference, "workers": n, "sla_target": target,
            "seeds": seeds, "reference_ceiling": ceil_ref, "reference_rate_rps": r_ref,
            "margin_points": 100 * margin, "trace_ceiling": ceil_trace,
            "trace_rate_rps": r_trace, "trace_load": r_trace / r_ref}


def main(argv=None) -> int:
    from dynosim.options import Parser, ScriptHelpFormatter
    ap = Parser(prog="calibrate_trace_load.py", description=__doc__, formatter_class=ScriptHelpFormatter)
    from agents.cli import _pos_int
    from dynosim_gym.scenarios import SYNTHETIC_FAMILIES, TRACE_LOAD
    ap.add_argument("--family", default="mooncake_mod", choices=tuple(TRACE_LOAD),
                    help="trace family calibrated")
    ap.add_argument("--reference", default="diurnal_swing", choices=SYNTHETIC_FAMILIES,
                    help="synthetic family (constant load: its shape does not matter)")
    ap.add_argument("--seed", type=int, default=100, help="first episode seed")
    ap.add_argument("--episodes", type=_pos_int, default=3, help="episodes (seeds SEED, SEED+1, ...)")
    ap.add_argument("--idle-rps", type=float, default=0.25,
                    help="the near-idle rate (req/s) whose attainment is the ceiling")
    from dynosim.cli import run_script
    return run_script(ap, argv, _run)


def _run(args) -> int:
    res = calibrate(args.family, args.reference,
                    list(range(args.seed, args.seed + args.episodes)), args.idle_rps)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

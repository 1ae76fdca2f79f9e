"""Measure the properties DynoSim-v0's default scenario was chosen for (issue 11).

For episodes of every workload family (seeded, both splits), on the scenario itself:

1. ``oracle:schedule`` (hindsight schedule over the known load: the cheapest schedule the
   local search of agents/oracle.py finds whose episode attainment reaches
   ``reward.sla_target``; the greedy schedule it starts from, ``oracle:schedule-greedy``,
   is reported too) and ``oracle:static`` (the cheapest static count that reaches
   ``reward.sla_target`` over the whole episode, i.e. the best static count at peak
   load). Target: static GPU-hours >= 1.5x the schedule's.
2. The best static count at *mean* load: the smallest N meeting the target on a constant
   load at the episode's mean rate (same family, lengths and episode length; swing 1);
   then N on the real episode. Target: its attainment is >= 20 points below the target.

Prints one row per episode (with its wall time) and the pooled figures; ``--json FILE``
writes them.

    python scripts/scenario_check.py --episodes 2
"""
from __future__ import annotations

import json
import sys
import time

from agents.evaluate import PolicySpec, make_eval_env, run_episode
from agents.oracle import SchedulePolicy, best_schedule, best_static, greedy_schedule
from dynosim_gym.scenarios import TRACE_LOAD


def check(config: str | None, episodes: int, seed: int, families: list[str] | None) -> dict:
    pol = PolicySpec("oracle", "oracle", "DynoSim-v0")
    env, cfg = make_eval_env(pol, "DynoSim-v0", config, {})
    e = cfg.env
    fams = families or sorted(set(e.scenarios.split(",")) | set(
        (e.eval_scenarios or "").split(",")) - {""})
    lo, hi, target = e.min_endpoint, cfg.max_workers, e.reward.sla_target

    def make_env(extra):
        return make_eval_env(pol, "DynoSim-v0", config, extra)[0]

    rows = []
    for fam in fams:
        for k in range(episodes):
            opts = {"scenario": fam, "split": "train"}
            s = seed + k
            t0 = time.perf_counter()
            greedy = greedy_schedule(env, opts, s, lo, hi, target, 120.0, e.interval_s,
                                     e.episode_steps)
            sched = best_schedule(env, opts, s, lo, hi, target, 120.0, e.interval_s,
                                  e.episode_steps, greedy=greedy)
            static = best_static(make_env, opts, s, lo, hi, target)
            setup = sched["summary"]["setup"]
            # the same family and lengths at a constant rate = the episode's mean (swing 1)
            scale = TRACE_LOAD.get(fam, 1.0)
            steady = {"scenario": fam, "rate_rps": setup["mean_rps"] / scale, "swing": 1.0,
                      "split": "train"}
            n_mean = best_static(make_env, steady, s, lo, hi, target)["workers"]
            env_n = make_env({"env.initial_workers": n_mean})
            at_mean = run_episode(env_n, SchedulePolicy(env_n, [n_mean]), opts, s)
            env_n.close()

            def sla(r):
                x = r["summary"]
                return x["requests_met"] / max(x["requests_decided"], 1)
            row = {"family": fam, "seed": s, "peak_rps": setup["peak_rps"],
                   "mean_rps": setup["mean_rps"], "swing": setup["swing"],
                   "schedule_gpu_h": sched["summary"]["gpu_hours"], "schedule_sla": sla(sched),
                   "schedule_search": sched["search"],
                   "greedy_gpu_h": greedy["summary"]["gpu_hours"], "greedy_sla": sla(greedy),
                   "static_peak_n": static["workers"],
                   "static_peak_gpu_h": static["summary"]["gpu_hours"],
                   "static_peak_sla": sla(static),
                   "static_mean_n": n_mean, "static_mean_sla": sla(at_mean)}
            row["static_over_schedule"] = row["static_peak_gpu_h"] / row["schedule_gpu_h"]
            row["static_over_greedy"] = row["static_peak_gpu_h"] / row["greedy_gpu_h"]
            row["wall_s"] = time.perf_counter() - t0
            rows.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                              for k, v in row.items() if k != "schedule_search"}),
                  file=sys.stderr, flush=True)
    env.close()
    gpu_sched = sum(r["schedule_gpu_h"] for r in rows)
    gpu_static = sum(r["static_peak_gpu_h"] for r in rows)
    gpu_greedy = sum(r["greedy_gpu_h"] for r in rows)
    mean_sla = sum(r["static_mean_sla"] for r in rows) / len(rows)
    return {"sla_target": target, "episodes": rows,
            "static_peak_over_schedule_gpu_h": gpu_static / gpu_sched,
            "static_peak_over_greedy_schedule_gpu_h": gpu_static / gpu_greedy,
            "wall_s": sum(r["wall_s"] for r in rows),
            "static_mean_sla": mean_sla, "static_mean_miss_points": 100 * (target - mean_sla),
            "targets": {"static_peak_over_schedule_gpu_h": ">= 1.5",
                        "static_mean_miss_points": ">= 20"}}


def _families(text: str) -> list[str]:
    """``--families a,b``: DynoSim-v0 scenarios (families and legacy shapes)."""
    import argparse

    from dynosim_gym.episodes import SCENARIOS
    from dynosim_gym.scenarios import ENV_FAMILIES
    valid = [s for s in SCENARIOS if s not in ENV_FAMILIES["DynoSimRouting-v0"]]
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in valid]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown family {bad[0] if bad else text!r}; expected a comma list of "
            f"{', '.join(valid)}")
    return names


def main(argv=None) -> int:
    from dynosim.options import Parser, ScriptHelpFormatter
    ap = Parser(prog="scenario_check.py", description=__doc__, formatter_class=ScriptHelpFormatter)
    ap.add_argument("--config", default=None,
                    help="env config (default: DynoSim-v0's, autoscale_default)")
    from agents.cli import _pos_int
    ap.add_argument("--episodes", type=_pos_int, default=2, help="episodes per family")
    ap.add_argument("--seed", type=int, default=100, help="first episode seed")
    ap.add_argument("--families", type=_families, default=None,
                    help="comma list (default: all in the config)")
    ap.add_argument("--json", default=None, metavar="FILE",
                    help="also write the measurement as JSON (default: none, print only)")
    from dynosim.cli import run_script
    return run_script(ap, argv, _run)


def _run(a) -> int:
    res = check(a.config, a.episodes, a.seed, a.families)
    print(f"static at peak / hindsight schedule GPU-hours: "
          f"{res['static_peak_over_schedule_gpu_h']:.2f} (target >= 1.5; greedy schedule: "
          f"{res['static_peak_over_greedy_schedule_gpu_h']:.2f}); static at mean load: "
          f"SLA {res['static_mean_sla']:.1%}, {res['static_mean_miss_points']:.1f} points under "
          f"the {res['sla_target']:.0%} target (target >= 20)")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

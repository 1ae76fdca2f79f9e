"""Direct policy search for a linear residual autoscaler (issue 11, round 15).

CMA-ES (Optuna's ``CmaEsSampler``, backend ``cmaes``; Hansen 2016) over the parameters of
:class:`agents.linear_policy.LinearResidualPolicy`: ``offset = clip(round(w . x + b), lo,
hi)`` on round 14's residual env (:data:`ENV_KWARGS`: round 8's dynamics-only observation,
``residual_offsets [-2, 4]``, 300 s scale-down window, 300 s reversal cooldown, cold start
held). Every candidate is scored deterministically (no action noise) on the same TRAINING
episodes: ``split=train``, seeds ``--first-seed .. + --episodes - 1`` (default 10000-10003,
the recipes' behaviour-cloning teacher episodes; never the checkpoint-selection episodes
200-203 nor the shipping rule's SELECT, seeds 0-2).

Objective (minimised): ``gpu_h + PENALTY * max(0, target - attainment)``, with ``gpu_h`` the
GPU-hours per episode and ``attainment`` the pooled SLA attainment over those episodes
(``target`` = ``env.reward.sla_target``, 0.67: ``scripts/learned_benchmark.py``'s
LAGRANGIAN_TARGET_RULE); PENALTY = 100 GPU-h per unit of attainment (1 GPU-h per point).
Trial 0 is the bare base (``w = 0, b = 0``, enqueued; CMA-ES starts its mean there,
``sigma0`` = ``--sigma0``). The kept policy is the cheapest trial whose attainment reaches
the target (else the trial with the lowest objective, and ``run.json`` says so).

    python scripts/es_search.py --seed 0 --trials 120 --out runs/es_r15/s0 [--episodes 4]
        [--first-seed 10000] [--budget-min 30] [--sigma0 0.5] [--config autoscale_default]
        [--set KEY=VALUE ...]

Writes to ``--out``: ``policy.json`` (the kept policy), ``search.json`` (every trial's
parameters, attainment, GPU-h and objective: the same ``--seed`` and arguments give a
byte-identical file), ``run.json`` (run record: ``framework: es``, env id, the full env
config, the command, status, wall and CPU seconds). ``dynosim evaluate --policy OUT`` scores
it. Progress: one stderr line per trial. ``--budget-min`` is a wall guard: the search stops
after the trial that crosses it and ``run.json``'s status says ``cut``; a cut search's
``search.json`` holds fewer trials, so it is reproducible only up to its trial count.
Exit code 0, or 2 with one stderr line on bad input.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Round 14's env (agents/hyperparams/ppo_round14.yml on r14, = round 8's env_kwargs plus
#: reversal_cooldown_s 300 and base_before_first_tick hold): no flap can happen.
ENV_KWARGS: dict[str, Any] = {
    "env.action": {"type": "residual", "residual_offsets": [-2, 4],
                   "scale_down_window_s": 300, "reversal_cooldown_s": 300,
                   "base_before_first_tick": "hold"},
    "env.reward": {"sla_target": 0.67},
    "env.observation": {"features": [
        "prefill_demand_per_active", "decode_demand_per_active",
        "queued_prefill_per_active", "queued_requests_per_active", "kv_utilisation",
        "kv_hit_rate", "ttft_p50", "ttft_p90", "itl_p90", "oldest_wait", "sla_attainment",
        "starting_workers", "draining_workers", "arrival_rate_slope", "queue_growth",
        "startup_time"]},
}
PENALTY = 100.0        # GPU-h per unit of attainment under the target
W_RANGE = (-3.0, 3.0)  # each weight: features are log1p-compressed ratios/shares, ~0-3


def main(argv=None) -> int:
    from agents.cli import _pos_int, _seed, _set
    from dynosim.options import Parser, ScriptHelpFormatter

    ap = Parser(prog="es_search.py", description=__doc__, formatter_class=ScriptHelpFormatter)
    ap.add_argument("--seed", type=_seed, default=0, help="the sampler's seed")
    ap.add_argument("--trials", type=_pos_int, default=120, help="candidates scored")
    ap.add_argument("--episodes", type=_pos_int, default=4,
                    help="training episodes per candidate")
    ap.add_argument("--first-seed", type=_seed, default=10000,
                    help="seed of the first training episode")
    ap.add_argument("--sigma0", type=float, default=0.5, help="CMA-ES initial step size")
    ap.add_argument("--budget-min", type=float, default=30.0,
                    help="wall guard in minutes (the search stops after the trial crossing it)")
    ap.add_argument("--config", default="autoscale_default",
                    help="env config the search runs on (name or YAML; round 14's env on top)")
    ap.add_argument("--set", type=_set, action="append", default=[], metavar="KEY=VALUE",
                    help="env config override on top of round 14's env (repeatable)")
    ap.add_argument("--out", required=True, metavar="DIR", help="run directory to write")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)
    from dynosim.cli import guarded, set_flags
    return guarded(lambda: run(args, argv), set_flags(args.set))


def _check(args) -> None:
    from sim.errors import InputError
    if not (math.isfinite(args.sigma0) and args.sigma0 > 0):
        raise InputError(f"must be a finite number > 0, got {args.sigma0}", field="--sigma0")
    if not (math.isfinite(args.budget_min) and args.budget_min > 0):
        raise InputError(f"must be a finite number > 0, got {args.budget_min}",
                         field="--budget-min")
    if args.first_seed < 1000:
        raise InputError("training episodes must avoid the selection seeds (0-2, 200-203): "
                         f"use >= 1000, got {args.first_seed}", field="--first-seed")


def score(env, policy, seeds: list[int]) -> dict[str, float]:
    """Pooled SLA attainment and GPU-h per episode of ``policy`` on training ``seeds``."""
    from agents.evaluate import resolved_reward, run_episode, summarise
    u = env.unwrapped
    results = [run_episode(env, policy, {"split": "train"}, s) for s in seeds]
    ev = summarise("es", results, u.cfg, resolved_reward(u.cfg, u), {},
                   {"split": "train", "seeds": seeds})
    return {"sla_attainment": float(ev.sla_attainment),
            "gpu_hours_per_episode": float(ev.gpu_hours_per_episode),
            "flaps_per_hour": float(ev.flaps_per_hour)}


def objective_value(att: float, gph: float, target: float) -> float:
    return gph + PENALTY * max(0.0, target - att)


def run(args, argv) -> int:
    import gymnasium as gym
    import optuna

    import dynosim_gym  # noqa: F401  (registers the envs)
    from agents.linear_policy import LinearResidualPolicy, save_policy
    from dynosim_gym.config import load_env_config

    _check(args)
    overrides = {**ENV_KWARGS, **dict(args.set)}
    cfg = load_env_config(args.config, **overrides)
    env = gym.make("DynoSim-v0", config=cfg.to_dict())
    feats = list(cfg.env.observation.features)
    lo, hi = cfg.env.action.residual_offsets
    target = float(cfg.env.reward.sla_target)
    seeds = list(range(args.first_seed, args.first_seed + args.episodes))
    names = [f"w{i}" for i in range(len(feats))] + ["b"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python scripts/es_search.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    record: dict[str, Any] = {
        "framework": "es", "algo": "cmaes", "env_id": "DynoSim-v0", "seed": args.seed,
        "command": command, "config_source": args.config,
        "env_kwargs": ENV_KWARGS, "overrides": dict(args.set),
        "search": {"sampler": "optuna.samplers.CmaEsSampler", "sigma0": args.sigma0,
                   "x0": "bare base (w = 0, b = 0)", "trials": args.trials,
                   "episodes": {"split": "train", "seeds": seeds},
                   "objective": f"gpu_hours_per_episode + {PENALTY:g} * max(0, "
                                f"{target} - pooled sla_attainment)",
                   "weight_range": list(W_RANGE), "bias_range": [lo - 0.5, hi + 0.5],
                   "budget_min": args.budget_min},
        "env_config": cfg.to_dict(), "status": "running"}
    (out / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")

    def policy_of(params: dict[str, float]) -> LinearResidualPolicy:
        return LinearResidualPolicy(feats, [params[f"w{i}"] for i in range(len(feats))],
                                    params["b"], [lo, hi])

    trials: list[dict[str, Any]] = []
    t0, cpu0 = time.perf_counter(), time.process_time()
    cut = False

    def objective(trial: "optuna.Trial") -> float:
        nonlocal cut
        params = {n: trial.suggest_float(n, *W_RANGE) for n in names[:-1]}
        params["b"] = trial.suggest_float("b", lo - 0.5, hi + 0.5)
        m = score(env, policy_of(params), seeds)
        f = objective_value(m["sla_attainment"], m["gpu_hours_per_episode"], target)
        trials.append({"number": trial.number, "params": params, **m, "objective": f})
        wall = time.perf_counter() - t0
        if not args.quiet:
            best = min(t["objective"] for t in trials)
            print(f"es_search: seed {args.seed} trial {trial.number + 1}/{args.trials}: "
                  f"{100 * m['sla_attainment']:.1f} % at {m['gpu_hours_per_episode']:.2f} "
                  f"GPU-h (objective {f:.3f}, best {best:.3f}), {wall / 60:.1f} min",
                  file=sys.stderr, flush=True)
        if wall > 60 * args.budget_min:
            cut = True
            trial.study.stop()
        return f

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.CmaEsSampler(x0={n: 0.0 for n in names}, sigma0=args.sigma0,
                                           seed=args.seed)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.enqueue_trial({n: 0.0 for n in names})          # trial 0: the bare base
    study.optimize(objective, n_trials=args.trials)
    env.close()
    feasible = [t for t in trials if t["sla_attainment"] >= target]
    kept = (min(feasible, key=lambda t: (t["gpu_hours_per_episode"], t["number"]))
            if feasible else min(trials, key=lambda t: (t["objective"], t["number"])))
    save_policy(policy_of(kept["params"]), out)
    result = {"seed": args.seed, "target": target, "episodes": seeds,
              "kept": {"number": kept["number"], "rule": "cheapest trial reaching the target"
                       if feasible else "no trial reached the target: lowest objective"},
              "trials": trials}
    (out / "search.json").write_text(json.dumps(result, indent=1) + "\n")
    record.update(status="cut" if cut else "completed", trials_run=len(trials),
                  kept_trial=kept["number"], kept_rule=result["kept"]["rule"],
                  kept_training={k: kept[k] for k in ("sla_attainment",
                                                      "gpu_hours_per_episode",
                                                      "flaps_per_hour")},
                  search_wall_s=round(time.perf_counter() - t0, 1),
                  search_cpu_s=round(time.process_time() - cpu0, 1))
    (out / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    if not args.quiet:
        print(f"es_search: kept trial {kept['number']} ({result['kept']['rule']}): "
              f"{100 * kept['sla_attainment']:.1f} % at {kept['gpu_hours_per_episode']:.2f} "
              f"GPU-h on training seeds {seeds[0]}-{seeds[-1]}; {len(trials)} trials in "
              f"{record['search_wall_s'] / 60:.1f} min ({record['status']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

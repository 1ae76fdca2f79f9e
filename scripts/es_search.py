"""Direct policy search for a linear residual autoscaler (issue 11, rounds 15-16).

CMA-ES (Optuna's ``CmaEsSampler``, backend ``cmaes``; Hansen 2016) over the parameters of
:class:`agents.linear_policy.LinearResidualPolicy`: ``offset = clip(round(w . x + b), lo,
hi)`` on round 14's residual env (:data:`ENV_KWARGS`: round 8's dynamics-only observation,
``residual_offsets [-2, 4]``, 300 s scale-down window, 300 s reversal cooldown, cold start
held). Every candidate is scored deterministically (no action noise) on the same TRAINING
episodes: ``split=train``, seeds ``--first-seed .. + --episodes - 1`` (default 10000-10003,
the recipes' behaviour-cloning teacher episodes; never the checkpoint-selection episodes
200-203 nor the shipping rule's SELECT, seeds 0-2).

Objective (minimised), ``--objective pooled`` (round 15's, the default):
``gpu_h + PENALTY * max(0, target - attainment)``, with ``gpu_h`` the GPU-hours per episode
and ``attainment`` the pooled SLA attainment over those episodes (``target`` =
``env.reward.sla_target``, 0.67: ``scripts/learned_benchmark.py``'s
LAGRANGIAN_TARGET_RULE); PENALTY = 100 GPU-h per unit of attainment (1 GPU-h per point).
``--objective pooled+mean`` (round 16) adds ``PENALTY * max(0, mean_target - mean
attainment)``, with the mean of the episodes' own attainments (``--mean-target``, required
there): a policy that gives up a whole light episode is punished even if the pooled figure
holds. Trial 0 is the bare base (``w = 0, b = 0``, enqueued; CMA-ES starts its mean there,
``sigma0`` = ``--sigma0``, population ``--popsize``, default CMA-ES's ``4 + floor(3 ln
17)`` = 12). The kept policy is the cheapest trial meeting the target(s) (else the trial
with the lowest objective, and ``run.json`` says so). Trials are numbered from 0
everywhere (progress lines, ``search.json``, ``run.json``); trial 0 is the base.

``--standardise`` (round 16): before the search, the bare base runs the search episodes and
each feature's mean ``mu`` and standard deviation ``sigma`` (population, over every
decision step of every episode) are measured; the policy reads ``(x - mu) / sigma``, and
``mu, sigma`` are stored in ``policy.json`` and ``search.json``. A feature constant on those
rollouts (``sigma < 1e-9``) gets ``sigma = 1`` (centred only). Trial 0 reuses that run's
score (with ``w = 0`` the features are not read, so it is the same score).

    python scripts/es_search.py --seed 0 --trials 120 --out runs/es_r15/s0 [--episodes 4]
        [--first-seed 10000] [--budget-min 30] [--sigma0 0.5] [--config autoscale_default]
        [--objective pooled|pooled+mean] [--mean-target T] [--standardise] [--popsize N]
        [--weight-bound 3] [--force] [--set KEY=VALUE ...]

Writes to ``--out`` (refused, exit 2, if it is a non-empty directory, unless ``--force``):
``policy.json`` (the kept policy), ``search.json`` (every trial's
parameters, pooled and mean-of-episodes attainment, GPU-h, objective and CMA-ES generation:
the same ``--seed`` and arguments give a byte-identical file), ``run.json`` (run record: ``framework: es``, env id, the full env
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
import warnings
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
OBJECTIVES = ("pooled", "pooled+mean")
STD_FLOOR = 1e-9       # a feature with sigma under this on the base's rollouts: sigma = 1


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
    ap.add_argument("--objective", choices=OBJECTIVES, default="pooled",
                    help="pooled: GPU-h + 100 x pooled shortfall (round 15); pooled+mean: "
                         "also + 100 x the mean-of-episodes shortfall under --mean-target")
    ap.add_argument("--mean-target", type=float, default=None,
                    help="mean-of-episodes attainment target, in (0, 1] (pooled+mean only)")
    ap.add_argument("--standardise", action="store_true",
                    help="the policy reads (x - mu) / sigma, measured on the bare base's "
                         "rollouts of the search episodes")
    ap.add_argument("--popsize", type=_pos_int, default=None,
                    help="CMA-ES population (default: 4 + floor(3 ln n_params))")
    ap.add_argument("--weight-bound", type=float, default=W_RANGE[1],
                    help="each weight is searched in [-B, B]")
    ap.add_argument("--out", required=True, metavar="DIR", help="run directory to write")
    ap.add_argument("--force", action="store_true", help="write into a non-empty --out")
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
    if not (math.isfinite(args.weight_bound) and args.weight_bound > 0):
        raise InputError(f"must be a finite number > 0, got {args.weight_bound}",
                         field="--weight-bound")
    if args.popsize is not None and args.popsize < 2:
        raise InputError(f"must be >= 2, got {args.popsize}", field="--popsize")
    if args.objective == "pooled+mean":
        if args.mean_target is None:
            raise InputError("--objective pooled+mean needs --mean-target", field="--mean-target")
        if not (math.isfinite(args.mean_target) and 0 < args.mean_target <= 1):
            raise InputError(f"must be in (0, 1], got {args.mean_target}", field="--mean-target")
    elif args.mean_target is not None:
        raise InputError("only read with --objective pooled+mean", field="--mean-target")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a directory", file=str(out), field="--out")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise InputError("not empty (it holds an earlier run?); pass --force to write into it",
                         file=str(out), field="--out")


def score(env, policy, seeds: list[int]) -> dict[str, float]:
    """Pooled SLA attainment, GPU-h per episode, flaps per hour and the mean of the
    episodes' own attainments of ``policy`` on training ``seeds``."""
    from agents.evaluate import resolved_reward, run_episode, summarise
    u = env.unwrapped
    results = [run_episode(env, policy, {"split": "train"}, s) for s in seeds]
    ev = summarise("es", results, u.cfg, resolved_reward(u.cfg, u), {},
                   {"split": "train", "seeds": seeds})
    return {"sla_attainment": float(ev.sla_attainment),
            "gpu_hours_per_episode": float(ev.gpu_hours_per_episode),
            "flaps_per_hour": float(ev.flaps_per_hour),
            "mean_episode_sla_attainment": float(ev.mean_episode_sla_attainment)}


def objective_value(att: float, gph: float, target: float, mean_att: float = 1.0,
                    mean_target: float | None = None) -> float:
    """``gph + PENALTY * max(0, target - att)`` (round 15), plus ``PENALTY * max(0,
    mean_target - mean_att)`` when ``mean_target`` is given (``--objective pooled+mean``).
    Attainments and targets are shares in [0, 1]; ``gph`` GPU-hours per episode."""
    f = gph + PENALTY * max(0.0, target - att)
    if mean_target is not None:
        f += PENALTY * max(0.0, mean_target - mean_att)
    return f


def meets_targets(m: dict[str, float], target: float, mean_target: float | None) -> bool:
    """Whether a trial's figures reach the pooled target (and the mean one, if given)."""
    return (m["sla_attainment"] >= target
            and (mean_target is None or m["mean_episode_sla_attainment"] >= mean_target))


class _Recorder:
    """Acts offset 0 (the bare base) and keeps every observation it is shown."""

    def __init__(self, base) -> None:
        self.base, self.rows = base, []

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        import numpy as np
        self.rows.append(np.array(observation, dtype=np.float64).reshape(-1))
        return self.base.predict(observation, state, episode_start, deterministic)


def feature_stats(env, base, seeds: list[int]) -> tuple[list[float], list[float], int,
                                                        dict[str, float]]:
    """Per-feature mean and population standard deviation (``sigma < STD_FLOOR`` -> 1) of
    the observations the bare base ``base`` sees on ``seeds`` (every decision step), the
    number of steps, and the base's score on them (:func:`score`)."""
    import numpy as np
    rec = _Recorder(base)
    m = score(env, rec, seeds)
    x = np.stack(rec.rows)
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd < STD_FLOOR, 1.0, sd)
    return [float(v) for v in mu], [float(v) for v in sd], int(x.shape[0]), m


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
    mean_target = args.mean_target if args.objective == "pooled+mean" else None
    w_range = (-args.weight_bound, args.weight_bound)
    seeds = list(range(args.first_seed, args.first_seed + args.episodes))
    names = [f"w{i}" for i in range(len(feats))] + ["b"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    objective_text = (f"gpu_hours_per_episode + {PENALTY:g} * max(0, {target} - pooled "
                      "sla_attainment)")
    if mean_target is not None:
        objective_text += (f" + {PENALTY:g} * max(0, {mean_target} - mean of episodes' "
                           "sla_attainment)")
    command = "python scripts/es_search.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    record: dict[str, Any] = {
        "framework": "es", "algo": "cmaes", "env_id": "DynoSim-v0", "seed": args.seed,
        "command": command, "config_source": args.config,
        "env_kwargs": ENV_KWARGS, "overrides": dict(args.set),
        "search": {"sampler": "optuna.samplers.CmaEsSampler", "sigma0": args.sigma0,
                   "x0": "bare base (w = 0, b = 0)", "trials": args.trials,
                   "episodes": {"split": "train", "seeds": seeds},
                   "popsize": args.popsize, "objective_kind": args.objective,
                   "objective": objective_text, "mean_target": mean_target,
                   "standardise": args.standardise,
                   "weight_range": list(w_range), "bias_range": [lo - 0.5, hi + 0.5],
                   "budget_min": args.budget_min},
        "env_config": cfg.to_dict(), "status": "running"}
    (out / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")

    t0, cpu0 = time.perf_counter(), time.process_time()
    stats: dict[str, Any] = {}
    base_score: dict[str, float] | None = None
    if args.standardise:
        bare = LinearResidualPolicy(feats, [0.0] * len(feats), 0.0, [lo, hi])
        mu, sd, steps, base_score = feature_stats(env, bare, seeds)
        stats = {"feature_mean": mu, "feature_std": sd}
        if not args.quiet:
            print(f"es_search: seed {args.seed}: feature mean/std from the bare base's "
                  f"{steps} steps on seeds {seeds[0]}-{seeds[-1]}, "
                  f"{(time.perf_counter() - t0) / 60:.1f} min", file=sys.stderr, flush=True)

    def policy_of(params: dict[str, float]) -> LinearResidualPolicy:
        return LinearResidualPolicy(feats, [params[f"w{i}"] for i in range(len(feats))],
                                    params["b"], [lo, hi], **stats)

    trials: list[dict[str, Any]] = []
    cut = False

    def objective(trial: "optuna.Trial") -> float:
        nonlocal cut
        params = {n: trial.suggest_float(n, *w_range) for n in names[:-1]}
        params["b"] = trial.suggest_float("b", lo - 0.5, hi + 0.5)
        if base_score is not None and not any(params.values()):
            m = dict(base_score)       # the bare base: the standardisation run's own score
        else:
            m = score(env, policy_of(params), seeds)
        f = objective_value(m["sla_attainment"], m["gpu_hours_per_episode"], target,
                            m["mean_episode_sla_attainment"], mean_target)
        trials.append({"number": trial.number, "params": params, **m, "objective": f})
        wall = time.perf_counter() - t0
        if not args.quiet:
            best = min(t["objective"] for t in trials)
            print(f"es_search: seed {args.seed} trial {trial.number} (of 0-{args.trials - 1}): "
                  f"{100 * m['sla_attainment']:.1f} % ({100 * m['mean_episode_sla_attainment']:.1f} "
                  f"% mean) at {m['gpu_hours_per_episode']:.2f} GPU-h (objective {f:.3f}, "
                  f"best {best:.3f}), {wall / 60:.1f} min", file=sys.stderr, flush=True)
        if wall > 60 * args.budget_min:
            cut = True
            trial.study.stop()
        return f

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        # Optuna 4.9 deprecated CmaEsSampler's x0 and sigma0 (removal planned for 6.0; the
        # project pins optuna<6) and documents no replacement: without them the mean starts
        # at the box's centre (not the bare base: the bias box is not centred on 0) and
        # sigma0 is min_range / 6, which would change the search. Only those two
        # FutureWarnings are silenced, only here.
        warnings.filterwarnings("ignore", message=r".*`(x0|sigma0)`.*",
                                category=FutureWarning)
        sampler = optuna.samplers.CmaEsSampler(x0={n: 0.0 for n in names},
                                               sigma0=args.sigma0, seed=args.seed,
                                               popsize=args.popsize)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.enqueue_trial({n: 0.0 for n in names})          # trial 0: the bare base
    study.optimize(objective, n_trials=args.trials)
    env.close()
    for t, ft in zip(trials, study.trials):               # CMA-ES generation (-1: trial 0)
        gen = [v for k, v in ft.system_attrs.items() if k.endswith("generation")]
        t["generation"] = int(gen[0]) if gen else -1
    feasible = [t for t in trials if meets_targets(t, target, mean_target)]
    kept = (min(feasible, key=lambda t: (t["gpu_hours_per_episode"], t["number"]))
            if feasible else min(trials, key=lambda t: (t["objective"], t["number"])))
    save_policy(policy_of(kept["params"]), out)
    reach = "the targets" if mean_target is not None else "the target"
    result = {"seed": args.seed, "target": target, "episodes": seeds,
              "kept": {"number": kept["number"], "rule": f"cheapest trial reaching {reach}"
                       if feasible else f"no trial reached {reach}: lowest objective"},
              "trials": trials}
    if mean_target is not None:
        result["mean_target"] = mean_target
    if stats:
        result["standardisation"] = {**stats, "features": feats,
                                     "rollouts": "bare base (w = 0, b = 0)",
                                     "episodes": {"split": "train", "seeds": seeds}}
    (out / "search.json").write_text(json.dumps(result, indent=1) + "\n")
    record.update(status="cut" if cut else "completed", trials_run=len(trials),
                  kept_trial=kept["number"], kept_rule=result["kept"]["rule"],
                  kept_training={k: kept[k] for k in ("sla_attainment",
                                                      "mean_episode_sla_attainment",
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

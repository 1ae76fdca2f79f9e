"""``dynosim tune``: search a planner's (or the KV router's) knobs on the training split, ship
the best.

``--policy heuristic:kv`` tunes Dynamo's KV router on ``DynoSimRouting-v0`` instead: its
knobs are :data:`KV_SPACE` (overlap credit, prefill load scale, temperature), trial 0 is
Dynamo's defaults, and the result is ``heuristic:kv-tuned``. Everything below applies alike.

The knobs are the fields of :class:`sim.planner.PlannerConfig`, read generically
(:func:`knob_space`): every field except the ones that define the problem rather than the
controller (:data:`FIXED`: SLAs, mode, GPUs per worker, the budget, predictor kwargs and
context length) is searched, so a knob added to the dataclass becomes tunable with no change
here. Ranges: :data:`RANGES` for knobs with a known domain; otherwise numbers from a quarter
to four times their default (log scale), booleans both ways, the decision interval over
1, 2, 3 and 6 env steps, the predictor over :data:`sim.predictors.PREDICTORS`. The load
target's KV thresholds (:data:`KV_RATE_KNOBS`) are conditional: searched only in trials whose
``optimization_target`` is ``load`` (no other target reads them; Dynamo's default for them is
None), the scale-up threshold from the scale-down one to 100, so a written YAML never holds a
scale-down threshold above the scale-up one. A sampled configuration PlannerConfig still
rejects is pruned: each pruned trial prints its reason on stderr, and the YAML records the
completed and pruned counts (``search.trials_completed``, ``search.trials_pruned``).

Search: Optuna's TPE sampler seeded with ``--seed`` (one process, one trial at a time, so
the study is deterministic); objective = mean episode reward (the env config's reward) over
the same ``--episodes`` training episodes (``split=train``, seeds ``seed..``) for every
trial. Trial 0 (printed as trial 1) is the planner's defaults (the env config's planner):
every searched knob at its default value, the KV thresholds unsearched unless the default
target is ``load``; a default outside its searched range (e.g. an ``env.planner_interval_s``
that is not 1, 2, 3 or 6 steps) is sampled instead, printed on stderr and listed in
``search.trial_0_sampled``. The best knobs are written as a small YAML
(``agents/tuned/NAME.yaml``, shipped in the package) and become ``heuristic:NAME``;
``best_trial`` (1-based) names the trial they come from and ``best_is_defaults`` is true
when it is trial 1 with no knob sampled (a tie keeps the earlier trial): the search found
nothing better than the defaults. ``knobs`` holds only the knobs the planner reads under the
best trial's target and predictor (:func:`sim.planner.fields_read`); the others it drew
(e.g. the predictor's under the load planner, the regression's under a static target) are
named in ``search.knobs_not_read``.

Search spaces (``--search-space``, recorded as ``search.space_version`` and in ``command``):
``v2`` (the default, above) and ``v1``, the space before the KV thresholds became
conditional: they are drawn in every trial, independently, in field order, and trial 0
leaves them to TPE (their default is None). ``v1`` regenerates the shipped
``heuristic:load-tuned`` exactly (``tests/test_tune_space.py``); the two spaces draw
different parameters, so the same ``--seed`` gives a different study (the same command under
``v2`` picks ``optimization_target: sla``, 45.1 % at 2.37 GPU-h on the training episodes).
"""
from __future__ import annotations

import dataclasses
import math
import re
import sys
import typing
from pathlib import Path
from typing import Any

import yaml

from sim.errors import InputError

from .heuristics import KV_KNOBS, TUNED_DIR, KvCostPolicy, PlannerPolicy

#: PlannerConfig fields that are the problem, not the controller: never tuned.
FIXED = ("mode", "ttft_ms", "itl_ms", "max_gpu_budget", "min_gpu_budget",
         "decode_engine_num_gpu")
#: The KV router's knobs (``heuristic:kv``, Dynamo's ``docs/router/kv_cache_routing.md``): overlap credit
#: (Dynamo allows values above 1, PR #11714), prefill load scale, selection temperature.
KV_SPACE: dict[str, dict[str, Any]] = {
    "overlap_credit": {"float": (0.0, 3.0), "log": False},
    "prefill_load_scale": {"float": (0.25, 4.0), "log": True},
    "temperature": {"float": (0.0, 1.0), "log": False},
}
#: Known domains: (low, high, log scale).
RANGES: dict[str, tuple[float, float, bool]] = {
    "load_scaling_down_sensitivity": (0.0, 100.0, False),
    "load_min_observations": (1, 20, False),
    "decode_scale_up_kv_rate": (0.0, 100.0, False),
    "decode_scale_down_kv_rate": (0.0, 100.0, False),
}
#: The load target's KV-usage thresholds (percent): searched only when the trial's
#: ``optimization_target`` is ``load``; the scale-up one is drawn above the scale-down one.
KV_RATE_KNOBS = ("decode_scale_down_kv_rate", "decode_scale_up_kv_rate")


#: ``--search-space`` values (module doc): v1 = the KV thresholds unconditional.
SEARCH_SPACES = ("v1", "v2")


def knob_space(env_cfg, version: str = "v2") -> dict[str, dict[str, Any]]:
    """Tunable PlannerConfig fields -> an Optuna distribution spec."""
    from sim.planner import PlannerConfig
    from sim.planner import OPTIMIZATION_TARGETS
    from sim.predictors import PREDICTORS
    hints = typing.get_type_hints(PlannerConfig)
    base = PlannerConfig()
    space: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(PlannerConfig):
        name = f.name
        if name in FIXED:
            continue
        default = getattr(base, name)
        typ = hints[name]
        args = typing.get_args(typ) or (typ,)
        if name == "load_adjustment_interval_seconds":
            step = env_cfg.env.interval_s
            space[name] = {"choices": [step * k for k in (1, 2, 3, 6)]}
        elif name == "min_endpoint":
            space[name] = {"int": (env_cfg.env.min_endpoint, max(env_cfg.env.min_endpoint,
                                                                 env_cfg.max_workers // 2))}
        elif name.endswith("predictor") and str in args:
            space[name] = {"choices": list(PREDICTORS)}
        elif name == "optimization_target":
            space[name] = {"choices": list(OPTIMIZATION_TARGETS)}
        elif bool in args:
            space[name] = {"choices": [True, False]}
        elif name in RANGES:
            lo, hi, log = RANGES[name]
            space[name] = {"int" if int in args and float not in args else "float":
                           (lo, hi), "log": log}
        elif int in args and float not in args and isinstance(default, int):
            space[name] = {"int": (max(1, default // 4), max(2, default * 4)), "log": True}
        elif float in args and isinstance(default, (int, float)) and default > 0:
            space[name] = {"float": (default / 4, default * 4), "log": True}
    if version != "v1" and all(k in space for k in KV_RATE_KNOBS):
        down, up = KV_RATE_KNOBS
        space[down]["only_if"] = {"optimization_target": "load"}
        space[up]["only_if"] = {"optimization_target": "load"}
        space[up]["above"] = down               # its range starts at the trial's scale-down
        space = {k: v for k, v in space.items() if k != up} | {up: space[up]}
    return space


def _active(spec: dict[str, Any], knobs: dict[str, Any], base: dict[str, Any]) -> bool:
    """Whether a knob is searched given the knobs drawn so far (``only_if``: each named
    knob, drawn or else at its ``base`` value, equals the given value)."""
    return all(knobs.get(k, base.get(k)) == v for k, v in spec.get("only_if", {}).items())


def _suggest(trial, space: dict[str, dict[str, Any]],
             base: dict[str, Any] | None = None) -> dict[str, Any]:
    """One trial's knobs: every knob of ``space`` that is active (:func:`_active`; ``base``
    are the planner's values of the knobs not drawn)."""
    out: dict[str, Any] = {}
    for name, spec in space.items():
        if not _active(spec, out, base or {}):
            continue
        if "above" in spec:
            lo, hi = spec["float"]
            out[name] = trial.suggest_float(name, max(float(lo), out[spec["above"]]),
                                            float(hi), log=spec.get("log", False))
        elif "choices" in spec:
            out[name] = trial.suggest_categorical(name, spec["choices"])
        elif "int" in spec:
            lo, hi = spec["int"]
            out[name] = trial.suggest_int(name, int(lo), int(hi), log=spec.get("log", False))
        else:
            lo, hi = spec["float"]
            out[name] = trial.suggest_float(name, float(lo), float(hi),
                                            log=spec.get("log", False))
    return out


def score(kind: str, knobs: dict[str, Any], env, runs: list[tuple[dict, int]]) -> dict:
    from .evaluate import run_episode
    pol = KvCostPolicy(env, knobs=knobs) if kind == "kv" else PlannerPolicy(kind, env, knobs=knobs)
    rewards, met, dec, gpu = [], 0, 0, 0.0
    for opts, s in runs:
        r = run_episode(env, pol, opts, s)["summary"]
        rewards.append(r["reward"])
        met += r["requests_met"]
        dec += r["requests_decided"]
        gpu += r["gpu_hours"]
    return {"objective": sum(rewards) / len(rewards), "sla_attainment": met / dec if dec else 1.0,
            "gpu_hours_per_episode": gpu / len(runs)}


def tune(policy: str, *, trials: int = 30, episodes: int = 6, config: Any = None, seed: int = 0,
         name: str | None = None, out: str | Path | None = None,
         overrides: dict[str, Any] | None = None, quiet: bool = True,
         replace: bool = False, search_space: str = "v2") -> tuple[Path, dict]:
    """Run the study; write the YAML; return its path and the best trial's record.

    Without ``out`` the YAML is ``agents/tuned/NAME.yaml`` (NAME default ``<planner>-tuned``);
    if that file (or ``out``) exists (a shipped baseline such as ``load-tuned``) it is
    replaced only with ``replace=True`` (``--replace``), else :class:`InputError` before the
    study runs. ``search_space``: one of :data:`SEARCH_SPACES` (module doc)."""
    import optuna
    from sim.planner import PlannerConfig

    from .evaluate import PolicySpec, make_eval_env

    kind = policy.split(":", 1)[1] if policy.startswith("heuristic:") else policy
    if search_space not in SEARCH_SPACES:
        raise InputError(f"unknown search space {search_space!r}; expected one of "
                         f"{', '.join(SEARCH_SPACES)}", field="--search-space")
    if kind not in ("load", "throughput", "kv"):
        raise InputError(f"can tune heuristic:load, heuristic:throughput or heuristic:kv, got "
                         f"{policy!r}", field="--policy")
    # a file written elsewhere is named after itself (copying it to agents/tuned/ under the
    # default name would replace the shipped baseline)
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise InputError(f"a baseline name is letters, digits, '_', '-' and '.' (it names "
                         f"heuristic:NAME and agents/tuned/NAME.yaml), got {name!r}",
                         field="--name")
    name = name or (Path(out).stem if out else f"{kind}-tuned")
    path = Path(out) if out else TUNED_DIR / f"{name}.yaml"
    if out is None and path.exists() and not replace:
        raise InputError(f"agents/tuned/{name}.yaml exists (heuristic:{name}, shipped): pass "
                         "--replace to overwrite it, or --name NAME / --out FILE to write a new "
                         "baseline", field="--name")
    if out is not None and path.exists() and not replace:   # agents/tuned/*.yaml included
        raise InputError(f"{out} exists: pass --replace to overwrite it, or give a new FILE",
                         field="--out")
    env_id = "DynoSimRouting-v0" if kind == "kv" else "DynoSim-v0"
    pol = PolicySpec(policy, "heuristic", env_id)
    env, cfg = make_eval_env(pol, env_id, config, dict(overrides or {}))
    runs = [({"split": "train"}, seed + k) for k in range(episodes)]
    if kind == "kv":
        space = dict(KV_SPACE)
        defaults = dict(KV_KNOBS)

        def planner_config(cfg, knobs=None):      # the router's knobs need no validation
            return None
    else:
        space = knob_space(cfg, search_space)
        from dynosim_gym.autoscaling_env import planner_config
        defaults = {k: getattr(planner_config(cfg), k) for k in space}

    # bad input (a trace row, a window the trace cannot give) fails here, before the study,
    # as the one-line error: every training episode is built once up front
    for opts, s in runs:
        env.reset(seed=s, options=opts)
    failure: list[InputError] = []
    base = {} if kind == "kv" else dataclasses.asdict(planner_config(cfg))

    def objective(trial) -> float:
        knobs = _suggest(trial, space, base)
        try:
            planner_config(cfg, knobs)
        except InputError as exc:
            # not silent: the trial is left out of the study, say which and why
            print(f"tune: trial {trial.number + 1}/{trials} pruned: the planner rejects its "
                  f"knobs ({exc.format()})", file=sys.stderr, flush=True)
            raise optuna.TrialPruned() from None
        try:
            res = score(kind, knobs, env, runs)
        except InputError as exc:
            # Optuna logs a failed trial's traceback: stop the study quietly and raise the
            # one-line error after it
            failure.append(exc)
            trial.study.stop()
            raise optuna.TrialPruned() from None
        for k, v in res.items():
            trial.set_user_attr(k, v)
        if not quiet:
            print(f"tune: trial {trial.number + 1}/{trials} objective {res['objective']:.4f} "
                  f"SLA {res['sla_attainment']:.1%} GPU-h/ep "
                  f"{res['gpu_hours_per_episode']:.3f}", file=sys.stderr, flush=True)
        return res["objective"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    # trial 0: the defaults, for every knob the defaults search (a knob whose default
    # leaves its range is sampled: said here and recorded)
    first: dict[str, Any] = {}
    sampled = []
    for k, spec in space.items():
        if not _active(spec, first, defaults):
            continue
        floor = first.get(spec.get("above"), -math.inf)     # the scale-up KV threshold's
        if _in_space(defaults[k], spec) and (floor == -math.inf or defaults[k] >= floor):
            first[k] = defaults[k]
        else:
            sampled.append(k)
    if sampled:
        print(f"tune: trial 1 is the defaults except {', '.join(sampled)} (default outside "
              "the searched range: sampled)", file=sys.stderr, flush=True)
    study.enqueue_trial(first, skip_if_exists=True)
    study.optimize(objective, n_trials=trials, n_jobs=1)
    env.close()
    if failure:
        raise failure[0]
    states = [t.state.name for t in study.trials]
    completed, pruned = states.count("COMPLETE"), states.count("PRUNED")
    if not completed:
        raise InputError(f"all {trials} trials were pruned (their reasons are above): "
                         "no configuration to write", field="--trials")
    best = study.best_trial
    knobs = dict(best.params)
    unread: list[str] = []
    if kind != "kv":
        from sim.planner import fields_read
        full = PlannerConfig(**{**dataclasses.asdict(planner_config(cfg)), **knobs})  # valid
        # a knob the planner does not read under the best trial's target / predictor (e.g.
        # the KV thresholds under latency) changed nothing: the file holds only what is read
        read = fields_read(full, kind)
        unread = [k for k in knobs if k not in read]
        knobs = {k: v for k, v in knobs.items() if k in read}
    record = {
        "base": kind,
        "knobs": knobs,
        "objective": float(best.value),
        "train_sla_attainment": float(best.user_attrs["sla_attainment"]),
        "train_gpu_hours_per_episode": float(best.user_attrs["gpu_hours_per_episode"]),
        "default_objective": float(study.trials[0].value) if study.trials[0].value is not None
        else None,
        # trial 0 is the defaults (unless a knob was sampled): best there means the search
        # found nothing better and heuristic:NAME is the untuned planner (router)
        "best_trial": best.number + 1,
        "best_is_defaults": best.number == 0 and not sampled,
        "tuned_on": {"config": str(config) if config is not None else
                     ("routing_default" if kind == "kv" else "autoscale_default"),
                     "overrides": dict(overrides or {}), "split": "train",
                     "scenarios": cfg.env.scenarios, "episodes": episodes,
                     "seeds": list(range(seed, seed + episodes))},
        "search": {"sampler": "optuna.samplers.TPESampler", "seed": seed, "trials": trials,
                   "trials_completed": completed, "trials_pruned": pruned,
                   "space_version": search_space,
                   "trial_0_sampled": sampled, "knobs_not_read": unread, "space": space,
                   "optuna": optuna.__version__},
        "command": (f"dynosim tune --policy heuristic:{kind} --trials {trials} --episodes "
                    f"{episodes} --seed {seed}" + (f" --config {config}" if config else "")
                    + (f" --name {name}" if name != f"{kind}-tuned" else "")
                    + (f" --search-space {search_space}" if search_space != "v2" else "")
                    + (" --replace" if out is None else "")),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # heuristic:NAME reads agents/tuned/NAME.yaml: elsewhere the file must be copied there
    shipped = path.resolve() == (TUNED_DIR / f"{name}.yaml").resolve()
    use = (f"used as heuristic:{name}" if shipped else
           f"copy it to agents/tuned/{name}.yaml to use it as heuristic:{name}")
    path.write_text(f"# Written by `dynosim tune` (agents/tune.py); {use}.\n"
                    + yaml.safe_dump(record, sort_keys=False))
    return path, record


def _in_space(value: Any, spec: dict[str, Any]) -> bool:
    if "choices" in spec:
        return value in spec["choices"]
    lo, hi = spec.get("int") or spec.get("float")
    return isinstance(value, (int, float)) and lo <= value <= hi

"""Learned autoscalers on the v0.2 held-out leaderboard, over training seeds (issue 11).

Trains one algorithm for several seeds on the TRAINING families (``dynosim train``), scores
each seed on the held-out families exactly as the heuristics in ``docs/benchmark`` were
scored (``dynosim evaluate --episodes 6 --seed 0 --split eval``, evaluation config's
reward), and summarises mean ± std over the seeds::

    python scripts/learned_benchmark.py --algo ppo --seeds 0-4 --runs runs/learned \\
        --out docs/benchmark [--timesteps N] [--set KEY=VALUE ...] [--name ppo]
    python scripts/learned_benchmark.py --algo ppo --seeds 0-4 --runs runs/learned \\
        --out docs/benchmark --score-only          # re-score existing runs
    python scripts/learned_benchmark.py --algo ppo --seeds 0-4 --out docs/benchmark \\
        --summary-only  # from the per-seed files (e.g. seeds scored in parallel, one
        # --seeds S --score-only each)

``--out`` defaults to ``out/benchmark`` (untracked); the committed result files are
regenerated with ``--out docs/benchmark``, as the README's commands say.

Writes ``OUT/learned_NAME_sSEED.json`` (one evaluation per seed, with its train wall time)
and ``OUT/learned_NAME.json`` (the per-seed rows, the mean ± std over seeds and
``target``: :func:`target_check`), and prints the leaderboard row and whether the issue's
target is met, pooled and as a mean of per-episode attainment, with per-family rows beside
the tuned planner's. Never looks at the held-out families during training.

``--ship NAME --candidates NAME1,NAME2,...`` chooses one trained seed, across the candidate
algorithms (``RUNS/NAMEk/sSEED``, seeds ``--seeds``), and copies it to
``agents/pretrained/NAME.zip`` (+ ``.json``: its run record, the command that regenerates it and
how it was chosen). The rule was fixed before the runs it chooses among were trained, and it
reads TRAINING-split episodes only (:data:`SELECT`: ``dynosim evaluate --split train
--episodes 3 --seed 0``; per candidate ``OUT/selection/train_split_NAME_sSEED.json``, the
baseline ``OUT/selection/train_split_BASELINE.json``): the seed with the fewest GPU-hours
among those whose SLA attainment reaches the tuned planner's (:data:`BASELINE`) on the same
episodes -- the issue's target, measured on training episodes; if none reaches it, the seed
with the highest attainment. Never the held-out scores. From round 9b on, a candidate that
equals its heuristic base there is not a candidate (:data:`BASE_EQUAL_RULE`, checked here:
a residual candidate's bare base is scored on the same episodes, per candidate
``OUT/selection/train_split_NAME_sSEED_bare_base.json``); the excluded ones are printed and
recorded in the shipped ``.json`` (``chosen_by.excluded``).

Lagrangian PPO's SLA target (``env.reward.sla_target``, which the dual variable enforces and
the ``oracle:schedule-greedy`` teacher aims at) is fixed by a rule decided before training, on
training episodes only (:data:`LAGRANGIAN_TARGET_RULE`): the tuned planner's attainment on
its own tuning episodes (``train_sla_attainment`` of ``agents/tuned/load-tuned.yaml``, the
same 3 training-split episodes as :data:`SELECT`), rounded up to the next percent
(``lagrangian_target()``). With the v0.2.2 families that is 66.5 % -> 0.67. The 95 %
target was out of reach on the training families for these policies, so its dual rose
without bound and bought attainment at any GPU price.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynosim.options import read_json  # noqa: E402
from sim.wording import plural  # noqa: E402

#: Leaderboard columns: (JSON key, label, format).
METRICS = (("sla_attainment", "SLA attainment", "{:.1%}"),
           ("gpu_hours_per_episode", "GPU-hours / episode", "{:.2f}"),
           ("p90_ttft_ms", "pooled p90 TTFT (ms)", "{:.0f}"),
           ("scaling_events", "scaling events", "{:.0f}"),
           ("reversals_per_hour", "reversals / h", "{:.1f}"),
           ("flaps_per_hour", "flaps / h", "{:.1f}"),
           ("mean_reward", "mean reward", "{:.1f}"))
#: The held-out episodes every row of docs/benchmark was scored on.
EVAL = {"episodes": 6, "seed": 0, "split": "eval"}
#: The training-split episodes the shipped checkpoint is chosen on, and the baseline it must
#: match there (``--ship``).
SELECT = {"episodes": 3, "seed": 0, "split": "train"}
BASELINE = "heuristic:load-tuned"
#: How Lagrangian PPO's SLA target is set (module doc; fixed before its seeds were trained).
#: The held-out result of :data:`BASELINE` the target is judged against, and the GPU-hours
#: saving the issue asks for ("≥ 15 % fewer GPU-hours").
BASELINE_RESULT = ROOT / "docs" / "benchmark" / "heuristic_load-tuned.json"
GPU_SAVING = 0.15
LAGRANGIAN_TARGET_RULE = ("the tuned planner's training-split attainment on its tuning "
                          "episodes, rounded up to the next percent")


def lagrangian_target(tuned: Path = ROOT / "agents" / "tuned" / "load-tuned.yaml") -> float:
    """:data:`LAGRANGIAN_TARGET_RULE` applied to ``tuned`` (default
    ``agents/tuned/load-tuned.yaml``), read with the project's YAML loader (YAML 1.2
    numbers; a bad file or a missing or non-numeric ``train_sla_attainment`` is an
    InputError naming the file, line and key)."""
    import math

    from sim.config import read_yaml
    from sim.errors import InputError
    rec, where = read_yaml(tuned)
    value = rec.get("train_sla_attainment") if isinstance(rec, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 <= value <= 1:
        _, line = where.get("train_sla_attainment", (None, None))
        raise InputError(f"expected a share in [0, 1], got {value!r}", file=str(tuned),
                         line=line, field="train_sla_attainment")
    return math.ceil(100 * value - 1e-9) / 100


def seeds(text: str) -> list[int]:
    """``--seeds``: ``LO-HI`` (inclusive) or ``A,B,...``; each a valid seed
    (``sim.schema.SEED``), at least one. ArgumentTypeError (argparse's one-line usage
    error) otherwise."""
    import argparse

    from agents.cli import _seed
    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            out = list(range(_seed(lo), _seed(hi) + 1))
        else:
            out = [_seed(s) for s in text.split(",")]
    except (ValueError, argparse.ArgumentTypeError):
        out = []
    if not out:
        raise argparse.ArgumentTypeError(f"expected LO-HI (LO <= HI) or A,B,... seeds, "
                                         f"got {text!r}")
    return out


def seed_row(ev: dict) -> dict:
    """One seed's leaderboard figures from its evaluation file."""
    return {k: ev.get(k) for k, _, _ in METRICS} | {
        k: ev.get(k) for k in ("train_seed", "train_wall_s", "train_cpu_s", "train_timesteps",
                               "train_overrides")}


def summarise(rows: list[dict]) -> dict:
    """Mean and (sample) std over seeds of each metric; std 0 with one seed."""
    out = {}
    for key, _, _ in METRICS + (("train_wall_s", "", ""), ("train_cpu_s", "", "")):
        vals = [float(r[key]) for r in rows if r.get(key) is not None]
        if vals:
            out[key] = {"mean": statistics.fmean(vals),
                        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
    return out


def _episode_view(ev: dict) -> dict:
    """An evaluation's pooled and mean-episode attainment, GPU-hours per episode and
    per-family figures; recomputed from ``per_episode`` for files written before
    ``dynosim evaluate`` reported them."""
    from agents.evaluate import _episode_attainment, _per_family
    eps = ev["per_episode"]
    return {"sla_attainment": ev["sla_attainment"],
            "mean_episode_sla_attainment": statistics.fmean(_episode_attainment(e)
                                                            for e in eps),
            "gpu_hours_per_episode": ev["gpu_hours_per_episode"],
            "per_family": _per_family(eps)}


def target_check(evals: list[dict], baseline: dict) -> dict:
    """Issue 11's target for one recipe (its seeds' held-out evaluations ``evals``) against
    the tuned planner's held-out evaluation ``baseline``, judged on the mean over seeds:
    ``pooled`` -- pooled attainment ≥ the planner's and GPU-hours per episode ≤ (1 −
    :data:`GPU_SAVING`) x the planner's; ``mean_episode`` -- the same with the mean of
    per-episode attainment (so a policy cannot trade whole light episodes for the heavy
    ones, as round 4d did); ``per_family`` -- per workload family, the mean over seeds
    of pooled and mean-episode attainment and GPU-hours per episode, beside the
    planner's, and whether the family's mean-episode attainment reaches the planner's."""
    views = [_episode_view(e) for e in evals]
    base = _episode_view(baseline)
    gpu_max = (1.0 - GPU_SAVING) * base["gpu_hours_per_episode"]
    gpu = statistics.fmean(v["gpu_hours_per_episode"] for v in views)
    out: dict = {"baseline": BASELINE, "gpu_hours_per_episode_max": gpu_max,
                 "gpu_hours_per_episode": gpu}
    for key, label in (("sla_attainment", "pooled"),
                       ("mean_episode_sla_attainment", "mean_episode")):
        sla = statistics.fmean(v[key] for v in views)
        out[label] = {"sla_attainment": sla, "baseline_sla_attainment": base[key],
                      "met": sla >= base[key] and gpu <= gpu_max}
    fams = {}
    for fam, b in base["per_family"].items():
        rows = [v["per_family"][fam] for v in views if fam in v["per_family"]]
        f = {k: statistics.fmean(r[k] for r in rows) for k in (
            "sla_attainment", "mean_episode_sla_attainment", "gpu_hours_per_episode")}
        f["baseline"] = {k: b[k] for k in f}
        f["episodes"] = b["episodes"]
        f["reaches_baseline"] = f["mean_episode_sla_attainment"] >= \
            b["mean_episode_sla_attainment"]
        fams[fam] = f
    out["per_family"] = fams
    return out


def target_lines(t: dict) -> list[str]:
    """:func:`target_check` as text: the verdicts, then one row per family."""
    def verdict(label: str, k: str) -> str:
        p = t[k]
        return (f"target ({label}: ≥ {p['baseline_sla_attainment']:.1%}, ≤ "
                f"{t['gpu_hours_per_episode_max']:.2f} GPU-h/episode): "
                f"{'MET' if p['met'] else 'missed'} ({p['sla_attainment']:.1%} at "
                f"{t['gpu_hours_per_episode']:.2f})")
    lines = [verdict("pooled", "pooled"), verdict("mean of episodes", "mean_episode"),
             f"| family (episodes) | pooled SLA | mean of episodes | GPU-h / episode | "
             f"{t['baseline']}: pooled, mean of episodes, GPU-h |", "|---|---:|---:|---:|---|"]
    for fam, f in t["per_family"].items():
        b = f["baseline"]
        lines.append(f"| {fam} ({f['episodes']}) | {f['sla_attainment']:.1%} | "
                     f"{f['mean_episode_sla_attainment']:.1%} | "
                     f"{f['gpu_hours_per_episode']:.2f} | {b['sla_attainment']:.1%}, "
                     f"{b['mean_episode_sla_attainment']:.1%}, "
                     f"{b['gpu_hours_per_episode']:.2f} |")
    return lines


def row(name: str, summary: dict, n: int) -> str:
    cells = []
    for key, _, fmt in METRICS:
        if key not in summary:           # an evaluation file older than the metric
            cells.append("-")
            continue
        m, s = summary[key]["mean"], summary[key]["std"]
        if key == "sla_attainment":
            cells.append(f"{m:.1%} (± {100 * s:.1f})")
        else:
            cells.append(f"{fmt.format(m)} ± {fmt.format(s)}")
    return f"| {name} ({plural(n, 'seed')}) | " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    """Exit code: 0, or 2 with one stderr line on bad input (the ``dynosim`` CLI's path)."""
    from agents.cli import _pos_int, _set

    from dynosim.options import Parser, ScriptHelpFormatter
    ap = Parser(prog="learned_benchmark.py", description=__doc__, formatter_class=ScriptHelpFormatter)
    ap.add_argument("--algo", required=True, help="ppo | ppo_lstm | ... (agents/algos.py); required")
    ap.add_argument("--name", default=None, help="row name (default: the algo)")
    ap.add_argument("--seeds", type=seeds, default=[0, 1, 2, 3, 4],
                    help="training seeds, e.g. 0-4 or 0,3 (default: 0-4)")
    ap.add_argument("--runs", default="runs/learned",
                    help="parent of the run directories RUNS/NAME/sSEED")
    ap.add_argument("--out", default="out/benchmark",
                    help="directory of the result files (--out docs/benchmark: the committed "
                         "ones, which a re-run replaces)")
    ap.add_argument("--timesteps", type=_pos_int, default=None,
                    help="PPO steps per seed (default: the recipe's n_timesteps)")
    ap.add_argument("--hyperparams", default=None, metavar="YAML",
                    help="recipe file (default: agents/hyperparams/ALGO.yml; round 3's: "
                         "agents/hyperparams/archive/ppo_round3.yml); with --ship, the "
                         "candidates' recipe, named in the shipped command")
    ap.add_argument("--set", type=_set, action="append", default=[], metavar="KEY=VALUE",
                    help="env config override for training, as `dynosim train --set` "
                         "(repeatable; default: none)")
    ap.add_argument("--score-only", action="store_true",
                    help="score existing runs (RUNS/NAME/sSEED) without training")
    ap.add_argument("--summary-only", action="store_true",
                    help="neither train nor score: summarise OUT/learned_NAME_sSEED.json")
    ap.add_argument("--ship", metavar="NAME", default=None,
                    help="only choose a seed by the fixed training-split rule (module doc) "
                         "among --candidates and ship it as pretrained:NAME (default: none, no "
                         "shipping)")
    ap.add_argument("--candidates", default=None, metavar="NAME,...",
                    help="with --ship: the run names to choose among (default: --name)")
    ap.add_argument("--score-train", action="store_true",
                    help="only score the seeds on the selection's training-split episodes "
                         "(OUT/selection; --ship reuses these files)")
    from dynosim.cli import run_script
    return run_script(ap, argv, run)


def run(args) -> int:
    """``main``'s work on parsed flags; bad input raises InputError (one line, exit 2)."""
    from agents.evaluate import evaluate
    from agents.train import train, training_env_config
    # --set and the recipe checked before any work, in every mode (a re-score with the
    # training command's flags checks them too; only training uses them)
    training_env_config(args.algo, "DynoSim-v0", hyperparams=args.hyperparams,
                        overrides=dict(args.set))
    name = args.name or args.algo
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.score_train:
        train_split_scores(args, [name], out)
        return 0
    if args.ship:
        names = args.candidates.split(",") if args.candidates else [name]
        best = ship(args, names, out)
        if best is not None:
            print(f"shipped {best[0]} seed {best[1]} as pretrained:{args.ship}",
                  file=sys.stderr)
        return 0
    rows, evals = [], []
    for s in args.seeds:
        run = Path(args.runs) / name / f"s{s}"
        if args.summary_only:
            file = out / f"learned_{name}_s{s}.json"
            if not file.is_file():
                print(f"learned_benchmark: error: {file}: no result for {name} seed {s} "
                      f"(train and score it first, or pass --out/--name/--seeds that exist)",
                      file=sys.stderr)
                return 2
            ev = read_json(file, dict)
            rows.append(seed_row(ev))
            evals.append(ev)
            continue
        if not args.score_only:
            t0 = time.perf_counter()
            train(args.algo, "DynoSim-v0", timesteps=args.timesteps, out=run, seed=s,
                  overrides=dict(args.set), hyperparams=args.hyperparams)
            print(f"{name} seed {s}: trained in {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)
        rec = read_json(run / "run.json", dict)
        ev = evaluate(str(run), "DynoSim-v0", **EVAL).as_dict()
        ev.update(train_seed=s, train_wall_s=rec.get("train_wall_s"),
                  train_cpu_s=rec.get("train_cpu_s"),
                  train_timesteps=rec.get("timesteps"), train_overrides=rec.get("overrides"))
        (out / f"learned_{name}_s{s}.json").write_text(json.dumps(ev, indent=2) + "\n")
        print(f"{name} seed {s}: SLA {ev['sla_attainment']:.1%}, "
              f"{ev['gpu_hours_per_episode']:.2f} GPU-h/episode, "
              f"{plural(ev['scaling_events'], 'scaling event')}", file=sys.stderr, flush=True)
        rows.append(seed_row(ev))
        evals.append(ev)
    summary = summarise(rows)
    target = target_check(evals, read_json(BASELINE_RESULT, dict))
    (out / f"learned_{name}.json").write_text(json.dumps(
        {"policy": name, "algo": args.algo, "seeds": args.seeds, "evaluation": EVAL,
         "mean_std_over_seeds": summary, "target": target, "per_seed": rows},
        indent=2) + "\n")
    print(row(name, summary, len(rows)))
    print("\n".join(target_lines(target)))
    return 0


def select(scores: dict[tuple[str, int], dict], baseline: dict) -> tuple[str, int]:
    """The fixed rule (module doc): fewest GPU-hours among the candidates whose SLA
    attainment reaches ``baseline``'s; else the highest attainment. Ties: first candidate."""
    ok = [k for k, e in scores.items() if e["sla_attainment"] >= baseline["sla_attainment"]]
    if ok:
        return min(ok, key=lambda k: scores[k]["gpu_hours_per_episode"])
    return max(scores, key=lambda k: scores[k]["sla_attainment"])


def train_split_scores(args, names: list[str], out: Path) -> tuple[dict, dict]:
    """(baseline, {(name, seed): evaluation}) on the :data:`SELECT` episodes, each read
    from ``OUT/selection`` or scored and written there."""
    from agents.evaluate import evaluate
    sel = out / "selection"
    sel.mkdir(parents=True, exist_ok=True)

    def scored(spec: str, file: Path) -> dict:
        if not file.exists():
            ev = evaluate(spec, "DynoSim-v0", **SELECT).as_dict()
            file.write_text(json.dumps(ev, indent=2) + "\n")
        return read_json(file, dict)
    base = scored(BASELINE, sel / f"train_split_{BASELINE.split(':', 1)[1]}.json")
    # a candidate with a selection file is scored by it (its run may live elsewhere; only
    # the chosen one's model is needed, by ship)
    scores = {(n, s): scored(str(Path(args.runs) / n / f"s{s}"),
                             sel / f"train_split_{n}_s{s}.json")
              for n in names for s in args.seeds
              if (Path(args.runs) / n / f"s{s}" / "model.zip").exists()
              or (Path(args.runs) / n / f"s{s}" / "policy.json").exists()   # es_search.py
              or (sel / f"train_split_{n}_s{s}.json").exists()}
    return base, scores


#: Round 9b's amendment to the shipping rule (README, "Shipping rule and pretrained
#: checkpoint"), applied by ``--ship`` (:func:`base_exclusions`, :func:`equals_base`).
BASE_EQUAL_RULE = ("a candidate with a heuristic base (env.action.type: residual) whose "
                   "per-episode results on the training-split selection episodes are "
                   "identical to its bare base's (offset 0 at every step, the candidate's "
                   "policy interface; scripts/residual_base.py --offset 0) is the heuristic, "
                   "not a learned autoscaler, and is not shipped (round 9b's amendment)")


def bare_base(interface: dict, episodes: dict = SELECT) -> dict:
    """The evaluation (``Evaluation.as_dict()``) of the bare base of a residual policy
    whose policy interface is ``interface`` (``env.observation``/``action``/``interval_s``,
    as its evaluation file records it): offset 0 at every step
    (:class:`agents.heuristics.OffsetPolicy`, as ``scripts/residual_base.py --offset 0``)
    on ``episodes`` (:data:`SELECT`), in the env ``dynosim evaluate`` scores the policy in
    (the default config with that interface on top). InputError unless the interface's
    action is residual."""
    import dynosim_gym  # noqa: F401  (registers the ids)
    from agents.evaluate import (PolicySpec, episode_plan, resolved_reward, run_episode,
                                 summarise)
    from agents.heuristics import OffsetPolicy
    pol = PolicySpec(spec="residual offset 0", kind="heuristic", env_id="DynoSim-v0",
                     run={"env_config": {"env": interface}})
    env, cfg, runs, plan = episode_plan(pol, "DynoSim-v0", None, {}, None, None, None,
                                        episodes["episodes"], episodes["seed"],
                                        episodes["split"])
    try:
        policy = OffsetPolicy(env, 0, field="policy_interface.action.type")
        results = [run_episode(env, policy, opts, s) for opts, s in runs]
        reward = resolved_reward(cfg, env.unwrapped)
    finally:
        env.close()
    return summarise(pol.spec, results, cfg, reward, pol.interface(), plan).as_dict()


def equals_base(e: dict, base: dict) -> bool:
    """Whether evaluation ``e`` has ``base``'s per-episode results (:data:`BASE_EQUAL_RULE`):
    the same episodes, and on each every recorded figure the two share, ``reward`` aside."""
    a, b = e.get("per_episode") or [], base.get("per_episode") or []
    if not a or len(a) != len(b):
        return False
    for x, y in zip(a, b):
        keys = (set(x) & set(y)) - {"reward"}
        if not {"seed", "requests_met", "requests_decided", "gpu_hours"} <= keys:
            return False
        if any(x[k] != y[k] for k in keys):
            return False
    return True


def base_exclusions(scores: dict[tuple[str, int], dict],
                    sel: Path) -> dict[tuple[str, int], str]:
    """The candidates :data:`BASE_EQUAL_RULE` excludes, each with why. A residual
    candidate's bare base is read from ``SEL/train_split_NAME_sSEED_bare_base.json`` or
    scored (:func:`bare_base`) and written there; other candidates have no heuristic base
    and are kept."""
    out = {}
    for (n, s), e in scores.items():
        iface = e.get("policy_interface") or {}
        if (iface.get("action") or {}).get("type") != "residual":
            continue
        file = sel / f"train_split_{n}_s{s}_bare_base.json"
        if not file.exists():
            print(f"{n} s{s}: scoring its bare base (offset 0) on the selection episodes",
                  file=sys.stderr, flush=True)
            file.write_text(json.dumps(bare_base(iface), indent=2) + "\n")
        base = read_json(file, dict)
        if equals_base(e, base):
            out[(n, s)] = (f"equals its heuristic base (offset 0 at every step) on every "
                           f"selection episode ({file.name})")
    return out


def ship(args, names: list[str], out: Path) -> tuple[str, int] | None:
    """Choose a seed by :func:`select` on training-split episodes and copy it to
    agents/pretrained/NAME.*; None if the choice is the one shipped already (its run need
    not be under ``--runs``). A candidate with a selection file counts without its run."""
    import shutil

    from agents.evaluate import PRETRAINED_DIR
    from agents.train import load_hyperparams
    base, scores = train_split_scores(args, names, out)
    for (n, s), e in scores.items():
        print(f"{n} s{s}: train-split SLA {e['sla_attainment']:.1%}, "
              f"{e['gpu_hours_per_episode']:.2f} GPU-h/episode", file=sys.stderr)
    excluded = base_exclusions(scores, out / "selection")
    for (n, s), why in excluded.items():
        print(f"excluded {n} s{s}: {why}", file=sys.stderr)
    kept = {k: e for k, e in scores.items() if k not in excluded}
    if not kept:
        from sim.errors import InputError
        raise InputError(f"every candidate ({plural(len(scores), 'seed')}) equals its "
                         "heuristic base on the selection episodes: none is a learned "
                         "autoscaler to ship", field="--candidates")
    best = select(kept, base)
    name, seed = best
    shipped = PRETRAINED_DIR / f"{args.ship}.json"
    if shipped.is_file() and read_json(shipped, dict).get("command", "").endswith(
            f"/{name}/s{seed}"):
        print(f"the rule keeps pretrained:{args.ship} ({name} seed {seed}, shipped already)",
              file=sys.stderr)
        return None
    if (Path(args.runs) / name / f"s{seed}" / "policy.json").is_file():
        raise SystemExit(f"learned_benchmark: error: the rule chose {name} seed {seed}, a "
                         "scripts/es_search.py run (policy.json): agents/pretrained holds "
                         "stable-baselines3 models only, so it is not copied there")
    if not (Path(args.runs) / name / f"s{seed}" / "model.zip").is_file():
        from sim.errors import InputError
        raise InputError(f"the rule chose {name} seed {seed}, whose run "
                         f"{Path(args.runs) / name / f's{seed}'} is not here", field="--runs")
    rec = read_json(Path(args.runs) / name / f"s{seed}" / "run.json", dict)
    hp = load_hyperparams(rec["algo"], "DynoSim-v0", args.hyperparams)
    recipe = hp.get("env_kwargs") or {}
    sets = "".join(f" --set {k}={v}" for k, v in rec.get("overrides", {}).items()
                   if recipe.get(k) != v)       # the YAML's env_kwargs are not --set
    if rec["timesteps"] != int(hp["n_timesteps"]):
        sets = f" --timesteps {rec['timesteps']}" + sets
    if args.hyperparams:                # the recipe the candidates were trained with
        path = Path(args.hyperparams).resolve()
        path = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        sets = f" --hyperparams {path}" + sets
    rec["command"] = (f"dynosim train --algo {rec['algo']} --seed {seed}{sets} "
                      f"--out runs/learned/{name}/s{seed}")
    rec["chosen_by"] = {
        "rule": f"fewest GPU-hours among the candidates whose SLA attainment reaches "
                f"{BASELINE}'s on the same training-split episodes; else the highest "
                "attainment (scripts/learned_benchmark.py, fixed before training)",
        "episodes": SELECT, "baseline": {BASELINE: {k: base[k] for k in (
            "sla_attainment", "gpu_hours_per_episode")}},
        "candidates": {f"{n}_s{s}": {k: e[k] for k in ("sla_attainment",
                                                         "gpu_hours_per_episode")}
                       for (n, s), e in kept.items()}}
    if excluded:          # (a record without the key: nothing was excluded, as before)
        rec["chosen_by"]["excluded"] = {"rule": BASE_EQUAL_RULE, "candidates": {
            f"{n}_s{s}": why for (n, s), why in excluded.items()}}
    PRETRAINED_DIR.mkdir(exist_ok=True)
    shutil.copyfile(Path(args.runs) / name / f"s{seed}" / "model.zip",
                    PRETRAINED_DIR / f"{args.ship}.zip")
    (PRETRAINED_DIR / f"{args.ship}.json").write_text(json.dumps(rec, indent=2) + "\n")
    return best


if __name__ == "__main__":
    raise SystemExit(main())

"""``dynosim train`` and ``dynosim evaluate`` (imported lazily: ``sim`` needs no torch)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sim.config import yaml_load
from sim.errors import InputError
from sim.schema import SEED, TIME_S, arg_type

from dynosim.options import env_script, make_out_dir, plural, positive_int


EVAL_EPISODES = 5   # dynosim evaluate --episodes default


def _pretrained_names() -> list[str]:
    """Shipped ``pretrained:NAME`` models (``agents/pretrained/NAME.zip``), for --help."""
    from pathlib import Path
    return sorted(p.stem for p in (Path(__file__).resolve().parent / "pretrained").glob("*.zip"))


def _check_out_file(path: str) -> None:
    """``--out FILE``: checked (and its directory made) before the episodes run, so a bad
    path does not throw away a long evaluation at the end."""
    from pathlib import Path
    p = Path(path)
    if p.is_dir() or path.endswith(("/", "\\")):
        raise InputError(f"{path} is a directory; give a file name", field="--out")
    if p.parent.exists() and not p.parent.is_dir():
        raise InputError(f"{p.parent} is a file, not a directory", field="--out")
    try:
        make_out_dir(p.parent)        # removed again if the command fails while it is empty
    except OSError as exc:
        raise InputError(f"cannot create the directory of {path}: {exc.strerror}",
                         field="--out") from None


def _set(text: str) -> tuple[str, Any]:
    """``--set key=value`` with a YAML value (``--set reward.gpu_weight=0.001``)."""
    import yaml
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), yaml_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"bad value in {text!r}") from None


_pos_int = positive_int          # a count flag: the one parser, dynosim.options


_seed = arg_type(SEED, int)


def _windows(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return _pos_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'all' or a count >= 1, got {text!r}") \
            from None


def add_parsers(sub) -> None:
    kw: dict[str, Any] = {}
    t = sub.add_parser("train", help="train an RL autoscaler or router (SB3 / sb3-contrib)",
                       description="Train on a dynosim_gym env with RL-Zoo-style "
                       "hyperparameters (agents/hyperparams/ALGO.yml). Writes DIR/model.zip, "
                       "DIR/run.json, DIR/checkpoints/ and TensorBoard logs in DIR/tb.", **kw)
    t.add_argument("--algo", required=True,
                   help="ppo | a2c | dqn | ppo_mask (MaskablePPO) | ppo_lstm (RecurrentPPO); required")
    t.add_argument("--env", default=None,
                   help="DynoSim-v0 | DynoSimRouting-v0 (default: DynoSim-v0; a routing "
                   "scenario as --config needs it said)")
    t.add_argument("--config", metavar="YAML", help="env config (default: the env's default)")
    t.add_argument("--timesteps", type=_pos_int, metavar="N",
                   help="environment steps (default: the YAML's n_timesteps, 12k for "
                   "DynoSim-v0's ppo.yml); on-policy algorithms round up to whole rollouts "
                   "(n_steps x n_envs)")
    t.add_argument("--out", required=True, metavar="DIR", help="run directory (created); required")
    t.add_argument("--replace", action="store_true",
                   help="train into an --out DIR that is not empty (refused otherwise: runs "
                   "would mix)")
    t.add_argument("--seed", type=_seed, default=0,
                   help="seed of the policy, the envs and their episodes")
    t.add_argument("--n-envs", type=_pos_int, metavar="N", help="default: the YAML's")
    t.add_argument("--hyperparams", metavar="YAML", help="RL-Zoo-style file (default: ours)")
    t.add_argument("--set", type=_set, action="append", default=[], metavar="KEY=VALUE",
                   help="env config override, e.g. reward.gpu_weight=0.001 (repeatable; "
                   "default: none)")
    t.add_argument("--checkpoint-every", type=_pos_int, default=50_000, metavar="N",
                   help="save a copy of the model to DIR/checkpoints/ every N env steps "
                   "(SB3's CheckpointCallback; for resuming or inspecting a long run: the "
                   "12k-step recipes end before the first at the default). Not the "
                   "recipe's select_checkpoint, which scores the policy on training "
                   "episodes every select_checkpoint.every steps and keeps the best as "
                   "model.zip (default: 50000)")
    t.add_argument("--quiet", action="store_true",
                   help="nothing on stderr: no progress, notes or final summary (run.json "
                   "records them)")
    from . import rllib_train
    rllib_train.add_args(t)

    e = sub.add_parser("evaluate", help="score a policy, or write a leaderboard",
                       description="Evaluate on held-out episodes (split=eval) or on pinned, "
                       "consecutive windows of a trace (--trace): SLA attainment, GPU-hours, "
                       "pooled p90 TTFT/ITL, scaling events, reversals and flaps per hour, mean "
                       "reward. Scored with the evaluation config (--config, default: the env's "
                       "default), never a run's training reward.", **kw)
    e.add_argument("--policy", metavar="SPEC",
                   help="heuristic:load | heuristic:throughput | heuristic:static | "
                   "heuristic:static:N | heuristic:<tuned name> (DynoSim-v0); heuristic:kv | "
                   "heuristic:kv-tuned | heuristic:round_robin | heuristic:least_loaded | "
                   "heuristic:random (DynoSimRouting-v0); pretrained:NAME "
                   f"({', '.join(_pretrained_names()) or 'none shipped'}) | PATH "
                   "(model.zip or a train --out directory) | oracle:static | oracle:schedule | "
                   "oracle:schedule-greedy | oracle:schedule-floor; "
                   "default: none, give this or --leaderboard")
    e.add_argument("--trace", metavar="PATH",
                   help="score on consecutive windows of this trace (Mooncake .jsonl, Azure "
                   ".csv or bundled:NAME) instead of seeded episodes (default: none)")
    e.add_argument("--window-s", type=arg_type(TIME_S, float), metavar="S",
                   help="--trace: window length in seconds (a multiple of the decision "
                   "interval; 0 = the whole trace as one episode; default 60 intervals)")
    e.add_argument("--windows", type=_windows, default=None, metavar="all|N",
                   help="--trace: every window or the first N (default: all)")
    e.add_argument("--leaderboard", metavar="DIR",
                   help="evaluate the heuristics, tuned planners and every model under DIR; "
                   "write DIR/leaderboard.{md,csv,json}, DIR/replicas_vs_load.png and "
                   "DIR/sla_vs_gpu_hours.png (default: none)")
    e.add_argument("--env", default=None,
                   help="DynoSim-v0 | DynoSimRouting-v0 (default: the policy's own)")
    e.add_argument("--config", metavar="YAML",
                   help="evaluation env config, reward included (default: the env's default; "
                   "a model's run contributes only its observation/action/interval)")
    e.add_argument("--episodes", type=_pos_int, default=None, metavar="N",
                   help="seeded episodes per policy, the same for every policy (default: "
                   f"{EVAL_EPISODES}; not with --trace, whose episodes are its --windows)")
    e.add_argument("--seed", type=_seed, default=0, help="seed of the first episode")
    e.add_argument("--split", choices=("eval", "train"), default="eval",
                   help="held-out episodes (eval) or training ones")
    e.add_argument("--policies", metavar="SPEC,...",
                   help="--leaderboard: these policies (default: the heuristics, tuned "
                   "planners and every model under DIR)")
    e.add_argument("--reference", default=None, metavar="SPEC",
                   help="--leaderboard: ratios are relative to this policy (default: "
                   "heuristic:load; heuristic:kv for DynoSimRouting-v0)")
    e.add_argument("--set", type=_set, action="append", default=[], metavar="KEY=VALUE",
                   help="env config override, e.g. reward.gpu_weight=0.001 (repeatable; "
                   "default: none)")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.add_argument("--out", metavar="FILE",
                   help="also write the JSON result to FILE (default: none)")
    e.add_argument("--quiet", action="store_true", help="no progress output on stderr")

    u = sub.add_parser("tune", help="tune a planner's knobs on the training split (Optuna)",
                       description="Seeded TPE search (Optuna) over the knobs of "
                       "sim.planner.PlannerConfig on training episodes (split=train) of the "
                       "env config; writes the best as a named baseline "
                       "(agents/tuned/NAME.yaml, used as heuristic:NAME).", **kw)
    u.add_argument("--policy", required=True,
                   help="heuristic:load | heuristic:throughput (planner knobs, DynoSim-v0) | "
                   "heuristic:kv (KV router knobs, DynoSimRouting-v0; writes kv-tuned)")
    u.add_argument("--trials", type=_pos_int, default=30, metavar="N",
                   help="Optuna trials (default: 30; trial 0 is the planner's defaults)")
    u.add_argument("--episodes", type=_pos_int, default=6, metavar="N",
                   help="training episodes per trial, the same for every trial (default: 6)")
    u.add_argument("--config", metavar="YAML", help="env config (default: the env's default)")
    u.add_argument("--seed", type=_seed, default=0,
                   help="sampler seed and first training episode's seed (default: 0)")
    u.add_argument("--name", metavar="NAME", help="baseline name (default: <planner>-tuned)")
    u.add_argument("--out", metavar="FILE", help="YAML to write (default: agents/tuned/NAME.yaml)")
    u.add_argument("--replace", action="store_true",
                   help="overwrite an existing YAML (agents/tuned/NAME.yaml, e.g. the shipped "
                   "load-tuned, or --out FILE); refused otherwise")
    u.add_argument("--set", type=_set, action="append", default=[], metavar="KEY=VALUE",
                   help="env config override, repeatable (default: none)")
    u.add_argument("--search-space", choices=("v1", "v2"), default="v2",
                   help="v2: the load target's KV thresholds drawn only under that target "
                   "(default); v1: drawn in every trial, the space that produced the shipped "
                   "load-tuned (its command regenerates it with v1)")
    u.add_argument("--quiet", action="store_true", help="no per-trial lines on stderr")


def _trace_load_note(args) -> str:
    """``--set env.rate_min_rps / rate_max_rps`` on a config with trace families
    (``mooncake_mod``, ``azure_mod``): their peak is that rate times their load scale
    (``scenarios.TRACE_LOAD``). The one-line note saying so ("" if none, or ``--quiet``);
    :func:`run` prints it once the command has succeeded, so a bad input shows its one-line
    error alone."""
    sets = dict(getattr(args, "set", None) or [])
    keys = [k for k in sets if k.rpartition(".")[2] in ("rate_min_rps", "rate_max_rps")]
    if not keys or args.quiet:
        return ""
    from dynosim_gym.config import load_env_config
    from dynosim_gym.scenarios import trace_load_note

    from .evaluate import DEFAULT_CONFIGS, resolve_policy
    try:
        env_id = getattr(args, "env", None) or (
            getattr(args, "policy", None) and resolve_policy(args.policy).env_id)
        e = load_env_config(args.config, defaults=DEFAULT_CONFIGS.get(
            env_id or "DynoSim-v0"), **sets).env
    except InputError:
        return ""                           # the command's own load says why
    names = f"{e.scenarios},{e.eval_scenarios or ''}".split(",")
    text = trace_load_note([n.strip() for n in names], e.rate_min_rps, e.rate_max_rps)
    return f"dynosim: note: --set {', '.join(keys)}: {text}" if text else ""


def run(args) -> int:
    note = _trace_load_note(args)
    command = {"train": _train, "tune": _tune}.get(args.command, _evaluate)
    rc = command(args)          # a bad input raises here: its one-line error, no note
    if note and rc == 0:
        print(note, file=sys.stderr)
    return rc


def _tune(args) -> int:
    from .tune import tune
    if args.out:
        _check_out_file(args.out)
    path, best = tune(args.policy, trials=args.trials, episodes=args.episodes,
                      config=args.config, seed=args.seed, name=args.name, out=args.out,
                      overrides=dict(args.set), quiet=args.quiet, replace=args.replace,
                      search_space=args.search_space)
    sr = best["search"]
    pruned = f", {sr['trials_pruned']} pruned" if sr["trials_pruned"] else ""
    done = f"{sr['trials_completed']} of {sr['trials']} trials completed{pruned}"
    if sr.get("held_fixed"):
        done += "; held fixed by env.planner, not searched: " + ", ".join(
            f"{k}={v}" for k, v in sr["held_fixed"].items())
    if best["best_is_defaults"]:
        print(f"dynosim: best is trial 1, the defaults (objective {best['objective']:.4f}; "
              f"{done}): tuning found nothing better, the file holds the default knobs "
              f"{json.dumps(best['knobs'])}; wrote {path}")
    else:
        ref = "trial 1, the defaults" + (f" except {', '.join(sr['trial_0_sampled'])}"
                                         if sr["trial_0_sampled"] else "")
        which = (ref if best["best_trial"] == 1 else f"trial {best['best_trial']}; {ref}: "
                 f"{_objective(best['default_objective'])}")
        print(f"dynosim: best {best['objective']:.4f} ({which}) with "
              f"{json.dumps(best['knobs'])} ({done}); wrote {path}")
    return 0


def _objective(value: float | None) -> str:
    """A trial's objective for the tune summary (None: the defaults' trial was pruned)."""
    return "pruned" if value is None else f"{value:.4f}"


def _created_out_dir(path: str) -> None:
    """Create a run or leaderboard directory through :func:`dynosim.options.make_out_dir`
    (so it is removed again if the command fails before writing into it); an existing path,
    or one that cannot be made, is left to the command's own checks."""
    from pathlib import Path
    if not Path(path).exists():
        try:
            make_out_dir(path)
        except OSError:
            pass


def _env_config_mismatch(env_id: str, config, sets) -> str:
    """Why an env config (with its ``--set`` overrides) does not fit ``env_id``: the first
    of its scenarios that is another environment's family (``dynosim_gym.scenarios.
    ENV_FAMILIES``), located in the YAML; "" if it fits or does not load for another reason
    (a bad trace line, a rate too high: the command's own load says why, as its own line)."""
    from dynosim_gym.config import load_env_config
    from dynosim_gym.episodes import EpisodeFactory, ForeignScenario

    from .evaluate import DEFAULT_CONFIGS
    try:
        ecfg = load_env_config(config, defaults=DEFAULT_CONFIGS.get(env_id), **dict(sets))
    except InputError:
        return ""
    try:
        EpisodeFactory(ecfg, env_id)
    except ForeignScenario as exc:
        where = f"{exc.file}:{exc.line}: " if exc.file and exc.line else ""
        return f"{where}{exc.field}: {exc.detail.partition('; expected')[0]}"
    except InputError:
        return ""
    return ""


def _train(args) -> int:
    from . import rllib_train
    if args.env is None:
        from .train import routing_scenario
        if args.config is not None and routing_scenario(args.config):
            raise InputError(f"{args.config} is a DynoSimRouting-v0 scenario (a fixed pool, "
                             "routing families): pass --env DynoSimRouting-v0 to train a "
                             "router on it" + ("" if _env_config_mismatch(
                                 "DynoSim-v0", args.config, args.set) else
                                 ", or --env DynoSim-v0 to train the autoscaler on it "
                                 "anyway"), field="--env")
        args.env = "DynoSim-v0"
    else:
        why = _env_config_mismatch(args.env, args.config, args.set)
        if why:
            other = next(e for e in ("DynoSim-v0", "DynoSimRouting-v0") if e != args.env)
            raise InputError(f"--config {args.config or 'default'} does not fit --env "
                             f"{args.env} ({why}); pass --env {other}, or a {args.env} "
                             "config", field="--env")
    rllib_train.check_args(args)
    from pathlib import Path
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()) and not args.replace:
        held = "a run (run.json)" if (out / "run.json").is_file() else "files"
        raise InputError(f"{args.out} exists and holds {held}: pass --replace to train into "
                         "it anyway (a run's files are overwritten, others stay), or give a new "
                         "--out DIR", field="--out")
    _created_out_dir(args.out)
    if args.framework == "rllib":
        return rllib_train.run(args)
    from .train import train
    out = train(args.algo, args.env, config=args.config, timesteps=args.timesteps,
                out=args.out, seed=args.seed, n_envs=args.n_envs, hyperparams=args.hyperparams,
                overrides=dict(args.set), checkpoint_every=args.checkpoint_every,
                quiet=args.quiet)
    if not args.quiet:
        print(f"dynosim: saved {out / 'model.zip'}; {tensorboard_hint(out / 'tb')}",
              file=sys.stderr)
    return 0


def tensorboard_hint(logdir) -> str:
    """How to view a run's TensorBoard logs, as a command that runs as written: the
    ``tensorboard`` script of this Python's environment (``.venv/bin/tensorboard`` after the
    README's ``make install``; tensorboard is a dependency), else the one on PATH, else what
    to install."""
    import importlib.util
    import shutil
    script = env_script("tensorboard")      # .venv/bin/tensorboard, not /abs/path/.venv/...
    if importlib.util.find_spec("tensorboard") is not None and script is not None:
        return f"training curves: {script} --logdir {logdir}"
    if shutil.which("tensorboard"):
        return f"training curves: tensorboard --logdir {logdir}"
    return (f"TensorBoard logs in {logdir} (to view them: pip install tensorboard, then "
            f"tensorboard --logdir {logdir})")


def _evaluate(args) -> int:
    from .evaluate import evaluate
    from .leaderboard import leaderboard
    if (args.policy is None) == (args.leaderboard is None):
        raise InputError("give exactly one of --policy and --leaderboard", field="--policy")
    if args.leaderboard is None:
        for flag in ("--policies", "--reference"):
            if getattr(args, flag[2:]) is not None:
                raise InputError("applies to --leaderboard only; with --policy it would be "
                                 "ignored", field=flag)
    episodes_given = args.episodes is not None
    args.episodes = args.episodes or EVAL_EPISODES
    if args.out:
        _check_out_file(args.out)
    if args.trace is None and (args.window_s is not None or args.windows is not None):
        raise InputError("--window-s and --windows need --trace",
                         field="--window-s" if args.window_s is not None else "--windows")
    if args.trace is not None and episodes_given:
        raise InputError("--episodes counts seeded episodes; with --trace the episodes are "
                         "the trace's windows: use --windows all|N", field="--episodes")
    if args.leaderboard is not None:
        if args.env is None and args.config is not None:
            from .evaluate import scenario_env
            if scenario_env(args.config) == "DynoSimRouting-v0":   # as train without --env
                raise InputError(f"{args.config} is a DynoSimRouting-v0 scenario: pass --env "
                                 "DynoSimRouting-v0 to rank routers on it, or --env "
                                 "DynoSim-v0 to rank the autoscalers on it anyway",
                                 field="--env")
        _created_out_dir(args.leaderboard)
        res = leaderboard(args.leaderboard, env_id=args.env or "DynoSim-v0", config=args.config,
                          episodes=args.episodes, seed=args.seed,
                          reference=args.reference or "heuristic:load",
                          policies=args.policies.split(",") if args.policies else None,
                          split=args.split, trace=args.trace, window_s=args.window_s,
                          windows=args.windows, overrides=dict(args.set), quiet=args.quiet)
        if args.out:
            __import__("pathlib").Path(args.out).write_text(json.dumps(
                [r.as_dict() for r in res], indent=1, default=str) + "\n")
        if args.json:
            print(json.dumps([r.as_dict(with_episodes=False) for r in res], indent=1))
        else:
            print((__import__("pathlib").Path(args.leaderboard) / "leaderboard.md").read_text(),
                  end="")
        return 0
    if args.policy.startswith("oracle:"):
        from .oracle import evaluate_oracle
        if args.env not in (None, "DynoSim-v0"):
            raise InputError(f"{args.policy} is an autoscaling oracle: it acts on DynoSim-v0, "
                             f"not {args.env}", field="--policy")
        res = evaluate_oracle(args.policy, config=args.config, episodes=args.episodes,
                              seed=args.seed, split=args.split, overrides=dict(args.set),
                              trace=args.trace, window_s=args.window_s, windows=args.windows,
                              quiet=args.quiet)
    else:
        res = evaluate(args.policy, args.env, config=args.config, episodes=args.episodes, seed=args.seed,
                       split=args.split, overrides=dict(args.set), trace=args.trace,
                       window_s=args.window_s, windows=args.windows, quiet=args.quiet)
    doc = json.dumps(res.as_dict(), indent=1, default=str)
    if args.out:
        __import__("pathlib").Path(args.out).write_text(doc + "\n")
    # requests still in flight at the episodes' cut-offs are not scored: say how many
    cut = f"{res.requests_in_flight:,} in flight at the cut-off, not scored"
    in_flight = f" ({cut})" if res.requests_in_flight else ""
    # trace requests in no scored window (the tail after the last whole --window-s window)
    unscored = res.episodes_plan.get("requests_unscored", 0)
    if unscored:
        tail = (f"{unscored:,} of the trace's {res.episodes_plan['requests_in_trace']:,} "
                "requests in no window, not scored")
        in_flight = f" ({cut}; {tail})" if res.requests_in_flight else f" ({tail})"
        cut = f"{cut}; {tail}" if res.requests_in_flight else tail
    nothing = "latency: no samples (no request completed)"
    if args.json:
        print(doc)
    elif res.env_id == "DynoSimRouting-v0":
        # without --env a routing policy switched env: name it
        on = "" if args.env else " on DynoSimRouting-v0 (the policy's env)"
        print(f"{res.policy}{on}: SLA attainment {res.sla_attainment:.1%} over "
              f"{res.requests_decided:,} requests ({plural(res.episodes, 'episode')}"
              f"{'; ' + cut if res.requests_in_flight or unscored else ''}); "
              + (nothing if res.latency_samples == 0 else
                 f"pooled p90 TTFT {res.p90_ttft_ms:.0f} ms, mean TTFT {res.mean_ttft_ms:.0f} ms")
              + "; prefix cache "
              f"reused {res.prefix_cache_reused_ratio:.1%} of prompt tokens; "
              f"{res.request_throughput_rps:.3f} req/s; mean reward {res.mean_reward:.3f} ± "
              f"{res.std_reward:.3f}")
    else:
        print(f"{res.policy}: SLA attainment {res.sla_attainment:.1%} over "
              f"{res.requests_decided:,} requests{in_flight}; {res.gpu_hours:.3f} GPU-hours "
              f"({res.gpu_hours_per_episode:.3f}/episode, {plural(res.episodes, 'episode')}); "
              + (nothing if res.latency_samples == 0 else
                 f"pooled p90 TTFT {res.p90_ttft_ms:.0f} ms, p90 ITL {res.p90_itl_ms:.1f} ms")
              + "; "
              f"{plural(res.scaling_events, 'scaling event')}, {res.reversals_per_hour:.1f} "
              f"reversals/h, {res.flaps_per_hour:.1f} flaps/h ({res.flaps} under 300 s); mean reward {res.mean_reward:.3f} ± {res.std_reward:.3f}")
    return 0

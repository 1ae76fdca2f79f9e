"""Train an SB3 / sb3-contrib agent on a dynosim_gym environment (``dynosim train``).

Hyperparameters come from RL-Zoo-style YAML (``agents/hyperparams/<algo>.yml``, one block per
env id; ``n_envs`` and ``n_timesteps`` are ours, the rest go to the algorithm). A run
directory holds ``model.zip``, ``run.json`` (algorithm, env id, the full env config,
hyperparameters, seed: enough to evaluate and to reproduce; the YAML's ``env_kwargs``, RL
Zoo's key, are env config overrides under ``--set``), ``checkpoints/`` and
TensorBoard logs in ``tb/``. ``run.json``'s ``status`` is ``running`` while it trains,
``completed`` with its model, ``failed`` (and ``error``, one line) if training raised; inputs
(config, trace, recipe) are checked before the directory is written.

``normalize`` (RL Zoo's key) wraps the training envs in SB3's ``VecNormalize``; only reward
normalisation is supported (``normalize: {norm_reward: true}``): the observations are already
scaled and log-scaled (:mod:`dynosim_gym.observations`), and a model must be scored from its
zip alone (``dynosim evaluate``), so there are no running observation statistics to ship.
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from sim.errors import InputError
from sim.wording import plural

# re-exported: callers import these from agents.train
from .algos import (ALGOS, ALIASES, HYPERPARAMS_DIR, algo_class, algo_name,  # noqa: F401
                    check_env_id, load_hyperparams)


def train(algo: str, env_id: str = "DynoSim-v0", *, config: str | None = None,
          timesteps: int | None = None, out: str | Path = "runs/ppo", seed: int = 0,
          n_envs: int | None = None, hyperparams: str | Path | None = None,
          overrides: dict[str, Any] | None = None, checkpoint_every: int = 50_000,
          quiet: bool = False, device: str = "cpu") -> Path:
    """Train and save; returns the run directory."""
    import torch
    from stable_baselines3.common.callbacks import CheckpointCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    env_id, key, hp, hp_file = _checked_recipe(algo, env_id, hyperparams)
    n_envs = int(n_envs or hp.pop("n_envs", 1))
    hp.pop("n_envs", None)
    total = int(timesteps or hp.pop("n_timesteps", 100_000))
    hp.pop("n_timesteps", None)
    policy = hp.pop("policy", "MlpPolicy")
    normalize = _normalize_kwargs(hp.pop("normalize", False), hp.get("gamma", 0.99))
    # RL Zoo's env_kwargs: env config entries the recipe needs; --set overrides win
    recipe_env = dict(hp.pop("env_kwargs", None) or {})
    cli_overrides = dict(overrides or {})
    defaults = "autoscale_default" if env_id == "DynoSim-v0" else "routing_default"
    env_cfg = _recipe_env_config(hp, recipe_env, config, defaults, cli_overrides, hp_file,
                                 key)                                   # validate before work
    env_kwargs = {"config": env_cfg.to_dict(), "render_mode": None}  # make_vec_env: no frames
    out = Path(out)
    torch.set_num_threads(1)
    try:
        venv = make_vec_env(f"dynosim_gym:{env_id}", n_envs=n_envs, seed=seed,
                            env_kwargs=env_kwargs, vec_env_cls=DummyVecEnv)
    except InputError as exc:                 # the env saw a dict: name the YAML's line
        from .evaluate import located
        raise located(exc, env_cfg) from None
    # routing extras (agents/router_train.py): the permutation-equivariant RouterPolicy,
    # per-request reward credit and a behaviour-cloning warm start
    credit = hp.pop("reward_credit", "step")
    bc = hp.pop("bc_warm_start", None)
    select_ckpt = hp.pop("select_checkpoint", None)
    if select_ckpt and env_id != "DynoSim-v0":
        raise InputError("select_checkpoint is for DynoSim-v0 recipes",
                         field="select_checkpoint")
    policy_name = policy
    if policy == "RouterPolicy":
        from .router_policy import RouterPolicy
        u = venv.envs[0].unwrapped
        hp["policy_kwargs"] = {**hp.get("policy_kwargs", {}), "num_workers": u.num_workers,
                               "scales": dict(u.obs_scales)}
        policy = RouterPolicy
    if normalize:
        from stable_baselines3.common.vec_env import VecNormalize
        venv = VecNormalize(venv, **normalize)
    cls = algo_class(key)
    try:
        model = cls(policy, venv, seed=seed, verbose=0, tensorboard_log=str(out / "tb"),
                    device=device, **hp)
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        msg = (f"{key} takes no hyperparameter {bad.group(1)!r} (a typo, or another "
               "algorithm's)" if bad else f"{key} rejects these hyperparameters: "
               f"{type(exc).__name__}: {exc}")
        raise InputError(msg, file=hp_file, field=f"{env_id}.{bad.group(1)}" if bad
                         else env_id) from None
    if bc:
        _check_teacher(bc, env_id, hp_file, env_cfg.env.action.type)
    if not quiet and any((out / f).exists() for f in ("model.zip", "run.json")):
        print(f"dynosim: note: {out} holds a run already; its model.zip and run.json are "
              "replaced (TensorBoard adds a new run under tb/)", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    rollout = int(getattr(model, "n_steps", 0) or 0) * n_envs   # on-policy: whole rollouts
    if rollout and total % rollout and not quiet:
        print(f"dynosim: note: {plural(total, 'timestep')} train as "
              f"{-(-total // rollout) * rollout} "
              f"(on-policy {key} collects whole rollouts of n_steps {model.n_steps} x "
              f"{plural(n_envs, 'env')} = {rollout} steps)", file=sys.stderr)
    bc_record = keep_near = None
    if bc:
        from .router_train import behaviour_clone
        if not quiet:   # the teacher's episodes take a while before the first epoch line
            import inspect
            said = {k: p.default for k, p in
                    inspect.signature(behaviour_clone).parameters.items()} | bc
            print(f"dynosim: behaviour-cloning warm start: {plural(said['episodes'], 'episode')} "
                  f"of {said['teacher']}, then {plural(said['epochs'], 'epoch')} (the recipe's "
                  "bc_warm_start)", file=sys.stderr)
        try:
            bc_record, keep_near = behaviour_clone(model, env_cfg.to_dict(), seed=seed,
                                                   quiet=quiet, env_id=env_id, **bc)
        except InputError as exc:   # a bc_warm_start value: the recipe's file and full field
            if exc.file is not None or not (exc.field or "").startswith("bc_warm_start."):
                raise
            raise InputError(exc.detail, file=hp_file, field=f"{env_id}.{exc.field}") \
                from None
    callbacks = [CheckpointCallback(save_freq=max(1, checkpoint_every // n_envs),
                                    save_path=str(out / "checkpoints"), name_prefix=key)]
    if keep_near is not None:       # bc_warm_start.regularise (agents/router_train.py)
        callbacks.append(keep_near)
    chooser = None
    if select_ckpt:                 # select_checkpoint (agents/checkpoint_select.py)
        from .checkpoint_select import checkpoint_selector
        chooser = checkpoint_selector(env_cfg.to_dict(), env_id=env_id, **select_ckpt)
        callbacks.append(chooser)
    dual = None
    if env_id == "DynoSim-v0" and env_cfg.env.reward.mode == "lagrangian":
        from .lagrangian import LagrangeMultiplierCallback
        rw = env_cfg.env.reward
        dual = LagrangeMultiplierCallback(rw.sla_target, rw.multiplier_lr, rw.multiplier)
        callbacks.append(dual)
    if credit == "request":
        from .router_train import request_credit_callback
        callbacks.append(request_credit_callback(env_cfg.env.reward.sla_weight))
    elif credit != "step":
        raise InputError(f"reward_credit must be step or request, got {credit!r}",
                         field="reward_credit")
    progress = _Progress(-(-total // rollout) * rollout if rollout else total, quiet, dual)
    callbacks.append(progress.callback())
    record = {"algo": key, "env_id": env_id, "seed": seed, "timesteps": total,
              "n_envs": n_envs, "policy": policy_name, "hyperparams": hp, "normalize": normalize,
              "reward_credit": credit, "bc_warm_start": bc_record,
              "select_checkpoint": select_ckpt,
              "config_source": str(config) if config is not None else defaults,
              "env_kwargs": recipe_env, "overrides": cli_overrides,
              "env_config": env_cfg.to_dict(), "status": "running"}
    (out / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        model.learn(total_timesteps=total, callback=callbacks, tb_log_name=key)
    except BaseException as exc:     # not a run: say so in its record (Ctrl-C included)
        from .algos import failure_text
        record.update(status="failed", error=failure_text(exc))
        (out / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        raise
    finally:
        progress.close()
    record["status"] = "completed"
    model.save(out / "model.zip")
    wall = time.perf_counter() - t0
    record["timesteps_trained"] = int(model.num_timesteps)   # whole rollouts (>= timesteps)
    record["train_wall_s"] = round(wall, 1)   # run record, not env info
    record["train_cpu_s"] = round(time.process_time() - cpu0, 1)   # wall is load-dependent
    record.update(progress.summary())
    if keep_near is not None:
        record["bc_warm_start"]["regularise_history"] = keep_near.history
    if chooser is not None:
        record["select_checkpoint"] = chooser.record()
        if not quiet:
            print(_selection_line(chooser.history[chooser.chosen],
                                  record["select_checkpoint"]), file=sys.stderr)
    if dual is not None:
        record["lagrange_multiplier"] = {"final": dual.multiplier, "history": dual.history}
    if not quiet:
        kept = ("; model.zip is the checkpoint select_checkpoint kept (above), scored "
                "deterministically" if chooser is not None else "")
        print(f"dynosim: trained {key} on {env_id}: {progress.line(wall)}{kept}",
              file=sys.stderr)
    (out / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    venv.close()
    return out


def routing_scenario(config: Any) -> bool:
    """Whether an env config is a ``DynoSimRouting-v0`` scenario: that env's default config
    (``routing_default``) or one whose training families are all routing families
    (``routing_families``); :func:`agents.evaluate.scenario_env`. ``dynosim train`` without
    ``--env`` refuses it, as it would train the autoscaler (``DynoSim-v0``) on it."""
    from .evaluate import ROUTING_ENV, scenario_env
    return scenario_env(config) == ROUTING_ENV


def _selection_line(kept: dict[str, Any], sel: dict[str, Any]) -> str:
    """The one sentence saying which checkpoint ``select_checkpoint`` kept (``kept``: its
    history entry; ``sel``: the selector's record), its figures, and by which rule."""
    target = sel["sla_target"]
    what = (" (the behaviour-cloned policy, before any PPO update)"
            if kept["timesteps"] == 0 else "")
    rule = (f"the fewest GPU-hours at SLA >= {target:.0%}"
            if kept["sla_attainment"] >= target else
            f"the highest attainment, as none reached the SLA target {target:.0%}")
    return (f"dynosim: select_checkpoint kept the checkpoint at {kept['timesteps']:,} "
            f"timesteps{what}: {kept['sla_attainment']:.1%} SLA at "
            f"{kept['gpu_hours_per_episode']:.2f} GPU-h per episode on its "
            f"{len(sel['seeds'])} training-split selection episodes, {rule}; model.zip is "
            "that checkpoint")


#: SB3 hyperparameters that are numbers (a string there fails deep inside SB3, or names the
#: wrong key: clip_range's check says "learning rate schedule")
NUMERIC_HP = ("n_envs", "n_timesteps", "gamma", "gae_lambda", "learning_rate", "clip_range",
              "ent_coef", "vf_coef", "max_grad_norm", "n_steps", "batch_size", "n_epochs",
              "buffer_size", "learning_starts", "gradient_steps",
              "target_update_interval", "exploration_fraction")


def _check_recipe(hp: dict[str, Any], env_id: str, hp_file: str) -> None:
    """One-line errors, before any work, for the mistakes a hand-written recipe makes:
    a string where SB3 wants a number, and unknown or non-numeric keys of our own entries
    (``bc_warm_start``, ``select_checkpoint``, read from their functions' signatures)."""
    import inspect

    from .checkpoint_select import checkpoint_selector
    from .router_train import behaviour_clone

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    for k in NUMERIC_HP:
        if k in hp and not number(hp[k]):
            raise InputError(f"expected a number, got {hp[k]!r}", file=hp_file,
                             field=f"{env_id}.{k}")
    for entry, fn, own in (("bc_warm_start", behaviour_clone,
                            {"model", "env_cfg", "seed", "quiet", "env_id"}),
                           ("select_checkpoint", checkpoint_selector, {"env_cfg", "env_id"})):
        if entry not in hp or hp[entry] is None:
            continue
        if not isinstance(hp[entry], dict):
            raise InputError(f"expected a mapping, got {hp[entry]!r}", file=hp_file,
                             field=f"{env_id}.{entry}")
        params = {n: p for n, p in inspect.signature(fn).parameters.items() if n not in own}
        for k, v in hp[entry].items():
            if k not in params:
                raise InputError(f"unknown key; expected one of {', '.join(params)}",
                                 file=hp_file, field=f"{env_id}.{entry}.{k}")
            if number(params[k].default) and not number(v):
                raise InputError(f"expected a number, got {v!r}", file=hp_file,
                                 field=f"{env_id}.{entry}.{k}")
    if "label_smoothing" in (hp.get("bc_warm_start") or {}):      # its range, up front
        from .router_train import check_label_smoothing
        check_label_smoothing(hp["bc_warm_start"]["label_smoothing"], file=hp_file,
                              prefix=f"{env_id}.")


def training_env_config(algo: str, env_id: str = "DynoSim-v0", *, config: str | None = None,
                        hyperparams: str | Path | None = None,
                        overrides: dict[str, Any] | None = None):
    """The env config (:class:`dynosim_gym.config.EnvConfig`) :func:`train` would train
    ``algo`` on: ``config`` (default: the env's default) under the recipe's ``env_kwargs``
    under ``overrides`` (``--set``). Raises the one-line InputError :func:`train` raises
    for a bad recipe or override (naming ``--set KEY`` or the recipe's key), without
    building an env, so a driver that trains several seeds
    (``scripts/learned_benchmark.py``) can check its flags before any work."""
    env_id, key, hp, hp_file = _checked_recipe(algo, env_id, hyperparams)
    recipe_env = dict(hp.pop("env_kwargs", None) or {})
    defaults = "autoscale_default" if env_id == "DynoSim-v0" else "routing_default"
    return _recipe_env_config(hp, recipe_env, config, defaults, dict(overrides or {}),
                              hp_file, key)


def _checked_recipe(algo: str, env_id: str, hyperparams: str | Path | None
                    ) -> tuple[str, str, dict[str, Any], str]:
    """``(env_id, algo key, recipe dict, recipe file name)`` for ``algo`` on ``env_id``:
    the recipe loaded (``hyperparams`` or ``agents/hyperparams/ALGO.yml``) and checked
    (:func:`_check_recipe`); the one-line InputError of either otherwise."""
    env_id = check_env_id(env_id)
    key = algo_name(algo)
    hp = load_hyperparams(key, env_id, hyperparams)
    hp_file = str(Path(hyperparams) if hyperparams is not None
                  else HYPERPARAMS_DIR / f"{key}.yml")
    _check_recipe(hp, env_id, hp_file)
    return env_id, key, hp, hp_file


def _recipe_env_config(hp: dict[str, Any], recipe_env: dict[str, Any], config: str | None,
                       defaults: str, cli_overrides: dict[str, Any], hp_file: str, key: str):
    """``config`` under ``recipe_env`` (the recipe's ``env_kwargs``) under
    ``cli_overrides``, loaded and checked; an InputError names the ``--set KEY`` or the
    recipe key that supplied a bad value."""
    from dynosim_gym.config import load_env_config
    overrides = {**recipe_env, **cli_overrides}
    _check_disagg_recipe(hp, recipe_env, config, defaults, cli_overrides, hp_file, key)
    try:
        return load_env_config(config, defaults=defaults, **overrides)
    except InputError as exc:                                 # name the --set (or recipe key)
        from .evaluate import override_error
        override_error(exc, lambda o: load_env_config(config, defaults=defaults, **o),
                       overrides, {k: f"env_kwargs.{k} of {hp_file}" for k in recipe_env
                                   if k not in cli_overrides})
        raise                                     # (override_error always raises)


def _check_disagg_recipe(hp: dict[str, Any], recipe_env: dict[str, Any], config: str | None,
                         defaults: str, cli_overrides: dict[str, Any], hp_file: str,
                         key: str) -> None:
    """A recipe's aggregated-only settings (``env_kwargs.action``: the target action and its
    scale-down window; ``bc_warm_start``: a clone of a scalar-action teacher) on a
    disaggregated config (one delta per pool, ``MultiDiscrete``) refused in one line that
    says what trains there (README, "Disaggregated pools"). A config that fails to load on
    its own is left to the ordinary path's error."""
    agg = [f"env_kwargs.{k}" for k in recipe_env if k == "action" and k not in cli_overrides]
    agg += ["bc_warm_start"] if hp.get("bc_warm_start") else []
    if not agg:
        return
    from dynosim_gym.config import load_env_config
    try:
        disagg = load_env_config(config, defaults=defaults,
                                 **cli_overrides).sim.disagg is not None
    except InputError:
        return
    if disagg:
        raise InputError(
            f"{' and '.join(agg)} of this {key} recipe are for the aggregated DynoSim-v0 "
            f"(one worker count); {config} is disaggregated (one delta per pool): train it "
            "with --algo ppo_mask (MaskablePPO; README: Disaggregated pools)",
            file=hp_file, field=f"DynoSim-v0.{agg[0]}")


def _check_teacher(bc: dict[str, Any], env_id: str, hp_file: str,
                   action_type: str | None = None) -> None:
    """``bc_warm_start.teacher`` must be a schedule oracle or a heuristic of the env, or
    ``base`` (offset 0) for a residual action, checked before any work (the teacher's
    episodes come first and take minutes)."""
    from .heuristics import heuristic_env, heuristics_for
    from .router_train import BASE_TEACHER, SCHEDULE_TEACHERS
    teacher = bc.get("teacher")
    if teacher is None or (teacher in SCHEDULE_TEACHERS and env_id == "DynoSim-v0"):
        return
    if teacher == BASE_TEACHER and env_id == "DynoSim-v0":
        if action_type == "residual":
            return
        raise InputError(f"teacher {BASE_TEACHER!r} (offset 0 to the residual base) needs "
                         f"env.action.type: residual, got {action_type!r}", file=hp_file,
                         field=f"{env_id}.bc_warm_start.teacher")
    try:
        fits = heuristic_env(str(teacher)) == env_id
    except ValueError:
        fits = False
    if not fits:
        known = heuristics_for(env_id) + \
            ([*SCHEDULE_TEACHERS, BASE_TEACHER] if env_id == "DynoSim-v0" else [])
        raise InputError(f"unknown teacher {teacher!r} for {env_id}; expected one of "
                         f"{', '.join(known)}", file=hp_file,
                         field=f"{env_id}.bc_warm_start.teacher")


def _normalize_kwargs(value: Any, gamma: float) -> dict[str, Any]:
    """RL Zoo's ``normalize`` entry (``true`` or a dict) as ``VecNormalize`` kwargs ({} = off).
    Reward normalisation only (module doc)."""
    if value is False or value is None:
        return {}
    kw = {"norm_obs": False, "norm_reward": True} if value is True else dict(value)
    if kw.get("norm_obs", False):
        raise InputError("normalize.norm_obs is not supported (observations are already "
                         "scaled; a model is scored from its zip alone); use "
                         "{norm_reward: true}", field="normalize")
    unknown = set(kw) - {"norm_obs", "norm_reward", "clip_reward"}
    if unknown:
        raise InputError(f"unknown normalize key(s) {', '.join(sorted(unknown))}; expected "
                         "norm_reward, clip_reward", field="normalize")
    kw["norm_obs"] = False
    kw.setdefault("norm_reward", True)
    return {**kw, "gamma": float(gamma)}


class _Progress:
    """Training progress on stderr (not with --quiet): a tqdm bar on a terminal, else one
    line every tenth of the run (steps, steps/s, mean reward of the last episodes, and with
    ``reward.mode: lagrangian`` the current Lagrange multiplier), so logs of a
    non-interactive run (CI, nohup, a pipe) show it is alive and learning. Episode rewards
    come from the Monitor wrapper ``make_vec_env`` puts around each env. At each rollout's
    end it also logs, for TensorBoard, the mean SLA attainment, GPU-hours and scaling events
    per episode of the last ``WINDOW`` training episodes of an autoscaling env
    (``rollout/sla_attainment``, ``rollout/gpu_hours``, ``rollout/scaling_events``, beside
    SB3's ``rollout/ep_rew_mean``)."""

    WINDOW = 20             # mean episode reward over the last WINDOW episodes

    def __init__(self, total: int, quiet: bool, dual=None) -> None:
        self.total = total
        self.quiet = quiet
        self.dual = dual        # LagrangeMultiplierCallback (reward.mode: lagrangian) or None
        self.tty = sys.stderr.isatty()
        self.every = max(1, total // 10)
        self.rewards: list[float] = []
        self.kpis: list[tuple[float, float, float]] = []   # (SLA, GPU-h, scaling events)
        self.steps = 0
        self.bar = None
        self.t0 = time.perf_counter()

    def mean_reward(self) -> float | None:
        last = self.rewards[-self.WINDOW:]
        return sum(last) / len(last) if last else None

    def kpi_means(self) -> tuple[float, float, float] | None:
        """Mean (SLA attainment, GPU-hours, scaling events) per episode over the last
        ``WINDOW`` training episodes of an autoscaling env; None before the first ends."""
        last = self.kpis[-self.WINDOW:]
        if not last:
            return None
        sla, gpu, ev = (sum(x[i] for x in last) / len(last) for i in range(3))
        return sla, gpu, ev

    def line(self, wall: float) -> str:
        """``steps/total steps, steps/s, episodes, mean episode reward`` (then the last
        episodes' SLA / GPU-hours and, in Lagrangian mode, the multiplier)."""
        m = self.mean_reward()
        rate = self.steps / wall if wall > 0 else 0.0
        reward = "n/a (no episode ended yet)" if m is None else \
            f"{m:.3f} (last {min(len(self.rewards), self.WINDOW)})"
        kpi = ""
        if self.kpis:
            last = self.kpis[-self.WINDOW:]
            sla, gpu, ev = self.kpi_means()
            kpi = (f"; last {plural(len(last), 'training episode')} (the policy being "
                   f"trained, actions sampled): SLA {sla:.1%}, {gpu:.2f} GPU-h, "
                   f"{plural(round(ev), 'scaling event')} per episode")
        if self.dual is not None:
            kpi += (f"; Lagrange multiplier {self.dual.multiplier:.4g} (SLA target "
                    f"{self.dual.target:.0%})")
        done = 100 * self.steps // self.total        # floored: 100% only when it is done
        return (f"{self.steps:,}/{self.total:,} steps ({done}%) in "
                f"{wall:,.0f} s, {rate:,.0f} steps/s, {plural(len(self.rewards), 'episode', fmt=',')}, "
                f"mean episode reward {reward}{kpi}")

    def summary(self) -> dict[str, Any]:
        return {"episodes": len(self.rewards), "mean_episode_reward_last":
                self.mean_reward(), "mean_episode_reward_window": self.WINDOW}

    def callback(self):
        from stable_baselines3.common.callbacks import BaseCallback
        if not self.quiet and self.tty:
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, unit="step", file=sys.stderr, desc="train")
        outer = self

        class _Cb(BaseCallback):
            def _on_step(self) -> bool:
                for info in self.locals.get("infos", ()):
                    ep = info.get("episode")
                    if ep is not None:
                        outer.rewards.append(float(ep["r"]))
                    es = info.get("episode_summary")
                    if es is not None and "scaling_events" in es:     # autoscaling envs
                        outer.kpis.append((es["sla_attainment"], es["gpu_hours"],
                                           es["scaling_events"]))
                before, outer.steps = outer.steps, self.num_timesteps
                if outer.quiet:
                    return True
                if outer.bar is not None:
                    if self.n_calls % 50 == 0:
                        outer.bar.n = outer.steps
                        m = outer.mean_reward()
                        if m is not None:
                            outer.bar.set_postfix_str(f"mean ep reward {m:.3f}", refresh=False)
                        outer.bar.refresh()
                elif outer.steps // outer.every > before // outer.every \
                        and outer.steps < outer.total:
                    wall = time.perf_counter() - outer.t0
                    print(f"dynosim: train {outer.line(wall)}", file=sys.stderr, flush=True)
                return True

            def _on_rollout_end(self) -> None:
                means = outer.kpi_means()
                if means is not None:
                    for key, value in zip(("sla_attainment", "gpu_hours", "scaling_events"),
                                          means):
                        self.logger.record(f"rollout/{key}", value)
        return _Cb()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.n = self.total
            self.bar.close()

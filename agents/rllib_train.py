"""``dynosim train --framework rllib``: PPO on a dynosim_gym env with RLlib's new API stack.

Rollouts run in RLlib ``EnvRunner`` actors (``--num-env-runners``), on a local Ray started on
demand or on the cluster at ``--ray-address`` (:func:`dynosim.executors.connect`). Each runner
builds the env from its Gymnasium id ``dynosim_gym:DynoSim-v0`` -- the ``module:id`` form
imports the package, which registers the ids, in the remote worker -- with the resolved env
config passed as plain values (``env_config``), so a runner on another node needs only the
package installed.

Hyperparameters are the SB3 ones (``agents/hyperparams/ppo.yml``), translated to RLlib's
names (:data:`SB3_TO_RLLIB`); one training iteration collects ``n_steps x n_envs`` env steps.
The run directory holds ``run.json`` (``framework: rllib``; ``status`` running, completed or
failed, as an SB3 run's; the env config, hyperparameters, seed and the learning curve),
``checkpoint/`` (``Algorithm.save_to_path``) and ``learning_curve.png``. ``dynosim evaluate --policy DIR`` loads the policy's RLModule from the
checkpoint (:func:`load_policy`) and scores it through the same loop as SB3 models.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import InputError
from sim.schema import MAX_WORKERS, Range, arg_type
from sim.wording import plural
from dynosim.options import CMDLINE, float_or_nan

FRAMEWORKS = ("sb3", "rllib")
ALGOS = ("ppo",)
#: SB3 PPO hyperparameter -> RLlib PPOConfig.training() argument
SB3_TO_RLLIB = {"gamma": "gamma", "gae_lambda": "lambda_", "learning_rate": "lr",
                "clip_range": "clip_param", "ent_coef": "entropy_coeff",
                "n_epochs": "num_epochs", "batch_size": "minibatch_size",
                "vf_coef": "vf_loss_coeff", "max_grad_norm": "grad_clip"}
MODULE_PATH = ("learner_group", "learner", "rl_module", "default_policy")


def add_args(parser: argparse.ArgumentParser) -> None:
    """``--framework``, ``--num-env-runners`` and ``--ray-address`` on ``dynosim train``."""
    from dynosim import executors
    g = parser.add_argument_group("RLlib (the ray extra)")
    g.add_argument("--framework", choices=FRAMEWORKS, default="sb3",
                   help="sb3 (default) or rllib (PPO on RLlib's new API stack, Ray)")
    g.add_argument("--num-env-runners", type=arg_type(Range(0, MAX_WORKERS, unit="workers", why="one CPU each"), int),
                   default=None, metavar="N",
                   help="rllib: EnvRunner actors collecting rollouts, 1 CPU each (default 2; "
                   "0 = in the driver)")
    executors.add_args(g, executor=False)


def check_args(args: argparse.Namespace) -> None:
    if args.framework != "rllib":
        for flag, value in (("--num-env-runners", args.num_env_runners),
                            ("--ray-address", args.ray_address)):
            if value is not None:
                raise InputError("needs --framework rllib", file=CMDLINE, field=flag)
        return
    if args.algo.lower() not in ALGOS:
        raise InputError(f"--framework rllib supports {', '.join(ALGOS)}, got {args.algo!r}",
                         file=CMDLINE, field="--algo")
    if args.num_env_runners is not None and args.num_env_runners < 0:
        raise InputError(f"must be >= 0, got {args.num_env_runners}", file=CMDLINE,
                         field="--num-env-runners")


def train(env_id: str = "DynoSim-v0", *, config: str | None = None,
          timesteps: int | None = None, out: str | Path = "runs/rllib_ppo", seed: int = 0,
          num_env_runners: int | None = None, hyperparams: str | Path | None = None,
          overrides: dict[str, Any] | None = None, ray_address: str | None = None,
          quiet: bool = False) -> Path:
    """Train PPO with RLlib and save a checkpoint; returns the run directory.

    Raises:
        InputError: the ray extra missing, Ray unreachable, bad env id/config.
    """
    from dynosim import executors

    from dynosim_gym.config import load_env_config

    from .algos import check_env_id, load_hyperparams

    env_id = check_env_id(env_id)
    hp = load_hyperparams("ppo", env_id, hyperparams)
    defaults = "autoscale_default" if env_id == "DynoSim-v0" else "routing_default"
    # the YAML's env_kwargs are env overrides as in SB3 training (--set wins); its SB3
    # reward normalisation (normalize), behaviour-cloning warm start (bc_warm_start,
    # agents/router_train.py) and checkpoint selection (select_checkpoint, agents/
    # checkpoint_select.py) have no counterpart here: recorded as not applied
    recipe_env = dict(hp.pop("env_kwargs", None) or {})
    not_applied = {k: hp.pop(k) for k in ("normalize", "bc_warm_start", "select_checkpoint")
                   if k in hp}
    env_cfg = load_env_config(config, defaults=defaults, **{**recipe_env, **(overrides or {})})
    runners = 2 if num_env_runners is None else int(num_env_runners)
    n_envs = int(hp.pop("n_envs", 1))
    total = int(timesteps or hp.pop("n_timesteps", 100_000))
    hp.pop("n_timesteps", None)
    hp.pop("policy", None)
    batch = min(int(hp.pop("n_steps", 256)) * n_envs, total)
    net = (hp.pop("policy_kwargs", None) or {}).get("net_arch", [64, 64])
    training = {SB3_TO_RLLIB[k]: v for k, v in hp.items() if k in SB3_TO_RLLIB}
    unknown = sorted(set(hp) - set(SB3_TO_RLLIB))
    if unknown:
        raise InputError(f"no RLlib equivalent for {', '.join(unknown)}", field="--hyperparams")
    training["minibatch_size"] = min(int(training.get("minibatch_size", batch)), batch)
    if env_id == "DynoSim-v0" and env_cfg.env.reward.mode == "lagrangian":
        # the dual update is an SB3 callback (agents/lagrangian.py): under RLlib the
        # multiplier would stay at its initial value, a fixed-weight reward in disguise
        given = next((k for k in (overrides or {}) if k in ("env.reward.mode", "reward.mode")),
                     None)
        file, line = (None, None) if given else env_cfg.sim.locate("env.reward.mode")
        raise InputError("reward.mode lagrangian needs --framework sb3 (its dual update, "
                         "agents/lagrangian.py, is an SB3 callback; under RLlib the "
                         "multiplier would never update)", file=file, line=line,
                         field=f"--set {given}" if given else "env.reward.mode")
    # the env's own checks here, as one line naming the YAML's line or the --set, before
    # Ray starts: a trace's lines, the other env's families, keys the routing env refuses
    from dynosim_gym.episodes import EpisodeFactory
    EpisodeFactory(env_cfg, env_id)
    if env_id == "DynoSimRouting-v0":
        from dynosim_gym.routing_env import check_routing_keys
        check_routing_keys(env_cfg)
    else:       # here, once: Ray does not forward the env runners' stderr (log_to_driver)
        from dynosim_gym.config import note_unread_planner_knobs
        note_unread_planner_knobs(env_cfg)
    ray = executors.connect(ray_address, flag="--framework")
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    cfg = (PPOConfig()
           .api_stack(enable_rl_module_and_learner=True,
                      enable_env_runner_and_connector_v2=True)
           .environment(env=f"dynosim_gym:{env_id}",
                        env_config={"config": env_cfg.to_dict(), "render_mode": None})
           .env_runners(num_env_runners=runners, num_envs_per_env_runner=1,
                        num_cpus_per_env_runner=1, rollout_fragment_length="auto")
           .learners(num_learners=0)
           .training(train_batch_size_per_learner=batch, **training)
           .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=list(net),
                                                      fcnet_activation="tanh"))
           .reporting(metrics_num_episodes_for_smoothing=20)
           .debugging(seed=seed, log_level="ERROR"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "framework": "rllib", "algo": "ppo", "env_id": env_id, "seed": seed,
        "timesteps": total, "num_env_runners": runners, "train_batch_size": batch,
        "hyperparams": {**training, "fcnet_hiddens": list(net)},
        "config_source": str(config) if config is not None else defaults,
        "env_kwargs": recipe_env, "overrides": dict(overrides or {}),
        "not_applied": not_applied, "env_config": env_cfg.to_dict(),
        "ray": {"version": ray.__version__, "address": ray_address,
                "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
                "cpus": executors.cluster_cpus(ray)}}
    if total % batch and not quiet:         # whole train batches, as SB3's whole rollouts
        print(f"dynosim: note: {plural(total, 'timestep', fmt=',')} train as "
              f"{-(-total // batch) * batch:,} (RLlib PPO collects whole train batches of "
              f"{batch:,} steps)", file=sys.stderr)
    record["status"] = "running"
    (out / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    algo = cfg.build_algo()
    curve: list[dict[str, float]] = []
    show = not quiet and sys.stderr.isatty()
    bar = None
    if show:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="step", file=sys.stderr, desc="train (rllib)")
    t0 = time.perf_counter()
    steps = 0
    try:
        while steps < total:
            res = algo.train()
            steps = int(_get(res, "num_env_steps_sampled_lifetime", steps + batch))
            ret = float_or_nan(_get(res, "env_runners", {}).get("episode_return_mean", math.nan))
            wall = time.perf_counter() - t0
            curve.append({"steps": steps, "episode_return_mean": ret,
                          "wall_s": round(wall, 2)})
            if bar is not None:
                bar.n = min(steps, total)
                if not math.isnan(ret):
                    bar.set_postfix_str(f"episode return mean {ret:.3f}", refresh=False)
                bar.refresh()
            elif not quiet:         # not a terminal (CI, nohup, a pipe): one line each
                print(f"dynosim: train (rllib) {iteration_line(len(curve), steps, total, ret, wall)}",
                      file=sys.stderr, flush=True)
        ckpt = algo.save_to_path(str((out / "checkpoint").resolve()))
    except BaseException as exc:     # not a run: say so in its record (Ctrl-C included)
        from .algos import failure_text
        record.update(status="failed", error=failure_text(exc))
        (out / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        raise
    finally:
        if bar is not None:
            bar.close()
        algo.stop()
    wall = time.perf_counter() - t0
    record.update(status="completed", steps=steps, checkpoint="checkpoint", curve=curve,
                  train_wall_s=round(wall, 1),
                  steps_per_s=round(steps / wall, 1) if wall > 0 else None)
    (out / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    plot_curve(curve, out / "learning_curve.png",
               f"RLlib PPO on {env_id}: {plural(runners, 'env runner')}, seed {seed}")
    del ckpt
    return out


def iteration_line(iteration: int, steps: int, total: int, episode_return_mean: float,
                   elapsed_s: float) -> str:
    """One training iteration's progress line (what a non-terminal stderr shows per
    ``Algorithm.train()``): iteration, env steps sampled so far of the run's total, RLlib's
    ``episode_return_mean`` (smoothed over the last 20 episodes; NaN until one ended) and
    the elapsed wall time in seconds."""
    ret = ("n/a (no episode ended yet)" if math.isnan(episode_return_mean)
           else f"{episode_return_mean:.3f}")
    return (f"iteration {iteration}: {steps:,}/{total:,} env steps, episode return mean "
            f"{ret}, {elapsed_s:,.0f} s elapsed")


def _get(res: dict, key: str, default: Any) -> Any:
    if key in res:
        return res[key]
    return res.get("env_runners", {}).get(key, default) if isinstance(res, dict) else default


def plot_curve(curve: list[dict[str, float]], path: Path, title: str) -> None:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([c["steps"] for c in curve], [c["episode_return_mean"] for c in curve], "o-",
            ms=3)
    ax.set_xlabel("env steps sampled")
    ax.set_ylabel("mean episode return (last 20 episodes)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.savefig(path, dpi=110)


class RLlibPolicy:
    """A trained RLModule behind SB3's ``predict()`` (what :func:`agents.evaluate.evaluate`
    calls). Deterministic prediction takes the distribution's mode."""

    def __init__(self, module, observation_space) -> None:
        self.module = module
        self.observation_space = observation_space

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        import torch
        obs = torch.as_tensor(np.asarray(observation, dtype=np.float32)[None])
        with torch.no_grad():
            out = self.module.forward_inference({"obs": obs})
            dist = self.module.get_inference_action_dist_cls().from_logits(
                out["action_dist_inputs"])
            if deterministic:
                dist = dist.to_deterministic()
            action = dist.sample()[0].numpy()
        return (action.item() if action.ndim == 0 else action), state


def load_policy(run_dir: str | Path) -> RLlibPolicy:
    """The policy of a ``--framework rllib`` run directory (needs the ray extra)."""
    from dynosim import executors
    executors.require_ray("--policy")
    from ray.rllib.core.rl_module.rl_module import RLModule
    path = Path(run_dir) / "checkpoint"
    module_dir = path.joinpath(*MODULE_PATH)
    if not module_dir.is_dir():
        raise InputError(f"no RLlib policy in {path} (expected {'/'.join(MODULE_PATH)})",
                         field="--policy")
    module = RLModule.from_checkpoint(str(module_dir.resolve()))   # pyarrow: absolute
    module.eval()
    return RLlibPolicy(module, module.observation_space)


def run(args: argparse.Namespace) -> int:
    """``dynosim train --framework rllib ...``."""
    out = train(args.env, config=args.config, timesteps=args.timesteps, out=args.out,
                seed=args.seed, num_env_runners=args.num_env_runners,
                hyperparams=args.hyperparams, overrides=dict(args.set),
                ray_address=args.ray_address, quiet=args.quiet)
    if not args.quiet:
        print(f"dynosim: saved {out / 'checkpoint'} (evaluate: dynosim evaluate --policy "
              f"{out})", file=sys.stderr)
    return 0

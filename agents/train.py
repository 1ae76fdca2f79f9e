"""Train an SB3 / sb3-contrib agent on a dynosim_gym environment (``dynosim train``).

Hyperparameters come from RL-Zoo-style YAML (``agents/hyperparams/<algo>.yml``, one block per
env id; ``n_envs`` and ``n_timesteps`` are ours, the rest go to the algorithm). A run
directory holds ``model.zip``, ``run.json`` (algorithm, env id, the full env config,
hyperparameters, seed: enough to evaluate and to reproduce), ``checkpoints/`` and
TensorBoard logs in ``tb/``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from sim.errors import InputError

HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"
#: algo name -> (module, class); RL Zoo's names plus readable aliases.
ALGOS = {
    "ppo": ("stable_baselines3", "PPO"),
    "a2c": ("stable_baselines3", "A2C"),
    "dqn": ("stable_baselines3", "DQN"),
    "ppo_mask": ("sb3_contrib", "MaskablePPO"),
    "ppo_lstm": ("sb3_contrib", "RecurrentPPO"),
}
ALIASES = {"maskable_ppo": "ppo_mask", "maskableppo": "ppo_mask", "recurrent_ppo": "ppo_lstm",
           "recurrentppo": "ppo_lstm"}


def algo_name(name: str) -> str:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in ALGOS:
        raise InputError(f"unknown algorithm {name!r}; expected one of "
                         f"{', '.join([*ALGOS, *ALIASES])}", field="--algo")
    return key


def algo_class(name: str):
    import importlib
    mod, cls = ALGOS[algo_name(name)]
    return getattr(importlib.import_module(mod), cls)


def load_hyperparams(algo: str, env_id: str, path: str | Path | None = None) -> dict[str, Any]:
    algo = algo_name(algo)
    file = Path(path) if path is not None else HYPERPARAMS_DIR / f"{algo}.yml"
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise InputError("hyperparameter file not found", file=str(file)) from None
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML: {' '.join(str(exc).split())}", file=str(file)) from None
    if env_id not in data:
        raise InputError(f"no hyperparameters for {env_id}; the file has "
                         f"{', '.join(data) or 'none'}", file=str(file), field=env_id)
    hp = dict(data[env_id])
    return hp


def check_env_id(env_id: str) -> str:
    import dynosim_gym
    short = env_id.split(":", 1)[1] if ":" in env_id else env_id
    if short not in dynosim_gym.ENV_IDS:
        raise InputError(f"unknown env id {env_id!r}; expected one of "
                         f"{', '.join(dynosim_gym.ENV_IDS)}", field="--env")
    return short


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

    from dynosim_gym.config import load_env_config

    env_id = check_env_id(env_id)
    key = algo_name(algo)
    hp = load_hyperparams(key, env_id, hyperparams)
    n_envs = int(n_envs or hp.pop("n_envs", 1))
    hp.pop("n_envs", None)
    total = int(timesteps or hp.pop("n_timesteps", 100_000))
    hp.pop("n_timesteps", None)
    policy = hp.pop("policy", "MlpPolicy")
    overrides = dict(overrides or {})
    defaults = "autoscale_default" if env_id == "DynoSim-v0" else "routing_default"
    env_cfg = load_env_config(config, defaults=defaults, **overrides)  # validate before work
    env_kwargs = {"config": env_cfg.to_dict(), "render_mode": None}  # make_vec_env: no frames
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    venv = make_vec_env(f"dynosim_gym:{env_id}", n_envs=n_envs, seed=seed,
                        env_kwargs=env_kwargs, vec_env_cls=DummyVecEnv)
    cls = algo_class(key)
    model = cls(policy, venv, seed=seed, verbose=0, tensorboard_log=str(out / "tb"),
                device=device, **hp)
    callbacks = [CheckpointCallback(save_freq=max(1, checkpoint_every // n_envs),
                                    save_path=str(out / "checkpoints"), name_prefix=key)]
    dual = None
    if env_id == "DynoSim-v0" and env_cfg.env.reward.mode == "lagrangian":
        from .lagrangian import LagrangeMultiplierCallback
        rw = env_cfg.env.reward
        dual = LagrangeMultiplierCallback(rw.sla_target, rw.multiplier_lr, rw.multiplier)
        callbacks.append(dual)
    bar = _ProgressBar(total, quiet)
    if bar.enabled:
        callbacks.append(bar.callback())
    record = {"algo": key, "env_id": env_id, "seed": seed, "timesteps": total,
              "n_envs": n_envs, "policy": policy, "hyperparams": hp,
              "config_source": str(config) if config is not None else defaults,
              "overrides": overrides, "env_config": env_cfg.to_dict()}
    (out / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    t0 = time.perf_counter()
    try:
        model.learn(total_timesteps=total, callback=callbacks, tb_log_name=key)
    finally:
        bar.close()
    model.save(out / "model.zip")
    record["train_wall_s"] = round(time.perf_counter() - t0, 1)   # run record, not env info
    if dual is not None:
        record["lagrange_multiplier"] = {"final": dual.multiplier, "history": dual.history}
    (out / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    venv.close()
    return out


class _ProgressBar:
    """tqdm on stderr, only on a terminal and without --quiet."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.total = total
        self.bar = None

    def callback(self):
        from stable_baselines3.common.callbacks import BaseCallback
        from tqdm import tqdm
        self.bar = tqdm(total=self.total, unit="step", file=sys.stderr, desc="train")
        outer = self

        class _Cb(BaseCallback):
            def _on_step(self) -> bool:
                outer.bar.n = self.num_timesteps
                outer.bar.refresh() if self.n_calls % 50 == 0 else None
                return True
        return _Cb()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.n = self.total
            self.bar.close()

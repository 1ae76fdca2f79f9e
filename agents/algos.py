"""Algorithm names, hyperparameter files and env ids shared by training and evaluation.

Kept apart from :mod:`agents.train` so that evaluation (which loads models) does not import
training (which, for its warm start, uses the oracles that evaluation defines): no import
circle.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sim.config import read_yaml
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
    if not file.is_file():
        raise InputError("hyperparameter file not found", file=str(file))
    data = read_yaml(file)[0] or {}      # file:line errors, as for every YAML we read
    if not isinstance(data, dict):
        raise InputError("expected a mapping of env ids to hyperparameters", file=str(file))
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


def failure_text(exc: BaseException) -> str:
    """A failed run's ``error`` (run.json), one line: ``interrupted (KeyboardInterrupt)``
    for Ctrl-C, else ``Type: message`` (the type alone if it has no message)."""
    name = type(exc).__name__
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted ({name})"
    msg = str(exc).splitlines()[0] if str(exc).strip() else ""
    return f"{name}: {msg}" if msg else name

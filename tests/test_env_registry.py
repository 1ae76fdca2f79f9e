"""Contracts every registered dynosim_gym id must keep (parametrised over the registry)."""
from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env, data_equivalence

import dynosim_gym

TINY = {"DynoSim-v0": {"config": "autoscale_tiny"},
        "DynoSimRouting-v0": {"episode_steps": 2}}


def test_every_id_is_covered() -> None:
    assert set(dynosim_gym.ENV_IDS) == set(TINY)
    assert all(i in gym.registry for i in dynosim_gym.ENV_IDS)


@pytest.mark.parametrize("env_id", dynosim_gym.ENV_IDS)
def test_checkers(env_id: str) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env
    env = gym.make(env_id, **TINY[env_id])
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # any checker warning fails the test
        check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)
    assert env.unwrapped.__doc__ and all(
        f"## {s}" in env.unwrapped.__doc__ for s in
        ("Description", "Action Space", "Observation Space", "Rewards", "Episode End",
         "Arguments", "Version History"))


@pytest.mark.parametrize("env_id", dynosim_gym.ENV_IDS)
def test_seeded_rollouts_and_pickles_agree(env_id: str) -> None:
    def roll(env, n=6):
        out = [env.reset(seed=42)]
        for k in range(n):
            out.append(env.step(k % env.action_space.n))
            if out[-1][3]:
                break
        return out
    a = gym.make(env_id, **TINY[env_id]).unwrapped
    b = gym.make(env_id, **TINY[env_id]).unwrapped
    assert data_equivalence(roll(a), roll(b))
    a.reset(seed=1)
    a.step(0)
    c = pickle.loads(pickle.dumps(a))
    assert data_equivalence(a.step(1), c.step(1))
    assert isinstance(a.action_masks(), np.ndarray)

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
#: every (id, configuration) the contracts cover: each id's tiny config, and DynoSim-v0 on
#: disaggregated pools (a MultiDiscrete action)
CASES = {**{k: (k, v) for k, v in TINY.items()},
         "DynoSim-v0:disagg": ("DynoSim-v0", {"config": "autoscale_disagg", "episode_steps": 6,
                                              "rate_min_rps": 0.5, "rate_max_rps": 1.0})}


def _action(env, k: int):
    """The k-th action of a simple deterministic sweep over the space."""
    space = env.action_space
    if isinstance(space, gym.spaces.MultiDiscrete):
        return np.array([(k + j) % n for j, n in enumerate(space.nvec)], dtype=np.int64)
    return k % space.n


def test_every_id_is_covered() -> None:
    assert set(dynosim_gym.ENV_IDS) == set(TINY)
    assert all(i in gym.registry for i in dynosim_gym.ENV_IDS)


@pytest.mark.parametrize("case", CASES)
def test_checkers(case: str) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env
    env_id, kw = CASES[case]
    env = gym.make(env_id, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # any checker warning fails the test
        check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)
    assert env.unwrapped.__doc__ and all(
        f"## {s}" in env.unwrapped.__doc__ for s in
        ("Description", "Action Space", "Observation Space", "Rewards", "Episode End",
         "Arguments", "Version History"))


@pytest.mark.parametrize("case", CASES)
def test_seeded_rollouts_and_pickles_agree(case: str) -> None:
    env_id, kw = CASES[case]

    def roll(env, n=6):
        out = [env.reset(seed=42)]
        for k in range(n):
            out.append(env.step(_action(env, k)))
            if out[-1][3]:
                break
        return out
    a = gym.make(env_id, **kw).unwrapped
    b = gym.make(env_id, **kw).unwrapped
    assert data_equivalence(roll(a), roll(b))
    a.reset(seed=1)
    a.step(_action(a, 0))
    c = pickle.loads(pickle.dumps(a))
    assert type(c) is type(a)
    assert data_equivalence(a.step(_action(a, 1)), c.step(_action(c, 1)))
    masks = a.action_masks()
    assert isinstance(masks, np.ndarray) and masks.dtype == bool
    space = a.action_space
    assert masks.shape == ((int(space.nvec.sum()),) if hasattr(space, "nvec") else (space.n,))

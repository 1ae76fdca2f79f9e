"""DynoSim-v0 on disaggregated pools (issue 15 item 5): the MultiDiscrete action and its
masks, per-pool observations, GPU cost per role, Dynamo's disagg planner as the heuristic,
vector envs, and config errors. The registry-wide contracts (both checkers, determinism,
pickling) cover this config in ``tests/test_env_registry.py``."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import dynosim_gym  # noqa: F401  (registers the ids)
from dynosim_gym.autoscaling_env import DynoSimDisaggEnv
from dynosim_gym.config import load_env_config
from dynosim_gym.observations import FEATURES, POOL_FEATURES
from sim.errors import InputError

KW = {"config": "autoscale_disagg", "episode_steps": 8, "rate_min_rps": 1.0,
      "rate_max_rps": 2.0}


def make(**kw) -> DynoSimDisaggEnv:
    return gym.make("DynoSim-v0", **{**KW, **kw}).unwrapped


def test_disagg_config_makes_the_pool_env():
    env = make()
    assert type(env) is DynoSimDisaggEnv
    assert isinstance(env.action_space, gym.spaces.MultiDiscrete)
    assert list(env.action_space.nvec) == [3, 3]           # max_step 1 per pool
    obs, info = env.reset(seed=0)
    assert obs.shape == (len(FEATURES) + len(POOL_FEATURES),)
    assert info["active_prefill_workers"] == 1 and info["active_decode_workers"] == 1
    assert env.pool_max == {"prefill": 7, "decode": 7}     # (16 - 1 x 2) // 2


def test_masks_and_clamping_follow_floors_and_budget():
    env = make()
    env.reset(seed=1)
    # at the floor: -1 is masked for both pools, hold and +1 are allowed
    assert env.action_masks().tolist() == [False, True, True, False, True, True]
    for _ in range(6):
        obs, r, _, _, info = env.step(np.array([2, 2]))   # both up, budget 16 = 8 workers
    p, d = info["target_prefill_workers"], info["target_decode_workers"]
    assert 2 * (p + d) <= 16 and p + d == 8
    m = env.action_masks()
    assert m.tolist() == [True, True, False, True, True, False]   # no room to grow
    # a clamped request: both pools up at the full budget changes nothing
    obs, r, _, _, info = env.step(np.array([2, 2]))
    assert (info["requested_prefill_workers"], info["requested_decode_workers"]) == (p + 1, d + 1)
    assert (info["target_prefill_workers"], info["target_decode_workers"]) == (p, d)
    # a rebalance inside the budget goes through: prefill down, decode up
    obs, r, _, _, info = env.step(np.array([0, 2]))
    assert (info["target_prefill_workers"], info["target_decode_workers"]) == (p - 1, d + 1)


@pytest.mark.parametrize("bad", [1, np.array([True, False]), np.array([0.5, 1.0]),
                                 np.array([0, 1, 1]), np.array([3, 0]), "11"])
def test_actions_outside_the_space_raise(bad):
    env = make()
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(bad)


def test_gpu_cost_per_role_in_the_reward():
    env = make(**{"disagg.prefill_gpus_per_worker": 4, "max_gpu_budget": 20})
    env.reset(seed=2)
    obs, r, _, _, info = env.step(env.hold_action())
    t = info["reward_terms"]
    assert t["gpu"] == pytest.approx(t["gpu_prefill"] + t["gpu_decode"])
    # one prefill worker of 4 GPUs and one decode worker of 2 over a 10 s step
    assert t["gpu_prefill"] == pytest.approx(2 * t["gpu_decode"]) and t["gpu_prefill"] < 0
    assert r == pytest.approx(t["sla"] + t["gpu"] + t["change"])
    s = None
    for _ in range(7):
        *_, info = env.step(env.hold_action())
        s = info.get("episode_summary", s)
    assert s["gpu_hours"] == pytest.approx(s["gpu_hours_prefill"] + s["gpu_hours_decode"])
    assert s["gpu_hours_prefill"] == pytest.approx(2 * s["gpu_hours_decode"])


@pytest.mark.parametrize("kind", ["load", "throughput"])
def test_dynamo_disagg_planner_is_the_heuristic(kind):
    from agents.heuristics import PlannerPolicy
    # (the throughput planner at a 30 s interval: Dynamo's 180 s is most of this episode)
    env = make(rate_min_rps=5.0, rate_max_rps=6.0, episode_steps=30, planner_interval_s=30)
    pol = PlannerPolicy(kind, env)
    obs, _ = env.reset(seed=3)
    moved = set()
    for _ in range(30):
        a, _ = pol.predict(obs)
        assert a.shape == (2,) and env.action_space.contains(a)
        obs, r, _, trunc, info = env.step(a)
        moved |= {p for p in ("prefill", "decode") if a[("prefill", "decode").index(p)] != 1}
    assert moved, "the planner never moved a pool"
    assert info["episode_summary"]["scaling_events"] >= 1


def test_vector_envs_and_heuristics_batch():
    from agents.heuristics import PlannerPolicy, StaticPolicy
    venv = gym.make_vec("dynosim_gym:DynoSim-v0", num_envs=2, vectorization_mode="sync", **KW)
    try:
        obs, _ = venv.reset(seed=11)
        assert obs.shape == (2, len(FEATURES) + len(POOL_FEATURES))
        for pol in (PlannerPolicy("load", venv), StaticPolicy(venv)):
            a, _ = pol.predict(obs)
            assert a.shape == (2, 2)
            obs, r, term, trunc, info = venv.step(a)
            assert r.shape == (2,) and np.isfinite(r).all()
        masks = venv.call("action_masks")
        assert len(masks) == 2 and masks[0].shape == (6,)
    finally:
        venv.close()


def test_sb3_maskable_ppo_runs_a_few_steps():
    sb3c = pytest.importorskip("sb3_contrib")
    model = sb3c.MaskablePPO("MlpPolicy", make(), n_steps=16, batch_size=16, n_epochs=1,
                             seed=0, device="cpu")
    model.learn(16)
    env = make()
    obs, _ = env.reset(seed=0)
    a, _ = model.predict(obs, action_masks=env.action_masks(), deterministic=True)
    assert env.action_space.contains(a)


@pytest.mark.parametrize("over, key", [
    ({"env": {"action": {"type": "target"}}}, "env.action.type"),
    ({"env": {"initial_workers": 2}}, "env.initial_workers"),
    ({"env": {"max_gpu_budget": 3}}, "env.max_gpu_budget"),
    ({"disagg": {"num_prefill_workers": 7, "num_decode_workers": 2}},
     "disagg.num_prefill_workers"),
])
def test_config_errors_name_the_key(over, key):
    with pytest.raises(InputError) as e:
        load_env_config("autoscale_disagg", **over)
    assert key in str(e.value)

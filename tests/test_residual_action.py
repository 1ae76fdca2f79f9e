"""``env.action.type: residual`` (issue 11, round 7b): the policy picks an offset to the
throughput planner's worker count, re-computed every env step."""
from __future__ import annotations


import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dynosim_gym  # noqa: F401  (registers the ids)
from dynosim_gym.actions import ResidualAction
from conftest import expected_residual_base, random_episodes_digest
from sim.errors import InputError

TINY = "autoscale_tiny"


def _env(**kw):
    return gym.make("DynoSim-v0", config=TINY, **{"env.action.type": "residual", **kw})


def test_base_is_the_planners_demand_over_the_last_interval() -> None:
    """Counted independently from the simulation's arrival counters: requests and tokens
    that arrived in each step, over one engine's best SLA rate for their mean ISL/OSL
    (the constant predictor: the next interval as this one), ceiled; min_endpoint when none
    arrived. The KV hit rate is the planner's own input (its record of the tick)."""
    env = _env(**{"env.action.residual_offsets": [-2, 3], "env.max_gpu_budget": 32,
                  "env.rate_min_rps": 8.0, "env.rate_max_rps": 12.0, "env.episode_steps": 12})
    u = env.unwrapped
    env.reset(seed=2)
    e = u.cfg.env
    assert u.base_workers() == e.min_endpoint            # before the first tick
    sim = u.sim
    last = (sim.num_arrived, sim.arrived_input_tokens, sim.arrived_output_tokens)
    bases = []
    for _ in range(e.episode_steps):
        env.step(u.action_type.from_target(u.action_type.base, 0))
        now = (sim.num_arrived, sim.arrived_input_tokens, sim.arrived_output_tokens)
        want = expected_residual_base(env, now[0] - last[0], e.interval_s, now[1] - last[1],
                                      now[2] - last[2])
        last = now
        assert u.base_workers() == u.action_type.base == want
        bases.append(want)
    assert max(bases) > e.min_endpoint                   # the load moved it


def test_offset_zero_provisions_the_base_within_bounds_and_info_reports_it() -> None:
    env = _env(**{"env.action.residual_offsets": [-1, 2], "env.rate_min_rps": 4.0,
                  "env.rate_max_rps": 8.0, "env.episode_steps": 12})
    u = env.unwrapped
    env.reset(seed=0)
    lo, hi = u.cfg.env.min_endpoint, u.max_workers
    assert env.action_space == gym.spaces.Discrete(4)
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(u.cfg.env.episode_steps):
        base = u.action_type.base
        offset = int(rng.integers(-1, 3)) if len(seen) > 3 else 0
        _, _, _, _, info = env.step(offset + 1)
        assert info["base_workers"] == base
        assert info["requested_workers"] == base + offset
        assert info["target_workers"] == min(max(base + offset, lo), hi)
        assert info["active_workers"] + info["starting_workers"] == info["target_workers"]
        seen.add(base)
    assert len(seen) > 1


@settings(max_examples=200, deadline=None)
@given(lo=st.integers(-6, 0), hi=st.integers(0, 6), base=st.integers(1, 12),
       target=st.integers(-5, 25))
def test_from_target_is_the_nearest_offset(lo, hi, base, target) -> None:
    a = ResidualAction(1, 8, [lo, hi])
    a.base = base
    act = a.from_target(target, current=3)
    assert 0 <= act < a.space.n
    assert a.target(act, current=3) == min(max(target, base + lo), base + hi)
    for off in range(lo, hi + 1):                         # round trip inside the range
        assert a.target(a.from_target(base + off, 0), 0) == base + off


def test_the_teacher_path_maps_counts_to_offsets() -> None:
    """target_action (teachers, BC labels, heuristics) goes through from_target."""
    env = _env(**{"env.action.residual_offsets": [-2, 4]})
    u = env.unwrapped
    env.reset(seed=1)
    for _ in range(3):
        env.step(2)
    base = u.action_type.base
    assert u.target_action(base) == 2
    assert u.target_action(base + 1) == 3
    assert u.target_action(base + 10) == 6 and u.target_action(-5) == 0
    assert u.hold_action() == u.target_action(sum(u.sim.counts()[:2]))


def test_a_pickled_env_keeps_its_base() -> None:
    import pickle
    env = _env()
    u = env.unwrapped
    env.reset(seed=2)
    for _ in range(5):
        env.step(3)
    clone = pickle.loads(pickle.dumps(u))
    assert clone.action_type.base == u.action_type.base
    assert clone.step(3)[4] == u.step(3)[4]


@pytest.mark.parametrize("value, msg", [
    ([1, 3], "lo <= 0 <= hi"), ([-2, -1], "lo <= 0 <= hi"), ([0], "two integers"),
    ("[-1, 2]", "two integers"), ([-1.0, 2], "two integers"), ([True, 2], "two integers"),
])
def test_bad_offsets_are_one_line_errors(value, msg) -> None:
    with pytest.raises(InputError, match=msg) as ei:
        _env(**{"env.action.residual_offsets": value})
    assert "env.action.residual_offsets" in str(ei.value) and "\n" not in str(ei.value)


def test_residual_is_refused_on_disaggregated_pools() -> None:
    with pytest.raises(InputError, match="env.action.type"):
        gym.make("DynoSim-v0", config="autoscale_disagg", **{"env.action.type": "residual"})


def _digest(**kw) -> str:
    return random_episodes_digest(TINY, **kw)


def test_the_default_and_target_actions_are_unchanged() -> None:
    """Digests recorded on the commit before the residual action (0f8de5d, pure Python and
    compiled alike); a deliberate change to the env's trajectories updates them."""
    assert _env().unwrapped.cfg.env.action.type == "residual"
    default = gym.make("DynoSim-v0", config=TINY)
    assert default.unwrapped.cfg.env.action.type == "delta"
    assert default.unwrapped._base_planner is None
    assert _digest() == "33be0a8bd310738a"
    assert _digest(**{"env.action.type": "target",
                      "env.action.scale_down_window_s": 20}) == "1749ce7fb8dbb7d7"

"""``env.action.scale_down_window_s`` (issue 11): Kubernetes-HPA-style scale-down
stabilisation in ``DynoSim-v0``'s action handling."""
from __future__ import annotations

import math

import gymnasium as gym
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dynosim_gym  # noqa: F401  (registers the ids)
from sim.errors import InputError

TINY = "autoscale_tiny"


def _env(window_s: float):
    """12 steps of 10 s, up to 6 workers."""
    return gym.make("DynoSim-v0", config=TINY, **{
        "env.action.type": "target", "env.action.scale_down_window_s": window_s,
        "env.episode_steps": 12, "env.max_gpu_budget": 12})


def _run(window_s: float, wants) -> tuple[list[tuple[int, int]], int]:
    env = _env(window_s)
    u = env.unwrapped
    env.reset(seed=0)
    seen = []
    for want in wants:
        _, _, _, _, info = env.step(u.target_action(want))
        seen.append((info["requested_workers"], info["target_workers"]))
    return seen, u._totals["reversals"]


def test_scale_ups_apply_at_once_and_toggling_is_held() -> None:
    wants = (3, 4, 3, 4, 3, 3, 3, 2, 2)
    seen, reversals = _run(30.0, wants)                  # 3 decisions of 10 s
    assert [r for r, _ in seen] == list(wants)           # the policy's requests, unchanged
    assert [t for _, t in seen] == [3, 4, 4, 4, 4, 4, 3, 3, 3]
    assert reversals == 1                                # 1 -> 3 -> 4 up, then down once
    off, reversals_off = _run(0.0, wants)                # off: every request applies
    assert [t for _, t in off] == list(wants) and reversals_off == 3


@settings(max_examples=15, deadline=None)
@given(window_s=st.sampled_from([0.0, 10.0, 25.0, 60.0]),
       actions=st.lists(st.integers(0, 5), min_size=1, max_size=12))
def test_provisioned_count_is_the_highest_request_in_the_window(window_s, actions) -> None:
    """Invariant: target = clamp(max of the last ceil(W / interval) requests); 0 = off."""
    env = _env(window_s)
    u = env.unwrapped
    env.reset(seed=1)
    n = max(1, math.ceil(window_s / u.cfg.env.interval_s))
    asked = []
    for a in actions:
        _, _, _, _, info = env.step(a)
        asked.append(info["requested_workers"])
        want = max(asked[-n:])
        assert info["target_workers"] == min(max(want, u.cfg.env.min_endpoint), u.max_workers)


def test_window_is_part_of_the_policy_interface_and_rejected_for_disagg() -> None:
    with pytest.raises(InputError, match="scale_down_window_s"):
        gym.make("DynoSim-v0", config="autoscale_disagg",
                 **{"env.action.scale_down_window_s": 30.0})
    with pytest.raises(InputError, match="scale_down_window_s"):
        _env(-1.0)

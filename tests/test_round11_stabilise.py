"""Issue 11, round 11: ``env.action.stabilise: base``, the scale-down window and the
reversal cooldown applied to the residual base alone, the offset after them (so a
stochastic policy's sampled offset takes effect at once)."""
from __future__ import annotations


import gymnasium as gym
import numpy as np
import pytest

import dynosim_gym  # noqa: F401  (registers the ids)
from conftest import random_episodes_digest, schedule_teacher_keys
from sim.errors import InputError

TINY = "autoscale_tiny"
#: a residual action with both stabilisers on, over a load that moves the base
STABLE = {"env.action.type": "residual", "env.action.scale_down_window_s": 60,
          "env.action.reversal_cooldown_s": 60, "env.action.base_before_first_tick": "hold",
          "env.rate_min_rps": 4.0, "env.rate_max_rps": 8.0, "env.episode_steps": 60}


def _run(actions, seed=3, **kw):
    """Per step: (obs bytes, reward, base, requested, provisioned); and the summary."""
    env = gym.make("DynoSim-v0", config=TINY, **{**STABLE, **kw})
    u = env.unwrapped
    obs, _ = env.reset(seed=seed)
    rows, info = [], {}
    for k in range(u.cfg.env.episode_steps):
        a = actions(u, k) - u.action_type.off_lo
        obs, r, _, _, info = env.step(a)
        rows.append((obs.tobytes(), r, info["base_workers"], info["requested_workers"],
                     info["target_workers"]))
    return rows, info["episode_summary"]


@pytest.mark.parametrize("seed", [0, 3])
def test_offset_zero_under_base_is_the_count_trajectory(seed) -> None:
    """Offset 0 at every step: stabilising the base alone provisions what stabilising the
    requested count does (the same stabilised base), and the reported base is that count."""
    base, sb = _run(lambda u, k: 0, seed, **{"env.action.stabilise": "base"})
    count, sc = _run(lambda u, k: 0, seed)
    assert [r[:2] + r[4:] for r in base] == [r[:2] + r[4:] for r in count]
    assert sb == sc
    assert all(b == req == prov for _, _, b, req, prov in base)
    # the window held something: the raw base moved below the provisioned count
    assert any(c[2] != c[4] for c in count)


def test_a_sampled_cut_takes_effect_the_next_step_under_a_300s_window() -> None:
    """Offset -1 once, after 20 steps at 0: under ``base`` the provisioned count is the
    stabilised base - 1 that very step (and back the step after); under ``count`` the
    300 s window keeps the highest request of its 30 decisions, so the cut never shows."""
    kw = {"env.action.scale_down_window_s": 300, "env.action.reversal_cooldown_s": 300}
    cut = lambda u, k: -1 if k in (20, 25) else 0                       # noqa: E731
    base, _ = _run(cut, **kw, **{"env.action.stabilise": "base"})
    count, _ = _run(cut, **kw)
    for k in (20, 25):
        b, req, prov = base[k][2:]
        assert b > 1 and req == b - 1 and prov == b - 1
        assert base[k + 1][4] == base[k + 1][2]
        assert count[k][4] == count[k - 1][4] >= count[k][3] + 1
    assert [r[2] for r in base] == [r[4] for r in _run(lambda u, k: 0, **kw)[0]]


def test_info_reports_the_raw_and_stabilised_base_and_the_teacher_maps_to_the_latter() -> None:
    env = gym.make("DynoSim-v0", config=TINY, **{**STABLE, "env.action.stabilise": "base",
                                                 "env.action.scale_down_window_s": 300})
    u = env.unwrapped
    env.reset(seed=3)
    held = 0
    for _ in range(u.cfg.env.episode_steps):
        b = u.action_type.base
        assert u.target_action(b) == -u.action_type.off_lo          # offset 0
        assert u.target_action(b - 1) == -u.action_type.off_lo - 1 or b - 1 < 1
        _, _, _, _, info = env.step(u.target_action(b))
        assert info["base_workers"] == b >= info["raw_base_workers"]
        held += b > info["raw_base_workers"]
    assert held        # the window held the base above the planner's count somewhere


@pytest.mark.parametrize("kw", [{"env.action.type": "target"}, {}])
def test_stabilise_base_without_a_residual_action_is_one_line_naming_the_key(kw) -> None:
    with pytest.raises(InputError) as ei:
        gym.make("DynoSim-v0", config=TINY, **{**kw, "env.action.stabilise": "base"})
    msg = str(ei.value)
    assert "env.action.stabilise" in msg and "residual" in msg and "\n" not in msg
    with pytest.raises(InputError, match="env.action.stabilise"):
        gym.make("DynoSim-v0", config=TINY, **{**STABLE, "env.action.stabilise": "offset"})


def _digest(**kw) -> str:
    return random_episodes_digest(TINY, **kw)


def test_the_default_stabilise_is_unchanged() -> None:
    """Recorded on the commit before ``stabilise`` (f3837c6, pure Python and compiled
    alike): a residual action with window and cooldown, random offsets."""
    assert _digest(**STABLE) == "bb3d3f1162696055"
    assert _digest(**STABLE, **{"env.action.stabilise": "count"}) == "bb3d3f1162696055"
    assert _digest(**STABLE, **{"env.action.stabilise": "base"}) != "bb3d3f1162696055"


def test_a_pickled_env_keeps_its_stabilised_base() -> None:
    import pickle
    env = gym.make("DynoSim-v0", config=TINY, **{**STABLE, "env.action.stabilise": "base"})
    u = env.unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    for _ in range(15):
        env.step(int(rng.integers(env.action_space.n)))
    v = pickle.loads(pickle.dumps(u))
    assert v.action_type.base == u.action_type.base and v._stab == u._stab
    assert list(v._requests) == list(u._requests)


def test_schedule_cache_key_ignores_stabilise(tmp_path, monkeypatch) -> None:
    """A teacher's schedule is a plan of counts made on a target env: ``stabilise`` leaves
    its key (hence cached schedules) unchanged, and the plan's env has the default."""
    keys, planned_on = schedule_teacher_keys(monkeypatch, tmp_path, (
        gym.make("DynoSim-v0", config=TINY,
                 **{**STABLE, "env.action.stabilise": how, "env.episode_steps": 6})
        for how in ("count", "base")))
    assert keys[0] == keys[1] and len(planned_on) == 2
    assert all(a.type == "target" and a.stabilise == "count" for a in planned_on)

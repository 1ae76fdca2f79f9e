"""Issue 11, round 9: a smoothed residual base (``env.action.base_interval_s``), a reversal
cooldown (``env.action.reversal_cooldown_s``) and the warm start's ``teacher: base``."""
from __future__ import annotations


import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dynosim_gym  # noqa: F401  (registers the ids)
from conftest import expected_residual_base, schedule_teacher_keys
from sim.errors import InputError

TINY = "autoscale_tiny"


def _env(**kw):
    return gym.make("DynoSim-v0", config=TINY, **kw)


# -- env.action.base_interval_s ---------------------------------------------------------------

@pytest.mark.parametrize("steps_back", [3, 6])
def test_smoothed_base_is_the_planners_demand_over_the_trailing_window(steps_back) -> None:
    """Counted independently from the simulation's arrival counters: the requests and
    tokens that arrived over the last min(B, t) seconds, as a rate over that span, over one
    engine's best SLA rate for their mean ISL/OSL, ceiled; re-evaluated every step."""
    env = _env(**{"env.action.type": "residual", "env.max_gpu_budget": 32,
                  "env.rate_min_rps": 8.0, "env.rate_max_rps": 12.0, "env.episode_steps": 12,
                  "env.action.base_interval_s": 10.0 * steps_back})
    u = env.unwrapped
    env.reset(seed=2)
    e, sim = u.cfg.env, u.sim
    marks = [(0.0, sim.num_arrived, sim.arrived_input_tokens, sim.arrived_output_tokens)]
    bases = []
    for k in range(e.episode_steps):
        env.step(u.action_type.from_target(u.action_type.base, 0))
        marks.append((sim.now, sim.num_arrived, sim.arrived_input_tokens,
                      sim.arrived_output_tokens))
        t0, n0, i0, o0 = marks[max(0, len(marks) - 1 - steps_back)]
        t1, n1, i1, o1 = marks[-1]
        assert t1 - t0 == pytest.approx(min(k + 1, steps_back) * e.interval_s * 1000.0)
        want = expected_residual_base(env, n1 - n0, (t1 - t0) / 1000.0, i1 - i0, o1 - o0)
        assert u.base_workers() == u.action_type.base == want
        bases.append(want)
    assert max(bases) > e.min_endpoint                   # the load moved it


def test_base_interval_equal_to_the_step_is_the_default_trajectory() -> None:
    """B = interval_s is today's base (the plain advisor, not the trailing one): the same
    observations, rewards and infos step by step as the key left out."""
    def run(**kw):
        env = _env(**{"env.action.type": "residual", "env.episode_steps": 12,
                      "env.rate_min_rps": 4.0, "env.rate_max_rps": 8.0, **kw})
        rng = np.random.default_rng(5)
        obs, _ = env.reset(seed=3)
        out = [obs.tobytes()]
        for _ in range(12):
            obs, r, _, _, info = env.step(int(rng.integers(env.action_space.n)))
            out.append((obs.tobytes(), r, info["base_workers"], info["target_workers"]))
        return out, type(env.unwrapped._base_planner).__name__
    same, kind = run(**{"env.action.base_interval_s": 10.0})
    default, kind0 = run()
    assert same == default and kind == kind0 == "ThroughputAdvisor"
    smooth, kind = run(**{"env.action.base_interval_s": 60.0})
    assert kind == "TrailingThroughputAdvisor" and smooth != default


@pytest.mark.parametrize("kw, words", [
    ({"env.action.type": "residual", "env.action.base_interval_s": 15.0},
     "multiple of env.interval_s"),
    ({"env.action.type": "residual", "env.action.base_interval_s": 0.0}, ""),
    ({"env.action.type": "residual", "env.action.base_interval_s": -10.0}, ""),
    ({"env.action.type": "target", "env.action.base_interval_s": 60.0}, "no effect"),
    ({"env.action.base_interval_s": 10.0}, "no effect"),      # delta, even = interval_s
    ({"env.action.type": "target", "env.action.residual_offsets": [-1, 1]}, "no effect"),
])
def test_base_interval_and_offsets_are_refused_in_one_line_naming_the_key(kw, words) -> None:
    with pytest.raises(InputError) as ei:
        _env(**kw)
    msg = str(ei.value)
    key = next(k for k in kw if k != "env.action.type")
    assert key in msg and words in msg and "\n" not in msg


def test_resolved_configs_of_every_action_type_still_load() -> None:
    """A run record's resolved config carries the defaults of every key under every type;
    it must load back (the refusal above is for values that differ from the default)."""
    from dynosim_gym.config import load_env_config
    for kind in ("delta", "target", "residual"):
        cfg = load_env_config(TINY, **{"env.action.type": kind})
        again = load_env_config(cfg.to_dict())
        assert again.env.action == cfg.env.action


def test_base_before_first_tick_hold_keeps_the_initial_count_at_step_0() -> None:
    """Default: the base is min_endpoint before the advisor's first tick, so offset 0 at
    step 0 drains the initial workers down to it; ``hold``: the base is the count
    provisioned, so offset 0 keeps it; from the first tick on both are the planner's."""
    def run(**kw):
        env = _env(**{"env.action.type": "residual", "env.episode_steps": 12,
                      "cluster.num_workers": 3, "env.rate_min_rps": 4.0,
                      "env.rate_max_rps": 8.0, **kw})
        u = env.unwrapped
        env.reset(seed=3)
        bases = [u.base_workers()]
        got = []
        for _ in range(12):
            info = env.step(u.action_type.from_target(u.action_type.base, 0))[4]
            got.append((info["base_workers"], info["target_workers"]))
        return bases, got, u._base_planner.ticks
    b0, default, ticks0 = run()
    b1, hold, ticks1 = run(**{"env.action.base_before_first_tick": "hold"})
    assert b0 == [1] and default[0][1] == 1                # drained 3 -> 1 at step 0
    assert b1 == [3] and hold[0][1] == 3                   # held at 3
    # info["base_workers"] is the base each decision used: step 0's the pre-tick one, step
    # 1's the first tick's count
    assert (default[0][0], hold[0][0]) == (1, 3)
    assert default[1][0] == ticks0[0]["wanted"] and hold[1][0] == ticks1[0]["wanted"]
    with pytest.raises(InputError, match="env.action.base_before_first_tick.*no effect"):
        _env(**{"env.action.type": "target", "env.action.base_before_first_tick": "hold"})
    with pytest.raises(InputError, match="env.action.base_before_first_tick"):
        _env(**{"env.action.type": "residual", "env.action.base_before_first_tick": "x"})


# -- env.action.reversal_cooldown_s -----------------------------------------------------------

def _target_env(cooldown_s: float, steps: int = 40, **kw):
    """Target actions on the tiny scenario: steps of 10 s, up to 4 workers."""
    return _env(**{"env.action.type": "target", "env.episode_steps": steps,
                   "env.action.reversal_cooldown_s": cooldown_s, **kw})


def test_a_reversal_within_the_cooldown_is_held_and_info_shows_it() -> None:
    env = _target_env(30.0)
    u = env.unwrapped
    env.reset(seed=0)
    wants = (3, 1, 1, 1, 4, 2, 4, 4)
    seen = []
    for w in wants:
        _, _, _, _, info = env.step(u.target_action(w))
        seen.append((info["requested_workers"], info["target_workers"]))
    # 1 -> 3 up at t=0; down to 1 asked at 10 s and 20 s: held (10, 20 s < 30 s after);
    # at 30 s it applies; up at 40 s and 50 s reverses it 10 and 20 s after: held; at 60 s
    # (30 s after) it applies
    assert seen == [(3, 3), (1, 3), (1, 3), (1, 1), (4, 1), (2, 1), (4, 4), (4, 4)]
    assert u._totals["reversals"] == 2
    env_off = _target_env(0.0)
    env_off.reset(seed=0)
    off = [env_off.step(env_off.unwrapped.target_action(w))[4]["target_workers"]
           for w in wants]
    assert off == [3, 1, 1, 1, 4, 2, 4, 4]


def test_same_direction_moves_are_not_held() -> None:
    env = _target_env(300.0)
    u = env.unwrapped
    env.reset(seed=0)
    got = [env.step(u.target_action(w))[4]["target_workers"] for w in (2, 3, 4, 3, 2)]
    assert got == [2, 3, 4, 4, 4]


@settings(max_examples=12, deadline=None)
@given(cooldown_s=st.sampled_from([300.0, 450.0]),
       window_s=st.sampled_from([0.0, 30.0]),
       actions=st.lists(st.integers(0, 3), min_size=35, max_size=40))
def test_a_cooldown_of_300s_or_more_leaves_no_flaps_whatever_the_actions(
        cooldown_s, window_s, actions) -> None:
    """Invariant: flaps (reversals < 300 s after the opposite move) == 0 with C >= 300 s,
    for any action sequence (a scale-down window or not)."""
    env = _target_env(cooldown_s, steps=len(actions),
                      **{"env.action.scale_down_window_s": window_s})
    env.reset(seed=1)
    info = {}
    for a in actions:
        _, _, _, trunc, info = env.step(a)
    s = info["episode_summary"]
    assert trunc and s["flaps"] == 0 and s["flap_steps"] == []
    assert s["reversals"] <= s["scaling_events"]


def test_without_the_cooldown_the_same_actions_flap() -> None:
    """The property above can fail: a toggling policy flaps when the cooldown is off."""
    actions = [3, 0] * 10
    for c, flapping in ((0.0, True), (300.0, False)):
        env = _target_env(c, steps=len(actions))
        env.reset(seed=1)
        for a in actions:
            info = env.step(a)[4]
        assert (info["episode_summary"]["flaps"] > 0) == flapping


def test_cooldown_default_is_off_and_refused_for_pools_and_negative() -> None:
    assert _env().unwrapped.cfg.env.action.reversal_cooldown_s == 0.0
    with pytest.raises(InputError, match="env.action.reversal_cooldown_s"):
        gym.make("DynoSim-v0", config="autoscale_disagg",
                 **{"env.action.reversal_cooldown_s": 300.0})
    with pytest.raises(InputError, match="env.action.reversal_cooldown_s"):
        _target_env(-1.0)


# -- bc_warm_start.teacher: base ----------------------------------------------------------------

def test_base_teacher_labels_every_step_offset_zero() -> None:
    from agents.router_train import BASE_TEACHER, teacher_samples
    env = _env(**{"env.action.type": "residual", "env.action.residual_offsets": [-1, 3],
                  "env.rate_min_rps": 4.0, "env.rate_max_rps": 8.0})
    obs, acts, lengths = teacher_samples(env, BASE_TEACHER, [0, 1])
    assert lengths == [6, 6] and len(obs) == 12 and set(acts) == {1}     # offset 0 = 0 - lo

    class Up:             # a learner that always asks for +3: labels stay offset 0 (DAgger)
        def predict(self, o, deterministic=True):
            return np.int64(4), None
    _, acts, _ = teacher_samples(env, BASE_TEACHER, [0], learner=Up())
    assert set(acts) == {1}


def test_base_teacher_is_refused_without_a_residual_action(tmp_path) -> None:
    from agents.router_train import behaviour_clone
    from agents.train import _check_teacher
    _check_teacher({"teacher": "base"}, "DynoSim-v0", "hp.yml", "residual")
    with pytest.raises(InputError, match="bc_warm_start.teacher.*residual"):
        _check_teacher({"teacher": "base"}, "DynoSim-v0", "hp.yml", "target")
    with pytest.raises(InputError, match="unknown teacher"):
        _check_teacher({"teacher": "base"}, "DynoSimRouting-v0", "hp.yml", "delta")

    class Model:          # behaviour_clone reads the env before the policy is fitted
        policy = object()
    with pytest.raises(InputError, match="bc_warm_start.dagger"):
        behaviour_clone(Model(), _env(**{"env.action.type": "residual"}).unwrapped.cfg
                        .to_dict(), teacher="base", env_id="DynoSim-v0",
                        dagger={"rounds": 1, "deadband": 1})


def test_schedule_cache_key_ignores_the_new_keys(tmp_path, monkeypatch) -> None:
    """A schedule is a plan of counts: the cooldown (applied by the learner's env) and the
    base's interval (a target action has no base) leave its key, hence the cached round-8
    schedules, unchanged; the plan is made on a target env with neither."""
    keys, planned_on = schedule_teacher_keys(monkeypatch, tmp_path, (
        _env(**{"env.action.type": "residual", "env.action.scale_down_window_s": 300, **kw})
        for kw in ({}, {"env.action.reversal_cooldown_s": 300,
                        "env.action.base_interval_s": 60})))
    assert keys[0] == keys[1] and len(planned_on) == 2
    assert all(a.type == "target" and a.reversal_cooldown_s == 0 and
               a.scale_down_window_s == 0 and a.base_interval_s is None for a in planned_on)


def test_round9_recipe_is_round8_with_the_base_teacher() -> None:
    """``ppo_round9.yml`` = round 8 with ``bc_warm_start.teacher: base`` (the training-split
    rules kept round 8's base: no base_interval_s, no cooldown); its env config validates
    and its teacher passes the pre-run check."""
    from pathlib import Path

    from agents.train import _check_teacher, load_hyperparams
    from dynosim_gym.config import load_env_config
    root = Path(__file__).resolve().parents[1] / "agents" / "hyperparams"
    r9 = load_hyperparams("ppo", "DynoSim-v0", root / "ppo_round9.yml")
    r8 = load_hyperparams("ppo", "DynoSim-v0", root / "ppo_round8.yml")
    assert r9["bc_warm_start"] == dict(r8["bc_warm_start"], teacher="base")
    assert {k: v for k, v in r9.items() if k != "bc_warm_start"} == \
        {k: v for k, v in r8.items() if k != "bc_warm_start"}
    cfg = load_env_config("autoscale_default", **r9["env_kwargs"])
    a = cfg.env.action
    assert a.type == "residual" and a.base_interval_s is None and a.reversal_cooldown_s == 0
    _check_teacher(r9["bc_warm_start"], "DynoSim-v0", "ppo_round9.yml", a.type)

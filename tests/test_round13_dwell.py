"""Issue 11, round 13: ``env.action.offset_dwell_s``, a minimum dwell on the residual's
applied offset under ``env.action.stabilise: base`` (the base still re-computed and
stabilised every step, the held offset added to it)."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dynosim_gym  # noqa: F401  (registers the ids)
from conftest import random_episodes_digest, schedule_teacher_keys
from sim.errors import InputError

TINY = "autoscale_tiny"
#: round 11's test setting (a residual action, both stabilisers on a moving base), on base;
#: decisions every 5 s so a dwell spans several of them
BASE = {"env.action.type": "residual", "env.action.scale_down_window_s": 60,
        "env.action.reversal_cooldown_s": 60, "env.action.base_before_first_tick": "hold",
        "env.rate_min_rps": 4.0, "env.rate_max_rps": 8.0, "env.episode_steps": 60,
        "env.action.stabilise": "base"}
FIVE = {**BASE, "env.interval_s": 5, "env.episode_steps": 48}


def _env(**kw):
    return gym.make("DynoSim-v0", config=TINY, **kw)


def _play(offsets, seed=3, **kw):
    """Per step: the info of a residual env asked for ``offsets`` (workers), one a step."""
    env = _env(**kw)
    u = env.unwrapped
    env.reset(seed=seed)
    rows = []
    for off in offsets:
        base = u.action_type.base
        rows.append((base, off, env.step(off - u.action_type.off_lo)[4]))
    return u, rows


# -- semantics ----------------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(dwell_steps=st.sampled_from([2, 3, 6]),
       offsets=st.lists(st.integers(-2, 4), min_size=48, max_size=48),
       seed=st.integers(0, 3))
def test_the_applied_offset_never_changes_twice_within_the_dwell(dwell_steps, offsets,
                                                                  seed) -> None:
    """Invariant, any action sequence: two changes of the applied offset are at least the
    dwell apart; the provisioned count is the stabilised base plus the applied offset
    (clamped); an ask is applied at once unless a change came less than the dwell ago, and
    ``offset_held`` says exactly when an ask was not applied."""
    u, rows = _play(offsets, seed, **{**FIVE, "env.action.offset_dwell_s": 5 * dwell_steps})
    applied, since = 0, -10 ** 9
    changes = []
    for k, (base, asked, info) in enumerate(rows):
        free = k - since >= dwell_steps
        if asked != applied and free:
            applied, since = asked, k
            changes.append(k)
        assert info["applied_offset"] == applied, k
        assert info["offset_held"] == (asked != applied), k
        assert info["base_workers"] == base
        assert info["requested_workers"] == base + asked
        assert info["target_workers"] == min(max(base + applied, 1), u.max_workers)
    assert all(b - a >= dwell_steps for a, b in zip(changes, changes[1:]))


def test_a_sampled_rise_is_held_for_the_dwell_then_the_next_ask_applies() -> None:
    """+2 asked once at step 10, then 0: with a 30 s dwell at 5 s decisions the +2 stays
    for 6 steps (10-15) and 0 applies at step 16; without a dwell it lasts one step. The
    base is re-computed every step all along (it moves under the held offset)."""
    asks = [0] * 10 + [2] + [0] * 15
    u, rows = _play(asks, **{**FIVE, "env.action.offset_dwell_s": 30})
    applied = [info["applied_offset"] for _, _, info in rows]
    assert applied == [0] * 10 + [2] * 6 + [0] * 10
    assert [info["offset_held"] for _, _, info in rows] == \
        [False] * 11 + [True] * 5 + [False] * 10
    for base, _, info in rows:
        assert info["target_workers"] == min(max(base + info["applied_offset"], 1),
                                             u.max_workers)
    _, free = _play(asks, **FIVE)
    assert [info["target_workers"] - b for b, _, info in free][10:12] == [2, 0]
    assert "applied_offset" not in free[0][2] and "offset_held" not in free[0][2]
    # the held steps follow the base, not a frozen count
    assert len({b for b, _, _ in rows}) > 1


def test_a_dwell_of_one_interval_is_the_free_trajectory() -> None:
    """``offset_dwell_s = interval_s`` lets every step change the offset: the trajectory
    (observations, rewards, provisioned counts) is the one without a dwell."""
    rng = np.random.default_rng(5)
    asks = [int(x) for x in rng.integers(-2, 5, 40)]
    env_a, env_b = _env(**FIVE), _env(**{**FIVE, "env.action.offset_dwell_s": 5})
    for env in (env_a, env_b):
        env.reset(seed=1)
    for off in asks:
        a = off - env_a.unwrapped.action_type.off_lo
        oa, ra, _, _, ia = env_a.step(a)
        ob, rb, _, _, ib = env_b.step(a)
        assert oa.tobytes() == ob.tobytes() and ra == rb
        assert ia["target_workers"] == ib["target_workers"]
        assert ib["applied_offset"] == off and not ib["offset_held"]


def test_a_pickled_env_keeps_its_held_offset() -> None:
    import pickle
    env = _env(**{**FIVE, "env.action.offset_dwell_s": 60})
    u = env.unwrapped
    env.reset(seed=0)
    for off in [0, 0, 3, 0, -1]:
        env.step(off - u.action_type.off_lo)
    v = pickle.loads(pickle.dumps(u))
    assert (v._offset, v._offset_since_ms) == (u._offset, u._offset_since_ms) == (3, 10_000.0)
    a = -u.action_type.off_lo
    assert v.step(a)[4] == u.step(a)[4]


# -- defaults unchanged -------------------------------------------------------------------------

#: round 11's residual setting with window and cooldown on the base (tests/test_round11_
#: stabilise.py's STABLE with stabilise: base), random offsets: recorded on the commit before
#: offset_dwell_s (221acda), pure Python
BASE_DIGEST = "cb8c226a15db1e26"


def test_the_default_dwell_is_unchanged() -> None:
    """A dwell of 0 (the default) leaves both stabilise modes' trajectories, info included,
    byte-identical to before the option."""
    count = {k: v for k, v in BASE.items() if k != "env.action.stabilise"}
    assert random_episodes_digest(TINY, **count) == "bb3d3f1162696055"        # round 11's
    assert random_episodes_digest(TINY, **count, **{"env.action.offset_dwell_s": 0}) == \
        "bb3d3f1162696055"
    assert random_episodes_digest(TINY, **BASE) == BASE_DIGEST
    assert random_episodes_digest(TINY, **BASE, **{"env.action.offset_dwell_s": 0}) == \
        BASE_DIGEST
    # and the digest can tell a dwell apart
    assert random_episodes_digest(TINY, **BASE, **{"env.action.offset_dwell_s": 30}) != \
        BASE_DIGEST


# -- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, words", [
    ({**FIVE, "env.action.offset_dwell_s": 12}, "multiple of env.interval_s (5)"),
    ({**FIVE, "env.action.offset_dwell_s": -5}, ""),
    ({**FIVE, "env.action.offset_dwell_s": 30, "env.action.stabilise": "count"},
     "stabilise: base"),
    ({"env.action.type": "target", "env.action.offset_dwell_s": 30}, "residual"),
    ({"env.action.offset_dwell_s": 30}, "residual"),
])
def test_a_bad_dwell_is_one_line_naming_the_key(kw, words) -> None:
    with pytest.raises(InputError) as ei:
        _env(**kw)
    msg = str(ei.value)
    assert "env.action.offset_dwell_s" in msg and words in msg and "\n" not in msg


def test_a_dwell_on_the_disaggregated_env_is_refused_naming_the_key() -> None:
    with pytest.raises(InputError) as ei:
        gym.make("DynoSim-v0", config="autoscale_disagg", **{"env.action.offset_dwell_s": 30})
    msg = str(ei.value)
    assert "env.action.offset_dwell_s" in msg and "\n" not in msg
    assert "use type: residual" not in msg


def test_a_bad_dwell_in_a_yaml_names_file_line_and_key_exit_2(tmp_path, capsys) -> None:
    from conftest import one_line_error, run_cli
    from dynosim_gym.config import CONFIG_DIR
    text = (CONFIG_DIR / "autoscale_tiny.yaml").read_text()
    cfg = tmp_path / "dwell.yaml"
    cfg.write_text(text + "  action: {type: residual, stabilise: base,\n"
                          "           offset_dwell_s: 15}\n")
    line = len(text.splitlines()) + 1
    rc, _, err = run_cli(capsys, "evaluate", "--policy", "heuristic:throughput", "--config",
                         str(cfg), "--episodes", "1")
    one_line_error(rc, err, f"{cfg}:", "env.action.offset_dwell_s",
                   "multiple of env.interval_s (10)")
    assert f"{cfg}:{line}" in err or f"{cfg}:{line + 1}" in err, err


def test_schedule_cache_key_ignores_the_dwell(tmp_path, monkeypatch) -> None:
    """A teacher's schedule is a plan of counts made on a target env: the dwell leaves its
    key unchanged, and the plan's env has none (a target action takes none)."""
    keys, planned_on = schedule_teacher_keys(monkeypatch, tmp_path, (
        _env(**{**BASE, "env.action.offset_dwell_s": d, "env.episode_steps": 6})
        for d in (0, 30)))
    assert keys[0] == keys[1] and len(planned_on) == 2
    assert all(a.type == "target" and a.offset_dwell_s == 0 for a in planned_on)

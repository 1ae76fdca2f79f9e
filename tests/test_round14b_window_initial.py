"""Issue 11, round 14b: ``env.action.scale_down_window_initial: hold``, the scale-down window
counting the episode's initial count as asked at t = 0 (no scale-down in the first window,
scale-ups not held), and round 14b's recipe (docs/benchmark/round14b/rules.md, rule 1)."""
from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dynosim_gym  # noqa: F401  (registers the ids)
from conftest import random_episodes_digest, schedule_teacher_keys
from sim.errors import InputError

TINY = "autoscale_tiny"              # interval_s 10, min_endpoint 1, 4 workers at most
KEY = "env.action.scale_down_window_initial"
#: round 14's action on the tiny config (residual, window and cooldown, cold start held)
R14 = {"env.action.type": "residual", "env.episode_steps": 60, "env.rate_min_rps": 4.0,
       "env.rate_max_rps": 8.0, "env.action.scale_down_window_s": 60,
       "env.action.reversal_cooldown_s": 300, "env.action.base_before_first_tick": "hold"}
#: recorded on main's HEAD (0149f8d) before the option existed
R14_DIGEST = "efac6970e9020b35"
DEFAULT_DIGEST = "33be0a8bd310738a"


def _env(**kw):
    return gym.make("DynoSim-v0", config=TINY, **kw)


# -- defaults unchanged -------------------------------------------------------------------------

def test_the_default_is_unchanged_and_hold_is_told_apart() -> None:
    """Left out or ``none``: round 14's trajectories (and the default env's) byte for byte as
    before the option; ``hold`` changes them where the first ask is below the initial count
    (offsets [-2, 0] over a base of min_endpoint at step 0, 4 workers at reset)."""
    assert random_episodes_digest(TINY) == DEFAULT_DIGEST
    assert random_episodes_digest(TINY, **R14) == R14_DIGEST
    assert random_episodes_digest(TINY, **R14, **{KEY: "none"}) == R14_DIGEST
    low = {**R14, "env.action.base_before_first_tick": "min_endpoint",
           "env.action.residual_offsets": [-2, 0], "env.initial_workers": 4}
    assert random_episodes_digest(TINY, **low, **{KEY: "hold"}) != \
        random_episodes_digest(TINY, **low)


# -- the property -------------------------------------------------------------------------------

def _trace(asks, initial, window_s, cooldown_s, hold, seed):
    env = _env(**{"env.action.type": "target", "env.initial_workers": initial,
                  "env.action.scale_down_window_s": window_s,
                  "env.action.reversal_cooldown_s": cooldown_s,
                  "env.episode_steps": len(asks), KEY: "hold" if hold else "none"})
    env.reset(seed=seed)
    u = env.unwrapped
    out = []
    for n in asks:
        _, _, _, _, info = env.step(u.action_type.from_target(n, 0))
        assert info["requested_workers"] == n
        act, start, _ = u.sim.counts()
        assert act + start == info["target_workers"]    # what was decided is provisioned
        out.append(info["target_workers"])
    return out


@settings(max_examples=25, deadline=None)
@given(asks=st.lists(st.integers(1, 4), min_size=4, max_size=12),
       initial=st.integers(1, 4), window=st.integers(1, 6),
       cooldown_s=st.sampled_from([0, 300]), seed=st.integers(0, 3))
def test_hold_never_scales_down_in_the_first_window_and_never_holds_a_scale_up(
        asks, initial, window, cooldown_s, seed) -> None:
    """With ``hold`` (target asks, so the asks do not depend on the state): every decision in
    the first ``window_s`` seconds provisions the highest of the initial count and every
    ask so far (never below the initial count, so no scale-down, and any ask above the
    current count applied at once, cooldown or not); after the first window, with no
    cooldown, the trajectory is the one without the option (the window alone)."""
    w = window * 10                                    # interval_s 10
    held = _trace(asks, initial, w, cooldown_s, True, seed)
    for k in range(min(window, len(asks))):
        assert held[k] == max([initial] + asks[:k + 1])
    if cooldown_s == 0:
        plain = _trace(asks, initial, w, 0, False, seed)
        for k, (h, p) in enumerate(zip(held, plain)):
            assert h == (max(p, initial) if k < window else p)


#: round 14's action settings in miniature (residual, window and cooldown 300 s, cold start
#: held, 2 workers at reset, a flat 0.5 req/s); each test sets env.episode_steps
ROUND14_MINI = {"env.action.type": "residual", "env.initial_workers": 2,
                "env.action.scale_down_window_s": 300, "env.action.reversal_cooldown_s": 300,
                "env.action.base_before_first_tick": "hold", "env.rate_min_rps": 0.5,
                "env.rate_max_rps": 0.5}


def test_round14_step0_drain_is_gone_and_the_scale_up_follows() -> None:
    """Round 14's failure in miniature (residual, window and cooldown 300 s, cold start
    held, 2 workers at reset): asking offset -2 at step 0 and +2 after. Without the option
    the drain at step 0 starts the cooldown and the scale-up is held for 300 s; with it the
    count stays at 2 and the scale-up applies at step 1."""
    kw = {**ROUND14_MINI, "env.episode_steps": 6}
    out = {}
    for mode in ("none", "hold"):
        env = _env(**kw, **{KEY: mode})
        env.reset(seed=1)
        lo = env.unwrapped.cfg.env.action.residual_offsets[0]
        out[mode] = [env.step(off - lo)[4]["target_workers"] for off in (-2, 2, 2, 2)]
    assert out["none"][0] < 2 and out["none"][1] == out["none"][0]    # drained, then held
    assert out["hold"][0] == 2 and out["hold"][1] > 2                  # kept, then scaled up


# -- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, words", [
    ({KEY: "hold"}, "scale_down_window_s > 0"),
    ({KEY: "yes", "env.action.scale_down_window_s": 60}, "hold"),
    ({KEY: "hold", "env.action.scale_down_window_s": 60, "env.action.type": "residual",
      "env.action.stabilise": "base"}, "stabilise: count"),
])
def test_a_bad_initial_hold_is_one_line_naming_the_key(kw, words) -> None:
    with pytest.raises(InputError) as ei:
        _env(**kw)
    msg = str(ei.value)
    assert KEY in msg and words in msg and "\n" not in msg


def test_an_initial_hold_on_the_disaggregated_env_is_refused_naming_the_key() -> None:
    with pytest.raises(InputError) as ei:
        gym.make("DynoSim-v0", config="autoscale_disagg", **{KEY: "hold"})
    msg = str(ei.value)
    assert KEY in msg and "\n" not in msg


def test_a_bad_initial_hold_in_a_yaml_names_file_and_key_exit_2(tmp_path, capsys) -> None:
    from conftest import one_line_error, run_cli
    from dynosim_gym.config import CONFIG_DIR
    text = (CONFIG_DIR / "autoscale_tiny.yaml").read_text()
    cfg = tmp_path / "hold.yaml"
    cfg.write_text(text + "  action: {type: target, scale_down_window_initial: hold}\n")
    rc, _, err = run_cli(capsys, "evaluate", "--policy", "heuristic:throughput", "--config",
                         str(cfg), "--episodes", "1")
    one_line_error(rc, err, f"{cfg}:", KEY, "scale_down_window_s > 0")


def test_schedule_cache_key_ignores_the_initial_hold(tmp_path, monkeypatch) -> None:
    """A teacher's schedule is a plan of counts made without the window: the initial hold
    leaves its key unchanged, and the plan's env has none."""
    keys, planned_on = schedule_teacher_keys(monkeypatch, tmp_path, (
        _env(**{**R14, KEY: mode, "env.episode_steps": 6}) for mode in ("none", "hold")))
    assert keys[0] == keys[1] and len(planned_on) == 2
    assert all(a.scale_down_window_initial == "none" for a in planned_on)


# -- round 14b's recipe -------------------------------------------------------------------------

def test_round14b_recipe_is_round14_with_the_initial_hold() -> None:
    """``ppo_round14b.yml`` = ``ppo_round14.yml`` with ``scale_down_window_initial: hold`` in
    ``env_kwargs.action``: every other entry equal; its env config validates and its warm
    start passes the pre-run checks."""
    from agents.train import _check_recipe, _check_teacher, load_hyperparams
    from dynosim_gym.config import load_env_config
    root = Path(__file__).resolve().parents[1] / "agents" / "hyperparams"
    r14b = load_hyperparams("ppo", "DynoSim-v0", root / "ppo_round14b.yml")
    r14 = load_hyperparams("ppo", "DynoSim-v0", root / "ppo_round14.yml")
    assert {k: v for k, v in r14b.items() if k != "env_kwargs"} == \
        {k: v for k, v in r14.items() if k != "env_kwargs"}
    assert {k: v for k, v in r14b["env_kwargs"].items() if k != "action"} == \
        {k: v for k, v in r14["env_kwargs"].items() if k != "action"}
    assert r14b["env_kwargs"]["action"] == dict(r14["env_kwargs"]["action"],
                                                scale_down_window_initial="hold")
    a = load_env_config("autoscale_default", **r14b["env_kwargs"]).env.action
    assert a.scale_down_window_initial == "hold" and a.scale_down_window_s == 300
    _check_recipe(dict(r14b), "DynoSim-v0", "ppo_round14b.yml")
    _check_teacher(r14b["bc_warm_start"], "DynoSim-v0", "ppo_round14b.yml", a.type)


# -- scripts/onset_check.py (rule 2's measurement) ----------------------------------------------

def test_onset_check_refuses_a_policy_without_a_residual_action(capsys) -> None:
    """A target-action policy has no base offsets: exit 2, one line naming --policy."""
    from conftest import load_script
    rc = load_script("onset_check").main(["--policy", "pretrained:autoscaler"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--policy" in err[0] and "residual" in err[0]


@pytest.mark.parametrize("bad", ["-1", "0", "abc"])
def test_onset_check_refuses_a_window_that_is_not_a_positive_time(bad, capsys) -> None:
    """A new-user re-check found --window-s -1 accepted (exit 0, 0 held scale-ups: a pass)."""
    from conftest import load_script
    with pytest.raises(SystemExit) as exc:
        load_script("onset_check").main(["--policy", "pretrained:autoscaler",
                                          "--window-s", bad])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--window-s" in err and len(err.splitlines()) == 1


def test_onset_check_counts_onsets_as_plot_learned_and_held_scale_ups_from_info() -> None:
    """On a tiny residual env with round 14's stabilisers: a policy at offset -2 on step 0
    then +2 drains and is held (the cooldown), counted as held scale-ups in the first
    window; with the initial hold none is held and the onset is at step 1."""
    from conftest import load_script
    mod = load_script("onset_check")

    class Plan:
        def __init__(self, lo):
            self.lo, self.k = lo, 0

        def predict(self, obs, deterministic=True):
            off = -2 if self.k == 0 else 2
            self.k += 1
            return off - self.lo, None

    kw = {**ROUND14_MINI, "env.episode_steps": 8}
    rows = {}
    for mode in ("none", "hold"):
        env = _env(**kw, **{KEY: mode})
        lo = env.unwrapped.cfg.env.action.residual_offsets[0]
        rows[mode] = mod.episode(env, Plan(lo), "train", 1, lo, 300.0)
    assert rows["none"]["step0"]["provisioned"] < 2 == rows["none"]["step0"]["initial"]
    assert rows["none"]["held_scale_ups_first_window"] >= 1
    assert rows["hold"]["step0"]["provisioned"] == 2
    assert rows["hold"]["held_scale_ups"] == 0 and len(rows["hold"]["queued_at_onset"]) == 1

"""Round 14 (issue 11, learned behaviour): the recipe is round 8's plus the reversal cooldown
and the held cold start, nothing else (docs/benchmark/round14/rules.md, rule 1)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "agents" / "hyperparams"


def test_round14_recipe_is_round8_with_the_cooldown_and_the_held_cold_start() -> None:
    """``ppo_round14.yml`` = ``ppo_round8.yml`` with ``reversal_cooldown_s: 300`` and
    ``base_before_first_tick: hold`` in ``env_kwargs.action``: every other entry equal; its
    env config validates (stabilise stays ``count``, round 8's) and its warm start passes
    the pre-run checks."""
    from agents.train import _check_recipe, _check_teacher, load_hyperparams
    from dynosim_gym.config import load_env_config
    r14 = load_hyperparams("ppo", "DynoSim-v0", ROOT / "ppo_round14.yml")
    r8 = load_hyperparams("ppo", "DynoSim-v0", ROOT / "ppo_round8.yml")
    assert {k: v for k, v in r14.items() if k != "env_kwargs"} == \
        {k: v for k, v in r8.items() if k != "env_kwargs"}
    assert {k: v for k, v in r14["env_kwargs"].items() if k != "action"} == \
        {k: v for k, v in r8["env_kwargs"].items() if k != "action"}
    assert r14["env_kwargs"]["action"] == dict(
        r8["env_kwargs"]["action"], reversal_cooldown_s=300, base_before_first_tick="hold")
    a = load_env_config("autoscale_default", **r14["env_kwargs"]).env.action
    assert a.type == "residual" and a.stabilise == "count" and a.scale_down_window_s == 300
    assert a.reversal_cooldown_s == 300 and a.base_before_first_tick == "hold"
    _check_recipe(dict(r14), "DynoSim-v0", "ppo_round14.yml")
    _check_teacher(r14["bc_warm_start"], "DynoSim-v0", "ppo_round14.yml", a.type)


# -- scripts/residual_deviation.py (rule 2's measurement) -------------------------------------

def _tiny_residual():
    import gymnasium as gym

    import dynosim_gym  # noqa: F401  (registers the ids)
    return gym.make("DynoSim-v0", config="autoscale_tiny", **{
        "env.action.type": "residual", "env.episode_steps": 12, "env.rate_min_rps": 4.0,
        "env.rate_max_rps": 8.0, "env.action.scale_down_window_s": 30,
        "env.action.reversal_cooldown_s": 300, "env.action.base_before_first_tick": "hold"})


def test_deviation_episode_counts_the_offsets_and_the_provisioned_counts() -> None:
    """The bare base (offset 0) run twice is the same episode, count for count; a policy
    held at +1 asks for a non-zero offset at every step, and what it provisions is the
    env's own ``target_workers`` at each step (never below the base's, window and cooldown
    included, since it asks for one more at every step)."""
    from agents.heuristics import OffsetPolicy
    from conftest import load_script
    mod = load_script("residual_deviation")
    env = _tiny_residual()
    lo = env.unwrapped.cfg.env.action.residual_offsets[0]
    base = OffsetPolicy(env, 0)
    a = mod._episode(env, base, "train", 3, lo)
    b = mod._episode(env, base, "train", 3, lo)
    assert a == b and set(a["offsets"]) == {0} and len(a["provisioned"]) == 12
    up = mod._episode(env, OffsetPolicy(env, 1), "train", 3, lo)
    assert up["offsets"] == [1] * 12
    assert all(p >= q for p, q in zip(up["provisioned"], a["provisioned"]))
    assert up["provisioned"] != a["provisioned"]       # +1 moved the count
    assert up["gpu_hours"] > a["gpu_hours"]


def test_deviation_refuses_a_policy_without_a_residual_action(capsys) -> None:
    """A target-action policy has no base: exit 2, one line naming --policy."""
    from conftest import load_script
    rc = load_script("residual_deviation").main(["--policy", "pretrained:autoscaler"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--policy" in err[0] and "residual" in err[0]

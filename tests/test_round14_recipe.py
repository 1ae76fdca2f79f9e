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

"""Round 9b (issue 11): ``bc_warm_start.label_smoothing``, a clone of a one-action teacher
(``teacher: base``) that keeps probability on the other actions, so PPO samples them."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dynosim_gym  # noqa: F401  (registers the ids)
from sim.errors import InputError

TINY = "autoscale_tiny"


@settings(max_examples=30, deadline=None)
@given(eps=st.floats(0.0, 0.95), seed=st.integers(0, 2**16))
def test_smoothed_nll_is_torchs_label_smoothed_cross_entropy(eps: float, seed: int) -> None:
    import torch as th

    from agents.router_train import smoothed_nll
    g = th.Generator().manual_seed(seed)
    raw = th.randn((16, 7), generator=g) * 3
    y = th.randint(0, 7, (16,), generator=g)
    dist = th.distributions.Categorical(logits=raw)
    ours = smoothed_nll(dist.log_prob(y), dist.logits, eps)
    ref = th.nn.functional.cross_entropy(raw, y, label_smoothing=eps)
    assert float(ours) == pytest.approx(float(ref), rel=1e-5, abs=1e-6)


def _model():
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import configure
    env = gym.make("DynoSim-v0", config=TINY, **{"env.action.type": "target"})
    model = PPO("MlpPolicy", env, n_steps=8, batch_size=8, seed=0, device="cpu",
                learning_rate=3e-3)
    model.set_logger(configure(None, []))
    return env, model


@pytest.mark.parametrize("eps", [0.0, 0.35])
def test_regulariser_with_smoothing_pulls_toward_the_smoothed_clone(eps: float) -> None:
    """Labels that are all one action (as ``teacher: base``'s): without smoothing the
    phases drive p(label) to ~1; with eps they settle at 1 - eps (K - 1) / K, the optimum
    of the smoothed loss, and the policy still puts the rest on the other actions."""
    import numpy as np
    import torch as th

    from agents.router_train import bc_regulariser
    env, model = _model()
    k = env.action_space.n
    rng = np.random.default_rng(0)
    X = th.as_tensor(rng.normal(size=(64, env.observation_space.shape[0])).astype(np.float32))
    y = th.full((64,), 1, dtype=th.int64)
    cb = bc_regulariser(X, y, weight=1.0, steps=50, batch_size=64, seed=0,
                        label_smoothing=eps)
    cb.init_callback(model)
    for _ in range(9):                       # the first rollout is left alone
        cb.on_rollout_start()
    with th.no_grad():
        p = model.policy.get_distribution(X).distribution.probs[:, 1]
    if eps:
        assert float(p.mean()) == pytest.approx(1 - eps * (k - 1) / k, abs=0.03)
    else:
        assert float(p.mean()) > 0.97


@pytest.mark.parametrize("bad", [1.0, -0.1, True, "0.2"])
def test_bad_label_smoothing_is_refused_naming_the_key(bad) -> None:
    from agents.router_train import behaviour_clone

    class Model:
        policy = object()
    with pytest.raises(InputError, match="bc_warm_start.label_smoothing"):
        behaviour_clone(Model(), {}, teacher="base", env_id="DynoSim-v0",
                        label_smoothing=bad)


def test_round9b_recipe_is_round9_with_the_training_split_choices() -> None:
    """``ppo_round9b.yml`` = round 9 with the base re-chosen with its cold start held (W 60 s,
    C 300 s, hold) and the smoothed warm start (label_smoothing 0.35, ent_coef 0.01),
    nothing else; its env config validates and its warm start passes the pre-run checks."""
    from pathlib import Path

    from agents.train import _check_recipe, _check_teacher, load_hyperparams
    from dynosim_gym.config import load_env_config
    root = Path(__file__).resolve().parents[1] / "agents" / "hyperparams"
    r9b = load_hyperparams("ppo", "DynoSim-v0", root / "ppo_round9b.yml")
    r9 = load_hyperparams("ppo", "DynoSim-v0", root / "ppo_round9.yml")
    assert r9b["bc_warm_start"] == dict(r9["bc_warm_start"], label_smoothing=0.35)
    assert r9b["ent_coef"] == 0.01 and r9["ent_coef"] == 0.0
    changed = {"bc_warm_start", "ent_coef", "env_kwargs"}
    assert {k: v for k, v in r9b.items() if k not in changed} == \
        {k: v for k, v in r9.items() if k not in changed}
    assert r9b["env_kwargs"]["action"] == dict(
        r9["env_kwargs"]["action"], scale_down_window_s=60, reversal_cooldown_s=300,
        base_before_first_tick="hold")
    a = load_env_config("autoscale_default", **r9b["env_kwargs"]).env.action
    assert a.type == "residual" and a.base_interval_s is None
    _check_recipe(dict(r9b), "DynoSim-v0", "ppo_round9b.yml")
    _check_teacher(r9b["bc_warm_start"], "DynoSim-v0", "ppo_round9b.yml", a.type)

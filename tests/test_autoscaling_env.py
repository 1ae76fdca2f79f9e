"""DynoSim-v0: Gymnasium/SB3 contracts, determinism, pickling, vector envs, the MDP's rules."""
from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest

import dynosim_gym
from dynosim_gym.autoscaling_env import DynoSimEnv
from dynosim_gym.config import load_env_config
from dynosim_gym.observations import FEATURES
from sim.errors import InputError
from sim.planner import LoadPlanner, PlannerConfig

TINY = "autoscale_tiny"


def make(**kw) -> DynoSimEnv:
    return gym.make("DynoSim-v0", config=TINY, **kw).unwrapped


def rollout(env, seed: int, actions=None, n: int | None = None, options=None):
    obs, info = env.reset(seed=seed, options=options)
    out = [(obs, info)]
    rng = np.random.default_rng(seed)
    n = n or env.cfg.env.episode_steps
    for k in range(n):
        a = actions[k] if actions is not None else int(rng.integers(env.action_space.n))
        out.append(env.step(a))
    return out


def same(a, b) -> bool:
    from gymnasium.utils.env_checker import data_equivalence
    return data_equivalence(a, b)


# -- contracts -------------------------------------------------------------------------------

def test_registered_on_import_and_by_module_prefix() -> None:
    assert "DynoSim-v0" in gym.registry and "DynoSimRouting-v0" in gym.registry
    code = ("import gymnasium as gym; e = gym.make('dynosim_gym:DynoSim-v0', "
            "config='autoscale_tiny'); o, _ = e.reset(seed=0); print(o.shape)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"({len(FEATURES)},)"


def test_gymnasium_check_env() -> None:
    from gymnasium.utils.env_checker import check_env
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(make())
    assert not [w for w in caught if "dynosim" in str(w.filename) or "WARN" in str(w.message)]


def test_sb3_check_env() -> None:
    from stable_baselines3.common.env_checker import check_env
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(make(), warn=True)
    assert not caught, [str(w.message) for w in caught]


def test_step_types_and_truncation() -> None:
    env = make()
    obs, info = env.reset(seed=1)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    for k in range(env.cfg.env.episode_steps):
        obs, r, term, trunc, info = env.step(env.hold_action())
        assert type(r) is float and type(term) is bool and type(trunc) is bool
        assert env.observation_space.contains(obs)
        assert term is False
        assert trunc is (k == env.cfg.env.episode_steps - 1)
        terms = info["reward_terms"]
        assert r == pytest.approx(terms["sla"] + terms["gpu"] + terms["change"])
    assert info["episode_summary"]["steps"] == env.cfg.env.episode_steps


def test_two_instances_same_seed_same_trajectory() -> None:
    a, b = make(), make()
    for seed in (0, 7):
        ra, rb = rollout(a, seed), rollout(b, seed)
        assert same(ra, rb)
    # and a different seed gives a different episode
    assert not same(rollout(a, 0), rollout(b, 1))


def test_reset_without_seed_continues_the_rng() -> None:
    a, b = make(), make()
    a.reset(seed=3)
    b.reset(seed=3)
    assert same(a.reset(), b.reset())
    assert a.episode["seed"] != make().reset(seed=3)[1]["episode_setup"]["seed"]


def test_pickle_mid_episode_continues_identically() -> None:
    env = make()
    env.reset(seed=5)
    for a in (4, 0, env.planner_action("load"), 2):
        env.step(a)
    clone = pickle.loads(pickle.dumps(env))
    for _ in range(2):
        x, y = env.planner_action("load"), clone.planner_action("load")
        assert x == y
        assert same(env.step(x), clone.step(y))
    fresh = pickle.loads(pickle.dumps(make()))      # never reset: still usable
    assert same(fresh.reset(seed=2), make().reset(seed=2))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_gymnasium_vector_envs(mode: str) -> None:
    venv = gym.make_vec("dynosim_gym:DynoSim-v0", num_envs=2, vectorization_mode=mode,
                        config=TINY)
    try:
        obs, _ = venv.reset(seed=11)
        assert obs.shape == (2, len(FEATURES))
        for _ in range(3):
            obs, r, term, trunc, info = venv.step(np.array([3, 1]))
            assert r.shape == (2,) and np.isfinite(r).all()
        single = make()
        o0, _ = single.reset(seed=11)
        assert np.array_equal(venv.reset(seed=11)[0][0], o0)
        masks = venv.call("action_masks")
        assert len(masks) == 2
    finally:
        venv.close()


def test_sb3_subproc_vec_env() -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv
    venv = make_vec_env("dynosim_gym:DynoSim-v0", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv,
                        env_kwargs={"config": TINY})
    try:
        obs = venv.reset()
        assert obs.shape == (2, len(FEATURES))
        obs, r, done, infos = venv.step(np.array([2, 2]))
        assert len(infos) == 2 and "reward_terms" in infos[0]
        assert venv.env_method("planner_action", "load") is not None
    finally:
        venv.close()


# -- the MDP's rules ---------------------------------------------------------------------------

def test_budget_and_min_endpoint_are_never_crossed() -> None:
    env = make()
    lo, hi = env.cfg.env.min_endpoint, env.max_workers
    rng = np.random.default_rng(0)
    for seed in range(3):
        env.reset(seed=seed)
        for _ in range(env.cfg.env.episode_steps):
            a, s, _ = env.sim.counts()
            mask = env.action_masks()
            act = int(rng.integers(env.action_space.n))
            want = a + s + act - env.action_type.k
            assert mask[act] == (lo <= want <= hi)
            _, _, _, _, info = env.step(act)
            assert lo <= info["active_workers"] + info["starting_workers"] <= hi
            assert info["target_workers"] == min(max(want, lo), hi)


def test_target_action_type() -> None:
    env = make(action={"type": "target"})
    assert env.action_space.n == env.max_workers - env.cfg.env.min_endpoint + 1
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.n - 1)
    assert info["active_workers"] + info["starting_workers"] == env.max_workers
    assert env.action_masks().all()


def test_gpu_seconds_count_starting_and_draining_time() -> None:
    env = make(cluster={"startup_time_s": 20.0})
    g, dt = env.gpus_per_worker, env.cfg.env.interval_s
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_type.k + 2)        # +2 workers, both starting
    assert info["starting_workers"] == 2
    assert info["gpu_seconds"] == pytest.approx(3 * g * dt)  # starting workers are paid for
    _, _, _, _, info = env.step(env.action_type.k)
    assert info["gpu_seconds"] == pytest.approx(3 * g * dt)
    total = 0.0
    _, _, _, _, info = env.step(0)                           # -2: drain two workers
    total += info["gpu_seconds"]
    assert info["gpu_seconds"] >= 1 * g * dt                  # draining ones still count
    assert info["reward_terms"]["change"] == pytest.approx(-2 * env.w_change)


def test_sla_attainment_matches_request_records() -> None:
    """The interval's SLA count agrees with the simulator's per-request records."""
    env = make()
    env.reset(seed=4)
    met = decided = 0
    for _ in range(env.cfg.env.episode_steps):
        _, _, _, _, info = env.step(env.hold_action())
        met += info["requests_met"]
        decided += info["requests_decided"]
    cols = env.sim.metrics.columns()
    done = cols["status"] == 0
    ttft = cols["first_token_ms"] - cols["arrival_time_ms"]
    out = cols["output_length"]
    tpot = np.where(out > 1, (cols["last_token_ms"] - cols["first_token_ms"])
                    / np.maximum(out - 1, 1), 0.0)
    sla = env.cfg.sim.sla
    ok = done & (ttft <= sla.ttft_ms) & (tpot <= sla.itl_ms)
    assert decided == len(cols["status"]) and met == int(ok.sum())
    assert info["episode_summary"]["requests_met"] == met


def test_timeouts_count_as_violations_once() -> None:
    env = make(timeout_s=1.0, initial_workers=1, rate_min_rps=2.0, rate_max_rps=2.0,
               max_gpu_budget=2)
    env.reset(seed=0, options={"scenario": "steady", "rate_rps": 8.0})
    for _ in range(env.cfg.env.episode_steps):
        _, _, _, _, info = env.step(env.hold_action())
    ep = info["episode_summary"]
    timed_out = ep["requests_timed_out"]
    assert timed_out > 0
    assert ep["requests_decided"] == ep["requests_completed"] + ep["requests_rejected"] + timed_out


def test_observation_stacking() -> None:
    env = make(observation={"stack": 3})
    n = len(FEATURES)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3 * n,) and not obs[: 2 * n].any()
    obs2, *_ = env.step(env.hold_action())
    assert np.array_equal(obs2[n:2 * n], obs[2 * n:])


def test_trace_windows_hold_out_the_tail() -> None:
    env = gym.make("DynoSim-v0", config="autoscale_mooncake", episode_steps=3,
                   cluster={"num_workers": 1}).unwrapped
    train_end = None
    for seed in range(4):
        _, info = env.reset(seed=seed, options={"split": "eval"})
        start = info["episode_setup"]["window_start_s"]
        trace_s = env.episodes.trace._firsts[-1].arrival_ms / 1000.0
        train_end = trace_s * (1 - env.cfg.env.eval_fraction)
        assert start >= train_end - 1
        _, info = env.reset(seed=seed, options={"split": "train"})
        assert info["episode_setup"]["window_start_s"] + 30 <= train_end
    _, info = env.reset(seed=0, options={"window_start_s": 100})
    assert info["episode_setup"]["window_start_s"] == 100
    obs, r, *_ = env.step(env.hold_action())
    assert np.isfinite(r)


def test_synthetic_scenarios_can_be_pinned() -> None:
    env = make()
    for name in ("diurnal", "bursty", "ramp", "steady"):
        _, info = env.reset(seed=0, options={"scenario": name, "rate_rps": 1.0})
        assert info["episode_setup"]["scenario"] == name


# -- heuristics inside the env ---------------------------------------------------------------------

def test_load_planner_advice_matches_the_planner_in_the_loop() -> None:
    """Stepping the env with the load planner's advice scales exactly like the planner
    attached to the same simulation directly (ticks at the same times)."""
    # optimization_target sla: Dynamo's default (throughput) does not act on this light load
    env = make(cluster={"startup_time_s": 0.0}, planner={"kind": "load", "optimization_target": "sla"})
    env.reset(seed=9)
    env_targets = []
    for _ in range(env.cfg.env.episode_steps):
        _, _, _, _, info = env.step(env.planner_action("load"))
        env_targets.append(info["target_workers"])
    ep_seed = env.episode["seed"]
    sim, _ = env.episodes.build(ep_seed, {})
    e = env.cfg.env
    planner = LoadPlanner(PlannerConfig(ttft_ms=env.cfg.sim.sla.ttft_ms,
                                        itl_ms=env.cfg.sim.sla.itl_ms,
                                        load_adjustment_interval_seconds=e.interval_s,
                                        max_gpu_budget=e.max_gpu_budget,
                                        min_endpoint=e.min_endpoint,
                                        optimization_target="sla")).attach(sim)
    direct = []
    for k in range(1, e.episode_steps + 1):
        sim.run_until(k * e.interval_s * 1000.0)
        a, s, _ = sim.counts()
        direct.append(a + s)
    # the env applies step k's advice at the start of step k + 1
    assert env_targets[1:] == direct[:-1]
    assert planner.events, "the scenario should make the planner act"


def test_unknown_planner_and_bad_actions() -> None:
    env = make()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="unknown planner"):
        env.planner_action("magic")
    for bad in (-1, env.action_space.n, 1.5, "x", [1, 2]):
        with pytest.raises(ValueError, match="outside the action space"):
            env.step(bad)
    with pytest.raises(RuntimeError, match="reset"):
        make().step(0)


@pytest.mark.parametrize("kw, needle", [
    ({"intervl_s": 5}, "unknown key 'intervl_s' (did you mean 'interval_s'?)"),
    ({"reward": {"gpu_wieght": 1}}, "env.reward.gpu_wieght"),
    ({"interval_s": 0}, "env.interval_s"),
    ({"max_gpu_budget": 1}, "env.max_gpu_budget"),
    ({"scenarios": "diurnal,weekly"}, "env.scenarios"),
    ({"action": {"type": "absolute"}}, "env.action.type"),
    ({"engine": {"block_size": -1}}, "engine.block_size"),
    ({"planner_interval_s": 15}, "env.planner_interval_s"),
])
def test_bad_config_names_the_key(kw, needle) -> None:
    with pytest.raises(InputError) as exc:
        gym.make("DynoSim-v0", config=TINY, **kw)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("kw, field", [
    ({"interval_s": -1}, "env.interval_s"),
    ({"cluster": {"num_workers": -2}}, "cluster.num_workers"),
    ({"action": {"type": "bogus"}}, "env.action.type"),
    ({"workload": {"arrival": {"foo": 1}}}, "workload.arrival.foo"),
    ({"workload": {"arrival": {"rate": -3}}}, "workload.arrival.rate"),
    ({"workload": {"isl": {"mean": -1}}}, "workload.isl.mean"),
])
def test_bad_override_is_located_at_the_override_and_checked_at_load(kw, field) -> None:
    """A bad value given as an override is blamed on the override, not on the YAML line the
    key also has; the synthetic workload block (episodes replace its arrivals) is validated
    when the config loads, so a bad ``workload.arrival`` is not silently unused."""
    with pytest.raises(InputError) as exc:
        load_env_config("autoscale_default", **kw)
    assert str(exc.value).startswith(f"overrides, field '{field}'"), str(exc.value)


def test_unknown_env_key_lists_the_sections_too() -> None:
    """``env.action``, ``.observation``, ``.reward`` and ``.planner`` are env keys as well: an
    unknown key's list names them, and a misspelt section gets the hint."""
    with pytest.raises(InputError) as exc:
        gym.make("DynoSim-v0", config=TINY, env={"zzz": 1})
    assert all(f" {k}" in str(exc.value) for k in ("action", "observation", "reward", "planner"))
    with pytest.raises(InputError, match=r"env\.actoin' \(did you mean 'action'\?\)"):
        gym.make("DynoSim-v0", config=TINY, env={"actoin": {"type": "delta"}})


def test_bad_yaml_names_file_and_line(tmp_path) -> None:
    p = tmp_path / "env.yaml"
    p.write_text("workload: {kind: synthetic, isl: 100, osl: 10}\nsla: {ttft_ms: 1, itl_ms: 1}\n"
                 "env:\n  interval_s: 10\n  episode_stepz: 3\n")
    with pytest.raises(InputError) as exc:
        DynoSimEnv(config=str(p))
    assert f"{p}:5" in str(exc.value) and "env.episode_stepz" in str(exc.value)


def test_bad_reset_options() -> None:
    env = make()
    with pytest.raises(InputError, match="options.windw"):
        env.reset(seed=0, options={"windw": 1})
    with pytest.raises(InputError, match="options.scenario"):
        env.reset(seed=0, options={"scenario": "weekly"})


def test_render_modes() -> None:
    env = make(render_mode="ansi")
    env.reset(seed=0)
    env.step(2)
    assert "workers" in env.render()
    env = make(render_mode="rgb_array")
    env.reset(seed=0)
    env.step(2)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3

"""DynoSimRouting-v0: API conformance, determinism, pickling, vector envs, and the simulator's
external-routing hook (``hold_arrivals`` + ``route_to``) against the built-in routers."""
from __future__ import annotations

import json
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.utils.env_checker import data_equivalence

import dynosim_gym  # noqa: F401  (registers the ids)
from dynosim_gym.config import load_env_config
from dynosim_gym.episodes import EpisodeFactory
from dynosim_gym.routing_env import DynoSimRoutingEnv, feature_names
from sim.engine import EngineConfig
from sim.errors import InputError
from sim.simulator import ClusterConfig, Simulation
from sim.timing_spec import make_timing
from sim.workloads import from_config

ENV_ID = "dynosim_gym:DynoSimRouting-v0"
# 30 simulated seconds of arrivals: about 50-150 requests per episode.
SMALL = {"episode_steps": 3, "rate_min_rps": 1.0, "rate_max_rps": 2.0}


def _actions(n: int, seed: int = 7, workers: int = 4) -> list[int]:
    return [int(a) for a in np.random.default_rng(seed).integers(workers, size=n)]


def _rollout(env, actions, seed=3, options=None):
    """(obs, reward, terminated, truncated, info) per step until the episode ends."""
    obs, info = env.reset(seed=seed, options=options)
    out = [(obs, 0.0, False, False, info)]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, r, term, trunc, info))
        if term or trunc:
            break
    return out


def _cols(sim: Simulation) -> dict[str, list]:
    return {k: list(v) for k, v in sim.metrics.cols.items()}


def _same(a, b) -> bool:
    """Column equality with NaN == NaN."""
    return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k]), equal_nan=True) for k in a) \
        and a.keys() == b.keys()


# -- API ---------------------------------------------------------------------------------------

def test_gymnasium_check_env():
    env = gym.make(ENV_ID, **SMALL)
    gym_check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_sb3_check_env():
    from stable_baselines3.common.env_checker import check_env as sb3_check_env
    env = DynoSimRoutingEnv(**SMALL)
    sb3_check_env(env, warn=True)


def test_spaces_and_layout():
    env = DynoSimRoutingEnv(**SMALL)
    assert env.action_space == gym.spaces.Discrete(4)
    assert env.observation_space.shape == (21,)
    assert len(feature_names(4)) == 21 and feature_names(4)[-1] == "isl"
    assert env.action_masks().tolist() == [True] * 4
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    assert info["request_index"] >= 0 and info["no_arrivals"] is False
    assert obs[-1] > 0                      # the first request's ISL
    assert np.all(obs[:-1] == 0)            # empty cluster: no load, nothing cached


def test_full_episode_rewards_and_summary():
    env = DynoSimRoutingEnv(render_mode="ansi", **SMALL)
    steps = _rollout(env, [k % 4 for k in range(100_000)])
    _, _, term, trunc, info = steps[-1]
    assert trunc and not term
    total = met = decided = 0
    for obs, r, term, trunc, inf in steps[1:]:
        assert isinstance(r, float) and type(term) is bool and type(trunc) is bool
        assert env.observation_space.contains(obs)
        assert r == sum(inf["reward_terms"].values())
        assert inf["reward_terms"]["met"] == inf["requests_met"]
        total += r
        met += inf["requests_met"]
        decided += inf["requests_decided"]
    ep = info["episode_summary"]
    assert ep["requests_routed"] == len(steps) - 1 == sum(ep["requests_per_worker"])
    assert ep["requests_met"] == met and ep["requests_decided"] == decided
    assert total == 2 * met - decided
    assert 0 < decided <= ep["requests_routed"] and 0 <= ep["sla_attainment"] <= 1
    assert max(ep["requests_per_worker"]) - min(ep["requests_per_worker"]) <= 1   # round robin
    assert info["t_s"] == pytest.approx(30.0) and info["request_index"] == -1
    assert "window over" in env.render()
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(0)


def test_prefix_overlap_feature_sees_the_cache():
    """A request of a shared-prefix group sees its prefix cached where the group went."""
    env = DynoSimRoutingEnv(**SMALL, workload={"num_prefix_groups": 1,
                                               "shared_prefix_ratio": 0.9})
    obs, _ = env.reset(seed=1)
    seen = 0.0
    for _ in range(30):
        obs, r, term, trunc, info = env.step(0)          # everything to worker 0
        overlap = obs[4:-1:5]
        assert np.all(overlap[1:] == 0)                   # the others never got anything
        seen = max(seen, float(overlap[0]))
        if trunc:
            break
    assert seen > 0.5


def test_request_cap_and_empty_window():
    env = DynoSimRoutingEnv(max_requests=5, **SMALL)
    steps = _rollout(env, [0] * 100)
    assert len(steps) == 6 and steps[-1][3] and steps[-1][4]["requests_routed"] == 5


def test_trace_windows_including_an_empty_one(tmp_path):
    # A Mooncake-format trace: one request a second for 10 s, nothing until 100 s, then more.
    rows = [{"timestamp": t * 1000, "input_length": 1500, "output_length": 20,
             "hash_ids": [1, 2, 3 + t]} for t in [*range(10), *range(100, 201, 2)]]
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = DynoSimRoutingEnv(**SMALL, workload={"kind": "mooncake", "path": str(path)})
    steps = _rollout(env, [1] * 100, options={"window_start_s": 0})
    assert steps[0][4]["no_arrivals"] is False and len(steps) == 11
    assert steps[2][0][1 * 5 + 4] > 0          # request 1 finds request 0's prefix on worker 1
    obs, info = env.reset(seed=0, options={"window_start_s": 50})
    assert info["no_arrivals"] is True and info["request_index"] == -1
    assert np.all(obs == 0)
    obs, r, term, trunc, info = env.step(2)
    assert trunc and not term and r == 0.0 and info["requests_routed"] == 0
    assert info["episode_summary"]["requests_routed"] == 0 and env.observation_space.contains(obs)


def test_bad_action_raises_value_error():
    env = DynoSimRoutingEnv(**SMALL)
    env.reset(seed=0)
    for bad in (4, -1, 1.5, "x", [0, 1]):
        with pytest.raises(ValueError, match=r"outside the action space Discrete\(4\).*\[0, 3\]"):
            env.step(bad)
    env.step(np.int64(3))                 # numpy scalars are fine
    env.step(np.array(2))


def test_unknown_override_names_the_key():
    with pytest.raises(InputError, match="bogus_knob") as exc:
        DynoSimRoutingEnv(bogus_knob=1)
    assert exc.value.field == "bogus_knob"
    with pytest.raises(InputError, match="max_requests"):
        DynoSimRoutingEnv(max_requests=0)


# -- determinism and pickling ------------------------------------------------------------------

def test_two_instances_same_seed_same_trajectory():
    acts = _actions(10_000)
    a = _rollout(DynoSimRoutingEnv(**SMALL), acts, seed=11)
    b = _rollout(DynoSimRoutingEnv(**SMALL), acts, seed=11)
    assert len(a) == len(b) > 20
    for x, y in zip(a, b, strict=True):
        assert data_equivalence(x, y, exact=True)
    c = _rollout(DynoSimRoutingEnv(**SMALL), acts, seed=12)
    assert not data_equivalence(a[:5], c[:5])


def test_pickle_mid_episode_continues_identically():
    acts = _actions(10_000, seed=3)
    env = DynoSimRoutingEnv(**SMALL)
    env.reset(seed=5)
    for a in acts[:25]:
        env.step(a)
    clone = pickle.loads(pickle.dumps(env))
    for a in acts[25:]:
        x = env.step(a)
        y = clone.step(a)
        assert data_equivalence(x, y, exact=True)
        if x[3]:
            break
    else:
        pytest.fail("episode did not end")
    assert pickle.loads(pickle.dumps(DynoSimRoutingEnv(**SMALL))).sim is None   # before reset


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec(mode):
    envs = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode=mode, **SMALL)
    try:
        obs, infos = envs.reset(seed=[1, 2])
        assert obs.shape == (2, 21) and obs.dtype == np.float32
        rng = np.random.default_rng(0)
        ended = np.zeros(2, dtype=bool)
        rewards = []
        for _ in range(400):
            obs, r, term, trunc, infos = envs.step(rng.integers(4, size=2))
            assert envs.single_observation_space.contains(obs[0])
            rewards.append(r.copy())
            ended |= trunc
            if ended.all():
                break
        assert ended.all()
    finally:
        envs.close()
    # Same seeds and actions give the same rewards in either mode.
    ref = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="sync", **SMALL)
    ref.reset(seed=[1, 2])
    rng = np.random.default_rng(0)
    for r in rewards:
        assert np.array_equal(ref.step(rng.integers(4, size=2))[1], r)
    ref.close()


# -- the simulator hook ----------------------------------------------------------------------

def _workload(seed: int):
    return from_config({"kind": "synthetic", "arrival": {"process": "poisson", "rate": 6},
                        "isl": {"dist": "lognormal", "mean": 3000, "sigma": 0.6,
                                "max_value": 16000},
                        "osl": {"dist": "lognormal", "mean": 150, "sigma": 0.6,
                                "max_value": 800},
                        "num_prefix_groups": 4, "shared_prefix_ratio": 0.5, "duration_s": 25,
                        "turns_per_session": 2, "inter_turn_delay_ms": 500},
                       np.random.default_rng(seed))


def _sim(router: str, exact: bool = False) -> Simulation:
    # A small KV pool, so the runs evict and preempt.
    return Simulation(_workload(1), engine=EngineConfig(num_gpu_blocks=2500),
                      timing=make_timing("gpu:Qwen/Qwen3-32B:h200_sxm:vllm:2"),
                      cluster=ClusterConfig(num_workers=3), router=router, seed=5, exact=exact)


@pytest.mark.parametrize("router,exact", [("round_robin", False), ("round_robin", True),
                                          ("kv", False), ("kv", True)])
def test_route_to_reproduces_the_routers_run(router, exact):
    """Holding every arrival and routing it with route_to to the worker the built-in router
    picks gives the same per-request records and summary as the plain run."""
    plain = _sim(router, exact).run()
    sim = _sim(router, exact)
    sim.hold_arrivals = True
    k = 0
    while sim.run_until(None):
        req = sim.held_arrival
        assert req is not None
        active, engines = sim._active_workers()
        if router == "round_robin":
            index = k % len(engines)
        else:
            # what _route does before select: publish evictions of running stretches
            for x in active:
                if x.engine.stretch_ends is not None:
                    gone = x.engine.stretch_evictions_until(sim.now)
                    if gone:
                        sim.router.publish_removed(x.engine, gone)
            index = engines.index(sim.router.select(req, engines, sim.now))
        sim.route_to(req, index)
        k += 1
    held = sim.finish()
    assert k == plain.summary["totals"]["num_requests"] > 100
    assert plain.summary["engine"]["evictions"] > 0
    assert _same(_cols(sim), {c: list(v) for c, v in plain.metrics.cols.items()})
    assert held.summary == plain.summary


def test_route_to_checks_and_hold_guard():
    sim = _sim("round_robin")
    sim.hold_arrivals = True
    assert sim.run_until(None) and sim.held_arrival is not None
    with pytest.raises(ValueError, match="out of range"):
        sim.route_to(sim.held_arrival, 3)
    # resuming without routing: the next arrival finds the first still held
    with pytest.raises(RuntimeError, match="still held"):
        while sim.run_until(None):
            pass


def test_env_round_robin_matches_plain_simulation():
    """The env driven round robin records exactly what the round-robin simulation records
    up to the end of the window (observing does not disturb the engines)."""
    env = DynoSimRoutingEnv(**SMALL)
    steps = _rollout(env, [k % 4 for k in range(100_000)], seed=21)
    cfg = load_env_config("routing_default", **SMALL)
    plain, _ = EpisodeFactory(cfg).build(env.episode["seed"])
    plain.run_until(env.horizon_ms)
    assert steps[-1][4]["requests_routed"] == plain.num_arrived
    assert _same(_cols(env.sim), _cols(plain))
    assert len(plain.metrics.cols["status"]) > 20


@pytest.mark.parametrize("exact", [False, True])
def test_route_to_resumes_a_timestamp_with_idle_workers(exact):
    """Arrivals at the very time a pass ends (the worker is dirty, not yet restarted) and
    several arrivals at one timestamp: held one by one, they still share the batch that
    starts at that timestamp, as in the plain run."""
    from conftest import ListWorkload, req
    from sim.timing import PolynomialTiming

    def run(reqs, hold):
        sim = Simulation(ListWorkload(reqs), engine=EngineConfig(num_gpu_blocks=4096),
                         timing=PolynomialTiming(), cluster=ClusterConfig(num_workers=2),
                         router="round_robin", exact=exact, check_invariants=True)
        if hold:
            sim.hold_arrivals = True
            k = 0
            while sim.run_until(None):
                sim.route_to(sim.held_arrival, k % 2)
                k += 1
        return sim.run()

    first = run([req(0, 0.0, 700, 30, [1, 2])], hold=False)
    t1 = first.metrics.cols["first_token_ms"][0]          # request 0's first pass ends here
    reqs = [req(0, 0.0, 700, 30, [1, 2]), req(1, 0.0, 300, 5, [3]),
            req(2, t1, 1000, 8, [1, 2]), req(3, t1, 600, 12), req(4, t1, 200, 4),
            req(5, t1 + 3.0, 900, 6, [1, 2])]
    plain, held = run(reqs, hold=False), run(reqs, hold=True)
    assert _same({k: list(v) for k, v in held.metrics.cols.items()},
                 {k: list(v) for k, v in plain.metrics.cols.items()})
    assert held.summary == plain.summary
    # request 2 joined worker 0's pass starting at t1 (no gap before its first admission)
    c = plain.metrics.cols
    assert c["first_admit_ms"][list(c["request_index"]).index(2)] == t1


def test_kv_cost_heuristic_beats_round_robin_on_prefix_reuse() -> None:
    """The KV-cost policy (from the observation alone) reuses more cached prefix than round
    robin on the same episodes."""
    from agents.heuristics import KvCostPolicy, RoundRobinPolicy
    env = gym.make("DynoSimRouting-v0", episode_steps=3).unwrapped
    hits = {}
    for name, pol in (("rr", RoundRobinPolicy(env.num_workers)), ("kv", KvCostPolicy(env))):
        tot = []
        for seed in (0, 1):
            obs, _ = env.reset(seed=seed)
            done, start = False, True
            while not done:
                a, _ = pol.predict(obs, episode_start=np.array([start]))
                start = False
                obs, r, term, trunc, info = env.step(int(a))
                done = term or trunc
            tot.append(info["episode_summary"]["kv_hit_rate"])
        hits[name] = sum(tot)
    assert hits["kv"] > hits["rr"]

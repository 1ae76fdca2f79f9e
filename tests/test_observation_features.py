"""``env.observation.features`` (issue 11, round 6): a recipe chooses the observation's
entries by name, among them load relative to one worker's capacity
(:data:`dynosim_gym.observations.CAPACITY_FEATURES`); the default observation is unchanged."""
from __future__ import annotations

import hashlib
import math
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dynosim_gym  # noqa: F401  (registers the envs)
from dynosim_gym.config import load_env_config
from dynosim_gym.monitor import Interval
from dynosim_gym.observations import (ALL_FEATURES, CAPACITY_FEATURES, FEATURES,
                                      TREND_FEATURES, WORK_FEATURES, EngineCapacity,
                                      capacity_values, trend_values, trend_window,
                                      work_values)
from sim.errors import InputError
from sim.timing import FixedTiming

FEATURES_KEY = "env.observation.features"
#: sha256 of the default DynoSim-v0 observations of one 61-step run (seed 3, actions
#: ``(3t + 1) mod n``), measured on main before env.observation.features existed: the
#: default observation must stay byte-identical (every shipped number depends on it).
DEFAULT_DIGEST = "3b97da741df7ab6488889e35e8f0ba16881b59ad22512be419cf84c2fbd0c4bc"


def _digest(**overrides) -> tuple[tuple[int, ...], str, list[np.ndarray]]:
    env = gym.make("DynoSim-v0", **overrides)
    h = hashlib.sha256()
    obs, _ = env.reset(seed=3)
    seen = [obs]
    h.update(obs.tobytes())
    n = env.action_space.n
    for t in range(60):
        obs, *_ = env.step((t * 3 + 1) % n)
        h.update(obs.tobytes())
        seen.append(obs)
    env.close()
    return obs.shape, h.hexdigest(), seen


def test_default_observation_is_byte_identical() -> None:
    assert tuple(load_env_config("autoscale_default").env.observation.features) == FEATURES
    shape, digest, _ = _digest()
    assert shape == (len(FEATURES),)
    assert digest == DEFAULT_DIGEST


def test_chosen_features_pick_the_named_entries_and_shape_follows() -> None:
    names = ["queued_requests", "active_workers", "prefill_demand", "arrival_rate",
             "queued_requests_per_active"]
    _, _, default = _digest()
    env = gym.make("DynoSim-v0", **{FEATURES_KEY: names})
    assert env.observation_space.shape == (len(names),)
    env.close()
    shape, digest, picked = _digest(**{FEATURES_KEY: names})
    assert shape == (len(names),) and digest != DEFAULT_DIGEST
    for f in ("queued_requests", "active_workers", "arrival_rate"):   # the default entries
        i, j = names.index(f), FEATURES.index(f)
        assert all(p[i] == d[j] for p, d in zip(picked, default))
    load = np.array([p[names.index("prefill_demand")] for p in picked])
    assert (load >= 0).all() and load.max() > 0          # the scenario has arrivals
    stacked = gym.make("DynoSim-v0", **{FEATURES_KEY: names, "env.observation.stack": 3})
    assert stacked.observation_space.shape == (3 * len(names),)
    stacked.close()


def test_features_are_recorded_in_the_resolved_config() -> None:
    names = ["decode_demand", "planner_demand", "active_workers"]
    cfg = load_env_config("autoscale_default", **{FEATURES_KEY: names})
    record = cfg.to_dict()
    assert record["env"]["observation"]["features"] == names
    assert load_env_config(record).env.observation.features == names     # round trip
    # a comma string is accepted too (as env.scenarios is)
    assert load_env_config("autoscale_default", **{FEATURES_KEY: "decode_demand, ttft_p90"}
                           ).env.observation.features == ["decode_demand", "ttft_p90"]


@pytest.mark.parametrize("value, needle", [
    (["prefil_demand"], "entry 0: unknown feature 'prefil_demand' (did you mean "
                        "'prefill_demand'?)"),
    (["active_workers", "zzz"], "entry 1: unknown feature 'zzz'; expected names from"),
    (["kv_hit_rate", "kv_hit_rate"], "entry 1: feature 'kv_hit_rate' is listed twice"),
    ([], "expected a non-empty list of feature names"),
    (5, "expected a non-empty list of feature names, got int 5"),
    ([3], "entry 0: expected a feature name, got int 3"),
])
def test_bad_features_are_one_line_errors_naming_the_key(value, needle) -> None:
    with pytest.raises(InputError) as exc:
        load_env_config("autoscale_default", **{FEATURES_KEY: value})
    assert exc.value.field == FEATURES_KEY
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_bad_feature_in_yaml_names_file_and_line(tmp_path) -> None:
    path = tmp_path / "env.yaml"
    path.write_text("workload: {kind: synthetic}\n"
                    "env:\n"
                    "  observation:\n"
                    "    features: [active_workers, decode_demnd]\n")
    with pytest.raises(InputError) as exc:
        load_env_config(path)
    msg = str(exc.value)
    assert str(path) in msg and FEATURES_KEY in msg and "did you mean 'decode_demand'" in msg
    assert exc.value.line == 4


def test_disaggregated_env_keeps_the_default_features() -> None:
    with pytest.raises(InputError, match="disaggregated env observes the default features"):
        load_env_config("autoscale_disagg", **{FEATURES_KEY: ["prefill_demand"]})


def test_schema_lists_the_option() -> None:
    from dynosim.config_schema import rows
    row = next(r for r in rows()["env"] if r["field"] == FEATURES_KEY)
    assert row["type"] == "list" and row["range"].startswith("each one of ")
    assert "prefill_demand" in row["range"] and "arrival_rate" in row["range"]


# -- the capacity features on hand-made intervals ---------------------------------------------

CHUNK, PREFILL_MS, DECODE_MS, MAX_SEQS = 8192, 400.0, 25.0, 8
ENGINE = SimpleNamespace(max_num_batched_tokens=CHUNK, num_gpu_blocks=100_000, block_size=64,
                         max_num_seqs=MAX_SEQS)


def _capacity() -> EngineCapacity:
    # fixed pass times: a full chunk prefills CHUNK tokens in PREFILL_MS; a decode pass of
    # any batch takes DECODE_MS, so the largest batch (MAX_SEQS) is the best under the SLA
    return EngineCapacity(FixedTiming(PREFILL_MS, DECODE_MS), ENGINE, ttft_sla_ms=1500.0,
                          itl_sla_ms=50.0)


def test_capacity_features_on_a_hand_made_interval() -> None:
    iv = Interval(0.0, 5.0, arrived=50, mean_isl=8000.0, mean_osl=400.0, kv_hit_rate=0.25,
                  active=2, queued=6, queued_prefill_tokens=40_960)
    vals = dict(zip(CAPACITY_FEATURES, capacity_values(iv, _capacity(), 5.0)))
    prefill_tps = CHUNK / (PREFILL_MS / 1000.0)               # 20,480 tokens/s
    pre = 10.0 * 8000 * 0.75 / prefill_tps                    # 10 req/s: 2.93 workers
    assert vals["prefill_demand"] == pytest.approx(math.log1p(pre), rel=1e-12)
    assert vals["prefill_demand_per_active"] == pytest.approx(math.log1p(pre / 2), rel=1e-12)
    # decode: MAX_SEQS sequences, each OSL passes of DECODE_MS -> 8 / (400 x 0.025) = 0.8 req/s
    # per worker; the capacity is read on a 2 % grid of OSL (within 1 %)
    dec = 10.0 / (MAX_SEQS / (400 * DECODE_MS / 1000.0))
    assert math.expm1(vals["decode_demand"]) == pytest.approx(dec, rel=0.011)
    assert math.expm1(vals["decode_demand_per_active"]) == pytest.approx(dec / 2, rel=0.011)
    # backlog: 40,960 tokens over 2 workers at 20,480 tokens/s = 1 s = 2/3 of the TTFT SLA
    assert vals["queued_prefill_per_active"] == pytest.approx(math.log1p(1.0 / 1.5), rel=1e-12)
    assert vals["queued_requests_per_active"] == pytest.approx(math.log1p(3.0), rel=1e-12)
    # the planner's: the aggregated engine also pays each joining request's prefill
    assert vals["planner_demand"] > vals["decode_demand"] > 0


def test_no_arrivals_is_zero_demand_and_no_active_worker_counts_as_one() -> None:
    iv = Interval(0.0, 5.0, arrived=0, active=0, queued=4, queued_prefill_tokens=20_480)
    vals = dict(zip(CAPACITY_FEATURES, capacity_values(iv, _capacity(), 5.0)))
    assert vals["prefill_demand"] == vals["decode_demand"] == vals["planner_demand"] == 0.0
    assert vals["queued_requests_per_active"] == pytest.approx(math.log1p(4.0))
    assert vals["queued_prefill_per_active"] == pytest.approx(math.log1p(1.0 / 1.5))


@settings(max_examples=60, deadline=None)
@given(arrived=st.integers(1, 2000), isl=st.floats(16, 60_000), osl=st.floats(1, 4000),
       hit=st.floats(0, 1), active=st.integers(1, 16), scale=st.integers(2, 5))
def test_capacity_features_scale_with_load_and_split_over_workers(arrived, isl, osl, hit,
                                                                  active, scale) -> None:
    cap = _capacity()

    def vals(n: int, a: int) -> dict[str, float]:
        iv = Interval(0.0, 5.0, arrived=n, mean_isl=isl, mean_osl=osl, kv_hit_rate=hit,
                      active=a)
        return dict(zip(CAPACITY_FEATURES, capacity_values(iv, cap, 5.0)))
    one, more = vals(arrived, active), vals(arrived * scale, active)
    for f in ("prefill_demand", "decode_demand", "planner_demand"):
        assert np.isfinite(one[f]) and one[f] >= 0
        # k times the arrivals of the same mix is k times the workers' worth
        assert math.expm1(more[f]) == pytest.approx(scale * math.expm1(one[f]), rel=1e-9)
        # per active worker = the total over the active workers
        if f != "planner_demand":
            assert math.expm1(one[f + "_per_active"]) == pytest.approx(
                math.expm1(one[f]) / active, rel=1e-9, abs=1e-12)


def test_every_name_is_unique() -> None:
    assert len(set(ALL_FEATURES)) == len(ALL_FEATURES)


def test_round6_recipe_observes_load_relative_to_capacity() -> None:
    """``ppo_round6.yml`` = round 5 with the rate-keyed load features replaced
    (docs/benchmark/learning_rounds.md, round 6): its env config validates and its
    observation has no request-rate feature."""
    from pathlib import Path

    from agents.train import load_hyperparams
    root = Path(__file__).resolve().parents[1] / "agents" / "hyperparams"
    r6 = load_hyperparams("ppo", "DynoSim-v0", root / "ppo_round6.yml")
    r5 = load_hyperparams("ppo", "DynoSim-v0", root / "ppo_round5.yml")
    names = load_env_config("autoscale_default", **r6["env_kwargs"]).env.observation.features
    assert not {"arrival_rate", "mean_isl", "mean_osl"} & set(names)
    assert set(CAPACITY_FEATURES) <= set(names)
    assert set(names) - set(CAPACITY_FEATURES) == set(FEATURES) - {"arrival_rate", "mean_isl",
                                                                   "mean_osl"}
    # everything else as round 5
    assert {k: v for k, v in r6.items() if k != "env_kwargs"} == \
        {k: v for k, v in r5.items() if k != "env_kwargs"}
    assert {k: v for k, v in r6["env_kwargs"].items() if k != "observation"} == r5["env_kwargs"]


# -- round 7: request counts relative to one worker's decode batch (WORK_FEATURES) -------------

def test_work_features_on_a_hand_made_interval() -> None:
    # FixedTiming: every decode pass takes DECODE_MS (< the 50 ms ITL SLA), so the largest
    # batch meeting the SLA is MAX_SEQS (8) sequences
    cap = _capacity()
    assert cap.decode_batch(8000.0, 400.0) == MAX_SEQS
    iv = Interval(0.0, 5.0, arrived=50, mean_isl=8000.0, mean_osl=400.0, active=2,
                  running=12, queued=20)
    vals = dict(zip(WORK_FEATURES, work_values(iv, cap, 8000.0, 400.0)))
    assert vals["running_batches"] == pytest.approx(math.log1p(12 / 8), rel=1e-12)
    assert vals["running_batches_per_active"] == pytest.approx(math.log1p(12 / 8 / 2),
                                                               rel=1e-12)
    assert vals["queued_batches"] == pytest.approx(math.log1p(20 / 8), rel=1e-12)
    # no active worker counts as one; nothing running or waiting is 0
    idle = Interval(0.0, 5.0, active=0, running=8)
    v = dict(zip(WORK_FEATURES, work_values(idle, cap, 1.0, 1.0)))
    assert v["running_batches_per_active"] == v["running_batches"] == pytest.approx(
        math.log1p(1.0))
    assert v["queued_batches"] == 0.0


def test_work_features_follow_the_batch_the_itl_sla_allows() -> None:
    """A slower decode pass (over the ITL SLA beyond a batch) makes the same running count
    more workers' worth: the count is relative to capacity, not to the budget."""
    class Slower(FixedTiming):
        def decode_ms(self, batch, kv_tokens, active_kv, capacity):   # 5 ms + 9 per sequence
            return 5.0 + 9.0 * batch
    slow = EngineCapacity(Slower(PREFILL_MS, DECODE_MS), ENGINE, 1500.0, 50.0)
    assert slow.decode_batch(2000.0, 200.0) == 5             # 5 + 5 x 9 ms = the SLA
    iv = Interval(0.0, 5.0, running=10, queued=5, active=1)
    fast = dict(zip(WORK_FEATURES, work_values(iv, _capacity(), 2000.0, 200.0)))
    slowv = dict(zip(WORK_FEATURES, work_values(iv, slow, 2000.0, 200.0)))
    assert slowv["running_batches"] == pytest.approx(math.log1p(10 / 5))
    assert fast["running_batches"] == pytest.approx(math.log1p(10 / 8))
    assert slowv["queued_batches"] == pytest.approx(math.log1p(1.0))


def test_work_features_in_the_env_use_the_latest_arrivals_mix() -> None:
    """In the env each step's work features are the interval's counts over the decode batch
    at the mean ISL/OSL of the latest interval with arrivals (carried over quiet ones)."""
    names = ["running_batches", "running_batches_per_active", "queued_batches",
             "running_requests"]
    env = gym.make("DynoSim-v0", **{FEATURES_KEY: names})
    u = env.unwrapped
    env.reset(seed=3)
    cap = u.obs_builder.engine
    mix, checked = None, 0
    for t in range(60):
        obs, *_ = env.step((t * 3 + 1) % env.action_space.n)
        iv = u._last
        if iv.arrived:
            mix = (iv.mean_isl, iv.mean_osl)
        b = cap.decode_batch(*mix)
        assert obs[0] == np.float32(math.log1p(iv.running / b))
        assert obs[1] == np.float32(math.log1p(iv.running / b / max(iv.active, 1)))
        assert obs[2] == np.float32(math.log1p(iv.queued / b))
        checked += iv.running > 0
    env.close()
    assert checked > 10 and b > 1          # the episode ran sequences, in batches of several


@pytest.mark.parametrize("bad, hint", [("running_batch", "running_batches"),
                                       ("queued_batchs", "queued_batches")])
def test_unknown_work_feature_is_a_one_line_error(bad, hint) -> None:
    with pytest.raises(InputError) as exc:
        load_env_config("autoscale_default", **{FEATURES_KEY: ["active_workers", bad]})
    assert exc.value.field == FEATURES_KEY and "\n" not in str(exc.value)
    assert f"did you mean '{hint}'" in str(exc.value)


def test_round7_recipe_replaces_only_the_request_counts() -> None:
    """``ppo_round7.yml`` = round 6 with queued_requests_per_active, queued_requests and
    running_requests replaced by :data:`WORK_FEATURES` (docs/benchmark/learning_rounds.md,
    round 7), nothing else."""
    from pathlib import Path

    from agents.train import load_hyperparams
    root = Path(__file__).resolve().parents[1] / "agents" / "hyperparams"
    r7 = load_hyperparams("ppo", "DynoSim-v0", root / "ppo_round7.yml")
    r6 = load_hyperparams("ppo", "DynoSim-v0", root / "ppo_round6.yml")
    n7 = load_env_config("autoscale_default", **r7["env_kwargs"]).env.observation.features
    n6 = r6["env_kwargs"]["observation"]["features"]
    counts = {"queued_requests_per_active", "queued_requests", "running_requests"}
    assert not counts & set(n7) and set(WORK_FEATURES) <= set(n7)
    assert set(n7) - set(WORK_FEATURES) == set(n6) - counts and len(n7) == len(n6)
    assert {k: v for k, v in r7.items() if k != "env_kwargs"} == \
        {k: v for k, v in r6.items() if k != "env_kwargs"}
    assert {k: v for k, v in r7["env_kwargs"].items() if k != "observation"} == \
        {k: v for k, v in r6["env_kwargs"].items() if k != "observation"}


def test_round8_recipe_observes_no_absolute_load_level() -> None:
    """``ppo_round8.yml`` = round 7b with only level-free features and a 300 s scale-down
    window (docs/benchmark/learning_rounds.md, round 8): its env config validates, none of
    the absolute-level features (or the clock) is observed, and everything else is round
    7b's."""
    from pathlib import Path

    from agents.train import load_hyperparams
    root = Path(__file__).resolve().parents[1] / "agents" / "hyperparams"
    r8 = load_hyperparams("ppo", "DynoSim-v0", root / "ppo_round8.yml")
    r7 = load_hyperparams("ppo", "DynoSim-v0", root / "ppo_round7b.yml")
    cfg = load_env_config("autoscale_default", **r8["env_kwargs"]).env
    absolute = {"arrival_rate", "mean_isl", "mean_osl", "prefill_demand", "decode_demand",
                "planner_demand", "queued_requests", "running_requests", "queued_prefill",
                "active_workers", "time_of_day_sin", "time_of_day_cos", "episode_progress"}
    names = set(cfg.observation.features)
    assert not absolute & names
    assert names == set(r7["env_kwargs"]["observation"]["features"]) - absolute
    assert cfg.action.type == "residual" and cfg.action.scale_down_window_s == 300
    assert {k: v for k, v in r8.items() if k != "env_kwargs"} == \
        {k: v for k, v in r7.items() if k != "env_kwargs"}
    assert r8["env_kwargs"]["action"] == dict(r7["env_kwargs"]["action"],
                                              scale_down_window_s=300)
    assert r8["env_kwargs"]["reward"] == r7["env_kwargs"]["reward"]


# -- round 17: the arrival rate's trend over 60, 120 and 300 s (TREND_FEATURES) ---------------

#: Round 16's 16 dynamics-only features (scripts/es_search.py's ENV_KWARGS).
ROUND16 = ["prefill_demand_per_active", "decode_demand_per_active", "queued_prefill_per_active",
           "queued_requests_per_active", "kv_utilisation", "kv_hit_rate", "ttft_p50",
           "ttft_p90", "itl_p90", "oldest_wait", "sla_attainment", "starting_workers",
           "draining_workers", "arrival_rate_slope", "queue_growth", "startup_time"]
#: sha256 of the _digest() run with ROUND16 selected, measured on the code before
#: TREND_FEATURES existed (commit 43b33fc, pure Python): round 16's search observation is
#: unchanged, so round 16's reference scores stand for round 17.
ROUND16_DIGEST = "1dc4ca55d05d25928d51ea38a5945452e3e58f71f179fc2bac5245dab129318f"


def _fit_per_min(ys: list[float], interval_s: float) -> float:
    """The oracle: numpy's least-squares line through (t in minutes, y)."""
    if len(ys) < 2:
        return 0.0
    t = np.arange(len(ys)) * interval_s / 60.0
    return float(np.polyfit(t, np.asarray(ys, dtype=float), 1)[0])


def _slog(x: float) -> float:
    return math.copysign(math.log1p(abs(x)), x)


def _expected(rates: list[float], interval_s: float) -> list[float]:
    s = [_fit_per_min(rates[-(int(round(h / interval_s)) + 1):], interval_s)
         for h in (60.0, 120.0, 300.0)]
    return [_slog(s[0]), _slog(s[1]), _slog(s[2]), _slog(s[0] - s[2])]


def test_round16_selection_is_byte_identical() -> None:
    shape, digest, _ = _digest(**{FEATURES_KEY: ROUND16})
    assert shape == (16,) and digest == ROUND16_DIGEST


def test_trend_features_on_a_hand_made_ramp_and_step() -> None:
    # a ramp of 0.01 log-rate per 5 s interval: 0.12 per minute at every horizon, no
    # acceleration
    ramp = [0.01 * i for i in range(100)]
    got = trend_values(ramp, 5.0)
    assert got[0] == pytest.approx(math.log1p(0.12), rel=1e-12)
    assert got[1] == pytest.approx(math.log1p(0.12), rel=1e-12)
    assert got[2] == pytest.approx(math.log1p(0.12), rel=1e-12)
    assert got[3] == pytest.approx(0.0, abs=1e-12)
    # a step up of 1.0 that happened 30 s ago (6 of the latest 13 intervals are high):
    # the 60 s fit sees it steeply, the 300 s fit (61 intervals) shallowly -> accelerating
    step = [0.5] * 94 + [1.5] * 6
    got = trend_values(step, 5.0)
    assert got == pytest.approx(_expected(step, 5.0), rel=1e-9, abs=1e-12)
    assert got[0] > got[1] > got[2] > 0 and got[3] > 0
    # the 60 s slope by hand: 13 points, x = i - 6, sum of x^2 = 182; y = 1 on i = 7..12
    assert got[0] == pytest.approx(math.log1p((1 + 2 + 3 + 4 + 5 + 6) / 182 * 12), rel=1e-12)
    # falling: the sign flips, the magnitudes stay
    down = [2.0 - y for y in step]
    assert trend_values(down, 5.0) == pytest.approx([-g for g in got], rel=1e-12)
    # only the last 300 s are read (61 intervals at 5 s)
    assert trend_values([9.0] * 50 + step, 5.0) == trend_values(step, 5.0)


def test_trend_features_use_what_history_exists() -> None:
    assert trend_values([], 5.0) == (0.0, 0.0, 0.0, 0.0)
    assert trend_values([0.7], 5.0) == (0.0, 0.0, 0.0, 0.0)
    # two intervals: the slope is their difference per interval, at every horizon
    got = trend_values([0.2, 0.5], 5.0)
    assert got[:3] == pytest.approx((math.log1p(3.6),) * 3, rel=1e-12) and got[3] == 0.0
    # 20 intervals (95 s): the 60 s fit reads the last 13, the longer ones all 20
    ys = [math.sin(i / 3.0) + 1.0 for i in range(20)]
    got = trend_values(ys, 5.0)
    assert got == pytest.approx(_expected(ys, 5.0), rel=1e-9, abs=1e-12)
    assert got[1] == got[2] != got[0]
    # a 30 s interval: 60 s spans 3 intervals, 300 s 11
    assert trend_window(60.0, 30.0) == 3 and trend_window(300.0, 30.0) == 11
    assert trend_window(60.0, 120.0) == 2


@settings(max_examples=200, deadline=None)
@given(rates=st.lists(st.floats(0.0, 20.0), max_size=80),
       interval_s=st.sampled_from([1.0, 5.0, 10.0, 30.0, 60.0]))
def test_trend_features_are_finite_and_bounded(rates, interval_s) -> None:
    got = trend_values(rates, interval_s)
    assert len(got) == len(TREND_FEATURES) and all(math.isfinite(g) for g in got)
    r = max(rates, default=0.0)
    bound = math.log1p(r * 60.0 / interval_s)
    assert all(abs(g) <= bound * (1 + 1e-12) + 1e-12 for g in got[:3])
    assert abs(got[3]) <= math.log1p(2 * r * 60.0 / interval_s) * (1 + 1e-12) + 1e-12
    # the numpy oracle agrees
    assert got == pytest.approx(_expected(rates, interval_s), rel=1e-6, abs=1e-9)
    # a constant rate has no trend
    if rates:
        assert trend_values([rates[0]] * len(rates), interval_s) == pytest.approx(
            (0.0,) * 4, abs=1e-9)


def test_trend_features_in_the_env_fit_the_arrival_rate_history() -> None:
    """In the env each step's trend features are the fits to the episode's own
    ``arrival_rate`` entries so far (selected alone, without capacity or work features,
    and beside them), signed-log bounded as the observation space says."""
    names = ["arrival_rate", *TREND_FEATURES, "active_workers"]
    for extra in ([], ["decode_demand", "queued_batches"]):
        env = gym.make("DynoSim-v0", **{FEATURES_KEY: names + extra})
        low = env.observation_space.low
        assert list(low[1:5]) == [-20.0] * 4 and low[0] == 0.0
        obs, _ = env.reset(seed=3)        # the reset's interval is the history's first
        rates, moved = [float(obs[0])], 0
        for t in range(80):
            obs, *_ = env.step((t * 3 + 1) % env.action_space.n)
            rates.append(float(obs[0]))
            # the fits read the unrounded log-rates; obs[0] is their float32
            exp = _expected(rates, env.unwrapped.cfg.env.interval_s)
            assert obs[1:5] == pytest.approx(np.float32(exp), rel=1e-4, abs=1e-5)
            assert env.observation_space.contains(obs)
            moved += abs(obs[3]) > 1e-3
        env.close()
        assert moved > 20

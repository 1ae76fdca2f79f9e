"""Issue 11: the autoscaling benchmark -- workload families, per-request and Lagrangian
rewards, log-scaled observations, evaluation over pinned trace windows with pooled metrics,
static-N / tuned / oracle baselines and ``dynosim tune``.

CI runs these on ``autoscale_tiny`` (seconds); the scenario-property measurement on the
default scenario (``scripts/scenario_check.py``) is marked ``expensive``.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dynosim_gym  # noqa: F401  (registers the ids)
from agents.evaluate import evaluate, plan_windows, resolve_policy
from agents.heuristics import make_heuristic
from dynosim_gym import scenarios as fam
from dynosim_gym.config import load_env_config
from dynosim_gym.observations import FEATURES
from dynosim.cli import main
from sim.errors import InputError

from conftest import write_jsonl

TINY = "autoscale_tiny"
FAMILY_TINY = {"env.scenarios": "diurnal_swing,rate_steps", "env.eval_scenarios": "flash_crowd",
               "env.episode_steps": 12, "env.rate_min_rps": 1.0, "env.rate_max_rps": 2.0}


# -- workload families ---------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(family=st.sampled_from(list(fam.SHAPES)), seed=st.integers(0, 2**32 - 1),
       swing=st.floats(5.0, 20.0), peak=st.floats(0.5, 10.0))
def test_family_envelopes_swing_between_trough_and_peak(family, seed, swing, peak) -> None:
    env = fam.draw_envelope(family, np.random.default_rng(seed), 1800.0, peak, swing)
    t = np.linspace(0.0, 1800.0, 3601)
    rates = np.interp(t, env.knots_s, env.rates)
    assert rates.min() >= peak / swing * (1 - 1e-9) and rates.max() <= peak * (1 + 1e-9)
    assert math.isclose(max(env.rates), peak, rel_tol=1e-9)        # the swing is real:
    assert math.isclose(min(env.rates), peak / swing, rel_tol=1e-9)   # both extremes occur
    assert min(env.knots_s) >= 0 and max(env.knots_s) <= 1800.0


def test_envelope_arrivals_follow_the_envelope() -> None:
    env = fam.Envelope((0.0, 600.0, 600.001, 1200.0), (1.0, 1.0, 10.0, 10.0))
    t = fam.poisson_times_ms(env, 1200.0, np.random.default_rng(0)) / 1000.0
    low, high = np.sum(t < 600), np.sum(t >= 600)
    assert abs(low - 600) < 4 * math.sqrt(600) and abs(high - 6000) < 4 * math.sqrt(6000)
    assert np.all(np.diff(t) >= 0)


def test_default_scenario_trains_and_evaluates_on_different_families() -> None:
    cfg = load_env_config("autoscale_default")
    train = set(cfg.env.scenarios.split(","))
    held = set(cfg.env.eval_scenarios.split(","))
    assert train and held and not train & held
    assert cfg.env.interval_s * cfg.env.episode_steps >= 1800
    assert cfg.env.startup_min_s >= 30 and cfg.env.startup_max_s <= 180
    env = gym.make("DynoSim-v0")
    seen = set()
    for split, names in (("train", train), ("eval", held)):
        for s in range(6):
            _, info = env.reset(seed=s, options={"split": split})
            setup = info["episode_setup"]
            assert setup["scenario"] in names
            assert 5 <= setup["swing"] <= 20 and 30 <= setup["startup_time_s"] <= 180
            seen.add(setup["scenario"])
    assert seen == train | held


def test_family_episodes_are_deterministic_and_trace_families_replay_trace_rows() -> None:
    env = gym.make("DynoSim-v0", config=TINY, **{**FAMILY_TINY,
                                                 "env.scenarios": "mooncake_mod"})
    outs = []
    for _ in range(2):
        env.reset(seed=7)
        u = env.unwrapped
        rows = [env.step(u.hold_action())[4]["requests_decided"] for _ in range(12)]
        outs.append((rows, u.episode["first_row"], u.episode["envelope"]))
    assert outs[0] == outs[1] and sum(outs[0][0]) > 0


@pytest.mark.parametrize("ttft_ms", [1500.0, 4000.0])
def test_prompt_cap_is_the_longest_prompt_an_idle_worker_prefills_within_the_sla(ttft_ms
                                                                                 ) -> None:
    from dataclasses import asdict

    from dynosim_gym.episodes import EpisodeFactory
    from sim.engine import EngineConfig
    cfg = load_env_config(TINY, **{"sla.ttft_ms": ttft_ms})
    f = EpisodeFactory(cfg)
    eng = EngineConfig(**asdict(cfg.sim.engine))
    cap = f.isl_cap
    assert cap is not None and cap > eng.max_num_batched_tokens   # several chunked passes
    assert fam.idle_ttft_ms(eng, f.timing, cap) <= ttft_ms < fam.idle_ttft_ms(eng, f.timing,
                                                                               cap + 1)
    # computed from the config: a looser SLA admits longer prompts, a tighter one shorter
    if ttft_ms == 4000.0:
        tight = EpisodeFactory(load_env_config(TINY)).isl_cap
        assert tight < cap


def test_an_sla_no_prompt_can_meet_is_a_one_line_error() -> None:
    from dynosim_gym.episodes import EpisodeFactory
    f = EpisodeFactory(load_env_config(TINY, **{"sla.ttft_ms": 0.001}))
    with pytest.raises(InputError, match="no prompt prefills within") as e:
        f.isl_cap
    assert e.value.field == "sla.ttft_ms"


@settings(max_examples=25, deadline=None)
@given(cap=st.integers(1, 140_000), row=st.integers(0, 10_000))
def test_capped_trace_rows_keep_their_outputs_and_consistent_prefixes(cap, row) -> None:
    from dynosim_gym.episodes import family_trace
    trace = family_trace(fam.TRACE_FAMILIES["mooncake_mod"])
    times = np.arange(300, dtype=float) * 10.0
    w = fam.EnvelopeTraceWorkload(trace, row, times, "t", isl_cap=cap)
    rows = trace._firsts
    capped = 0
    for k, req in enumerate(w):
        orig = rows[(row + k) % len(rows)]
        assert req.output_length == orig.output_length
        assert req.input_length == min(orig.input_length, cap)
        if orig.input_length > cap:
            capped += 1
            assert req.hash_ids == orig.hash_ids[:math.ceil(cap / orig.trace_block_size)]
        else:
            assert req.hash_ids == orig.hash_ids
    assert capped == w.capped == w.describe()["capped_requests"]


def test_mooncake_mod_records_its_prompt_cap_and_other_families_are_uncapped() -> None:
    env = gym.make("DynoSim-v0", config=TINY, **{**FAMILY_TINY, "env.episode_steps": 60,
                                                 "env.scenarios": "mooncake_mod",
                                                 "env.eval_scenarios": "azure_mod"})
    _, info = env.reset(seed=3)
    setup = info["episode_setup"]
    cap = env.unwrapped.episodes.isl_cap
    assert setup["isl_cap_tokens"] == cap and setup["capped_requests"] > 0
    reqs = list(env.unwrapped.sim.workload)
    assert max(r.input_length for r in reqs) == cap      # Mooncake's tail is over the cap
    assert 0 < setup["capped_requests"] <= sum(r.input_length == cap for r in reqs)
    _, info = env.reset(seed=3, options={"split": "eval"})
    assert "isl_cap_tokens" not in info["episode_setup"]      # held-out azure_mod: as it was


# -- observations ----------------------------------------------------------------------------

def test_observations_are_log_scaled_and_do_not_saturate() -> None:
    from dynosim_gym.monitor import Interval
    from dynosim_gym.observations import ObservationBuilder
    cfg = load_env_config(TINY)
    ob = ObservationBuilder(cfg, 4, 1500.0, 50.0)
    i = FEATURES.index("arrival_rate")
    vals = []
    for rate in (1, 10, 100, 1000):                 # far outside a 2 req/s training range
        ob.reset()
        v = ob.vector(Interval(0.0, 10.0, arrived=int(rate * 10)), 0.0, 10.0)
        vals.append(v[i])
    assert all(b - a > 1.0 for a, b in zip(vals, vals[1:]))    # log steps, still apart
    assert ob.space.contains(v)


def test_trend_features_see_rising_load_and_growing_queues() -> None:
    env = gym.make("DynoSim-v0", config=TINY, initial_workers=1)
    env.reset(seed=0, options={"scenario": "ramp", "rate_rps": 10.0})
    u = env.unwrapped
    slope = FEATURES.index("arrival_rate_slope")
    growth = FEATURES.index("queue_growth")
    obs = [env.step(u.target_action(1))[0] for _ in range(6)]
    assert any(o[slope] != 0 for o in obs) and any(o[growth] != 0 for o in obs)
    assert all(env.observation_space.contains(o) for o in obs)


def test_default_env_passes_the_checkers() -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check
    env = gym.make("DynoSim-v0", config=TINY, **FAMILY_TINY)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check(env.unwrapped, warn=False)


# -- rewards -----------------------------------------------------------------------------------

def _episode(env, seed, action=None):
    env.reset(seed=seed)
    u = env.unwrapped
    terms, done = [], False
    while not done:
        _, r, _, done, info = env.step(u.hold_action() if action is None else action)
        terms.append(info["reward_terms"])
    return terms, info["episode_summary"], u


def test_per_request_reward_counts_each_missed_request_once() -> None:
    env = gym.make("DynoSim-v0", config=TINY, initial_workers=1, rate_min_rps=3.0,
                   rate_max_rps=4.0)
    terms, summary, u = _episode(env, 3)
    missed = summary["requests_decided"] - summary["requests_met"]
    assert missed > 0
    assert math.isclose(-sum(t["sla"] for t in terms), missed / u.request_scale, rel_tol=1e-9)


def test_interval_mode_is_the_v01_reward() -> None:
    env = gym.make("DynoSim-v0", config=TINY, reward={"mode": "interval"})
    env.reset(seed=0)
    u = env.unwrapped
    _, _, _, _, info = env.step(u.hold_action())
    assert math.isclose(info["reward_terms"]["sla"], info["sla_attainment"])


def test_lagrangian_term_uses_the_multiplier() -> None:
    env = gym.make("DynoSim-v0", config=TINY, initial_workers=1, rate_min_rps=3.0,
                   rate_max_rps=4.0, reward={"mode": "lagrangian", "sla_target": 0.9})
    u = env.unwrapped
    u.set_multiplier(2.0)
    env.reset(seed=1)
    for _ in range(6):
        _, _, _, _, info = env.step(u.hold_action())
        want = 2.0 * (info["requests_met"] - 0.9 * info["requests_decided"]) / u.request_scale
        assert math.isclose(info["reward_terms"]["sla"], want, abs_tol=1e-12)
    u.set_multiplier(-1.0)
    assert u.multiplier == 0.0


def test_lagrangian_training_updates_and_records_the_multiplier(tmp_path: Path) -> None:
    from agents.train import train
    out = train("ppo", "DynoSim-v0", config=TINY, timesteps=48, out=tmp_path / "lag",
                n_envs=1, quiet=True, overrides={"reward.mode": "lagrangian",
                                                 "reward.sla_target": 1.0,
                                                 "episode_steps": 4, "initial_workers": 1,
                                                 "rate_min_rps": 3.0, "rate_max_rps": 4.0},
                hyperparams=_tiny_hp(tmp_path))
    run = json.loads((out / "run.json").read_text())
    hist = run["lagrange_multiplier"]["history"]
    assert hist and all(m >= 0 for _, _, m in hist)
    # target 1.0 > any attainment below it: the multiplier can only grow
    assert run["lagrange_multiplier"]["final"] >= 1.0


def _tiny_hp(tmp_path: Path) -> Path:
    p = tmp_path / "ppo.yml"
    p.write_text("DynoSim-v0:\n  policy: MlpPolicy\n  n_steps: 16\n  batch_size: 16\n"
                 "  n_epochs: 1\n")
    return p


# -- evaluation ---------------------------------------------------------------------------------

def test_windows_cover_the_trace_consecutively() -> None:
    arrivals = [float(t) for t in range(0, 1_000_000, 500)]          # 0 .. 999.5 s
    starts = plan_windows(arrivals, 999.5, 100.0, 10.0, None)
    assert starts == [100.0 * k for k in range(9)]
    assert plan_windows(arrivals, 999.5, 0.0, 10.0, None) == [0.0]
    assert plan_windows(arrivals, 999.5, 100.0, 10.0, 3) == [0.0, 100.0, 200.0]
    for args, field in (((2000.0, 10.0, None), "--window-s"), ((15.0, 10.0, None), "--window-s"),
                        ((100.0, 10.0, 50), "--windows")):
        with pytest.raises(InputError) as exc:
            plan_windows(arrivals, 999.5, *args)
        assert exc.value.field == field


@settings(max_examples=200, deadline=None)
@given(total_ms=st.integers(1, 10**9), extra=st.floats(1e-9, 1e3),
       interval=st.sampled_from([0.1, 1.0, 5.0, 10.0]), default=st.booleans())
def test_window_longer_than_the_trace_error_reads_true(total_ms: int, extra: float,
                                                      interval: float, default: bool) -> None:
    """The two numbers in "a W s window is longer than the trace (T s)" compare as the
    message says: W > T as printed (it printed T with .0f, so a 129.9 s trace read as
    130 s against a 130 s window)."""
    total_s = total_ms / 1000.0
    window_s = total_s + extra
    with pytest.raises(InputError) as exc:
        plan_windows([0.0, float(total_ms)], total_s, window_s, interval, None, default=default)
    m = re.search(r"(?:a |= )([0-9.e+-]+) s(?: window|, no --window-s).* is longer than the "
                  r"trace \(([0-9.e+-]+) s\)", str(exc.value))
    assert m, str(exc.value)
    assert float(m.group(1)) > float(m.group(2)), str(exc.value)


def test_window_130_s_against_a_129_9_s_trace() -> None:
    with pytest.raises(InputError, match=r"a 130 s window is longer than the trace "
                                         r"\(129\.9 s\)"):
        plan_windows([0.0, 129_900.0], 129.9, 130.0, 5.0, None)


def _ids(t: int, isl: int) -> list[int]:
    return [t * 100 + j for j in range(-(-isl // 512))]


def test_an_empty_window_is_an_error_not_a_zero_score(tmp_path: Path) -> None:
    rows = [(t, 2000, 50, _ids(t, 2000)) for t in range(0, 60_000, 1000)]        # 0-59 s
    rows += [(t, 2000, 50, _ids(t, 2000)) for t in range(200_000, 260_000, 1000)]  # gap
    trace = write_jsonl(tmp_path / "gap.jsonl", rows)
    with pytest.raises(InputError, match=r"window \[60, 120\) s of the trace has no requests"):
        evaluate("heuristic:static", config=TINY, trace=str(trace), window_s=60)


def test_whole_trace_episode_and_pooled_percentiles(tmp_path: Path) -> None:
    rows = [(t, 3000 + 37 * (t // 1000 % 50), 40, _ids(t, 4900)) for t in range(0, 240_000, 400)]
    trace = str(write_jsonl(tmp_path / "t.jsonl", rows))
    whole = evaluate("heuristic:static", config=TINY, trace=trace, window_s=0)
    assert whole.episodes == 1
    assert whole.per_episode[0]["steps"] * 10 >= 239.6          # longer than half the trace
    assert whole.requests_decided + whole.requests_in_flight == len(rows)   # none dropped
    assert whole.requests_in_flight <= 3
    parts = evaluate("heuristic:static", config=TINY, trace=trace, window_s=60)
    assert parts.episodes == 3 and parts.episodes_plan["window_s"] == 60
    assert [e["setup"]["window_start_s"] for e in parts.per_episode] == [0.0, 60.0, 120.0]
    # pooled p90 = p90 of every request's TTFT, not the mean of the windows' p90s
    from dynosim_gym.monitor import _pct
    env = gym.make("DynoSim-v0", config=TINY, episode_steps=6,
                   workload={"kind": "mooncake", "path": trace})
    pooled = []
    for start in (0.0, 60.0, 120.0):
        env.reset(seed=0, options={"window_start_s": start})
        done = False
        while not done:
            _, _, _, done, _ = env.step(env.unwrapped.hold_action())
        pooled += env.unwrapped._ttfts
    assert parts.p90_ttft_ms == _pct(sorted(pooled), 0.9)


def test_scoring_uses_the_evaluation_reward_not_the_run_s(tmp_path: Path) -> None:
    from agents.train import train
    out = train("ppo", "DynoSim-v0", config=TINY, timesteps=32, out=tmp_path / "r", n_envs=1,
                quiet=True, overrides={"episode_steps": 4, "reward.gpu_weight": 0.5,
                                       "reward.mode": "interval"},
                hyperparams=_tiny_hp(tmp_path))
    res = evaluate(str(out), config=TINY, episodes=1, overrides={"episode_steps": 4})
    assert res.reward_config["mode"] == "per_request"
    assert res.reward_config["gpu_weight"] != 0.5
    assert res.policy_interface["interval_s"] == 10.0


def test_static_n_and_its_scaling_metrics() -> None:
    res = evaluate("heuristic:static:3", config=TINY, episodes=2, seed=0)
    for e in res.per_episode:
        assert e["workers_changed"] == 2 and e["scaling_events"] == 1 and e["reversals"] == 0
    assert res.scaling_events == 2 and res.reversals_per_hour == 0.0


def test_reversals_count_direction_changes() -> None:
    env = gym.make("DynoSim-v0", config=TINY)
    env.reset(seed=0)
    u = env.unwrapped
    for n in (3, 1, 2, 2, 1, 1):
        *_, info = env.step(u.target_action(n))
    s = info["episode_summary"]
    assert s["scaling_events"] == 4 and s["reversals"] == 3


def test_policy_specs_resolve_with_one_line_errors() -> None:
    assert resolve_policy("heuristic:kv").env_id == "DynoSimRouting-v0"
    assert resolve_policy("heuristic:static:4").env_id == "DynoSim-v0"
    for spec, needle in (("pretrained:nope", "unknown pretrained policy 'nope'"),
                         ("heuristic:power_of_two", "unknown heuristic"),
                         ("x/model.zip", "no such model")):
        with pytest.raises(InputError, match=needle) as exc:
            resolve_policy(spec)
        assert exc.value.field == "--policy"
    with pytest.raises(InputError, match="acts on DynoSimRouting-v0, not DynoSim-v0"):
        evaluate("heuristic:kv", "DynoSim-v0", config=TINY)


@pytest.mark.parametrize("argv, needle", [
    (["--window-s", "99999"], "longer than the trace"),
    (["--window-s", "15"], "multiple of the decision interval"),
    (["--windows", "100"], "asked for 100"),
    (["--episodes", "3"], "flag '--episodes': --episodes counts seeded episodes"),
])
def test_evaluate_trace_bad_input_exits_2(capsys, argv, needle) -> None:
    rc = main(["evaluate", "--policy", "heuristic:load", "--config", TINY, "--trace",
               "bundled:mooncake_conversation", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_trace_flags_without_trace_name_the_flag_given(capsys) -> None:
    for flag, value in (("--window-s", "60"), ("--windows", "2")):
        rc = main(["evaluate", "--policy", "heuristic:load", "--config", TINY, flag, value])
        err = capsys.readouterr().err
        assert rc == 2 and f"flag '{flag}'" in err and "need --trace" in err


def test_unknown_pretrained_name_exits_2(capsys) -> None:
    rc = main(["evaluate", "--policy", "pretrained:nope"])
    err = capsys.readouterr().err
    assert rc == 2 and "'nope'" in err and len(err.strip().splitlines()) == 1


def test_planner_knobs_are_validated_by_name(capsys) -> None:
    for kv, needle in (("env.planner.load_scaling_down_sensitivty=5", "did you mean"),
                       ("env.planner.load_scaling_down_sensitivity=200", "[0, 100]")):
        rc = main(["evaluate", "--policy", "heuristic:load", "--config", TINY, "--set", kv])
        err = capsys.readouterr().err
        assert rc == 2 and needle in err and "env.planner.load_scaling_down" in err


def test_evaluate_json_keys(capsys) -> None:
    rc = main(["evaluate", "--policy", "heuristic:load", "--config", TINY, "--trace",
               "bundled:mooncake_conversation", "--window-s", "60", "--windows", "2", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["episodes"] == 2
    assert set(res) >= {"sla_attainment", "gpu_hours", "p90_ttft_ms", "mean_reward",
                        "scaling_events", "reversals_per_hour", "reward_config"}


# -- baselines: tuned planners and oracles ------------------------------------------------------

def test_tune_is_deterministic_and_ships_a_named_baseline(tmp_path: Path, monkeypatch) -> None:
    import agents.heuristics as h
    from agents.tune import tune
    outs = []
    for k in range(2):
        path, best = tune("heuristic:load", trials=3, episodes=1, config=TINY, seed=0,
                          name="load-test", out=tmp_path / f"{k}" / "load-test.yaml",
                          overrides={"episode_steps": 4})
        outs.append(path.read_text())
    assert outs[0] == outs[1]
    # written outside agents/tuned/: the header says how it becomes heuristic:NAME
    assert outs[0].startswith("# Written by `dynosim tune` (agents/tune.py); copy it to "
                              "agents/tuned/load-test.yaml to use it as heuristic:load-test.")
    # only the knobs the load planner reads under the best target are written
    assert "optimization_target" in best["knobs"] and best["tuned_on"]["split"] == "train"
    assert "load_predictor" not in best["knobs"]
    assert "load_predictor" in best["search"]["knobs_not_read"]
    # --out elsewhere without --name: named after its file, never the shipped default name
    path, _ = tune("heuristic:load", trials=1, episodes=1, config=TINY, seed=0,
                   out=tmp_path / "mine.yaml", overrides={"episode_steps": 4})
    assert path.read_text().startswith("# Written by `dynosim tune` (agents/tune.py); copy it "
                                       "to agents/tuned/mine.yaml to use it as heuristic:mine.")
    monkeypatch.setattr(h, "TUNED_DIR", tmp_path / "0")
    pol = make_heuristic("heuristic:load-test")
    assert pol.knobs == best["knobs"]
    res = evaluate("heuristic:load-test", config=TINY, episodes=1,
                   overrides={"episode_steps": 4})
    assert res.episodes == 1


def test_knob_space_reads_the_planner_dataclass_generically(monkeypatch) -> None:
    import dataclasses

    import sim.planner as planner
    from agents.tune import knob_space
    cfg = load_env_config(TINY)
    space = knob_space(cfg)
    assert {"load_scaling_down_sensitivity", "load_min_observations",
            "load_adjustment_interval_seconds", "load_predictor",
            "optimization_target"} <= set(space)
    assert "ttft_ms" not in space and "max_gpu_budget" not in space
    # a knob added to the dataclass becomes tunable with no change in agents/tune.py
    New = dataclasses.make_dataclass("PlannerConfig", [("new_knob_s", "float", 2.0)],
                                     bases=(planner.PlannerConfig,))
    monkeypatch.setattr(planner, "PlannerConfig", New)
    assert knob_space(cfg)["new_knob_s"] == {"float": (0.5, 8.0), "log": True}


def test_oracle_static_picks_the_cheapest_count_that_meets_the_target(capsys) -> None:
    from agents.oracle import evaluate_oracle
    over = {"initial_workers": 1, "rate_min_rps": 2.0, "rate_max_rps": 3.0}
    res = evaluate_oracle("oracle:static", config=TINY, episodes=1, seed=0, overrides=over)
    # progress: stderr is no terminal here, so periodic lines (a bar on a terminal)
    assert re.fullmatch(r"oracle:static: 1/1 episode, (1 replay|([2-9]|[1-9]\d+) replays), [\d,]+ s\n",
                        capsys.readouterr().err)
    n = res.per_episode[0]["oracle_workers"]
    target = res.reward_config["sla_target"]
    if n > 1:
        below = evaluate(f"heuristic:static:{n - 1}", config=TINY, episodes=1, seed=0,
                         overrides={**over, "initial_workers": n - 1})
        assert below.sla_attainment < target
    capsys.readouterr()
    sched = evaluate_oracle("oracle:schedule", config=TINY, episodes=1, seed=0,
                            overrides=over, segment_s=30.0)
    counts = sched.per_episode[0]["oracle_workers"]
    assert len(counts) == 2 and all(1 <= c <= 4 for c in counts)
    lines = capsys.readouterr().err.splitlines()
    assert [x.split(",")[0] for x in lines[:2]] == ["oracle:schedule: 1/2 segments",
                                                    "oracle:schedule: 2/2 segments"]
    assert re.fullmatch(r"oracle:schedule: local search from [\d.]+ GPU-h, SLA [\d.]+% "
                        r"\(greedy [\d.]+ GPU-h, SLA [\d.]+%; (1 replay|([2-9]|[1-9]\d+) replays)\)", lines[2])
    assert lines[3:] and all(re.fullmatch(r"oracle:schedule: local search pass \d+: "
                                          r"(1 replay|([2-9]|[1-9]\d+) replays), [\d.]+ GPU-h, SLA [\d.]+%", x)
                             for x in lines[3:])
    evaluate_oracle("oracle:static", config=TINY, episodes=1, seed=0, overrides=over,
                    quiet=True)
    assert capsys.readouterr().err == ""


@pytest.mark.expensive
def test_default_scenario_poses_the_problem() -> None:
    """The properties the default scenario was chosen for, measured on it (issue 11)."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from scenario_check import check
    res = check(None, episodes=1, seed=100, families=None)
    assert res["static_peak_over_schedule_gpu_h"] >= 1.5
    assert res["static_mean_miss_points"] >= 20


def test_a_tuned_planner_env_pickles_mid_episode() -> None:
    import pickle

    from agents.heuristics import PlannerPolicy
    env = gym.make("DynoSim-v0", config=TINY, rate_min_rps=2.0, rate_max_rps=3.0).unwrapped
    knobs = {"load_scaling_down_sensitivity": 10.0}
    pol = PlannerPolicy("load", env, knobs=knobs)
    obs, _ = env.reset(seed=2)
    for _ in range(3):
        obs, *_ = env.step(pol.predict(obs)[0])
    twin = pickle.loads(pickle.dumps(env))
    pol2 = PlannerPolicy("load", twin, knobs=knobs)
    o2 = obs
    for _ in range(3):
        a, a2 = pol.predict(obs)[0], pol2.predict(o2)[0]
        assert a == a2
        obs, r, *_ = env.step(a)
        o2, r2, *_ = twin.step(a2)
        assert np.array_equal(obs, o2) and r == r2


def test_tune_rejects_non_planner_policies(capsys) -> None:
    rc = main(["tune", "--policy", "heuristic:static", "--trials", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "--policy" in err and len(err.strip().splitlines()) == 1


def test_a_family_episode_runs_as_a_run_config(capsys) -> None:
    from sim.workloads import from_config
    with pytest.raises(InputError, match="same length"):
        from_config({"kind": "synthetic", "arrival": {"process": "piecewise", "knots_s": [0, 1],
                                                      "rates_rps": [1]},
                     "isl": 100, "osl": 10, "duration_s": 10}, np.random.default_rng(0))
    path = Path(__file__).resolve().parents[1] / "envs_configs" / "autoscale_default.yaml"
    rc = main(["simulate", "--config", str(path), "--print-config"])
    out = capsys.readouterr().out
    assert rc == 0 and "piecewise" in out


def test_evaluate_wording_for_one_episode(capsys, tmp_path) -> None:
    """One episode reads "1 episode" and its seeds list that one seed (not [0, 0])."""
    out = tmp_path / "e.json"
    assert main(["evaluate", "--policy", "heuristic:static:2", "--config", TINY,
                 "--episodes", "1", "--seed", "3", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "1 episode)" in text and "episodes)" not in text
    assert json.loads(out.read_text())["episodes_plan"]["seeds"] == [3]
    assert main(["evaluate", "--policy", "heuristic:static:2", "--config", TINY,
                 "--episodes", "2", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes_plan"]["seeds"] == [0, 1]


def test_per_family_and_mean_episode_attainment_expose_what_pooling_hides() -> None:
    """Pooled attainment weighs episodes by requests: a policy that serves one heavy
    episode and drops a light one scores high pooled; the per-episode mean and the
    per-family figures show the light family at 0 (round 4d's finding, issue 11)."""
    from agents.evaluate import _per_family
    heavy = {"requests_met": 900, "requests_decided": 900, "gpu_hours": 5.0,
             "setup": {"scenario": "azure_mod"}}
    light = {"requests_met": 0, "requests_decided": 100, "gpu_hours": 1.0,
             "setup": {"scenario": "ramp_cycle"}}
    fam = _per_family([heavy, light, dict(light)])
    assert fam["azure_mod"]["sla_attainment"] == 1.0
    assert fam["ramp_cycle"] == {"episodes": 2, "requests_decided": 200, "sla_attainment": 0.0,
                                 "mean_episode_sla_attainment": 0.0,
                                 "gpu_hours_per_episode": 1.0}
    res = evaluate("heuristic:static:2", config=TINY, episodes=3, seed=0)
    fam = res.per_family
    assert sum(f["episodes"] for f in fam.values()) == res.episodes == 3
    assert sum(f["requests_decided"] for f in fam.values()) == res.requests_decided
    met = sum(f["sla_attainment"] * f["requests_decided"] for f in fam.values())
    assert abs(met / res.requests_decided - res.sla_attainment) < 1e-9
    eps = [e["requests_met"] / e["requests_decided"] for e in res.per_episode]
    assert abs(res.mean_episode_sla_attainment - sum(eps) / len(eps)) < 1e-12
    assert "per_family" in res.as_dict(with_episodes=False)


def test_results_record_overrides_and_a_changed_model_interface_warns(tmp_path: Path,
                                                                      capsys) -> None:
    """A new user's trial: ``--set`` overrides were recorded nowhere, and one that changed a
    trained model's action silently showed the model's value in ``policy_interface``."""
    from agents.train import train
    res = evaluate("heuristic:static:2", config=TINY, episodes=1,
                   overrides={"env.action.scale_down_window_s": 20})
    assert res.overrides == {"env.action.scale_down_window_s": 20}
    assert res.as_dict(with_episodes=False)["overrides"] == res.overrides
    out = train("ppo", "DynoSim-v0", config=TINY, timesteps=32, out=tmp_path / "r", n_envs=1,
                quiet=True, overrides={"episode_steps": 4, "action.scale_down_window_s": 30},
                hyperparams=_tiny_hp(tmp_path))
    capsys.readouterr()
    res = evaluate(str(out), config=TINY, episodes=1, overrides={"episode_steps": 4})
    assert "warning" not in capsys.readouterr().err
    res = evaluate(str(out), config=TINY, episodes=1,
                   overrides={"episode_steps": 4, "env.action.scale_down_window_s": 0})
    err = capsys.readouterr().err
    assert "env.action.scale_down_window_s: 30.0 -> 0.0" in err and len(err.splitlines()) == 1
    assert res.policy_interface["action"]["scale_down_window_s"] == 30.0


def test_oracles_name_their_env_and_refuse_another(capsys) -> None:
    from dynosim.cli import main
    rc = main(["evaluate", "--policy", "oracle:static", "--config", TINY, "--episodes", "1",
               "--json", "--quiet"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["env_id"] == "DynoSim-v0"
    rc = main(["evaluate", "--policy", "oracle:schedule-greedy", "--env", "DynoSimRouting-v0",
               "--config", TINY, "--episodes", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "acts on DynoSim-v0" in err and len(err.strip().splitlines()) == 1

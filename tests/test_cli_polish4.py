"""Polish round 4 (s10-polish4): loose ends a re-check found; each test fails without its fix."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli as run

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "envs_configs" / "autoscale_tiny.yaml")


# -- 2. dynosim tune says plainly when the best trial is the defaults --------------------------

@pytest.mark.parametrize("defaults_win", [True, False])
def test_tune_says_when_the_best_trial_is_the_defaults(tmp_path: Path, capsys, monkeypatch,
                                                       defaults_win: bool) -> None:
    import yaml

    import agents.tune as tune_mod
    seen: list[dict] = []

    def score(kind, knobs, env, runs):      # trial 0 (the defaults) scores 1 or 0, others 0.5
        seen.append(knobs)
        first = len(seen) == 1
        obj = (1.0 if defaults_win else 0.0) if first else 0.5
        return {"objective": obj, "sla_attainment": 1.0, "gpu_hours_per_episode": 0.0}
    monkeypatch.setattr(tune_mod, "score", score)
    out = tmp_path / "x.yaml"
    rc, stdout, err = run(capsys, "tune", "--policy", "heuristic:load", "--trials", "3",
                          "--episodes", "1", "--config", TINY, "--set", "episode_steps=2",
                          "--out", str(out), "--quiet")
    assert rc == 0, err
    data = yaml.safe_load(out.read_text())
    assert data["best_is_defaults"] is defaults_win
    if defaults_win:
        assert data["best_trial"] == 1
        assert data["knobs"] == {k: v for k, v in seen[0].items()
                                 if k not in data["search"]["knobs_not_read"]}
        assert ("best is trial 1, the defaults (objective 1.0000; 3 of 3 trials completed): "
                "tuning found nothing better") in stdout
    else:
        assert data["best_trial"] == 2
        assert data["knobs"] == {k: v for k, v in seen[1].items()
                                 if k not in data["search"]["knobs_not_read"]}
        assert "nothing better" not in stdout
        assert "best 0.5000 (trial 2; trial 1, the defaults: 0.0000)" in stdout


# -- 3. range errors quote the real constraint, not a representation limit ----------------------

def _config_ranges():
    """(dotted field, Range) of every validated config field: sim sections, env sections,
    workload keys, planner knobs, flags."""
    from dataclasses import fields, is_dataclass
    from typing import get_type_hints

    from dynosim_gym.config import EnvSection
    from sim.config import SECTIONS, DisaggSection
    from sim.schema import FLAG_RANGES, PLANNER_FIELDS, WORKLOAD_FIELDS, field_range

    def walk(cls, prefix):
        hints = get_type_hints(cls)
        for f in fields(cls):
            if is_dataclass(hints.get(f.name)):
                yield from walk(hints[f.name], f"{prefix}.{f.name}")
            elif field_range(f) is not None:
                yield f"{prefix}.{f.name}", field_range(f)
    out = [*walk(EnvSection, "env"), *walk(DisaggSection, "disagg")]
    for name, cls in SECTIONS.items():
        out += list(walk(cls, name))
    out += [(f"workload.{k}", r) for k, r in WORKLOAD_FIELDS.items()]
    out += [(f"planner.{k}", r) for k, r in PLANNER_FIELDS.items()]
    out += [(k, r) for k, (r, _) in FLAG_RANGES.items()]
    return out


CAP_TEXTS = ("4.5036e+12", "4.5036e+15", "2147483647", "9223372036854775807")


def test_a_value_below_a_range_is_not_told_a_representation_limit() -> None:
    from sim.schema import _is_cap
    ranges = _config_ranges()
    assert len(ranges) > 60 and any(_is_cap(r.hi) for _, r in ranges)
    for dotted, r in ranges:
        if r.lo is None:
            continue
        msg = r.violation(r.lo * 2 if _is_cap(r.lo) else r.lo if r.lo_open else r.lo - 1)
        if _is_cap(r.lo):           # past the limit itself: the limit, and why it is one
            assert r.why and f"allowed {r.text()}" in msg and r.why in msg, (dotted, msg)
        else:
            assert msg and not any(c in msg for c in CAP_TEXTS), (dotted, msg)
        if _is_cap(r.hi):
            over = r.violation(r.hi * 2)
            assert r.why and f"allowed {r.text()}" in over and r.why in over, (dotted, over)


@pytest.mark.parametrize("key, value, expected", [
    ("env.action.offset_dwell_s", "-1", "must be 0 (off) or a multiple of env.interval_s "
     "(needs env.action.stabilise: base), got -1.0"),
    ("env.action.base_interval_s", "0", "must be a positive multiple of env.interval_s "
     "(null: env.interval_s), got 0.0"),
    ("env.planner_interval_s", "-5", "must be a positive multiple of env.interval_s, got -5.0"),
    ("env.interval_s", "-1", "must be > 0, got -1.0"),
    ("env.episode_steps", "0", "must be >= 1, got 0"),
    ("env.action.offset_dwell_s", "1e13", "must be <= 4.5036e+12 s, got 10000000000000.0 "
     "(allowed [0, 4.5036e+12] s: float64 ms stay 1-ms exact below 2^52 ms)"),
])
def test_set_range_errors_name_the_real_constraint(capsys, key: str, value: str,
                                                   expected: str) -> None:
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:static", "--episodes", "1",
                     "--set", f"{key}={value}", "--quiet")
    assert rc == 2
    assert err.strip().splitlines() == [f"dynosim: error: flag '--set {key}': {expected}"]


def test_the_dwell_rule_is_what_the_cross_field_check_enforces(capsys) -> None:
    """The rule the range error quotes is the one the validator applies to a value >= 0."""
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:static", "--episodes", "1",
                     "--set", "env.action.type=residual", "--set", "env.action.stabilise=base",
                     "--set", "env.action.offset_dwell_s=7", "--quiet")
    assert rc == 2 and "must be 0 or a multiple of env.interval_s (5), got 7" in err, err


# -- 4. tuned planners carry only the knobs their planner reads ---------------------------------

#: a valid value other than the default for every PlannerConfig field a test may perturb
OTHER = {"optimization_target": "load", "decode_scale_up_kv_rate": 80.0,
         "decode_scale_down_kv_rate": 20.0, "ttft_ms": 123.0, "itl_ms": 7.0,
         "load_adjustment_interval_seconds": 30.0, "throughput_adjustment_interval_seconds": 30.0,
         "max_throughput_scaling_replicas": 1, "load_predictor": "kalman",
         "load_predictor_log1p": True, "kalman_q_level": 2.0, "kalman_q_trend": 0.3,
         "kalman_r": 3.0, "kalman_min_points": 2, "load_scaling_down_sensitivity": 10,
         "load_min_observations": 2, "max_num_fpm_samples": 8, "fpm_samples_per_interval": 2,
         "prefill_engine_num_gpu": 3, "prefill_min_endpoint": 2, "decode_min_endpoint": 2,
         "prefill_scale_up_queue_tokens": 1000, "prefill_scale_down_queue_tokens": 10,
         "scale_down_cooldown_seconds": 200.0, "min_endpoint": 2, "max_gpu_budget": 6,
         "min_gpu_budget": 2, "decode_engine_num_gpu": 4, "mode": "disagg"}


def _episode(config: str, kind: str, knobs: dict, steps: int) -> list:
    import gymnasium as gym

    from agents.evaluate import run_episode
    from agents.heuristics import PlannerPolicy
    # a load that moves every planner variant here (autoscale_tiny's own 0.5-2 req/s keeps
    # one worker whatever the knobs)
    busy = {"env.rate_min_rps": 2.0, "env.rate_max_rps": 6.0} if config == "autoscale_tiny" \
        else {}
    env = gym.make("DynoSim-v0", config=config, **{"env.episode_steps": steps,
                                                   "env.planner_interval_s": 10.0, **busy})
    try:
        pol = PlannerPolicy(kind, env, knobs=knobs)
        out = run_episode(env, pol, {"split": "train"}, 3, keep_trace=True)
    finally:
        env.close()
    return [out["trace"], out["ttfts"], out["summary"]["reward"]]


@pytest.mark.parametrize("config, kind, knobs", [
    ("autoscale_tiny", "load", {"optimization_target": "throughput"}),
    ("autoscale_tiny", "load", {"optimization_target": "latency"}),
    ("autoscale_tiny", "load", {"optimization_target": "load", "decode_scale_up_kv_rate": 30.0,
                                "decode_scale_down_kv_rate": 5.0}),
    ("autoscale_tiny", "load", {"optimization_target": "sla"}),
    ("autoscale_tiny", "throughput", {"load_predictor": "constant"}),
    ("autoscale_tiny", "throughput", {"load_predictor": "moving_average"}),
    ("autoscale_tiny", "throughput", {"load_predictor": "kalman"}),
    ("autoscale_tiny", "throughput", {"load_predictor": "arima"}),
    ("autoscale_disagg", "load", {"optimization_target": "latency"}),
    ("autoscale_disagg", "throughput", {"load_predictor": "arima"}),
])
def test_the_fields_a_planner_does_not_read_leave_its_decisions_unchanged(
        config: str, kind: str, knobs: dict) -> None:
    """Every PlannerConfig field outside ``fields_read`` moved to another valid value at
    once: the episode (workers per step, every request's TTFT, the reward) is identical."""
    import dataclasses

    import gymnasium as gym

    from dynosim_gym.autoscaling_env import planner_config
    from sim.planner import PlannerConfig, fields_read
    env = gym.make("DynoSim-v0", config=config)
    pc = planner_config(env.unwrapped.cfg, knobs)
    env.close()
    read = fields_read(pc, kind)
    unread = {k: v for k, v in OTHER.items() if k not in read}
    assert set(OTHER) == {f.name for f in dataclasses.fields(PlannerConfig)}
    assert len(unread) >= 8, unread
    PlannerConfig(**{**dataclasses.asdict(pc), **unread})     # a valid configuration
    base = _episode(config, kind, knobs, 30)
    assert base == _episode(config, kind, {**knobs, **unread}, 30)


@pytest.mark.parametrize("kind", ["load", "throughput"])
def test_tune_writes_only_the_knobs_its_planner_reads(tmp_path: Path, kind: str) -> None:
    import yaml

    from agents.tune import tune
    from dynosim_gym.autoscaling_env import planner_config
    from dynosim_gym.config import load_env_config
    from sim.planner import fields_read
    path, best = tune(f"heuristic:{kind}", trials=3, episodes=1, config=TINY, seed=0,
                      out=tmp_path / "t.yaml", overrides={"episode_steps": 2})
    data = yaml.safe_load(path.read_text())
    cfg = load_env_config(TINY, **{"env.episode_steps": 2})
    full = planner_config(cfg, data["knobs"])
    read = fields_read(full, kind)
    assert data["knobs"] and set(data["knobs"]) <= read
    unread = data["search"]["knobs_not_read"]
    assert unread and not set(unread) & read and not set(unread) & set(data["knobs"])
    if kind == "throughput":
        assert "load_predictor" in data["knobs"] and "optimization_target" in unread
    else:
        assert "optimization_target" in data["knobs"] and "load_predictor" in unread


def test_shipped_tuned_planners_hold_only_knobs_their_planner_reads() -> None:
    """agents/tuned/*.yaml: a planner's file names no knob its planner ignores (load-tuned
    carried KV thresholds, down above up, that its latency target never reads)."""
    import gymnasium as gym

    from agents.heuristics import KV_KNOBS, TUNED_DIR, read_tuned
    from dynosim_gym.autoscaling_env import planner_config
    from sim.planner import fields_read
    files = sorted(TUNED_DIR.glob("*.yaml"))
    assert {p.stem for p in files} >= {"load-tuned", "kv-tuned"}
    env = gym.make("DynoSim-v0")
    cfg = env.unwrapped.cfg
    env.close()
    for path in files:
        data = read_tuned(path)
        if data["base"] == "kv":
            assert set(data["knobs"]) == set(KV_KNOBS), path
            continue
        read = fields_read(planner_config(cfg, data["knobs"]), data["base"])
        assert set(data["knobs"]) <= read, (path, set(data["knobs"]) - read)


# -- 7. plot_learned: a flap that is also a scale-up onset is not drawn on top of it -----------

def test_plot_learned_draws_a_flap_clear_of_its_onset(tmp_path: Path, monkeypatch) -> None:
    """The round 14b ramp figure's planner panel drew each flap's x on the onset's triangle
    (both at the count after the move); the x now sits half a worker short of it, and the
    q= labels are kept clear of the x's too."""
    from types import SimpleNamespace

    import matplotlib.axes
    import numpy as np

    from conftest import load_script
    mod = load_script("plot_learned")
    n = 40
    active = [2] * 10 + [1] * 5 + [2] * 10 + [4] * 15      # down at 10, up at 15 and 25
    trace = {"t_s": [5.0 * (k + 1) for k in range(n)], "active_workers": active,
             "starting_workers": [0] * n, "queued_requests": [k % 7 for k in range(n)],
             "arrival_rate_rps": [1.0 + (k % 5) for k in range(n)]}
    ep = {"seed": 0, "setup": {"scenario": "flash_crowd"}, "sla_attainment": 0.5,
          "gpu_hours": 1.0, "scaling_events": 3, "reversals": 1, "flaps": 2,
          "flap_steps": [15, 10], "steps": n}
    drawn: dict[str, np.ndarray] = {}
    real = matplotlib.axes.Axes.scatter

    def spy(self, x, y, *args, **kwargs):
        drawn[kwargs.get("marker")] = np.column_stack([np.asarray(x, float),
                                                       np.asarray(y, float)])
        return real(self, x, y, *args, **kwargs)
    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", spy)
    mod.plot([SimpleNamespace(policy="heuristic:load-tuned", traces=[trace],
                              per_episode=[ep])], tmp_path / "f.png")
    onset, flap = drawn["^"], drawn["x"]
    assert onset.tolist() == [[80.0, 2.0]]                  # the onset at step 15 (t = 80 s)
    assert flap.tolist() == [[80.0, 1.5], [55.0, 1.5]]      # its flap below it; a down's above
    for fx, fy in flap:
        assert all(abs(fy - oy) >= 0.5 for ox, oy in onset if ox == fx)

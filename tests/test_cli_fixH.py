"""New-user trial findings (s9-fixH): each test fails without its fix."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import one_line_error, run_cli as run

REPO = Path(__file__).resolve().parent.parent


def _trace(tmp_path: Path, n: int = 150, gap_ms: int = 1000) -> str:
    """A Mooncake trace of ``n`` requests, one every ``gap_ms``."""
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"timestamp": k * gap_ms, "input_length": 300,
                                        "output_length": 40, "hash_ids": [k]}) + "\n"
                            for k in range(n)))
    return str(path)


# -- 1. evaluate --trace --windows all: the tail after the last whole window is counted --------

def test_trace_tail_is_reported_not_dropped(capsys, tmp_path: Path) -> None:
    trace = _trace(tmp_path)          # arrivals 0..149 s: windows [0,60), [60,120); 30 left
    out = tmp_path / "ev.json"
    rc, stdout, err = run(capsys, "evaluate", "--policy", "heuristic:static", "--trace", trace,
                          "--window-s", "60", "--windows", "all", "--out", str(out), "--quiet")
    assert rc == 0, err
    plan = json.loads(out.read_text())["episodes_plan"]
    assert plan["windows"] == 2
    assert plan["requests_in_trace"] == 150 and plan["requests_unscored"] == 30
    assert "30 of the trace's 150 requests in no window, not scored" in stdout
    assert "30 of 150 trace requests arrive at or after 120 s" in err


def test_trace_whole_windows_leave_nothing_unscored(capsys, tmp_path: Path) -> None:
    trace = _trace(tmp_path)
    out = tmp_path / "ev.json"
    rc, stdout, err = run(capsys, "evaluate", "--policy", "heuristic:static", "--trace", trace,
                          "--window-s", "0", "--out", str(out), "--quiet")
    assert rc == 0, err
    assert json.loads(out.read_text())["episodes_plan"]["requests_unscored"] == 0
    assert "not scored" not in stdout.split("in flight")[-1] and "no scored window" not in err


# -- 2. dynosim tune: pruned trials are said and counted; trial 0 is the defaults ---------------

TINY = str(REPO / "envs_configs" / "autoscale_tiny.yaml")


def test_tune_trial_0_is_the_defaults_and_leaves_the_load_thresholds_unsearched(
        tmp_path: Path, capsys) -> None:
    import yaml

    from agents.tune import knob_space, tune
    from dynosim_gym.autoscaling_env import planner_config
    from dynosim_gym.config import load_env_config
    from sim.planner import fields_read
    path, best = tune("heuristic:load", trials=1, episodes=1, config=TINY, seed=0,
                      out=tmp_path / "t.yaml", overrides={"episode_steps": 2})
    cfg = load_env_config(TINY, **{"env.episode_steps": 2})
    defaults = planner_config(cfg)
    assert defaults.optimization_target != "load"
    # every searched knob at its default; the KV thresholds (read by the load target only)
    # are not drawn at all, so no YAML holds a scale-down threshold above the scale-up one
    searched = [k for k in knob_space(cfg) if not k.startswith("decode_scale_")]
    read = fields_read(defaults, "load")
    assert best["knobs"] == {k: getattr(defaults, k) for k in searched if k in read}
    search = yaml.safe_load(path.read_text())["search"]
    assert search["knobs_not_read"] == [k for k in searched if k not in read]
    assert (search["trials"], search["trials_completed"], search["trials_pruned"]) == (1, 1, 0)
    assert search["trial_0_sampled"] == []


def test_tune_draws_the_kv_thresholds_in_order_under_the_load_target(monkeypatch) -> None:
    import optuna

    import agents.tune as tune_mod
    from dynosim_gym.config import load_env_config
    space = tune_mod.knob_space(load_env_config(TINY))
    space["optimization_target"] = {"choices": ["load", "throughput"]}
    seen = []

    def objective(trial) -> float:
        knobs = tune_mod._suggest(trial, space, {"optimization_target": "throughput"})
        seen.append(knobs)
        return float(knobs.get("decode_scale_down_kv_rate", 0.0))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=3))
    study.optimize(objective, n_trials=40)
    load = [k for k in seen if k["optimization_target"] == "load"]
    other = [k for k in seen if k["optimization_target"] != "load"]
    assert load and other
    assert all(k["decode_scale_up_kv_rate"] >= k["decode_scale_down_kv_rate"] for k in load)
    assert not any("decode_scale_up_kv_rate" in k or "decode_scale_down_kv_rate" in k
                   for k in other)


def test_tune_prints_and_counts_pruned_trials(tmp_path: Path, capsys, monkeypatch) -> None:
    import yaml

    import agents.tune as tune_mod
    # load_min_observations 0 is rejected by PlannerConfig (>= 1): those trials are pruned
    monkeypatch.setitem(tune_mod.RANGES, "load_min_observations", (0, 1, False))
    rc = run(capsys, "tune", "--policy", "heuristic:load", "--trials", "6", "--episodes", "1",
             "--config", TINY, "--set", "episode_steps=2", "--out", str(tmp_path / "x.yaml"),
             "--quiet")
    assert rc[0] == 0, rc[2]
    pruned = [x for x in rc[2].splitlines() if " pruned: " in x]
    search = yaml.safe_load((tmp_path / "x.yaml").read_text())["search"]
    assert search["trials_pruned"] == len(pruned) >= 1
    assert search["trials_completed"] + search["trials_pruned"] == 6
    assert all("load_min_observations" in x and "must be >= 1" in x for x in pruned), pruned
    # trial 0's default (5) is outside the range: sampled, and said so
    assert search["trial_0_sampled"] == ["load_min_observations"]
    assert "trial 1 is the defaults except load_min_observations" in rc[2]


def test_tune_with_every_trial_pruned_is_a_one_line_error(tmp_path: Path, capsys,
                                                          monkeypatch) -> None:
    import agents.tune as tune_mod
    monkeypatch.setitem(tune_mod.RANGES, "load_min_observations", (0, 0, False))
    rc, _, err = run(capsys, "tune", "--policy", "heuristic:load", "--trials", "2",
                     "--episodes", "1", "--config", TINY, "--set", "episode_steps=2",
                     "--out", str(tmp_path / "x.yaml"), "--quiet")
    lines = err.strip().splitlines()
    assert rc == 2 and "Traceback" not in err
    assert sum(" pruned: " in x for x in lines) == 2
    assert "all 2 trials were pruned" in lines[-1] and "--trials" in lines[-1]
    assert not (tmp_path / "x.yaml").exists()


# -- 4. bench/peer_side_by_side.py --trace: your own trace beside Dynamo's replay ---------------

def test_peer_side_by_side_refuses_a_missing_trace_before_looking_for_the_peer(tmp_path) -> None:
    import subprocess
    import sys
    out = subprocess.run([sys.executable, str(REPO / "bench/peer_side_by_side.py"), "--trace",
                          str(tmp_path / "none.jsonl"), "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "none.jsonl: trace not found (--trace)" in out.stderr
    assert "Traceback" not in out.stderr


def test_peer_side_by_side_replays_your_trace_in_both(tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import load_script
    mod = load_script("bench/peer_side_by_side")
    if mod.peer_python() is None or not (mod.SHARED / "peer/dynosim_peer.py").is_file():
        pytest.skip("Dynamo's replay is not installed (make peer)")
    trace = REPO / "tests/data/peer_smoke.jsonl"
    out = subprocess.run([sys.executable, str(REPO / "bench/peer_side_by_side.py"), "--trace",
                          str(trace), "--configs", "a", "--repeats", "1", "--out",
                          str(tmp_path), "--name", "mine"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "mine.json").read_text())
    ours, peer = doc["a"]["ours"][0]["summary"], doc["a"]["peer"][0]["metrics"]
    n = sum(1 for _ in trace.open())
    assert ours["totals"]["completed_requests"] == peer["totals"]["completed_requests"] == n
    assert "(peer_smoke.jsonl, polynomial timing)" in (tmp_path / "mine.md").read_text()


# -- 5. oracle:static when no count reaches the target -------------------------------------------

def test_oracle_static_says_when_no_count_reaches_the_target(capsys, tmp_path: Path) -> None:
    out = tmp_path / "o.json"
    rc, _, err = run(capsys, "evaluate", "--policy", "oracle:static", "--config", TINY,
                     "--episodes", "1", "--set", "env.rate_min_rps=40",
                     "--set", "env.rate_max_rps=40", "--out", str(out), "--quiet")
    assert rc == 0, err
    doc = json.loads(out.read_text())
    assert doc["per_episode"][0]["oracle_target_met"] is False
    assert doc["episodes_plan"]["episodes_target_unmet"] == 1
    assert "no worker count in [1, 4] reaches the SLA target" in err
    assert "not a cost at the SLA" in err


def test_oracle_static_meeting_the_target_says_nothing(capsys, tmp_path: Path) -> None:
    out = tmp_path / "o.json"
    rc, _, err = run(capsys, "evaluate", "--policy", "oracle:static", "--config", TINY,
                     "--episodes", "1", "--out", str(out), "--quiet")
    assert rc == 0 and err == ""
    doc = json.loads(out.read_text())
    assert doc["per_episode"][0]["oracle_target_met"] is True
    assert doc["episodes_plan"]["episodes_target_unmet"] == 0


# -- 6. leaderboard plots say what was scored --------------------------------------------------

def test_plot_labels_name_the_trace_windows() -> None:
    from agents.leaderboard import scored_episodes
    plan = {"trace": "/x/y/az.jsonl", "window_s": 60.0, "windows": 2}
    assert scored_episodes(plan) == "2 windows of az.jsonl (60 s each)"
    assert scored_episodes(plan, first=True) == "first window of az.jsonl, [0, 60) s"
    assert scored_episodes({"trace": "bundled:m", "window_s": 0, "windows": 1}) == \
        "bundled:m (whole trace, 1 episode)"
    assert scored_episodes({"split": "eval"}) == "held-out episodes"
    assert scored_episodes({}, first=True) == "first held-out episode"
    assert scored_episodes({"split": "train"}) == "episodes of split=train"


def test_front_plot_of_trace_windows_caps_the_sla_axis(tmp_path: Path, monkeypatch) -> None:
    import matplotlib.axes

    from agents.evaluate import Evaluation
    from agents.leaderboard import plot_front
    seen = {}
    real = matplotlib.axes.Axes.set_title

    def spy(self, label, *a, **k):
        seen["title"], seen["ax"] = label, self
        return real(self, label, *a, **k)
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", spy)
    plan = {"trace": "/tmp/az.jsonl", "window_s": 60.0, "windows": 2}
    zero = dict(mean_reward=0.0, std_reward=0.0, gpu_hours=0.0, p90_ttft_ms=0.0,
                p90_itl_ms=0.0, scaling_events=0, reversals_per_hour=0.0, flaps=0,
                flaps_per_hour=0.0, requests_decided=1, requests_in_flight=0,
                simulated_hours=0.0)
    res = [Evaluation(policy=p, episodes=2, sla_attainment=s, gpu_hours_per_episode=g,
                      episodes_plan=plan, **zero)
           for p, s, g in (("heuristic:load", 1.0, 0.04), ("heuristic:static:4", 0.98, 0.07))]
    plot_front(res, tmp_path / "f.png", tmp_path)
    assert seen["title"] == "Policies on DynoSim-v0: 2 windows of az.jsonl (60 s each)"
    ax = seen["ax"]
    lo, hi = ax.get_ylim()
    assert hi <= 100 + 0.03 * (100 - lo) + 1e-9      # was 100 + 15 % of the range
    assert max(t for t in ax.get_yticks() if lo <= t <= hi) <= 100


# -- 7. evaluate --trace without --window-s: the error says the window is the default ------------

def test_default_window_longer_than_the_trace_says_it_is_the_default(capsys,
                                                                     tmp_path: Path) -> None:
    trace = _trace(tmp_path, n=50)
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:static", "--trace", trace,
                     "--quiet")
    one_line_error(rc, err, "--window-s", "the default window (60 decision intervals of 5 s = "
                   "300 s, no --window-s given) is longer than the trace (49 s)",
                   "pass --window-s S")


# -- 8. nits ---------------------------------------------------------------------------------

def test_evaluate_prints_the_trace_loaders_notes(capsys, tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    rows = [{"timestamp": t, "input_length": 300, "output_length": 40, "hash_ids": [k]}
            for k, t in enumerate([1000, 0, *range(2000, 80000, 1000)])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:static", "--trace", str(path),
                     "--window-s", "60")
    assert rc == 0, err
    assert f"dynosim: note: {path}: 1 row earlier than a" in err, err
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:static", "--trace", str(path),
                     "--window-s", "60", "--quiet")
    assert "note:" not in err


def test_evaluate_names_the_env_a_routing_policy_switched_to(capsys) -> None:
    rc, out, err = run(capsys, "evaluate", "--policy", "heuristic:round_robin", "--trace",
                       "bundled:mooncake_conversation", "--window-s", "60", "--windows", "1",
                       "--quiet")
    assert rc == 0, err
    assert out.startswith("heuristic:round_robin on DynoSimRouting-v0 (the policy's env): ")


def test_nothing_completed_is_no_samples_not_zero_latency(capsys, tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    # one window of 10 s: every request still in prefill at the cut-off
    trace = _trace(tmp_path, n=20, gap_ms=100)
    rc, stdout, err = run(capsys, "evaluate", "--policy", "heuristic:static", "--trace", trace,
                          "--window-s", "0", "--set", "timing.model=fixed:60000,10",
                          "--out", str(out), "--quiet")
    assert rc == 0, err
    doc = json.loads(out.read_text())
    assert doc["latency_samples"] == 0
    assert "latency: no samples (no request completed)" in stdout
    assert "p90 TTFT 0 ms" not in stdout


def test_unknown_scenario_lists_the_names_per_env(tmp_path: Path) -> None:
    from dynosim_gym.config import load_env_config
    from sim.errors import InputError
    with pytest.raises(InputError) as exc:
        load_env_config(TINY, **{"env.scenarios": "nope"})
    msg = exc.value.format()
    assert "comma list" not in msg
    assert "DynoSim-v0's families (" in msg and "DynoSimRouting-v0's (" in msg


def test_leaderboard_md_counts_the_unscored_tail(capsys, tmp_path: Path) -> None:
    trace = _trace(tmp_path)
    rc, stdout, err = run(capsys, "evaluate", "--leaderboard", str(tmp_path / "lb"),
                          "--policies", "heuristic:static", "--trace", trace, "--window-s", "60",
                          "--quiet")
    assert rc == 0, err
    assert "(30 of the trace's 150 requests, after the last whole window, in no episode)" \
        in (tmp_path / "lb" / "leaderboard.md").read_text()

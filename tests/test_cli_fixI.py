"""New-user trial findings (s10-fixI): each test fails without its fix."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import one_line_error, run_cli as run

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "envs_configs" / "autoscale_tiny.yaml")


# -- 1. --set env.planner.KNOB=V acts or is said ------------------------------------------------

def test_an_explicit_env_planner_knob_wins_over_the_tuned_file(capsys) -> None:
    """heuristic:load-tuned sets load_adjustment_interval_seconds 15 and min_endpoint 3; the
    user's env.planner value wins (with a note), the tuned knobs it does not set still act."""
    import gymnasium as gym

    from agents.heuristics import make_heuristic, read_tuned, tuned_baselines
    from dynosim_gym.autoscaling_env import planner_config
    tuned = read_tuned(tuned_baselines()["load-tuned"])["knobs"]
    assert tuned["load_adjustment_interval_seconds"] != 20.0
    env = gym.make("DynoSim-v0", config=TINY,
                   **{"env.planner.load_adjustment_interval_seconds": 20})
    try:
        pol = make_heuristic("heuristic:load-tuned", env)
        err = capsys.readouterr().err
        assert "env.planner.load_adjustment_interval_seconds=20 overrides heuristic:load-tuned's " \
               "tuned value 15.0" in err
        pc = planner_config(env.unwrapped.cfg, pol.knobs)
        assert pc.load_adjustment_interval_seconds == 20.0
        assert pc.optimization_target == tuned["optimization_target"]
        assert pc.min_endpoint == tuned["min_endpoint"]
    finally:
        env.close()
    env = gym.make("DynoSim-v0", config=TINY)      # nothing set: the tuned file as it is
    try:
        assert make_heuristic("heuristic:load-tuned", env).knobs == tuned
        assert "overrides" not in capsys.readouterr().err
    finally:
        env.close()


def test_a_planner_knob_no_planner_reads_is_said(capsys, monkeypatch) -> None:
    import gymnasium as gym

    import dynosim_gym.config as config_mod
    monkeypatch.setattr(config_mod, "_NOTED", set())
    gym.make("DynoSim-v0", config=TINY, **{"env.planner.load_scaling_down_sensitivity": 5})
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["note: env.planner.load_scaling_down_sensitivity has no effect here: neither "
                   "planner reads it under optimization_target: throughput, load_predictor: "
                   "constant (the load planner reads it under optimization_target: sla)"]
    gym.make("DynoSim-v0", config=TINY, **{"env.planner.load_scaling_down_sensitivity": 5,
                                            "env.planner.optimization_target": "sla"})
    assert capsys.readouterr().err == ""        # read under sla: nothing to say


def test_the_cli_says_an_unread_planner_knob(capsys, monkeypatch, tmp_path: Path) -> None:
    import dynosim_gym.config as config_mod
    monkeypatch.setattr(config_mod, "_NOTED", set())
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:static", "--config", TINY,
                     "--episodes", "1", "--set", "env.episode_steps=2", "--set",
                     "env.planner.kalman_r=3", "--out", str(tmp_path / "e.json"), "--quiet")
    assert rc == 0, err
    assert err.count("env.planner.kalman_r has no effect here") == 1, err
    assert "the throughput planner reads it under load_predictor: kalman" in err, err


# -- 2. tune: a knob the user fixes is held, not searched ---------------------------------------

def test_tune_holds_the_env_planner_knobs_fixed_in_every_trial(capsys, monkeypatch,
                                                              tmp_path: Path) -> None:
    import yaml

    import agents.tune as tune_mod
    seen: list[dict] = []
    real = tune_mod.score

    def spy(kind, knobs, env, runs):
        seen.append(dict(knobs))
        return real(kind, knobs, env, runs)
    monkeypatch.setattr(tune_mod, "score", spy)
    out = tmp_path / "t.yaml"
    rc, stdout, err = run(capsys, "tune", "--policy", "heuristic:load", "--trials", "4",
                          "--episodes", "1", "--config", TINY, "--set", "env.episode_steps=3",
                          "--set", "env.planner.optimization_target=sla", "--set",
                          "env.planner.load_min_observations=7", "--out", str(out), "--quiet")
    assert rc == 0, err
    assert len(seen) >= 3
    assert all("optimization_target" not in k and "load_min_observations" not in k
               for k in seen), seen
    data = yaml.safe_load(out.read_text())
    assert data["search"]["held_fixed"] == {"optimization_target": "sla",
                                            "load_min_observations": 7}
    assert not {"optimization_target", "load_min_observations"} & set(data["search"]["space"])
    assert data["knobs"]["optimization_target"] == "sla"
    assert data["knobs"]["load_min_observations"] == 7
    assert "held fixed by env.planner, not searched: optimization_target=sla, " \
           "load_min_observations=7" in stdout


# -- 3. env.planner.load_adjustment_interval_seconds: a multiple of env.interval_s -------------

@pytest.mark.parametrize("key", ["env.planner.load_adjustment_interval_seconds",
                                 "env.planner_interval_s"])
def test_a_planner_interval_off_the_env_steps_is_refused_alike(capsys, key: str) -> None:
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:load", "--config", TINY,
                     "--episodes", "1", "--set", f"{key}=7", "--quiet")
    one_line_error(rc, err, f"--set {key}", "must be a multiple of env.interval_s (10), got 7")


def test_a_planner_interval_on_the_env_steps_is_accepted() -> None:
    from dynosim_gym.config import load_env_config
    cfg = load_env_config(TINY, **{"env.planner.load_adjustment_interval_seconds": 20})
    assert cfg.env.planner["load_adjustment_interval_seconds"] == 20


def test_the_schema_shows_the_interval_rule(capsys) -> None:
    rc, out, _ = run(capsys, "config", "schema")
    assert rc == 0
    line = next(x for x in out.splitlines() if x.strip().startswith("env.planner "))
    assert "load_adjustment_interval_seconds a multiple of env.interval_s" in line


# -- 5. --search-space outside the load planner ---------------------------------------------

def test_search_space_v1_is_refused_for_the_kv_router(capsys, tmp_path: Path) -> None:
    rc, _, err = run(capsys, "tune", "--policy", "heuristic:kv", "--trials", "1",
                     "--episodes", "1", "--search-space", "v1", "--out",
                     str(tmp_path / "k.yaml"))
    one_line_error(rc, err, "--search-space", "heuristic:kv has one space")
    assert not (tmp_path / "k.yaml").exists()


@pytest.mark.parametrize("space", ["v1", "v2"])
def test_throughput_v2_searches_only_what_the_throughput_planner_reads(
        capsys, tmp_path: Path, space: str) -> None:
    import yaml

    from agents.evaluate import PolicySpec, make_eval_env
    from agents.tune import knob_space
    from dynosim_gym.autoscaling_env import planner_config
    from sim.planner import fields_read
    from sim.predictors import PREDICTORS
    out = tmp_path / "t.yaml"
    rc, _, err = run(capsys, "tune", "--policy", "heuristic:throughput", "--trials", "1",
                     "--episodes", "1", "--config", TINY, "--set", "env.episode_steps=2",
                     "--search-space", space, "--out", str(out), "--quiet")
    assert rc == 0, err
    searched = set(yaml.safe_load(out.read_text())["search"]["space"])
    env, cfg = make_eval_env(PolicySpec("heuristic:throughput", "heuristic", "DynoSim-v0"),
                             "DynoSim-v0", TINY, {})
    env.close()
    pc = planner_config(cfg)
    ever = set().union(*(fields_read(__import__("dataclasses").replace(pc, load_predictor=p),
                                     "throughput") for p in PREDICTORS))
    if space == "v1":
        assert searched == set(knob_space(cfg, "v1"))     # unchanged
        assert "optimization_target" in searched
    else:
        assert searched == set(knob_space(cfg, "v2")) & ever
        assert {"load_predictor", "kalman_r", "throughput_adjustment_interval_seconds"} <= searched
        assert not {"optimization_target", "load_adjustment_interval_seconds",
                    "load_scaling_down_sensitivity"} & searched


# -- 7. evaluate --policy TUNED.yaml: scored as that tuned heuristic -----------------------------

def test_evaluate_scores_a_tuned_yaml_as_the_tuned_heuristic(capsys, tmp_path: Path) -> None:
    import json
    import shutil

    from agents.heuristics import tuned_baselines
    mine = tmp_path / "mine.yaml"
    shutil.copy(tuned_baselines()["load-tuned"], mine)
    got = {}
    for spec in (str(mine), "heuristic:load-tuned"):
        out = tmp_path / "e.json"
        rc, _, err = run(capsys, "evaluate", "--policy", spec, "--config", TINY, "--episodes",
                         "1", "--set", "env.episode_steps=12", "--out", str(out), "--quiet")
        assert rc == 0, err
        got[spec] = json.loads(out.read_text())
        assert got[spec].pop("policy") == spec
    assert got[str(mine)] == got["heuristic:load-tuned"]
    import gymnasium as gym

    from agents.evaluate import resolve_policy
    from agents.heuristics import read_tuned
    env = gym.make("DynoSim-v0", config=TINY)
    try:
        pol = resolve_policy(str(mine)).load(env)        # the file's planner, its knobs
        assert (pol.kind, pol.knobs) == ("load", read_tuned(mine)["knobs"])
    finally:
        env.close()


def test_evaluate_a_yaml_that_is_not_a_tuned_planner_is_one_line(capsys, tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: nope\nknobs: {}\n")
    rc, _, err = run(capsys, "evaluate", "--policy", str(bad), "--episodes", "1")
    one_line_error(rc, err, str(bad), "--policy", "not a tuned planner")


# -- 8. train --out EXISTING_DIR is refused without --replace; a partial run is said -----------

def test_train_into_a_run_directory_needs_replace(capsys, tmp_path: Path,
                                                  monkeypatch) -> None:
    import agents.train
    calls = []
    monkeypatch.setattr(agents.train, "train", lambda *a, **k: calls.append(k) or tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text('{"status": "completed"}')
    argv = ["train", "--algo", "ppo", "--timesteps", "64", "--out", str(run_dir), "--quiet"]
    rc, _, err = run(capsys, *argv)
    one_line_error(rc, err, "--out", str(run_dir), "--replace")
    assert not calls and (run_dir / "run.json").read_text() == '{"status": "completed"}'
    rc, _, err = run(capsys, *argv, "--replace")
    assert rc == 0 and len(calls) == 1, err
    empty = tmp_path / "empty"
    empty.mkdir()                    # an empty directory is not a run: no --replace needed
    rc, _, err = run(capsys, "train", "--algo", "ppo", "--timesteps", "64", "--out",
                     str(empty), "--quiet")
    assert rc == 0 and len(calls) == 2, err


@pytest.mark.parametrize("status", ["running", "failed", "completed"])
def test_evaluate_a_run_not_completed_says_so(capsys, tmp_path: Path, status: str) -> None:
    import json
    import shutil

    import agents.evaluate as ev
    from agents.evaluate import PRETRAINED_DIR
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(PRETRAINED_DIR / "autoscaler.zip", run_dir / "model.zip")
    record = json.loads((PRETRAINED_DIR / "autoscaler.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**record, "status": status}))
    ev._STATUS_NOTED.clear()
    rc, _, err = run(capsys, "evaluate", "--policy", str(run_dir), "--episodes", "1",
                     "--set", "env.episode_steps=2", "--out", str(tmp_path / "e.json"),
                     "--quiet")
    assert rc == 0, err
    note = f"note: {run_dir / 'run.json'}: status is '{status}', not 'completed'"
    assert err.count(note) == (status != "completed"), err


# -- 9. an int knob's bounds are recorded as ints (new tunes; v1 keeps what it recorded) --------

def test_int_knob_bounds_are_ints_under_v2_and_as_recorded_under_v1() -> None:
    from agents.evaluate import PolicySpec, make_eval_env
    from agents.tune import knob_space
    env, cfg = make_eval_env(PolicySpec("heuristic:load", "heuristic", "DynoSim-v0"),
                             "DynoSim-v0", None, {})
    env.close()
    v2, v1 = knob_space(cfg, "v2"), knob_space(cfg, "v1")
    ints = {k: s["int"] for k, s in v2.items() if "int" in s}
    assert "load_scaling_down_sensitivity" in ints
    assert all(type(b) is int for bounds in ints.values() for b in bounds), ints
    assert v1["load_scaling_down_sensitivity"]["int"] == (0.0, 100.0)
    assert type(v1["load_scaling_down_sensitivity"]["int"][0]) is float


# -- 10. env.planner errors name the key set -----------------------------------------------------

@pytest.mark.parametrize("sets, needles", [
    (["env.planner.min_endpoint=99"], ["--set env.planner.min_endpoint",
                                       "cannot hold min_endpoint=99"]),
    (["env.planner.ttft_ms=-1"], ["--set env.planner.ttft_ms", "--set sla.ttft_ms=V"]),
    (["env.planner.itl_ms=5"], ["--set env.planner.itl_ms", "sla.itl_ms"]),
])
def test_env_planner_errors_name_the_key_set(capsys, sets: list[str], needles) -> None:
    argv = [a for s in sets for a in ("--set", s)]
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:load", "--config", TINY,
                     "--episodes", "1", *argv, "--quiet")
    one_line_error(rc, err, *needles)
    assert "max_gpu_budget'" not in err

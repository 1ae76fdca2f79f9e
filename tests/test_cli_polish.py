"""First-hour nits (s7-polish): each test fails without its fix."""
from __future__ import annotations

import json

import pytest

import dynosim_gym  # noqa: F401  (registers the env ids)

from conftest import load_script, one_line_error, run_cli as run


# -- 4. a None default reads "null" everywhere in `dynosim config schema` ------------------------

def test_schema_shows_a_none_default_as_null_in_every_section(capsys) -> None:
    rc, out, _ = run(capsys, "config", "schema", "--format", "json")
    groups = json.loads(out)
    no_default = {r["field"] for r in groups["trace"]} | {"timing.model = fixed:P,D"}
    for rows in groups.values():
        for r in rows:
            if r["field"] not in no_default:
                assert r["default"] is not None, r
    by = {r["field"]: r["default"] for rows in groups.values() for r in rows}
    for field in ("sla.ttft_ms", "engine.max_model_len", "disagg.prefill_gpus_per_worker",
                  "workload.concurrency", "planner.decode_min_endpoint"):
        assert by[field] == "null", field
    rc, out, _ = run(capsys, "config", "schema")
    line = next(x for x in out.splitlines() if x.strip().startswith("sla.ttft_ms "))
    assert "= null" in line


# -- 5. a deprecated flag's bad value is reported under the spelling typed ----------------------

RUN_TINY = "envs_configs/autoscale_tiny.yaml"


@pytest.mark.parametrize("old, new, value", [("--ttft-sla-ms", "--sla-ttft-ms", "-5"),
                                             ("--itl-sla-ms", "--sla-itl-ms", "0")])
def test_deprecated_flag_error_names_the_flag_typed(capsys, old, new, value) -> None:
    rc, _, err = run(capsys, "simulate", "--config", RUN_TINY, "--quiet", old, value)
    one_line_error(rc, err, f"argument {old}: must be > 0")
    assert new not in err
    rc, _, err = run(capsys, "simulate", "--config", RUN_TINY, "--quiet", new, value)
    one_line_error(rc, err, f"argument {new}: must be > 0")


# -- 2. each env refuses the other env's workload families --------------------------------------

def test_each_env_refuses_the_other_env_s_families() -> None:
    import gymnasium as gym
    from dynosim_gym.scenarios import FAMILIES, ROUTING_FAMILIES
    auto = gym.make("DynoSim-v0", config="autoscale_tiny")
    routing = gym.make("DynoSimRouting-v0", config="routing_families")
    for env, foreign, own in ((auto, ROUTING_FAMILIES, "DynoSim-v0"),
                              (routing, FAMILIES, "DynoSimRouting-v0")):
        for name in foreign:
            with pytest.raises(ValueError, match=f"not a {own} one; expected one of") as exc:
                env.reset(seed=0, options={"scenario": name})
            msg = str(exc.value)
            assert "\n" not in msg and "options.scenario" in msg
            assert "diurnal" in msg and not any(f in msg.split("expected")[1] for f in foreign)
    # the shared legacy shapes stay valid on both
    auto.reset(seed=0, options={"scenario": "steady"})
    routing.reset(seed=0, options={"scenario": "steady"})
    # a config naming the other env's families is refused where it says so
    with pytest.raises(ValueError, match=r"autoscale_default.yaml:\d+, field 'env.scenarios'"):
        gym.make("DynoSimRouting-v0", config="autoscale_default")
    with pytest.raises(ValueError, match=r"routing_families.yaml:\d+, field 'env.scenarios'"):
        gym.make("DynoSim-v0", config="routing_families")


# -- 3. window_start_s pins a trace-window family's window --------------------------------------

def test_window_start_pins_a_trace_window_family() -> None:
    import gymnasium as gym
    env = gym.make("DynoSimRouting-v0", config="routing_families", episode_steps=6)
    _, info = env.reset(seed=0, options={"scenario": "mooncake_window",
                                         "window_start_s": 100.0})
    assert info["episode_setup"]["window_start_s"] == 100.0
    _, other = env.reset(seed=0, options={"scenario": "mooncake_window",
                                          "window_start_s": 700})
    assert other["episode_setup"]["window_start_s"] == 700.0
    with pytest.raises(ValueError, match="must start in"):        # past the trace's end
        env.reset(seed=0, options={"scenario": "mooncake_window", "window_start_s": 1e7})
    # a synthetic family (or a config drawing any) has no window to pin
    for opts in ({"scenario": "uneven_sizes", "window_start_s": 10}, {"window_start_s": 10}):
        with pytest.raises(ValueError, match="trace workloads only"):
            env.reset(seed=0, options=opts)


# -- 7. train on a config of the other env: one line naming both --------------------------------

@pytest.mark.parametrize("env_id, config, other", [
    ("DynoSimRouting-v0", "autoscale_default", "DynoSim-v0"),
    ("DynoSim-v0", "routing_families", "DynoSimRouting-v0")])
def test_train_refuses_a_config_of_the_other_env(tmp_path, capsys, env_id, config,
                                                  other) -> None:
    rc, _, err = run(capsys, "train", "--algo", "ppo", "--env", env_id, "--config", config,
                     "--out", str(tmp_path / "run"), "--timesteps", "8", "--quiet")
    one_line_error(rc, err, "flag '--env'", f"--config {config} does not fit --env {env_id}",
                   f"{config}.yaml:", f"is a {other} scenario", f"pass --env {other}")
    assert not (tmp_path / "run").exists()


# -- 1. a rate on a trace family is scaled by its TRACE_LOAD: said where it happens -------------

def test_rate_on_trace_families_is_said_to_be_scaled(capsys) -> None:
    import gymnasium as gym
    from dynosim_gym.scenarios import TRACE_LOAD
    argv = ["evaluate", "--policy", "heuristic:static:2", "--episodes", "1",
            "--set", "episode_steps=1", "--set", "env.rate_min_rps=1", "--set",
            "env.rate_max_rps=2"]
    rc, _, err = run(capsys, *argv)
    assert rc == 0, err
    notes = [x for x in err.splitlines() if "TRACE_LOAD" in x]
    assert len(notes) == 1 and notes[0].startswith("dynosim: note: --set env.rate_min_rps")
    lo, hi = 1 * TRACE_LOAD["mooncake_mod"], 2 * TRACE_LOAD["mooncake_mod"]
    assert f"mooncake_mod x 0.11 = {lo:.3g}-{hi:.3g} req/s" in notes[0]
    assert "azure_mod x 4 = 4-8 req/s" in notes[0]
    # what the note says is what an episode draws
    env = gym.make("DynoSim-v0", episode_steps=1, rate_min_rps=1, rate_max_rps=2)
    _, info = env.reset(seed=0, options={"scenario": "mooncake_mod"})
    assert lo <= info["episode_setup"]["peak_rps"] <= hi
    # no trace family among the scenarios, or --quiet: no note
    for extra in (["--set", "env.scenarios=diurnal_swing", "--set",
                   "env.eval_scenarios=flash_crowd"], ["--quiet"]):
        rc, _, err = run(capsys, *argv, *extra)
        assert rc == 0 and "TRACE_LOAD" not in err, err
    # a routing policy scores on the routing env's default config: no trace family there
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:kv", "--episodes", "1",
                     "--set", "episode_steps=2", "--set", "env.rate_max_rps=2")
    assert rc == 0 and "TRACE_LOAD" not in err, err
    rc, out, _ = run(capsys, "config", "schema")
    for key in ("env.rate_min_rps", "env.rate_max_rps"):
        line = next(x for x in out.splitlines() if x.strip().startswith(key + " "))
        assert "mooncake_mod x 0.11" in line and "azure_mod x 4" in line


# -- 6. a rate is bounded by the requests an episode may hold -----------------------------------

def test_a_rate_whose_episode_would_exhaust_memory_is_refused(capsys) -> None:
    import gymnasium as gym
    from dynosim_gym.episodes import MAX_EPISODE_REQUESTS
    with pytest.raises(ValueError, match=r"field 'env.rate_max_rps': 1e\+06 req/s would "
                       r"generate ~7,200,000,000 requests in a 1800 s episode") as exc:
        gym.make("DynoSim-v0", rate_max_rps=1e6)
    assert f"over the {MAX_EPISODE_REQUESTS:,}" in str(exc.value)
    assert "memory" in str(exc.value) and "\n" not in str(exc.value)
    env = gym.make("DynoSim-v0", config="autoscale_tiny")    # 60 s episodes
    with pytest.raises(ValueError, match="field 'options.rate_rps': .* over the"):
        env.reset(seed=0, options={"scenario": "steady", "rate_rps": 1e6})
    # a rate whose episode fits is kept (autoscale_tiny: 1.5 x 60 s per req/s)
    ok = MAX_EPISODE_REQUESTS / (1.5 * 60) * 0.99
    assert env.unwrapped.episodes.describe_options({"rate_rps": ok})["rate_rps"] == ok
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:static:2", "--episodes", "1",
                     "--set", "env.rate_max_rps=1e6", "--quiet")
    one_line_error(rc, err, "env.rate_max_rps", "requests in a 1800 s episode", "memory")


def test_trace_load_note_is_not_printed_before_a_one_line_error(capsys, tmp_path) -> None:
    """s8-fixE: without --quiet the trace-load note came before the error; a bad input shows
    its one-line error alone (the note is printed once the command succeeded)."""
    rate = ["--set", "env.rate_max_rps=1e6"]
    for argv in (["evaluate", "--policy", "heuristic:static:2", "--episodes", "1", *rate],
                 # another command's own (flag) error, after a rate that loads
                 ["evaluate", "--policy", "heuristic:static:2", "--window-s", "3", "--set",
                  "env.rate_min_rps=1", "--set", "env.rate_max_rps=2"],
                 ["tune", "--policy", "heuristic:load", "--replace", "--out",
                  str(tmp_path / "t.yaml"), *rate]):
        rc, _, err = run(capsys, *argv)
        one_line_error(rc, err, "dynosim: error:")
        assert "TRACE_LOAD" not in err, err


# -- 8. simulate on an env scenario: --help says it replays the rate curve ----------------------

def test_simulate_help_says_an_env_scenario_replays_its_rate_curve(capsys) -> None:
    rc, out, _ = run(capsys, "simulate", "--help")
    text = " ".join(out.split())
    assert rc == 0
    assert "replays the rate curve of the episode env.reset(seed=SEED) draws" in text
    assert "not the environment's own requests" in text
    readme = (__import__("pathlib").Path(__file__).resolve().parents[1] / "README.md")
    assert "so the requests are not the environment's own" in " ".join(
        readme.read_text().split())


# -- 9. search fronts redrawn from trials.csv ---------------------------------------------------

def test_replot_search_front_redraws_the_shipped_front(tmp_path) -> None:
    import csv
    import shutil
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    mod = load_script("replot_search_front")
    run_dir = tmp_path / "bound_tpe"
    shutil.copytree(root / "docs" / "search" / "bound_tpe", run_dir)
    (run_dir / "front.png").unlink()
    assert mod.main([str(run_dir)]) == 0
    assert (run_dir / "front.png").stat().st_size > 10_000
    # the rebuilt records give the search's own front (front.csv) and best candidate
    import json
    from dynosim.studies.search import best_record, front_rows, parse_objective
    cols = next(csv.reader(open(run_dir / "trials.csv")))
    obj = parse_objective(json.loads((run_dir / "search.json").read_text())["objective"], cols)
    records = mod.records_of(run_dir, obj)
    assert [r["trial"] for r in front_rows(records, obj)] == [
        int(r["trial"]) for r in csv.DictReader(open(run_dir / "front.csv"))]
    assert best_record(records, obj)["trial"] == 82          # best.yaml: trial 82
    (run_dir / "trials.csv").unlink()
    assert mod.main([str(run_dir)]) == 1                      # nothing to redraw from

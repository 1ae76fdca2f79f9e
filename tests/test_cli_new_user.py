"""What a new user found in the CLI on a clean clone (round 6): each test reproduces the
reported command and fails without its fix."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import assert_values_not_options
from dynosim.cli import main

TINY = "autoscale_tiny"
MOONCAKE = Path(__file__).resolve().parents[1] / "envs_configs" / "autoscale_mooncake.yaml"
RUN_TINY = str(Path(__file__).resolve().parents[1] / "envs_configs" / "tiny.yaml")


def _bad_trace_config(tmp_path: Path) -> Path:
    """autoscale_mooncake pointed at a trace whose line 3 lacks ``output_length``."""
    rows = [{"timestamp": 0, "input_length": 500 + k, "output_length": 20, "hash_ids": [k]}
            for k in range(5)]
    del rows[2]["output_length"]
    trace = tmp_path / "bad.jsonl"
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / "am_bad.yaml"
    cfg.write_text(MOONCAKE.read_text().replace("bundled:mooncake_conversation", str(trace)))
    return cfg


def test_tune_bad_trace_is_one_line_before_the_study(tmp_path: Path, capsys) -> None:
    cfg = _bad_trace_config(tmp_path)
    rc = main(["tune", "--policy", "heuristic:load", "--trials", "1", "--episodes", "1",
               "--config", str(cfg), "--out", str(tmp_path / "x.yaml")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.splitlines() == [f"dynosim: error: {tmp_path / 'bad.jsonl'}:3, field "
                                "'output_length': missing required field (alias "
                                "'output_tokens')"]
    assert not (tmp_path / "x.yaml").exists()


def test_tune_input_error_inside_a_trial_is_not_logged_by_optuna(tmp_path: Path, capsys,
                                                                 monkeypatch) -> None:
    """An InputError raised while a trial scores (not caught by the up-front check) stops
    the study without Optuna's 'Trial 0 failed' warning and traceback."""
    import agents.tune as tune_mod
    from sim.errors import InputError

    def bad_score(*args, **kwargs):
        raise InputError("broken row", field="output_length", file="t.jsonl", line=3)
    monkeypatch.setattr(tune_mod, "score", bad_score)
    rc = main(["tune", "--policy", "heuristic:load", "--trials", "3", "--episodes", "1",
               "--config", TINY, "--set", "episode_steps=2", "--out", str(tmp_path / "x.yaml")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "broken row" in err, err


def test_tune_without_out_refuses_to_replace_a_shipped_baseline(tmp_path: Path, capsys,
                                                                monkeypatch) -> None:
    """``dynosim tune --policy heuristic:load`` (default name load-tuned, default --out
    agents/tuned/load-tuned.yaml) must not silently replace the shipped baseline: one line
    naming --replace, before any trial; with --replace it writes (the README's regenerate
    command, which the shipped file records)."""
    import agents.tune as tune_mod
    from agents.heuristics import TUNED_DIR
    shipped = (TUNED_DIR / "load-tuned.yaml").read_text()
    assert "--seed 0 --replace" in shipped          # the recorded command runs as written
    fake = tmp_path / "tuned"
    fake.mkdir()
    (fake / "load-tuned.yaml").write_text(shipped)
    monkeypatch.setattr(tune_mod, "TUNED_DIR", fake)
    argv = ["tune", "--policy", "heuristic:load", "--trials", "1", "--episodes", "1",
            "--config", TINY, "--set", "episode_steps=2", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "load-tuned.yaml exists" in err and "--replace" in err
    assert (fake / "load-tuned.yaml").read_text() == shipped
    assert main(argv + ["--out", str(fake / "load-tuned.yaml")]) == 2   # --out too (s8-fixF)
    assert "flag '--out'" in capsys.readouterr().err
    assert main(argv + ["--replace"]) == 0
    written = (fake / "load-tuned.yaml").read_text()
    assert written != shipped and "--replace" in written
    # a new name is written without --replace
    assert main(argv + ["--name", "mine"]) == 0 and (fake / "mine.yaml").exists()


def test_model_without_run_record_says_which_interface_it_is_scored_with(tmp_path: Path,
                                                                         capsys) -> None:
    """Following the missing-record error's advice (--set action.type=target) scores the
    model with the evaluation config's interface: one line on stderr says so, and the JSON
    records it; the error's advice names the scale-down window and the features too."""
    import shutil

    from agents.evaluate import PRETRAINED_DIR
    model = tmp_path / "copied_ppo.zip"
    shutil.copy(PRETRAINED_DIR / "autoscaler.zip", model)
    base = ["evaluate", "--policy", str(model), "--episodes", "1", "--set", "episode_steps=2"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "action.scale_down_window_s" in err and "observation.features" in err
    assert main(base + ["--set", "action.type=target", "--json"]) == 0
    out, err = capsys.readouterr()
    note = (f"no run record for {model}; scoring with the evaluation config's interface "
            '(action {"max_step": 2, "reversal_cooldown_s": 0.0, "scale_down_window_s": '
            '0.0, "type": "target"}, '
            "observation stack 1 of the default features, interval_s 5)")
    assert err.strip().splitlines() == [f"dynosim: {note}"]
    res = json.loads(out)
    assert res["policy_interface"] == {} and res["interface_note"] == note
    # with its run record: no note
    shutil.copy(PRETRAINED_DIR / "autoscaler.json", tmp_path / "copied_ppo.json")
    assert main(base + ["--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["interface_note"] == "" and "no run record" not in err


@pytest.mark.parametrize("extra, flag, words", [
    (["--policies", "heuristic:static:2,pretrained:nope"], "--policies",
     "unknown pretrained policy 'nope'"),
    (["--policies", "heuristic:static:2,heuristic:kv"], "--policies",
     "heuristic:kv acts on DynoSimRouting-v0"),
    (["--policies", "heuristic:static:2", "--reference", "oracle:nope"], "--reference",
     "unknown oracle"),
    (["--env", "DynoSimRouting-v0", "--policies", "heuristic:kv,heuristic:load"],
     "--policies", "heuristic:load acts on DynoSim-v0"),
    (["--policies", "heuristic:static:2,heuristic:static:100"], "--policies",
     "heuristic:static:100 asks for more workers than the env's GPU budget holds"),
])
def test_leaderboard_checks_every_entry_before_evaluating_any(tmp_path: Path, capsys,
                                                              monkeypatch, extra, flag,
                                                              words) -> None:
    import agents.leaderboard as lb

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated a policy before checking every entry")
    monkeypatch.setattr(lb, "evaluate", no_evaluation)
    rc = main(["evaluate", "--leaderboard", str(tmp_path / "lb"), "--episodes", "1", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert f"flag '{flag}'" in err and words in err, err
    assert not (tmp_path / "lb").exists()


def test_config_schema_markdown_rows_have_seven_cells_and_defaults(capsys) -> None:
    """Every table row of ``config schema --format markdown`` has the header's 7 cells (a
    '|' inside a cell, as in ``int | null`` or ``isl|osl``, is escaped), and the planner and
    workload rows show a default, as the command's help promises."""
    import re
    assert main(["config", "schema", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("|")]
    assert len(rows) > 150
    cells_of = {}
    for line in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert len(cells) == 7, line
        cells_of[cells[0].strip("`").replace("\\|", "|")] = cells
    assert cells_of["engine.max_model_len"][1] == "int \\| null"
    assert cells_of["planner.load_scaling_down_sensitivity"][1:3] == ["int", "80"]
    assert cells_of["workload.trace_block_size"][1:3] == ["int", "512"]
    assert cells_of["workload.isl|osl.sigma"][2] == "required"
    for name, cells in cells_of.items():
        if name.startswith(("planner.", "workload.", "--")):
            assert cells[1] and cells[2], (name, cells)


@pytest.mark.parametrize("argv, expected", [
    (["simulate", "--config", RUN_TINY, "--quiet", "--planner", "load", "--planner-config-json",
      '{"min_endpoint": -1e1}'],
     "dynosim: error: argument --planner-config-json: key 'min_endpoint': must be >= 1, got "
     "-10.0 (allowed [1, 4096])"),
    (["simulate", "--config", RUN_TINY, "--quiet", "--planner", "load", "--planner-config-json",
      '{"load_scaling_down_sensitivity": 1e3}'],
     "dynosim: error: argument --planner-config-json: key 'load_scaling_down_sensitivity': "
     "must be <= 100, got 1000.0 (allowed [0, 100])"),
    (["evaluate", "--policy", "heuristic:load", "--trace", "bundled:nope"],
     "dynosim: error: flag '--trace': unknown bundled trace 'nope'; expected one of "
     "bundled:mooncake_conversation, bundled:azure_conversation (field 'workload.path')"),
    (["evaluate", "--policy", "heuristic:load", "--episodes", "1", "--set",
      "env.interval_s=-1"],
     "dynosim: error: flag '--set env.interval_s': must be > 0, got -1.0"),
    (["tune", "--policy", "heuristic:load", "--set", "reward={mode: x}", "--out", "{tmp}"],
     "dynosim: error: flag '--set reward': unknown value 'x'; expected one of per_request, "
     "interval, lagrangian (field 'env.reward.mode')"),
])
def test_errors_name_the_flag_that_gave_the_value(argv, expected, capsys, tmp_path) -> None:
    argv = [a.replace("{tmp}", str(tmp_path / "t.yaml")) for a in argv]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [expected]


def test_a_set_that_breaks_a_cross_field_check_is_blamed_not_the_yaml(capsys) -> None:
    """``--set env.min_endpoint=4`` against autoscale_default's 2 initial workers: the
    error names the --set (the config's own line stays as where the check looked)."""
    from pathlib import Path
    yaml_path = Path(__file__).resolve().parents[1] / "envs_configs" / "autoscale_default.yaml"
    for argv in (["evaluate", "--policy", "heuristic:load", "--episodes", "1"],
                 ["train", "--algo", "ppo", "--out", "unused", "--timesteps", "1"]):
        assert main([*argv, "--set", "reward.gpu_weight=0.1", "--set",
                     "env.min_endpoint=4"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == ("dynosim: error: flag '--set env.min_endpoint': 2 initial workers is "
                       "outside [min_endpoint 4, budget 8 workers] "
                       f"({yaml_path}:20, field 'cluster.num_workers')"), err
    assert not Path("unused").exists()
    # a bad value in an override's own field names that override
    assert main(["evaluate", "--policy", "heuristic:load", "--episodes", "1", "--config",
                 str(yaml_path), "--set", "env.min_endpoint=1", "--set",
                 "env.initial_workers=99"]) == 2
    assert "flag '--set env.initial_workers'" in capsys.readouterr().err


def _value_flags(parser, path=()):
    import argparse
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _value_flags(sub, path + (name,))
        elif isinstance(action, (argparse._StoreAction, argparse._AppendAction)) \
                and action.nargs is None and action.option_strings:
            yield path, action.option_strings[0]


def test_negative_comma_lists_are_values_not_options(capsys) -> None:
    """``--rungs -600,1200`` reaches --rungs' own check (argparse took it for an option:
    "expected one argument"), as ``--rungs=-600,1200`` did; so for every flag."""
    from dynosim.cli import build_parser
    flags = list(_value_flags(build_parser()))
    assert (("search",), "--rungs") in flags
    assert_values_not_options(capsys, flags, ("-600,1200", "-1e1,2", "-inf, 3"))
    space = Path(__file__).resolve().parents[1] / "envs_configs" / "search" / \
        "deployment_space.yaml"
    assert main(["search", "--space", str(space), "--objective", "max throughput",
                 "--trials", "1", "--out", "unused", "--rungs", "-1e1,2"]) == 2
    assert capsys.readouterr().err.strip() == ("dynosim: error: argument --rungs: rungs must "
                                               "be increasing positive seconds, got '-1e1,2'")


@given(st.lists(st.floats(allow_nan=False, allow_infinity=True), min_size=1, max_size=4),
       st.sampled_from([",", ", "]))
def test_negative_number_rule_matches_comma_lists_and_no_flag(xs, sep) -> None:
    from dynosim.options import NEGATIVE_NUMBER
    text = sep.join(repr(x) for x in [-abs(xs[0]) or -1.0, *xs[1:]])
    assert NEGATIVE_NUMBER.match(text), text
    assert not NEGATIVE_NUMBER.match("--" + text.lstrip("-"))
    assert not NEGATIVE_NUMBER.match("-e1") and not NEGATIVE_NUMBER.match("-600,x")


def test_static_count_reads_like_integer_flags_and_text_is_singular(capsys) -> None:
    """``heuristic:static:4e0`` is 4 workers (numeric flags take 4e0), 2.5 is refused; one
    scaling event is "1 scaling event"."""
    assert main(["evaluate", "--policy", "heuristic:static:4e0", "--episodes", "1", "--set",
                 "episode_steps=3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("heuristic:static:4e0: ") and "1 scaling event," in out
    assert "1 episode)" in out
    for bad in ("2.5", "x", "0"):
        assert main(["evaluate", "--policy", f"heuristic:static:{bad}", "--episodes",
                     "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == ("dynosim: error: flag '--policy': heuristic:static:N needs a whole "
                       f"worker count N >= 1 (4 or 4e0), got '{bad}'"), err


@pytest.mark.parametrize("flag, value", [("--policies", "heuristic:static:2"),
                                         ("--reference", "heuristic:static:2")])
def test_leaderboard_only_flags_without_leaderboard_are_refused(flag, value, capsys) -> None:
    assert main(["evaluate", "--policy", "heuristic:load", "--episodes", "1", flag,
                 value]) == 2
    assert capsys.readouterr().err.strip() == (
        f"dynosim: error: flag '{flag}': applies to --leaderboard only; with --policy it "
        "would be ignored")


def test_help_says_what_search_trace_and_checkpoint_every_take(capsys) -> None:
    for argv, needles in ((["search", "--help"], ["Azure .csv", "Mooncake .jsonl"]),
                          (["sweep", "interval", "--help"], ["Azure .csv", "Mooncake .jsonl"]),
                          (["sweep", "cold-start", "--help"], ["Azure .csv"]),
                          (["train", "--help"], ["select_checkpoint", "12k-step"])):
        assert main(argv) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert all(n in out for n in needles), (argv, out)
        assert "mooncake trace (default" not in out


def test_search_front_draws_points_above_the_clip_at_the_clip(tmp_path: Path,
                                                              monkeypatch) -> None:
    """A --compare point above the y clip (the throughput planner's p90 112 s against a
    12,000 ms clip) had a legend entry and no visible marker: it is drawn at the clip, with
    an up arrow saying so."""
    from matplotlib.figure import Figure

    from dynosim.studies import search
    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: saved.append(self))
    obj = search.Objective("totals.gpu_hours", False, [("latency_ms.ttft.p90", "<=", 3000.0)])
    records = [{"trial": k, "status": "complete", "violation": 0.0, "score": g,
                "values": {"totals.gpu_hours": g, "latency_ms.ttft.p90": p}, "params": {}}
               for k, (g, p) in enumerate([(10.0, 2500.0), (12.0, 2000.0)])]
    compare = [{"kind": "throughput", "gpu_hours": 7.4, "p90_ttft_ms": 112023.0},
               {"kind": "static", "gpu_hours": 9.0, "p90_ttft_ms": 4000.0}]
    search.plot_front(records, obj, tmp_path / "front.png", "t", compare)
    ax = saved[0].axes[0]
    top = ax.get_ylim()[1]
    assert top == 12000.0
    planner = next(c for c in ax.collections if c.get_label() == "sweep: throughput planner")
    (x, y), = planner.get_offsets()
    assert x == 7.4 and 3000.0 < y < top                       # inside the axes, at the clip
    arrows = next(c for c in ax.collections if c.get_label().startswith("above 12000"))
    assert [p[0] for p in arrows.get_offsets()] == [7.4]


def test_readme_states_the_trace_families_peak_rates() -> None:
    """The README's family description gives mooncake_mod's and azure_mod's rescaled peaks
    (not the synthetic families' 6-9 req/s): the stated ranges are rate_min/max_rps x
    TRACE_LOAD, and an episode's peak_rps falls in them."""
    import re

    import gymnasium as gym

    import dynosim_gym  # noqa: F401
    from dynosim_gym.scenarios import TRACE_LOAD
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    env = gym.make("DynoSim-v0")
    cfg = env.unwrapped.cfg.env
    for fam, split in (("mooncake_mod", "train"), ("azure_mod", "eval")):
        m = re.search(rf"`{fam}` (?:peaks )?at\s+([\d.]+)-([\d.]+) req/s", text)
        assert m, fam
        lo, hi = float(m.group(1)), float(m.group(2))
        assert lo == pytest.approx(round(cfg.rate_min_rps * TRACE_LOAD[fam], 2), abs=0.01)
        assert hi == pytest.approx(round(cfg.rate_max_rps * TRACE_LOAD[fam], 2), abs=0.01)
        _, info = env.reset(seed=0, options={"scenario": fam, "split": split})
        assert lo <= info["episode_setup"]["peak_rps"] <= hi
    env.close()


def test_train_without_env_refuses_a_routing_scenario(tmp_path: Path, capsys) -> None:
    """``train --config routing_default.yaml --algo ppo`` trained the autoscaler on the
    routing scenario silently: without --env it is a one-line error naming --env."""
    from agents.train import routing_scenario
    routing = Path(__file__).resolve().parents[1] / "envs_configs" / "routing_default.yaml"
    assert routing_scenario(str(routing)) and routing_scenario("routing_families")
    assert not routing_scenario(TINY) and not routing_scenario("autoscale_default")
    assert main(["train", "--config", str(routing), "--algo", "ppo", "--out",
                 str(tmp_path / "run"), "--timesteps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dynosim: error: flag '--env': ") and "DynoSimRouting-v0" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("key", ["episode_steps", "env.episode_steps"])
def test_trace_evaluation_refuses_an_episode_steps_override(tmp_path: Path, capsys,
                                                            key: str) -> None:
    """With --trace the window plan sets env.episode_steps; a --set of it was silently
    replaced, so the run scored other episodes than asked for."""
    rc = main(["evaluate", "--policy", "heuristic:static:2", "--config", str(MOONCAKE),
               "--trace", "bundled:mooncake_conversation", "--window-s", "600",
               "--windows", "1", "--set", f"{key}=10", "--json"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.splitlines() == [f"dynosim: error: flag '--set {key}': with --trace the "
                                "episode length is --window-s (the window plan sets "
                                "env.episode_steps); remove this --set"], err


@pytest.mark.parametrize("argv", [
    ["evaluate", "--policy", "heuristic:load", "--episodes", "1"],
    ["tune", "--policy", "heuristic:load", "--trials", "1", "--episodes", "1"],
    ["train", "--algo", "ppo", "--timesteps", "64"],
])
def test_env_config_with_a_missing_trace_names_its_file_and_line(tmp_path: Path, capsys,
                                                                  argv) -> None:
    """An env config whose workload.path is missing: the YAML's file and line, as simulate
    says (evaluate, tune and train said 'config, field ...': the env re-read it as a dict)."""
    cfg = tmp_path / "bad_path.yaml"
    lines = MOONCAKE.read_text().replace("bundled:mooncake_conversation",
                                         str(tmp_path / "nope.jsonl"))
    cfg.write_text(lines)
    line = next(i for i, t in enumerate(lines.splitlines(), 1) if "nope.jsonl" in t)
    out = ["--out", str(tmp_path / ("x.yaml" if argv[0] == "tune" else "out"))] \
        if argv[0] != "evaluate" else []
    rc = main([*argv, "--config", str(cfg), *out])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.splitlines() == [f"dynosim: error: {cfg}:{line}, field 'workload.path': trace "
                                f"file not found: {tmp_path / 'nope.jsonl'}"], err


@pytest.mark.parametrize("argv, message", [
    (["simulate", "--planner", "load", "--planner-config-json", "/nonexistent/knobs.json",
      "--max-sim-time-s", "1"],
     "argument --planner-config-json: no such JSON file: /nonexistent/knobs.json"),
    (["simulate", "--planner", "load", "--planner-config-json", "{bad",
      "--max-sim-time-s", "1"],
     "argument --planner-config-json: not a JSON object or JSON file: Expecting property "
     "name enclosed in double quotes (char 1)"),
    (["tune", "--policy", "heuristic:load", "--trials", "1", "--episodes", "1", "--name",
      "../tuned/load-tuned"],
     "flag '--name': a baseline name is letters, digits, '_', '-' and '.' (it names "
     "heuristic:NAME and agents/tuned/NAME.yaml), got '../tuned/load-tuned'"),
])
def test_file_and_name_arguments_say_what_is_wrong(argv, message, capsys) -> None:
    """A missing --planner-config-json file was 'not a JSON object ... (char 0)'; a tune
    --name with a path in it wrote outside agents/tuned (re-check)."""
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"dynosim: error: {message}"

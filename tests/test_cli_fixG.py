"""Round-8 re-check findings (s8-fixG): each test fails without its fix."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import one_line_error, run_cli as run

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "envs_configs" / "autoscale_tiny.yaml")


# -- 1. evaluate --leaderboard applies --set, --split, --out and --trace ----------------------

def test_leaderboard_applies_set_split_and_out(capsys, tmp_path: Path) -> None:
    out = tmp_path / "lb.json"
    rc, stdout, _ = run(capsys, "evaluate", "--leaderboard", str(tmp_path / "lb"),
                        "--policies", "heuristic:static", "--config", TINY, "--episodes", "1",
                        "--set", "env.initial_workers=3", "--split", "train",
                        "--out", str(out), "--quiet")
    assert rc == 0
    assert "heuristic:static (holds 3 workers)" in stdout
    assert "(split=train, seed 0)" in stdout and "held-out" not in stdout
    doc = json.loads(out.read_text())
    assert [r["policy"] for r in doc] == ["heuristic:load", "heuristic:static"]
    for r in doc:
        assert r["env_config"]["env"]["initial_workers"] == 3
        assert r["episodes_plan"]["split"] == "train"
    recorded = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert recorded[1]["env_config"]["env"]["initial_workers"] == 3


def test_leaderboard_refuses_an_unknown_set_key(capsys, tmp_path: Path) -> None:
    rc, _, err = run(capsys, "evaluate", "--leaderboard", str(tmp_path / "lb"),
                     "--policies", "heuristic:static", "--config", TINY, "--episodes", "1",
                     "--set", "env.bogus=1", "--quiet")
    one_line_error(rc, err, "--set env.bogus", "unknown key")
    assert not (tmp_path / "lb" / "leaderboard.md").exists()


def test_leaderboard_scores_trace_windows(capsys, tmp_path: Path) -> None:
    rc, stdout, _ = run(capsys, "evaluate", "--leaderboard", str(tmp_path / "lb"),
                        "--policies", "heuristic:static", "--trace",
                        "bundled:mooncake_conversation", "--window-s", "60", "--windows", "1",
                        "--quiet")
    assert rc == 0
    assert "1 window of bundled:mooncake_conversation (60 s each)" in stdout
    doc = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert all(r["episodes_plan"]["trace"] == "bundled:mooncake_conversation" for r in doc)


# -- 2. train --env X: a bad trace line is its own error, not a foreign-scenario one ----------

@pytest.mark.parametrize("env_id, config, sets", [
    ("DynoSim-v0", "autoscale_mooncake", []),
    ("DynoSimRouting-v0", "routing_families", ["--set", "workload.kind=mooncake"])])
def test_train_bad_trace_line_is_not_blamed_on_env(capsys, tmp_path: Path, env_id, config,
                                                   sets) -> None:
    bad = tmp_path / "BAD.jsonl"
    bad.write_text('{"timestamp": 0, "input_length": 10, "output_length": 5, '
                   '"hash_ids": [1]}\n{"bad json\n')
    rc, _, err = run(capsys, "train", "--algo", "ppo", "--env", env_id, "--config", config,
                     *sets, "--set", f"workload.path={bad}", "--timesteps", "8",
                     "--out", str(tmp_path / "run"), "--quiet")
    one_line_error(rc, err, f"{bad}:2", "invalid JSON")
    assert "--env" not in err and "does not fit" not in err, err


# -- 3. RLlib: a Lagrangian reward is refused (its dual update is an SB3 callback) -------------

def test_rllib_refuses_a_lagrangian_reward_before_ray_starts(capsys, tmp_path: Path,
                                                             monkeypatch) -> None:
    from dynosim import executors

    def no_ray(*a, **k):
        raise AssertionError("Ray was started before the reward check")
    monkeypatch.setattr(executors, "connect", no_ray)
    rc, _, err = run(capsys, "train", "--algo", "ppo", "--framework", "rllib", "--config",
                     TINY, "--set", "env.reward.mode=lagrangian", "--timesteps", "64",
                     "--out", str(tmp_path / "r"))
    one_line_error(rc, err, "flag '--set env.reward.mode'", "--framework sb3")
    assert not (tmp_path / "r").exists()
    cfg = tmp_path / "lag.yaml"
    cfg.write_text(Path(TINY).read_text() + "  reward: {mode: lagrangian}\n")
    rc, _, err = run(capsys, "train", "--algo", "ppo", "--framework", "rllib", "--config",
                     str(cfg), "--timesteps", "64", "--out", str(tmp_path / "r"))
    one_line_error(rc, err, "lag.yaml:", "field 'env.reward.mode'", "--framework sb3")


# -- 4. scripts: bad flags are one line naming the flag, exit 2 (no traceback) ----------------

def _script(capsys, name: str, *argv: str) -> tuple[int, str]:
    from conftest import load_script
    try:
        rc = load_script(name).main(list(argv))
    except SystemExit as exc:       # argparse's usage errors (the shared Parser)
        rc = exc.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("name, argv, needles", [
    ("plot_heldout_front", ["--out", "x.txt"], ["--out", "unsupported plot format 'txt'"]),
    ("plot_learned", ["--out", "x.txt"], ["--out", "unsupported plot format 'txt'"]),
    ("replot_leaderboard", ["/nonexistent"], ["directory", "leaderboard.json not found"]),
    ("teacher_segments", ["--teacher", "oracle:schedule", "--seeds", "abc"],
     ["--seeds", "LO-HI"]),
    ("scenario_check", ["--episodes", "0"], ["--episodes", ">= 1"]),
    ("scenario_check", ["--families", "bogus"], ["--families", "'bogus'"]),
    ("calibrate_trace_load", ["--family", "bogus"], ["--family", "'bogus'"]),
    ("calibrate_trace_load", ["--episodes", "0"], ["--episodes", ">= 1"]),
])
def test_script_bad_flag_is_one_line(capsys, name, argv, needles) -> None:
    rc, err = _script(capsys, name, *argv)
    one_line_error(rc, err, *needles)


def test_residual_base_checks_out_before_any_episode(capsys, tmp_path: Path,
                                                     monkeypatch) -> None:
    import agents.evaluate
    monkeypatch.setattr(agents.evaluate, "run_episode",
                        lambda *a, **k: pytest.fail("an episode ran before --out was checked"))
    (tmp_path / "afile").write_text("")
    rc, err = _script(capsys, "residual_base", "--episodes", "1", "--out",
                      str(tmp_path / "afile" / "x.json"))
    one_line_error(rc, err, "flag '--out'", "is a file, not a directory")


# -- 5. bc_warm_start range errors name the recipe file and the full field ---------------------

@pytest.mark.parametrize("bc, needle", [
    ("{teacher: base, label_smoothing: 1.5}",
     "field 'DynoSim-v0.bc_warm_start.label_smoothing': expected a number in [0, 1), got 1.5"),
    ("{teacher: 'oracle:schedule-greedy', dagger: {rounds: 0}}",
     "field 'DynoSim-v0.bc_warm_start.dagger': expected {rounds: N >= 1"),
])
def test_bc_warm_start_range_errors_name_file_and_field(capsys, tmp_path: Path, bc,
                                                        needle) -> None:
    hp = tmp_path / "h3.yml"
    hp.write_text(f"DynoSim-v0:\n  policy: MlpPolicy\n  n_steps: 8\n  batch_size: 8\n"
                  f"  env_kwargs: {{action: {{type: residual}}}}\n  bc_warm_start: {bc}\n")
    rc, _, err = run(capsys, "train", "--algo", "ppo", "--hyperparams", str(hp), "--config",
                     TINY, "--timesteps", "8", "--out", str(tmp_path / "run"), "--quiet")
    one_line_error(rc, err, f"{hp}, {needle}")


# -- 6. hints point at what works ----------------------------------------------------------

@pytest.mark.parametrize("config, hint", [("autoscale_disagg", "remove it"),
                                          ("autoscale_tiny", "remove it or use type: residual")])
def test_base_key_hint_does_not_suggest_residual_on_disagg(config, hint) -> None:
    from dynosim_gym.config import load_env_config
    from sim.errors import InputError
    with pytest.raises(InputError) as exc:
        load_env_config(config, **{"env.action.base_before_first_tick": "hold"})
    assert str(exc.value).endswith(hint), exc.value


def test_plot_learned_takes_the_config_its_hint_names(capsys, tmp_path: Path) -> None:
    hp = tmp_path / "h.yml"
    hp.write_text("DynoSim-v0:\n  policy: MlpPolicy\n  n_steps: 8\n  batch_size: 8\n")
    rc, _, err = run(capsys, "train", "--algo", "ppo", "--hyperparams", str(hp), "--config",
                     "autoscale_disagg", "--timesteps", "8", "--out", str(tmp_path / "d"),
                     "--quiet")
    assert rc == 0, err
    png = tmp_path / "p.png"
    rc, err = _script(capsys, "plot_learned", "--policy", str(tmp_path / "d"), "--compare", "",
                      "--out", str(png))
    one_line_error(rc, err, "--config autoscale_disagg scores it there")
    rc, err = _script(capsys, "plot_learned", "--policy", str(tmp_path / "d"), "--compare", "",
                      "--config", "autoscale_disagg", "--out", str(png))
    assert rc == 0 and png.stat().st_size > 0, err


def test_evaluate_names_every_set_key_that_breaks_the_fit(capsys) -> None:
    rc, _, err = run(capsys, "evaluate", "--policy", "pretrained:autoscaler", "--episodes", "1",
                     "--set", "env.action.type=delta", "--set", "env.observation.stack=2",
                     "--set", "env.initial_workers=2", "--quiet")
    one_line_error(rc, err, "flag '--set env.action.type, env.observation.stack'",
                   "--set env.action.type, env.observation.stack cause it (the model fits "
                   "without them)")
    assert "initial_workers" not in err


# -- 7. a --set value refused after the config loads names the flag, in scripts too ------------

def test_set_errors_name_the_flag(capsys) -> None:
    rc, err = _script(capsys, "residual_base", "--episodes", "1", "--set",
                      "env.action.base_interval_s=12")
    one_line_error(rc, err, "flag '--set env.action.base_interval_s'", "multiple of")
    assert "overrides" not in err
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:kv", "--config",
                     "routing_default", "--set", "env.planner.load_scaling_down_sensitivity=20",
                     "--episodes", "1", "--quiet")
    one_line_error(rc, err, "flag '--set env.planner.load_scaling_down_sensitivity'",
                   "does not apply to the routing env")
    assert "overrides" not in err


# -- 8. help text: each example command on its own lines, after a blank line -----------------

@pytest.mark.parametrize("path", sorted([*REPO.glob("scripts/*.py"), *REPO.glob("bench/*.py")]),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_docstring_examples_keep_their_lines(path: Path) -> None:
    import ast
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if not line.lstrip().startswith(("python ", ".venv/bin/", "[--", "--")):
            continue
        # a `\` continuation not escaped in the docstring joins two lines with a gap
        assert not re.search(r"\S {5,}\[", line), (path.name, line)
        prev = lines[i - 1] if i else ""
        if line.startswith("    python ") and prev.strip() and not prev.startswith(" "):
            pytest.fail(f"{path.name}: example {line.strip()!r} runs on from the prose "
                        f"{prev.strip()!r} (add a blank line)")


def test_env_config_unknown_top_key_lists_env(capsys, tmp_path: Path) -> None:
    run_json = tmp_path / "run.json"           # a run record given as --config
    run_json.write_text(json.dumps({"algo": "ppo", "env_config": {}}, indent=1))
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:load", "--config",
                     str(run_json), "--episodes", "1", "--quiet")
    one_line_error(rc, err, f"{run_json}:2", "unknown key 'algo'", "disagg, env")


def test_interrupted_run_records_interrupted(tmp_path: Path, monkeypatch) -> None:
    from stable_baselines3 import PPO

    from agents.algos import failure_text
    from agents.train import train

    def ctrl_c(self, *a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(PPO, "learn", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train("ppo", "DynoSim-v0", config=TINY, timesteps=8, out=tmp_path / "run", n_envs=1,
              quiet=True)
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert rec["status"] == "failed" and rec["error"] == "interrupted (KeyboardInterrupt)"
    assert failure_text(ValueError("bad\nmore")) == "ValueError: bad"
    assert failure_text(RuntimeError()) == "RuntimeError"

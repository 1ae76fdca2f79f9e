"""What a new user meets in the first hour (the findings of the new-user trials): one
readable sentence per training outcome, where a cached teacher schedule came from, a
TensorBoard command that runs as written, negative numbers in any form reaching each flag's
own range check, actionable errors for a model without its run record and for an
out-of-budget ``heuristic:static:N``, a headline that names an env scenario, computed
defaults in ``dynosim config schema``, no empty ``--out`` directory left by a failed
command, and the benchmark script reading YAML as everything else does."""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

import dynosim_gym  # noqa: F401  (registers the env ids)
from conftest import assert_values_not_options, load_script
from dynosim.cli import build_parser, main

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "envs_configs" / "autoscale_tiny.yaml")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, *needles: str) -> str:
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dynosim: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# -- 1. select_checkpoint: one sentence ---------------------------------------------------------

@pytest.mark.parametrize("timesteps,sla", [(0, 0.81), (0, 0.42), (3072, 0.90), (6144, 0.10)])
def test_checkpoint_selection_is_one_readable_sentence(timesteps: int, sla: float) -> None:
    from agents.train import _selection_line
    line = _selection_line({"timesteps": timesteps, "sla_attainment": sla,
                            "gpu_hours_per_episode": 2.5},
                           {"sla_target": 0.8, "seeds": [1, 2, 3, 4]})
    assert ") (" not in line and line.count("(") <= 1       # no parentheticals back to back
    assert line.startswith(f"dynosim: select_checkpoint kept the checkpoint at {timesteps:,} "
                           "timesteps")
    assert f"{sla:.1%} SLA at 2.50 GPU-h per episode on its 4 training-split" in line
    assert ("the fewest GPU-hours at SLA >= 80%" if sla >= 0.8
            else "the highest attainment, as none reached the SLA target 80%") in line
    assert ("behaviour-cloned" in line) == (timesteps == 0)
    assert line.endswith("; model.zip is that checkpoint")


# -- 2. a cached teacher schedule says so ------------------------------------------------------

def test_teacher_line_says_the_schedule_came_from_the_cache(tmp_path: Path, monkeypatch,
                                                            capsys) -> None:
    import gymnasium as gym

    import agents.oracle as oracle
    from agents.router_train import schedule_cache_dir, teacher_samples
    monkeypatch.setenv("DYNOSIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(oracle, "greedy_schedule",          # the plan itself is not the point
                        lambda env, opts, seed, lo, hi, t, seg, iv, steps:
                        {"targets": [2] * steps})
    env = gym.make("DynoSim-v0", config=TINY, **{"env.action.type": "target"})
    teacher_samples(env, "oracle:schedule-greedy", [7], quiet=False)
    cold = capsys.readouterr().err
    [path] = schedule_cache_dir().glob("*.json")
    assert "teacher episode 1/1 (seed 7): oracle:schedule-greedy schedule planned in " in cold
    assert f"cached in {path}" in cold
    teacher_samples(env, "oracle:schedule-greedy", [7], quiet=False)
    warm = capsys.readouterr().err
    assert f"oracle:schedule-greedy schedule read from the cache ({path})" in warm
    assert "ready in" not in warm and " s," not in warm        # no "0.0 s" for a file read


# -- 3. the TensorBoard command runs as written ------------------------------------------------

def test_tensorboard_hint_is_a_command_that_runs_as_written(monkeypatch) -> None:
    import tomllib

    from agents.cli import tensorboard_hint
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("tensorboard") for d in deps)   # the README's install has it
    hint = tensorboard_hint("runs/x/tb")
    prefix, _, command = hint.partition(": ")
    assert prefix == "training curves"
    exe, *rest = command.split()
    assert rest == ["--logdir", "runs/x/tb"]
    assert Path(exe).is_file()                        # this environment's own script
    assert Path(exe).absolute().parent == Path(sys.executable).absolute().parent
    # without it: what to install, not a command that fails
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    assert "pip install tensorboard" in tensorboard_hint("runs/x/tb")


# -- 4. negative numbers in exponent form reach the flag's own check ---------------------------

def _typed_flags(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(subcommand path, flag) of every option with an argparse ``type`` that takes a
    number, over every subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _typed_flags(sub, path + (name,))
        elif action.option_strings and action.type is not None and action.nargs is None:
            try:
                action.type("1")
            except (argparse.ArgumentTypeError, ValueError, TypeError):
                continue
            yield path, action.option_strings[0]


def test_negative_numbers_in_any_form_are_values_not_options(capsys) -> None:
    """argparse takes "-1e1" for an option ("expected one argument"); every numeric flag of
    every subcommand must instead hand it to its own range check (one Parser rule)."""
    flags = list(_typed_flags(build_parser()))
    assert len(flags) > 60 and ((("simulate",), "--num-workers") in flags)
    assert_values_not_options(capsys, flags, ("-1e1", "-2.5E+3", "-inf"))
    rc, _, err = run(capsys, "simulate", "--num-workers", "-1e1")
    one_line_error(rc, err, "argument --num-workers: must be >= 1, got -10")
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:load", "--episodes", "-1e1")
    one_line_error(rc, err, "argument --episodes: must be >= 1, got -10")


# -- 5. a model zip without its run record -----------------------------------------------------

def test_model_without_its_run_record_says_what_to_do(tmp_path: Path, capsys) -> None:
    from agents.evaluate import PRETRAINED_DIR
    shutil.copy(PRETRAINED_DIR / "autoscaler.zip", tmp_path / "autoscaler.zip")
    rc, _, err = run(capsys, "evaluate", "--policy", str(tmp_path / "autoscaler.zip"),
                     "--episodes", "1")
    one_line_error(rc, err, "the model acts in Discrete(", "has no run record",
                   "autoscaler.json beside it", "--config", "--set")
    # a router copied alone: the advice names --env, and following it scores the router
    shutil.copy(PRETRAINED_DIR / "router.zip", tmp_path / "router.zip")
    rc, _, err = run(capsys, "evaluate", "--policy", str(tmp_path / "router.zip"),
                     "--episodes", "1", "--config", "routing_families")
    one_line_error(rc, err, "has no run record", "--env DynoSimRouting-v0")
    rc, _, err = run(capsys, "evaluate", "--policy", str(tmp_path / "router.zip"),
                     "--episodes", "1", "--env", "DynoSimRouting-v0", "--set",
                     "episode_steps=4", "--json")
    assert rc == 0, err
    # with the record beside it, the same zip loads (its interface comes from the record)
    from agents.evaluate import resolve_policy
    shutil.copy(PRETRAINED_DIR / "autoscaler.json", tmp_path / "autoscaler.json")
    assert resolve_policy(str(tmp_path / "autoscaler.zip")).interface()


# -- 6. the headline names the scenario --------------------------------------------------------

def test_headline_names_the_env_scenario_and_synthetic_workloads(capsys) -> None:
    rc, out, _ = run(capsys, "simulate", "--config", TINY, "--max-sim-time-s", "1", "--quiet")
    head = out.splitlines()[0]
    assert rc == 0 and "synthetic (synthetic" not in head
    assert head.startswith("dynosim autoscale_tiny: ramp load of env.reset(seed=0) (synthetic, "
                           "nhpp arrivals) on 1 worker")
    rc, out, _ = run(capsys, "simulate", "--config",
                     str(REPO / "envs_configs" / "synthetic_poisson.yaml"),
                     "--max-sim-time-s", "1", "--quiet")
    assert out.startswith("dynosim synthetic workload (poisson arrivals, 36,000 requests) on ")


# -- 7. computed defaults in the schema --------------------------------------------------------

def test_schema_shows_computed_defaults_with_dynosim_v0_values(capsys) -> None:
    import gymnasium as gym
    rc, out, _ = run(capsys, "config", "schema", "--format", "json")
    by = {r["field"]: r["default"] for r in json.loads(out)["env"]}
    u = gym.make("DynoSim-v0").unwrapped
    assert by["env.reward.gpu_weight"] == ("computed: 0.5 / (env.interval_s x "
                                           f"env.max_gpu_budget) (DynoSim-v0: {u.w_gpu:.6g})")
    assert by["env.reward.request_scale"] == ("computed: env.rate_max_rps x env.interval_s "
                                              f"(DynoSim-v0: {u.request_scale:.6g})")
    assert by["env.initial_workers"].startswith("computed: cluster.num_workers")
    rc, out, _ = run(capsys, "config", "schema")
    assert "env.reward.gpu_weight" in out and "= computed: 0.5 / (" in out


# -- 8. heuristic:static:N beyond the budget ---------------------------------------------------

def test_static_count_outside_the_env_bounds_is_a_one_line_error(capsys) -> None:
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:static:100", "--config", TINY,
                     "--episodes", "1")
    one_line_error(rc, err, "heuristic:static:100", "env.max_gpu_budget 8",
                   "2 GPUs per worker", "at most 4")
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:static:1", "--config", TINY,
                     "--episodes", "1", "--set", "min_endpoint=2", "--set", "initial_workers=2")
    one_line_error(rc, err, "env.min_endpoint is 2")
    rc, out, err = run(capsys, "evaluate", "--policy", "heuristic:static:4", "--config", TINY,
                       "--episodes", "1", "--quiet")
    assert rc == 0 and out.startswith("heuristic:static:4: SLA attainment"), err


# -- 9. no empty --out directory after a failure -----------------------------------------------

def test_a_failed_command_leaves_no_empty_out_directory(tmp_path: Path, capsys) -> None:
    # evaluate --out: its directory is made before the episodes, removed when they fail
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:static:100", "--config", TINY,
                     "--out", str(tmp_path / "new" / "deeper" / "res.json"))
    one_line_error(rc, err)
    assert not (tmp_path / "new").exists()
    # sweep --out: made, then the trace turns out to be missing
    rc, _, err = run(capsys, "sweep", "pareto", "--quick", "--jobs", "1",
                     "--out", str(tmp_path / "sw" / "out"), "--trace", str(tmp_path / "no.jsonl"))
    one_line_error(rc, err)
    assert not (tmp_path / "sw").exists()
    # train --out: a recipe error found after the run directory exists
    hp = tmp_path / "hp.yml"
    hp.write_text("DynoSim-v0: {policy: MlpPolicy, n_steps: 8, batch_size: 8, no_such_key: 1}\n")
    rc, _, err = run(capsys, "train", "--algo", "ppo", "--config", TINY, "--hyperparams", str(hp),
                     "--out", str(tmp_path / "runs" / "ppo"))
    one_line_error(rc, err, "no_such_key")
    assert not (tmp_path / "runs").exists()
    # a directory that existed, or that holds a result, stays
    (tmp_path / "kept").mkdir()
    rc, _, _ = run(capsys, "sweep", "pareto", "--quick", "--out", str(tmp_path / "kept"),
                   "--trace", str(tmp_path / "no.jsonl"))
    assert rc == 2 and (tmp_path / "kept").is_dir()
    from dynosim.options import make_out_dir, remove_empty_created_dirs
    made = make_out_dir(tmp_path / "a" / "b")
    (made / "result.csv").write_text("x\n")
    make_out_dir(tmp_path / "c" / "d")
    remove_empty_created_dirs()
    assert (made / "result.csv").is_file() and not (tmp_path / "c").exists()


def test_a_closed_stderr_leaves_no_empty_out_directory(tmp_path: Path) -> None:
    """The trials' case: stderr closed (``2>&-``, a dead pipe), so the first note after the
    run directory was made fails (here: the rollout rounding note of ``dynosim train``)."""
    import subprocess
    hp = tmp_path / "hp.yml"
    hp.write_text("DynoSim-v0: {policy: MlpPolicy, n_steps: 16, batch_size: 16, n_epochs: 1}\n")
    out = tmp_path / "runs" / "ppo"
    argv = ["train", "--algo", "ppo", "--config", TINY, "--hyperparams", str(hp),
            "--timesteps", "40", "--n-envs", "1", "--out", str(out)]
    code = f"import os, sys; os.close(2); from dynosim.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=600)
    assert proc.returncode != 0 and not (tmp_path / "runs").exists()


# -- 10. the benchmark script's YAML -----------------------------------------------------------

def test_learned_benchmark_reads_the_tuned_file_as_yaml_1_2_with_located_errors(
        tmp_path: Path) -> None:
    from sim.errors import InputError
    mod = load_script("learned_benchmark")
    tuned = tmp_path / "load-tuned.yaml"
    tuned.write_text("base: load\nknobs: {}\ntrain_sla_attainment: 665e-3\n")   # YAML 1.1: a str
    assert mod.lagrangian_target(tuned) == 0.67
    tuned.write_text("base: load\nknobs: {}\ntrain_sla_attainment: high\n")
    with pytest.raises(InputError) as info:
        mod.lagrangian_target(tuned)
    assert str(info.value).startswith(f"{tuned}:3") and "train_sla_attainment" in str(info.value)
    assert 0 < mod.lagrangian_target() < 1                   # the shipped file still reads


# -- found as a new user -----------------------------------------------------------------------

def test_a_successful_sweep_keeps_its_new_out_directory_and_counts_jobs(tmp_path: Path,
                                                                       capsys) -> None:
    """The success path of ``make_out_dir`` (nothing removed), and "1 job", not "1 jobs"."""
    out = tmp_path / "new" / "sweeps"
    rc, stdout, err = run(capsys, "sweep", "pareto", "--quick", "--jobs", "1", "--out", str(out))
    assert rc == 0, err
    assert (out / "pareto.csv").is_file() and (out / "pareto.png").is_file()
    assert stdout.rstrip().endswith(" 1 job)")


@pytest.mark.parametrize("config", ["autoscale_tiny.yaml", "demo.yaml"])
def test_latency_plot_tick_labels_do_not_overlap(tmp_path: Path, monkeypatch, capsys,
                                                 config: str) -> None:
    """A log axis spanning under a decade got matplotlib's label on every minor tick
    ("2x10^3 3x10^3 4x10^3" ran together on autoscale_tiny's E2E panel)."""
    from matplotlib.figure import Figure
    figs = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figs.append(self),
                                                                  save(self, *a, **k))[1])
    rc, _, err = run(capsys, "simulate", "--config", str(REPO / "envs_configs" / config),
                     "--plot", str(tmp_path / "cdf.png"), "--quiet")
    assert rc == 0, err
    [fig] = figs
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig).draw()                      # ticks and labels as saved
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        if not ax.get_xlabel():
            continue                                  # the p50/p90/p99 guide axes
        boxes = sorted((t.get_window_extent(renderer) for t in
                        ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)
                        if t.get_visible() and t.get_text()), key=lambda b: b.x0)
        assert len(boxes) >= 2, ax.get_xlabel()
        for a, b in zip(boxes, boxes[1:]):
            assert a.x1 <= b.x0, (ax.get_xlabel(), [t.get_text() for t in ax.get_xticklabels()])


def test_training_progress_says_100_percent_only_when_done() -> None:
    """1,020 of 1,024 steps printed "(100%)" one line before the run ended."""
    from agents.train import _Progress
    p = _Progress(1024, quiet=True)
    p.steps = 1020
    assert "1,020/1,024 steps (99%)" in p.line(1.0)
    p.steps = 1024
    assert "1,024/1,024 steps (100%)" in p.line(1.0)

"""``dynosim train`` is not silent off a terminal (issue 12): periodic progress lines with
steps, steps/s and mean episode reward, then a final summary; --quiet keeps stderr empty."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3")

from dynosim.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "envs_configs" / "autoscale_tiny.yaml")


def _train(tmp_path: Path, *extra: str) -> int:
    return main(["train", "--algo", "a2c", "--config", TINY, "--timesteps", "200",
                 "--n-envs", "1", "--out", str(tmp_path / "run"), "--set", "episode_steps=4",
                 *extra])


def test_non_tty_training_logs_progress_and_a_summary(tmp_path: Path, capsys) -> None:
    assert _train(tmp_path) == 0          # capsys' stderr is not a terminal
    err = capsys.readouterr().err.splitlines()
    progress = [x for x in err if x.startswith("dynosim: train ")]
    assert len(progress) == 9, err        # one per tenth of the run, the last is the summary
    steps = [int(re.search(r"train ([\d,]+)/200 steps", x).group(1).replace(",", ""))
             for x in progress]
    assert steps == sorted(steps) and steps[0] >= 20
    assert all("steps/s" in x and "mean episode reward" in x for x in progress)
    assert re.search(r"mean episode reward -?\d+\.\d+ \(last \d+\)", progress[-1])
    summary = [x for x in err if x.startswith("dynosim: trained a2c on DynoSim-v0: 200/200")]
    assert len(summary) == 1 and "episodes" in summary[0]
    # its SLA / GPU-h say which episodes they are (a kept checkpoint's figures differ)
    assert re.search(r"last \d+ training episodes \(the policy being trained, actions "
                     r"sampled\): SLA [\d.]+%", summary[0]), summary[0]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["episodes"] >= 40 and run["mean_episode_reward_last"] is not None


def test_quiet_training_prints_nothing(tmp_path: Path, capsys) -> None:
    assert _train(tmp_path, "--quiet") == 0
    assert capsys.readouterr().err == ""


def test_lagrangian_progress_shows_the_multiplier_and_tensorboard_gets_sla_and_gpu_hours(
        tmp_path: Path, capsys) -> None:
    """Lagrangian mode: every progress line shows the multiplier, and the final one the value
    run.json records; TensorBoard has the training episodes' SLA attainment and GPU-hours
    (``rollout/sla_attainment``, ``rollout/gpu_hours``) beside the multiplier."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = tmp_path / "ppo_tiny.yml"      # PPO dumps its logger every rollout; no warm start
    recipe.write_text("DynoSim-v0:\n  n_envs: 1\n  policy: MlpPolicy\n  n_steps: 32\n"
                      "  batch_size: 32\n  n_epochs: 1\n")
    assert main(["train", "--algo", "ppo", "--config", TINY, "--timesteps", "200",
                 "--hyperparams", str(recipe), "--out", str(tmp_path / "run"),
                 "--set", "episode_steps=4", "--set", "reward.mode=lagrangian"]) == 0
    err = capsys.readouterr().err.splitlines()
    progress = [x for x in err if x.startswith("dynosim: train")]
    assert progress and all("Lagrange multiplier" in x for x in progress), err
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    final = run["lagrange_multiplier"]["final"]
    assert f"Lagrange multiplier {final:.4g} (SLA target" in progress[-1], progress[-1]
    events = sorted((tmp_path / "run" / "tb").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"rollout/sla_attainment", "rollout/gpu_hours", "rollout/scaling_events",
            "lagrangian/multiplier"} <= tags, tags
    sla = [e.value for e in acc.Scalars("rollout/sla_attainment")]
    gpu = [e.value for e in acc.Scalars("rollout/gpu_hours")]
    assert sla and all(0.0 <= v <= 1.0 for v in sla) and all(v > 0 for v in gpu)


def test_per_request_progress_has_no_multiplier(tmp_path: Path, capsys) -> None:
    assert _train(tmp_path) == 0
    assert "Lagrange multiplier" not in capsys.readouterr().err

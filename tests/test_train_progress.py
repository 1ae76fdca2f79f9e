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

"""Round-7 re-check findings (s7-fixC): each test fails without its fix."""
from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest

import dynosim_gym  # noqa: F401  (registers the env ids)
from dynosim.cli import main
from sim.errors import InputError

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "envs_configs" / "autoscale_tiny.yaml")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


# -- 1. train --algo ppo on autoscale_disagg: the recipe's aggregated-only keys, up front ------

def test_train_ppo_recipe_on_a_disaggregated_config_is_refused_in_one_line(
        capsys, tmp_path: Path) -> None:
    rc, _, err = run(capsys, "train", "--algo", "ppo", "--config", "autoscale_disagg",
                     "--timesteps", "10", "--out", str(tmp_path / "t"), "--quiet")
    one_line_error(rc, err, "ppo.yml", "env_kwargs.action", "bc_warm_start",
                   "--algo ppo_mask")
    # the fix its old error suggested (delta, no window) still meets the warm start
    rc, _, err = run(capsys, "train", "--algo", "ppo", "--config", "autoscale_disagg",
                     "--timesteps", "10", "--out", str(tmp_path / "t2"), "--quiet",
                     "--set", "env.action.type=delta",
                     "--set", "env.action.scale_down_window_s=0")
    one_line_error(rc, err, "ppo.yml", "bc_warm_start", "--algo ppo_mask")
    assert not (tmp_path / "t2" / "model.zip").exists()

"""`dynosim simulate --planner ...`: the planner runs in the loop and reports in the summary."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.cli import main

TINY = str(Path(__file__).resolve().parents[1] / "envs_configs" / "tiny.yaml")


@pytest.mark.parametrize("kind", ["load", "throughput"])
def test_planner_reports_in_the_summary(capsys, kind: str) -> None:
    args = ["simulate", "--config", TINY, "--planner", kind, "--planner-interval", "2",
            "--initial-workers", "1", "--startup-time", "1", "--max-gpu-budget", "4",
            "--sla-ttft-ms", "200", "--sla-itl-ms", "20", "--json", "--quiet"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    rep = out["planner"]
    assert rep["kind"] == kind
    assert rep["scaling_events"] == len(rep["events"]) >= 1        # the tiny load needs > 1
    assert 1 <= rep["max_replicas"] <= 4
    assert rep["replicas_over_time"][0][1:] == [1, 0, 0]
    assert rep["gpu_hours"] == out["totals"]["gpu_hours"] > 0
    assert out["config"]["cluster"]["startup_time_s"] == 1.0
    # same seed, same decisions
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["planner"]["events"] == rep["events"]


@pytest.mark.parametrize("argv,needle", [
    (["--planner-interval", "5"], "needs --planner"),
    (["--planner", "load", "--planner-interval", "-1"], "argument --planner-interval"),
    (["--planner", "load", "--planner-predictor", "crystal_ball"], "argument --planner-predictor"),
    (["--planner", "load", "--max-gpu-budget", "1", "--model", "Qwen/Qwen3-32B", "--gpu",
      "h200_sxm", "--backend", "vllm", "--tp", "2"], "argument --max-gpu-budget"),
])
def test_planner_bad_input_is_one_line_exit_2(capsys, argv: list[str], needle: str) -> None:
    assert main(["simulate", "--config", TINY, "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err

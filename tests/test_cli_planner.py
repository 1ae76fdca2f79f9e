"""`dynosim simulate --planner ...`: the planner runs in the loop and reports in the summary."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dynosim.cli import main

TINY = str(Path(__file__).resolve().parents[1] / "envs_configs" / "tiny.yaml")


@pytest.mark.parametrize("kind", ["load", "throughput"])
def test_planner_reports_in_the_summary(capsys, kind: str) -> None:
    args = ["simulate", "--config", TINY, "--planner", kind, "--planner-interval", "2",
            "--initial-workers", "1", "--startup-time", "1", "--max-gpu-budget", "4",
            "--sla-ttft-ms", "200", "--sla-itl-ms", "20", "--json", "--quiet",
            "--planner-config-json", '{"optimization_target": "sla"}']
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
    (["--planner", "throughput", "--planner-interval", "0"], "argument --planner-interval"),
    # --planner-config-json: Dynamo's names; unknown / out of range / not simulated / bad JSON
    (["--planner", "load", "--planner-config-json", '{"load_scaling_down_sensitivty": 20}'],
     "argument --planner-config-json: unknown planner key 'load_scaling_down_sensitivty' "
     "(did you mean 'load_scaling_down_sensitivity'?)"),
    (["--planner", "load", "--planner-config-json", '{"load_scaling_down_sensitivity": 120}'],
     "argument --planner-config-json: key 'load_scaling_down_sensitivity': must be <= 100"),
    (["--planner", "load", "--planner-config-json", '{"min_gpu_budget": -2}'],
     "argument --planner-config-json: key 'min_gpu_budget': must be >= -1"),
    (["--planner", "load", "--planner-config-json", '{"optimization_target": "cost"}'],
     "argument --planner-config-json: key 'optimization_target': unknown value 'cost'"),
    (["--planner", "load", "--planner-config-json", '{"live_dashboard_port": 0}'],
     "Dynamo planner key 'live_dashboard_port' has no simulated counterpart"),
    (["--planner", "load", "--planner-config-json", '{"ttft_ms": 500'],
     "argument --planner-config-json: not a JSON object"),
    (["--planner", "load", "--planner-config-json", '[1, 2]'],
     "argument --planner-config-json: expected a JSON object"),
    (["--planner-config-json", '{"min_endpoint": 2}'], "needs --planner"),
    (["--planner", "load", "--planner-predictor", "crystal_ball"], "argument --planner-predictor"),
    (["--planner", "load", "--max-gpu-budget", "1", "--model", "Qwen/Qwen3-32B", "--gpu",
      "h200_sxm", "--backend", "vllm", "--tp", "2"], "argument --max-gpu-budget"),
])
def test_planner_bad_input_is_one_line_exit_2(capsys, argv: list[str], needle: str) -> None:
    assert main(["simulate", "--config", TINY, "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_planner_config_json_dynamo_names_and_yaml_section(capsys, tmp_path: Path) -> None:
    """Dynamo's JSON (aliases included) lands in the resolved config -- its SLA targets in
    the run's sla section -- over the YAML ``planner`` section."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(Path(TINY).read_text() + "\nplanner:\n  kind: load\n"
                   "  load_scaling_down_sensitivity: 20\n  scale_down_cooldown_seconds: 30\n")
    args = ["simulate", "--config", str(cfg), "--json", "--quiet", "--planner-config-json",
            '{"ttft": 900, "load_adjustment_interval": 2, "optimization_target": "latency"}']
    assert main(args) == 0
    conf = json.loads(capsys.readouterr().out)["config"]
    pc = conf["planner"]
    assert (conf["sla"]["ttft_ms"], pc["load_adjustment_interval_seconds"],
            pc["optimization_target"], pc["load_scaling_down_sensitivity"],
            pc["scale_down_cooldown_seconds"]) == (900.0, 2.0, "latency", 20, 30.0)


def test_yaml_planner_section_errors_name_file_line_and_key(capsys, tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    text = Path(TINY).read_text() + "\nplanner:\n  kind: load\n" \
        "  load_scaling_down_sensitivity: 120\n"
    cfg.write_text(text)
    line = text.splitlines().index("  load_scaling_down_sensitivity: 120") + 1
    assert main(["simulate", "--config", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"bad.yaml:{line}" in err
    assert "planner.load_scaling_down_sensitivity" in err and "must be <= 100" in err
    cfg.write_text(Path(TINY).read_text() + "\nplanner:\n  kind: load\n"
                   "  scale_down_sensitivity: 20\n")
    assert main(["simulate", "--config", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown key 'planner.scale_down_sensitivity'" in err

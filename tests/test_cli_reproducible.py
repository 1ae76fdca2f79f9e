"""A run is reproducible from its own output (issue 12): the JSON carries the full resolved
config (planner, budget, SLA), ``--print-config`` prints it as YAML and that YAML reruns the
run byte for byte; one SLA for goodput and planner; overload warnings; environment scenarios
replay in ``simulate``; the text summary has TPOT and token totals."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dynosim.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "envs_configs" / "tiny.yaml")
AUTOSCALE_TINY = str(REPO / "envs_configs" / "autoscale_tiny.yaml")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(capsys, *argv: str) -> tuple[dict, str]:
    rc, out, err = run(capsys, "simulate", "--json", *argv)
    assert rc == 0, err
    d = json.loads(out)
    d.pop("run_info")                    # wall-clock figures only
    return d, err


CASES = {
    "plain": ["--config", TINY],
    "flags_and_sla": ["--config", TINY, "--num-workers", "3", "--router-mode", "kv",
                      "--sla-ttft-ms", "80", "--sla-e2e-ms", "900", "--seed", "7"],
    "load_planner": ["--config", TINY, "--planner", "load", "--planner-interval", "2",
                     "--max-gpu-budget", "4", "--sla-ttft-ms", "200"],
    "throughput_planner": ["--config", TINY, "--planner", "throughput", "--planner-interval",
                           "3", "--planner-predictor", "constant"],
    "trace": ["--trace", "bundled:mooncake_conversation", "--num-workers", "8",
              "--max-sim-time-s", "120", "--block-size", "512"],
    "env_scenario": ["--config", AUTOSCALE_TINY],
}


@pytest.mark.parametrize("name", list(CASES))
def test_printed_config_reruns_byte_identically(capsys, tmp_path: Path, name: str) -> None:
    argv = CASES[name]
    first, _ = run_json(capsys, *argv)
    rc, yaml_text, _ = run(capsys, "simulate", *argv, "--print-config")
    assert rc == 0
    cfg_file = tmp_path / "resolved.yaml"
    cfg_file.write_text(yaml_text)
    again, err = run_json(capsys, "--config", str(cfg_file))
    assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)
    # the YAML is the JSON's config, and printing it again changes nothing
    assert yaml.safe_load(yaml_text) == first["config"]
    assert run(capsys, "simulate", "--config", str(cfg_file), "--print-config")[1] == yaml_text


def test_planner_run_records_planner_budget_and_sla(capsys) -> None:
    d, _ = run_json(capsys, "--config", TINY, "--planner", "load", "--max-gpu-budget", "4",
                    "--quiet")
    cfg = d["config"]
    assert cfg["planner"]["kind"] == "load"
    assert cfg["planner"]["load_adjustment_interval_seconds"] == 5.0
    assert cfg["planner"]["max_gpu_budget"] == 4 and cfg["planner"]["min_endpoint"] == 1
    # the planner's targets are the run's one SLA: never null when a planner runs
    assert (cfg["sla"]["ttft_ms"], cfg["sla"]["itl_ms"]) == (500.0, 50.0)
    assert d["goodput"]["sla"] == {"ttft_ms": 500.0, "itl_ms": 50.0}
    assert "ttft_ms" not in cfg["planner"]


def test_one_sla_drives_goodput_and_planner(capsys) -> None:
    d, _ = run_json(capsys, "--config", TINY, "--planner", "load", "--sla-ttft-ms", "150",
                    "--sla-itl-ms", "20", "--quiet")
    assert d["config"]["sla"]["ttft_ms"] == 150.0 and d["goodput"]["sla"]["itl_ms"] == 20.0
    from sim.config import load_config, planner_config
    pcfg = planner_config(load_config(TINY).with_overrides(
        {"planner.kind": "load", "sla.ttft_ms": 150.0, "sla.itl_ms": 20.0}))
    assert (pcfg.ttft_ms, pcfg.itl_ms) == (150.0, 20.0)


def test_deprecated_sla_flags_still_work_with_a_note(capsys) -> None:
    new, _ = run_json(capsys, "--config", TINY, "--planner", "load", "--sla-ttft-ms", "150",
                      "--sla-itl-ms", "20", "--quiet")
    old, err = run_json(capsys, "--config", TINY, "--planner", "load", "--ttft-sla-ms", "150",
                        "--itl-sla-ms", "20", "--quiet")
    assert old == new
    notes = [x for x in err.splitlines() if "deprecated" in x]
    assert len(notes) == 2 and "use --sla-ttft-ms" in notes[0] and "use --sla-itl-ms" in notes[1]


@pytest.mark.parametrize("yaml_text,needle", [
    ("planner: {kind: load, ttft_ms: 100}\n", "field 'planner.ttft_ms': set the "
     "planner's targets in the run's sla section (sla.ttft_ms)"),
    ("planner: {kind: balanced}\n", "field 'planner.kind': expected one of load, throughput"),
    ("planner: {kind: load, load_adjustment_interval_seconds: -2}\n",
     "field 'planner.load_adjustment_interval_seconds': must be > 0"),
    ("planner: {kind: load, load_adjustment_intervall_seconds: 2}\n",
     "did you mean 'load_adjustment_interval_seconds'"),
])
def test_bad_planner_section_is_one_line(capsys, tmp_path: Path, yaml_text, needle) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(Path(TINY).read_text() + yaml_text)
    rc, _, err = run(capsys, "simulate", "--config", str(path))
    assert rc == 2 and err.count("\n") == 1 and needle in err and "p.yaml" in err, err


def test_planner_flags_need_a_planner(capsys) -> None:
    rc, _, err = run(capsys, "simulate", "--config", TINY, "--max-gpu-budget", "4")
    assert rc == 2 and "--max-gpu-budget needs --planner" in err


# -- overload -------------------------------------------------------------------------------

def test_one_worker_default_warns_of_overload(capsys) -> None:
    d, err = run_json(capsys, "--trace", "bundled:mooncake_conversation",
                      "--max-sim-time-s", "300")
    warnings = [x for x in err.splitlines() if x.startswith("dynosim: warning: overloaded")]
    assert len(warnings) == 1 and "1 worker" in warnings[0] and "500 ms TTFT target" in \
        warnings[0]
    assert d["warnings"] and d["warnings"][0] in warnings[0]
    assert d["latency_ms"]["ttft"]["p90"] > 10 * 500


def test_overload_uses_the_sla_and_a_healthy_run_is_silent(capsys) -> None:
    d, err = run_json(capsys, "--config", TINY)
    assert d["warnings"] == [] and "warning" not in err
    p90 = d["latency_ms"]["ttft"]["p90"]
    d, err = run_json(capsys, "--config", TINY, "--sla-ttft-ms", f"{p90 / 10 * 0.99:.6f}")
    assert len(d["warnings"]) == 1 and "sla.ttft_ms" in d["warnings"][0]
    d, err = run_json(capsys, "--config", TINY, "--sla-ttft-ms", f"{p90 / 10 * 1.01:.6f}")
    assert d["warnings"] == []


# -- environment scenarios, text summary ------------------------------------------------------

def test_env_scenario_runs_in_simulate_with_a_note(capsys) -> None:
    d, err = run_json(capsys, "--config", AUTOSCALE_TINY)
    notes = [x for x in err.splitlines() if "note:" in x]
    assert len(notes) == 1 and "ignoring its 'env:' section" in notes[0]
    assert "env" not in d["config"] and d["config"]["workload"]["arrival"]["process"]
    assert d["totals"]["completed_requests"] == d["totals"]["num_requests"] > 0
    env_yaml = yaml.safe_load(Path(AUTOSCALE_TINY).read_text())
    assert d["config"]["cluster"]["gpus_per_worker"] == env_yaml["cluster"]["gpus_per_worker"]


@pytest.mark.parametrize("name", ["autoscale_default", "autoscale_mooncake", "routing_default"])
def test_every_bundled_env_scenario_resolves(capsys, name: str) -> None:
    rc, out, err = run(capsys, "simulate", "--config", str(REPO / "envs_configs" / f"{name}.yaml"),
                       "--print-config")
    assert rc == 0, err
    assert "env" not in yaml.safe_load(out)


def test_text_summary_has_tpot_and_token_totals(capsys) -> None:
    rc, out, _ = run(capsys, "simulate", "--config", TINY, "--quiet")
    d, _ = run_json(capsys, "--config", TINY, "--quiet")
    assert rc == 0
    tpot = next(x for x in out.splitlines() if x.strip().startswith("TPOT"))
    assert f"{d['latency_ms']['tpot']['mean']:.1f}" in tpot
    tokens = next(x for x in out.splitlines() if x.strip().startswith("tokens"))
    t = d["totals"]
    assert f"input {t['total_input_tokens']:,}" in tokens
    assert f"generated {t['total_output_tokens']:,}" in tokens

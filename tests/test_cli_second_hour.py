"""What a new user found in the second hour on a clean clone (round 7, tooling items): each
test reproduces the reported command and fails without its fix."""
from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynosim.cli import main
from sim.errors import InputError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "envs_configs"


# -- #5: a routing env or policy on a disaggregated / autoscaling config --------------------

def test_routing_env_on_a_disagg_config_fails_at_make() -> None:
    """gym.make built the routing env on autoscale_disagg, then reset() raised RuntimeError
    ("episode has 2 workers, expected 1"): an InputError at make, naming the disagg line."""
    with pytest.raises(InputError) as exc:
        gym.make("dynosim_gym:DynoSimRouting-v0", config="autoscale_disagg")
    assert exc.value.field == "disagg" and exc.value.file.endswith("autoscale_disagg.yaml")
    assert exc.value.line is not None and "DynoSim-v0" in str(exc.value)
    with pytest.raises(InputError):     # a disagg section given as an override, too
        gym.make("dynosim_gym:DynoSimRouting-v0",
                 disagg={"num_prefill_workers": 1, "num_decode_workers": 1})


@pytest.mark.parametrize("argv", [
    ["evaluate", "--policy", "heuristic:kv", "--config", "autoscale_disagg", "--episodes", "1"],
    ["evaluate", "--env", "DynoSimRouting-v0", "--policy", "heuristic:kv", "--config",
     str(CONFIGS / "autoscale_disagg.yaml"), "--episodes", "1"],
])
def test_routing_policy_on_a_disagg_config_is_one_line_exit_2(argv, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "autoscale_disagg.yaml" in err, err
    assert "field 'disagg'" in err and "Traceback" not in err


def test_train_routing_env_on_a_disagg_config_is_one_line(tmp_path: Path, capsys) -> None:
    rc = main(["train", "--algo", "ppo", "--env", "DynoSimRouting-v0", "--config",
               "autoscale_disagg", "--timesteps", "10", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    # train checks the config's families against --env first (an autoscaling config on the
    # routing env), before the env would refuse its disagg section: one line either way
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "does not fit --env DynoSimRouting-v0" in err and "autoscale_disagg" in err, err
    assert "pass --env DynoSim-v0" in err and "Traceback" not in err


def test_routing_policy_on_an_autoscaling_scenario_names_the_mismatch(capsys) -> None:
    """evaluate --policy heuristic:kv --config autoscale_default.yaml silently ran the
    routing env on the autoscaling scenario; without --env it is refused (as train refuses a
    routing scenario without --env); no "--env DynoSimRouting-v0 ... anyway" hint, as that
    env refuses the scenario's families (re-check 7, #4)."""
    rc = main(["evaluate", "--policy", "heuristic:kv", "--config",
               str(CONFIGS / "autoscale_default.yaml"), "--episodes", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("dynosim: error: flag '--config': ")
    assert "DynoSim-v0 scenario" in err and "--env DynoSimRouting-v0" not in err
    # the other way round: an autoscaling heuristic on the routing scenario
    assert main(["evaluate", "--policy", "heuristic:load", "--config", "routing_families",
                 "--episodes", "1"]) == 2
    assert "--env DynoSim-v0" not in capsys.readouterr().err   # its families: routing only


def test_scenario_env_classifies_the_bundled_configs() -> None:
    from agents.evaluate import scenario_env
    assert scenario_env("autoscale_default") == "DynoSim-v0"
    assert scenario_env("autoscale_disagg") == "DynoSim-v0"
    assert scenario_env("routing_default") == "DynoSimRouting-v0"
    assert scenario_env("routing_families") == "DynoSimRouting-v0"
    # the legacy shapes, a trace: either env takes them
    assert scenario_env("autoscale_legacy") is None
    assert scenario_env("autoscale_tiny") is None


# -- #9: evaluate's and leaderboard's JSON record the resolved env config ------------------

def test_evaluate_json_records_the_resolved_config_and_the_pool_split(capsys) -> None:
    """evaluate --config autoscale_disagg --json had env_id, overrides {} and reward_config
    only ("disagg" appeared nowhere) and the pooled figures lacked the prefill/decode
    GPU-hour split: the full resolved config is recorded, and scoring that record alone
    reproduces the figures."""
    argv = ["evaluate", "--policy", "heuristic:load", "--config", "autoscale_disagg",
            "--episodes", "1", "--set", "env.episode_steps=6", "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    cfg = doc["env_config"]
    assert cfg["disagg"]["num_prefill_workers"] == 1 and cfg["env"]["episode_steps"] == 6
    split = doc["gpu_hours_by_role"]
    assert set(split) == {"prefill", "decode"} and split["prefill"] > 0 < split["decode"]
    assert split["prefill"] + split["decode"] == pytest.approx(doc["gpu_hours"], rel=1e-12)
    from agents.evaluate import evaluate
    again = evaluate("heuristic:load", config=cfg, episodes=1).as_dict()
    assert again["env_config"] == cfg
    for k in ("sla_attainment", "gpu_hours", "p90_ttft_ms", "gpu_hours_by_role"):
        assert again[k] == doc[k], k


def test_evaluate_json_of_one_pool_has_no_split(capsys) -> None:
    assert main(["evaluate", "--policy", "heuristic:static:1", "--config", "autoscale_tiny",
                 "--episodes", "1", "--set", "env.episode_steps=3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["gpu_hours_by_role"] == {} and doc["env_config"]["env"]["episode_steps"] == 3
    assert "disagg" not in doc["env_config"] or doc["env_config"]["disagg"] is None


def test_leaderboard_json_records_each_policys_config(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", "--leaderboard", str(tmp_path), "--config", "autoscale_tiny",
                 "--policies", "heuristic:static:1", "--reference", "heuristic:static:1",
                 "--episodes", "1"]) == 0
    capsys.readouterr()
    recs = json.loads((tmp_path / "leaderboard.json").read_text())
    assert recs and all(r["env_config"]["env"]["max_gpu_budget"] == 8 for r in recs)


# -- #8: a malformed --planner-config-json file names the file, line and column -------------

def test_malformed_planner_json_file_names_file_line_and_column(tmp_path: Path,
                                                                  capsys) -> None:
    bad = tmp_path / "bad_planner.json"
    bad.write_text('{\n  "min_endpoint": 1,\n  "max_gpu_budget": 8,\n  "adjustment_interval": ,\n}\n')
    rc = main(["simulate", "--config", str(CONFIGS / "tiny.yaml"), "--quiet", "--planner",
               "load", "--planner-config-json", str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.splitlines() == [
        f"dynosim: error: {bad}:4, flag '--planner-config-json': not valid JSON: Expecting "
        "value (column 26)"], err


# -- #11: the sweep CSV's command column is shell-quoted --------------------------------------

def test_sweep_command_column_pastes_into_a_shell(tmp_path: Path) -> None:
    """The interval sweep's command held --planner-config-json {"optimization_target": "sla"}
    unquoted, so pasting it failed (unrecognized arguments: sla}): shlex.split of the
    column gives back the point's flags, which simulate parses."""
    import shlex

    from dynosim.options import simulate_parser
    from dynosim.studies import sweeps
    from test_sweeps import _args
    ns = _args("interval", "--quick", "--max-sim-time-s", "20", "--out", str(tmp_path))
    point = sweeps.make_points("interval", ns)[0]
    cmd = sweeps.command_line(point["argv"])
    assert '{"optimization_target": "sla"}' in point["argv"]
    assert shlex.split(cmd) == ["dynosim", "simulate", *point["argv"]]
    assert simulate_parser().parse_args(shlex.split(cmd)[2:]).planner_config_json == \
        '{"optimization_target": "sla"}'


@given(st.lists(st.text(min_size=1), max_size=6))
def test_sweep_command_line_round_trips(argv: list[str]) -> None:
    import shlex

    from dynosim.studies import sweeps
    assert shlex.split(sweeps.command_line(argv)) == ["dynosim", "simulate", *argv]


# -- #4: search hands its trials an absolute trace path --------------------------------------

SPACE_SMALL = """\
model: Qwen/Qwen3-32B
gpu: h200_sxm
backend: vllm
max_gpus: 8
space:
  cluster.num_workers: {low: 1, high: 2}
"""


def _relative_trace(tmp_path: Path, monkeypatch) -> str:
    lines = (Path(__file__).resolve().parents[1] / "sim" / "data" /
             "conversation_trace.jsonl").read_text().splitlines()[:200]
    (tmp_path / "h.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "space.yaml").write_text(SPACE_SMALL)
    monkeypatch.chdir(tmp_path)
    return "h.jsonl"


def test_search_records_the_trace_as_an_absolute_path(tmp_path: Path, monkeypatch,
                                                      capsys) -> None:
    """Trials got --trace as given (relative), which Ray Tune resolved against each trial's
    own working directory: every trial failed "trace file not found"."""
    trace = _relative_trace(tmp_path, monkeypatch)
    assert main(["search", "--trace", trace, "--space", "space.yaml", "--trials", "1",
                 "--objective", "minimise totals.gpu_hours", "--out", "o", "--quiet"]) == 0
    info = json.loads((tmp_path / "o" / "search.json").read_text())
    assert info["trace"] == str(tmp_path / "h.jsonl")


@pytest.mark.ray
@pytest.mark.xdist_group("ray")
def test_ray_search_with_a_relative_trace(tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    import csv

    import ray
    ray.shutdown()
    trace = _relative_trace(tmp_path, monkeypatch)
    try:
        rc = main(["search", "--trace", trace, "--space", "space.yaml", "--trials", "2",
                   "--objective", "minimise totals.gpu_hours", "--out", "o", "--quiet",
                   "--executor", "ray", "--jobs", "1"])
    finally:
        ray.shutdown()
    assert rc == 0, capsys.readouterr().err
    with open(tmp_path / "o" / "trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(r["status"] == "complete" for r in rows), rows


# -- #10: the search front has one point per distinct configuration ---------------------------

def test_search_front_counts_distinct_configurations(tmp_path: Path, monkeypatch,
                                                     capsys) -> None:
    """200 trials over a 32-combination space gave "Pareto front: 139 candidates" with 6
    distinct points (front.csv had 128 copies of one config): here 6 trials over 2
    configurations give at most 2 front rows, whose trials column counts the draws, and
    the summary and the plot legend say the same."""
    import csv
    trace = _relative_trace(tmp_path, monkeypatch)
    assert main(["search", "--trace", trace, "--space", "space.yaml", "--trials", "6",
                 "--objective", "minimise totals.gpu_hours", "--out", "o"]) == 0
    out = capsys.readouterr().out
    with open(tmp_path / "o" / "front.csv", newline="") as fh:
        front = list(csv.DictReader(fh))
    workers = [r["cluster.num_workers"] for r in front]
    assert len(workers) == len(set(workers)) <= 2
    with open(tmp_path / "o" / "trials.csv", newline="") as fh:
        trials = list(csv.DictReader(fh))
    for f in front:       # each row's count: the complete trials of its configuration
        assert int(f["trials"]) == sum(t["status"] == "complete" and t["cluster.num_workers"]
                                       == f["cluster.num_workers"] for t in trials)
    n = len(front)
    assert f"Pareto front (totals.gpu_hours vs latency_ms.ttft.p90): {n} distinct " \
           f"candidate{'s' if n > 1 else ''}" in out


def test_distinct_complete_keeps_the_first_trial_of_each_configuration() -> None:
    from dynosim.studies.search import distinct_complete
    recs = [{"trial": i, "status": s, "params": {"a": a}, "values": {}}
            for i, (s, a) in enumerate([("complete", 1), ("complete", 2), ("complete", 1),
                                        ("pruned", 1), ("complete", 1), ("failed", 3)])]
    d = distinct_complete(recs)
    assert [(r["trial"], r["hits"]) for r in d] == [(0, 3), (1, 1)]
    assert "hits" not in recs[0]             # the records are not changed


# -- #7: Ray's own C++ warnings stay off stderr when an address is wrong ----------------------

@pytest.mark.ray
@pytest.mark.xdist_group("ray")
def test_bad_ray_address_leaves_stderr_to_our_line(capfd) -> None:
    """Ray's C++ client wrote "rpc_client.h:153: Failed to connect to GCS ..." (a port
    where no GCS answers) or "gcs_client.cc:210: ... Method not found!" (a gRPC port that
    is not a GCS) straight to file descriptor 2, before our one-line error."""
    pytest.importorskip("ray", reason="the ray extra is not installed")
    import socket
    from concurrent import futures

    import grpc
    import ray

    from dynosim import executors
    ray.shutdown()
    with socket.socket() as srv:       # listens, never answers: Ray warns after 5 s
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        with pytest.raises(InputError, match="no answer from Ray"):
            executors.connect(f"127.0.0.1:{srv.getsockname()[1]}", timeout_s=7)
    assert capfd.readouterr().err == ""
    grpc_srv = grpc.server(futures.ThreadPoolExecutor(max_workers=1))  # gRPC, not a GCS
    port = grpc_srv.add_insecure_port("127.0.0.1:0")
    grpc_srv.start()
    try:
        with pytest.raises(InputError, match="Method not found"):
            executors.connect(f"127.0.0.1:{port}", timeout_s=15)
    finally:
        grpc_srv.stop(None)
    assert capfd.readouterr().err == ""
    assert not ray.is_initialized()


# -- #12: the sweep PNGs: names over the frontier lines, planners hollow, legends off points ---

def _captured_figure(monkeypatch, draw):
    from matplotlib.figure import Figure
    figs = []
    real = Figure.savefig

    def savefig(self, *a, **kw):
        figs.append(self)
        return real(self, *a, **kw)
    monkeypatch.setattr(Figure, "savefig", savefig)
    draw()
    return figs[-1]


@pytest.mark.parametrize("csv_path", [
    REPO / "tests" / "data" / "pareto_trial.csv",     # the trial's run
    REPO / "docs" / "sweeps" / "pareto.csv"])
def test_pareto_names_sit_over_the_lines_and_planners_are_hollow(monkeypatch, tmp_path: Path,
                                                                 csv_path) -> None:
    """pareto.png: a frontier line hid the first letter of "2P1D TP2/4" ("?P1D"), and the
    throughput planner's filled cross hid the "2xTP2" point under it."""
    from dynosim.studies import sweeps
    rows = sweeps.read_csv(csv_path)
    fig = _captured_figure(monkeypatch, lambda: sweeps.plot_pareto(rows, tmp_path / "p.png",
                                                                   "t"))
    for ax in fig.axes:
        names = [t for t in ax.texts if t.get_bbox_patch() is not None]
        assert names, "the points are named"
        top_line = max(ln.get_zorder() for ln in ax.get_lines())
        top_marker = max(c.get_zorder() for c in ax.collections)
        for t in names:
            assert t.get_zorder() > max(top_line, top_marker)
            assert t.get_bbox_patch().get_facecolor()[3] > 0.5      # a ground under it
        planners = [c for c in ax.collections if c.get_label().endswith("planner")]
        assert planners and all(len(c.get_facecolors()) == 0 or
                                (c.get_facecolors()[:, 3] == 0).all() for c in planners)


@pytest.mark.parametrize("csv_path", [
    REPO / "tests" / "data" / "cold_start_3pt.csv",   # the trial's run (0, 150, 300 s)
    REPO / "docs" / "sweeps" / "cold_start.csv"])
def test_cold_start_legends_cover_no_point(monkeypatch, tmp_path: Path, csv_path) -> None:
    """cold_start.png: the right panel's legend covered the 300 s GPU-hours point (matplotlib
    placed it "best" for the scaling-events axis, blind to the twin GPU-hours axis)."""
    import numpy as np

    from dynosim.studies import sweeps
    rows = sweeps.read_csv(csv_path)
    fig = _captured_figure(monkeypatch, lambda: sweeps.plot_scan(
        rows, tmp_path / "c.png", "startup_s", "worker startup time (s)", "t", False, 90.0,
        "cliff"))
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 3
    boxes = [lg.get_window_extent() for lg in legends]
    for ax in fig.axes:
        for ln in ax.get_lines():
            xy = ln.get_xydata()
            if ln.get_label() in ("cliff", "optimum") or ln.get_label().startswith("SLA"):
                continue                 # the guides (axhline/axvline)
            pix = ax.transData.transform(np.asarray(xy, float))
            for b in boxes:
                assert not any(b.contains(px, py) for px, py in pix), ln.get_label()


def test_cold_start_verdict_at_the_shortest_startup_is_no_cliff() -> None:
    """"cliff: startup 0 s" when the p90 was over the limit already at 0 s (no cliff)."""
    from dynosim.studies.sweeps import cold_start_verdict
    rows = [{"startup_s": s, "p90_ttft_ms": p} for s, p in ((0, 2400), (60, 4100), (90, 9000))]
    verdict, mark = cold_start_verdict(rows, 1500)
    assert mark is None and verdict == ("cliff: none (p90 TTFT > 1500 ms already at the "
                                        "shortest startup time, 0 s)")
    verdict, mark = cold_start_verdict(rows, 5000)
    assert mark == 90 and verdict == "cliff: startup 90 s (first with p90 TTFT > 5000 ms)"
    assert cold_start_verdict(rows, 10_000)[1] is None


# -- #13: smaller items ----------------------------------------------------------------------

@pytest.mark.parametrize("study", ["interval", "cold-start"])
def test_scan_sweeps_refuse_pareto_only_flags(study: str, tmp_path: Path, capsys) -> None:
    """sweep interval/cold-start accepted --kv-transfer-bandwidth / --kv-bytes-per-token
    (pareto's disaggregated points) and ignored them silently; their help listed them."""
    for flag in ("--kv-transfer-bandwidth", "--kv-bytes-per-token"):
        assert main(["sweep", study, "--quick", "--out", str(tmp_path / "o"), flag, "8"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and flag in err, err
    assert main(["sweep", study, "--help"]) == 0
    assert "--kv-transfer-bandwidth" not in capsys.readouterr().out
    assert main(["sweep", "pareto", "--help"]) == 0
    assert "--kv-transfer-bandwidth" in capsys.readouterr().out


def test_a_config_name_typo_gets_a_did_you_mean(capsys) -> None:
    assert main(["evaluate", "--policy", "heuristic:kv", "--config", "routing_defualt",
                 "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith("did you mean 'routing_default'?"), err


def test_text_summary_lists_the_rejection_reasons(capsys) -> None:
    """--dp-size 64 --num-gpu-blocks 16 rejected 863 of 866 requests: the text summary said
    "rejected 863" with no reason and no warning (only --json had the reasons)."""
    assert main(["simulate", "--config", str(CONFIGS / "tiny.yaml"), "--num-gpu-blocks",
                 "10"]) == 0
    cap = capsys.readouterr()
    out = cap.out.splitlines()
    line = next(x for x in out if x.strip().startswith("rejected "))
    counts = dict((r, int(n.replace(",", ""))) for n, r in
                  (x.split() for x in line.split(None, 1)[1].split(", ")))
    arrived = next(x for x in out if "arrived" in x).split()
    assert sum(counts.values()) == int(arrived[arrived.index("rejected") + 1])
    assert "prompt_exceeds_kv_capacity" in counts
    warn = [x for x in cap.err.splitlines() if "requests rejected" in x]
    assert len(warn) == 1 and "prompt_exceeds_kv_capacity" in warn[0]


def test_disagg_env_reports_every_aggregated_key_in_one_error() -> None:
    """RLlib on autoscale_disagg with the PPO recipe (action type target, a 60 s scale-down
    window) failed on env.action.type, then, after --set env.action.type=delta and Ray's
    start (25 s), on env.action.scale_down_window_s: both are in the config's one error."""
    from dynosim_gym.config import load_env_config
    with pytest.raises(InputError) as exc:
        load_env_config("autoscale_disagg", **{"env.action.type": "target",
                                               "env.action.scale_down_window_s": 60})
    assert exc.value.field == "env.action.type"
    assert "env.action.scale_down_window_s" in str(exc.value) and "60 s" in str(exc.value)
    assert len(str(exc.value).splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["train", "--algo", "ppo", "--env", "DynoSimRouting-v0", "--config", "tiny", "--timesteps",
     "10"],
    ["evaluate", "--policy", "heuristic:kv", "--env", "DynoSimRouting-v0", "--config", "tiny",
     "--episodes", "1"]])
def test_env_errors_on_a_named_config_name_its_file(argv, tmp_path: Path, capsys) -> None:
    """The env is built from the resolved config's values, so its errors said "config, field
    'sla'": they name the YAML the config came from."""
    if argv[0] == "train":
        argv = [*argv, "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"dynosim: error: {CONFIGS / 'tiny.yaml'}, field 'sla': the environment "
                   "needs SLA targets: set sla.ttft_ms and sla.itl_ms"), err


def test_leaderboard_without_env_refuses_a_routing_scenario(tmp_path: Path, capsys) -> None:
    """evaluate --leaderboard DIR --config routing_default ranked the autoscaling heuristics
    on the routing scenario silently (--env defaulted to DynoSim-v0)."""
    assert main(["evaluate", "--leaderboard", str(tmp_path / "lb"), "--config",
                 "routing_default", "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dynosim: error: flag '--env': ") and len(err.splitlines()) == 1
    assert not (tmp_path / "lb").exists()

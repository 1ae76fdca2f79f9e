"""The ``dynosim`` CLI: one-line errors with exit 2, JSON output, conservation of requests,
byte-identical reports for a seed, plots, flag overrides, and the installed entry point."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dynosim.cli import main

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "envs_configs" / "tiny.yaml")
GOOD = {"timestamp": 0, "input_length": 600, "output_length": 10, "hash_ids": [1, 2]}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(capsys, *argv: str) -> dict:
    rc, out, err = run(capsys, "simulate", "--json", "--quiet", *argv)
    assert rc == 0, err
    return json.loads(out)          # stdout holds the JSON document and nothing else


def assert_input_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dynosim: error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def conserved(totals: dict) -> bool:
    return totals["num_requests"] == (totals["completed_requests"] + totals["rejected_requests"]
                                      + totals["in_flight_requests"])


def write_trace(tmp_path: Path, *rows: dict | str, name: str = "trace.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def row(**changes: object) -> dict:
    out = dict(GOOD)
    for key, value in changes.items():
        if value is None:
            out.pop(key)
        else:
            out[key] = value
    return out


# -- bad input: exit 2, one line naming file and field, no traceback -------------------------

@pytest.mark.parametrize("bad,line,needles", [
    ('{"timestamp": 1, "input_length": 600,', 2, ["invalid JSON"]),
    (row(timestamp=1, output_length=None), 2, ["field 'output_length'", "missing"]),
    (row(timestamp=1, input_length=-5), 2, ["field 'input_length'", ">= 1"]),
    (row(timestamp="soon"), 1, ["field 'timestamp'", "number"]),
    (row(timestamp=1, input_length=2000), 2, ["field 'input_length'", "hash_ids capacity"]),
    (row(timestamp=1, hash_ids=[1, -2]), 2, ["field 'hash_ids'"]),
])
def test_malformed_trace_lines(capsys, tmp_path: Path, bad, line: int,
                               needles: list[str]) -> None:
    rows = [bad] if line == 1 else [GOOD, bad]
    path = write_trace(tmp_path, *rows)
    rc, out, err = run(capsys, "simulate", "--trace", str(path), "--block-size", "512")
    assert_input_error(rc, err, f"trace.jsonl:{line}", *needles)
    assert out == ""


def test_timestamps_going_backwards_are_sorted_with_a_note(capsys, tmp_path: Path) -> None:
    path = write_trace(tmp_path, row(timestamp=0), row(timestamp=500), row(timestamp=400))
    rc, out, err = run(capsys, "simulate", "--trace", str(path), "--json")
    assert rc == 0 and json.loads(out)["totals"]["completed_requests"] == 3
    assert err.count("dynosim: note:") == 1 and "1 row earlier than a previous row" in err


def test_malformed_azure_line(capsys, tmp_path: Path) -> None:
    path = tmp_path / "az.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                    "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47,x,44\n")
    rc, _, err = run(capsys, "simulate", "--trace", str(path))
    assert_input_error(rc, err, "az.csv:3", "field 'ContextTokens'")


@pytest.mark.parametrize("text,line,field,needle", [
    ("engine:\n  blok_size: 64\n", 8, "engine.blok_size", "unknown key 'engine.blok_size'"),
    ("engine:\n  block_size: 0\n", 8, "engine.block_size", "must be > 0"),
    ("cluster:\n  num_workers: 0\n", 8, "cluster.num_workers", "must be >= 1"),
    ("router:\n  mode: smart\n", 8, "router.mode", "unknown value 'smart'"),
    ("timing:\n  model: 'fixed:1'\n", 8, "timing.model", "fixed:PREFILL_MS,DECODE_MS"),
    ("timing:\n  model: 'table:nope.npz'\n", 8, "timing.model", "not found"),
    ("engine:\n  block_size: [1\n", 9, None, "invalid YAML"),
])
def test_bad_config_files(capsys, tmp_path: Path, text: str, line: int, field: str | None,
                          needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(_synth() + text)
    rc, out, err = run(capsys, "simulate", "--config", str(path))
    needles = [f"bad.yaml:{line}", needle] + ([f"field '{field}'"] if field else [])
    assert_input_error(rc, err, *needles)
    assert out == ""


def _synth() -> str:
    """A six-line synthetic workload block (config errors then sit on lines 7-8)."""
    return ("workload:\n  kind: synthetic\n  arrival: {process: poisson, rate: 50}\n"
            "  isl: 256\n  osl: 8\n  num_requests: 40\n")


@pytest.mark.parametrize("flags,needle", [
    (["--block-size", "0"], "argument --block-size: must be > 0"),
    (["--num-workers", "0"], "argument --num-workers: must be >= 1"),
    (["--router-mode", "smart"], "argument --router-mode: unknown value 'smart'"),
    (["--timing", "fixed:1"], "argument --timing: expected fixed:PREFILL_MS,DECODE_MS"),
    (["--timing", "quadratic"], "argument --timing: unknown timing model"),
    (["--max-sim-time-s", "0"], "argument --max-sim-time-s: must be > 0"),
    (["--speedup-ratio", "nan"], "argument --speedup-ratio: expected a finite number"),
    (["--trace-block-size", "0"], "argument --trace-block-size: must be >= 1"),
    (["--arrival-speedup-ratio", "2"], "argument --arrival-speedup-ratio"),
    (["--trace", "missing.jsonl"], "argument --trace: trace file not found"),
    (["--report-jsonl", "/nonexistent-dir/r.jsonl"], "argument --report-jsonl"),
    (["--plot", "out.gif"], "argument --plot"),
])
def test_bad_flags(capsys, flags: list[str], needle: str) -> None:
    rc, out, err = run(capsys, "simulate", "--config", TINY, *flags)
    assert_input_error(rc, err, needle)
    assert out == ""


@pytest.mark.parametrize("argv,needle", [
    (["simulate", "--config", "/nonexistent/run.yaml"], "/nonexistent/run.yaml"),
    (["simulate", "--config", "/"], "Is a directory"),
    (["simulate", "--trace", "/nonexistent/t.jsonl"], "/nonexistent/t.jsonl"),
    (["simulate"], "no workload"),
    (["simulate", "--config", TINY, "--num-workers", "two"],
     "argument --num-workers: expected an integer, got 'two'"),
    (["simulate", "--config", TINY, "--num-workers", "1.5"], "expected an integer, got '1.5'"),
    (["simulate", "--no-such-flag"], "unrecognized arguments"),
])
def test_missing_files_and_usage_errors(capsys, argv: list[str], needle: str) -> None:
    rc, _, err = run(capsys, *argv)
    assert_input_error(rc, err, needle)


def test_bench_quick_reports_replay_and_env_speed(capsys) -> None:
    rc, out, err = run(capsys, "bench", "--quick", "--json", "--quiet")
    assert rc == 0 and err == ""
    d = json.loads(out)
    rep = d["replay"]
    assert rep["requests"] == 12031 and rep["repeats"] == 1
    assert rep["wall_s"] > 0 and rep["sim_s_per_wall_s"] > 0
    cases = {r["case"]: r for r in d["environments"]}
    assert any(c.startswith("DynoSim-v0 default") for c in cases)
    assert any(c.startswith("DynoSimRouting-v0") for c in cases)
    assert all(r["steps_per_s_median"] > 0 for r in cases.values())


@pytest.mark.parametrize("argv, needle", [
    (["bench", "--repeats", "0"], "--repeats"),
    (["bench", "--episodes", "-1"], "--episodes"),
])
def test_bench_bad_input(capsys, argv: list[str], needle: str) -> None:
    rc, _, err = run(capsys, *argv)
    assert_input_error(rc, err, needle)


def test_no_subcommand_prints_help(capsys) -> None:
    rc, _, err = run(capsys)
    assert rc == 2 and "simulate" in err


# -- outputs ---------------------------------------------------------------------------------------

def test_json_summary(capsys) -> None:
    d = run_json(capsys, "--config", TINY)
    t = d["totals"]
    for key in ("completed_requests", "rejected_requests", "in_flight_requests"):
        assert isinstance(t[key], int)
    assert t["completed_requests"] == 300 and conserved(t)
    assert d["latency_ms"]["ttft"]["p90"] > 0
    assert set(d["run_info"]) >= {"run_wall_s", "sim_s_per_wall_s"}
    assert "wall" not in json.dumps({k: v for k, v in d.items() if k != "run_info"})
    assert d["config"]["cluster"]["num_workers"] == 2


def test_integer_flags_take_exponent_form_as_yaml_does(capsys) -> None:
    """``--num-workers 1e1`` is 10 (``--set``, YAML 1.2 and ``--timesteps`` read it so)."""
    d = run_json(capsys, "--config", TINY, "--num-workers", "1e1", "--max-sim-time-s", "1")
    assert d["config"]["cluster"]["num_workers"] == 10


def test_cut_off_summary_of_an_unsized_workload(capsys) -> None:
    """An env scenario's synthetic workload has no fixed request count: the text summary of a
    cut-off run says so instead of failing on the unknown count (a new user's traceback)."""
    rc = main(["simulate", "--config", str(REPO / "envs_configs" / "autoscale_tiny.yaml"),
               "--max-sim-time-s", "20"])
    out = capsys.readouterr().out
    assert rc == 0 and "cut off at 20 s; requests still to arrive not counted" in out


def test_cut_short_run_conserves_requests(capsys) -> None:
    d = run_json(capsys, "--config", TINY, "--max-sim-time-s", "5")
    t = d["totals"]
    assert conserved(t)
    assert t["in_flight_requests"] > 0 and t["not_arrived_requests"] > 0
    assert t["cut_off_ms"] == 5000.0
    assert t["num_requests"] + t["not_arrived_requests"] == 300


def test_overloaded_run_conserves_requests(capsys) -> None:
    """A tiny KV pool rejects prompts that can never fit; they still count."""
    d = run_json(capsys, "--config", TINY, "--num-gpu-blocks", "16", "--max-sim-time-s", "10")
    t = d["totals"]
    assert conserved(t) and t["rejected_requests"] > 0


@pytest.mark.parametrize("mode", ["round_robin", "kv"])
def test_same_seed_gives_identical_reports(capsys, tmp_path: Path, mode: str) -> None:
    docs, reports = [], []
    for i in range(2):
        path = tmp_path / f"r{i}.jsonl"
        d = run_json(capsys, "--config", TINY, "--router-mode", mode, "--seed", "7",
                     "--report-jsonl", str(path))
        d.pop("run_info")
        docs.append(json.dumps(d, sort_keys=True))
        reports.append(path.read_bytes())
    assert reports[0] == reports[1] and docs[0] == docs[1]
    lines = reports[0].decode().splitlines()
    assert len(lines) == 300
    rec = json.loads(lines[0])
    assert rec["request_index"] == 0 and rec["status"] == "completed"
    assert not any("wall" in k for k in rec)


def test_seed_changes_the_run(capsys, tmp_path: Path) -> None:
    a = run_json(capsys, "--config", TINY, "--seed", "1")["latency_ms"]["ttft"]
    b = run_json(capsys, "--config", TINY, "--seed", "2")["latency_ms"]["ttft"]
    assert a != b


def test_plot_writes_a_png(capsys, tmp_path: Path) -> None:
    path = tmp_path / "cdf.png"
    rc, out, err = run(capsys, "simulate", "--config", TINY, "--plot", str(path))
    assert rc == 0, err
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert "TTFT" in out


def test_human_summary(capsys) -> None:
    rc, out, err = run(capsys, "simulate", "--config", TINY, "--quiet")
    assert rc == 0 and err == ""
    for needle in ("arrived 300", "completed 300", "rejected 0", "in flight 0", "TTFT", "ITL",
                   "E2E", "req/s", "prefix reuse", "GPU-hours", "sim-s per wall-s"):
        assert needle in out, needle


def test_flags_override_the_yaml(capsys, tmp_path: Path) -> None:
    report = tmp_path / "r.jsonl"
    d = run_json(capsys, "--config", TINY, "--num-workers", "3", "--router-mode", "kv_router",
                 "--block-size", "32", "--timing", "fixed:20,5", "--sla-ttft-ms", "100",
                 "--no-prefix-caching", "--report-jsonl", str(report))
    c = d["config"]
    assert c["cluster"]["num_workers"] == 3 and c["router"]["mode"] == "kv"
    assert c["engine"]["block_size"] == 32 and c["engine"]["num_gpu_blocks"] == 1024
    assert c["engine"]["enable_prefix_caching"] is False
    assert c["workload"]["num_requests"] == 300          # untouched YAML values stay
    assert d["totals"]["prefix_cache_reused_ratio"] == 0.0
    assert d["goodput"]["sla"] == {"ttft_ms": 100.0}
    workers = {json.loads(line)["worker"] for line in report.read_text().splitlines()}
    assert workers == {0, 1, 2}
    assert d["latency_ms"]["ttft"]["min"] == pytest.approx(20.0)   # fixed prefill time


def test_trace_flags(capsys, tmp_path: Path) -> None:
    rows = [row(timestamp=i * 1000, hash_ids=[1, 2 + i]) for i in range(20)]
    path = write_trace(tmp_path, *rows)
    d = run_json(capsys, "--trace", str(path), "--arrival-speedup-ratio", "2",
                 "--num-workers", "2", "--trace-block-size", "512", "--block-size", "64")
    assert d["workload"]["kind"] == "mooncake" and d["workload"]["span_ms"] == 9500.0
    assert d["totals"]["completed_requests"] == 20 and conserved(d["totals"])


def test_bundled_trace_by_name(capsys) -> None:
    d = run_json(capsys, "--trace", "bundled:azure_conversation", "--max-sim-time-s", "20")
    assert d["workload"]["kind"] == "azure" and conserved(d["totals"])


# -- the installed console script ------------------------------------------------------------------

def test_installed_entry_point(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "dynosim"
    exe = str(exe) if exe.exists() else shutil.which("dynosim")
    if exe is None:
        pytest.skip("dynosim console script not installed")
    ok = subprocess.run([exe, "simulate", "--config", TINY, "--json"], capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["totals"]["completed_requests"] == 300
    bad = subprocess.run([exe, "simulate", "--config", TINY, "--block-size", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == ("dynosim: error: argument --block-size: must be > 0, got 0 "
                                  "(allowed (0, 16777216])")


def test_yaml_errors_keep_their_location_under_flags(capsys, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(_synth().replace("rate: 50", "rate: -1"))
    rc, _, err = run(capsys, "simulate", "--config", str(path), "--seed", "3",
                     "--trace-block-size", "64")
    assert_input_error(rc, err, "bad.yaml:3", "field 'workload.arrival.rate'", "must be > 0")


def test_a_run_where_nothing_completes_says_so_and_prints_no_zero_latencies(capsys) -> None:
    """Every arrived request rejected: a warning counts them by reason and the latency table
    prints '-' rather than 0.0 (a new-user trial read 0.0 ms as a measured latency)."""
    rc, out, err = run(capsys, "simulate", "--trace", "bundled:mooncake_conversation",
                       "--num-gpu-blocks", "4", "--max-sim-time-s", "20")
    assert rc == 0
    warn = [line for line in err.splitlines() if "no request completed" in line]
    assert len(warn) == 1 and "prompt_exceeds_kv_capacity" in warn[0]
    ttft = next(line for line in out.splitlines() if line.strip().startswith("TTFT"))
    assert ttft.split()[1:] == ["-"] * 4
    rc, out, err = run(capsys, "simulate", "--trace", "bundled:mooncake_conversation",
                       "--max-sim-time-s", "20")
    assert rc == 0 and "no request completed" not in err
    ttft = next(line for line in out.splitlines() if line.strip().startswith("TTFT"))
    assert "-" not in ttft.split()[1:]


@pytest.mark.parametrize("args, good, bad", [
    (["--num-prefill-workers", "1", "--num-decode-workers", "1"],
     "--num-prefill-workers/--num-decode-workers", "(--num-workers)"),
    (["--num-workers", "1", "--dp-size", "2", "--arrival-speedup-ratio", "4"], "(--num-workers)",
     "--planner"),
])
def test_overload_warning_suggests_only_flags_the_run_accepts(capsys, args, good, bad) -> None:
    """A new-user trial followed the warning's advice and got exit 2: pools take
    --num-prefill/decode-workers, and a planner is refused with DP ranks."""
    rc, _, err = run(capsys, "simulate", "--trace", "bundled:mooncake_conversation",
                     "--max-sim-time-s", "600", *args)
    warn = [line for line in err.splitlines() if "overloaded" in line]
    assert rc == 0 and len(warn) == 1 and good in warn[0] and bad not in warn[0], err


def test_config_schema_lists_the_disaggregated_section_and_pool_planner_knobs(capsys) -> None:
    rc, out, _ = run(capsys, "config", "schema")
    assert rc == 0
    for field in ("disagg.kv_transfer_bandwidth", "disagg.num_prefill_workers",
                  "planner.prefill_min_endpoint", "planner.prefill_scale_up_queue_tokens"):
        assert field in out, field

"""Issue 13's six kinds of bad input, one test each, plus the documented schema.

1. unbounded integers reaching C code (trace lengths, engine sizes);
2. sizes accepted and then failing deep inside (num_gpu_blocks, num_workers);
3. wrong-typed config values;
4. timestamps beyond the ms-exact float range;
5. env actions outside their spaces;
6. stepping after the end of an episode.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import dynosim_gym  # noqa: F401
from dynosim_gym.base import ResetNeeded
from dynosim.cli import main
from sim.errors import InputError
from dynosim.config_schema import render
from sim.schema import (INT32_MAX, MAX_BLOCKS, MAX_TIME_MS, MAX_TOKENS, MAX_WORKERS, TRACE_FIELDS,
                        Range)

REPO = Path(__file__).resolve().parent.parent
AUTOSCALE_TINY = str(REPO / "envs_configs" / "autoscale_tiny.yaml")
ROUTING_SMALL = {"episode_steps": 3, "rate_min_rps": 1.0, "rate_max_rps": 2.0}
GOOD = {"timestamp": 0, "input_length": 600, "output_length": 10, "hash_ids": [1, 2]}


def one_line_error(capsys, *argv: str) -> str:
    rc = main(["simulate", "--json", "--quiet", *argv])
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dynosim: error: "), err
    return lines[0]


def ok_run(capsys, *argv: str) -> dict:
    rc = main(["simulate", "--json", "--quiet", *argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    t = json.loads(out)["totals"]
    assert t["num_requests"] == (t["completed_requests"] + t["rejected_requests"]
                                 + t["in_flight_requests"])
    return t


def trace(tmp_path: Path, *rows: dict, name: str = "t.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# -- 1. unbounded integers reach C code ---------------------------------------------------------

@pytest.mark.parametrize("field", ["output_length", "input_length"])
@pytest.mark.parametrize("value", [10**30, 2**63, INT32_MAX + 1, MAX_TOKENS + 1])
def test_huge_mooncake_lengths_name_the_line_and_range(tmp_path, capsys, field, value):
    rows = [GOOD, dict(GOOD, timestamp=5, **{field: value})]
    if field == "input_length":        # enough hash_ids capacity is not the point here
        rows[1]["hash_ids"] = [1]
    path = trace(tmp_path, *rows)
    line = one_line_error(capsys, "--trace", path, "--trace-block-size", str(MAX_TOKENS))
    assert f"{path}:2" in line and f"field '{field}'" in line
    assert f"got {value}" in line
    assert f"allowed [{0 if field == 'output_length' else 1}, {MAX_TOKENS}]" in line


@pytest.mark.parametrize("column", ["ContextTokens", "GeneratedTokens"])
@pytest.mark.parametrize("value", [str(MAX_TOKENS + 1), str(2**63), "9" * 5000])
def test_huge_azure_counts_name_the_line_and_range(tmp_path, capsys, column, value):
    cols = {"ContextTokens": "600", "GeneratedTokens": "10", column: value}
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                    f"2023-11-16 18:15:46.68,600,10\n"
                    f"2023-11-16 18:15:47.00,{cols['ContextTokens']},{cols['GeneratedTokens']}\n")
    line = one_line_error(capsys, "--trace", str(path))
    assert f"{path}:3" in line and f"field '{column}'" in line and "allowed [" in line


def test_huge_hash_id_names_its_position(tmp_path, capsys):
    path = trace(tmp_path, dict(GOOD, hash_ids=[1, 2**63]))
    line = one_line_error(capsys, "--trace", path)
    assert f"{path}:1" in line and "hash_ids[1]" in line and str(2**63) in line


@pytest.mark.parametrize("flag, value, allowed", [
    ("--block-size", "100000000000000000000", f"(0, {MAX_TOKENS}]"),
    ("--num-gpu-blocks", "100000000000000000000", f"(0, {MAX_BLOCKS}]"),
    ("--max-num-batched-tokens", "100000000000000000000", f"[1, {MAX_TOKENS}]"),
    ("--trace-block-size", "100000000000000000000", f"[1, {MAX_TOKENS}]"),
    # representation limits: the message says why they are the limit
    ("--max-num-seqs", str(INT32_MAX + 1), f"[1, {INT32_MAX}] sequences: C long counters"),
    ("--seed", str(2**64), f"[0, {2**63 - 1}]: int64 seed"),
])
def test_huge_engine_flags_name_the_flag_and_range(tmp_path, capsys, flag, value, allowed):
    line = one_line_error(capsys, "--trace", trace(tmp_path, GOOD), flag, value)
    assert line.startswith(f"dynosim: error: argument {flag}: must be <= ")
    assert f"got {value}" in line and f"(allowed {allowed})" in line


def test_largest_allowed_lengths_and_sizes_run(tmp_path, capsys):
    """The upper bounds themselves are accepted and the run accounts for every request
    (a request too long for the pool is rejected with a reason, not crashed on).
    (The costliest corner, block size 1, 2^28 blocks, KV router, two requests of 2^24
    prompt and output tokens, ran in 88 s and 8.4 GB: not a CI test.)"""
    rows = [GOOD, dict(GOOD, timestamp=1, output_length=MAX_TOKENS),
            dict(GOOD, timestamp=2, input_length=MAX_TOKENS, hash_ids=[5])]
    t = ok_run(capsys, "--trace", trace(tmp_path, *rows), "--trace-block-size",
               str(MAX_TOKENS), "--block-size", str(MAX_TOKENS), "--max-num-batched-tokens",
               str(MAX_TOKENS), "--max-num-seqs", str(INT32_MAX), "--router-mode", "kv")
    assert t["num_requests"] == 3


# -- 2. sizes accepted, then failing deep inside ---------------------------------------------------

def test_num_gpu_blocks_beyond_the_pool_is_a_flag_error(tmp_path, capsys):
    line = one_line_error(capsys, "--trace", trace(tmp_path, GOOD),
                          "--num-gpu-blocks", "10000000000")
    assert "argument --num-gpu-blocks: must be <= 268435456, got 10000000000" in line


@pytest.mark.skipif(bool(os.environ.get("DYNOSIM_PURE_PYTHON")),
                    reason="the reference pool allocates 16 B per block up front")
def test_num_gpu_blocks_at_the_bound_runs(tmp_path, capsys):
    ok_run(capsys, "--trace", trace(tmp_path, GOOD), "--num-gpu-blocks", str(MAX_BLOCKS))


@pytest.mark.parametrize("flag", ["--num-workers", "--initial-workers"])
def test_num_workers_is_capped(tmp_path, capsys, flag):
    line = one_line_error(capsys, "--trace", trace(tmp_path, GOOD), flag,
                          str(MAX_WORKERS + 1))
    assert f"argument {flag}: must be <= {MAX_WORKERS}" in line and f"[1, {MAX_WORKERS}]" in line


def test_the_largest_cluster_runs(tmp_path, capsys):
    t = ok_run(capsys, "--trace", trace(tmp_path, GOOD, dict(GOOD, timestamp=3)),
               "--num-workers", str(MAX_WORKERS), "--router-mode", "kv")
    assert t["completed_requests"] == 2


def test_yaml_bound_names_file_line_and_range(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"workload: {{kind: mooncake, path: {trace(tmp_path, GOOD)}}}\n"
                   "engine:\n  block_size: 64\n  num_gpu_blocks: 10000000000\n")
    line = one_line_error(capsys, "--config", str(cfg))
    assert f"{cfg}:4, field 'engine.num_gpu_blocks': must be <= {MAX_BLOCKS}, got " \
        f"10000000000 (allowed (0, {MAX_BLOCKS}])" in line


# -- 3. wrong-typed config values ------------------------------------------------------------

@pytest.mark.parametrize("snippet, field", [
    ("router: {mode: 5}", "router.mode"),
    ("router: {mode: [kv]}", "router.mode"),
    ("timing: {model: 3}", "timing.model"),
    ("engine: {preemption_mode: {a: 1}}", "engine.preemption_mode"),
    ("engine: 7", "engine"),
    ("cluster: {num_workers: '4'}", "cluster.num_workers"),
    ("workload: {kind: mooncake, path: 12}", "workload.path"),
    ("workload: {kind: [mooncake], path: x}", "workload.kind"),
    ("workload: {kind: synthetic, arrival: 5, isl: 10, osl: 10, num_requests: 3}",
     "workload.arrival"),
    ("workload: {kind: synthetic, arrival: {process: poisson, rate: '20'}, isl: 10, osl: 10,"
     " num_requests: 3}", "workload.arrival.rate"),
])
def test_wrong_types_are_one_line_errors(tmp_path, capsys, snippet, field):
    cfg = tmp_path / "c.yaml"
    base = "" if snippet.startswith("workload") else \
        f"workload: {{kind: mooncake, path: {trace(tmp_path, GOOD)}}}\n"
    cfg.write_text(base + snippet + "\n")
    line = one_line_error(capsys, "--config", str(cfg))
    assert f"'{field}'" in line


# -- 4. timestamps beyond the ms-exact range ---------------------------------------------------

@pytest.mark.parametrize("ts", [1e30, 2.0**53, MAX_TIME_MS + 2])
def test_huge_timestamps_are_rejected(tmp_path, capsys, ts):
    path = trace(tmp_path, GOOD, dict(GOOD, timestamp=ts))
    line = one_line_error(capsys, "--trace", path)
    assert f"{path}:2" in line and "field 'timestamp'" in line and "allowed [-" in line


def test_speedup_cannot_push_arrivals_past_the_range(tmp_path, capsys):
    path = trace(tmp_path, GOOD, dict(GOOD, timestamp=4e15))
    line = one_line_error(capsys, "--trace", path, "--arrival-speedup-ratio", "1e-3")
    assert f"{path}:2" in line and "2^52 ms" in line


def test_timestamps_at_the_bound_keep_their_milliseconds(tmp_path, capsys):
    """A trace near the bound (epoch-style ms) keeps a 1 ms gap exactly: the failure mode of
    10^30 (TTFT = E2E = 0) cannot occur below it."""
    t0 = MAX_TIME_MS - 1000
    rc = main(["simulate", "--json", "--quiet", "--trace",
               trace(tmp_path, dict(GOOD, timestamp=t0), dict(GOOD, timestamp=t0 + 1))])
    out, err = capsys.readouterr()
    assert rc == 0, err
    s = json.loads(out)
    assert s["workload"]["span_ms"] == 1.0
    assert s["latency_ms"]["ttft"]["min"] > 0


@pytest.mark.parametrize("flag", ["--max-sim-time-s", "--sla-ttft-ms", "--startup-time"])
def test_time_flags_are_bounded(tmp_path, capsys, flag):
    line = one_line_error(capsys, "--trace", trace(tmp_path, GOOD), flag, "1e300")
    assert f"argument {flag}: must be <= " in line and "allowed (" in line or "allowed [" in line


# -- 5. actions outside the space ----------------------------------------------------------------

ENVS = {"DynoSim-v0": {"config": AUTOSCALE_TINY}, "DynoSimRouting-v0": ROUTING_SMALL}
BAD_ACTIONS = ["1", 1.0, True, False, np.True_, np.array([[0]]), np.array([1]), float("inf"),
               float("nan"), np.float64(1.0), np.array(1.0), None, [1], 2**70, -1, 10**6]
GOOD_ACTIONS = [0, 1, np.int64(1), np.int8(0), np.uint32(1), np.array(1), np.array(0, np.int16)]


@pytest.mark.parametrize("env_id", list(ENVS))
def test_actions_are_checked_like_the_space(env_id):
    env = gym.make(env_id, **ENVS[env_id]).unwrapped
    env.reset(seed=0)
    for bad in BAD_ACTIONS:
        with pytest.raises(ValueError, match=r"outside the action space Discrete\(\d+\)"):
            env.step(bad)
    for good in GOOD_ACTIONS:
        assert env.action_space.contains(good)
        env.reset(seed=0)
        env.step(good)


def test_action_error_names_space_and_value():
    env = gym.make("DynoSimRouting-v0", **ROUTING_SMALL).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError) as info:
        env.step("1")
    msg = str(info.value)
    assert "'1'" in msg and "Discrete(" in msg and "\n" not in msg


# -- 6. stepping after the end ---------------------------------------------------------------

@pytest.mark.parametrize("env_id", list(ENVS))
def test_step_after_truncation_raises_the_same_error(env_id):
    env = gym.make(env_id, **ENVS[env_id]).unwrapped
    env.reset(seed=0)
    done = False
    while not done:
        _, _, term, trunc, _ = env.step(0)
        done = term or trunc
    with pytest.raises(ResetNeeded, match=r"episode is over .*call reset\(\)"):
        env.step(0)
    with pytest.raises(RuntimeError):           # ResetNeeded is a RuntimeError too
        env.step(0)
    env.reset(seed=1)
    env.step(0)                                  # a reset starts a fresh episode


# -- env keywords and the documented schema --------------------------------------------------

@pytest.mark.parametrize("kw, needle", [
    ({"max_gpu_budget": 10**9}, "env.max_gpu_budget"),
    ({"episode_steps": 10**12, "interval_s": 10**6}, "env.episode_steps"),
    ({"observation": {"stack": 10**6}}, "env.observation.stack"),
    ({"engine": {"num_gpu_blocks": 2**40}}, "engine.num_gpu_blocks"),
    ({"interval_s": "10"}, "env.interval_s"),
    ({"reward": 3}, "env.reward"),
])
def test_env_keywords_are_bounded_and_typed(kw, needle):
    with pytest.raises(InputError) as info:
        gym.make("DynoSim-v0", config=AUTOSCALE_TINY, **kw)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_schema_command_lists_every_range(capsys):
    assert main(["config", "schema"]) == 0
    text = capsys.readouterr().out
    for needle in ("engine.num_gpu_blocks", f"(0, {MAX_BLOCKS}]", "--num-gpu-blocks",
                   "env.max_gpu_budget", "mooncake:output_length", "azure:ContextTokens",
                   "--max-gpu-budget", "workload.trace_block_size"):
        assert needle in text, needle
    assert main(["config", "schema", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"config", "env", "workload", "trace", "planner"} <= set(rows)
    # env rows say what DynoSim-v0's default scenario uses where it differs from the section
    from dynosim_gym.config import load_env_config
    env = load_env_config("autoscale_default").env
    by = {r["field"]: r["default"] for r in rows["env"]}
    assert by["env.interval_s"] == f"10.0 (DynoSim-v0: {env.interval_s})" != "10.0"
    assert by["env.max_gpu_budget"] == env.max_gpu_budget == 16     # the same: no note


def test_every_numeric_config_field_has_a_range():
    from dataclasses import fields
    from typing import get_type_hints

    from dynosim_gym.config import NESTED, EnvSection
    from sim.config import SECTIONS
    classes = [*SECTIONS.values(), EnvSection, *NESTED.values()]
    for cls in classes:
        hints = get_type_hints(cls)
        for f in fields(cls):
            if str(hints[f.name]).startswith(("int", "float")) or hints[f.name] in (int, float):
                assert isinstance(f.metadata.get("range"), Range), f"{cls.__name__}.{f.name}"


def test_range_messages():
    r = Range(1, 10, unit="x")
    assert r.violation(5) is None
    assert r.violation(0) == "must be >= 1, got 0 (allowed [1, 10])"
    assert r.violation(11) == "must be <= 10, got 11 (allowed [1, 10])"
    assert Range(0, 1, lo_open=True).violation(0) == "must be > 0, got 0 (allowed (0, 1])"
    assert TRACE_FIELDS["mooncake"]["timestamp"][0].violation(-MAX_TIME_MS) is None
    assert render("markdown").count("|") > 100


# -- new kinds found while fuzzing (tracebacks on main before this change) --------------------

def test_integer_literals_over_4300_digits(tmp_path, capsys):
    """Python refuses to parse ints over 4300 digits (ValueError, not a JSON error)."""
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD)[:-1].replace(
        '"output_length": 10', '"output_length": ' + "9" * 5000) + "}\n")
    line = one_line_error(capsys, "--trace", str(path))
    assert f"{path}:2: invalid JSON" in line


@pytest.mark.parametrize("text, needle", [
    ("workload: " + "[" * 100000 + "]" * 100000 + "\n", "nested too deeply"),
    ("workload: {kind: [mooncake], path: x}\n", "workload.kind"),
])
def test_config_structure_errors(tmp_path, capsys, text, needle):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    assert needle in one_line_error(capsys, "--config", str(cfg))


def test_deeply_nested_trace_line(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + '{"x": ' + "[" * 100000 + "]" * 100000 + "}\n")
    assert f"{path}:2: invalid JSON: nested too deeply" in \
        one_line_error(capsys, "--trace", str(path))


@pytest.mark.parametrize("flag, value", [("--timing", "fixed:1e15,1e15"),
                                         ("--speedup-ratio", "1e-6"),
                                         ("--decode-speedup-ratio", "1e-6")])
def test_pass_times_cannot_leave_the_ms_exact_range(tmp_path, capsys, flag, value):
    """fixed:1e15,1e15 ran to 1.2e13 simulated seconds (3.3e9 GPU-hours) on main."""
    line = one_line_error(capsys, "--trace", trace(tmp_path, GOOD), flag, value)
    assert f"argument {flag}" in line and ("allowed [" in line or "fixed times" in line)


def test_a_deprecated_flag_keeps_a_bad_run_to_one_line(tmp_path, capsys):
    """Found by the flag fuzzer: the deprecation note printed during parsing made a failing
    run's stderr two lines. Notes now wait until the input is known to be good."""
    line = one_line_error(capsys, "--trace", trace(tmp_path, GOOD), "--ttft-sla-ms", "1",
                          "--model", "Qwen/Qwen3-32B")
    assert "go together" in line


@pytest.mark.parametrize("argv", [
    ["train", "--timesteps", "inf"],
    ["train", "--timesteps", "1e30"],
    ["train", "--timesteps", "2.5"],
    ["evaluate", "--policy", "heuristic:load", "--episodes", "2.5"],
    ["train", "--seed", "-1"],
    ["evaluate", "--policy", "heuristic:load", "--episodes", "1e30"],
    ["evaluate", "--policy", "heuristic:load", "--seed", str(2**64)],
    ["evaluate", "--policy", "heuristic:load", "--window-s", "1e300"],
    ["tune", "--policy", "heuristic:load", "--trials", "inf"],
    ["sweep", "interval", "--jobs", str(2**40)],
    ["sweep", "interval", "--max-sim-time-s", "1e300"],
    ["bench", "--repeats", str(2**40)],
    ["search", "--trials", "1e30"],
])
def test_count_and_seed_flags_of_every_command_are_bounded(capsys, argv):
    """Counts, seeds and times of the agent, sweep, bench and search commands are checked at
    parsing against sim.schema (an 'inf' count used to be an OverflowError traceback)."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    _, err = capsys.readouterr()
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err

"""Fuzzing the input boundaries as a hostile user would (issue 13).

Hypothesis generates malformed Mooncake JSONL and Azure CSV traces, YAML run configs,
``dynosim simulate`` flag sets, ``gym.make`` keywords and actions. Every CLI case runs
``dynosim.cli.main`` in-process and must either

* succeed with every arrival accounted for (arrived = completed + rejected + in flight), or
* exit 2 with exactly one line ``dynosim: error: ...`` on stderr,

and never raise (an exception escaping ``main`` is a traceback for the user). Every env
keyword set either builds an env or raises :class:`~sim.errors.InputError` with a one-line
message; every action is accepted exactly when the action space contains it (bools
excluded), else ``ValueError``; ``step`` after the end raises ``ResetNeeded`` in both envs.

CI runs each property on a few dozen derandomized examples (a few hundred cases in all);
``pytest -m expensive tests/test_fuzz.py`` runs ~10,000 and writes its tally to
``FUZZ_REPORT`` (default ``out/fuzz_report.json``) for the README's Reliability section.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import dynosim_gym  # noqa: F401  (registers the envs)
from dynosim_gym.base import ResetNeeded
from dynosim.cli import main
from dynosim.options import FLAGS
from sim.errors import InputError
from sim.schema import INT32_MAX, MAX_BLOCKS, MAX_TIME_MS, MAX_WORKERS

REPO = Path(__file__).resolve().parent.parent
AUTOSCALE_TINY = str(REPO / "envs_configs" / "autoscale_tiny.yaml")
ROUTING_SMALL = {"episode_steps": 3, "rate_min_rps": 1.0, "rate_max_rps": 2.0}

CI_EXAMPLES = int(os.environ.get("DYNOSIM_FUZZ_EXAMPLES", "40"))
EXPENSIVE_EXAMPLES = 1700          # x 6 properties ~ 10,000 cases
TALLY: Counter = Counter()


def _settings(n: int):
    return settings(max_examples=n, deadline=None, database=None,
                    derandomize=not os.environ.get("DYNOSIM_FUZZ_RANDOM"),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# -- running the CLI in-process ------------------------------------------------------------

def run_cli(argv: list[str], kind: str) -> tuple[int, str, str]:
    """``main(argv)`` with captured output; asserts the outcome is clean (see module doc)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except BaseException as exc:          # what the user would see as a traceback
            TALLY[f"{kind}:traceback"] += 1
            raise AssertionError(f"traceback for {argv}: {type(exc).__name__}: {exc}") from exc
    o, e = out.getvalue(), err.getvalue()
    TALLY[f"{kind}:cases"] += 1
    if rc == 0:
        summary = json.loads(o)
        t = summary["totals"]
        lost = t["num_requests"] - (t["completed_requests"] + t["rejected_requests"]
                                    + t["in_flight_requests"])
        if lost:
            TALLY[f"{kind}:lost_requests"] += abs(lost)
        assert lost == 0, (argv, t)
        TALLY[f"{kind}:ran"] += 1
    else:
        lines = e.strip().splitlines()
        ok = rc == 2 and len(lines) == 1 and lines[0].startswith("dynosim: error: ") \
            and "Traceback" not in e
        if not ok:
            TALLY[f"{kind}:bad_error"] += 1
        assert ok, (argv, rc, e)
        TALLY[f"{kind}:exit2"] += 1
    return rc, o, e


def simulate(*argv: str, kind: str) -> tuple[int, str, str]:
    return run_cli(["simulate", "--json", "--quiet", *argv], kind)


@contextlib.contextmanager
def tmpdir():
    with tempfile.TemporaryDirectory(prefix="dynosim-fuzz-") as d:
        yield Path(d)


# -- hostile values --------------------------------------------------------------------------

EXTREME_INTS = [0, -1, 1, 2, 63, 64, 512, INT32_MAX, INT32_MAX + 1, 2**32, 2**53 + 1,
                2**63 - 1, 2**63, 2**64, 10**20, 10**30, -(2**63), MAX_BLOCKS, MAX_BLOCKS + 1,
                MAX_WORKERS, MAX_WORKERS + 1, int(MAX_TIME_MS), int(MAX_TIME_MS) + 1]
EXTREME_FLOATS = [0.0, -0.0, 1.0, 0.5, 1e-300, 1e-7, 1e300, -1e300, math.inf, -math.inf,
                  math.nan, MAX_TIME_MS, MAX_TIME_MS * 2, 1e30]

small_ints = st.integers(min_value=-3, max_value=300)
any_int = st.one_of(small_ints, st.sampled_from(EXTREME_INTS),
                    st.integers(min_value=-(2**70), max_value=2**70))
any_float = st.one_of(st.sampled_from(EXTREME_FLOATS), st.floats(allow_nan=True))
scalar = st.one_of(any_int, any_float, st.booleans(), st.none(),
                   st.text(max_size=12), st.sampled_from(["1", "1e3", "nan", "inf", "kv",
                                                          "round_robin", "", "0x10", "١٢"]))
hostile = st.recursive(scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)
#: Half plausible, half hostile: so that a good share of cases gets past parsing and runs.
value = st.one_of(st.integers(1, 600), st.floats(0.5, 600), hostile)


# -- Mooncake JSONL ----------------------------------------------------------------------------

GOOD_ROW = {"timestamp": 0, "input_length": 600, "output_length": 10, "hash_ids": [1, 2]}
MOONCAKE_FIELDS = ["timestamp", "created_time", "input_length", "input_tokens",
                   "output_length", "output_tokens", "hash_ids", "session_id", "delay",
                   "delay_ms"]


@st.composite
def mooncake_rows(draw) -> list[str]:
    """A few rows, each a valid row (increasing timestamps) with some fields mutated,
    dropped or added, or a line of garbage."""
    n = draw(st.integers(1, 6))
    lines = []
    for i in range(n):
        row: dict[str, Any] = dict(GOOD_ROW, timestamp=i * draw(st.integers(0, 2000)),
                                   hash_ids=[i % 3, 100 + i],
                                   output_length=draw(st.integers(1, 40)))
        for _ in range(draw(st.integers(0, 2))):
            key = draw(st.sampled_from(MOONCAKE_FIELDS))
            action = draw(st.sampled_from(["set", "drop", "hash_item"]))
            if action == "drop":
                row.pop(key, None)
            elif action == "hash_item":
                ids = row.get("hash_ids")
                row["hash_ids"] = (ids if isinstance(ids, list) else [0]) + [draw(value)]
            else:
                row[key] = draw(value)
        kind = draw(st.sampled_from(["json"] * 8 + ["garbage", "blank"]))
        if kind == "garbage":
            lines.append(draw(st.text(max_size=30)).replace("\n", " "))
        elif kind == "blank":
            lines.append("")
        else:
            lines.append(json.dumps(row))      # NaN and Infinity literals included
    return lines


def mooncake_flags():
    return st.lists(st.sampled_from([
        ["--trace-block-size", "512"], ["--trace-block-size", "1"], ["--router-mode", "kv"],
        ["--block-size", "16"], ["--num-gpu-blocks", "64"], ["--arrival-speedup-ratio", "1e-6"],
        ["--arrival-speedup-ratio", "1e6"], ["--num-workers", "3"], ["--max-sim-time-s", "5"],
        ["--max-model-len", "700"], ["--no-chunked-prefill"], ["--max-num-batched-tokens", "100"],
    ]), max_size=3).map(lambda xs: [a for x in xs for a in x])


def check_mooncake(lines: list[str], flags: list[str], kind: str = "mooncake") -> None:
    with tmpdir() as d:
        path = d / "t.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
        simulate("--trace", str(path), *flags, kind=kind)


# -- Azure CSV -------------------------------------------------------------------------------

AZ_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"
AZ_VALUES = ["1", "0", "-1", "600", "2147483647", "2147483648", "9" * 30, "9" * 5000, "1.5",
             "1e3", " 7 ", "", "abc", "٣", "+5", "0x10"]
AZ_TIMES = ["2023-11-16 18:15:46.6805900", "2023-11-16 18:15:47", "0001-01-01 00:00:00",
            "9999-12-31 23:59:59.9999999", "2023-02-30 00:00:00", "2023-11-16 25:00:00",
            "2023-11-16T18:15:48.1", "yesterday", "", "2023-11-16 18:15:46.1234567890"]


@st.composite
def azure_lines(draw) -> list[str]:
    header = draw(st.sampled_from([AZ_HEADER] * 6 + ["TIMESTAMP,ContextTokens", "",
                                                    "GeneratedTokens,TIMESTAMP,ContextTokens",
                                                    "a,b,c"]))
    lines = [header]
    for i in range(draw(st.integers(1, 5))):
        if draw(st.integers(0, 3)) == 0:
            ts = draw(st.sampled_from(AZ_TIMES))
            inp = draw(st.sampled_from(AZ_VALUES))
            out = draw(st.sampled_from(AZ_VALUES))
        else:
            ts, inp, out = f"2023-11-16 18:15:{40 + i:02d}.5", str(draw(st.integers(1, 900))), \
                str(draw(st.integers(1, 30)))
        cols = [ts, inp, out]
        if draw(st.integers(0, 9)) == 0:
            cols = cols[:draw(st.integers(0, 2))] + (["x"] if draw(st.booleans()) else [])
        lines.append(",".join(cols))
    return lines


def check_azure(lines: list[str], flags: list[str], kind: str = "azure") -> None:
    with tmpdir() as d:
        path = d / "t.csv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        simulate("--trace", str(path), "--trace-format", "azure", *flags, kind=kind)


# -- YAML configs ----------------------------------------------------------------------------

SECTION_KEYS = {
    "cluster": ["num_workers", "gpus_per_worker", "startup_time_s"],
    "engine": ["block_size", "num_gpu_blocks", "max_num_seqs", "max_num_batched_tokens",
               "max_model_len", "enable_prefix_caching", "preemption_mode"],
    "timing": ["model", "speedup_ratio", "decode_speedup_ratio"],
    "router": ["mode", "overlap_score_credit", "temperature", "prefill_load_scale"],
    "sla": ["ttft_ms", "itl_ms", "e2e_ms"],
    "run": ["seed", "max_sim_time_s", "exact_steps"],
    "planner": ["kind", "kind", "interval_s", "max_gpu_budget", "min_endpoint", "load_predictor",
                "fpm_samples_per_interval", "max_num_fpm_samples", "context_length",
                "load_scaling_down_sensitivity", "ttft_sla_ms"],
}
WORKLOAD_KEYS = ["num_requests", "duration_s", "trace_block_size", "turns_per_session",
                 "inter_turn_delay_ms", "num_prefix_groups", "shared_prefix_ratio", "isl", "osl",
                 "arrival"]
ARRIVAL_KEYS = ["process", "rate", "cv", "concurrency", "start_rate", "end_rate", "duration_s",
                "mean_rate", "amplitude", "period_s"]
TIMING_SPECS = ["polynomial", "fixed:5,1", "fixed:1e300,1", "fixed:1,0", "fixed:nan,1",
                "fixed:", "table:", "gpu:a:b:c:d", "gpu:Qwen/Qwen3-32B:h200_sxm:vllm:tp99999",
                "gpu:Qwen/Qwen3-32B:h200_sxm:vllm:2"]


@st.composite
def yaml_configs(draw) -> str:
    """A small synthetic-workload config with hostile values in a few places."""
    cfg: dict[str, Any] = {
        "workload": {"kind": "synthetic", "arrival": {"process": "poisson", "rate": 20},
                     "isl": 300, "osl": {"dist": "uniform", "lo": 2, "hi": 20},
                     "num_requests": draw(st.integers(1, 40))},
        "cluster": {"num_workers": 2}, "engine": {"num_gpu_blocks": 256}, "run": {"seed": 1},
    }
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(["section", "workload", "arrival", "top", "timing"]))
        if where == "section":
            sec = draw(st.sampled_from(sorted(SECTION_KEYS)))
            key = draw(st.one_of(st.sampled_from(SECTION_KEYS[sec]), st.text(max_size=5)))
            if not isinstance(cfg.get(sec), dict):
                cfg[sec] = {}
            cfg[sec][key] = draw(st.sampled_from(["load", "throughput"])) \
                if key == "kind" and draw(st.booleans()) else draw(value)
        elif where == "workload" and isinstance(cfg["workload"], dict):
            cfg["workload"][draw(st.sampled_from(WORKLOAD_KEYS))] = draw(value)
        elif where == "arrival" and isinstance(cfg["workload"], dict):
            arr = cfg["workload"].setdefault("arrival", {})
            if isinstance(arr, dict):
                arr[draw(st.sampled_from(ARRIVAL_KEYS))] = draw(value)
        elif where == "timing":
            cfg["timing"] = {"model": draw(st.sampled_from(TIMING_SPECS))}
        else:
            cfg[draw(st.sampled_from([*SECTION_KEYS, "workload", "extra"]))] = draw(hostile)
    # valid but long runs are not the point: keep the synthetic stream short
    wl = cfg.get("workload")
    if isinstance(wl, dict) and isinstance(wl.get("num_requests"), int) \
            and not isinstance(wl.get("num_requests"), bool) and wl["num_requests"] > 50:
        wl["num_requests"] = 50
    if draw(st.integers(0, 19)) == 0:
        return draw(st.text(max_size=60))          # not even YAML, maybe
    return yaml.safe_dump(cfg, allow_unicode=True)


def check_yaml(text: str, kind: str = "yaml") -> None:
    with tmpdir() as d:
        path = d / "c.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        # A cut-off keeps valid-but-huge synthetic streams (rate 10^6 req/s) short.
        simulate("--config", str(path), "--max-sim-time-s", "20", kind=kind)


# -- flag sets -------------------------------------------------------------------------------

FLAG_VALUES = ["0", "-1", "1", "2", "3", "64", "0.5", "1e20", "10000000000", "2147483648",
               "268435457", "4097", "9" * 40, "nan", "inf", "-inf", "abc", "", "1e-300",
               "lifo", "kv", "round_robin", "fixed:5,1"]
EXTRA_FLAGS = ["--trace-block-size", "--arrival-speedup-ratio", "--tp", "--planner-interval",
               "--max-gpu-budget", "--min-endpoint", "--ttft-sla-ms", "--itl-sla-ms",
               "--startup-time", "--initial-workers"]
SWITCH_FLAGS = ["--exact-steps", "--no-prefix-caching", "--no-chunked-prefill"]


@st.composite
def flag_sets(draw) -> list[str]:
    argv: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        flag = draw(st.sampled_from([*FLAGS, *EXTRA_FLAGS, *SWITCH_FLAGS]))
        if flag in SWITCH_FLAGS:
            argv.append(flag)
        else:
            argv += [flag, draw(st.one_of(st.sampled_from(["1", "2", "4", "64", "100", "0.5"]),
                                          st.sampled_from(FLAG_VALUES),
                                          st.text(min_size=0, max_size=8)))]
    if draw(st.booleans()):
        argv += ["--planner", draw(st.sampled_from(["load", "throughput", "magic"]))]
    if draw(st.integers(0, 3)) == 0:
        argv += ["--model", "Qwen/Qwen3-32B", "--gpu", "h200_sxm", "--backend", "vllm"]
    return argv


def check_flags(argv: list[str], trace: Path, kind: str = "flags") -> None:
    # --max-sim-time-s first: a later fuzzed one overrides it, as a user's would.
    simulate("--trace", str(trace), "--max-sim-time-s", "60", *argv, kind=kind)


# -- env keywords and actions ------------------------------------------------------------------

ENV_KEYS = ["interval_s", "episode_steps", "max_gpu_budget", "min_endpoint", "initial_workers",
            "eval_fraction", "rate_min_rps", "rate_max_rps", "day_period_s", "timeout_s",
            "planner_interval_s", "scenarios", "split", "action", "observation", "reward",
            "engine", "cluster", "env.reward.gpu_weight", "env.observation.stack",
            "engine.num_gpu_blocks", "cluster.num_workers", "sla.ttft_ms", "bogus"]


def check_env_keywords(env_id: str, kw: dict[str, Any], kind: str = "env_keywords") -> None:
    base = {"config": AUTOSCALE_TINY} if env_id == "DynoSim-v0" else dict(ROUTING_SMALL)
    try:
        env = gym.make(env_id, **{**base, **kw})
    except InputError as exc:
        TALLY[f"{kind}:cases"] += 1
        TALLY[f"{kind}:rejected"] += 1
        assert "\n" not in str(exc), str(exc)
        return
    except Exception as exc:       # anything else would reach the user as a traceback
        TALLY[f"{kind}:traceback"] += 1
        raise AssertionError(f"{env_id} {kw}: {type(exc).__name__}: {exc}") from exc
    TALLY[f"{kind}:cases"] += 1
    TALLY[f"{kind}:built"] += 1
    env.close()


_ENVS: dict[str, Any] = {}


def env_for(env_id: str):
    """One env per id for the whole module (building one costs ~0.1 s)."""
    if env_id not in _ENVS:
        base = {"config": AUTOSCALE_TINY} if env_id == "DynoSim-v0" else dict(ROUTING_SMALL)
        _ENVS[env_id] = gym.make(env_id, **base).unwrapped
    return _ENVS[env_id]


ACTIONS = st.one_of(
    st.integers(-3, 12), st.sampled_from(EXTREME_INTS), any_float, st.booleans(),
    st.sampled_from([np.True_, np.int8(1), np.uint8(2), np.int32(-1), np.int64(3),
                     np.uint64(2**63), np.float32(1.0), np.float64(np.nan), np.array(1),
                     np.array([1]), np.array([[0]]), np.array(1.0), np.array(True),
                     np.array([], dtype=np.int64), np.array(2, dtype=np.uint16)]),
    st.text(max_size=3), st.none(), st.lists(st.integers(0, 3), max_size=2),
    st.integers(-1, 5).map(lambda i: np.array(i, dtype=np.int64)),
)


def expected_ok(space, action) -> bool:
    if isinstance(action, (bool, np.bool_)):
        return False
    try:
        return bool(space.contains(action))
    except (OverflowError, TypeError, ValueError):     # contains() itself chokes on 2**70
        return False


def check_action(env_id: str, action: Any, kind: str = "actions") -> None:
    env = env_for(env_id)
    env.reset(seed=0)
    ok = expected_ok(env.action_space, action)
    TALLY[f"{kind}:cases"] += 1
    if ok:
        env.step(action)
        TALLY[f"{kind}:accepted"] += 1
    else:
        with pytest.raises(ValueError, match="outside the action space"):
            env.step(action)
        TALLY[f"{kind}:rejected"] += 1


# -- properties: CI size, and the expensive ~10,000-case run --------------------------------

@pytest.fixture(scope="module")
def good_trace():
    with tmpdir() as d:
        path = d / "good.jsonl"
        path.write_text("".join(json.dumps(dict(GOOD_ROW, timestamp=10 * i, hash_ids=[i, 7]))
                                + "\n" for i in range(5)))
        yield path


def _mooncake(data) -> None:
    check_mooncake(data.draw(mooncake_rows()), data.draw(mooncake_flags()))


def _azure(data) -> None:
    check_azure(data.draw(azure_lines()), data.draw(mooncake_flags().map(
        lambda a: [x for i, x in enumerate(a) if "--trace-block-size" not in a[max(0, i - 1):i + 1]])))


def _yaml(data) -> None:
    check_yaml(data.draw(yaml_configs()))


def _env_keywords(data) -> None:
    env_id = data.draw(st.sampled_from(["DynoSim-v0", "DynoSimRouting-v0"]))
    kw = data.draw(st.dictionaries(st.sampled_from(ENV_KEYS), st.one_of(
        st.integers(1, 8), st.floats(0.5, 60), hostile), min_size=1, max_size=2))
    check_env_keywords(env_id, kw)


def _actions(data) -> None:
    env_id = data.draw(st.sampled_from(["DynoSim-v0", "DynoSimRouting-v0"]))
    check_action(env_id, data.draw(ACTIONS))


@given(st.data())
@_settings(CI_EXAMPLES)
def test_fuzz_mooncake_traces(data) -> None:
    _mooncake(data)


@given(st.data())
@_settings(CI_EXAMPLES)
def test_fuzz_azure_traces(data) -> None:
    _azure(data)


@given(st.data())
@_settings(CI_EXAMPLES)
def test_fuzz_yaml_configs(data) -> None:
    _yaml(data)


@given(st.data())
@_settings(CI_EXAMPLES)
def test_fuzz_flag_sets(good_trace, data) -> None:
    check_flags(data.draw(flag_sets()), good_trace)


@given(st.data())
@_settings(CI_EXAMPLES)
def test_fuzz_env_keywords(data) -> None:
    _env_keywords(data)


@given(st.data())
@_settings(CI_EXAMPLES * 2)
def test_fuzz_actions(data) -> None:
    _actions(data)


@pytest.mark.expensive
def test_fuzz_expensive_run(good_trace) -> None:
    """~10,000 cases over every boundary; writes the tally (cases, tracebacks, lost requests,
    wall time) as JSON to FUZZ_REPORT."""
    TALLY.clear()
    t0 = time.perf_counter()
    per = int(os.environ.get("DYNOSIM_FUZZ_EXPENSIVE", EXPENSIVE_EXAMPLES))
    props = {
        "mooncake": _mooncake, "azure": _azure, "yaml": _yaml, "env_keywords": _env_keywords,
        "actions": _actions,
        "flags": lambda data: check_flags(data.draw(flag_sets()), good_trace),
    }
    walls = {}
    for name, prop in props.items():
        t = time.perf_counter()
        given(st.data())(_settings(per)(prop))()
        walls[name] = round(time.perf_counter() - t, 1)
        print(f"fuzz {name}: {per} examples in {walls[name]} s", flush=True)
    cases = sum(v for k, v in TALLY.items() if k.endswith(":cases"))
    report = {"cases": cases,
              "tracebacks": sum(v for k, v in TALLY.items() if k.endswith(":traceback")),
              "bad_errors": sum(v for k, v in TALLY.items() if k.endswith(":bad_error")),
              "lost_requests": sum(v for k, v in TALLY.items() if k.endswith(":lost_requests")),
              "wall_s": round(time.perf_counter() - t0, 1), "wall_s_per_property": walls,
              "tally": dict(sorted(TALLY.items()))}
    out = Path(os.environ.get("FUZZ_REPORT", REPO / "out" / "fuzz_report.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    assert report["tracebacks"] == report["bad_errors"] == report["lost_requests"] == 0

"""Run configs: Dynamo defaults, YAML loading, validation messages, overrides, building."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.config import (BUNDLED_TRACES, DATA_DIR, RunConfig, build_simulation, default_config,
                        load_config, parse_config)
from sim.engine import EngineConfig
from sim.errors import InputError
from sim.router import KvRouterConfig
from sim.simulator import ClusterConfig

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "envs_configs").glob("*.yaml"))
SYNTH = ("workload:\n  kind: synthetic\n  arrival: {process: poisson, rate: 50}\n"
         "  isl: 256\n  osl: 8\n  num_requests: 40\n")


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path, build: bool = False) -> InputError:
    with pytest.raises(InputError) as info:
        cfg = load_config(path)
        if build:
            build_simulation(cfg)
    return info.value


# -- defaults and bundled configs -----------------------------------------------------------

def test_defaults_are_the_cores_and_dynamos() -> None:
    cfg = RunConfig()
    assert asdict(cfg.engine) == asdict(EngineConfig())
    assert asdict(cfg.cluster) == asdict(ClusterConfig())
    router = asdict(cfg.router)
    assert router.pop("mode") == "round_robin"
    assert router == asdict(KvRouterConfig())
    d = default_config()
    assert d["engine"]["block_size"] == 64 and d["engine"]["num_gpu_blocks"] == 16384
    assert d["engine"]["max_num_seqs"] == 256 and d["engine"]["max_num_batched_tokens"] == 8192
    assert d["timing"] == {"model": "polynomial", "speedup_ratio": 1.0,
                           "decode_speedup_ratio": 1.0}
    assert d["workload"] is None


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_bundled_configs_load(path: Path) -> None:
    if "\nenv:" in path.read_text():          # an environment config (dynosim_gym)
        from dynosim_gym.config import load_env_config
        cfg = load_env_config(path).sim
    else:
        cfg = load_config(path)
    assert cfg.workload is not None and cfg.source == str(path)
    if "path" in cfg.workload:
        assert Path(cfg.workload["path"]).is_file()


def test_expected_configs_exist() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"demo", "parity_a", "parity_b", "parity_c", "azure_small", "synthetic_poisson",
            "tiny"} <= names
    demo = load_config(REPO / "envs_configs" / "demo.yaml")
    assert (demo.cluster.num_workers, demo.router.mode, demo.engine.block_size) == \
        (8, "round_robin", 512)
    c = load_config(REPO / "envs_configs" / "parity_c.yaml")
    assert (c.cluster.num_workers, c.router.mode, c.engine.block_size,
            c.engine.num_gpu_blocks) == (4, "kv", 64, 4096)


def test_bundled_traces_present() -> None:
    for name in BUNDLED_TRACES.values():
        assert (DATA_DIR / name).stat().st_size > 100_000
    assert (DATA_DIR / "LICENSE-APACHE").is_file() and (DATA_DIR / "LICENSE-CC-BY-4.0").is_file()


# -- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("section,key,value,needle", [
    ("engine", "block_size", 0, "must be > 0"),
    ("engine", "block_size", -64, "must be > 0"),
    ("engine", "num_gpu_blocks", 0, "must be > 0"),
    ("engine", "max_num_seqs", 0, "must be >= 1"),
    ("engine", "max_num_batched_tokens", 0, "must be >= 1"),
    ("engine", "max_model_len", 0, "must be >= 1"),
    ("engine", "preemption_mode", "random", "expected one of lifo, fifo"),
    ("engine", "block_size", "'64'", "expected an integer"),
    ("engine", "block_size", 64.5, "expected an integer"),
    ("engine", "block_size", "true", "expected an integer"),
    ("engine", "enable_prefix_caching", 1, "expected true or false"),
    ("cluster", "num_workers", 0, "must be >= 1"),
    ("cluster", "gpus_per_worker", 0, "must be >= 1"),
    ("cluster", "startup_time_s", -1, "must be >= 0"),
    ("router", "mode", "fastest", "expected one of round_robin"),
    ("router", "temperature", -0.1, "must be >= 0"),
    ("timing", "speedup_ratio", 0, "must be >= 0.001"),
    ("timing", "decode_speedup_ratio", -2, "must be >= 0.001"),
    ("timing", "model", "'fixed:1'", "expected fixed:PREFILL_MS,DECODE_MS"),
    ("timing", "model", "linear", "unknown timing model"),
    ("timing", "model", "'fixed:-1,5'", "prefill >= 0"),
    ("run", "max_sim_time_s", 0, "must be > 0"),
    ("run", "seed", -1, "must be >= 0"),
    ("run", "exact_steps", "yes please", "expected true or false"),
    ("sla", "ttft_ms", 0, "must be > 0"),
    ("sla", "itl_ms", ".inf", "finite"),
])
def test_bad_values_name_file_line_and_field(tmp_path: Path, section: str, key: str,
                                             value: object, needle: str) -> None:
    path = write(tmp_path, f"{SYNTH}{section}:\n  {key}: {value}\n")
    err = error_of(path)
    assert err.file == str(path) and err.field == f"{section}.{key}"
    assert err.line == 8                       # the key's own line in the YAML
    assert needle in str(err)
    assert str(err).startswith(f"{path}:8, field '{section}.{key}'")
    assert "\n" not in str(err)


@pytest.mark.parametrize("text,field,line", [
    ("engine:\n  blok_size: 64\n", "engine.blok_size", 2),
    ("engin:\n  block_size: 64\n", "engin", 1),
    ("run: {seed: 1, sed: 2}\n", "run.sed", 1),
])
def test_unknown_keys(tmp_path: Path, text: str, field: str, line: int) -> None:
    err = error_of(write(tmp_path, SYNTH + text))
    assert f"unknown key '{field}'" in str(err)
    assert (err.field, err.line) == (field, line + SYNTH.count("\n"))


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, "engine:\n  blok_size: 64\n"))
    assert "did you mean 'block_size'" in str(err)


def test_unknown_workload_key_is_located_at_build(tmp_path: Path) -> None:
    path = write(tmp_path, SYNTH + "  num_request: 3\n")
    err = error_of(path, build=True)
    assert (err.file, err.line, err.field) == (str(path), 7, "workload.num_request")


def test_bad_workload_value_is_located_at_build(tmp_path: Path) -> None:
    path = write(tmp_path, SYNTH.replace("rate: 50", "rate: -3"))
    err = error_of(path, build=True)
    assert (err.file, err.line, err.field) == (str(path), 3, "workload.arrival.rate")


def test_missing_workload(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster: {num_workers: 2}\n")
    err = error_of(path, build=True)
    assert (err.file, err.field) == (str(path), "workload")


@pytest.mark.parametrize("text,line", [
    ("engine:\n  block_size: [64\n", 3),
    ("engine:\n block_size: 64\n  max_num_seqs: 3\n", 3),
    ("engine: {block_size: 64\n", 2),
    ("a: 1\n---\nb: 2\n", 2),
    ("engine:\n\tblock_size: 64\n", 2),
])
def test_yaml_syntax_error_is_one_line_with_file_and_line(tmp_path: Path, text: str,
                                                           line: int) -> None:
    path = write(tmp_path, text)
    err = error_of(path)
    assert (err.file, err.line) == (str(path), line)
    assert str(err).startswith(f"{path}:{line}: invalid YAML")
    assert "\n" not in str(err)


def test_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, "engine:\n  block_size: 64\n  block_size: 32\n"))
    assert (err.line, err.field) == (3, "engine.block_size") and "duplicate" in str(err)


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "42\n", "engine: 5\n", "workload: [1]\n"])
def test_wrong_shapes(tmp_path: Path, text: str) -> None:
    err = error_of(write(tmp_path, text))
    assert "expected a mapping" in str(err)


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "# nothing\n"))
    assert cfg == RunConfig()


def test_types_are_coerced_sensibly(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SYNTH + "engine: {num_gpu_blocks: 1.6384e+4}\n"
                            "timing: {speedup_ratio: 2}\nrouter: {mode: kv_router}\n"))
    assert cfg.engine.num_gpu_blocks == 16384 and type(cfg.engine.num_gpu_blocks) is int
    assert cfg.timing.speedup_ratio == 2.0 and type(cfg.timing.speedup_ratio) is float
    assert cfg.router.mode == "kv"


@pytest.mark.parametrize("text,value", [("1e4", 1e4), ("1E4", 1e4), ("-2.5e-1", -0.25),
                                        ("+.5e1", 5.0), ("16384", 16384), ("1e4x", "1e4x"),
                                        ("e4", "e4"), ("1.0", 1.0)])
def test_yaml_reads_exponent_floats_as_yaml_1_2_does(tmp_path: Path, text: str, value) -> None:
    """PyYAML's YAML 1.1 rule needs a dot, so ``1e4`` was the string "1e4" (then a type
    error, or a string in a ``--set``); every YAML the project reads follows YAML 1.2."""
    from sim.config import yaml_load
    assert yaml_load(f"x: {text}\n") == {"x": value}
    assert type(yaml_load(text)) is type(value)
    cfg = load_config(write(tmp_path, SYNTH + "engine: {num_gpu_blocks: 1.6384e4}\n"
                            "timing: {speedup_ratio: 2e0}\n"))
    assert cfg.engine.num_gpu_blocks == 16384 and cfg.timing.speedup_ratio == 2.0


def test_set_values_follow_yaml_1_2() -> None:
    from agents.cli import _set
    assert _set("planner.max_gpu_budget=1e9") == ("planner.max_gpu_budget", 1e9)
    assert _set("reward.gpu_weight=8e-3") == ("reward.gpu_weight", 0.008)


# -- paths ------------------------------------------------------------------------------------

def test_relative_trace_path_resolves_against_the_yaml(tmp_path: Path, monkeypatch) -> None:
    sub = tmp_path / "configs"
    sub.mkdir()
    rows = [{"timestamp": i * 100, "input_length": 600, "output_length": 4,
             "hash_ids": [1, i + 2]} for i in range(5)]
    (sub / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write(sub, "workload: {kind: mooncake, path: t.jsonl}\nengine: {block_size: 512}\n")
    monkeypatch.chdir(tmp_path)             # not the YAML's directory
    cfg = load_config("configs/run.yaml")
    assert Path(cfg.workload["path"]) == (sub / "t.jsonl").resolve()
    result = build_simulation(cfg).run()
    assert result.summary["totals"]["completed_requests"] == 5


def test_missing_trace_is_located_in_the_config(tmp_path: Path) -> None:
    path = write(tmp_path, "engine: {block_size: 64}\nworkload: {kind: mooncake, path: no.jsonl}\n")
    err = error_of(path, build=True)
    assert (err.file, err.line, err.field) == (str(path), 2, "workload.path")
    assert "no.jsonl" in str(err)


def test_bundled_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path,
                            "workload: {kind: azure, path: 'bundled:azure_conversation'}\n"))
    assert Path(cfg.workload["path"]) == DATA_DIR / BUNDLED_TRACES["azure_conversation"]
    err = error_of(write(tmp_path, "workload: {kind: azure, path: 'bundled:nope'}\n"))
    assert err.field == "workload.path" and "bundled:azure_conversation" in str(err)


def test_timing_table_path_resolves_and_is_checked(tmp_path: Path) -> None:
    path = write(tmp_path, SYNTH + "timing: {model: 'table:tables/t.npz'}\n")
    cfg = load_config(path)
    assert cfg.timing.model == f"table:{tmp_path / 'tables' / 't.npz'}"
    err = error_of(path, build=True)
    assert (err.file, err.line, err.field) == (str(path), 7, "timing.model")


# -- overrides and building -------------------------------------------------------------------

def test_overrides_dotted_and_nested(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SYNTH + "engine: {block_size: 32}\n"))
    new = cfg.with_overrides({"engine.num_gpu_blocks": 100, "router": {"mode": "kv_router"},
                              "workload.num_requests": 5, "workload.arrival.rate": 7})
    assert (new.engine.block_size, new.engine.num_gpu_blocks, new.router.mode) == (32, 100, "kv")
    assert new.workload["num_requests"] == 5 and new.workload["osl"] == 8
    assert new.workload["arrival"] == {"process": "poisson", "rate": 7}
    assert build_simulation(new).workload.describe()["arrival"]["rate"] == 7
    assert cfg.engine.num_gpu_blocks == 16384 and cfg.workload["num_requests"] == 40


def test_bad_override_names_its_source(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SYNTH))
    with pytest.raises(InputError) as info:
        cfg.with_overrides({"cluster.num_workers": 0}, source="command line")
    assert (info.value.file, info.value.field) == ("command line", "cluster.num_workers")
    with pytest.raises(InputError, match="unknown key 'engine.blocksize'"):
        cfg.with_overrides({"engine.blocksize": 1})


def test_overriding_the_workload_kind_replaces_the_block(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SYNTH))
    new = cfg.with_overrides({"workload": {"kind": "azure", "path": "bundled:azure_conversation"}})
    assert set(new.workload) == {"kind", "path"}


def test_round_trip() -> None:
    cfg = load_config(REPO / "envs_configs" / "tiny.yaml")
    assert parse_config(cfg.to_dict()) == cfg


def test_build_and_run_tiny_with_sla() -> None:
    cfg = load_config(REPO / "envs_configs" / "tiny.yaml").with_overrides(
        {"sla.ttft_ms": 60.0, "run.max_sim_time_s": 5.0})
    sim = build_simulation(cfg)
    assert len(sim.workers) == cfg.cluster.num_workers
    summary = sim.run().summary
    t = summary["totals"]
    assert t["num_requests"] == t["completed_requests"] + t["rejected_requests"] + \
        t["in_flight_requests"]
    assert t["cut_off_ms"] == 5000.0
    assert summary["goodput"]["sla"] == {"ttft_ms": 60.0}


def test_seed_drives_synthetic_workloads() -> None:
    cfg = load_config(REPO / "envs_configs" / "tiny.yaml")

    def arrivals(c: RunConfig) -> list[float]:
        return [r.arrival_ms for r in build_simulation(c).workload][:20]

    assert arrivals(cfg) == arrivals(cfg)
    assert arrivals(cfg) != arrivals(cfg.with_overrides({"run.seed": 1}))


@given(st.text(min_size=1, max_size=12))
def test_an_unknown_key_echoed_in_an_error_stays_on_one_line(key) -> None:
    """Keys come from user YAML and ``gym.make`` keywords; one with a newline or another
    control character (the expensive fuzz drew ``env.action.\\n``) must not split the
    one-line error."""
    from dynosim_gym.config import load_env_config
    for kw in ({"action": {key: 1}}, {key: 1}):
        try:
            load_env_config(**kw)
        except InputError as exc:
            assert "\n" not in str(exc) and "\r" not in str(exc)
            assert str(exc).isprintable()

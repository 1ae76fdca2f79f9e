"""Re-check 7 findings 3, 6, 7, 8, 10, 11, 13 (fix D): bad input to the CLI and to the
scripts gives one stderr line naming the flag, file or field, exit 2, no traceback."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}",
                                                  ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(main, argv, capsys) -> tuple[int, str]:
    """(exit code, stderr) of ``main(argv)``; argparse's usage errors exit via SystemExit."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    return rc, capsys.readouterr().err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- finding 3: scripts/residual_base.py and scripts/plot_learned.py ----------------------------

@pytest.mark.parametrize("argv, words", [
    (["--episodes", "0"], ["--episodes", ">= 1"]),
    (["--seed", "-1"], ["--seed"]),
    (["--offset", "9"], ["flag '--offset'", "outside", "[-2, 4]"]),
    (["--set", "env.action.type=delta"], ["env.action.type", "residual", "'delta'"]),
    (["--set", "env.action.residual_offsets=[1,2]"], ["residual_offsets"]),
    (["--set", "env.action.scale_down_window_s=-1"], ["scale_down_window_s"]),
])
def test_residual_base_bad_input_is_one_line_exit_2(argv, words, capsys):
    rc, err = _run(_script("residual_base").main, argv, capsys)
    assert rc == 2
    line = _one_line(err)
    for w in words:
        assert w in line, line


@pytest.mark.parametrize("argv, words", [
    (["--policy", "heuristic:nope"], ["--policy", "unknown heuristic"]),
    (["--compare", "heuristic:nope"], ["--compare", "unknown heuristic"]),
    (["--seed", "-1"], ["--seed"]),
    (["--first-of", "nope"], ["--first-of", "unknown family"]),
    (["--first-of", "diurnal_swing"], ["--first-of", "training family"]),
])
def test_plot_learned_bad_input_is_one_line_exit_2(argv, words, capsys, tmp_path):
    rc, err = _run(_script("plot_learned").main,
                   argv + ["--out", str(tmp_path / "x.png")], capsys)
    assert rc == 2
    line = _one_line(err)
    for w in words:
        assert w in line, line
    assert not (tmp_path / "x.png").exists()


# -- finding 6: the env's request cap, refused after the config loads ---------------------------

def _cli(argv, capsys) -> tuple[int, str, str]:
    from dynosim.cli import main
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("key", ["env.rate_max_rps", "rate_max_rps"])
def test_request_cap_error_names_the_set_flag(key, capsys):
    rc, _, err = _cli(["evaluate", "--policy", "heuristic:static:4", "--episodes", "1",
                       "--quiet", "--set", f"{key}=1e6"], capsys)
    assert rc == 2
    line = _one_line(err)
    assert line.startswith(f"dynosim: error: flag '--set {key}': "), line
    assert "2,000,000" in line and "overrides" not in line


def test_schema_mentions_the_request_cap_beside_the_rate_range(capsys):
    rc, out, _ = _cli(["config", "schema"], capsys)
    assert rc == 0
    row = next(ln for ln in out.splitlines() if ln.split()[:1] == ["env.rate_max_rps"])
    assert "(0, 1000000]" in row and "2,000,000 requests" in row, row


# -- finding 7: one KV size per token; --kv-bytes-per-token settles a YAML conflict -------------

@pytest.fixture
def kv_conflict_yaml(tmp_path) -> Path:
    text = (ROOT / "envs_configs" / "disagg_2p2d.yaml").read_text()
    text = text.replace("  block_size: 64\n",
                        "  block_size: 64\n  kv_cache_bytes_per_token: 131072\n")
    assert "kv_bytes_per_token: 262144" in text
    path = tmp_path / "d2.yaml"
    path.write_text(text)
    return path


def test_kv_size_conflict_without_the_flag_does_not_blame_it(kv_conflict_yaml, capsys):
    rc, _, err = _cli(["simulate", "--config", str(kv_conflict_yaml), "--max-sim-time-s", "1"],
                      capsys)
    assert rc == 2
    line = _one_line(err)
    assert "field 'disagg.kv_bytes_per_token'" in line and "give one KV size" in line
    assert "--kv-bytes-per-token" not in line, line


def test_kv_bytes_per_token_flag_settles_the_yaml_conflict(kv_conflict_yaml):
    from dynosim.cli import build_parser
    from dynosim.options import config_from_args
    args = build_parser().parse_args(["simulate", "--config", str(kv_conflict_yaml),
                                      "--kv-bytes-per-token", "65536"])
    cfg = config_from_args(args)
    assert cfg.engine.kv_cache_bytes_per_token == 65536
    assert cfg.disagg["kv_bytes_per_token"] == 65536


# -- finding 8: the window_start_s bound printed is one the check accepts -----------------------

def _printed_bound(err: Exception) -> float:
    import re
    m = re.search(r"must start in \[0, ([^\]]+)\] s", str(err))
    assert m, str(err)
    return float(m.group(1))


@pytest.mark.parametrize("env_id, kwargs, options", [
    ("DynoSimRouting-v0", {}, {"scenario": "mooncake_window"}),
    ("DynoSim-v0", {"config": "autoscale_mooncake"}, {}),
])
def test_window_start_bound_in_the_message_is_accepted(env_id, kwargs, options):
    import gymnasium as gym

    import dynosim_gym  # noqa: F401
    from sim.errors import InputError
    env = gym.make(env_id, **kwargs)
    try:
        with pytest.raises(InputError) as info:
            env.reset(seed=0, options={**options, "window_start_s": 1e9})
        bound = _printed_bound(info.value)
        assert bound > 0
        env.reset(seed=0, options={**options, "window_start_s": bound})    # accepted
        with pytest.raises(InputError):
            env.reset(seed=0, options={**options, "window_start_s": bound + 1e-3})
    finally:
        env.close()


# -- finding 11: --planner-config-json FILE content errors name the file and line ---------------

@pytest.mark.parametrize("text, where, detail", [
    ("[1, 2]\n", "knobs.json, ", "expected a JSON object of planner knobs, got list"),
    ('{\n  "ttft_ms": 500,\n  "bogus_key": 1\n}\n', "knobs.json:3, ", "unknown planner key"),
    ('{\n  "itl_ms": 20,\n  "ttft_ms": -5\n}\n', "knobs.json:3, ", "key 'ttft_ms': must be > 0"),
])
def test_planner_json_file_errors_name_the_file(text, where, detail, tmp_path, capsys):
    path = tmp_path / "knobs.json"
    path.write_text(text)
    rc, _, err = _cli(["simulate", "--trace", "bundled:mooncake_conversation", "--planner",
                       "load", "--planner-config-json", str(path), "--max-sim-time-s", "1"],
                      capsys)
    assert rc == 2
    line = _one_line(err)
    assert f"{tmp_path / where}flag '--planner-config-json': " in line and detail in line, line


def test_planner_json_directory_is_not_called_missing(tmp_path, capsys):
    rc, _, err = _cli(["simulate", "--trace", "bundled:mooncake_conversation", "--planner",
                       "load", "--planner-config-json", str(tmp_path)], capsys)
    assert rc == 2
    assert "is a directory" in _one_line(err)


# -- finding 10: simulate --config takes the bundled config names, as evaluate does -------------

def test_simulate_config_takes_a_bundled_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                  # no ./disagg_2p2d file to find instead
    rc, out, err = _cli(["simulate", "--config", "disagg_2p2d", "--max-sim-time-s", "1",
                         "--quiet"], capsys)
    assert rc == 0, err
    assert "decode" in out


def test_simulate_config_typo_suggests_the_bundled_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = _cli(["simulate", "--config", "disagg_2p3d"], capsys)
    assert rc == 2
    line = _one_line(err)
    assert "config file not found" in line and "did you mean 'disagg_2p2d'?" in line, line


# -- finding 13 (part): usage errors point to the subcommand's help; schema rows -----------------

@pytest.mark.parametrize("argv, helps", [
    (["sweep", "interval", "--out", "x", "--kv-transfer-bandwidth", "64"],
     "dynosim sweep interval --help"),
    (["simulate", "--bogus", "1"], "dynosim simulate --help"),
])
def test_unrecognized_argument_points_to_the_subcommand_help(argv, helps, capsys):
    rc, _, err = _cli(argv, capsys)
    assert rc == 2
    line = _one_line(err)
    assert "unrecognized arguments" in line and f"(see '{helps}')" in line, line


def test_schema_names_the_kv_flag_and_the_residual_offsets_rule(capsys):
    rc, out, _ = _cli(["config", "schema"], capsys)
    assert rc == 0
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert "--kv-bytes-per-token" in rows["disagg.kv_bytes_per_token"]
    assert "lo <= 0 <= hi" in rows["env.action.residual_offsets"]

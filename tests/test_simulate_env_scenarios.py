"""``dynosim simulate --config`` on an environment scenario runs the environment's episode:
``--seed N`` picks the episode (flags are applied before the episode is drawn), the JSON is
byte-identical across runs (no object addresses) and ``--print-config`` reruns it exactly."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from dynosim.cli import main
from dynosim_gym.config import load_env_config
from dynosim_gym.episodes import EpisodeFactory, episode_seed

REPO = Path(__file__).resolve().parents[1]
DEFAULT = str(REPO / "envs_configs" / "autoscale_default.yaml")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def printed(capsys, *argv: str) -> tuple[dict, str]:
    rc, out, err = run(capsys, "simulate", *argv, "--print-config")
    assert rc == 0, err
    return yaml.safe_load(out), err


def test_seed_flag_picks_the_episode(capsys) -> None:
    """--seed N draws the load of env.reset(seed=N), as ``run: {seed: N}`` in the YAML does."""
    factory = EpisodeFactory(load_env_config(DEFAULT))
    loads = {}
    for seed in (3, 4):
        cfg, err = printed(capsys, "--config", DEFAULT, "--seed", str(seed))
        _, desc = factory.build(episode_seed(seed))
        assert cfg["run"]["seed"] == seed
        assert cfg["workload"]["arrival"] == desc["arrival"]
        assert f"env.reset(seed={seed})" in cfg["workload"]["name"]
        assert f"env.reset(seed={seed})" in err
        loads[seed] = cfg["workload"]["arrival"]
    assert loads[3] != loads[4]


def test_seed_flag_equals_seed_in_the_yaml(capsys, tmp_path: Path) -> None:
    data = yaml.safe_load(Path(DEFAULT).read_text())
    data.setdefault("run", {})["seed"] = 3
    path = tmp_path / "seeded.yaml"
    path.write_text(yaml.safe_dump(data))
    by_flag, _ = printed(capsys, "--config", DEFAULT, "--seed", "3")
    by_yaml, _ = printed(capsys, "--config", str(path))
    assert by_flag["workload"] == {**by_yaml["workload"], "name": by_flag["workload"]["name"]}
    assert by_yaml["workload"]["name"].endswith(by_flag["workload"]["name"].split(":", 1)[1])


def json_run(capsys, *argv: str) -> str:
    rc, out, err = run(capsys, "simulate", "--json", *argv)
    assert rc == 0, err
    d = json.loads(out)
    d.pop("run_info")                    # wall-clock figures only
    return json.dumps(d, indent=2)


def test_piecewise_episode_json_is_byte_identical_and_reruns(capsys, tmp_path: Path) -> None:
    """A family episode's piecewise rate is data in the JSON (no object address), two runs
    agree byte for byte, and the printed config reruns to the same bytes."""
    argv = ["--config", DEFAULT, "--max-sim-time-s", "30", "--seed", "3"]
    first = json_run(capsys, *argv)
    assert " object at 0x" not in first
    rate = json.loads(first)["workload"]["arrival"]["rate_fn"]
    assert rate["type"] == "piecewiserate" and rate["knots_s"][0] == 0.0
    assert json_run(capsys, *argv) == first
    rc, text, _ = run(capsys, "simulate", *argv, "--print-config")
    (tmp_path / "resolved.yaml").write_text(text)
    assert json_run(capsys, "--config", str(tmp_path / "resolved.yaml")) == first


def test_piecewise_rate_round_trips_through_its_dict() -> None:
    from sim.workloads import PiecewiseRate
    rate = PiecewiseRate([0, 10, 20], [1, 3, 0.5])
    back = PiecewiseRate.from_dict(json.loads(json.dumps(rate.to_dict())))
    assert back.to_dict() == rate.to_dict()
    assert [back(t) for t in (0, 5, 15, 30)] == [rate(t) for t in (0, 5, 15, 30)]


def test_episode_n_is_the_load_of_env_reset_seed_n(capsys) -> None:
    """Seed 0 of autoscale_default resets to a mooncake_mod episode: simulate runs its rate
    curve and says plainly that the environment replays trace rows instead of its prompts."""
    from dynosim_gym.autoscaling_env import DynoSimEnv
    env = DynoSimEnv(config=DEFAULT)
    for seed in (0, 1):
        env.reset(seed=seed)
        cfg, err = printed(capsys, "--config", DEFAULT, "--seed", str(seed))
        assert cfg["workload"]["arrival"] == env.episode["arrival"]
        assert env.episode["scenario"] in cfg["workload"]["name"]
        if seed == 0:
            assert env.episode["scenario"] == "mooncake_mod"
            assert cfg["workload"]["name"].endswith("synthetic prompts")
            assert f"replays trace rows from row {env.episode['first_row']:,}" in err
            assert f"capped at {env.episode['isl_cap_tokens']:,} tokens" in err
    env.close()


FAMILIES = str(REPO / "envs_configs" / "routing_families.yaml")


def test_routing_family_runs_its_own_workload_and_trace_windows_are_refused(capsys) -> None:
    """A routing family's episode has its own request shape (multitenant_prefix: 32
    tenants, 4-turn sessions), which simulate keeps; a trace window has no run config."""
    from dynosim_gym.routing_env import DynoSimRoutingEnv
    from dynosim_gym.scenarios import ROUTING_FAMILIES
    env = DynoSimRoutingEnv(config=FAMILIES)
    seen = set()
    for seed in range(8):
        env.reset(seed=seed)
        scenario = env.episode["scenario"]
        if "trace" in ROUTING_FAMILIES[scenario]:
            rc, out, err = run(capsys, "simulate", "--config", FAMILIES, "--seed", str(seed),
                               "--print-config")
            assert rc == 2 and out == "" and "Traceback" not in err
            assert len(err.strip().splitlines()) == 1 and "argument --seed: " in err
            assert f"{scenario} episode" in err
        else:
            cfg, _ = printed(capsys, "--config", FAMILIES, "--seed", str(seed))
            spec = ROUTING_FAMILIES[scenario]["workload"]
            assert {k: cfg["workload"][k] for k in spec} == spec
            assert cfg["workload"]["arrival"] == env.episode["arrival"]
        seen.add("trace" in ROUTING_FAMILIES[scenario])
    assert seen == {True, False}
    env.close()


def test_trace_scenario_says_its_windows_are_not_expressed(capsys) -> None:
    """A trace scenario replays its whole trace; --seed picks no window there, and the note
    says so (a new user read two seeds' identical runs as the seed being ignored)."""
    cfg, err = printed(capsys, "--config", str(REPO / "envs_configs" / "autoscale_mooncake.yaml"),
                       "--seed", "2")
    assert cfg["workload"]["kind"] != "synthetic"
    assert "running its whole trace" in err and "run.seed does not pick a window" in err, err

"""``dynosim simulate --config`` on an environment scenario runs the environment's episode:
``--seed N`` picks the episode (flags are applied before the episode is drawn), the JSON is
byte-identical across runs (no object addresses) and ``--print-config`` reruns it exactly."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from dynosim.cli import main
from dynosim_gym.config import load_env_config
from dynosim_gym.episodes import EpisodeFactory

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
    """--seed N draws episode N's load, as ``run: {seed: N}`` in the YAML does."""
    factory = EpisodeFactory(load_env_config(DEFAULT))
    loads = {}
    for seed in (3, 4):
        cfg, err = printed(capsys, "--config", DEFAULT, "--seed", str(seed))
        _, desc = factory.build(seed)
        assert cfg["run"]["seed"] == seed
        assert cfg["workload"]["arrival"] == desc["arrival"]
        assert f"episode {seed}" in cfg["workload"]["name"] and f"episode {seed}" in err
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

"""``dynosim tune --search-space``: the shipped ``heuristic:load-tuned`` regenerates from its
recorded command (space v1), and the two spaces are the ones the module doc describes."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from conftest import one_line_error, run_cli as run

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "agents" / "tuned" / "load-tuned.yaml"


def test_shipped_load_tuned_regenerates_from_its_recorded_command(capsys,
                                                                   tmp_path: Path) -> None:
    """The file's ``command`` (with ``--out`` instead of ``--replace``, so the shipped file
    is not touched) gives the same knobs, objective, training scores and search space
    (~20 s: 12 trials of 3 training episodes)."""
    shipped = yaml.safe_load(SHIPPED.read_text())
    argv = shlex.split(shipped["command"])
    assert argv[:2] == ["dynosim", "tune"] and "--search-space" in argv
    out = tmp_path / "load-tuned.yaml"
    argv = [a for a in argv[1:] if a != "--replace"] + ["--out", str(out), "--quiet"]
    rc, _, err = run(capsys, *argv)
    assert rc == 0, err
    got = yaml.safe_load(out.read_text())
    for key in ("knobs", "objective", "train_sla_attainment", "train_gpu_hours_per_episode",
                "default_objective", "tuned_on"):
        assert got[key] == shipped[key], key
    for key in ("space", "space_version", "knobs_not_read", "seed", "trials"):
        assert got["search"][key] == shipped["search"][key], key
    assert got["command"] == shipped["command"].replace(" --replace", "")


def test_search_spaces_differ_only_in_the_kv_thresholds_condition() -> None:
    from agents.evaluate import PolicySpec, make_eval_env
    from agents.tune import KV_RATE_KNOBS, knob_space
    env, cfg = make_eval_env(PolicySpec("heuristic:load", "heuristic", "DynoSim-v0"),
                             "DynoSim-v0", None, {})
    env.close()
    v1, v2 = knob_space(cfg, "v1"), knob_space(cfg, "v2")
    assert set(v1) == set(v2)
    for k in KV_RATE_KNOBS:
        assert "only_if" not in v1[k] and v2[k]["only_if"] == {"optimization_target": "load"}
    assert v2[KV_RATE_KNOBS[1]]["above"] == KV_RATE_KNOBS[0] and "above" not in v1[KV_RATE_KNOBS[1]]
    strip = lambda sp: {k: {f: x for f, x in s.items() if f not in ("only_if", "above")}
                        for k, s in sp.items()}
    assert strip(v1) == strip(v2)


@pytest.mark.parametrize("space", ["v3", ""])
def test_unknown_search_space_is_a_one_line_error(capsys, tmp_path: Path, space: str) -> None:
    rc, _, err = run(capsys, "tune", "--policy", "heuristic:load", "--trials", "1",
                     "--episodes", "1", "--search-space", space, "--out",
                     str(tmp_path / "x.yaml"))
    assert rc == 2
    one_line_error(rc, err, "--search-space")
    assert not (tmp_path / "x.yaml").exists()


def test_unknown_search_space_in_the_api_names_the_flag() -> None:
    from agents.tune import tune
    from sim.errors import InputError
    with pytest.raises(InputError, match="unknown search space 'v0'"):
        tune("heuristic:load", trials=1, episodes=1, search_space="v0", out="/nonexistent/x")

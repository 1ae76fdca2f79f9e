"""Round 15 (issue 11): the linear residual policy (agents/linear_policy.py) and its
CMA-ES search (scripts/es_search.py): the offset's range, save/load, scoring through
`dynosim evaluate --policy RUN_DIR`, a seeded search's reproducibility, bad policy files."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynosim.cli import main
from agents.linear_policy import (FORMAT, LinearResidualPolicy, load_policy, offset_of,
                                  save_policy)
from sim.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TINY = "autoscale_tiny"
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
any_float = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 8), data=st.data(), lo=st.integers(-4, 0), hi=st.integers(0, 6))
def test_offset_always_within_range(n, data, lo, hi):
    w = np.array(data.draw(st.lists(finite, min_size=n, max_size=n)))
    x = np.array(data.draw(st.lists(any_float, min_size=n, max_size=n)))
    b = data.draw(finite)
    off = offset_of(w, b, x, lo, hi)
    assert isinstance(off, int) and lo <= off <= hi
    with np.errstate(over="ignore", invalid="ignore"):
        v = float(np.dot(w, x)) + b
    if math.isfinite(v):                         # the unclipped value: round half up
        assert off == min(max(math.floor(v + 0.5), lo), hi)
    else:
        assert off == 0


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 6), data=st.data())
def test_save_load_round_trip(tmp_path_factory, n, data):
    w = data.draw(st.lists(finite, min_size=n, max_size=n))
    b = data.draw(finite)
    pol = LinearResidualPolicy([f"f{i}" for i in range(n)], w, b, [-2, 4])
    d = tmp_path_factory.mktemp("pol")
    save_policy(pol, d)
    back = load_policy(d)
    assert back.to_dict() == pol.to_dict()
    x = np.array(data.draw(st.lists(finite, min_size=n, max_size=n)))
    assert back.predict(x)[0] == pol.predict(x)[0]
    assert 0 <= int(pol.predict(x)[0]) <= 6


def test_bare_base_parameters_act_offset_zero():
    pol = LinearResidualPolicy(["a", "b"], [0.0, 0.0], 0.0, [-2, 4])
    assert int(pol.predict(np.array([3.0, -7.0]))[0]) == 2   # index of offset 0
    assert pol.offset(np.array([3.0, -7.0])) == 0


def _policy_file(tmp_path: Path, **change) -> Path:
    rec = {"format": FORMAT, "features": ["a", "b"], "weights": [0.5, -1.0], "bias": 0.25,
           "residual_offsets": [-2, 4], **change}
    (tmp_path / "policy.json").write_text(json.dumps(rec))
    return tmp_path


@pytest.mark.parametrize("change, field", [
    ({"weights": [0.5]}, "weights"),
    ({"weights": [0.5, "x"]}, "weights"),
    ({"bias": None}, "bias"),
    ({"format": "other/1"}, "format"),
    ({"features": []}, "features"),
    ({"residual_offsets": [1, 4]}, "residual_offsets"),
])
def test_bad_policy_file_names_field(tmp_path, change, field):
    with pytest.raises(InputError) as exc:
        load_policy(_policy_file(tmp_path, **change))
    assert exc.value.field == field and "policy.json" in str(exc.value.file)


def test_corrupt_and_missing_policy_file(tmp_path):
    with pytest.raises(InputError, match="no policy.json"):
        load_policy(tmp_path)
    (tmp_path / "policy.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_policy(tmp_path)


def _search(out: Path, seed: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, str(ROOT / "scripts" / "es_search.py"), "--config", TINY, "--seed", str(seed),
         "--trials", "3", "--episodes", "1", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    d = tmp_path_factory.mktemp("es")
    a, b = d / "a", d / "b"
    for out in (a, b):
        r = _search(out)
        assert r.returncode == 0, r.stderr
    return a, b, r.stderr


def test_search_same_seed_identical_result(searched):
    a, b, stderr = searched
    assert (a / "search.json").read_bytes() == (b / "search.json").read_bytes()
    assert (a / "policy.json").read_bytes() == (b / "policy.json").read_bytes()
    res = json.loads((a / "search.json").read_text())
    assert len(res["trials"]) == 3
    assert all(v == 0.0 for v in res["trials"][0]["params"].values())   # trial 0: bare base
    # CMA-ES moved off the base after trial 0
    assert any(v != 0.0 for t in res["trials"][1:] for v in t["params"].values())
    assert stderr.count("es_search: seed 0 trial ") == 3       # progress lines
    run = json.loads((a / "run.json").read_text())
    assert run["framework"] == "es" and run["status"] == "completed"
    assert run["env_config"]["env"]["action"]["reversal_cooldown_s"] == 300
    assert "es_search.py" in run["command"]


def test_search_other_seed_differs(searched, tmp_path):
    a, _, _ = searched
    r = _search(tmp_path / "c", seed=1)
    assert r.returncode == 0, r.stderr
    assert (a / "search.json").read_bytes() != (tmp_path / "c" / "search.json").read_bytes()


def test_evaluate_accepts_run_dir(searched, capsys):
    a, _, _ = searched
    code = main(["evaluate", "--policy", str(a), "--config", TINY, "--split", "train",
                 "--episodes", "1", "--seed", "10000", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    ev = json.loads(out.out)
    res = json.loads((a / "search.json").read_text())
    kept = res["trials"][res["kept"]["number"]]
    # the same episode scored by evaluate gives the search's own figures for the kept trial
    assert ev["sla_attainment"] == pytest.approx(kept["sla_attainment"], abs=1e-12)
    assert ev["gpu_hours_per_episode"] == pytest.approx(kept["gpu_hours_per_episode"],
                                                        abs=1e-12)
    assert ev["policy_interface"]["action"]["type"] == "residual"


def test_evaluate_bad_policy_file_exit_2(searched, tmp_path, capsys):
    a, _, _ = searched
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "run.json").write_text((a / "run.json").read_text())
    (bad / "policy.json").write_text('{"format": "dynosim-linear-residual/1", "weights": [')
    code = main(["evaluate", "--policy", str(bad), "--config", TINY, "--episodes", "1"])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "policy.json" in lines[0] and "Traceback" not in err


def test_search_bad_first_seed_exit_2(tmp_path):
    r = subprocess.run([PY, str(ROOT / "scripts" / "es_search.py"), "--config", TINY,
                        "--first-seed", "0", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 2 and "--first-seed" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_leaderboard_finds_and_scores_es_run(searched, tmp_path):
    """`dynosim evaluate --leaderboard DIR` picks up an es run directory under DIR (as
    it does SB3 runs) and scores it beside a heuristic on the same episodes."""
    import shutil

    from agents.leaderboard import find_models, leaderboard
    a, _, _ = searched
    d = tmp_path / "lb"
    shutil.copytree(a, d / "es_s0")
    assert find_models(d) == [d / "es_s0"]
    res = leaderboard(d, config=TINY, episodes=1, seed=10000, split="train",
                      policies=["heuristic:static:2", str(d / "es_s0")])
    by = {r.policy: r for r in res}
    kept = json.loads((a / "search.json").read_text())
    kept = kept["trials"][kept["kept"]["number"]]
    assert by[str(d / "es_s0")].gpu_hours_per_episode == pytest.approx(
        kept["gpu_hours_per_episode"], abs=1e-12)


def test_evaluate_feature_mismatch_exit_2(searched, tmp_path, capsys):
    """A policy.json whose features differ from its run's observation (same count, another
    order) is refused, not scored on the wrong inputs."""
    a, _, _ = searched
    bad = tmp_path / "swapped"
    bad.mkdir()
    (bad / "run.json").write_text((a / "run.json").read_text())
    rec = json.loads((a / "policy.json").read_text())
    rec["features"] = rec["features"][::-1]
    (bad / "policy.json").write_text(json.dumps(rec))
    code = main(["evaluate", "--policy", str(bad), "--config", TINY, "--episodes", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "features" in err and len(err.strip().splitlines()) == 1

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
from agents.linear_policy import (FORMAT, FORMAT_STD, LinearResidualPolicy, load_policy,
                                  offset_of, save_policy)
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


# -- round 16: standardised features, the pooled+mean objective, --popsize, --out, run.json --

def test_standardised_round_trip(tmp_path):
    """A /2 policy saves and loads unchanged, and acts on (x - mu) / sigma."""
    mu, sd = [1.0, -2.0, 0.5], [2.0, 0.25, 1.0]
    pol = LinearResidualPolicy(["a", "b", "c"], [0.4, -1.5, 2.0], 0.3, [-2, 4], mu, sd)
    save_policy(pol, tmp_path)
    rec = json.loads((tmp_path / "policy.json").read_text())
    assert rec["format"] == FORMAT_STD and rec["feature_mean"] == mu and rec["feature_std"] == sd
    back = load_policy(tmp_path)
    assert back.to_dict() == pol.to_dict()
    rng = np.random.default_rng(0)
    for _ in range(200):
        x = rng.normal(0, 3, 3)
        want = offset_of(np.array([0.4, -1.5, 2.0]), 0.3, (x - mu) / np.array(sd), -2, 4)
        assert back.offset(x) == want
    # the raw-feature offset differs somewhere: standardisation is applied, not ignored
    assert any(back.offset(x) != offset_of(back.weights, 0.3, x, -2, 4)
               for x in rng.normal(0, 3, (50, 3)))


def test_round15_policy_file_loads_and_scores_as_before(capsys):
    """Round 15b's committed policy file (format /1, no standardisation) loads, writes back
    byte-identically, and scores SELECT's first episode exactly as round 15b recorded."""
    d = ROOT / "docs" / "benchmark" / "round15" / "b_s1"
    pol = load_policy(d)
    assert pol.feature_mean is None
    text = (d / "policy.json").read_text()
    assert json.dumps(pol.to_dict(), indent=2) + "\n" == text
    code = main(["evaluate", "--policy", str(d), "--split", "train", "--episodes", "1",
                 "--seed", "0", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    ep = json.loads(out.out)["per_episode"][0]
    ref = json.loads((ROOT / "docs/benchmark/round15/select_es_b_s1.json").read_text())
    ref_ep = ref["per_episode"][0]
    assert ep["sla_attainment"] == ref_ep["sla_attainment"]
    assert ep["gpu_hours"] == ref_ep["gpu_hours"]


@pytest.mark.parametrize("change, field", [
    ({"format": FORMAT_STD}, "feature_mean"),                         # /2 without stats
    ({"format": FORMAT_STD, "feature_mean": [0, 0], "feature_std": [1, 0]}, "feature_std"),
    ({"format": FORMAT_STD, "feature_mean": [0], "feature_std": [1, 1]}, "feature_mean"),
    ({"feature_mean": [0, 0], "feature_std": [1, 1]}, "feature_mean"),  # /1 with stats
])
def test_bad_standardisation_names_field(tmp_path, change, field):
    with pytest.raises(InputError) as exc:
        load_policy(_policy_file(tmp_path, **change))
    assert exc.value.field == field


def test_objective_two_terms():
    """pooled: GPU-h + 100 x pooled shortfall; pooled+mean adds 100 x the mean shortfall."""
    from es_search import meets_targets, objective_value
    assert objective_value(0.60, 3.0, 0.62) == pytest.approx(3.0 + 2.0)
    assert objective_value(0.70, 3.0, 0.62) == pytest.approx(3.0)
    # mean term ignored unless a mean target is given (round 15's objective)
    assert objective_value(0.60, 3.0, 0.62, 0.10) == pytest.approx(5.0)
    assert objective_value(0.60, 3.0, 0.62, 0.50, 0.58) == pytest.approx(3.0 + 2.0 + 8.0)
    assert objective_value(0.70, 3.0, 0.62, 0.50, 0.58) == pytest.approx(3.0 + 8.0)
    assert objective_value(0.60, 3.0, 0.62, 0.60, 0.58) == pytest.approx(3.0 + 2.0)
    m = {"sla_attainment": 0.63, "mean_episode_sla_attainment": 0.57}
    assert meets_targets(m, 0.62, None) and not meets_targets(m, 0.62, 0.58)
    assert meets_targets(m, 0.62, 0.57) and not meets_targets(m, 0.64, None)


sys.path.insert(0, str(ROOT / "scripts"))

R16 = ["--objective", "pooled+mean", "--mean-target", "0.9", "--standardise",
       "--popsize", "4", "--weight-bound", "2", "--sigma0", "0.15"]


def _search16(out: Path, *extra: str, trials: int = 6) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, str(ROOT / "scripts" / "es_search.py"), "--config", TINY, "--seed", "0",
         "--trials", str(trials), "--episodes", "2", "--out", str(out), *R16, *extra],
        capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def searched16(tmp_path_factory):
    d = tmp_path_factory.mktemp("es16")
    for out in (d / "a", d / "b"):
        r = _search16(out)
        assert r.returncode == 0, r.stderr
    return d / "a", d / "b", r.stderr


def test_round16_search_reproducible_and_recorded(searched16, capsys):
    a, b, stderr = searched16
    assert (a / "search.json").read_bytes() == (b / "search.json").read_bytes()
    res = json.loads((a / "search.json").read_text())
    st_ = res["standardisation"]
    assert len(st_["feature_mean"]) == len(st_["feature_std"]) == len(st_["features"])
    assert all(s > 0 for s in st_["feature_std"]) and res["mean_target"] == 0.9
    trials = res["trials"]
    assert [t["number"] for t in trials] == list(range(6))
    assert trials[0]["generation"] == -1 and all(not v for v in trials[0]["params"].values())
    # popsize 4: trials 1-4 are generation 0, trial 5 generation 1
    assert [t["generation"] for t in trials[1:]] == [0, 0, 0, 0, 1]
    assert all(abs(v) <= 2 for t in trials for k, v in t["params"].items() if k != "b")
    for t in trials:                              # the objective holds both terms
        want = (t["gpu_hours_per_episode"] + 100 * max(0, res["target"] - t["sla_attainment"])
                + 100 * max(0, 0.9 - t["mean_episode_sla_attainment"]))
        assert t["objective"] == pytest.approx(want, abs=1e-12)
    pol = json.loads((a / "policy.json").read_text())
    assert pol["format"] == FORMAT_STD and pol["feature_mean"] == st_["feature_mean"]
    # progress lines number trials from 0, as search.json does
    assert "trial 0 (of 0-5)" in stderr and "trial 5 (of 0-5)" in stderr
    assert "trial 6 " not in stderr
    # evaluate scores the standardised policy as the search scored it
    code = main(["evaluate", "--policy", str(a), "--config", TINY, "--split", "train",
                 "--episodes", "2", "--seed", "10000", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    ev = json.loads(out.out)
    kept = trials[res["kept"]["number"]]
    assert ev["sla_attainment"] == pytest.approx(kept["sla_attainment"], abs=1e-12)
    assert ev["gpu_hours_per_episode"] == pytest.approx(kept["gpu_hours_per_episode"],
                                                        abs=1e-12)


def test_standardise_trial0_is_the_bare_base(searched16, tmp_path):
    """Trial 0 reuses the standardisation rollouts' score: it must equal an unstandardised
    search's trial 0 (the bare base) on the same episodes."""
    a, _, _ = searched16
    r = subprocess.run(
        [PY, str(ROOT / "scripts" / "es_search.py"), "--config", TINY, "--seed", "0",
         "--trials", "1", "--episodes", "2", "--quiet", "--out", str(tmp_path / "raw")],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    raw = json.loads((tmp_path / "raw" / "search.json").read_text())["trials"][0]
    std = json.loads((a / "search.json").read_text())["trials"][0]
    for k in ("sla_attainment", "gpu_hours_per_episode", "mean_episode_sla_attainment"):
        assert std[k] == raw[k]


# sha256 of round 15's search.json figures (number, params, sla_attainment,
# gpu_hours_per_episode, flaps_per_hour, objective per trial; kept; target; episodes) for
# `--config autoscale_tiny --seed 0 --trials 3 --episodes 1`, computed with the script as
# of commit 60591b7 (before round 16): the default options reproduce round 15's search.
ROUND15_TINY_DIGEST = "ca2e0c6e51343e756642f7ed61b4c89c6d5e210ac98e962a55099ba3fc582b48"


def test_default_search_reproduces_round15(searched):
    import hashlib
    a, _, _ = searched
    res = json.loads((a / "search.json").read_text())
    keys = ("number", "params", "sla_attainment", "gpu_hours_per_episode", "flaps_per_hour",
            "objective")
    proj = {"seed": res["seed"], "target": res["target"], "episodes": res["episodes"],
            "kept": res["kept"], "trials": [{k: t[k] for k in keys} for t in res["trials"]]}
    digest = hashlib.sha256(json.dumps(proj, indent=1).encode()).hexdigest()
    assert digest == ROUND15_TINY_DIGEST


def test_out_not_empty_refused_unless_force(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "search.json").write_text("{}")
    r = subprocess.run([PY, str(ROOT / "scripts" / "es_search.py"), "--config", TINY,
                        "--trials", "1", "--episodes", "1", "--quiet", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 2 and "--out" in r.stderr and "--force" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert (out / "search.json").read_text() == "{}"          # untouched
    r = subprocess.run([PY, str(ROOT / "scripts" / "es_search.py"), "--config", TINY,
                        "--trials", "1", "--episodes", "1", "--quiet", "--force",
                        "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "search.json").read_text())["trials"][0]["number"] == 0


@pytest.mark.parametrize("argv, flag", [
    (["--objective", "pooled+mean"], "--mean-target"),
    (["--objective", "pooled+mean", "--mean-target", "1.5"], "--mean-target"),
    (["--mean-target", "0.5"], "--mean-target"),
    (["--popsize", "1"], "--popsize"),
    (["--weight-bound", "0"], "--weight-bound"),
])
def test_search_bad_round16_flags_exit_2(tmp_path, argv, flag):
    r = subprocess.run([PY, str(ROOT / "scripts" / "es_search.py"), "--config", TINY,
                        "--out", str(tmp_path / "x"), *argv],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 2 and flag in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_evaluate_es_dir_missing_or_corrupt_run_json(searched, tmp_path, capsys):
    a, _, _ = searched
    d = tmp_path / "norun"
    d.mkdir()
    (d / "policy.json").write_text((a / "policy.json").read_text())
    code = main(["evaluate", "--policy", str(d), "--config", TINY, "--episodes", "1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "run.json" in err and "without its run.json" in err and "no such model" not in err
    (d / "run.json").write_text("{not json")
    code = main(["evaluate", "--policy", str(d), "--config", TINY, "--episodes", "1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "run.json" in err and "not valid JSON" in err
    (d / "run.json").write_text('{"framework": "sb3"}')
    code = main(["evaluate", "--policy", str(d), "--config", TINY, "--episodes", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "framework" in err and len(err.strip().splitlines()) == 1


def test_ruggedness_unperturbed_is_the_kept_trial(searched16, tmp_path):
    a, _, _ = searched16
    out = tmp_path / "rug.json"
    r = subprocess.run([PY, str(ROOT / "scripts" / "es_ruggedness.py"), str(a),
                        "--directions", "1", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    rug = json.loads(out.read_text())
    res = json.loads((a / "search.json").read_text())
    kept = res["trials"][res["kept"]["number"]]
    assert [p["point"] for p in rug["points"]] == ["unperturbed", "direction 0"]
    assert rug["points"][0]["objective"] == pytest.approx(kept["objective"], abs=1e-12)
    assert rug["max_abs_objective_change"] == pytest.approx(
        abs(rug["points"][1]["objective"] - rug["points"][0]["objective"]))


def test_search_selects_trend_features_with_set(searched16, tmp_path):
    """Round 17: ``--set env.observation.features=[...]`` replaces round 14's 16 features
    (the later key wins over ENV_KWARGS' ``env.observation``); the policy, the search's
    standardisation and the parameter count follow; trial 0 (the bare base, which reads no
    feature) scores as with round 16's features."""
    feats = ["kv_utilisation", "arrival_rate_slope", "arrival_rate_slope_60s",
             "arrival_rate_slope_300s", "arrival_rate_acceleration"]
    r = _search16(tmp_path / "t", "--set", "env.observation.features=[" + ",".join(feats)
                  + "]", trials=3)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "t" / "search.json").read_text())
    assert res["standardisation"]["features"] == feats
    sd = res["standardisation"]["feature_std"]
    assert sd[2] != 1.0 and sd[3] != 1.0          # the slopes vary on the tiny episodes
    # autoscale_tiny's episodes last 60 s: the 60 s and 300 s fits read the same intervals,
    # so the acceleration is 0 on every step and its sigma is the floor's 1
    assert sd[4] == 1.0 and res["standardisation"]["feature_mean"][4] == 0.0
    assert sorted(res["trials"][1]["params"]) == sorted([f"w{i}" for i in range(5)] + ["b"])
    pol = json.loads((tmp_path / "t" / "policy.json").read_text())
    assert pol["features"] == feats
    run = json.loads((tmp_path / "t" / "run.json").read_text())
    assert run["env_config"]["env"]["observation"]["features"] == feats
    base16 = json.loads((searched16[0] / "search.json").read_text())["trials"][0]
    for k in ("sla_attainment", "gpu_hours_per_episode", "mean_episode_sla_attainment"):
        assert res["trials"][0][k] == base16[k]

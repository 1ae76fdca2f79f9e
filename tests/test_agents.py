"""agents/: heuristics through SB3's evaluate_policy, training and evaluation CLIs.

The CI versions train for a few hundred steps on the tiny scenario; the full PPO run
(``dynosim train --algo ppo``: 36k steps, ~130 CPU-seconds, ~50 min of wall time on the shared
machine) is marked ``expensive``.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import dynosim_gym  # noqa: F401  (registers the ids)
from agents.evaluate import evaluate
from agents.heuristics import PlannerPolicy, StaticPolicy, make_heuristic
from agents.train import load_hyperparams, train
from dynosim.cli import main
from sim.errors import InputError

TINY = "autoscale_tiny"


def test_heuristics_score_through_sb3_evaluate_policy() -> None:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    venv = make_vec_env("dynosim_gym:DynoSim-v0", n_envs=1, seed=0, env_kwargs={"config": TINY})
    for policy in (PlannerPolicy("load", venv), PlannerPolicy("throughput", venv),
                   StaticPolicy(venv)):
        mean, std = evaluate_policy(policy, venv, n_eval_episodes=2, warn=False)
        assert math.isfinite(mean) and math.isfinite(std)
    venv.close()


def test_planner_policy_on_gymnasium_vector_env_matches_single_env() -> None:
    venv = gym.make_vec("dynosim_gym:DynoSim-v0", num_envs=2, vectorization_mode="sync",
                        config=TINY)
    single = gym.make("DynoSim-v0", config=TINY)
    pv, ps = PlannerPolicy("load", venv), PlannerPolicy("load", single)
    obs_v, _ = venv.reset(seed=[3, 4])
    obs_s, _ = single.reset(seed=3)
    for _ in range(5):
        av, _ = pv.predict(obs_v)
        a, _ = ps.predict(obs_s)
        assert av.shape == (2,) and int(av[0]) == int(a)
        obs_v, *_ = venv.step(av)
        obs_s, *_ = single.step(a)
        assert np.array_equal(obs_v[0], obs_s)
    venv.close()


def test_static_policy_never_scales() -> None:
    res = evaluate("heuristic:static", config=TINY, episodes=2, seed=0)
    assert all(e["workers_changed"] == 0 for e in res.per_episode)
    with pytest.raises(ValueError, match="unknown heuristic"):
        make_heuristic("heuristic:oracle")


def test_evaluation_is_deterministic_and_uses_held_out_episodes() -> None:
    a = evaluate("heuristic:load", config=TINY, episodes=2, seed=5)
    b = evaluate("heuristic:load", config=TINY, episodes=2, seed=5)
    assert a.as_dict() == b.as_dict()
    assert all(e["setup"]["split"] == "eval" for e in a.per_episode)
    t = evaluate("heuristic:load", config=TINY, episodes=2, seed=5, split="train")
    assert [e["setup"]["seed"] for e in t.per_episode] == \
        [e["setup"]["seed"] for e in a.per_episode]           # same seeds ...
    assert t.as_dict()["per_episode"] != a.as_dict()["per_episode"]   # ... other episodes


def test_hyperparameters_are_rl_zoo_style() -> None:
    hp = load_hyperparams("ppo", "DynoSim-v0")
    assert hp["policy"] == "MlpPolicy" and hp["n_envs"] >= 1 and hp["n_timesteps"] > 0
    for algo in ("a2c", "dqn", "ppo_mask", "ppo_lstm", "maskable_ppo", "recurrent_ppo"):
        assert load_hyperparams(algo, "DynoSim-v0")["policy"]
    with pytest.raises(InputError, match="unknown algorithm"):
        load_hyperparams("sac", "DynoSim-v0")


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn", "ppo_mask", "ppo_lstm"])
def test_every_algorithm_trains_briefly_and_evaluates(tmp_path: Path, algo: str) -> None:
    out = train(algo, "DynoSim-v0", config=TINY, timesteps=96, out=tmp_path / algo,
                n_envs=2 if algo != "dqn" else 1, quiet=True,
                overrides={"episode_steps": 4})
    assert (out / "model.zip").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["algo"] == algo and run["env_config"]["env"]["episode_steps"] == 4
    assert any((out / "tb").iterdir())
    # scored with the evaluation config (never the run's), the run's interface on top
    res = evaluate(str(out), config=TINY, episodes=1, seed=0, overrides={"episode_steps": 4})
    assert res.per_episode[0]["steps"] == 4 and math.isfinite(res.mean_reward)
    # per-episode figures under the pooled figures' names (p90_ttft_ms, not the env's)
    assert {"p90_ttft_ms", "p90_itl_ms"} <= set(res.per_episode[0])
    assert not {"ttft_p90_ms", "itl_p90_ms"} & set(res.per_episode[0])


def test_rollout_rounding_is_said_and_recorded(tmp_path: Path, capsys) -> None:
    """PPO collects whole rollouts (n_steps x n_envs), so 40 steps with n_steps 16 train 48:
    the run says so in one line and records what it trained."""
    hp = tmp_path / "ppo.yml"
    hp.write_text("DynoSim-v0: {policy: MlpPolicy, n_steps: 16, batch_size: 16, n_epochs: 1,\n"
                  "             select_checkpoint: {every: 16, episodes: 1}}\n")
    out = train("ppo", "DynoSim-v0", config=TINY, timesteps=40, out=tmp_path / "r", n_envs=1,
                hyperparams=hp, overrides={"episode_steps": 4})
    err = capsys.readouterr().err
    assert "note: 40 timesteps train as 48 " in err and "n_steps 16 x 1 env = 16 steps" in err
    assert "48/48 steps (100%)" in err and "/40 steps" not in err   # progress: what it trains
    run = json.loads((out / "run.json").read_text())
    assert run["timesteps"] == 40 and run["timesteps_trained"] == 48
    # which checkpoint model.zip is, said in one line
    kept = run["select_checkpoint"]["chosen_timesteps"]
    assert f"select_checkpoint kept the checkpoint at {kept:,} timesteps" in err
    target = run["select_checkpoint"]["sla_target"]     # and by which rule (the fallback too)
    chosen = next(h for h in run["select_checkpoint"]["history"] if h["timesteps"] == kept)
    assert ("the fewest GPU-hours at SLA" if chosen["sla_attainment"] >= target
            else "none reached the SLA target") in err


def test_train_and_leaderboard_from_the_cli(tmp_path: Path, capsys) -> None:
    rc = main(["train", "--algo", "ppo", "--config", TINY, "--timesteps", "64", "--n-envs", "1",
               "--out", str(tmp_path / "ppo"), "--quiet", "--set", "episode_steps=4"])
    assert rc == 0
    rc = main(["evaluate", "--policy", str(tmp_path / "ppo"), "--episodes", "1", "--json",
               "--config", TINY, "--set", "episode_steps=4"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) >= {"mean_reward", "sla_attainment", "gpu_hours", "p90_ttft_ms",
                        "p90_itl_ms", "scaling_events", "reversals_per_hour", "reward_config"}
    rc = main(["evaluate", "--leaderboard", str(tmp_path), "--config", TINY,
               "--episodes", "2", "--quiet"])
    assert rc == 0
    md = (tmp_path / "leaderboard.md").read_text()
    for name in ("heuristic:load", "heuristic:throughput", "heuristic:static", "ppo"):
        assert name in md
    rows = list(csv.DictReader(open(tmp_path / "leaderboard.csv")))
    ref = next(r for r in rows if r["policy"] == "heuristic:load")
    assert float(ref["sla_attainment_vs_ref"]) == 1.0
    assert (tmp_path / "replicas_vs_load.png").stat().st_size > 5000
    assert (tmp_path / "sla_vs_gpu_hours.png").stat().st_size > 5000


def test_front_keeps_only_undominated_policies() -> None:
    from types import SimpleNamespace as NS

    from agents.leaderboard import _front
    a = NS(sla_attainment=0.8, gpu_hours_per_episode=0.5)
    b = NS(sla_attainment=0.6, gpu_hours_per_episode=0.4)
    c = NS(sla_attainment=0.7, gpu_hours_per_episode=0.6)           # beaten by a on both axes
    d = NS(sla_attainment=0.8, gpu_hours_per_episode=0.5)           # ties a: both stay
    assert _front([a, b, c, d]) == [a, b, d]


@pytest.mark.parametrize("argv, needle", [
    (["train", "--algo", "sac", "--out", "x"], "unknown algorithm"),
    (["train", "--algo", "ppo", "--env", "CartPole-v1", "--out", "x"], "unknown env id"),
    (["train", "--algo", "ppo", "--out", "x", "--set", "reward.gpu_wieght=1"],
     "env.reward.gpu_wieght"),
    (["evaluate", "--policy", "heuristic:oracle"], "unknown heuristic"),
    (["evaluate", "--policy", "heuristic:oracle"], "flag '--policy'"),   # a flag, not a field
    (["evaluate", "--policy", "no/such/model.zip"], "no such model"),
    (["evaluate"], "exactly one of --policy and --leaderboard"),
    (["evaluate", "--policy", "heuristic:load", "--episodes", "0"], "must be >= 1"),
])
def test_agent_cli_bad_input_is_one_line(capsys, argv, needle, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 or err.startswith("usage")


def test_bad_hyperparameter_yaml_is_located_like_every_yaml(capsys, tmp_path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("DynoSim-v0:\n  n_steps: [1,\n")
    rc = main(["train", "--algo", "ppo", "--hyperparams", str(bad), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"dynosim: error: {bad}:3: invalid YAML")
    assert "<unicode string>" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("body, needle", [
    ("n_step: 128", "field 'DynoSim-v0.n_step': ppo takes no hyperparameter 'n_step'"),
    ("buffer_size: 10", "field 'DynoSim-v0.buffer_size'"),
    ("learning_rate: fast", "field 'DynoSim-v0.learning_rate': expected a number"),
    ("batch_size: -1", "ppo rejects these hyperparameters: AssertionError: `batch_size`"),
    ("bc_warm_start: {teacher: 'oracle:nope'}",
     "field 'DynoSim-v0.bc_warm_start.teacher': unknown teacher 'oracle:nope'"),
    ("bc_warm_start: {teacher: 'heuristic:kv'}", "unknown teacher 'heuristic:kv'"),
    ("gamma: high", "field 'DynoSim-v0.gamma': expected a number, got 'high'"),
    ("clip_range: wide", "field 'DynoSim-v0.clip_range': expected a number"),
    ("n_envs: two", "field 'DynoSim-v0.n_envs'"),
    ("bc_warm_start: {epoch: 5}", "field 'DynoSim-v0.bc_warm_start.epoch': unknown key"),
    ("bc_warm_start: {episodes: ten}", "field 'DynoSim-v0.bc_warm_start.episodes': expected"),
    ("select_checkpoint: {evry: 5}", "field 'DynoSim-v0.select_checkpoint.evry': unknown key"),
])
def test_hyperparameter_mistakes_are_one_line_before_any_work(capsys, tmp_path, body,
                                                              needle) -> None:
    """A typo, another algorithm's key, a bad value or an unknown teacher in a --hyperparams
    file: one line naming the file and key, exit 2, and no run directory left behind."""
    hp = tmp_path / "h.yml"
    hp.write_text(f"DynoSim-v0:\n  policy: MlpPolicy\n  {body}\n")
    rc = main(["train", "--algo", "ppo", "--hyperparams", str(hp), "--config", TINY,
               "--timesteps", "8", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and str(hp) in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "run").exists()


def test_warm_start_says_what_it_does(capsys, tmp_path, monkeypatch) -> None:
    """On a cold schedule cache the teacher's episodes take minutes: each one says when its
    schedule is ready; the epochs print a tenth of their lines (and the last)."""
    monkeypatch.setenv("DYNOSIM_CACHE", str(tmp_path / "cache"))
    hp = tmp_path / "h.yml"
    hp.write_text("DynoSim-v0:\n  policy: MlpPolicy\n  n_steps: 8\n  batch_size: 8\n"
                  "  env_kwargs: {action: {type: target}}\n"
                  "  bc_warm_start: {teacher: 'oracle:schedule-greedy', episodes: 2, "
                  "epochs: 20}\n")
    train("ppo", "DynoSim-v0", config=TINY, timesteps=8, out=tmp_path / "run", n_envs=1,
          hyperparams=hp, overrides={"episode_steps": 4})
    err = capsys.readouterr().err
    assert "behaviour-cloning warm start: 2 episodes of oracle:schedule-greedy, then 20" in err
    assert "teacher episode 1/2 (seed 10000)" in err and "teacher episode 2/2" in err
    epochs = [x for x in err.splitlines() if "behaviour cloning epoch" in x]
    assert len(epochs) == 10 and epochs[-1].startswith("dynosim: behaviour cloning epoch 20/20")


def test_reusing_an_out_directory_is_said(capsys, tmp_path) -> None:
    hp = tmp_path / "h.yml"
    hp.write_text("DynoSim-v0: {policy: MlpPolicy, n_steps: 8, batch_size: 8, n_epochs: 1}\n")
    for k in range(2):
        train("ppo", "DynoSim-v0", config=TINY, timesteps=8, out=tmp_path / "run", n_envs=1,
              hyperparams=hp, overrides={"episode_steps": 4})
        said = "holds a run already; its model.zip and run.json are replaced"
        assert (said in capsys.readouterr().err) == (k == 1)


def test_evaluate_out_is_checked_before_the_episodes(capsys, tmp_path) -> None:
    """--out into a directory that does not exist yet is made; --out naming a directory is a
    one-line error before any episode runs (it used to fail after all of them)."""
    out = tmp_path / "new" / "dir" / "r.json"
    assert main(["evaluate", "--policy", "heuristic:static:2", "--config", TINY, "--episodes",
                 "1", "--set", "episode_steps=2", "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["policy"] == "heuristic:static:2"
    capsys.readouterr()
    assert main(["evaluate", "--policy", "heuristic:static:2", "--config", TINY, "--episodes",
                 "1", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "flag '--out'" in err and "is a directory" in err and len(err.splitlines()) == 1
    # a new directory written with its trailing slash, and tune's --out, are checked up front
    for argv in (["evaluate", "--policy", "heuristic:static:2", "--config", TINY, "--episodes",
                  "1", "--out", str(tmp_path / "notyet") + "/", "--quiet"],
                 ["tune", "--policy", "heuristic:load", "--trials", "50", "--episodes", "1",
                  "--config", TINY, "--out", str(tmp_path), "--quiet"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "flag '--out'" in err and "is a directory; give a file name" in err
    assert not (tmp_path / "notyet").exists()


def test_policy_files_that_are_not_models_are_one_line_errors(capsys, tmp_path) -> None:
    """Any file given as --policy: not a zip, a zip that is not an SB3 save, an SB3-looking
    zip whose data is garbage, a run dir whose run.json is broken -> one line, exit 2."""
    import zipfile
    (tmp_path / "text.zip").write_text("hi")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("x", "y")
    with zipfile.ZipFile(tmp_path / "garbage.zip", "w") as z:
        z.writestr("data", "{not json")
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.zip").write_bytes((tmp_path / "garbage.zip").read_bytes())
    (run / "run.json").write_text("{broken")
    for spec, needle in ((tmp_path / "text.zip", "not a stable-baselines3 model"),
                         (tmp_path / "other.zip", "not a stable-baselines3 model"),
                         (tmp_path / "garbage.zip", "cannot load it as a stable-baselines3"),
                         (run, "run record is not valid JSON")):
        rc = main(["evaluate", "--policy", str(spec), "--episodes", "1", "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and needle in err and "Traceback" not in err, (spec, err)
        assert len(err.strip().splitlines()) == 1 and "'--policy'" in err


@pytest.mark.expensive
@pytest.mark.xfail(strict=True, reason="issue 11's target is missed on v0.2 (README, 'Learned "
                   "autoscalers (rounds 1-8)'; docs/benchmark/learning_rounds.md); strict: "
                   "a pass means the README and that file must be updated")
def test_default_ppo_recipe_meets_the_issue_11_target(tmp_path: Path) -> None:
    """The shipped recipe (``dynosim train --algo ppo``, v0.2 default, ~36k steps), one seed,
    on the held-out leaderboard's episodes: at least the tuned load planner's SLA attainment
    with >= 15 % fewer GPU-hours per episode."""
    out = train("ppo", "DynoSim-v0", out=tmp_path / "ppo", quiet=True)
    ppo = evaluate(str(out), episodes=6, seed=0)
    tuned = evaluate("heuristic:load-tuned", episodes=6, seed=0)
    assert ppo.sla_attainment >= tuned.sla_attainment
    assert ppo.gpu_hours_per_episode <= 0.85 * tuned.gpu_hours_per_episode


def test_reward_normalisation_is_rl_zoo_normalize(tmp_path: Path) -> None:
    """``normalize`` (RL Zoo's key) wraps the training envs in VecNormalize, reward only: a
    model must be scorable from its zip alone, so observation statistics are refused."""
    from agents.train import _normalize_kwargs
    assert _normalize_kwargs(False, 0.99) == {}
    assert _normalize_kwargs(True, 0.97) == {"norm_obs": False, "norm_reward": True,
                                             "gamma": 0.97}
    with pytest.raises(InputError, match="norm_obs is not supported"):
        _normalize_kwargs({"norm_obs": True}, 0.99)
    with pytest.raises(InputError, match="unknown normalize key"):
        _normalize_kwargs({"clip_obs": 5}, 0.99)
    hp = tmp_path / "ppo.yml"
    hp.write_text("DynoSim-v0:\n  policy: MlpPolicy\n  n_steps: 16\n  batch_size: 16\n"
                  "  normalize: {norm_reward: true}\n")
    out = train("ppo", "DynoSim-v0", config=TINY, timesteps=32, out=tmp_path / "run",
                n_envs=2, hyperparams=hp, quiet=True, overrides={"episode_steps": 4})
    run = json.loads((out / "run.json").read_text())
    assert run["normalize"] == {"norm_obs": False, "norm_reward": True, "gamma": 0.99}
    assert "normalize" not in run["hyperparams"]

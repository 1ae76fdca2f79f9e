"""Learned autoscalers (issue 11): the shipped ``pretrained:autoscaler``, the RL-Zoo-style
recipe keys and the seed summary of ``scripts/learned_benchmark.py``.

The real training runs (a behaviour-cloning warm start from oracle:schedule, then 12k PPO
steps per seed, 10-13 min each on the shared machine) are not run here;
``test_learned_recipe_trains_and_scores`` and the behaviour-cloning tests run the same code
paths for a few steps.
"""
from __future__ import annotations

import json
import statistics
import zipfile
from pathlib import Path

import pytest

import dynosim_gym  # noqa: F401  (registers the ids)
from agents.evaluate import PRETRAINED_DIR, evaluate, resolve_policy
from agents.train import load_hyperparams, train
from dynosim.cli import main

from conftest import load_script

TINY = "autoscale_tiny"
ROOT = Path(__file__).resolve().parents[1]


def _script():
    return load_script("learned_benchmark")


def test_pretrained_autoscaler_is_small_packaged_and_reproducible() -> None:
    zip_path = PRETRAINED_DIR / "autoscaler.zip"
    assert zip_path.is_file() and zip_path.stat().st_size <= 5 * 2**20
    assert zipfile.is_zipfile(zip_path)
    pol = resolve_policy("pretrained:autoscaler")
    assert pol.kind == "pretrained" and pol.env_id == "DynoSim-v0"
    run = pol.run
    # the record regenerates it: algorithm, seed, budget, recipe and the command
    assert run["command"].startswith("dynosim train --algo ") and f"--seed {run['seed']}" \
        in run["command"]
    words = run["command"].split()
    recipe = words[words.index("--hyperparams") + 1] if "--hyperparams" in words else None
    hp = load_hyperparams(run["algo"], "DynoSim-v0", recipe and ROOT / recipe)
    # the recipe the command names is the one it was trained with (env_kwargs, warm start
    # and checkpoint selection are popped from the hyperparameters, so compare them too)
    assert run["env_kwargs"] == hp.get("env_kwargs", {})
    assert {k: v for k, v in run["bc_warm_start"].items() if k in hp["bc_warm_start"]} == \
        hp["bc_warm_start"]
    assert (run.get("select_checkpoint") or {}).get("every") == \
        (hp.get("select_checkpoint") or {}).get("every")
    if "--timesteps" in run["command"]:
        assert f"--timesteps {run['timesteps']} " in run["command"]
    else:
        assert run["timesteps"] == int(hp["n_timesteps"])
    for key, value in run["overrides"].items():
        assert f"--set {key}={value}" in run["command"]
    for key, value in run["hyperparams"].items():
        assert hp[key] == value, key
    assert pol.interface()["action"]["type"] == hp["env_kwargs"]["action"]["type"]


def test_evaluate_runs_the_pretrained_autoscaler(capsys) -> None:
    rc = main(["evaluate", "--policy", "pretrained:autoscaler", "--episodes", "1", "--json",
               "--quiet", "--set", "env.episode_steps=6"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["policy"] == "pretrained:autoscaler" and res["per_episode"][0]["steps"] == 6
    # scored with the evaluation config's reward, acting through its training interface
    assert res["reward_config"]["mode"] == "per_request"
    assert res["policy_interface"]["action"]["type"] == "target"


def test_a_pretrained_zip_given_by_path_reads_its_record() -> None:
    """``--policy agents/pretrained/router.zip`` is the same policy as ``pretrained:router``:
    its NAME.json is its run record (env id and policy interface)."""
    by_name = resolve_policy("pretrained:router")
    by_path = resolve_policy(str(PRETRAINED_DIR / "router.zip"))
    assert by_path.env_id == by_name.env_id == "DynoSimRouting-v0"
    assert by_path.interface() == by_name.interface()


def test_interface_clash_names_the_model_not_the_config(capsys) -> None:
    """A target-action model on the disaggregated env: the clash is the model's interface,
    so the one-line error says where the value came from (not just the config's line)."""
    rc = main(["evaluate", "--policy", "pretrained:autoscaler", "--episodes", "1", "--quiet",
               "--config", str(ROOT / "envs_configs" / "autoscale_disagg.yaml")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "field 'env.action.type'" in err and "pretrained:autoscaler was trained with" in err


def test_learned_recipe_trains_and_scores(tmp_path: Path) -> None:
    """env_kwargs from the YAML reach the env (``--set`` wins), and the run scores."""
    hp = tmp_path / "ppo.yml"
    hp.write_text("DynoSim-v0:\n  policy: MlpPolicy\n  n_steps: 8\n  batch_size: 8\n"
                  "  env_kwargs: {action: {type: target}, timeout_s: 30}\n"
                  "  normalize: {norm_reward: true}\n")
    out = train("ppo", "DynoSim-v0", config=TINY, timesteps=16, out=tmp_path / "run",
                n_envs=2, hyperparams=hp, quiet=True,
                overrides={"episode_steps": 4, "timeout_s": 45})
    run = json.loads((out / "run.json").read_text())
    env = run["env_config"]["env"]
    assert env["action"]["type"] == "target" and env["timeout_s"] == 45
    assert "env_kwargs" not in run["hyperparams"] and run["train_cpu_s"] >= 0
    assert run["env_kwargs"] == {"action": {"type": "target"}, "timeout_s": 30}
    assert run["overrides"] == {"episode_steps": 4, "timeout_s": 45}
    res = evaluate(str(out), config=TINY, episodes=1, overrides={"episode_steps": 4})
    assert res.policy_interface["action"]["type"] == "target"


def test_seed_summary_is_mean_and_sample_std() -> None:
    mod = _script()
    rows = [{"sla_attainment": a, "gpu_hours_per_episode": g, "p90_ttft_ms": 1000.0,
             "scaling_events": 10, "reversals_per_hour": 1.0, "flaps_per_hour": f,
             "mean_reward": -100.0, "train_wall_s": 60.0}
            for a, g, f in ((0.6, 3.0, 2.0), (0.7, 3.5, 4.0), (0.8, 2.5, 6.0))]
    s = mod.summarise(rows)
    assert s["sla_attainment"]["mean"] == pytest.approx(0.7)
    assert s["sla_attainment"]["std"] == pytest.approx(statistics.stdev([0.6, 0.7, 0.8]))
    assert s["gpu_hours_per_episode"]["std"] == pytest.approx(0.5)
    assert "train_cpu_s" not in s          # missing everywhere: no made-up figure
    line = mod.row("ppo", s, 3)
    assert line.startswith("| ppo (3 seeds) | 70.0% (± 10.0) | 3.00 ± 0.50 |")
    assert "| 1.0 ± 0.0 | 4.0 ± 2.0 | -100.0 ± 0.0 |" in line   # reversals, flaps, reward
    # an evaluation file from before flaps_per_hour existed: "-", not a made-up figure
    old = mod.summarise([{k: v for k, v in r.items() if k != "flaps_per_hour"} for r in rows])
    assert "| 1.0 ± 0.0 | - | -100.0 ± 0.0 |" in mod.row("ppo", old, 3)
    assert mod.seeds("0-4") == [0, 1, 2, 3, 4] and mod.seeds("1,3") == [1, 3]


def test_the_shipping_rule_prefers_the_cheapest_seed_that_matches_the_baseline() -> None:
    mod = _script()
    base = {"sla_attainment": 0.60, "gpu_hours_per_episode": 4.0}
    s = {("ppo", 0): {"sla_attainment": 0.59, "gpu_hours_per_episode": 1.0},   # too low
         ("ppo", 1): {"sla_attainment": 0.70, "gpu_hours_per_episode": 3.5},
         ("lag", 0): {"sla_attainment": 0.61, "gpu_hours_per_episode": 3.0},   # cheapest ok
         ("lag", 1): {"sla_attainment": 0.90, "gpu_hours_per_episode": 5.0}}
    assert mod.select(s, base) == ("lag", 0)
    # nobody reaches the baseline: the highest attainment, whatever it costs
    low = {k: dict(v, sla_attainment=v["sla_attainment"] - 0.5) for k, v in s.items()}
    assert mod.select(low, base) == ("lag", 1)


@pytest.mark.parametrize("algo,policy", [("ppo", "MlpPolicy"), ("ppo_lstm", "MlpLstmPolicy")])
def test_behaviour_cloning_from_the_hindsight_schedule_fits_its_actions(
        tmp_path: Path, monkeypatch, algo: str, policy: str) -> None:
    """The warm start (oracle:schedule-greedy's per-step targets on training episodes) raises the
    likelihood of the teacher's actions, feed-forward and recurrent (whole episodes); the
    schedules land in the disk cache, one per episode."""
    from agents.router_train import schedule_cache_dir
    monkeypatch.setenv("DYNOSIM_CACHE", str(tmp_path / "cache"))
    hp = tmp_path / "hp.yml"
    hp.write_text(f"DynoSim-v0:\n  policy: {policy}\n  n_steps: 8\n  batch_size: 8\n"
                  "  env_kwargs: {action: {type: target}}\n"
                  "  bc_warm_start: {teacher: 'oracle:schedule-greedy', episodes: 2, epochs: 15,"
                  " batch_size: 16}\n")
    out = train(algo, "DynoSim-v0", config=TINY, timesteps=8, out=tmp_path / "run",
                n_envs=1, hyperparams=hp, quiet=True,
                overrides={"scenarios": "diurnal_swing,rate_steps", "episode_steps": 24,
                           "rate_min_rps": 1.0, "rate_max_rps": 3.0})
    bc = json.loads((out / "run.json").read_text())["bc_warm_start"]
    assert bc["teacher"] == "oracle:schedule-greedy" and bc["samples"] == 2 * 24
    assert bc["final_nll"] < bc["initial_nll"]
    assert bc["teacher_agreement"] > bc["initial_agreement"]
    cached = sorted(schedule_cache_dir().glob("*.json"))
    assert len(cached) == 2 and all(len(json.loads(p.read_text())["targets"]) == 24
                                    for p in cached)


def test_bc_regulariser_pulls_a_drifted_policy_back_to_the_teacher() -> None:
    """``bc_warm_start.regularise``: each phase (after a PPO update) lowers the teacher's
    NLL; the first rollout (the clone, untrained) is left alone; bad settings are refused."""
    import gymnasium as gym
    import numpy as np
    import torch as th
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import configure

    from agents.router_train import bc_regulariser
    from sim.errors import InputError
    env = gym.make("DynoSim-v0", config=TINY, **{"env.action.type": "target"})
    model = PPO("MlpPolicy", env, n_steps=8, batch_size=8, seed=0, device="cpu",
                learning_rate=1e-3)
    model.set_logger(configure(None, []))
    rng = np.random.default_rng(0)
    X = th.as_tensor(rng.normal(size=(64, env.observation_space.shape[0])).astype(np.float32))
    y = th.as_tensor(rng.integers(0, env.action_space.n, 64))   # a "teacher" to follow
    cb = bc_regulariser(X, y, weight=1.0, steps=20, batch_size=32, seed=0)
    cb.init_callback(model)
    before = [p.detach().clone() for p in model.policy.parameters()]
    cb.on_rollout_start()                                        # first rollout: untouched
    assert cb.history == [] and all(th.equal(a, b) for a, b in
                                    zip(before, model.policy.parameters()))
    for _ in range(4):
        cb.on_rollout_start()
    nll = [h[1] for h in cb.history]
    assert len(nll) == 4 and nll == sorted(nll, reverse=True) and nll[-1] < nll[0]
    assert cb.history[-1][2] > cb.history[0][2]                 # agreement rises
    with pytest.raises(InputError, match="regularise"):
        bc_regulariser(X, y, weight=0.0)


def test_teacher_schedules_are_planned_and_cached_without_the_scale_down_window(
        tmp_path: Path, monkeypatch) -> None:
    """The hindsight schedule is a plan of counts: a recipe with
    ``env.action.scale_down_window_s`` reuses the schedule cached without it (same key) and
    plans a missing one on an env without the window."""
    import gymnasium as gym

    import agents.oracle as oracle
    from agents import router_train
    monkeypatch.setenv("DYNOSIM_CACHE", str(tmp_path / "cache"))
    planned_on = []

    def fake_schedule(env, opts, seed, lo, hi, target, seg, interval, steps):
        planned_on.append(env.unwrapped.cfg.env.action.scale_down_window_s)
        return {"targets": [2] * steps}
    monkeypatch.setattr(oracle, "greedy_schedule", fake_schedule)   # the default teacher
    opts = {"split": "train"}
    for window in (30.0, 0.0, 60.0):
        env = gym.make("DynoSim-v0", config=TINY, **{
            "env.action.type": "target", "env.action.scale_down_window_s": window})
        router_train._schedule_teacher(env, opts, 7)
    assert planned_on == [0.0]                        # planned once, without the window
    assert len(list(router_train.schedule_cache_dir().glob("*.json"))) == 1
    env = gym.make("DynoSim-v0", config=TINY, **{"env.action.type": "target",
                                                 "env.action.scale_down_window_s": 60.0})
    router_train._schedule_teacher(env, opts, 8)      # another episode: another plan
    assert planned_on == [0.0, 0.0]


def test_checkpoint_rule_prefers_the_cheapest_that_reaches_the_target() -> None:
    from agents.checkpoint_select import select
    s = [{"sla_attainment": 0.70, "gpu_hours_per_episode": 3.5},     # the clone
         {"sla_attainment": 0.23, "gpu_hours_per_episode": 1.4},     # collapsed: cheap
         {"sla_attainment": 0.68, "gpu_hours_per_episode": 3.2},
         {"sla_attainment": 0.90, "gpu_hours_per_episode": 5.0}]
    assert select(s, 0.67) == 2
    assert select(s, 0.95) == 3                 # none reaches it: the highest attainment
    assert select(s[:2], 0.99) == 0


def test_select_checkpoint_scores_training_episodes_and_keeps_the_chosen(
        tmp_path: Path) -> None:
    """``select_checkpoint`` scores the clone and later checkpoints on training episodes,
    records them, and the saved model is the chosen checkpoint's parameters."""
    from stable_baselines3 import PPO

    from agents.checkpoint_select import checkpoint_selector, select
    hp = tmp_path / "hp.yml"
    hp.write_text("DynoSim-v0:\n  policy: MlpPolicy\n  n_steps: 8\n  batch_size: 8\n"
                  "  learning_rate: 0.05\n"
                  "  env_kwargs: {action: {type: target}, reward: {sla_target: 0.5}}\n"
                  "  select_checkpoint: {every: 16, episodes: 2, seed: 200}\n")
    out = train("ppo", "DynoSim-v0", config=TINY, timesteps=48, out=tmp_path / "run",
                n_envs=1, hyperparams=hp, quiet=True, overrides={"episode_steps": 4})
    rec = json.loads((out / "run.json").read_text())["select_checkpoint"]
    steps = [h["timesteps"] for h in rec["history"]]
    assert steps[0] == 0 and steps[-1] == 48 and len(steps) >= 3
    assert rec["seeds"] == [200, 201] and rec["split"] == "train"
    chosen = select(rec["history"], 0.5)
    assert rec["chosen_timesteps"] == steps[chosen]
    # the saved policy acts as the chosen checkpoint did: re-score it on the same episodes
    model = PPO.load(out / "model.zip", device="cpu")
    env_cfg = json.loads((out / "run.json").read_text())["env_config"]
    cb = checkpoint_selector(env_cfg, every=1, episodes=2, seed=200)
    cb.init_callback(model)
    cb.score()
    again = cb.history[0]
    assert again["sla_attainment"] == rec["history"][chosen]["sla_attainment"]
    assert again["gpu_hours_per_episode"] == rec["history"][chosen]["gpu_hours_per_episode"]
    assert env_cfg["env"]["reward"]["sla_target"] == 0.5


def test_dagger_samples_follow_the_learner_and_carry_the_schedule_labels(
        tmp_path: Path, monkeypatch) -> None:
    """``teacher_samples(..., learner=...)`` (``bc_warm_start.dagger``): the learner's
    actions drive the env, and each of its states is labelled with the schedule's count
    for that step, not with anything the learner did."""
    import gymnasium as gym
    import numpy as np

    from agents import router_train
    from agents.oracle import SchedulePolicy
    monkeypatch.setattr(router_train, "_schedule_teacher",
                        lambda env, opts, seed, oracle: SchedulePolicy(env, [4] * 24))
    env = gym.make("DynoSim-v0", config=TINY, **{"env.action.type": "target",
                                                 "env.episode_steps": 24,
                                                 "env.initial_workers": 1})
    u = env.unwrapped

    class OneWorker:
        def predict(self, obs, deterministic=True):
            return np.asarray(u.target_action(1)), None
    from dynosim_gym.observations import FEATURES
    FEATURE_INDEX = FEATURES.index("active_workers")
    for learner, want in ((None, 4), (OneWorker(), 1)):
        obs, act, lengths = router_train.teacher_samples(env, "oracle:schedule", [7, 8],
                                                         learner)
        assert lengths == [24, 24] and len(obs) == 48
        assert set(act) == {u.target_action(4)}              # the schedule's label
        active = round(float(obs[-1][FEATURE_INDEX]) * u.max_workers)
        assert active == want                                 # who drove the env
    env.close()


def test_dagger_deadband_labels_hold_within_k_workers_of_the_provisioned_count(
        monkeypatch) -> None:
    """``bc_warm_start.dagger.deadband`` K (round 6's anti-flapping ablation): on the
    learner's states, a schedule count within K of the provisioned count is labelled
    "hold"; one further away keeps the schedule's label; the teacher's own pass is never
    relabelled."""
    import gymnasium as gym
    import numpy as np

    from agents import router_train
    from agents.oracle import SchedulePolicy
    env = gym.make("DynoSim-v0", config=TINY, **{"env.action.type": "target",
                                                 "env.episode_steps": 12,
                                                 "env.initial_workers": 1})
    u = env.unwrapped

    class OneWorker:
        def predict(self, obs, deterministic=True):
            return np.asarray(u.target_action(1)), None
    for target, deadband, learner, want in ((2, 1, OneWorker(), 1), (2, 0, OneWorker(), 2),
                                            (3, 1, OneWorker(), 3), (2, 1, None, 2)):
        monkeypatch.setattr(router_train, "_schedule_teacher",
                            lambda env, opts, seed, oracle, t=target:
                            SchedulePolicy(env, [t] * 12))
        _, act, _ = router_train.teacher_samples(env, "oracle:schedule", [7], learner,
                                                 deadband=deadband)
        # the first label is read before any action: the count is the reset's 1 worker
        assert set(act[1:]) == {u.action_type.from_target(want, 1)}, (target, deadband)
    env.close()


def test_dagger_rounds_aggregate_the_clones_own_states(tmp_path: Path, monkeypatch) -> None:
    """``bc_warm_start.dagger: {rounds: 2}``: each round adds one pass over the teacher
    episodes on the clone's own states and records its agreement there; bad settings and
    teachers that cannot label arbitrary states are refused in one line."""
    monkeypatch.setenv("DYNOSIM_CACHE", str(tmp_path / "cache"))
    over = {"scenarios": "diurnal_swing,rate_steps", "episode_steps": 24,
            "rate_min_rps": 1.0, "rate_max_rps": 3.0}
    hp = tmp_path / "hp.yml"
    hp.write_text("DynoSim-v0:\n  policy: MlpPolicy\n  n_steps: 8\n  batch_size: 8\n"
                  "  env_kwargs: {action: {type: target}}\n"
                  "  bc_warm_start: {teacher: 'oracle:schedule-greedy', episodes: 2, epochs: 5,"
                  " batch_size: 16, dagger: {rounds: 2}}\n")
    out = train("ppo", "DynoSim-v0", config=TINY, timesteps=8, out=tmp_path / "run",
                n_envs=1, hyperparams=hp, quiet=True, overrides=over)
    bc = json.loads((out / "run.json").read_text())["bc_warm_start"]
    assert bc["samples"] == 3 * 2 * 24 and len(bc["dagger"]) == 2
    assert all(r["samples"] == 48 and 0.0 <= r["agreement_on_own_states"] <= 1.0
               for r in bc["dagger"])
    from sim.errors import InputError
    for bad in ("dagger: {rounds: 0}", "dagger: {round: 2}", "dagger: {rounds: 1, deadband: -1}",
                "teacher: 'heuristic:load', dagger: {rounds: 1}"):
        hp.write_text("DynoSim-v0:\n  policy: MlpPolicy\n  n_steps: 8\n  batch_size: 8\n"
                      "  env_kwargs: {action: {type: target}}\n"
                      f"  bc_warm_start: {{episodes: 1, epochs: 1, {bad}}}\n")
        with pytest.raises(InputError, match="bc_warm_start.dagger"):
            train("ppo", "DynoSim-v0", config=TINY, timesteps=8, out=tmp_path / "bad",
                  n_envs=1, hyperparams=hp, quiet=True, overrides=over)


def test_the_target_check_judges_pooled_and_per_episode_attainment_per_family() -> None:
    """A recipe that serves the request-heavy family and drops the light ones (round 4d)
    meets the pooled target and misses it on the mean of per-episode attainment; the
    per-family rows show where."""
    mod = _script()

    def ev(eps: list[tuple[str, int, int, float]]) -> dict:
        per = [{"requests_met": met, "requests_decided": dec, "gpu_hours": gpu,
                "setup": {"scenario": fam}} for fam, met, dec, gpu in eps]
        met = sum(e["requests_met"] for e in per)
        dec = sum(e["requests_decided"] for e in per)
        return {"sla_attainment": met / dec, "per_episode": per,
                "gpu_hours_per_episode": sum(e["gpu_hours"] for e in per) / len(per)}
    base = ev([("heavy", 600, 1000, 3.0), ("light", 50, 100, 4.0), ("light", 50, 100, 4.0)])
    gives_up = ev([("heavy", 900, 1000, 5.0), ("light", 5, 100, 1.0), ("light", 5, 100, 1.0)])
    serves_all = ev([("heavy", 700, 1000, 3.0), ("light", 60, 100, 2.5),
                     ("light", 60, 100, 2.5)])
    t = mod.target_check([gives_up, gives_up], base)
    assert t["gpu_hours_per_episode_max"] == pytest.approx(0.85 * 11 / 3)
    assert t["pooled"]["met"] and not t["mean_episode"]["met"]
    assert t["mean_episode"]["sla_attainment"] == pytest.approx((0.9 + 0.05 + 0.05) / 3)
    assert not t["per_family"]["light"]["reaches_baseline"]
    assert t["per_family"]["heavy"]["reaches_baseline"]
    assert t["per_family"]["light"]["baseline"]["gpu_hours_per_episode"] == 4.0
    t2 = mod.target_check([serves_all, gives_up], base)      # the mean over seeds
    assert t2["mean_episode"]["sla_attainment"] == pytest.approx(
        ((0.7 + 0.6 + 0.6) / 3 + 1.0 / 3) / 2)
    ok = mod.target_check([serves_all], base)
    assert ok["pooled"]["met"] and ok["mean_episode"]["met"]
    lines = mod.target_lines(t)
    assert "MET" in lines[0] and "missed" in lines[1] and any("| light (2) |" in x
                                                            for x in lines)


def test_ship_reads_candidates_from_selection_files_and_keeps_the_shipped_one(
        tmp_path: Path, monkeypatch) -> None:
    """``--ship`` counts a candidate by its selection file (its run may be elsewhere); if
    the rule picks the checkpoint shipped already it keeps it, and if it picks one whose
    run is not under --runs it stops with a one-line error naming --runs."""
    import argparse

    import agents.evaluate as ev
    mod = _script()
    sel = tmp_path / "out" / "selection"
    sel.mkdir(parents=True)

    def score(name: str, sla: float, gpu: float) -> None:
        (sel / f"train_split_{name}.json").write_text(json.dumps(
            {"sla_attainment": sla, "gpu_hours_per_episode": gpu}))
    score("load-tuned", 0.665, 3.64)
    score("a_s0", 0.70, 2.0)          # reaches the planner, the cheapest: the rule's pick
    score("a_s1", 0.80, 3.0)
    score("b_s0", 0.50, 1.0)
    pre = tmp_path / "pretrained"
    pre.mkdir()
    monkeypatch.setattr(ev, "PRETRAINED_DIR", pre)
    args = argparse.Namespace(runs=str(tmp_path / "runs"), seeds=[0, 1], hyperparams=None,
                              ship="autoscaler")
    base, scores = mod.train_split_scores(args, ["a", "b"], tmp_path / "out")
    assert set(scores) == {("a", 0), ("a", 1), ("b", 0)}
    from sim.errors import InputError
    with pytest.raises(InputError, match="chose a seed 0.*not here") as exc:
        mod.ship(args, ["a", "b"], tmp_path / "out")
    assert exc.value.field == "--runs"
    (pre / "autoscaler.json").write_text(json.dumps(
        {"command": "dynosim train --algo ppo --seed 0 --out runs/learned/a/s0"}))
    assert mod.ship(args, ["a", "b"], tmp_path / "out") is None
    assert sorted(p.name for p in pre.iterdir()) == ["autoscaler.json"]   # untouched


def _episodes(*figures: tuple[float, float]) -> list[dict]:
    """Per-episode rows as an evaluation file holds them (seeds 0, 1, ...)."""
    return [{"seed": k, "requests_met": int(100 * sla), "requests_decided": 100,
             "sla_attainment": sla, "gpu_hours": gpu, "scaling_events": 3, "reward": -k}
            for k, (sla, gpu) in enumerate(figures)]


def test_ship_excludes_a_candidate_equal_to_its_heuristic_base(tmp_path: Path, capsys,
                                                                monkeypatch) -> None:
    """Round 9b's amendment, automatic: a residual candidate whose selection episodes are,
    record for record, its bare base's is excluded (printed, and recorded with the rule);
    one differing in a single figure and a non-residual one are kept; if every candidate
    is excluded nothing is shipped."""
    import argparse

    import agents.evaluate as ev
    from sim.errors import InputError
    mod = _script()
    out = tmp_path / "out"
    sel = out / "selection"
    sel.mkdir(parents=True)
    residual = {"action": {"type": "residual", "residual_offsets": [-2, 4]}}
    base_eps = _episodes((0.70, 1.0), (0.72, 1.1), (0.68, 0.9))

    def write(name: str, **rec) -> None:
        (sel / f"train_split_{name}.json").write_text(json.dumps(rec))
    write("load-tuned", sla_attainment=0.665, gpu_hours_per_episode=3.64)
    # the cheapest reaching the planner, but its base to the record: excluded
    write("r_s0", sla_attainment=0.70, gpu_hours_per_episode=1.0, policy_interface=residual,
          per_episode=base_eps)
    write("r_s0_bare_base", per_episode=[{**e, "reward": 9.0} for e in base_eps])
    # residual, one figure of one episode differs from its base: kept, the rule's pick
    changed = json.loads(json.dumps(base_eps))
    changed[2]["gpu_hours"] = 0.95
    write("r_s1", sla_attainment=0.70, gpu_hours_per_episode=1.5, policy_interface=residual,
          per_episode=changed)
    write("r_s1_bare_base", per_episode=base_eps)
    # not residual (no heuristic base): kept, dearer
    write("t_s0", sla_attainment=0.80, gpu_hours_per_episode=2.0,
          policy_interface={"action": {"type": "target"}}, per_episode=base_eps)
    pre = tmp_path / "pretrained"
    pre.mkdir()
    monkeypatch.setattr(ev, "PRETRAINED_DIR", pre)
    monkeypatch.setattr(mod, "bare_base", lambda *a, **k: pytest.fail("base re-scored"))
    (pre / "autoscaler.json").write_text(json.dumps(
        {"command": "dynosim train --algo ppo --seed 1 --out runs/learned/r/s1"}))
    args = argparse.Namespace(runs=str(tmp_path / "runs"), seeds=[0, 1], hyperparams=None,
                              ship="autoscaler")
    assert mod.ship(args, ["r", "t"], out) is None          # r s1 chosen: shipped already
    err = capsys.readouterr().err
    assert "excluded r s0: equals its heuristic base" in err
    assert "excluded r s1" not in err and "excluded t" not in err
    _, scores = mod.train_split_scores(args, ["r", "t"], out)
    assert mod.base_exclusions(scores, sel).keys() == {("r", 0)}
    # only base-equal candidates: nothing to ship, one line naming --candidates
    with pytest.raises(InputError, match="equals its heuristic base") as exc:
        mod.ship(argparse.Namespace(**{**vars(args), "seeds": [0]}), ["r"], out)
    assert exc.value.field == "--candidates"


def test_base_equality_on_the_committed_rounds() -> None:
    """The comparison on real records (held-out files, where each round's bare base was
    scored): round 9's and 9b's seeds are their bare bases to the record, round 8's and
    7b's are not."""
    mod = _script()
    bench = ROOT / "docs" / "benchmark"

    def load(name: str) -> dict:
        return json.loads((bench / f"{name}.json").read_text())
    hold = load("residual_base_offset0_w60_c300_hold")
    w300 = load("residual_base_offset0_w300")
    w60 = load("residual_base_offset0")
    for s in range(5):
        assert mod.equals_base(load(f"learned_ppo_r9b_s{s}"), hold)
        assert mod.equals_base(load(f"learned_ppo_r9_s{s}"), w300)
        assert not mod.equals_base(load(f"learned_ppo_r8_s{s}"), hold)
        assert not mod.equals_base(load(f"learned_ppo_r7b_s{s}"), w60)
    assert not mod.equals_base(load("learned_ppo_r9b_s0"), w300)   # another base


def test_bare_base_reproduces_the_committed_reference_episode() -> None:
    """``bare_base`` (the env ``dynosim evaluate`` builds from a policy interface, offset 0)
    gives, on held-out episode 0, the record ``scripts/residual_base.py --offset 0`` wrote
    for round 9b's base (``residual_base_offset0_w60_c300_hold.json``)."""
    mod = _script()
    bench = ROOT / "docs" / "benchmark"
    cand = json.loads((bench / "learned_ppo_r9b_s0.json").read_text())
    ref = json.loads((bench / "residual_base_offset0_w60_c300_hold.json").read_text())
    got = json.loads(json.dumps(mod.bare_base(
        cand["policy_interface"], {"episodes": 1, "seed": 0, "split": "eval"})))
    assert mod.equals_base({"per_episode": ref["per_episode"][:1]}, got)
    assert got["per_episode"][0] == ref["per_episode"][0]

"""Round-8 new-user trial, code paths (s8-fixF): each test fails without its fix."""
from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest

import dynosim_gym  # noqa: F401  (registers the env ids)
from sim.errors import InputError

from conftest import one_line_error, run_cli as run

REPO = Path(__file__).resolve().parent.parent
ROUTING = "DynoSimRouting-v0"


# -- 1. the routing env refuses the autoscaler's settings ------------------------------------

@pytest.mark.parametrize("kwargs, key", [
    ({"reward": {"mode": "lagrangian"}}, "env.reward.mode"),
    ({"reward": {"mode": "interval"}}, "env.reward.mode"),
    ({"reward": {"gpu_weight": 5}}, "env.reward.gpu_weight"),
    ({"reward": {"change_penalty": 0.5}}, "env.reward.change_penalty"),
    ({"reward": {"multiplier": 3}}, "env.reward.multiplier"),
    ({"action": {"type": "target"}}, "env.action.type"),
    ({"action": {"scale_down_window_s": 30}}, "env.action.scale_down_window_s"),
    ({"observation": {"stack": 2}}, "env.observation.stack"),
    ({"planner_predictor": "kalman"}, "env.planner_predictor"),
    ({"planner_interval_s": 20}, "env.planner_interval_s"),
    ({"env.planner": {"load_scaling_down_sensitivity": 20}}, "env.planner"),
    ({"startup_min_s": 1, "startup_max_s": 2}, "env.startup_min_s"),
    ({"planner.kind": "load"}, "planner"),          # the run config's section
])
def test_routing_env_refuses_autoscaler_keys(kwargs, key) -> None:
    with pytest.raises(InputError, match="does not apply to the routing env") as exc:
        gym.make(ROUTING, **kwargs)
    assert exc.value.field == key
    assert len(str(exc.value).splitlines()) == 1


def test_routing_env_accepts_what_it_reads_and_its_own_resolved_config() -> None:
    env = gym.make(ROUTING, reward={"sla_weight": 2.0, "mode": "per_request"},
                   observation={"isl_scale": 4096}, timeout_s=30, initial_workers=3)
    assert env.unwrapped.w_sla == 2.0 and env.unwrapped.num_workers == 3
    # a run record's resolved config carries every default: accepted
    again = gym.make(ROUTING, config=env.unwrapped.cfg.to_dict())
    assert again.unwrapped.num_workers == 3
    gym.make(ROUTING, config="routing_families")


def test_routing_keys_refused_in_a_yaml_name_its_line(tmp_path: Path) -> None:
    text = (REPO / "envs_configs" / "routing_default.yaml").read_text()
    cfg = tmp_path / "r.yaml"
    cfg.write_text(text.replace("  reward: {sla_weight: 1.0}",
                                "  reward: {sla_weight: 1.0, change_penalty: 0.2}"))
    with pytest.raises(InputError) as exc:
        gym.make(ROUTING, config=str(cfg))
    assert exc.value.file == str(cfg) and exc.value.line is not None
    assert exc.value.field == "env.reward.change_penalty"


def test_evaluate_on_the_routing_env_refuses_autoscaler_sets(capsys) -> None:
    rc, _, err = run(capsys, "evaluate", "--env", ROUTING, "--policy", "heuristic:kv",
                     "--episodes", "1", "--set", "env.reward.mode=lagrangian",
                     "--set", "env.action.type=target", "--set", "env.reward.gpu_weight=5",
                     "--json")
    one_line_error(rc, err, "env.action.type", "does not apply to the routing env",
                   "env.reward.mode", "env.reward.gpu_weight")


def test_train_on_the_routing_env_refuses_a_lagrangian_reward(capsys, tmp_path: Path) -> None:
    out = tmp_path / "r"
    rc, _, err = run(capsys, "train", "--algo", "ppo", "--env", ROUTING, "--timesteps", "64",
                     "--set", "env.reward.mode=lagrangian", "--out", str(out), "--quiet")
    one_line_error(rc, err, "--set env.reward.mode", "does not apply to the routing env")
    assert not out.exists()


def test_routing_results_record_only_the_reward_that_applies(capsys, tmp_path: Path) -> None:
    rc, out, _ = run(capsys, "evaluate", "--env", ROUTING, "--policy", "heuristic:kv",
                     "--episodes", "1", "--set", "env.episode_steps=1", "--json", "--quiet")
    assert rc == 0
    assert json.loads(out)["reward_config"] == {"sla_weight": 1.0}
    from agents.leaderboard import routing_leaderboard
    routing_leaderboard(tmp_path, episodes=1, overrides={"env.episode_steps": 1},
                        policies=["heuristic:kv"], quiet=True)
    note = (tmp_path / "leaderboard.md").read_text()
    assert 'reward: {"sla_weight": 1.0}' in note
    for autoscaler_only in ("gpu_weight", "sla_target", "multiplier", "change_penalty"):
        assert autoscaler_only not in note


# -- 2. tune --out over an existing file needs --replace -------------------------------------

TINY = str(REPO / "envs_configs" / "autoscale_tiny.yaml")


def test_tune_out_over_an_existing_file_needs_replace(tmp_path: Path, capsys,
                                                      monkeypatch) -> None:
    import agents.tune as tune_mod
    from agents.heuristics import TUNED_DIR
    fake = tmp_path / "tuned"            # a copy of agents/tuned: the shipped file stays safe
    fake.mkdir()
    shipped = (TUNED_DIR / "load-tuned.yaml").read_text()
    (fake / "load-tuned.yaml").write_text(shipped)
    monkeypatch.setattr(tune_mod, "TUNED_DIR", fake)
    ran = []
    import agents.evaluate as ev
    orig = ev.make_eval_env
    monkeypatch.setattr(ev, "make_eval_env", lambda *a, **k: (ran.append(1), orig(*a, **k))[1])
    argv = ["tune", "--policy", "heuristic:load", "--trials", "1", "--episodes", "1",
            "--config", TINY, "--set", "episode_steps=2", "--quiet", "--seed", "5"]
    for target in (fake / "load-tuned.yaml", tmp_path / "mine.yaml"):
        if not target.exists():
            target.write_text("mine: 1\n")
        before = target.read_text()
        rc, _, err = run(capsys, *argv, "--out", str(target))
        one_line_error(rc, err, "flag '--out'", f"{target} exists", "--replace")
        assert target.read_text() == before and not ran       # refused before the study
    rc, out, _ = run(capsys, *argv, "--out", str(tmp_path / "mine.yaml"), "--replace")
    assert rc == 0 and ran and "wrote" in out
    assert "heuristic:mine" in (tmp_path / "mine.yaml").read_text()
    assert (fake / "load-tuned.yaml").read_text() == shipped


# -- 3. a bad trace line: one line at gym.make / train, no run dir; a failed run says so -----

def _bad_trace_config(tmp_path: Path) -> Path:
    rows = [json.dumps({"timestamp": i * 100, "input_length": 1000, "output_length": 100,
                        "hash_ids": [1, 2]}) for i in range(50)]
    rows[10] = '{"timestamp": 1000, "input_length": "abc", "output_length": 100}'
    (tmp_path / "bad.jsonl").write_text("\n".join(rows) + "\n")
    text = (REPO / "envs_configs" / "autoscale_mooncake.yaml").read_text()
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text.replace("bundled:mooncake_conversation", "bad.jsonl"))
    return cfg


def test_a_bad_trace_line_fails_at_gym_make(tmp_path: Path) -> None:
    cfg = _bad_trace_config(tmp_path)
    with pytest.raises(InputError, match="input_length") as exc:
        gym.make("DynoSim-v0", config=str(cfg))
    assert exc.value.file == str(tmp_path / "bad.jsonl") and exc.value.line == 11


def test_train_on_a_bad_trace_prints_only_the_error_and_leaves_no_run(tmp_path: Path,
                                                                      capsys) -> None:
    cfg = _bad_trace_config(tmp_path)
    out = tmp_path / "runs" / "r"
    rc, _, err = run(capsys, "train", "--algo", "ppo", "--config", str(cfg), "--timesteps",
                     "64", "--out", str(out))
    one_line_error(rc, err, "bad.jsonl:11", "input_length")
    assert not (tmp_path / "runs").exists()


def test_a_run_whose_training_raised_is_marked_failed(tmp_path: Path, monkeypatch) -> None:
    from stable_baselines3 import A2C

    from agents.train import train
    small = {"env.episode_steps": 2}
    done = train("a2c", config=TINY, timesteps=80, out=tmp_path / "ok", overrides=small,
                 quiet=True)
    assert json.loads((done / "run.json").read_text())["status"] == "completed"

    def boom(self, *a, **k):
        raise RuntimeError("simulated failure\nsecond line")
    monkeypatch.setattr(A2C, "learn", boom)
    with pytest.raises(RuntimeError):
        train("a2c", config=TINY, timesteps=80, out=tmp_path / "bad", overrides=small,
              quiet=True)
    rec = json.loads((tmp_path / "bad" / "run.json").read_text())
    assert rec["status"] == "failed" and rec["error"] == "RuntimeError: simulated failure"
    assert not (tmp_path / "bad" / "model.zip").exists()


# -- 4. a model trained on another config: the error names it and --config -------------------

def test_a_model_trained_on_autoscale_disagg_names_its_config(tmp_path: Path, capsys) -> None:
    from agents.train import train
    run_dir = train("a2c", config="autoscale_disagg", timesteps=40, out=tmp_path / "run",
                    overrides={"env.episode_steps": 2}, quiet=True)
    rc, _, err = run(capsys, "evaluate", "--policy", str(run_dir), "--episodes", "1")
    one_line_error(rc, err, "flag '--policy'", "the model observes (35,)",
                   "trained on autoscale_disagg", "--config autoscale_disagg scores it there")
    assert "features only the model has: none" not in err     # the same features: not said
    rc, out, _ = run(capsys, "evaluate", "--policy", str(run_dir), "--episodes", "1",
                     "--config", "autoscale_disagg", "--set", "env.episode_steps=2",
                     "--json", "--quiet")
    assert rc == 0 and json.loads(out)["episodes"] == 1


# -- 6. a --set that breaks the model's interface is named as the cause ----------------------

def test_a_set_that_changes_the_models_action_is_blamed(capsys) -> None:
    rc, _, err = run(capsys, "evaluate", "--policy", "pretrained:autoscaler", "--episodes",
                     "1", "--set", "env.action.type=delta", "--set", "env.episode_steps=2")
    one_line_error(rc, err, "flag '--set env.action.type'", "the model acts in Discrete(8)",
                   "--set env.action.type causes it")
    assert "env.episode_steps" not in err
    rc, _, err = run(capsys, "evaluate", "--policy", "pretrained:autoscaler", "--episodes",
                     "1", "--set", "env.observation.stack=2")
    one_line_error(rc, err, "flag '--set env.observation.stack'", "the model observes",
                   "--set env.observation.stack causes it")


# -- 5. gym.make(planner=...) says it is the run config's section; a bad config type -----------

def test_gym_make_planner_keyword_says_where_the_env_planner_knobs_go() -> None:
    for config in (None, "autoscale_default"):
        with pytest.raises(InputError, match=r"planner keyword is the run config's planner "
                                             r"section.*env\.planner\.KNOB") as exc:
            gym.make("DynoSim-v0", config=config,
                     planner={"load_scaling_down_sensitivity": 20})
        assert exc.value.field == "planner.kind"
        assert len(str(exc.value).splitlines()) == 1
    env = gym.make("DynoSim-v0", **{"env.planner": {"load_scaling_down_sensitivity": 20}})
    assert env.unwrapped.cfg.env.planner == {"load_scaling_down_sensitivity": 20}
    # with its kind, planner= is the run config's section (the heuristics' base)
    env = gym.make("DynoSim-v0", planner={"kind": "load", "load_scaling_down_sensitivity": 20})
    assert env.unwrapped.cfg.sim.planner["load_scaling_down_sensitivity"] == 20


@pytest.mark.parametrize("bad", [42, [1], 2.5])
def test_gym_make_config_of_another_type_names_config(bad) -> None:
    with pytest.raises(InputError, match="expected a YAML path, a bundled config name or a "
                                         "dict") as exc:
        gym.make("DynoSim-v0", config=bad)
    assert exc.value.field == "config"
    with pytest.raises(InputError):
        gym.make(ROUTING, config=bad)


# -- 7. heuristic:static in a leaderboard says the count it holds ----------------------------

def test_leaderboard_labels_heuristic_static_with_its_count(tmp_path: Path) -> None:
    import csv

    from agents.leaderboard import _initial_pool, leaderboard
    leaderboard(tmp_path, config=TINY, episodes=1, policies=["heuristic:static",
                                                             "heuristic:static:2"])
    rows = {r["policy"] for r in csv.DictReader(open(tmp_path / "leaderboard.csv"))}
    from dynosim_gym.config import load_env_config
    n = load_env_config(TINY).sim.cluster.num_workers
    held = f"heuristic:static (holds {n} worker{'s' if n != 1 else ''})"
    assert held in rows and "heuristic:static" not in rows and "heuristic:static:2" in rows
    assert held in (tmp_path / "leaderboard.md").read_text()
    assert _initial_pool({"disagg": {"num_prefill_workers": 1, "num_decode_workers": 2},
                          "cluster": {"num_workers": 4}, "env": {}}) == "1P + 2D"
    assert _initial_pool({"cluster": {"num_workers": 4}, "env": {"initial_workers": 3}}) \
        == "3 workers"


def test_rllib_train_on_a_bad_trace_fails_before_ray_starts(tmp_path: Path, capsys,
                                                           monkeypatch) -> None:
    from dynosim import executors

    def no_ray(*a, **k):
        raise AssertionError("Ray was started before the env's checks")
    monkeypatch.setattr(executors, "connect", no_ray)
    cfg = _bad_trace_config(tmp_path)
    rc, _, err = run(capsys, "train", "--algo", "ppo", "--framework", "rllib", "--config",
                     str(cfg), "--timesteps", "64", "--out", str(tmp_path / "runs" / "r"))
    one_line_error(rc, err, "bad.jsonl:11", "input_length")
    assert not (tmp_path / "runs").exists()

"""Round-7 re-check findings (s7-fixC): each test fails without its fix."""
from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest

import dynosim_gym  # noqa: F401  (registers the env ids)
from sim.errors import InputError

from conftest import one_line_error, run_cli as run

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "envs_configs" / "autoscale_tiny.yaml")


# -- 1. train --algo ppo on autoscale_disagg: the recipe's aggregated-only keys, up front ------

def test_train_ppo_recipe_on_a_disaggregated_config_is_refused_in_one_line(
        capsys, tmp_path: Path) -> None:
    rc, _, err = run(capsys, "train", "--algo", "ppo", "--config", "autoscale_disagg",
                     "--timesteps", "10", "--out", str(tmp_path / "t"), "--quiet")
    one_line_error(rc, err, "ppo.yml", "env_kwargs.action", "bc_warm_start",
                   "--algo ppo_mask")
    # the fix its old error suggested (delta, no window) still meets the warm start
    rc, _, err = run(capsys, "train", "--algo", "ppo", "--config", "autoscale_disagg",
                     "--timesteps", "10", "--out", str(tmp_path / "t2"), "--quiet",
                     "--set", "env.action.type=delta",
                     "--set", "env.action.scale_down_window_s=0")
    one_line_error(rc, err, "ppo.yml", "bc_warm_start", "--algo ppo_mask")
    assert not (tmp_path / "t2" / "model.zip").exists()


# -- 2. heuristics and oracles are not scored under a residual action -------------------------

def test_evaluate_refuses_a_heuristic_under_a_residual_action(capsys, tmp_path: Path) -> None:
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:load", "--config", TINY,
                     "--episodes", "1", "--set", "env.action.type=residual")
    one_line_error(rc, err, "--set env.action.type", "heuristic:load",
                   "default action")
    rc, _, err = run(capsys, "evaluate", "--policy", "oracle:static", "--config", TINY,
                     "--episodes", "1", "--set", "env.action.type=residual", "--quiet")
    one_line_error(rc, err, "--set env.action.type", "oracle:static")
    cfg = tmp_path / "res.yaml"          # set in the config: its line is named
    text = Path(TINY).read_text().replace("env:\n", "env:\n  action: {type: residual}\n", 1)
    cfg.write_text(text)
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:static:2", "--config",
                     str(cfg), "--episodes", "1")
    one_line_error(rc, err, f"{cfg}:", "field 'env.action.type'")


def test_the_bc_teacher_still_plans_counts_on_a_residual_env(tmp_path: Path,
                                                             monkeypatch) -> None:
    """agents/router_train.py: a residual learner's teacher plans on a target env of its
    own (offsets other than the default included, which a target action refuses)."""
    import agents.oracle as oracle
    from agents.router_train import teacher_samples
    monkeypatch.setenv("DYNOSIM_CACHE", str(tmp_path / "cache"))
    seen = []

    def plan(env, opts, seed, lo, hi, t, seg, iv, steps):
        seen.append(env.unwrapped.cfg.env.action.type)
        return {"targets": [2] * steps}
    monkeypatch.setattr(oracle, "greedy_schedule", plan)
    env = gym.make("DynoSim-v0", config=TINY, **{"env.action.type": "residual",
                                                 "env.action.residual_offsets": [-1, 3]})
    obs, act, lengths = teacher_samples(env, "oracle:schedule-greedy", [7])
    assert seen == ["target"]
    assert lengths == [6] and len(act) == 6
    assert all(0 <= a < env.action_space.n for a in act)
    _, act, _ = teacher_samples(env, "heuristic:load", [7])     # a heuristic teacher too
    assert len(act) == 6


# -- 3. no "--env X ... anyway" hint where X's env refuses the config's scenarios -------------

def test_no_env_hint_when_the_other_env_cannot_take_the_config(capsys) -> None:
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:kv", "--config",
                     "autoscale_default", "--episodes", "1")
    one_line_error(rc, err, "give a DynoSimRouting-v0 config")
    assert "--env DynoSimRouting-v0" not in err, err
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:load", "--config",
                     "routing_default", "--episodes", "1")
    one_line_error(rc, err, "--env DynoSim-v0 to score it on this one anyway")


# -- 4. keys with no effect where they are given: one-line errors ------------------------------

def test_residual_offsets_without_a_residual_action_are_refused(capsys) -> None:
    with pytest.raises(InputError, match="env.action.residual_offsets.*no effect"):
        gym.make("DynoSim-v0", config=TINY,
                 action={"type": "target", "residual_offsets": [-1, 1]})
    rc, _, err = run(capsys, "evaluate", "--policy", "heuristic:static:2", "--config", TINY,
                     "--episodes", "1", "--set", "env.action.residual_offsets=[0,1]")
    one_line_error(rc, err, "env.action.residual_offsets", "no effect")
    # a resolved config (a run record's) carries the default offsets under any type
    env = gym.make("DynoSim-v0", config=TINY, **{"env.action.type": "target"})
    again = gym.make("DynoSim-v0", config=env.unwrapped.cfg.to_dict())
    assert again.unwrapped.cfg.env.action.type == "target"


def test_observation_features_on_the_routing_env_are_refused(capsys) -> None:
    with pytest.raises(InputError, match="env.observation.features.*no effect"):
        gym.make("DynoSimRouting-v0", observation={"features": ["running_batches"]})
    rc, _, err = run(capsys, "evaluate", "--env", "DynoSimRouting-v0", "--policy",
                     "heuristic:kv", "--episodes", "1",
                     "--set", "env.observation.features=[running_batches]")
    one_line_error(rc, err, "env.observation.features", "DynoSimRouting-v0")


# -- 5. evaluate's text line counts the requests in flight at the cut-off ----------------------

def test_evaluate_line_says_how_many_requests_were_in_flight(capsys) -> None:
    argv = ("evaluate", "--policy", "heuristic:static:1", "--config", TINY, "--episodes", "1",
            "--set", "env.rate_max_rps=6", "--set", "env.rate_min_rps=6")
    rc, out, _ = run(capsys, *argv, "--json")
    assert rc == 0
    n = json.loads(out)["requests_in_flight"]
    assert n > 0                         # else the line has nothing to say
    rc, out, _ = run(capsys, *argv)
    assert rc == 0
    assert f"({n:,} in flight at the cut-off, not scored)" in out, out


# -- 6. the leaderboard's config error is its only stderr line ---------------------------------

def test_leaderboard_config_error_comes_before_any_progress_line(capsys,
                                                                 tmp_path: Path) -> None:
    rc, _, err = run(capsys, "evaluate", "--leaderboard", str(tmp_path / "lb"), "--env",
                     "DynoSimRouting-v0", "--config", "autoscale_disagg", "--episodes", "1")
    one_line_error(rc, err, "disagg")
    assert "leaderboard:" not in err, err


# -- 13b. the leaderboard's front plot: labels clear of the frame, legend of what is drawn -----

def test_front_plot_labels_clear_the_frame_and_legend_lists_only_drawn_kinds(
        monkeypatch, tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    from agents.evaluate import Evaluation
    from agents.leaderboard import plot_front
    figs: list[Figure] = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **kw: (figs.append(self),
                                                                    real(self, *a, **kw)))
    # the re-check's case: heuristics only, heuristic:load the right-most point
    pts = {"heuristic:load": (2.781, 0.399), "heuristic:throughput": (2.0, 0.30),
           "heuristic:static": (1.33, 0.317), "heuristic:kv_load_long_name": (1.5, 0.10)}
    results = [Evaluation.from_record(
        dict(policy=p, episodes=1, mean_reward=0.0, std_reward=0.0, sla_attainment=s,
             gpu_hours=g, ttft_p90_ms=1.0, itl_p90_ms=1.0, requests_decided=1))
        for p, (g, s) in pts.items()]
    plot_front(results, tmp_path / "front.png", Path("runs"))
    ax = figs[-1].axes[0]
    figs[-1].canvas.draw()
    frame = ax.get_window_extent()
    labels = [t for t in ax.texts if t.get_text() in pts]
    assert len(labels) == len(pts)
    for t in labels:
        box = t.get_window_extent()
        assert frame.x0 + 2 <= box.x0 and box.x1 <= frame.x1 - 2, t.get_text()
        assert frame.y0 + 2 <= box.y0 and box.y1 <= frame.y1 - 2, t.get_text()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "heuristic planner"
    assert not any("trained" in x for x in legend), legend


def test_routing_evaluate_line_says_how_many_requests_were_in_flight(capsys) -> None:
    argv = ("evaluate", "--env", "DynoSimRouting-v0", "--policy", "heuristic:kv",
            "--episodes", "1", "--set", "episode_steps=4")
    rc, out, _ = run(capsys, *argv, "--json")
    assert rc == 0
    n = json.loads(out)["requests_in_flight"]
    assert n > 0
    rc, out, _ = run(capsys, *argv)
    assert rc == 0
    assert f"(1 episode; {n:,} in flight at the cut-off, not scored)" in out, out

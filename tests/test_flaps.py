"""Flaps (issue 11, "no flapping"): a reversal issued less than ``FLAP_WINDOW_S`` = 300 s
(Kubernetes HPA's default scale-down stabilization window) after the previous, opposite,
scaling event. Counted in the env's episode totals, reported by ``dynosim evaluate`` and the
leaderboard. Runs on ``autoscale_tiny`` (10 s steps, 1 initial worker, 4-worker budget)."""
from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dynosim_gym  # noqa: F401  (registers the ids)
from dynosim.cli import main
from dynosim_gym.autoscaling_env import FLAP_WINDOW_S, DynoSimEnv

TINY = "autoscale_tiny"
STEP_S = 10.0


def _run_targets(targets: dict[int, int], steps: int, initial: int = 1) -> dict:
    """Hold the provisioned count except at the given steps (step -> target count)."""
    env = gym.make("DynoSim-v0", config=TINY, episode_steps=steps, initial_workers=initial)
    env.reset(seed=0)
    u = env.unwrapped
    info = {}
    for k in range(steps):
        a = u.target_action(targets[k]) if k in targets else u.hold_action()
        *_, info = env.step(a)
    env.close()
    return info["episode_summary"]


@pytest.mark.parametrize("targets, initial, reversals, flap_steps", [
    ({0: 2, 10: 1}, 1, 1, [10]),           # up at 0 s, down at 100 s: a flap
    ({0: 1, 40: 2}, 2, 1, []),             # down at 0 s, up at 400 s: a reversal, no flap
    ({0: 2, 30: 1}, 1, 1, []),             # exactly 300 s later: not "less than" W
    ({0: 2, 29: 1}, 1, 1, [29]),           # 290 s: a flap
    ({0: 2, 20: 3, 25: 2, 35: 3}, 1, 2, [25, 35]),   # measured from the previous move
    ({0: 2, 5: 3, 10: 4}, 1, 0, []),       # same direction: no reversal, no flap
])
def test_flaps_on_hand_made_scaling_events(targets, initial, reversals, flap_steps) -> None:
    assert FLAP_WINDOW_S == 300.0
    s = _run_targets(targets, steps=45, initial=initial)
    assert s["scaling_events"] == len(targets)
    assert s["reversals"] == reversals
    assert s["flaps"] == len(flap_steps) and s["flap_steps"] == flap_steps


def _flaps_from_counts(counts: list[int]) -> tuple[int, int, int]:
    """Scaling events, reversals and flaps recomputed from the provisioned count after each
    step (``counts[0]`` = at reset): an independent statement of the definitions."""
    events = [(k * STEP_S, int(np.sign(b - a)))
              for k, (a, b) in enumerate(zip(counts, counts[1:])) if b != a]
    rev = flaps = 0
    for (t0, d0), (t1, d1) in zip(events, events[1:]):
        if d1 == -d0:
            rev += 1
            flaps += t1 - t0 < FLAP_WINDOW_S
    return len(events), rev, flaps


@settings(max_examples=15, deadline=None)
@given(actions=st.lists(st.integers(0, 4), min_size=1, max_size=60))
def test_flaps_le_reversals_le_scaling_events(actions) -> None:
    env = gym.make("DynoSim-v0", config=TINY, episode_steps=len(actions))
    _, info = env.reset(seed=0)
    counts = [info["active_workers"] + info["starting_workers"]]
    for a in actions:
        *_, info = env.step(a)
        counts.append(info["active_workers"] + info["starting_workers"])
    env.close()
    s = info["episode_summary"]
    assert s["flaps"] <= s["reversals"] <= s["scaling_events"]
    assert (s["scaling_events"], s["reversals"], s["flaps"]) == _flaps_from_counts(counts)
    assert len(s["flap_steps"]) == s["flaps"]


def test_env_docstring_documents_flaps() -> None:
    doc = DynoSimEnv.__doc__
    assert '``flaps``' in doc and "FLAP_WINDOW_S" in doc and "stabilizationWindowSeconds" in doc


def test_evaluate_reports_flaps_in_json_and_text(capsys) -> None:
    argv = ["evaluate", "--policy", "heuristic:load", "--config", TINY, "--episodes", "1",
            "--set", "env.episode_steps=40"]
    assert main([*argv, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert {"flaps", "flaps_per_hour", "reversals_per_hour"} <= set(res)
    ep = res["per_episode"][0]
    assert res["flaps"] == ep["flaps"] and len(ep["flap_steps"]) == ep["flaps"]
    assert res["flaps_per_hour"] == pytest.approx(res["flaps"] / res["simulated_hours"])
    assert main(argv) == 0
    assert f"{res['flaps_per_hour']:.1f} flaps/h" in capsys.readouterr().out


def test_leaderboard_table_has_a_flaps_column() -> None:
    from agents.leaderboard import _markdown
    row = {"policy": "p", "mean_reward": 0.0, "sla_attainment": 0.9, "sla_attainment_std": 0.0,
           "gpu_hours_per_episode": 1.0, "gpu_hours_std": 0.0, "p90_ttft_ms": 1.0,
           "p90_itl_ms": 1.0, "scaling_events": 3, "reversals_per_hour": 2.0,
           "flaps_per_hour": 1.5, "sla_attainment_vs_ref": 1.0,
           "gpu_hours_per_episode_vs_ref": 1.0}
    head, sep, line = _markdown([row], "p", 1, 0, {}).splitlines()[:3]
    cols = [c.strip() for c in head.strip("|").split("|")]
    vals = [c.strip() for c in line.strip("|").split("|")]
    assert len(cols) == len(vals) == sep.count("|") - 1
    assert vals[cols.index("flaps / h")] == "1.5"

"""``scale_down_cooldown_seconds`` (ours; default 0 = Dynamo) acts in the env's heuristics
too: the advisors record the scale-up they advise, so a scale-down within the cooldown of it
is held, as when the planner scales the simulation itself (tests/test_planner.py). It used
to do nothing there: the advisors recorded the target without the scale-up time."""
from __future__ import annotations

import gymnasium as gym
import pytest

import dynosim_gym  # noqa: F401  (registers the ids)


def _provisioned(cooldown_s: float, seed: int, target: str, config: str) -> list[tuple]:
    """(time s, provisioned workers) after every step of a training episode under
    ``heuristic:load`` with ``optimization_target`` ``target``."""
    env = gym.make("DynoSim-v0", config=config)
    u = env.unwrapped
    env.reset(seed=seed, options={"split": "train"})
    knobs = {"optimization_target": target}
    if cooldown_s:
        knobs["scale_down_cooldown_seconds"] = cooldown_s
    out, done = [], False
    while not done:
        _, _, term, trunc, _ = env.step(u.planner_action("load", knobs))
        done = term or trunc
        out.append((u.sim.now / 1000.0, sum(u.sim.counts()[:2])))
    env.close()
    return out


def _downs_within(prov: list[tuple], window_s: float) -> list[float]:
    """Times of scale-downs less than ``window_s`` after a scale-up."""
    moves = [(t, n - n0) for (t, n), (_, n0) in zip(prov[1:], prov)]
    ups = [t for t, d in moves if d > 0]
    return [t for t, d in moves if d < 0 and any(0 <= t - u < window_s for u in ups)]


@pytest.mark.parametrize("seed, target", [(1, "sla"), (1, "throughput")])
def test_the_cooldown_holds_scale_downs_after_an_advised_scale_up(seed: int,
                                                                  target: str) -> None:
    without = _provisioned(0.0, seed, target, "autoscale_default")
    assert _downs_within(without, 300.0), "vacuous: no scale-down follows a scale-up"
    with_cd = _provisioned(300.0, seed, target, "autoscale_default")
    assert not _downs_within(with_cd, 300.0)
    assert with_cd != without


def test_the_disaggregated_advisors_record_a_scale_up_of_either_pool() -> None:
    from dynosim_gym.autoscaling_env import DisaggLoadAdvisor
    env = gym.make("DynoSim-v0", config="autoscale_disagg")
    env.reset(seed=0, options={"split": "train"})
    sim = env.unwrapped.sim
    adv = DisaggLoadAdvisor.__new__(DisaggLoadAdvisor)
    adv.last_scale_up_s = -1.0
    cur = {p: sum(sim.counts(p)[:2]) for p in ("prefill", "decode")}
    adv._apply(sim, dict(cur), "hold")
    assert adv.last_scale_up_s == -1.0 and adv.advice == cur
    adv._apply(sim, {**cur, "decode": cur["decode"] + 1}, "up")
    assert adv.last_scale_up_s == sim.now / 1000.0
    env.close()

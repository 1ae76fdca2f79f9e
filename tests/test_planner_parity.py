"""Planner parity with Dynamo 1.6.1's planner-in-the-loop replay (issue 11, "Planner parity").

Both simulators replay the same generated trace with the same engine and planner JSON
(bench/planner_parity.py has the setup); the provisioned-worker trajectory (active +
starting over time) must be within 10% of Dynamo's (int |ours - Dynamo| dt / int Dynamo dt)
and the GPU-hours within 10%. CI runs two traces (a flash crowd and constant load with a
30 s start-up); the other six of the bench are marked ``expensive``. Skips without the peer
(``PEER_VENV`` / ``DYNOSIM_PEER_VENV`` pointing at a venv with ai-dynamo 1.6.1 and the
planner's dependencies).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("planner_parity", REPO / "bench" / "planner_parity.py")
pp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pp)

needs_peer = pytest.mark.skipif(not pp.peer_available(),
                                reason="Dynamo's replay with planner deps not installed")

TRACES = [pytest.param(n, marks=() if n in pp.QUICK else pytest.mark.expensive)
          for n in pp.TRACES]


@pytest.mark.peer
@needs_peer
@pytest.mark.parametrize("name", TRACES)
def test_worker_trajectory_and_gpu_hours_within_10pct(name, tmp_path):
    r = pp.compare(name, tmp_path)
    assert r["traj_err"] <= pp.TARGET, (r["traj_dyn"], r["traj_ours"])
    assert r["gpu_h_err"] <= pp.TARGET, (r["gpu_h_dyn"], r["gpu_h_ours"])
    # and the run scaled at all (a flat trajectory would match trivially)
    assert r["peak_dyn"] > 1 and r["events_dyn"] >= 2


def test_trajectory_error_by_hand():
    ref = [(0.0, 1), (10.0, 3), (20.0, 1)]
    ours = [(0.0, 1), (15.0, 3), (20.0, 1)]
    # |diff| = 2 workers for 5 s; int ref = 10 + 30 + 10 = 50 worker-s over [0, 30]
    assert pp.trajectory_error(ours, ref, 30.0) == pytest.approx(10 / 50)
    assert pp.trajectory_error(ref, ref, 30.0) == 0.0


@pytest.mark.peer
@needs_peer
@pytest.mark.parametrize("target", [
    {"optimization_target": "latency"},
    pytest.param({"optimization_target": "load", "decode_scale_up_kv_rate": 70,
                  "decode_scale_down_kv_rate": 20}, marks=pytest.mark.expensive),
])
def test_other_static_targets_match(target, tmp_path):
    """Dynamo's other static targets (latency: up above 40% KV, down below 10%; load: the
    user's rates), same traces and metric."""
    r = pp.compare("flash_lo", tmp_path, {**pp.PLANNER_JSON, **target})
    assert r["traj_err"] <= pp.TARGET, (r["traj_dyn"], r["traj_ours"])
    assert r["gpu_h_err"] <= pp.TARGET
    assert r["events_dyn"] >= 2


# -- disaggregated pools (issue 15 item 4) --------------------------------------------------

#: every trace, the four where the decode pool runs over its KV (p90 TTFT tens of seconds)
#: included: they were strict xfails until decode workers cached the prompt blocks they
#: receive and charged no prefill time, as Dynamo's do (bench/results/planner_parity_disagg.md)
DISAGG_TRACES = [pytest.param(n, marks=() if n in pp.DISAGG_QUICK else (pytest.mark.expensive,))
                 for n in pp.TRACES]


@pytest.mark.peer
@needs_peer
@pytest.mark.parametrize("name", DISAGG_TRACES)
def test_disagg_pool_trajectories_and_gpu_hours_within_10pct(name, tmp_path):
    """Dynamo's disagg planner (load target, bench/planner_parity.py DISAGG_JSON) on 1 + 1
    workers: each pool's provisioned trajectory and the GPU-hours within 10% of Dynamo's
    replay; both pools scaled."""
    r = pp.compare_disagg(name, tmp_path)
    for pool in ("prefill", "decode"):
        assert r[f"{pool}_err"] <= pp.TARGET, (pool, r[f"{pool}_traj"])
    assert r["gpu_h_err"] <= pp.TARGET, (r["gpu_h_dyn"], r["gpu_h_ours"])
    assert r["prefill_peak"][0] > 1 and r["decode_peak"][0] > 1

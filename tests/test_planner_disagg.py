"""Dynamo's planner on disaggregated pools (issue 15 item 4): the budget for both pools,
the per-pool rules, the simulator's per-pool scaling, and (peer-marked) the budget helpers
against Dynamo 1.6.1's own ``core/budget.py`` over a grid.

Trajectory parity with Dynamo's disagg planner replay is in ``tests/test_planner_parity.py``.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import ListWorkload, req
from sim.config import build_planner, parse_config
from sim.disagg import DisaggConfig
from sim.engine import EngineConfig
from sim.errors import InputError
from sim.metrics import STATUS_COMPLETED
from sim.planner import (DisaggLoadPlanner, DisaggThroughputPlanner, PlannerConfig,
                         budget_clamp_pair, budget_fit_pair, budget_guard_pair, easy_rule)
from sim.simulator import ClusterConfig, Simulation
from sim.timing import PolynomialTiming
from sim.workloads.synthetic import fixed, nhpp, ramp, synthetic


def _sim(wl, *, n_p=1, n_d=1, blocks_d=512, max_model_len=None, startup_s=2.0, gp=1, gd=1,
         check=False):
    d = DisaggConfig(num_prefill_workers=n_p, num_decode_workers=n_d,
                     prefill_engine=EngineConfig(block_size=64, max_model_len=max_model_len,
                                                 max_num_batched_tokens=2048),
                     decode_engine=EngineConfig(block_size=64, num_gpu_blocks=blocks_d),
                     kv_transfer_bandwidth=64.0, kv_bytes_per_token=262_144,
                     prefill_gpus_per_worker=gp, decode_gpus_per_worker=gd)
    return Simulation(wl, engine=EngineConfig(block_size=64), timing=PolynomialTiming(),
                      cluster=ClusterConfig(1, 1, startup_s), disagg=d, seed=1,
                      check_invariants=check)


def _ramp(r0, r1, dur, seed=1):
    return synthetic(np.random.default_rng(seed), arrival=nhpp(ramp(r0, r1, dur)),
                     isl=fixed(3000), osl=fixed(200), duration_s=dur)


def _cfg(**kw) -> PlannerConfig:
    return PlannerConfig(**{"mode": "disagg", "load_adjustment_interval_seconds": 5.0, **kw})


# -- the GPU budget for both pools -------------------------------------------------------------

def test_budget_by_hand():
    # inside the band: the proposal as is
    assert budget_guard_pair(2, 2, 3, 2, 2, 2, -1, 16, 1, 1) == (3, 2, None)
    # at the ceiling, both up: hold; an opposing rebalance passes
    assert budget_guard_pair(4, 4, 5, 4, 2, 2, -1, 16, 1, 1) == (4, 4, "gpu_budget_guard_hold")
    assert budget_guard_pair(4, 4, 5, 3, 2, 2, -1, 16, 1, 1) == (5, 3, None)
    # above the ceiling: reconciled proportionally (prefill first, decode the rest)
    assert budget_guard_pair(6, 6, 6, 6, 2, 2, -1, 16, 1, 1) == (4, 4, "gpu_budget_reconcile")
    # at the floor, down only: hold
    assert budget_guard_pair(2, 2, 1, 2, 1, 1, 4, 16, 1, 1) == (2, 2, "gpu_budget_guard_hold")
    # a proposal over the ceiling that would need a donor: clamped in its direction or held
    assert budget_clamp_pair(6, 6, 2, 2, -1, 16, 1, 1) == (4, 4)
    assert budget_fit_pair(4, 3, 6, 3, 2, 2, -1, 16, 1, 1) == (5, 3)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), st.integers(1, 9), st.integers(1, 9),
       st.sampled_from([1, 2, 4]), st.sampled_from([1, 2, 4]), st.integers(-1, 12),
       st.integers(4, 24))
@example(1, 3, 3, 2, 2, 1, 0, 7)     # in band: one leg of the clamped rebalance stays (Dynamo too)
def test_budget_never_reverses_and_stays_in_band(cp, cd, pp, pd, gp, gd, lo, hi):
    if 0 <= hi < gp + gd or (lo >= 0 and lo > hi):
        return
    p, d, why = budget_guard_pair(cp, cd, pp, pd, gp, gd, lo, hi, 1, 1)
    assert p >= 1 and d >= 1
    if why == "gpu_budget_reconcile":
        assert p * gp + d * gd <= hi
        return
    # never a move against the proposal, never beyond it
    assert min(cp, pp) <= p <= max(cp, pp) and min(cd, pd) <= d <= max(cd, pd)
    # in the band (or held where it was)
    assert p * gp + d * gd <= hi or (p, d) == (cp, cd)
    # at the ceiling (or the floor) an opposing rebalance moves both legs or holds; in the
    # band a clamped rebalance may keep one leg, as Dynamo's does: (1, 3) -> proposal (3, 2)
    # at 2 + 1 GPUs per worker, 7 at most, gives (2, 3) there too
    cur = cp * gp + cd * gd
    if (pp - cp) * (pd - cd) < 0 and (p, d) != (cp, cd) and (cur >= hi or cur <= lo):
        assert p != cp and d != cd or (p, d) == (pp, pd)


def test_easy_rule():
    assert easy_rule([1.2, 0.1], 2, 1.0, 0.6, False, False, 1) == (3, "scale_up")
    assert easy_rule([1.0, 0.1], 2, 1.0, 0.6, False, False, 1) == (None, "no_change")
    assert easy_rule([1.0, 0.1], 2, 1.0, 0.6, True, False, 1) == (3, "scale_up")
    assert easy_rule([0.3, 0.1], 2, 1.0, 0.6, False, False, 1) == (1, "scale_down")
    # consolidation guard: 0.55 x 2 / 1 >= 1.0 keeps both
    assert easy_rule([0.55, 0.1], 2, 1.0, 0.6, False, False, 1) == (2, "consolidation guard")
    assert easy_rule([0.0], 1, 1.0, 0.6, False, False, 1) == (None, "no_change")


# -- the planner in the loop ------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{}, {"optimization_target": "load",
                                     "decode_scale_up_kv_rate": 50,
                                     "decode_scale_down_kv_rate": 20}])
def test_decode_scales_on_kv_and_prefill_holds_without_thresholds(kw):
    """The decode pool grows on its KV utilisation; the prefill pool has no context length
    (Dynamo's mocker default; target ``load``: no queue thresholds) so it holds
    (``insufficient_data``)."""
    sim = _sim(_ramp(1, 12, 240), blocks_d=256)
    pl = DisaggLoadPlanner(_cfg(**kw)).attach(sim)
    sim.run()
    peak = {p: max(a + s for _, a, s, _d in rec) for p, rec in sim.pool_replicas.items()}
    assert peak["prefill"] == 1 and peak["decode"] > 1
    assert all(t.get("reason_prefill") in (None, "insufficient_data") for t in pl.ticks)
    assert any(t.get("reason_decode") == "scale_up" for t in pl.ticks)


def test_prefill_scales_on_its_queue_with_a_context_length():
    sim = _sim(_ramp(1, 12, 240), max_model_len=8192, blocks_d=16384)
    pl = DisaggLoadPlanner(_cfg()).attach(sim)
    res = sim.run()
    assert max(a + s for _, a, s, _d in sim.pool_replicas["prefill"]) > 1
    assert any(t.get("reason_prefill") == "scale_up" for t in pl.ticks)
    rep = pl.report(res)
    assert set(rep["pools"]) == {"prefill", "decode"}
    assert all(e[3].split()[0] in ("prefill", "decode") for e in rep["events"])


@pytest.mark.parametrize("planner", [DisaggLoadPlanner, DisaggThroughputPlanner])
def test_pools_stay_in_the_budget_and_every_request_ends(planner):
    sim = _sim(_ramp(1, 14, 200), max_model_len=8192, gp=2, gd=1, check=True)
    cfg = _cfg(max_gpu_budget=9, throughput_adjustment_interval_seconds=10.0)
    pl = planner(cfg).attach(sim)
    res = sim.run()
    rec = {p: dict((t, a + s) for t, a, s, _d in r) for p, r in sim.pool_replicas.items()}
    times = sorted(set(rec["prefill"]) | set(rec["decode"]))
    cur = {"prefill": 1, "decode": 1}
    for t in times:
        for p in cur:
            cur[p] = rec[p].get(t, cur[p])
        assert 2 * cur["prefill"] + cur["decode"] <= 9
    assert len(pl.events) >= 2
    c = res.metrics.columns()
    assert (c["status"] == STATUS_COMPLETED).all()
    assert len(c["status"]) == sim.num_arrived
    # GPU-hours count each role's GPUs
    t = res.summary["totals"]
    assert t["gpu_hours"] == pytest.approx((2 * t["prefill_worker_seconds"]
                                            + t["decode_worker_seconds"]) / 3600)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.floats(0, 3000), st.sampled_from(["prefill", "decode"]),
                          st.integers(-2, 2)), max_size=8),
       st.integers(1, 30), st.floats(0.0, 500.0))
def test_scaling_either_pool_loses_no_request(moves, n, startup_ms):
    """Workers added and drained in either pool at any time (mid-handoff included): every
    request completes once, and each draining worker leaves only when idle with no KV held
    or reserved."""
    reqs = [req(i, 100.0 * i, 1500, 20) for i in range(n)]
    sim = _sim(ListWorkload(reqs), startup_s=startup_ms / 1000.0, check=True)
    for t, pool, k in sorted(moves):
        def act(s, pool=pool, k=k):
            if k > 0:
                s.add_workers(k, pool)
            elif k < 0:
                s.remove_workers(-k, pool)
        sim.call_at(t, act)
    res = sim.run()
    c = res.metrics.columns()
    assert sorted(c["request_index"].tolist()) == list(range(n))
    assert (c["status"] == STATUS_COMPLETED).all()
    for w in res.workers:
        assert w.engine.kv.num_active == 0 and not w.kv_waits and not w.pending
        if w.state == "removed" and w.ready_ms is not None:
            assert w.removed_ms >= w.ready_ms


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(InputError) as e:
        PlannerConfig(mode="disagg", optimization_target="sla")
    assert e.value.field == "optimization_target"
    sim = _sim(_ramp(1, 2, 10))
    with pytest.raises(InputError) as e:
        DisaggLoadPlanner(PlannerConfig()).attach(sim)            # mode agg
    assert e.value.field == "mode"
    with pytest.raises(InputError) as e:
        DisaggLoadPlanner(_cfg(max_gpu_budget=1)).attach(_sim(_ramp(1, 2, 10)))
    assert e.value.field == "max_gpu_budget"
    with pytest.raises(InputError) as e:
        DisaggLoadPlanner(_cfg(decode_engine_num_gpu=2)).attach(_sim(_ramp(1, 2, 10)))
    assert e.value.field == "decode_engine_num_gpu"


def test_run_config_builds_the_disagg_planner(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"timestamp": 10 * i, "input_length": 600,
                                         "output_length": 5, "hash_ids": [i]}) + "\n"
                             for i in range(5)))
    base = {"workload": {"kind": "mooncake", "path": str(trace)},
            "disagg": {"num_prefill_workers": 1, "num_decode_workers": 1}}
    cfg = parse_config({**base, "planner": {"kind": "load"}})
    assert isinstance(build_planner(cfg), DisaggLoadPlanner)
    assert isinstance(build_planner(parse_config({**base, "planner": {"kind": "throughput"}})),
                      DisaggThroughputPlanner)
    with pytest.raises(InputError) as e:
        parse_config({**base, "planner": {"kind": "load", "mode": "agg"}})
    assert e.value.field == "planner.mode"


# -- the budget helpers against Dynamo's own (peer) ---------------------------------------------

_GRID = [(cp, cd, pp, pd, gp, gd, lo, hi)
         for cp in (1, 3, 5) for cd in (1, 2, 6) for pp in (1, 2, 4, 7) for pd in (1, 3, 6)
         for gp, gd in ((1, 1), (2, 1), (1, 4)) for lo, hi in ((-1, 8), (4, 12), (-1, 16))] + \
    [(1, 3, 3, 2, 2, 1, 0, 7)]   # the in-band rebalance that keeps one leg (Hypothesis found it)


@pytest.mark.peer
def test_budget_helpers_equal_dynamos_on_a_grid(peer_python):
    shared = os.environ.get("DYNOSIM_SHARED", str(Path(__file__).resolve().parents[2] /
                                                  "shared"))
    code = ("import json, sys\n"
            f"sys.path.insert(0, {str(Path(shared) / 'peer')!r})\n"
            "from dynosim_peer import install_aisimulate_stubs\n"
            "install_aisimulate_stubs()\n"     # the planner package imports AISimulate
            "from dynamo.planner.core.budget import guard_disagg_scaling_budget as g\n"
            "from dynamo.planner.core.budget import fit_directional_budget_pair as f\n"
            "grid = json.load(sys.stdin)\n"
            "print(json.dumps([[list(g(*x, 1, 1)), list(f(*x, 1, 1))] for x in grid]))\n")
    out = subprocess.run([str(peer_python), "-c", code], input=json.dumps(_GRID),
                         capture_output=True, text=True, check=True).stdout
    theirs = json.loads(out)
    for x, (g, f) in zip(_GRID, theirs):
        assert list(budget_guard_pair(*x, 1, 1)) == g, x
        assert list(budget_fit_pair(*x, 1, 1)) == f, x


def test_cli_runs_the_disagg_planner(tmp_path, capsys):
    from dynosim.cli import main
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"timestamp": 50 * i, "input_length": 1000,
                                         "output_length": 200, "hash_ids": [2 * i, 2 * i + 1]})
                             + "\n" for i in range(400)))
    rc = main(["simulate", "--trace", str(trace), "--num-prefill-workers", "1",
               "--num-decode-workers", "1", "--block-size", "64", "--planner", "load",
               "--planner-config-json", json.dumps({
                   "optimization_target": "load", "decode_scale_up_kv_rate": 1,
                   "decode_scale_down_kv_rate": 0.5, "load_adjustment_interval_seconds": 2}),
               "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    rep = json.loads(out)["planner"]
    assert rep["config"]["mode"] == "disagg"
    assert rep["pools"]["decode"]["max_replicas"] > 1
    assert rep["pools"]["prefill"]["max_replicas"] == 1       # no prefill thresholds: holds

"""Data-parallel ranks (``--dp-size``, issue 15 item 3; Dynamo semantics §2.3).

Each rank of a worker is its own scheduler with its own KV pool; round robin turns over the
workers and, within a worker, over its ranks; the ranks of a worker run attention-DP passes
behind one barrier (they start together and their tokens are stamped at the latest rank's
end); GPU-hours count ranks x TP. Parity with Dynamo is in tests/test_dp_parity.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ListWorkload, req
from dynosim.cli import main
from sim.engine import EngineConfig
from sim.metrics import STATUS_COMPLETED, STATUS_IN_FLIGHT
from sim.simulator import ClusterConfig, Simulation
from sim.timing import FixedTiming, PolynomialTiming
from test_invariants import workloads

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_dp(reqs, *, workers: int, dp: int, router: str = "round_robin", nb: int = 2000,
           bs: int = 16, timing=None, cut_ms: float | None = None, seed: int = 0,
           gpus: int = 1):
    sim = Simulation(ListWorkload(reqs), engine=EngineConfig(block_size=bs, num_gpu_blocks=nb),
                     timing=timing or PolynomialTiming(),
                     cluster=ClusterConfig(num_workers=workers, dp_size=dp, gpus_per_worker=gpus),
                     router=router, seed=seed, max_sim_time_ms=cut_ms, check_invariants=True)
    return sim.run()


def dynamo_rr_schedulers(n: int, workers: int, dp: int) -> list[int]:
    """Scheduler ids Dynamo 1.6.1's aggregated round robin hands out (fixed pool): workers
    in turn, each worker's own rank cursor in turn."""
    out, cursor = [], [0] * workers
    for i in range(n):
        w = i % workers
        out.append(w * dp + cursor[w])
        cursor[w] = (cursor[w] + 1) % dp
    return out


@SETTINGS
@given(workloads(), st.integers(1, 3), st.integers(1, 3),
       st.sampled_from(["round_robin", "kv", "random", "least_loaded"]),
       st.sampled_from([None, 300.0, 2500.0]))
def test_no_request_lost_and_rank_pools_drain(wl, workers, dp, router, cut) -> None:
    reqs, _ = wl
    res = run_dp(reqs, workers=workers, dp=dp, router=router, cut_ms=cut,
                 timing=FixedTiming(10.0, 5.0) if dp == 2 else PolynomialTiming())
    c = res.metrics.columns()
    t = res.summary["totals"]
    idx = sorted(c["request_index"].tolist())
    assert len(idx) == t["num_requests"] and len(set(idx)) == len(idx)
    assert t["completed_requests"] + t["rejected_requests"] + t["in_flight_requests"] == \
        t["num_requests"]
    assert t["num_requests"] + t["not_arrived_requests"] == len(reqs)
    if cut is None:
        assert idx == list(range(len(reqs))) and t["in_flight_requests"] == 0
    done = c["status"] == STATUS_COMPLETED
    assert ((c["worker"][done] >= 0) & (c["worker"][done] < workers * dp)).all()
    assert len(res.workers) == workers * dp
    for w in res.workers:
        assert w.dp_rank == w.engine.id % dp
        if cut is None:
            w.engine.kv.check()
            assert w.engine.kv.num_active == 0 and not w.engine.busy
    if router == "round_robin":
        order = sorted(range(len(reqs)), key=lambda i: (reqs[i].arrival_ms, i))
        want = dynamo_rr_schedulers(len(reqs), workers, dp)
        pos = {int(r): j for j, r in enumerate(c["request_index"])}
        for k, i in enumerate(order):
            j = pos.get(i)
            if j is not None and int(c["status"][j]) in (STATUS_COMPLETED, STATUS_IN_FLIGHT):
                assert int(c["worker"][j]) == want[k]


def test_round_robin_order_is_dynamos() -> None:
    assert dynamo_rr_schedulers(8, 2, 2) == [0, 2, 1, 3, 0, 2, 1, 3]
    reqs = [req(i, 0.0, 32, 2) for i in range(8)]
    c = run_dp(reqs, workers=2, dp=2).metrics.columns()
    assert c["worker"].tolist() == [0, 2, 1, 3, 0, 2, 1, 3]


def test_ranks_of_a_worker_share_the_pass_barrier() -> None:
    """A short and a long prompt on the two ranks of one worker: both first tokens come at
    the long prefill's end (the attention-DP barrier); on two workers of one rank each the
    short one is done first."""
    reqs = [req(0, 0.0, 64, 3), req(1, 0.0, 8000, 3)]
    barrier = run_dp(reqs, workers=1, dp=2, nb=1000).metrics.columns()
    apart = run_dp(reqs, workers=2, dp=1, nb=1000).metrics.columns()
    assert barrier["worker"].tolist() == [0, 1]
    ft = barrier["first_token_ms"]
    assert ft[0] == ft[1] == apart["first_token_ms"][1]
    assert apart["first_token_ms"][0] < ft[0]
    # every later token of the short request also waits for its sibling's passes
    assert barrier["last_token_ms"][0] == barrier["last_token_ms"][1]


def test_gpu_hours_count_ranks_times_tp() -> None:
    reqs = [req(i, 10.0 * i, 100, 20) for i in range(10)]
    one = run_dp(reqs, workers=2, dp=1, gpus=2).summary["totals"]
    dp = run_dp(reqs, workers=2, dp=3, gpus=2).summary["totals"]
    assert dp["gpus_per_worker"] == 6 and one["gpus_per_worker"] == 2
    # unambiguous next to --gpus-per-worker (GPUs per DP rank): the rank's GPUs and count
    assert (dp["gpus_per_dp_rank"], dp["dp_size"]) == (2, 3)
    assert (one["gpus_per_dp_rank"], one["dp_size"]) == (2, 1)
    assert dp["gpu_hours"] == pytest.approx(
        dp["provisioned_worker_seconds"] * 6 / 3600.0, rel=1e-12)
    assert dp["provisioned_worker_seconds"] == pytest.approx(2 * dp["duration_ms"] / 1000.0)


def test_dp_one_is_the_plain_cluster() -> None:
    reqs = [req(i, 3.0 * i, 200 + 37 * i, 5 + i % 7, hash_ids=[1, 2, 3, 4]) for i in range(30)]
    a = run_dp(reqs, workers=3, dp=1, router="kv").metrics.columns()
    sim = Simulation(ListWorkload(reqs), engine=EngineConfig(block_size=16, num_gpu_blocks=2000),
                     timing=PolynomialTiming(), cluster=ClusterConfig(num_workers=3),
                     router="kv", seed=0)
    b = sim.run().metrics.columns()
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=True), k


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["simulate", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("args, flag", [
    (["--dp-size", "0"], "--dp-size"),
    (["--dp-size", "2", "--planner", "load"], "--dp-size"),
])
def test_bad_dp_flags_are_one_line_errors(capsys, args, flag) -> None:
    rc, _, err = _cli(capsys, "--trace", "bundled:mooncake_conversation", *args)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in err, err


def test_cli_dp_run_prints_ranks(capsys, tmp_path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(f'{{"timestamp": {i * 50}, "input_length": 300, '
                             f'"output_length": 4, "hash_ids": [{i}]}}\n' for i in range(12)))
    rc, out, err = _cli(capsys, "--trace", str(trace), "--num-workers", "2", "--dp-size", "2")
    assert rc == 0, err
    assert "2 workers x 2 DP ranks" in out
    assert "completed 12" in out

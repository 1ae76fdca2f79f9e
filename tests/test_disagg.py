"""Disaggregated prefill/decode pools (sim.disagg): the handoff's timing, its ownership
protocol as invariants, bulk vs pass-by-pass per role, and bad input on the command line.

Parity with Dynamo's own disaggregated replay is in ``tests/test_disagg_parity.py``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ListWorkload, req
from dynosim.cli import main
from sim.disagg import DisaggConfig, transfer_ms
from sim.engine import EngineConfig
from sim.kv_cache import block_keys
from sim.metrics import HANDOFF_FIELDS, STATUS_COMPLETED, STATUS_IN_FLIGHT, STATUS_REJECTED
from sim.simulator import Simulation
from sim.timing import FixedTiming, PolynomialTiming


def _disagg(n_p=2, n_d=2, *, bs=64, blocks_p=16384, blocks_d=16384, router="round_robin",
            bw=64.0, bpt=262_144, mode="full_prompt", **eng) -> DisaggConfig:
    return DisaggConfig(num_prefill_workers=n_p, num_decode_workers=n_d,
                        prefill_engine=EngineConfig(block_size=bs, num_gpu_blocks=blocks_p, **eng),
                        decode_engine=EngineConfig(block_size=bs, num_gpu_blocks=blocks_d, **eng),
                        prefill_router=router, decode_router=router, kv_transfer_bandwidth=bw,
                        kv_bytes_per_token=bpt, kv_transfer_timing_mode=mode)


def _run(reqs, d: DisaggConfig, *, exact=False, cut=None, check=True, seed=0):
    sim = Simulation(ListWorkload(reqs), engine=EngineConfig(), timing=PolynomialTiming(),
                     disagg=d, exact=exact, check_invariants=check, seed=seed,
                     max_sim_time_ms=cut)
    return sim.run()


# -- transfer time ---------------------------------------------------------------------------

def test_transfer_time_unit_check():
    """Dynamo's unit test: 128 tokens x 1e6 B at 1 GB/s = 128 ms."""
    assert transfer_ms(128, 1_000_000, 1.0) == pytest.approx(128.0, rel=1e-12)
    # 26,888 tokens of Qwen3-32B bf16 KV (262,144 B/token) at 64 GB/s
    assert transfer_ms(26_888, 262_144, 64.0) == pytest.approx(110.1332, rel=1e-6)
    assert transfer_ms(128, 1_000_000, 0.0) == 0.0           # 0 disables the delay
    assert transfer_ms(128, None, 64.0) == 0.0              # no KV size: no delay


def test_transfer_modes_charge_prompt_or_missing_tokens():
    full = _disagg(bw=1.0, bpt=1_000_000)
    miss = _disagg(bw=1.0, bpt=1_000_000, mode="destination_missing")
    assert full.delay_ms(128, 64) == pytest.approx(128.0)
    assert miss.delay_ms(128, 64) == pytest.approx(64.0)
    assert miss.delay_ms(128, 0) == 0.0                     # full destination hit


def test_lone_request_timeline():
    """One request, idle pools: prefill pass, then the transfer from the reservation (at
    once: the decode worker is idle), activation at the transfer end, one decode pass per
    token; the first token is the decode worker's (decode-visible TTFT)."""
    t = PolynomialTiming()
    r = req(0, 0.0, 4096, 3)
    res = _run([r], _disagg(1, 1, bw=1.0, bpt=1_000_000))
    c = res.metrics.columns()
    prefill_end = t.prefill_ms(4096, 0, 1)
    h = res.metrics.handoffs[0]
    held, reserved, activated, released = h[2:]
    assert held == pytest.approx(prefill_end)
    assert reserved == held
    assert activated == pytest.approx(held + 4096.0)         # 4096 tokens x 1 MB at 1 GB/s
    assert released == activated                           # the prefill worker is idle
    d1 = t.decode_ms(1, 4096, 4096, 16384 * 64)
    assert c["first_token_ms"][0] == pytest.approx(activated + d1)
    assert c["first_admit_ms"][0] == 0.0                     # admitted on the prefill worker
    assert c["status"][0] == STATUS_COMPLETED and c["output_length"][0] == 3
    tot = res.summary["totals"]
    assert tot["prefill_worker_seconds"] == pytest.approx(c["last_token_ms"][0] / 1000)
    assert tot["decode_worker_seconds"] == tot["prefill_worker_seconds"]
    assert tot["gpu_hours"] == pytest.approx(2 * tot["prefill_worker_seconds"] / 3600)


# -- invariants --------------------------------------------------------------------------------

@st.composite
def workloads(draw):
    n = draw(st.integers(1, 25))
    reqs, t = [], 0.0
    groups = draw(st.integers(1, 3))
    for i in range(n):
        t += draw(st.floats(0.0, 400.0))
        isl = draw(st.integers(1, 3000))
        osl = draw(st.integers(1, 60))
        g = draw(st.integers(0, groups))
        ids = [g * 100 + j for j in range(-(-isl // 512))] if g else None
        reqs.append(req(i, t, isl, osl, ids))
    return reqs


@st.composite
def disagg_configs(draw):
    return _disagg(draw(st.integers(1, 3)), draw(st.integers(1, 3)), bs=16,
                   blocks_p=draw(st.integers(60, 400)), blocks_d=draw(st.integers(60, 400)),
                   router=draw(st.sampled_from(["round_robin", "kv"])),
                   bw=draw(st.sampled_from([0.0, 0.5, 64.0])),
                   mode=draw(st.sampled_from(["full_prompt", "destination_missing"])),
                   max_num_batched_tokens=draw(st.sampled_from([256, 2048])))


def _check_records(res, reqs, cut=None):
    c = res.metrics.columns()
    # No request lost between the pools: each ends exactly once.
    assert sorted(c["request_index"].tolist()) == [r.index for r in reqs if
                                                   cut is None or r.arrival_ms <= cut]
    if cut is None:
        assert not (c["status"] == STATUS_IN_FLIGHT).any()
        # KV conserved: every held source released, every decode copy freed.
        for w in res.workers:
            assert w.engine.kv.num_active == 0, (w.role, w.pool_index)
    for i in range(len(c["request_index"])):
        idx = int(c["request_index"][i])
        h = res.metrics.handoffs.get(idx) if res.metrics.handoffs else None
        if c["status"][i] == STATUS_COMPLETED:
            held, reserved, activated, released = h[2:]
            assert held <= reserved <= activated <= released
            assert activated < c["first_token_ms"][i] or math.isclose(
                activated, c["first_token_ms"][i])
            assert c["first_admit_ms"][i] <= held
            assert c["output_length"][i] == c["requested_output_length"][i]
        elif c["status"][i] == STATUS_REJECTED:
            assert c["reason"][i] > 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), disagg_configs())
def test_handoff_invariants(reqs, d):
    """Every request ends once; a handoff never activates before its transfer ends and the
    source releases only after the activation; KV bookkeeping holds at every timestamp."""
    res = _run(reqs, d)
    _check_records(res, reqs)
    for idx, h in (res.metrics.handoffs or {}).items():
        held, reserved, activated, released = h[2:]
        if not math.isnan(activated):
            assert activated >= reserved
            if d.kv_transfer_timing_mode == "full_prompt":
                # the transfer ends before the activation
                assert activated >= reserved + d.delay_ms(reqs[idx].input_length, 0) - 1e-9


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), disagg_configs(), st.floats(0.0, 4000.0))
def test_cut_off_accounts_every_request(reqs, d, cut):
    res = _run(reqs, d, cut=cut)
    c = res.metrics.columns()
    arrived = [r.index for r in reqs if r.arrival_ms <= cut]
    assert sorted(c["request_index"].tolist()) == arrived
    tot = res.summary["totals"]
    assert tot["completed_requests"] + tot["rejected_requests"] + tot["in_flight_requests"] \
        == len(arrived)


# -- a decode worker under KV pressure (issue 15) ---------------------------------------------
# Four handoffs to one decode worker of 55 16-token blocks: the second is preempted while the
# third and fourth are activated behind it. Dynamo 1.6.1 (checked with its replay: all four
# complete, the second readmitted after the others) admits, while a handoff waits for a
# reservation, only copies whose prompt KV has arrived, first in queue order, past the
# preempted head; main rejected the head as prompt_exceeds_kv_capacity.
PRESSURE = [(5.0, 397, 154), (10.0, 315, 111), (10.0, 245, 86), (15.0, 402, 96)]
# The same shape where the preempted head fits the pool but no handoff is pending when the
# activated copies behind it hold the blocks it needs: Dynamo aborts the replay ("an
# effect-free zero-duration pass with 4 in-flight requests remaining"); we reject the head.
DEADLOCK = [(50.0, 577, 183), (100.0, 316, 289), (105.0, 386, 110), (110.0, 218, 32),
            (115.0, 266, 108)]


@pytest.mark.parametrize("exact", [False, True])
def test_decode_admits_activated_copies_past_a_preempted_head(exact):
    reqs = [req(i, t, isl, osl) for i, (t, isl, osl) in enumerate(PRESSURE)]
    res = _run(reqs, _disagg(1, 1, bs=16, blocks_d=55), exact=exact)
    _check_records(res, reqs)
    c = res.metrics.columns()
    assert (c["status"] == STATUS_COMPLETED).all(), c["reason"]
    assert c["num_preemptions"].tolist() == [0, 1, 0, 0]
    # the preempted request finishes after the copies activated behind it started decoding
    assert c["last_token_ms"][1] > c["first_token_ms"][2]
    assert c["last_token_ms"][1] > c["first_token_ms"][3]


@pytest.mark.parametrize("exact", [False, True])
def test_decode_kv_deadlock_is_rejected_with_its_reason(exact):
    reqs = [req(i, t, isl, osl) for i, (t, isl, osl) in enumerate(DEADLOCK)]
    res = _run(reqs, _disagg(1, 1, bs=16, blocks_d=57), exact=exact)
    _check_records(res, reqs)
    c = res.metrics.columns()
    assert c["status"].tolist() == [STATUS_COMPLETED, STATUS_REJECTED] + [STATUS_COMPLETED] * 3
    tot = res.summary["totals"]
    assert tot["rejected_by_reason"] == {"decode_kv_deadlock": 1}
    assert tot["completed_requests"] == 4


# -- the decode worker's prefix cache (Dynamo: reserve/activate_destination_lease) -------------
# Received prompt blocks join the decode worker's prefix cache at the activation in both
# transfer-timing modes; a later reservation pins the resident leading blocks and reserves
# only the rest (destination_missing charges whole fresh blocks); a preempted request's
# recompute there hits them and, on a decode worker, costs no prefill time.

@pytest.mark.parametrize("mode", ["full_prompt", "destination_missing"])
def test_decode_worker_caches_received_prompt_blocks(mode):
    shared = [7, 8, 9, 10]                       # 4 trace blocks of 512 = 2,048 tokens
    reqs = [req(0, 0.0, 3000, 4, shared + [11, 12]), req(1, 5000.0, 2500, 4, shared + [20])]
    d = _disagg(1, 1, bw=1.0, bpt=1_000_000, mode=mode)
    res = _run(reqs, d)
    dec = next(w for w in res.workers if w.role == "decode").engine
    k0 = block_keys(tuple(shared + [11, 12]), 512, 64, 3000 // 64)
    k1 = block_keys(tuple(shared + [20]), 512, 64, 2500 // 64)
    # the first prompt's 46 full blocks stayed in the decode worker's cache after it ended
    assert dec.kv.match_prefix(k0) == (3000 // 64, 0)
    assert dec.kv.match_prefix(k1)[0] == 2500 // 64          # its own blocks joined too
    h0, h1 = res.metrics.handoffs[0], res.metrics.handoffs[1]
    transfer1 = h1[4] - h1[3]                     # activation - reservation (idle worker)
    if mode == "full_prompt":
        assert transfer1 == pytest.approx(2500.0)                     # the whole prompt
    else:
        assert h0[4] - h0[3] == pytest.approx(47 * 64.0)              # 47 fresh blocks
        assert transfer1 == pytest.approx((40 - 32) * 64.0)           # 32 shared blocks hit


def test_decode_worker_charges_no_prefill_time():
    """A preempted request recomputes its prompt on the decode worker (it hits the blocks
    it received, still cached) at no prefill cost: every decode-worker pass costs the
    decode time only (Dynamo: predict_prefill_duration is zero for decode workers)."""
    reqs = [req(i, t, isl, osl) for i, (t, isl, osl) in enumerate(PRESSURE)]
    d = _disagg(1, 1, bs=16, blocks_d=55)
    for exact in (True, False):
        sim = Simulation(ListWorkload(reqs), engine=EngineConfig(),
                         timing=FixedTiming(400.0, 5.0), disagg=d, exact=exact,
                         check_invariants=True)
        res = sim.run()
        _check_records(res, reqs)
        dec = next(w for w in res.workers if w.role == "decode").engine
        pre = next(w for w in res.workers if w.role == "prefill").engine
        assert dec.num_preemptions >= 1 and dec.tot.prefill_tokens > 0   # a recompute ran
        assert dec.tot.busy_ms == pytest.approx(5.0 * dec.tot.passes)
        assert pre.tot.busy_ms == pytest.approx(400.0 * pre.tot.passes)   # prefill still pays


def test_transfer_gates_activation_under_load():
    """Many concurrent handoffs at 0.5 GB/s: each activation is at or after its own
    reservation + full-prompt transfer (concurrent transfers do not contend)."""
    rng = np.random.default_rng(3)
    reqs = [req(i, float(i * 20), int(rng.integers(64, 4000)), int(rng.integers(2, 80)))
            for i in range(80)]
    d = _disagg(2, 3, bs=16, blocks_d=300, bw=0.5, bpt=100_000)
    res = _run(reqs, d)
    for idx, h in res.metrics.handoffs.items():
        reserved, activated = h[3], h[4]
        assert activated >= reserved + d.delay_ms(reqs[idx].input_length, 0) - 1e-9


# -- bulk vs pass by pass, per role ------------------------------------------------------------

@pytest.mark.parametrize("router", ["round_robin", "kv"])
def test_bulk_equals_exact_per_role(router):
    rng = np.random.default_rng(7)
    reqs = [req(i, float(rng.uniform(0, 30_000)), int(rng.integers(16, 6000)),
                int(rng.integers(1, 400)), [int(rng.integers(0, 4)) * 50 + j for j in range(12)])
            for i in range(150)]
    d = _disagg(2, 3, bs=64, blocks_p=500, blocks_d=700, router=router, bw=8.0)
    bulk = _run(reqs, d, exact=False, check=False)
    exact = _run(reqs, d, exact=True, check=False)
    cb, ce = bulk.metrics.columns(), exact.metrics.columns()
    for k in cb:
        if cb[k].dtype.kind == "f":
            np.testing.assert_allclose(cb[k], ce[k], rtol=1e-9, atol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(cb[k], ce[k], err_msg=k)
    assert bulk.metrics.handoffs.keys() == exact.metrics.handoffs.keys()
    for idx in bulk.metrics.handoffs:
        np.testing.assert_allclose(bulk.metrics.handoffs[idx], exact.metrics.handoffs[idx],
                                   rtol=1e-9, atol=1e-6)
    # The bulk path did advance decode stretches (on decode workers only).
    assert sum(w.engine.num_stretches for w in bulk.workers if w.role == "decode") > 0
    assert sum(w.engine.num_stretches for w in bulk.workers if w.role == "prefill") == 0


def test_same_seed_same_bytes():
    rng = np.random.default_rng(1)
    reqs = [req(i, float(i * 50), int(rng.integers(64, 3000)), int(rng.integers(1, 50)),
                [int(rng.integers(0, 3)) * 10 + j for j in range(6)]) for i in range(60)]
    d = _disagg(3, 2, bs=64, router="kv")
    a, b = _run(reqs, d, seed=5), _run(reqs, d, seed=5)
    for k, v in a.metrics.columns().items():
        assert v.tobytes() == b.metrics.columns()[k].tobytes(), k


# -- config, CLI and bad input -----------------------------------------------------------------

TRACE_ROWS = [(0, 1000, 5, [1, 2]), (10, 700, 3, [1, 3]), (20, 2000, 8, [4, 5, 6, 7])]


@pytest.fixture
def trace(tmp_path):
    from conftest import write_jsonl
    return str(write_jsonl(tmp_path / "t.jsonl", TRACE_ROWS))


def test_cli_disaggregated_run_reports_roles(trace, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    rc = main(["simulate", "--trace", trace, "--num-prefill-workers", "2",
               "--num-decode-workers", "1", "--kv-bytes-per-token", "262144",
               "--gpus-per-worker", "2", "--decode-engine-args-json", '{"max_num_seqs": 8}',
               "--json", "--quiet", "--report-jsonl", str(out)])
    assert rc == 0
    import json
    doc = json.loads(capsys.readouterr().out)
    tot = doc["summary"]["totals"] if "summary" in doc else doc["totals"]
    assert tot["completed_requests"] == 3
    assert tot["prefill_worker_seconds"] > 0 and tot["decode_worker_seconds"] > 0
    assert tot["gpu_hours"] == pytest.approx(
        (tot["prefill_worker_seconds"] * 2 + tot["decode_worker_seconds"] * 2) / 3600)
    recs = [json.loads(line) for line in open(out)]
    assert [r["prefill_worker"] for r in recs] == [0, 1, 0]
    assert [r["decode_worker"] for r in recs] == [0, 0, 0]
    assert all(set(HANDOFF_FIELDS) <= set(r) for r in recs)
    cfg = doc["config"]["disagg"]
    assert cfg["num_prefill_workers"] == 2 and cfg["decode_engine"] == {"max_num_seqs": 8}


@pytest.mark.parametrize("args, flag", [
    (["--num-workers", "2", "--num-prefill-workers", "1", "--num-decode-workers", "1"],
     "--num-workers"),
    (["--num-workers", "2", "--kv-transfer-bandwidth", "10"],         # a pool-only option
     "--kv-transfer-bandwidth"),                                     # on an aggregated run
    (["--num-prefill-workers", "1", "--num-decode-workers", "1",
      "--kv-transfer-bandwidth", "-1"], "--kv-transfer-bandwidth"),
    (["--num-prefill-workers", "1", "--num-decode-workers", "1",
      "--decode-engine-args-json", '{"block_size": 32}'], "--decode-engine-args-json"),
    (["--kv-transfer-bandwidth", "10"], "--num-prefill-workers"),
    (["--num-prefill-workers", "1", "--num-decode-workers", "1",
      "--prefill-engine-args-json", "[1]"], "--prefill-engine-args-json"),
])
def test_bad_disagg_flags_one_line_exit_2(trace, capsys, args, flag):
    rc = main(["simulate", "--trace", trace, *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert flag in err, err


def test_yaml_disagg_block_size_mismatch_names_field(tmp_path, trace, capsys):
    y = tmp_path / "c.yaml"
    y.write_text(f"workload: {{kind: mooncake, path: {trace}}}\n"
                 "disagg:\n  num_prefill_workers: 1\n  num_decode_workers: 1\n"
                 "  decode_engine: {block_size: 32}\n")
    rc = main(["simulate", "--config", str(y)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "disagg.decode_engine" in err and "block_size" in err and "c.yaml" in err


def test_print_config_round_trips(trace, tmp_path, capsys):
    assert main(["simulate", "--trace", trace, "--num-prefill-workers", "3",
                 "--num-decode-workers", "1", "--decode-engine-args-json",
                 '{"max_num_seqs": 64}', "--print-config"]) == 0
    first = capsys.readouterr().out
    y = tmp_path / "run.yaml"
    y.write_text(first)
    assert main(["simulate", "--config", str(y), "--print-config"]) == 0
    assert capsys.readouterr().out == first


@pytest.mark.parametrize("args, flag", [
    (["--backend", "sglang"], "--backend"),
])
def test_unmodelled_combinations_are_errors(trace, capsys, args, flag):
    rc = main(["simulate", "--trace", trace, "--num-prefill-workers", "1",
               "--num-decode-workers", "1", *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and flag in err, err


# -- TP per role: each pool on its own timing model (--prefill-tp / --decode-tp) --------------

def test_each_pool_runs_on_its_own_timing():
    """Role timings replace the run's for that pool only: the prefill pass takes the
    prefill pool's time, every decode pass the decode pool's."""
    from sim.timing import FixedTiming
    import dataclasses
    reqs = [req(0, 0.0, 4096, 6)]
    base = _disagg(1, 1, bw=1.0, bpt=1_000_000)

    def run(timing, **roles):
        sim = Simulation(ListWorkload(reqs), engine=EngineConfig(), timing=timing,
                         disagg=dataclasses.replace(base, **roles), check_invariants=True)
        return sim, sim.run()

    _, plain = run(FixedTiming(100.0, 5.0))
    sim, same = run(PolynomialTiming(), prefill_timing=FixedTiming(100.0, 5.0),
                    decode_timing=FixedTiming(100.0, 5.0))
    for k, v in plain.metrics.columns().items():        # the run's timing is not used
        assert v.tobytes() == same.metrics.columns()[k].tobytes(), k
    p, d = FixedTiming(100.0, 5.0), FixedTiming(300.0, 9.0)
    sim, split = run(PolynomialTiming(), prefill_timing=p, decode_timing=d)
    assert [w.engine.timing for w in sim.workers] == [p, d]
    held = split.metrics.handoffs[0][2]
    assert held == plain.metrics.handoffs[0][2]          # prefill on the prefill timing
    c = split.metrics.columns()
    assert (c["last_token_ms"][0] - c["first_token_ms"][0]) / 5 == pytest.approx(9.0)
    c0 = plain.metrics.columns()
    assert (c0["last_token_ms"][0] - c0["first_token_ms"][0]) / 5 == pytest.approx(5.0)


GPU_FLAGS = ["--model", "Qwen/Qwen3-32B", "--gpu", "h200_sxm", "--backend", "vllm",
             "--tp", "2"]


def test_cli_tp_per_role_takes_each_tables_blocks_and_gpus(trace, capsys):
    """--prefill-tp 4 --decode-tp 1: each pool gets its TP's table (timing, KV blocks) and
    GPU count; GPU-hours per role count that pool's TP."""
    import json
    from sim.gpu_timing import load_gpu_timing
    rc = main(["simulate", "--trace", trace, *GPU_FLAGS, "--num-prefill-workers", "2",
               "--num-decode-workers", "1", "--prefill-tp", "4", "--decode-tp", "1",
               "--kv-bytes-per-token", "262144", "--json", "--quiet"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    d = doc["config"]["disagg"]
    assert d["prefill_timing_model"] == "gpu:Qwen/Qwen3-32B:h200_sxm:vllm:4"
    assert d["decode_timing_model"] == "gpu:Qwen/Qwen3-32B:h200_sxm:vllm:1"
    assert d["prefill_engine"]["num_gpu_blocks"] == load_gpu_timing(
        "Qwen/Qwen3-32B", "h200_sxm", "vllm", 4).num_gpu_blocks
    assert d["decode_engine"]["num_gpu_blocks"] == load_gpu_timing(
        "Qwen/Qwen3-32B", "h200_sxm", "vllm", 1).num_gpu_blocks
    tot = doc["summary"]["totals"] if "summary" in doc else doc["totals"]
    assert tot["completed_requests"] == 3
    assert (tot["prefill_gpus_per_worker"], tot["decode_gpus_per_worker"]) == (4, 1)
    assert tot["prefill_gpu_hours"] == pytest.approx(tot["prefill_worker_seconds"] * 4 / 3600)
    assert tot["decode_gpu_hours"] == pytest.approx(tot["decode_worker_seconds"] / 3600)
    # the prefill pool's TP changes its prefill time, so TTFT moves
    assert main(["simulate", "--trace", trace, *GPU_FLAGS, "--num-prefill-workers", "2",
                 "--num-decode-workers", "1", "--prefill-tp", "1", "--decode-tp", "1",
                 "--kv-bytes-per-token", "262144", "--json", "--quiet"]) == 0
    slow = json.loads(capsys.readouterr().out)
    lat = (doc.get("summary") or doc)["latency_ms"]["ttft"]["mean"]
    lat1 = (slow.get("summary") or slow)["latency_ms"]["ttft"]["mean"]
    assert lat1 > lat


@pytest.mark.parametrize("args, flag", [
    (["--num-prefill-workers", "1", "--num-decode-workers", "1", "--prefill-tp", "2"],
     "--prefill-tp"),                                                 # no GPU table
    ([*GPU_FLAGS, "--num-workers", "2", "--decode-tp", "4"], "--decode-tp"),   # aggregated
    ([*GPU_FLAGS, "--num-prefill-workers", "1", "--num-decode-workers", "1",
      "--prefill-tp", "0"], "--prefill-tp"),
])
def test_bad_tp_per_role_one_line_exit_2(trace, capsys, args, flag):
    rc = main(["simulate", "--trace", trace, *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert flag in err, err


# -- s7: zero-time transfers, the unset bandwidth, one KV size per token ------------------------

def _load(n: int = 40, seed: int = 3) -> list:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(40.0, n))
    return [req(i, float(t[i]), int(rng.integers(200, 3000)), int(rng.integers(1, 40)))
            for i in range(n)]


@pytest.mark.parametrize("bw, bpt", [(0.0, 262_144), (None, 262_144), (64.0, None),
                                     (None, None)])
def test_zero_time_transfer_activates_at_reservation(bw, bpt):
    """No transfer delay (bandwidth 0 or unset, or no KV size): Dynamo activates each
    handoff in the step that reserves it (tests/test_disagg_parity.py, zero-delay case);
    ours waited for the decode worker's next pass boundary."""
    res = _run(_load(), _disagg(1, 1, bw=bw, bpt=bpt))
    hand = res.metrics.handoffs
    busy = 0
    for h in hand.values():
        assert h[4] == h[3]                  # destination_activated_ms == reserved_ms
        busy += h[3] > h[2]                  # reservations that waited for a boundary
    assert busy > 0                          # the load queues some handoffs on the decode worker
    assert res.summary["totals"]["completed_requests"] == 40


def test_nonzero_transfer_still_activates_at_a_pass_boundary():
    """With a delay, the transfer's end only makes the copy ready: it is activated at the
    decode worker's first pass boundary at or after it (so later than the end when busy)."""
    d = _disagg(1, 1, bw=64.0, bpt=262_144)
    reqs = _load()
    res = _run(reqs, d)
    late = 0
    for i, h in res.metrics.handoffs.items():
        end = h[3] + d.delay_ms(reqs[i].input_length, 0)
        assert h[4] >= end - 1e-9
        late += h[4] > end + 1e-9
    assert late > 0


def test_unset_bandwidth_is_dynamos_no_delay_default():
    """Dynamo 1.6.1's mocker leaves kv_transfer_bandwidth unset (None: its --help says "the
    AISimulate engine default"), and an unset bandwidth charges no transfer time: its replay
    with --kv-bytes-per-token alone equals --kv-transfer-bandwidth 0 request by request."""
    from sim.config import disagg_config, parse_config
    assert DisaggConfig().kv_transfer_bandwidth is None
    cfg = parse_config({"workload": {"kind": "mooncake", "path": "x.jsonl"},
                        "disagg": {"num_prefill_workers": 1, "num_decode_workers": 1,
                                   "kv_bytes_per_token": 262_144}})
    d = disagg_config(cfg)
    assert d.kv_transfer_bandwidth is None and d.delay_ms(4096, 4096) == 0.0
    unset = _run(_load(), _disagg(1, 1, bw=None)).metrics.columns()
    zero = _run(_load(), _disagg(1, 1, bw=0.0)).metrics.columns()
    assert all(np.array_equal(unset[k], zero[k], equal_nan=True) for k in unset)


def _ttft_mean(capsys, args) -> tuple[float, dict]:
    import json
    assert main(["simulate", *args, "--json", "--quiet"]) == 0
    doc = json.loads(capsys.readouterr().out)
    return doc["latency_ms"]["ttft"]["mean"], doc["config"]


@pytest.mark.parametrize("yaml_bytes", [1000, None])
def test_kv_bytes_flag_overrides_yaml_disagg_kv_bytes(trace, tmp_path, capsys, yaml_bytes):
    """--kv-bytes-per-token overrides YAML disagg.kv_bytes_per_token (as
    --kv-transfer-bandwidth overrides disagg.kv_transfer_bandwidth), and the resolved config
    holds one value (s7 trial, item 3: the YAML won silently and both values were kept)."""
    y = tmp_path / "d.yaml"
    extra = "" if yaml_bytes is None else f"  kv_bytes_per_token: {yaml_bytes}\n"
    y.write_text(f"workload: {{kind: mooncake, path: {trace}}}\n"
                 "disagg:\n  num_prefill_workers: 1\n  num_decode_workers: 1\n"
                 f"  kv_transfer_bandwidth: 1\n{extra}")
    flag = ["--kv-bytes-per-token", "4000000"]
    via_yaml, cfg = _ttft_mean(capsys, ["--config", str(y), *flag])
    alone, _ = _ttft_mean(capsys, ["--trace", trace, "--num-prefill-workers", "1",
                                   "--num-decode-workers", "1", "--kv-transfer-bandwidth", "1",
                                   *flag])
    assert via_yaml == alone
    assert cfg["disagg"]["kv_bytes_per_token"] == cfg["engine"]["kv_cache_bytes_per_token"] \
        == 4_000_000
    if yaml_bytes is not None:      # and the flag changed the run
        without, _ = _ttft_mean(capsys, ["--config", str(y)])
        assert without != via_yaml


def test_conflicting_kv_sizes_in_yaml_are_an_error(trace, tmp_path, capsys):
    y = tmp_path / "c.yaml"
    y.write_text(f"workload: {{kind: mooncake, path: {trace}}}\n"
                 "engine: {kv_cache_bytes_per_token: 1000}\n"
                 "disagg:\n  num_prefill_workers: 1\n  num_decode_workers: 1\n"
                 "  kv_bytes_per_token: 262144\n")
    rc = main(["simulate", "--config", str(y)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "disagg.kv_bytes_per_token" in err and "c.yaml" in err and "1000" in err


def _fixed_run(reqs, **decode):
    mode = decode.pop("mode", "full_prompt")
    d = DisaggConfig(num_prefill_workers=1, num_decode_workers=1,
                     prefill_engine=EngineConfig(block_size=16, num_gpu_blocks=1000),
                     decode_engine=EngineConfig(**{"block_size": 16, "num_gpu_blocks": 1000,
                                                   **decode}),
                     kv_transfer_bandwidth=1.0, kv_bytes_per_token=1_000_000,  # 1 ms/token
                     kv_transfer_timing_mode=mode)
    return Simulation(ListWorkload(reqs), engine=EngineConfig(), timing=FixedTiming(10.0, 10.0),
                      disagg=d, exact=True, check_invariants=True).run()


def test_transfers_ending_in_one_pass_activate_in_reservation_order():
    """Request 0 decodes throughout on a decode worker with one more slot (max_num_seqs 2).
    A (28 tokens, 28 ms) is reserved at 64 ms, B (12 tokens, 12 ms) at 74 ms; B's transfer
    ends first (86 < 92) but both are activated at the 94 ms boundary in reservation order,
    so A takes the free slot (Dynamo's order; s7 trial item 6: with transfer-end order LIFO
    preemption picked another victim)."""
    res = _fixed_run([req(0, 0.0, 4, 200), req(1, 50.0, 28, 5), req(2, 50.0, 12, 5)],
                     max_num_seqs=2)
    h = res.metrics.handoffs
    assert (h[1][3], h[2][3]) == (64.0, 74.0) and h[1][4] == h[2][4] == 94.0
    c = res.metrics.columns()
    first = dict(zip(c["request_index"].tolist(), c["first_token_ms"].tolist()))
    assert first[1] == 104.0 and first[2] > first[1]


def test_boundary_reserves_before_it_activates():
    """A and B have the same 64-token prompt (destination_missing timing). B's handoff waits
    for the 136 ms boundary, where A's transfer (ended at 130) is activated: B is reserved
    first, so it cannot pin the blocks A's activation caches and moves all 64 tokens
    (Dynamo's order; s7 trial item 6). Reserving after the activation would pin all four
    blocks and activate B at once."""
    res = _fixed_run([req(0, 0.0, 4, 300), req(1, 50.0, 64, 3, hash_ids=[7]),
                      req(2, 120.0, 64, 3, hash_ids=[7])], mode="destination_missing")
    h = res.metrics.handoffs
    assert h[1][2:] == [60.0, 66.0, 136.0, 136.0]
    assert h[2][2:] == [130.0, 136.0, 206.0, 206.0]


def test_failed_reservation_waits_for_a_capacity_change():
    """An 8-block decode worker: request 0 decodes there, A's 4 blocks are reserved at 64 ms;
    B (A's prompt) fails at 114 ms (3 blocks free). A's activation at 134 ms caches the
    blocks B could pin, but an activation frees nothing: B is retried only when the worker's
    capacity changes, A completing at 164 ms (Dynamo's capacity generation; s7 trial
    item 6). Retrying after the activation would reserve B at 134 ms."""
    res = _fixed_run([req(0, 0.0, 4, 20), req(1, 50.0, 64, 3, hash_ids=[7]),
                      req(2, 100.0, 64, 3, hash_ids=[7])], num_gpu_blocks=8)
    h = res.metrics.handoffs
    c = res.metrics.columns()
    last = dict(zip(c["request_index"].tolist(), c["last_token_ms"].tolist()))
    assert h[1][2:] == [60.0, 64.0, 134.0, 134.0] and last[1] == 164.0
    assert h[2][2:4] == [110.0, 164.0]

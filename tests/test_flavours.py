"""Engine flavours (``--backend vllm|sglang|trtllm``): oracles from Dynamo 1.6.1's replay,
property tests per flavour (no request lost, KV conserved, clock monotone), bulk advance
against pass-by-pass stepping, and the selection / bad-input rules."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, ListWorkload, draw_requests, ms, req
from sim.engine import EngineConfig, make_engine
from sim.engines.base import Seq
from sim.engines.sglang import SglangEngine
from sim.engines.trtllm import TrtllmEngine
from sim.engines.vllm import VllmEngine
from sim.metrics import STATUS_COMPLETED, STATUS_REJECTED
from sim.request import Request
from sim.simulator import ClusterConfig, Simulation
from sim.timing import FixedTiming, PolynomialTiming
from test_bulk_equivalence import assert_same_records, assert_same_summary

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(reqs, *, backend: str, exact: bool = False, workers: int = 1,
        router: str = "round_robin", timing=None, check: bool = True, **eng):
    cfg = EngineConfig(backend=backend, **eng)
    return Simulation(ListWorkload(reqs), engine=cfg, timing=timing or PolynomialTiming(),
                      cluster=ClusterConfig(num_workers=workers), router=router, seed=0,
                      exact=exact, check_invariants=check).run()


def cols(res) -> dict:
    c = res.metrics.columns()
    order = np.argsort(c["request_index"], kind="stable")
    return {k: v[order] for k, v in c.items()}


# -- selection ------------------------------------------------------------------------------

def test_backend_selects_the_core_and_its_block_size() -> None:
    for backend, cls, bs in (("vllm", VllmEngine, 64), ("sglang", SglangEngine, 1),
                             ("trtllm", TrtllmEngine, 32)):
        cfg = EngineConfig(backend=backend)
        assert cfg.block_size == bs
        eng = make_engine(0, cfg, PolynomialTiming(), None)
        assert type(eng) is cls
    assert EngineConfig(backend="sglang", block_size=16).block_size == 16
    with pytest.raises(ValueError, match="unknown engine backend"):
        EngineConfig(backend="tgi")


# -- oracles (Dynamo 1.6.1, run_dynosim.sh ... --backend sglang --num-gpu-blocks 262144) -----

def test_sglang_oracle_prefix_cap_and_chunks() -> None:
    """A 1024-token prompt (out 3); the same prompt 1 s later reuses 1023 tokens (one is
    recomputed); a 20000-token prompt runs as chunks 8192 + 8192 + 3616. Extend passes cost
    their prefill only; decode uses context / (262144 tokens)."""
    ids = list(range(3, 43))
    reqs = [req(0, 0, 1024, 3, [1, 2]), req(1, 1000, 1024, 3, [1, 2]),
            req(2, 2000, 20000, 3, ids)]
    for exact in (False, True):
        c = cols(run(reqs, backend="sglang", num_gpu_blocks=262144, exact=exact))
        assert list(c["first_token_ms"]) == [ms(32.490712), ms(1016.516604), ms(2415.183328)]
        assert list(c["last_token_ms"]) == [ms(44.392495), ms(1028.418387), ms(2434.605521)]
        assert list(c["reused_input_tokens"]) == [0, 1023, 0]


def test_sglang_prefill_first_starves_running_decodes() -> None:
    """While a long prompt is prefilled chunk by chunk, the running request gets no step."""
    reqs = [req(0, 0, 100, 50), req(1, 30, 30000, 2)]
    c = cols(run(reqs, backend="sglang", num_gpu_blocks=262144, timing=FixedTiming(10, 5)))
    # request 1 arrives mid-decode and takes 4 extend passes (8192 x 3 + 5424)
    gaps = c["last_token_ms"][0] - c["first_token_ms"][0]
    assert gaps == pytest.approx(49 * 5 + 4 * 10)


def test_sglang_retracts_the_request_with_fewest_outputs() -> None:
    """A pool too small for both decodes: the younger request (fewer outputs) is retracted,
    keeps its cached prefix, and finishes after the other."""
    reqs = [req(0, 0, 300, 600), req(1, 100, 300, 600)]
    c = cols(run(reqs, backend="sglang", num_gpu_blocks=1700, timing=FixedTiming(10, 5)))
    assert list(c["status"]) == [STATUS_COMPLETED, STATUS_COMPLETED]
    assert int(c["num_preemptions"][0]) == 0 and int(c["num_preemptions"][1]) >= 1
    assert c["last_token_ms"][1] > c["last_token_ms"][0]


def test_sglang_retraction_sets_sglangs_new_token_ratio_estimate() -> None:
    """After a retraction the admission ratio is SGLang's estimate over the requests left
    running, min(1, (outputs so far + 20 each) / output lengths), not the start value 0.7
    (Dynamo 1.6.1: the SGLang (a) parity run matches request by request only with it)."""
    eng = make_engine(0, EngineConfig(backend="sglang", num_gpu_blocks=4096), PolynomialTiming(),
                      None)
    a, b = Seq(req(0, 0, 10, 600), eng.kv.new_blocks()), Seq(req(1, 0, 10, 200), eng.kv.new_blocks())
    a.generated, b.generated = 100, 10
    eng.running = [a, b]
    assert eng._retract_ratio() == (110 + 2 * 20) / 800
    a.generated = 590
    eng.running = [a]
    assert eng._retract_ratio() == 1.0
    eng.running = [Seq(req(2, 0, 10, 0), eng.kv.new_blocks())]
    assert eng._retract_ratio() == 1.0


def test_trtllm_reserves_to_completion_and_never_preempts() -> None:
    """Two requests whose to-completion footprints do not fit together run one after the
    other (the second waits at admission); vLLM admits both and preempts."""
    reqs = [req(0, 0, 1000, 600), req(1, 1, 1000, 600)]
    t = cols(run(reqs, backend="trtllm", block_size=32, num_gpu_blocks=70))
    assert int(t["num_preemptions"].sum()) == 0
    assert t["first_admit_ms"][1] >= t["last_token_ms"][0]
    v = cols(run(reqs, backend="vllm", block_size=32, num_gpu_blocks=70))
    assert v["first_admit_ms"][1] < v["last_token_ms"][0]


def test_trtllm_clamps_output_to_the_pool() -> None:
    c = cols(run([req(0, 0, 1000, 5000)], backend="trtllm", block_size=32, num_gpu_blocks=64))
    assert int(c["status"][0]) == STATUS_COMPLETED
    assert int(c["output_length"][0]) == 64 * 32 - 1000
    # the record keeps what was requested, as Dynamo's does (requested 500, output 280 on a
    # 40 x 32-token pool for a 1,000-token prompt; a new-user trial found both read 280)
    assert int(c["requested_output_length"][0]) == 5000


# -- liveness -------------------------------------------------------------------------------

def test_sglang_rejects_what_can_never_fit_and_serves_the_rest() -> None:
    """Dynamo aborts the whole replay when a request can never fit; we reject it."""
    reqs = [req(0, 0, 20000, 3), req(1, 0, 500, 10), req(2, 1, 15000, 2000)]
    c = cols(run(reqs, backend="sglang"))            # default 16384 tokens
    assert list(c["status"]) == [STATUS_REJECTED, STATUS_COMPLETED, STATUS_REJECTED]
    assert list(c["reason"])[0] > 0 and list(c["reason"])[2] > 0


def test_sglang_deadlocked_head_that_fits_is_not_called_too_big(tmp_path) -> None:
    """SGLang's partially prefilled requests keep their pages in the waiting queue, so a
    head that fits an empty pool can be blocked for good (Dynamo's replay aborts there).
    Such a head is rejected as ``kv_deadlock``; ``prompt_exceeds_kv_capacity`` is kept for
    prompts larger than the pool (found by a new-user trial: the first 2,000 requests of
    the conversation trace on one worker with the default 16,384 tokens)."""
    import json
    from dynosim.cli import main
    src = REPO / "sim" / "data" / "conversation_trace.jsonl"
    trace = tmp_path / "head.jsonl"
    trace.write_text("".join(src.read_text().splitlines(keepends=True)[:2000]))
    out = tmp_path / "r.jsonl"
    assert main(["simulate", "--trace", str(trace), "--backend", "sglang", "--num-workers", "1",
                 "--quiet", "--report-jsonl", str(out)]) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    reasons = {}
    for r in recs:
        reason = r.get("reject_reason")
        if not reason:
            continue
        reasons[reason] = reasons.get(reason, 0) + 1
        if reason == "prompt_exceeds_kv_capacity":
            assert r["input_length"] >= 16384, r
        if reason == "kv_deadlock":
            assert r["input_length"] < 16384 and r["first_admit_ms"] is not None, r
    assert reasons.get("kv_deadlock", 0) > 0, reasons


# -- properties per flavour ---------------------------------------------------------------------

@st.composite
def workloads(draw) -> list[Request]:
    n = draw(st.integers(1, 30))
    tbs = draw(st.sampled_from([16, 64, 512]))
    prefixes = [[10_000 * (p + 1) + j for j in range(draw(st.integers(1, 6)))]
                for p in range(draw(st.integers(0, 3)))]
    reqs = draw_requests(draw, n, tbs, prefixes, gaps=[0.0, 0.0, 1.0, 10.0, 37.5, 200.0],
                         max_osl=200)
    return reqs


@st.composite
def flavour_configs(draw) -> dict:
    backend = draw(st.sampled_from(["sglang", "trtllm"]))
    cfg = dict(backend=backend, workers=draw(st.integers(1, 3)),
               router=draw(st.sampled_from(["round_robin", "kv", "least_loaded"])),
               timing=draw(st.sampled_from([PolynomialTiming(), FixedTiming(10.0, 5.0)])),
               max_num_seqs=draw(st.integers(1, 64)))
    if backend == "sglang":
        cfg["block_size"] = draw(st.sampled_from([1, 1, 4, 16]))
        cfg["num_gpu_blocks"] = draw(st.integers(400, 8000)) // cfg["block_size"] + 1
        cfg["schedule_policy"] = draw(st.sampled_from(["fifo", "lpm"]))
        cfg["chunked_prefill_size"] = draw(st.sampled_from([256, 1024, 8192]))
        cfg["max_prefill_tokens"] = draw(st.sampled_from([1024, 16384]))
        # the admission budget binds (requests wait while decodes run) at high conservativeness
        cfg["schedule_conservativeness"] = draw(st.sampled_from([1.0, 0.3, 2.5]))
        cfg["clip_max_new_tokens"] = draw(st.sampled_from([4096, 4096, 50]))
    else:
        cfg["block_size"] = draw(st.sampled_from([8, 32, 64]))
        cfg["num_gpu_blocks"] = draw(st.integers(20, 400))
        cfg["max_num_batched_tokens"] = draw(st.integers(64, 8192))
    return cfg


@SETTINGS
@given(workloads(), flavour_configs())
def test_no_request_lost_kv_conserved_clock_monotone(reqs, cfg) -> None:
    """Invariants at every timestamp (check_invariants: clock monotone, KV conserved: free +
    tree + private pages = pool); afterwards every request completed or rejected once, and
    the pools hold nothing but cached (evictable) tokens."""
    res = run(reqs, exact=True, check=True, **cfg)
    c = cols(res)
    assert list(c["request_index"]) == list(range(len(reqs)))
    assert set(c["status"].tolist()) <= {STATUS_COMPLETED, STATUS_REJECTED}
    for k, r in enumerate(reqs):
        if int(c["status"][k]) == STATUS_COMPLETED:
            assert r.arrival_ms <= c["first_admit_ms"][k] <= c["first_token_ms"][k] \
                <= c["last_token_ms"][k]
        else:
            assert int(c["reason"][k]) > 0
    for w in res.workers:
        eng = w.engine
        assert not eng.running and not eng.waiting
        eng.check_invariants()
        if cfg["backend"] == "sglang":
            assert eng.kv.protected_size == 0
            assert eng.kv.available_tokens + eng.kv.evictable_size == eng.kv.total_tokens
        else:
            assert eng.kv.num_active == 0 and eng.num_preemptions == 0


@SETTINGS
@given(workloads(), flavour_configs())
def test_bulk_matches_pass_by_pass_per_flavour(reqs, cfg) -> None:
    runs = [run(reqs, exact=exact, check=False, **cfg) for exact in (False, True)]
    assert_same_records(runs[0].metrics.columns(), runs[1].metrics.columns())
    assert_same_summary(runs[0].summary, runs[1].summary)


def _stretches_with_waiting(sim: Simulation) -> list[int]:
    """Instrument ``sim``'s engines: the lengths of the bulk stretches started while
    requests waited (the instance attribute shadows the class method)."""
    seen: list[int] = []
    for w in sim.workers:
        eng = w.engine
        def start(now, k, eng=eng, orig=eng.start_stretch):
            if eng.waiting:
                seen.append(k)
            return orig(now, k)
        eng.start_stretch = start
    return seen


@pytest.mark.parametrize("page, conservativeness, clip", [(1, 1.0, 4096), (16, 1.3, 4096),
                                                           (1, 0.5, 300), (4, 1.0, 1000)])
def test_sglang_bulk_while_admission_is_shut(page, conservativeness, clip) -> None:
    """Requests wait while the new-token-ratio budget keeps them out; the ratio decays pass by
    pass until the head fits. Those decode passes run as bulk stretches that end exactly at
    the first pass that admits, so records equal pass-by-pass stepping (``--exact-steps``),
    and the stretches with requests waiting do happen (the test fails without them)."""
    reqs = [req(i, 0.0 if i < 6 else 40.0 * i, 500 + 37 * i, 1500 - 60 * i) for i in range(12)]
    cfg = dict(backend="sglang", block_size=page, num_gpu_blocks=6000 // page,
               schedule_conservativeness=conservativeness, clip_max_new_tokens=clip)
    out = []
    for exact in (False, True):
        sim = Simulation(ListWorkload(reqs), engine=EngineConfig(**cfg), timing=PolynomialTiming(),
                         cluster=ClusterConfig(num_workers=1), router="round_robin", seed=0,
                         exact=exact, check_invariants=True)
        seen = _stretches_with_waiting(sim)
        out.append((sim.run(), seen))
    (bulk, seen), (exact, seen_exact) = out
    assert seen and max(seen) > 10 and not seen_exact
    assert_same_records(bulk.metrics.columns(), exact.metrics.columns())
    assert_same_summary(bulk.summary, exact.summary)


# -- compiled vs pure Python, per flavour ----------------------------------------------------

RUN = r'''
import hashlib, json, sys
import numpy as np
from sim.engine import EngineConfig
from sim.simulator import ClusterConfig, Simulation
from sim.timing import PolynomialTiming
from sim.workloads import lognormal, poisson, synthetic
out = {"engine_file": __import__("sim.engines.base").engines.base.__file__}
for backend, bs, nb in (("sglang", 1, 60000), ("trtllm", 32, 1500)):
    for router in ("round_robin", "kv"):
        wl = synthetic(np.random.default_rng(4), arrival=poisson(5.0), isl=lognormal(3000, 0.9, 20000),
                       osl=lognormal(150, 0.8, 600), num_requests=150, num_prefix_groups=4,
                       shared_prefix_blocks=3)
        eng = EngineConfig(backend=backend, block_size=bs, num_gpu_blocks=nb)
        res = Simulation(wl, engine=eng, timing=PolynomialTiming(), cluster=ClusterConfig(num_workers=3),
                         router=router, seed=2, max_sim_time_ms=40000.0).run()
        cols = {k: v.tobytes().hex() for k, v in res.metrics.columns().items()}
        out[backend + router] = hashlib.sha256(json.dumps([res.summary, cols], sort_keys=True,
                                                default=str).encode()).hexdigest()
print(json.dumps(out))
'''


def test_compiled_and_pure_python_identical_per_flavour(tmp_path) -> None:
    import test_compiled as tc
    if not tc._compiled("sim.engines.base"):
        pytest.skip("the simulator is not compiled here: nothing to compare")
    pure = tc.pure_copy(tmp_path)
    outs = []
    for root in (REPO, pure):
        p = subprocess.run([sys.executable, "-c", RUN], capture_output=True, text=True,
                           cwd=str(root), env={"PYTHONPATH": str(root), "PATH": ""}, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        outs.append(__import__("json").loads(p.stdout.strip().splitlines()[-1]))
    assert outs[0].pop("engine_file").endswith(tc.EXT_SUFFIXES)
    assert outs[1].pop("engine_file").endswith(".py")
    assert outs[0] == outs[1]


@pytest.mark.parametrize("args, flag", [
    (["--schedule-policy", "lpm"], "--schedule-policy"),
    (["--backend", "trtllm", "--chunked-prefill-size", "10"], "--chunked-prefill-size"),
    (["--backend", "tgi"], "--backend"),
    (["--backend", "sglang", "--block-size", "0"], "--block-size"),
    # the vLLM-style cores' knobs are not SGLang's (nor preemption TRT-LLM's)
    (["--backend", "sglang", "--max-num-batched-tokens", "100"], "--max-num-batched-tokens"),
    (["--backend", "sglang", "--no-chunked-prefill"], "--no-chunked-prefill"),
    (["--backend", "sglang", "--preemption-mode", "fifo"], "--preemption-mode"),
    (["--backend", "trtllm", "--preemption-mode", "fifo"], "--preemption-mode"),
])
def test_flavour_flags_bad_input_is_one_line_exit_2(args, flag, capsys) -> None:
    from dynosim.cli import main
    trace = str(REPO / "sim" / "data" / "conversation_trace.jsonl")
    assert main(["simulate", "--trace", trace, "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err and "Traceback" not in err


def test_yaml_backend_sets_the_block_size_default(tmp_path) -> None:
    from sim.config import load_config
    from sim.errors import InputError
    p = tmp_path / "run.yaml"
    p.write_text("workload: {kind: mooncake, path: bundled:mooncake_conversation}\n"
                 "engine: {backend: sglang, schedule_policy: lpm}\n")
    cfg = load_config(p)
    assert (cfg.engine.block_size, cfg.engine.engine_config().schedule_policy) == (1, "lpm")
    over = load_config(p).with_overrides({"engine.block_size": 16})
    assert over.engine.block_size == 16 and over.engine.backend == "sglang"
    with pytest.raises(InputError):                 # the YAML's lpm is not TRT-LLM's
        load_config(p).with_overrides({"engine.backend": "trtllm"})
    p.write_text("workload: {kind: mooncake, path: bundled:mooncake_conversation}\n"
                 "engine: {backend: sglang, preemption_mode: fifo}\n")
    with pytest.raises(InputError) as e:            # vLLM's knob given to the SGLang core
        load_config(p)
    assert e.value.field == "engine.preemption_mode"
    p.write_text("workload: {kind: mooncake, path: bundled:mooncake_conversation}\n")
    assert load_config(p).with_overrides({"engine.backend": "trtllm"}).engine.block_size == 32
    p.write_text("workload: {kind: mooncake, path: bundled:mooncake_conversation}\n"
                 "engine: {backend: vllm, max_prefill_tokens: 4096}\n")
    with pytest.raises(InputError) as info:
        load_config(p)
    assert info.value.field == "engine.max_prefill_tokens" and info.value.line == 2


@given(st.integers(1, 64).flatmap(lambda bs: st.tuples(
    st.just(bs), st.lists(st.integers(0, bs - 1), max_size=40), st.integers(0, 400))))
def test_stretch_allocations_from_phase_prefix(case) -> None:
    """The KV router's view of a stretch's evictions counts the blocks allocated by the
    first k passes from the phases' prefix sum; it must equal the per-sequence count the
    stretch plan and the allocation use."""
    from sim.engines.vllm import _allocations, _allocations_from_prefix, _phase_prefix
    bs, phases, k = case
    assert _allocations_from_prefix(_phase_prefix(phases, bs), k, bs) == \
        _allocations(phases, k, bs)


def test_sglang_stretch_inserts_pages_in_pass_order() -> None:
    """A bulk stretch inserts the running requests' filled pages in the order pass-by-pass
    stepping last inserts them: that order stamps their paths' LRU recency, which decides
    which unlocked path is evicted first after a retraction (hypothesis found a 16-token
    difference in a retracted request's reused prefix when the stretch inserted in running
    order)."""
    outs, ins = {0: 191, 5: 49, 6: 143}, {0: 98}
    reqs = [Request(index=i, arrival_ms=0.0, input_length=ins.get(i, 1),
                    output_length=outs.get(i, 1),
                    hash_ids=tuple(1000000 + 1000 * i + k for k in range(7 if i == 0 else 1)),
                    trace_block_size=16) for i in range(14)]
    cfg = dict(backend="sglang", max_num_seqs=2, block_size=16, num_gpu_blocks=27,
               chunked_prefill_size=256, max_prefill_tokens=1024)
    bulk, exact = (run(reqs, exact=e, check=False, **cfg) for e in (False, True))
    assert int(cols(exact)["num_preemptions"][6]) == 1      # the retraction happens
    assert_same_records(bulk.metrics.columns(), exact.metrics.columns())
    assert_same_summary(bulk.summary, exact.summary)

"""Bulk advance (exact=False) must be indistinguishable from pass-by-pass stepping (exact=True).

The bulk path runs whole decode-only stretches in one numpy call; it is the main performance
feature of the core, so every trace/config here checks that it changes nothing: per-request
records (first/second/last token, reuse, worker, status, ...) equal, times within 1e-9
relative, and the same summary. Each case also checks that the bulk run really took the bulk
path (``start_stretch`` called) and, for the preemption-heavy configs, that preemptions
actually happened.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

from conftest import CONVERSATION_TRACE, load_mooncake, req, simulate
from sim.timing import FixedTiming, PolynomialTiming, TimingModel
from sim.workloads import gamma, lognormal, poisson, synthetic, uniform

REL = 1e-9
TIME_COLS = ("arrival_time_ms", "first_admit_ms", "first_token_ms", "second_token_ms",
             "last_token_ms")
EXACT_COLS = ("request_index", "input_length", "output_length", "requested_output_length",
              "reused_input_tokens", "worker", "status", "num_preemptions", "reason")


class GenericTiming(TimingModel):
    """Dynamo's polynomial model behind a class the bulk path does not recognise, so stretches
    go through the generic per-pass fallback of ``decode_ms_series``."""

    def __init__(self) -> None:
        self._p = PolynomialTiming()

    def prefill_ms(self, new_tokens, cached_tokens=0, num_seqs=1):
        return self._p.prefill_ms(new_tokens, cached_tokens, num_seqs)

    def decode_ms(self, batch_size, active_kv_tokens, total_kv_tokens=0, capacity_tokens=1):
        return self._p.decode_ms(batch_size, active_kv_tokens, total_kv_tokens,
                                 capacity_tokens)

    def describe(self):
        return "polynomial-generic"


# -- workloads --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mooncake400(tmp_path_factory):
    if not CONVERSATION_TRACE.is_file():
        pytest.skip("the bundled conversation trace is missing")
    path = tmp_path_factory.mktemp("trace") / "conversation_400.jsonl"
    with open(CONVERSATION_TRACE) as src:
        path.write_text("".join(itertools.islice(src, 400)))
    return path


def _synthetic(kind: str):
    rng = np.random.default_rng(11)
    if kind == "poisson":
        return synthetic(rng, arrival=poisson(8.0), isl=lognormal(3000, 0.8, 30000),
                         osl=lognormal(150, 0.8, 1500), num_requests=400)
    if kind == "gamma":          # bursty: gap CV 4
        return synthetic(rng, arrival=gamma(10.0, 4.0), isl=lognormal(2000, 1.0, 30000),
                         osl=lognormal(200, 1.0, 2000), num_requests=400)
    if kind == "prefix":         # 4 groups sharing 70% of the prompt
        return synthetic(rng, arrival=poisson(10.0), isl=uniform(500, 6000),
                         osl=lognormal(100, 1.0, 1000), num_requests=400,
                         num_prefix_groups=4, shared_prefix_ratio=0.7)
    if kind == "sessions":       # closed-loop turns released by completions
        return synthetic(rng, arrival=poisson(3.0), isl=uniform(200, 2000),
                         osl=uniform(10, 300), num_requests=80, turns_per_session=3,
                         inter_turn_delay_ms=500.0, num_prefix_groups=2,
                         shared_prefix_blocks=2)
    raise ValueError(kind)


# name -> (workload kind, config, expect preemptions)
CASES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "mooncake-rr8-b512": ("mooncake", dict(num_workers=8, block_size=512), False),
    "mooncake-rr4-b64-nb4096": ("mooncake", dict(num_workers=4, num_gpu_blocks=4096), False),
    "mooncake-kv4-b64-nb4096": ("mooncake", dict(num_workers=4, num_gpu_blocks=4096,
                                                 router="kv"), False),
    "mooncake-rr2-b16-preempt": ("mooncake", dict(num_workers=2, block_size=16,
                                                  num_gpu_blocks=8000), True),
    "mooncake-kv2-b32-preempt-reject": ("mooncake", dict(num_workers=2, block_size=32,
                                                         num_gpu_blocks=3000, router="kv"),
                                        True),
    "poisson-rr2": ("poisson", dict(num_workers=2), False),
    "poisson-rr1-fixed": ("poisson", dict(num_workers=1, timing=FixedTiming(10.0, 5.0),
                                          max_num_seqs=8), False),
    "gamma-rr3-b16-preempt": ("gamma", dict(num_workers=3, block_size=16, num_gpu_blocks=1500,
                                            max_num_batched_tokens=2048), True),
    "gamma-rr2-fixed-preempt": ("gamma", dict(num_workers=2, block_size=16,
                                              num_gpu_blocks=1500,
                                              timing=FixedTiming(10.0, 5.0)), True),
    "gamma-rr2-generic-timing-preempt": ("gamma", dict(num_workers=2, block_size=16,
                                                       num_gpu_blocks=1500,
                                                       timing=GenericTiming()), True),
    "prefix-kv3": ("prefix", dict(num_workers=3, router="kv", block_size=32,
                                  num_gpu_blocks=3000), False),
    "prefix-kv2-preempt": ("prefix", dict(num_workers=2, router="kv", block_size=16,
                                          num_gpu_blocks=1200, max_num_seqs=32,
                                          max_num_batched_tokens=1024), True),
    "prefix-least-loaded-4-b4": ("prefix", dict(num_workers=4, router="least_loaded",
                                                block_size=4, num_gpu_blocks=50_000), False),
    "sessions-rr2-b8-preempt": ("sessions", dict(num_workers=2, block_size=8,
                                                 num_gpu_blocks=800,
                                                 max_num_batched_tokens=512,
                                                 max_num_seqs=16), True),
}


# -- comparison ---------------------------------------------------------------------------------

def _same_time(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    both_nan = np.isnan(a) & np.isnan(b)
    close = np.abs(a - b) <= REL * np.maximum(np.abs(a), np.abs(b))
    return both_nan | close


def assert_same_records(bulk: dict, exact: dict) -> None:
    assert len(bulk["request_index"]) == len(exact["request_index"])
    for key in EXACT_COLS:
        bad = np.flatnonzero(bulk[key] != exact[key])
        assert len(bad) == 0, (key, [(int(exact["request_index"][i]), bulk[key][i],
                                      exact[key][i]) for i in bad[:5]])
    for key in TIME_COLS:
        bad = np.flatnonzero(~_same_time(bulk[key], exact[key]))
        assert len(bad) == 0, (key, [(int(exact["request_index"][i]), bulk[key][i],
                                      exact[key][i]) for i in bad[:5]])


def assert_same_summary(a: Any, b: Any, path: str = "summary") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, sorted(set(a) ^ set(b)))
        for k in a:
            assert_same_summary(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, float) or isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return
        assert abs(a - b) <= REL * max(abs(a), abs(b)), (path, a, b)
    else:
        assert a == b, (path, a, b)


def stretches(res) -> int:
    """Bulk decode stretches the run started (every worker, retired ones included)."""
    return sum(w.engine.num_stretches for w in res.workers)


def _workload(kind: str, mooncake400):
    return load_mooncake(mooncake400) if kind == "mooncake" else _synthetic(kind)


@pytest.mark.parametrize("case", list(CASES))
def test_bulk_matches_pass_by_pass(case: str, request) -> None:
    kind, cfg, preempting = CASES[case]
    moon = request.getfixturevalue("mooncake400") if kind == "mooncake" else None
    runs = {}
    for exact in (False, True):
        res = simulate(_workload(kind, moon), exact=exact, check_invariants=False, seed=5,
                       **cfg)
        runs[exact] = (res, stretches(res))
    (bulk, n_stretch), (ref, n_stretch_exact) = runs[False], runs[True]
    assert n_stretch > 0, "bulk run never advanced a stretch: the test would be vacuous"
    assert n_stretch_exact == 0
    cb, ce = bulk.metrics.columns(), ref.metrics.columns()
    assert_same_records(cb, ce)
    assert_same_summary(bulk.summary, ref.summary)
    totals = ref.summary["totals"]
    assert totals["completed_requests"] > 0
    assert totals["in_flight_requests"] == 0
    if preempting:
        assert ref.summary["engine"]["preemptions"] > 0
        assert int(ce["num_preemptions"].sum()) > 0


def test_bulk_matches_with_invariant_checks() -> None:
    """One small preempting case with the per-timestamp invariant checks on in both modes."""
    rng = np.random.default_rng(2)
    wl = synthetic(rng, arrival=gamma(20.0, 3.0), isl=uniform(50, 1500), osl=uniform(1, 400),
                   num_requests=60, num_prefix_groups=3, shared_prefix_blocks=1,
                   trace_block_size=256)
    cfg = dict(num_workers=2, block_size=16, num_gpu_blocks=200, max_num_batched_tokens=512,
               max_num_seqs=12, router="kv")
    bulk = simulate(wl, exact=False, check_invariants=True, **cfg)
    assert stretches(bulk) > 0
    ref = simulate(wl, exact=True, check_invariants=True, **cfg)
    assert ref.summary["engine"]["preemptions"] > 0
    assert_same_records(bulk.metrics.columns(), ref.metrics.columns())
    assert_same_summary(bulk.summary, ref.summary)


def test_arrival_splits_a_stretch() -> None:
    """An arrival during a long decode stretch joins the pass starting at the first pass end
    at or after it (rule 5), exactly as when stepping pass by pass."""
    # Arrivals at 0, 7.3, 29.2, ...: some land mid-stretch, and with fixed timing (passes
    # end on multiples of 5 ms) some land exactly on a pass end.
    reqs = [req(0, 0, 100, 500, [0])] + [req(i, 7.3 * i * i, 64 * i + 1, 20 + i)
                                         for i in range(1, 12)]
    reqs += [req(12, 400.0, 50, 30), req(13, 1000.0, 50, 3)]
    for timing in (PolynomialTiming(), FixedTiming(10.0, 5.0)):
        bulk = simulate(reqs, exact=False, timing=timing)
        assert sum(w.engine.num_stretch_cuts for w in bulk.workers) > 0
        ref = simulate(reqs, exact=True, timing=timing)
        assert_same_records(bulk.metrics.columns(), ref.metrics.columns())
        assert_same_summary(bulk.summary, ref.summary)


@pytest.mark.parametrize("cap", [45.0, 70.0, 72.5])
def test_cut_off_records_match(cap: float) -> None:
    """At a max_sim_time_ms cut-off the passes of a running stretch that ended by the cap
    count, as when stepping (replay_examples/cap.jsonl, 2 workers, fixed:10,5): at cap 70
    request 2 (arrival 40) has tokens at 55, 60, 65 and 70 in both modes. (Was a bug: bulk
    dropped the stretch and reported last_token 65.)"""
    reqs = [req(i, 20.0 * i, 100, 10, [i + 1]) for i in range(4)]
    kw = dict(timing=FixedTiming(10.0, 5.0), num_workers=2, max_sim_time_ms=cap)
    bulk = simulate(reqs, exact=False, **kw)
    ref = simulate(reqs, exact=True, **kw)
    assert_same_records(bulk.metrics.columns(), ref.metrics.columns())
    if cap == 70.0:
        c = bulk.metrics.columns()
        assert float(c["last_token_ms"][2]) == 70.0 and int(c["output_length"][2]) == 4


# -- random small workloads ---------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from test_invariants import EXAMPLES as _N_EXAMPLES, configs, workloads  # noqa: E402


@settings(max_examples=max(20, _N_EXAMPLES // 2), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), configs())
def test_bulk_matches_pass_by_pass_on_random_workloads(wl, cfg) -> None:
    reqs, _ = wl
    cfg.pop("exact")
    bulk = simulate(reqs, exact=False, **cfg)
    ref = simulate(reqs, exact=True, **cfg)
    assert_same_records(bulk.metrics.columns(), ref.metrics.columns())
    assert_same_summary(bulk.summary, ref.summary)


def test_forward_pass_metrics_aggregate_exactly_under_bulk_advance() -> None:
    """Planners read interval differences of per-worker FPM totals; bulk advance must give
    the same totals as pass-by-pass stepping, also when sampled in the middle of a stretch."""
    from sim.engine import EngineConfig
    from sim.simulator import ClusterConfig, Simulation
    from sim.timing import PolynomialTiming
    from sim.workloads import lognormal, poisson, synthetic

    def run(exact: bool):
        wl = synthetic(np.random.default_rng(5), arrival=poisson(3.0),
                       isl=lognormal(2000, 0.8, max_value=8000), osl=lognormal(200, 0.6),
                       num_requests=300, num_prefix_groups=4, shared_prefix_blocks=2)
        sim = Simulation(wl, engine=EngineConfig(block_size=64, num_gpu_blocks=1500),
                         timing=PolynomialTiming(), cluster=ClusterConfig(num_workers=2),
                         exact=exact)
        samples = []
        for t in np.arange(5000.0, 120000.0, 3333.3):
            sim.run_until(float(t))
            samples.append([w.engine.fpm_totals(float(t)).as_dict() for w in sim.workers])
        sim.run()
        return samples, [w.engine.tot.as_dict() for w in sim.workers], sim

    bulk, bulk_final, sim_b = run(False)
    exact, exact_final, _ = run(True)
    assert sum(w.engine.num_passes for w in sim_b.workers) > 1000
    for got, want in zip(bulk + [bulk_final], exact + [exact_final], strict=True):
        for g, w in zip(got, want, strict=True):
            assert g.keys() == w.keys()
            for k in g:
                assert g[k] == pytest.approx(w[k], rel=1e-12, abs=1e-9), k


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dt=st.floats(0.3, 9.0), case=st.sampled_from(["prefix-kv2-preempt",
                                                      "mooncake-kv2-b32-preempt-reject"]))
def test_stretch_evictions_until_matches_the_pass_end_search(dt, case, mooncake400) -> None:
    """A KV-router look-up mid-stretch publishes the evictions of the passes that have
    ended. ``stretch_evictions_until`` skips the pass-end search while ``t`` is before the
    first pass that evicts past what was published (``_evict_next_t``); at every ``dt`` ms
    its answer must equal that search's (passes ended by ``t``, their allocations less the
    free blocks at the start, less what was published)."""
    from sim.engine import EngineConfig
    from sim.engines.vllm import _allocations_from_prefix
    from sim.simulator import ClusterConfig, Simulation
    kind, cfg, _ = CASES[case]
    cfg = dict(cfg)
    eng_cfg = EngineConfig(block_size=cfg.pop("block_size"),
                           num_gpu_blocks=cfg.pop("num_gpu_blocks"),
                           max_num_seqs=cfg.pop("max_num_seqs", 256),
                           max_num_batched_tokens=cfg.pop("max_num_batched_tokens", 8192))
    sim = Simulation(_workload(kind, mooncake400), engine=eng_cfg, timing=PolynomialTiming(),
                     cluster=ClusterConfig(num_workers=cfg.pop("num_workers")),
                     router=cfg.pop("router"), seed=5)
    checked = published = 0
    t = 0.0
    while sim.run_until(t) and t < 60_000.0:
        for w in sim.workers:
            eng = w.engine
            pre, ends = eng._evict_pre, eng.stretch_ends
            if pre is None or ends is None:
                continue
            j = int(ends.searchsorted(t, "right"))
            upto = (_allocations_from_prefix(pre, min(j, eng._evict_k), eng.bs)
                    - eng._evict_free0)
            start = eng._evict_published
            want = eng.kv.evicted_keys_ahead(start, upto) if j and upto > start else []
            got = eng.stretch_evictions_until(t)
            assert got == want, (case, t, w.id)
            checked += 1
            if got:
                published += 1
                sim.router.publish_removed(eng, got)
        t += dt
    assert checked > 0 and published > 0, "no stretch with evictions: the test is vacuous"

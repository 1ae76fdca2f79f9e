"""Metric definitions (replay_semantics.md §5): nearest-rank percentiles with round-half-up,
population std, token-weighted ITL mean, and DDSketch quantiles for the token-gap
distributions, checked against straightforward reference implementations."""
from __future__ import annotations

import math
import statistics
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest

from conftest import req, simulate
from sim.metrics import (STATUS_COMPLETED, STATUS_REJECTED, GapSketch, MetricsCollector,
                         describe, nearest_rank)
from sim.timing import FixedTiming

QUANTILES = {"median": 0.5, "p75": 0.75, "p90": 0.9, "p95": 0.95, "p99": 0.99}


# -- reference implementations (independent of sim.metrics) ----------------------------------

def ref_rank(n: int, q: float) -> int:
    """Round half away from zero (Rust's f64::round), via Decimal of the exact float."""
    return int(Decimal(q * (n - 1)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def ref_describe(values) -> dict[str, float]:
    v = sorted(float(x) for x in values)
    n = len(v)
    out = {"mean": math.fsum(v) / n, "min": v[0], "max": v[-1],
           "std": statistics.pstdev(v)}
    for name, q in QUANTILES.items():
        out[name] = v[ref_rank(n, q)]
    return out


# The collector's DDSketch quantile (aisimulate 0.13.0 + ddsketchy 0.1.7, alpha 0.001), as in
# /work/notes/replay_examples/ddsketch_percentile.py.
_A = 0.001
_G = 1 + 2 * _A / (1 - _A)
_GLN = math.log1p(2 * _A / (1 - _A))
_INV = 1 / _GLN


def ref_dd_percentile(values, pct: float) -> float:
    n = len(values)
    if n == 0:
        return 0.0
    span = n - 1
    x = span * pct / 100.0
    r = math.floor(x + 0.5)                      # round half away from zero (x >= 0)
    q = 1.0 if (span == 0 or r >= span) else (r + 0.5) / span
    if n == 1:
        return float(values[0])
    rank = int(q * (n - 1))
    min_indexable = max(math.exp((-2 ** 31) / _INV + 1.0), 2.2250738585072014e-308 * _G)
    zeros = sum(1 for v in values if v < min_indexable)
    if rank < zeros:
        return 0.0
    keys = sorted(math.ceil(math.log(v) * _INV) for v in values if v >= min_indexable)
    k = keys[rank - zeros]
    return math.exp(k * _GLN) * (2.0 / (1.0 + _G))


# -- nearest-rank percentiles ------------------------------------------------------------------

def test_p75_at_12031_uses_index_9023() -> None:
    v = np.arange(12031, dtype=float)
    assert 0.75 * 12030 == 9022.5 and round(9022.5) == 9022       # banker's rounding differs
    assert nearest_rank(v, 0.75) == 9023.0
    assert describe(v)["p75"] == 9023.0
    assert describe(v[::-1].copy())["p75"] == 9023.0               # describe sorts


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 10, 11, 21, 101, 201, 1000, 12031])
def test_nearest_rank_matches_reference(n: int) -> None:
    rng = np.random.default_rng(n)
    v = rng.lognormal(3.0, 1.0, size=n)
    got = describe(v)
    want = ref_describe(v)
    for stat in ("min", "max", *QUANTILES):
        assert got[stat] == want[stat], stat
    assert got["mean"] == pytest.approx(want["mean"], rel=1e-12)
    assert got["std"] == pytest.approx(want["std"], rel=1e-9, abs=1e-12)


def test_half_ranks_round_up() -> None:
    # n = 3: median rank 1.0; n = 4: median rank 1.5 -> 2; p90 at n = 6: 4.5 -> 5
    assert describe([10.0, 20.0, 30.0, 40.0])["median"] == 30.0
    assert describe([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])["p90"] == 6.0
    assert describe([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])["median"] == 4.0     # 2.5 -> 3


def test_population_std() -> None:
    d = describe([1.0, 2.0, 3.0, 4.0])
    assert d["std"] == pytest.approx(math.sqrt(1.25), rel=1e-15)
    assert d["std"] != pytest.approx(statistics.stdev([1.0, 2.0, 3.0, 4.0]), rel=1e-3)
    assert describe([7.0])["std"] == 0.0


def test_empty_distribution_is_all_zero() -> None:
    assert describe(np.zeros(0)) == {k: 0.0 for k in
                                     ("mean", "min", "max", "median", "p75", "p90", "p95",
                                      "p99", "std")}
    assert all(v == 0.0 for v in GapSketch().describe().values())


# -- DDSketch ------------------------------------------------------------------------------------

def _sketch(values, how: str) -> GapSketch:
    g = GapSketch()
    if how == "add":
        for v in values:
            g.add(float(v), 1)
    elif how == "add_counts":                        # equal values folded into counts
        vals, counts = np.unique(np.asarray(values), return_counts=True)
        for v, c in zip(vals.tolist(), counts.tolist()):
            g.add(v, c)
    else:                                            # several arrays, one count each
        arr = np.asarray(values, dtype=float)
        for part in np.array_split(arr, 7):
            g.add_array(part, 1)
    return g


def _data(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "lognormal":
        return rng.lognormal(2.0, 1.5, size=n)
    if kind == "wide":                               # 1e-4 .. 1e6 ms
        return 10.0 ** rng.uniform(-4, 6, size=n)
    if kind == "discrete":                           # few distinct gaps, many ties
        return rng.choice([5.0, 5.745202, 15.0, 25.300150000000002, 100.0], size=n)
    if kind == "with_zeros":
        v = rng.exponential(10.0, size=n)
        v[rng.random(n) < 0.3] = 0.0
        return v
    raise ValueError(kind)


@pytest.mark.parametrize("how", ["add", "add_counts", "add_array"])
@pytest.mark.parametrize("kind", ["lognormal", "wide", "discrete", "with_zeros"])
@pytest.mark.parametrize("n", [2, 3, 4, 10, 257, 5000])
def test_ddsketch_quantiles_match_reference(kind: str, n: int, how: str) -> None:
    values = _data(kind, n, seed=n * 31 + len(kind))
    g = _sketch(values, how)
    vals = values.tolist()
    for name, q in QUANTILES.items():
        assert g.quantile(q) == ref_dd_percentile(vals, q * 100), (name, kind, n)
    d = g.describe()
    assert d["min"] == min(vals) and d["max"] == max(vals)
    assert d["mean"] == pytest.approx(statistics.fmean(vals), rel=1e-12)
    assert d["std"] == pytest.approx(statistics.pstdev(vals), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("value", [5.0, 5.745202, 123.456])
def test_ddsketch_single_sample_is_the_sample(value: float) -> None:
    """Rule 27: with N = 1 the collector reports the sample itself, not its bin's value.
    (Was a bug: 5.0 came out as 4.997811098765266.)"""
    assert ref_dd_percentile([value], 50) == value
    g = GapSketch()
    g.add(value, 1)
    assert [g.quantile(q) for q in QUANTILES.values()] == [value] * len(QUANTILES)


def test_single_gap_run_matches_peer(exact: bool) -> None:
    """Peer (1 worker, block 64, fixed:10,5) on one request isl 100 osl 2: ITL median/p99
    5.0 and per-user median 200.0 (its only gap is 5 ms)."""
    res = simulate([req(0, 0, 100, 2, [0])], exact=exact, timing=FixedTiming(10.0, 5.0))
    assert res.summary["latency_ms"]["itl"]["median"] == 5.0
    assert res.summary["latency_ms"]["itl"]["p99"] == 5.0
    assert res.summary["output_token_throughput_per_user"]["median"] == 200.0


def test_ddsketch_t3_gaps() -> None:
    """t3: 2 gaps of 15 ms and 11 of 5 ms -> median 4.997811098765266, p90 15.01425980224389
    (the peer's numbers, bit for bit)."""
    gaps = [15.0] * 2 + [5.0] * 11
    assert ref_dd_percentile(gaps, 50) == 4.997811098765266
    assert ref_dd_percentile(gaps, 90) == 15.01425980224389
    for how in ("add", "add_counts", "add_array"):
        g = _sketch(gaps, how)
        assert g.quantile(0.5) == 4.997811098765266, how
        assert g.quantile(0.9) == 15.01425980224389, how
        assert g.describe()["mean"] == pytest.approx(85 / 13, rel=1e-15)


def test_add_and_add_array_agree() -> None:
    rng = np.random.default_rng(7)
    runs = [(rng.lognormal(2, 1, size=int(rng.integers(1, 300))), int(rng.integers(1, 9)))
            for _ in range(200)]
    a, b = GapSketch(), GapSketch()
    for arr, count in runs:
        for v in arr.tolist():
            a.add(v, count)
        b.add_array(arr, count)
    b._flush()
    assert a.n == sum(len(x) * c for x, c in runs)
    assert_same_sketch(b, a)


def assert_same_sketch(got: GapSketch, want: GapSketch) -> None:
    """Same samples: counts and bins exactly, min/max/quantiles exactly, moments to rounding."""
    assert got.n == want.n and got.zeros == want.zeros
    assert np.array_equal(got.bins, want.bins)
    dg, dw = got.describe(), want.describe()
    for stat in ("min", "max", *QUANTILES):
        assert dg[stat] == dw[stat], stat
    assert dg["mean"] == pytest.approx(dw["mean"], rel=1e-12)
    assert dg["std"] == pytest.approx(dw["std"], rel=1e-9)


def test_add_array_flushes_large_batches_and_merges() -> None:
    """More than 2**18 pending samples trigger a flush; merging equals one sketch."""
    rng = np.random.default_rng(3)
    big = rng.lognormal(1, 1, size=(1 << 18) + 10)
    small = rng.lognormal(1, 1, size=1000)
    one = GapSketch()
    one.add_array(big, 2)
    assert one._pending_size == 0                    # flushed on the way in
    one.add_array(small, 1)
    left, right = GapSketch(), GapSketch()
    left.add_array(big, 2)
    for v in small.tolist():
        right.add(v, 1)
    left.merge(right)
    for stat, v in one.describe().items():
        assert left.describe()[stat] == pytest.approx(v, rel=1e-12), stat
    assert one.n == 2 * len(big) + len(small)


def test_per_user_throughput_uses_positive_gaps() -> None:
    m = MetricsCollector()
    m.add_gap(5.0, 11)
    m.add_gap(15.0, 2)
    m.add_gap(0.0, 4)                                # zero gap: in ITL, not in per-user
    m.add_gap_array(np.array([0.0, 10.0]), 3)
    m.itl.describe(), m.per_user.describe()          # flush pending arrays
    assert m.itl.n == 11 + 2 + 4 + 6
    assert m.itl.zeros == 4 + 3
    assert m.itl.quantile(0.0) == 0.0
    assert m.per_user.n == 11 + 2 + 3
    vals = [200.0] * 11 + [1000 / 15] * 2 + [100.0] * 3
    d = m.per_user.describe()
    assert d["mean"] == pytest.approx(statistics.fmean(vals), rel=1e-12)
    assert d["min"] == pytest.approx(1000 / 15) and d["max"] == 200.0
    for name, q in QUANTILES.items():
        assert m.per_user.quantile(q) == ref_dd_percentile(vals, q * 100), name


@pytest.mark.parametrize("how", ["add", "add_array", "merge"])
def test_gap_std_of_constant_stream_is_zero(how: str) -> None:
    """The peer's Welford std of a constant gap stream is 0. (Was a bug: sqrt(E[x^2] - m^2)
    cancelled to ~3e-5 ms for 100k gaps of 26.08 ms.)"""
    v = 26.080460655172413
    g = GapSketch()
    if how == "add":
        for _ in range(100_000):
            g.add(v, 1)
    elif how == "add_array":
        for _ in range(10):
            g.add_array(np.full(10_000, v), 1)
    else:
        other = GapSketch()
        g.add(v, 60_000)
        other.add_array(np.full(40_000, v), 1)
        g.merge(other)
    assert g.describe()["std"] == pytest.approx(0.0, abs=1e-9)


def test_gap_std_with_tiny_spread() -> None:
    """Nearly constant gaps (decode steps differing by nanoseconds) keep an accurate std."""
    rng = np.random.default_rng(5)
    vals = 5.745202 + rng.integers(0, 5, size=50_000) * 1e-6
    a, b = GapSketch(), GapSketch()
    a.add_array(vals, 1)
    for v in vals.tolist():
        b.add(v, 1)
    assert a.describe()["std"] == pytest.approx(float(np.std(vals)), rel=1e-9)
    assert b.describe()["std"] == pytest.approx(float(np.std(vals)), rel=1e-9)


# -- summary definitions on a real run ---------------------------------------------------------

def test_itl_mean_is_token_weighted(exact: bool) -> None:
    """ITL mean = sum(last - first) / sum(n - 1) over completed requests (= the mean of every
    individual gap), not the mean of per-request TPOT."""
    reqs = [req(0, 0, 100, 2), req(1, 0, 120, 30), req(2, 3, 80, 7), req(3, 40, 300, 1),
            req(4, 41, 50, 12)]
    res = simulate(reqs, exact=exact, timing=FixedTiming(10.0, 5.0), num_workers=2)
    c = res.metrics.columns()
    n = c["output_length"].astype(float)
    span = c["last_token_ms"] - c["first_token_ms"]
    multi = n > 1
    weighted = span[multi].sum() / (n[multi] - 1).sum()
    tpot_mean = (span[multi] / (n[multi] - 1)).mean()
    lat = res.summary["latency_ms"]
    assert lat["itl"]["mean"] == pytest.approx(weighted, rel=1e-12)
    assert lat["tpot"]["mean"] == pytest.approx(tpot_mean, rel=1e-12)
    assert weighted != pytest.approx(tpot_mean, rel=1e-3)      # the example discriminates
    assert res.metrics.itl.n == int((n[multi] - 1).sum())
    assert res.metrics.itl.total / res.metrics.itl.n == pytest.approx(weighted, rel=1e-12)


def test_summary_definitions_on_handmade_records() -> None:
    m = MetricsCollector()
    # index, arrival, admit, first, second, last, isl, out, requested, reused, worker, status
    m.record(0, 0.0, 0.0, 10.0, 15.0, 30.0, 100, 5, 5, 64, 0, STATUS_COMPLETED)
    m.record(1, 2.0, 2.0, 14.0, math.nan, 14.0, 200, 1, 1, 0, 1, STATUS_COMPLETED)
    m.record(2, 4.0, math.nan, math.nan, math.nan, math.nan, 9000, 0, 3, 0, 0,
             STATUS_REJECTED, 0, 1)
    m.record(3, 5.0, 6.0, 20.0, 28.0, 40.0, 300, 3, 3, 128, 1, STATUS_COMPLETED)
    s = m.summary(num_requests=4, provisioned_worker_seconds=0.08)
    t, lat = s["totals"], s["latency_ms"]
    assert (t["completed_requests"], t["rejected_requests"], t["in_flight_requests"]) == (3, 1, 0)
    assert t["duration_ms"] == 40.0
    assert t["total_input_tokens"] == 600 and t["total_output_tokens"] == 9
    assert t["request_throughput_rps"] == pytest.approx(3 / 0.04)
    assert t["input_throughput_tok_s"] == pytest.approx(600 / 0.04)
    assert t["output_throughput_tok_s"] == pytest.approx(9 / 0.04)
    assert t["total_throughput_tok_s"] == pytest.approx(609 / 0.04)
    assert t["prefix_cache_reused_ratio"] == pytest.approx(192 / 600)
    assert t["num_ttft_samples"] == 3 and t["num_tpot_samples"] == 2
    assert t["gpu_hours"] == pytest.approx(0.08 / 3600)
    assert t["rejected_by_reason"] == {"prompt_exceeds_kv_capacity": 1}
    ref = ref_describe([10.0, 12.0, 15.0])
    for k, v in ref.items():
        assert lat["ttft"][k] == pytest.approx(v, rel=1e-12), k
    assert lat["ttst"]["mean"] == pytest.approx((5.0 + 8.0) / 2)
    assert lat["tpot"]["mean"] == pytest.approx((20.0 / 4 + 20.0 / 2) / 2)
    assert lat["e2e_latency"]["max"] == 35.0 and lat["e2e_latency"]["min"] == 12.0


def test_collector_buffers_gaps_exactly() -> None:
    """The collector's hot-path calls (single-pass runs, per-sequence first gaps, a stretch's
    pass end times) buffer gaps; reading a sketch bins them. The result equals adding every
    gap one by one, including across buffer flushes and zero-length gaps."""
    from sim.metrics import MetricsCollector
    rng = np.random.default_rng(11)
    col = MetricsCollector()
    ref_itl, ref_user = GapSketch(), GapSketch()

    def ref(v: float, c: int) -> None:
        ref_itl.add(v, c)
        if v > 0:
            ref_user.add(1000.0 / v, c)

    t = 0.0
    for _ in range(3000):
        kind = rng.integers(3)
        if kind == 0:
            g, c = float(rng.choice([0.0, rng.lognormal(2, 1)])), int(rng.integers(1, 5))
            col.add_gap(g, c)
            ref(g, c)
        elif kind == 1:
            gs = rng.lognormal(2, 1, size=int(rng.integers(1, 6))).tolist()
            col.add_gaps(gs)
            for g in gs:
                ref(g, 1)
        else:
            k, n = int(rng.integers(1, 1500)), int(rng.integers(1, 9))   # > 2**16 in all
            ends = t + np.cumsum(rng.lognormal(2, 0.5, size=k))
            t = float(ends[-1]) + 100.0        # a gap between stretches that must not count
            col.add_pass_ends(ends, n)
            for g in np.diff(ends).tolist():
                ref(g, n)
    assert col._itl.n > 0                      # the buffer flushed at least once on its own
    assert_same_sketch(col.itl, ref_itl)
    assert_same_sketch(col.per_user, ref_user)


def test_token_gaps_off_changes_nothing_but_the_gap_distribution() -> None:
    """``Simulation(token_gaps=False)`` (what the environments use) keeps every per-request
    record and TTFT/TPOT statistic and leaves only the token-gap sketch empty."""
    from sim.engine import EngineConfig
    from sim.simulator import ClusterConfig, Simulation
    from sim.timing import PolynomialTiming
    from sim.workloads import lognormal, poisson, synthetic

    runs = []
    for gaps in (True, False):
        wl = synthetic(np.random.default_rng(5), arrival=poisson(8.0), isl=lognormal(900, 0.8, 6000),
                       osl=lognormal(80, 0.8, 400), num_requests=120, num_prefix_groups=3,
                       shared_prefix_blocks=2)
        res = Simulation(wl, engine=EngineConfig(block_size=16, num_gpu_blocks=600),
                         timing=PolynomialTiming(), cluster=ClusterConfig(num_workers=2),
                         token_gaps=gaps, max_sim_time_ms=9000.0).run()
        runs.append(res)
    on, off = runs
    for key, col in on.metrics.columns().items():
        assert np.array_equal(col, off.metrics.columns()[key], equal_nan=True), key
    assert on.metrics.itl.n > 0 and off.metrics.itl.n == 0
    for stat in ("ttft", "tpot", "e2e_latency"):
        assert on.summary["latency_ms"][stat] == off.summary["latency_ms"][stat]

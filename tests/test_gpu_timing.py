"""GPU timing tables derived from aiconfigurator-core (sim/gpu_timing.py, sim/data/gpu_tables).

The live comparison against AIC runs only where AIC is importable: in this interpreter, or
in the one named by ``DYNOSIM_AIC_PYTHON`` (e.g. /work/aic-venv/bin/python); else it skips.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.engine import EngineConfig
from sim.errors import InputError
from sim.gpu_timing import GpuTableTiming, list_tables, load_gpu_timing
from sim.simulator import ClusterConfig, Simulation
from sim.timing import TimingModel, decode_ms_series, modeled_ms
from sim.workloads import lognormal, poisson, synthetic

from conftest import REPO

EXPECTED = {(m, g, b, tp)
            for m, tps in (("Qwen/Qwen3-32B", (1, 2, 4)), ("meta-llama/Meta-Llama-3.1-8B", (1,)),
                           ("meta-llama/Meta-Llama-3.1-70B", (4,)))
            for tp in tps for g in ("h100_sxm", "h200_sxm") for b in ("vllm", "sglang")}
TABLES = list_tables()
IDS = [f"{e['model'].split('/')[-1]}-{e['gpu']}-{e['backend']}-tp{e['tp']}" for e in TABLES]


def _load(e: dict, **kw) -> GpuTableTiming:
    return load_gpu_timing(e["model"], e["gpu"], e["backend"], e["tp"], **kw)


def test_all_combinations_are_shipped_and_small() -> None:
    assert {(e["model"], e["gpu"], e["backend"], e["tp"]) for e in TABLES} == EXPECTED
    total = sum(os.path.getsize(e["path"]) for e in TABLES)
    assert total < 2_000_000, total


@pytest.mark.parametrize("entry", TABLES, ids=IDS)
def test_table_loads_with_metadata(entry: dict) -> None:
    t = _load(entry)
    assert isinstance(t, TimingModel)
    assert t.decode_depends_on_kv_only is False
    assert t.gpus_per_worker == entry["tp"] == t.tp
    assert t.num_gpu_blocks == entry["num_gpu_blocks"] > 0
    assert t.kv_bytes_per_token == entry["kv_bytes_per_token"] > 0
    assert t.block_size == 64
    assert t.meta["aiconfigurator_core_version"] == "0.12.0"
    assert "aiconfigurator-core 0.12.0" in t.meta["attribution"]
    assert t.meta["backend_version"] == entry["backend_version"] != ""


def test_kv_per_token_follows_the_model_shape() -> None:
    """2 (K,V) x layers x kv_heads x head_dim x 2 bytes (bf16), split over TP ranks."""
    per_model = {"Qwen/Qwen3-32B": 2 * 64 * 8 * 128 * 2,
                 "meta-llama/Meta-Llama-3.1-8B": 2 * 32 * 8 * 128 * 2,
                 "meta-llama/Meta-Llama-3.1-70B": 2 * 80 * 8 * 128 * 2}
    for e in TABLES:
        assert e["kv_bytes_per_token"] * e["tp"] == per_model[e["model"]], e
    # An H200 (141 GB) holds more KV than an H100 (80 GB) for the same deployment.
    by = {(e["model"], e["gpu"], e["backend"], e["tp"]): e["num_gpu_blocks"] for e in TABLES}
    for (m, g, b, tp), blocks in by.items():
        if g == "h100_sxm":
            assert by[(m, "h200_sxm", b, tp)] > blocks


@pytest.mark.parametrize("entry", TABLES, ids=IDS)
def test_times_are_positive_and_monotone(entry: dict) -> None:
    t = _load(entry)
    new = [1, 16, 128, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
    for cached in (0, 4096, 32768):
        p = [t.prefill_ms(x, cached, 1) for x in new]
        assert all(v > 0 for v in p)
        assert p[-1] > 20 * p[0]
        # AIC's GEMM data has steps of a few percent: require growth over each doubling.
        assert all(b >= a * 0.97 for a, b in zip(p, p[1:])), p
        assert all(b > a for a, b in zip(p[::2], p[2::2])), p
    for x in (512, 4096):          # more cached context -> more attention work
        c = [t.prefill_ms(x, cached, 1) for cached in (0, 8192, 32768, 131072)]
        assert all(b > a for a, b in zip(c, c[1:])), c
    assert t.prefill_ms(0, 100, 1) == 0.0
    for ctx in (128, 2048, 32768):
        d = [t.decode_ms(b, b * ctx, b * ctx) for b in (1, 4, 16, 64, 256, 512, 1024)]
        assert all(v > 0 for v in d)
        assert all(b >= a * 0.97 for a, b in zip(d, d[1:])), d
        assert d[-1] > d[0]
    for b in (1, 32, 256):
        d = [t.decode_ms(b, b * c, b * c) for c in (128, 1024, 8192, 32768, 131072)]
        assert all(y >= x * 0.99 for x, y in zip(d, d[1:])), d
        assert d[-1] > d[0]


def test_known_aic_values() -> None:
    """Spot values measured with live AIC (aiconfigurator's live estimates)."""
    t = load_gpu_timing("Qwen/Qwen3-32B", "h100_sxm", "vllm", 2)
    assert t.prefill_ms(512, 0, 1) == pytest.approx(30.09, rel=0.02)
    assert t.prefill_ms(2048, 0, 1) == pytest.approx(107.19, rel=0.02)
    assert t.prefill_ms(8192, 0, 1) == pytest.approx(475.97, rel=0.02)
    assert t.prefill_ms(2048, 6144, 1) == pytest.approx(126.73, rel=0.02)
    assert t.prefill_ms(4 * 2048, 0, 4) == pytest.approx(439.04, rel=0.02)
    for b, ms in ((1, 13.45), (16, 16.34), (64, 21.57), (256, 42.29)):
        assert t.decode_ms(b, b * 2048, b * 2048) == pytest.approx(ms, rel=0.03)
    llama = load_gpu_timing("meta-llama/Meta-Llama-3.1-8B", "h200_sxm", "vllm", 1)
    assert llama.prefill_ms(2048, 0, 1) == pytest.approx(43.4, rel=0.02)
    assert llama.decode_ms(64, 64 * 2048, 64 * 2048) == pytest.approx(9.5, rel=0.03)


def test_model_and_gpu_aliases() -> None:
    a = load_gpu_timing("meta-llama/Meta-Llama-3.1-8B", "h100_sxm", "vllm", 1)
    for model, gpu in (("Llama-3.1-8B", "h100_sxm"), ("meta-llama/Llama-3.1-8B", "H100"),
                       ("meta-llama--Meta-Llama-3.1-8B", "h100_sxm")):
        b = load_gpu_timing(model, gpu, "VLLM", 1)
        assert b.source == a.source


@pytest.mark.parametrize("args", [("Qwen/Qwen3-32B", "h100_sxm", "trtllm", 2),
                                  ("Qwen/Qwen3-32B", "h100_sxm", "vllm", 8),
                                  ("Qwen/Qwen3-8B", "h100_sxm", "vllm", 1),
                                  ("Qwen/Qwen3-32B", "a100_sxm", "vllm", 2)])
def test_unknown_combination_lists_what_is_available(args) -> None:
    with pytest.raises(InputError) as ei:
        load_gpu_timing(*args)
    msg = str(ei.value)
    assert "\n" not in msg
    assert "available:" in msg
    for needle in ("Qwen/Qwen3-32B tp1", "Qwen/Qwen3-32B tp4", "Meta-Llama-3.1-70B tp4",
                   "Meta-Llama-3.1-8B tp1", "h100_sxm", "h200_sxm", "sglang", "vllm"):
        assert needle in msg, needle


def test_bad_speedup_is_rejected() -> None:
    with pytest.raises(InputError):
        load_gpu_timing("Qwen/Qwen3-32B", "h100_sxm", "vllm", 2, speedup_ratio=0.0)


def test_speedup_ratios_divide_like_the_other_models() -> None:
    base = load_gpu_timing("Qwen/Qwen3-32B", "h200_sxm", "sglang", 2)
    fast = load_gpu_timing("Qwen/Qwen3-32B", "h200_sxm", "sglang", 2, speedup_ratio=2.0,
                           decode_speedup_ratio=1.5)
    assert fast.prefill_ms(3000, 100, 2) == modeled_ms(base.raw_prefill_ms(3000, 100, 2), 2.0)
    assert fast.decode_ms(17, 0, 40000) == modeled_ms(base.raw_decode_ms(17, 40000), 3.0)
    assert fast.prefill_ms(3000, 100, 2) == pytest.approx(base.prefill_ms(3000, 100, 2) / 2)
    assert fast.decode_ms(17, 0, 40000) == pytest.approx(base.decode_ms(17, 0, 40000) / 3)


@pytest.mark.parametrize("speedups", [(1.0, 1.0), (1.7, 1.3)])
def test_decode_series_equals_pass_by_pass(speedups) -> None:
    rng = np.random.default_rng(0)
    for e in TABLES:
        t = _load(e, speedup_ratio=speedups[0], decode_speedup_ratio=speedups[1])
        for b in (1, 2, 3, 7, 64, 100, 256, 511, 512, 700):
            start = int(rng.integers(0, 40 * b + 1)) if b < 100 else int(rng.integers(0, 3_000_000))
            steps = int(rng.integers(1, 400))
            ctx = start + b * np.arange(steps, dtype=np.int64)
            ctx = np.concatenate([ctx, [b * 128, b * 32768, b * 181, 0]]).astype(np.int64)
            got = decode_ms_series(t, b, ctx, 1 << 20)
            want = np.array([t.decode_ms(b, int(c), int(c), 1 << 20) for c in ctx])
            assert got.dtype == np.float64
            assert np.array_equal(got, want), (e["path"], b, np.flatnonzero(got != want)[:5])


def test_native_stretch_ends_equal_pass_by_pass() -> None:
    """The C stretch (sim._kvpool.table_decode_ends) adds up the same per-pass durations
    as ``decode_ms``, bit for bit, across the residual grid's nodes and edges."""
    from sim.timing import _to_ns
    rng = np.random.default_rng(1)
    for e in TABLES:
        t = _load(e)
        ends_fn = t.native_stretch_ends()
        if ends_fn is None:
            pytest.skip("native extension not built")
        for b in (1, 2, 5, 64, 300, 512, 900):
            for start in (0, 1, int(rng.integers(0, 40_000 * b)), b * 32768):
                k = int(rng.integers(1, 3000))
                now = float(rng.uniform(0, 1e7))
                got = np.frombuffer(ends_fn(now, start, b, k, _to_ns))
                want = np.cumsum([now] + [_ref_decode_ms(t, b, start + b * j)
                                          for j in range(k)])[1:]
                assert np.array_equal(got, want), (e["path"], b, start)
    assert _load(TABLES[0], decode_speedup_ratio=1.5).native_stretch_ends() is None


def _ref_prefill_ms(t: GpuTableTiming, new: int, cached: int, n: int) -> float:
    """The reference: the table's Python model through the engine clock."""
    return modeled_ms(t.raw_prefill_ms(new, cached, n), t.speedup_ratio) if new > 0 else 0.0


def _ref_decode_ms(t: GpuTableTiming, b: int, kv: int) -> float:
    return modeled_ms(t.raw_decode_ms(b, kv), t._decode_speedup) if b > 0 else 0.0


def _near_nodes(nodes: list[float]) -> st.SearchStrategy[int]:
    """Integers on, next to and between a table axis's nodes, and past its ends."""
    at = [int(x) + d for x in nodes for d in (-1, 0, 1)]
    return st.sampled_from(at) | st.integers(-3, int(nodes[-1]) * 3)


@pytest.mark.parametrize("entry", TABLES, ids=IDS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_native_pass_times_equal_the_python_model(entry: dict, data) -> None:
    """``sim._kvpool.TableTiming`` (what ``prefill_ms``/``decode_ms`` call at every pass) gives
    the bits of the Python model (``raw_*_ms`` through ``modeled_ms``) on, between and past
    the grid's nodes, for every shipped table."""
    t = _load(entry)
    native = t._native_pass
    if native is None:
        pytest.skip("native extension not built")
    new = data.draw(_near_nodes(t._pt), "new_tokens")
    cached = data.draw(_near_nodes(t._pp), "cached_tokens")
    n = data.draw(st.sampled_from([int(x) for x in t._pn]) | st.integers(-1, 600), "num_seqs")
    assert native.prefill_ms(new, cached, n) == _ref_prefill_ms(t, new, cached, n)
    assert t.prefill_ms(new, cached, n) == _ref_prefill_ms(t, new, cached, n)
    b = data.draw(st.sampled_from([int(x) for x in t._db]) | st.integers(-1, 1200), "batch")
    per_seq = data.draw(_near_nodes(t._dc), "context_per_seq")
    kv = max(0, b) * max(0, per_seq) + data.draw(st.integers(0, 63), "extra_kv")
    assert native.decode_ms(b, kv) == _ref_decode_ms(t, b, kv)
    assert t.decode_ms(b, kv, kv) == _ref_decode_ms(t, b, kv)


def test_pass_times_fall_back_for_speedups_floats_and_pickling() -> None:
    """Speed-ups other than 1 and non-integer arguments take the Python model; a pickled
    model rebuilds its native half."""
    import pickle
    t = _load(TABLES[0], speedup_ratio=1.7, decode_speedup_ratio=1.3)
    assert t.prefill_ms(5000, 100, 3) == _ref_prefill_ms(t, 5000, 100, 3)
    assert t.decode_ms(40, 90_000, 90_000) == _ref_decode_ms(t, 40, 90_000)
    t = _load(TABLES[0])
    assert t.prefill_ms(5000.5, 0, 1) == _ref_prefill_ms(t, 5000.5, 0, 1)
    assert t.decode_ms(40, 90_000.5, 90_000.5) == _ref_decode_ms(t, 40, 90_000.5)
    u = pickle.loads(pickle.dumps(t))
    assert (u._native_pass is None) == (t._native_pass is None)
    assert u.prefill_ms(5000, 100, 3) == t.prefill_ms(5000, 100, 3)


def _workload(n: int = 150):
    return synthetic(np.random.default_rng(3), arrival=poisson(6.0),
                     isl=lognormal(3000, 0.9, 30000), osl=lognormal(120, 0.8, 800),
                     num_requests=n, num_prefix_groups=4, shared_prefix_blocks=2)


def test_simulation_runs_to_completion() -> None:
    t = load_gpu_timing("Qwen/Qwen3-32B", "h100_sxm", "vllm", 2)
    eng = EngineConfig(block_size=t.block_size, num_gpu_blocks=t.num_gpu_blocks)
    res = Simulation(_workload(), engine=eng, timing=t, cluster=ClusterConfig(num_workers=2),
                     router="kv").run()
    tot = res.summary["totals"]
    assert tot["completed_requests"] == tot["num_requests"] == 150
    assert tot["in_flight_requests"] == 0 and tot["rejected_requests"] == 0
    assert tot["prefix_cache_reused_ratio"] > 0
    # No decode pass is faster than batch 1 at the shortest context (AIC: ~13.5 ms here).
    tpot = res.summary["latency_ms"]["tpot"]
    floor = t.decode_ms(1, 128, 128)
    assert 12.0 < floor <= tpot["min"] <= tpot["median"] < 100.0, (floor, tpot)


def test_bulk_and_exact_simulations_agree() -> None:
    """The vectorised decode path must not change any token time (engine bulk advance)."""
    t = load_gpu_timing("meta-llama/Meta-Llama-3.1-8B", "h200_sxm", "sglang", 1)
    runs = []
    for exact in (False, True):
        eng = EngineConfig(block_size=64, num_gpu_blocks=400, max_num_seqs=32,
                           max_num_batched_tokens=2048)
        res = Simulation(_workload(80), engine=eng, timing=t, exact=exact, seed=1,
                         cluster=ClusterConfig(num_workers=1)).run()
        runs.append(res.metrics.columns())
    bulk, ref = runs
    for key in ("first_token_ms", "last_token_ms", "num_preemptions"):
        assert np.array_equal(bulk[key], ref[key], equal_nan=True), key


# -- live comparison with aiconfigurator-core ------------------------------------------------

def _aic_python() -> str | None:
    env = os.environ.get("DYNOSIM_AIC_PYTHON")
    if env:
        return env
    if importlib.util.find_spec("aiconfigurator_core") is not None:
        return sys.executable
    return None


@pytest.fixture(scope="module")
def live_report() -> dict:
    py = _aic_python()
    if py is None:
        pytest.skip("aiconfigurator_core not importable and DYNOSIM_AIC_PYTHON not set")
    out = subprocess.run([py, str(REPO / "scripts" / "gen_gpu_tables.py"), "--check",
                          "--seed", "2024", "--points", "800"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_tables_match_live_aic(live_report: dict) -> None:
    assert {os.path.basename(e["path"]) for e in TABLES} == set(live_report)
    lines, bad = [], []
    for name, r in sorted(live_report.items()):
        lines.append(f"{name}: " + ", ".join(
            f"{k} med {r[k]['median']:.2%} p90 {r[k]['p90']:.2%} max {r[k]['max']:.2%}"
            for k in ("prefill_n1", "prefill", "decode")))
        if not (r["backend_version_matches"] and r["kv_matches"]):
            bad.append(f"{name}: metadata differs from AIC")
        if r["decode"]["median"] > 0.03:
            bad.append(f"{name}: decode median {r['decode']['median']:.2%}")
        for k in ("prefill_n1", "prefill"):
            if r[k]["median"] > 0.05:
                bad.append(f"{name}: {k} median {r[k]['median']:.2%}")
    print("\n".join(lines))
    assert not bad, bad

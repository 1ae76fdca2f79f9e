#!/usr/bin/env python3
"""Generate the compact GPU timing tables in ``sim/data/gpu_tables`` from aiconfigurator-core.

Run it with the interpreter of a venv that has ``aiconfigurator-core==0.12.0`` (the optional
``[aic]`` extra); the simulator itself never imports aiconfigurator:

    /work/aic-venv/bin/python scripts/gen_gpu_tables.py            # all combinations
    /work/aic-venv/bin/python scripts/gen_gpu_tables.py --list     # what AIC ships
    /work/aic-venv/bin/python scripts/gen_gpu_tables.py --check    # tables vs live AIC (JSON)

Why tables and not AIC at run time: AIC is a 0.6 GB, Linux-x86_64-only dependency, and a
numpy lookup is faster than its ~15 us query. ``sim/gpu_timing.py`` reads the files.

What one file holds (all times in ms per engine pass of one replica of ``tp`` GPUs, queried
through AIC's forward-pass API, ``RustForwardPassPerfModel.estimate_forward_pass_time_ms``,
exactly the quantities Dynamo's AIC-backed mocker predicts separately per pass):

* prefill: a grid over (number of prefilling sequences n) x (new tokens T) x (cached prefix
  tokens P), summed over the pass (see ``prefill_grid`` for how nodes are queried).
  n matters: the same T split over more sequences has less attention work (AIC gives
  0.4-0.95x of the n=1 time at large T or P), so it is an axis.
  T nodes are 4 per octave plus ``node + 1`` from 64 up, because AIC's GEMM data has steps
  right after multiples of 128..1024 (e.g. +18% from T=1024 to 1025); P nodes are 0 and a
  power-of-two ladder. The reader interpolates piecewise-linearly in T and P and in log n.
* decode: ``t = (a + b*B + c*KV) * r(B, KV/B)`` -- linear coefficients fitted by least
  squares on relative error over B 1..512 x context 128..32k, and a multiplicative residual
  grid r on (B, context per sequence) nodes, 2 per octave.
* KV: bytes per token per rank and the KV pool (tokens, blocks of 64) at
  gpu_memory_utilization 0.9 from AIC's memory estimator, for max_num_tokens 8192 and
  max_batch_size 256 (EngineConfig's defaults; they size AIC's activation reserve).
* accuracy: median/p90/max relative error of the tables against AIC on random points that
  are not grid nodes (seeded, so the script is deterministic).
"""
from __future__ import annotations

import importlib.metadata as md
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "sim" / "data" / "gpu_tables"
sys.path.insert(0, str(REPO))  # reuse the reader's interpolation (numpy + stdlib only)

ATTRIBUTION = "derived from aiconfigurator-core 0.12.0 perf data (Apache-2.0, NVIDIA)"
FORMAT = "dynosim-gpu-table/1"

MODELS = [  # (AIC model id, TP sizes)
    ("Qwen/Qwen3-32B", [1, 2, 4]),
    ("meta-llama/Meta-Llama-3.1-8B", [1]),
    ("meta-llama/Meta-Llama-3.1-70B", [4]),
]
GPUS = ["h100_sxm", "h200_sxm"]
BACKENDS = ["vllm", "sglang"]

BLOCK_SIZE = 64
GPU_MEM_UTIL = 0.9
MAX_NUM_TOKENS = 8192
MAX_BATCH_SIZE = 256


def t_nodes() -> list[int]:
    """New-token nodes 1..32k (4 per octave, plus node+1 from 64 up), then 64k and 128k."""
    s = set()
    for k in range(0, 15):
        for q in (4, 5, 6, 7):
            x = (q << k) // 4
            if x >= 1:
                s.add(x)
                if x >= 64:
                    s.add(x + 1)
    s.update([32768, 32769, 65536, 131072])
    return sorted(x for x in s if x <= 131072)


P_NODES = [0, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]
N_NODES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
B_NODES = sorted({int(round(2 ** (k / 2))) for k in range(0, 19)})          # 1..512
C_NODES = sorted({int(round(2 ** (k / 2))) for k in range(14, 31)})         # 128..32768


def _fpm(n_pf=0, pf_tokens=0, pf_cached=0, n_dec=0, dec_kv=0) -> dict:
    return {"scheduled_requests": {
        "num_prefill_requests": int(n_pf), "sum_prefill_tokens": int(pf_tokens),
        "sum_prefill_kv_tokens": int(pf_cached), "num_decode_requests": int(n_dec),
        "sum_decode_kv_tokens": int(dec_kv)}}


def slug(model: str) -> str:
    return model.replace("/", "--")


def build_estimator(model: str, gpu: str, backend: str, tp: int):
    from aiconfigurator_core.sdk import RustForwardPassPerfModel, perf_database

    version = perf_database.resolve_query_version(gpu, backend, "current")
    cfg = {"schema_version": 1, "model_name": model, "system_name": gpu, "backend": backend,
           "backend_version": version, "tp_size": tp, "pp_size": 1}
    return RustForwardPassPerfModel.from_native(cfg).estimate_forward_pass_time_ms, version


def kv_info(model: str, gpu: str, backend: str, version: str, tp: int) -> dict:
    from aiconfigurator_core.sdk.memory import estimate_kv_cache

    r = estimate_kv_cache(model, gpu, backend, version, max_num_tokens=MAX_NUM_TOKENS,
                          max_batch_size=MAX_BATCH_SIZE, memory_fraction_kind="of_total",
                          memory_fraction_value=GPU_MEM_UTIL, tp_size=tp)
    tokens = int(r["total_kv_size_tokens"])
    return {"kv_bytes_per_token": int(r["kv_size_per_token_bytes"]),
            "kv_capacity_tokens": tokens, "block_size": BLOCK_SIZE,
            "num_gpu_blocks": tokens // BLOCK_SIZE, "gpu_memory_utilization": GPU_MEM_UTIL,
            "gpu_memory_bytes": int(r["total_gpu_capacity_bytes"]),
            "max_num_tokens": MAX_NUM_TOKENS, "max_batch_size": MAX_BATCH_SIZE,
            "note": "per rank; one replica holds this many tokens (TP shards each token)"}


def _sig(x: float, digits: int = 5) -> float:
    """Round to significant digits: keeps the JSON small (4 digits: error <= 5e-4)."""
    return float(f"{x:.{digits}g}")


def prefill_grid(est) -> dict:
    T, P, N = t_nodes(), P_NODES, N_NODES
    # AIC splits a pass into n requests of T // n new tokens each, so its GEMM steps (e.g. +18%
    # past 1024 tokens) sit where n * (T // n) crosses a boundary. Plane n's node T is queried
    # at the next multiple of n when that is within ~3% (a node just past a step is then past
    # it on every plane), else at the nearest multiple. The engine's T is a multiple of n
    # anyway (it charges n x mean length).
    ms = [[[_sig(est(_fpm(n, _query_tokens(t, n), p)), 4) for p in P] for t in T] for n in N]
    return {"num_seqs": N, "new_tokens": T, "cached_tokens": P, "ms": ms,
            "layout": "ms[num_seqs][new_tokens][cached_tokens]; node T of plane n queried "
                      "at n * ceil(T / n) new tokens"}


def _query_tokens(t: int, n: int) -> int:
    """New tokens at which plane n's node t is queried (see ``prefill_grid``)."""
    up = -(-t // n) * n
    if up - t <= max(1, t // 32):
        return up                                  # step-preserving, off by <= 3%
    return max(n, int(round(t / n)) * n)           # few tokens per request: nearest multiple


def decode_fit(est) -> dict:
    B, C = B_NODES, C_NODES
    bb, cc = np.meshgrid(np.array(B, float), np.array(C, float), indexing="ij")
    kv = bb * cc
    y = np.array([[est(_fpm(n_dec=int(b), dec_kv=int(b) * int(c))) for c in C] for b in B])
    # Dense fitting sample: grid nodes plus in-between points, relative least squares.
    rng = np.random.default_rng(1)
    fb = np.exp(rng.uniform(0, math.log(512), 4000)).round().astype(int)
    fc = np.exp(rng.uniform(math.log(128), math.log(32768), 4000)).round().astype(int)
    fy = np.array([est(_fpm(n_dec=int(b), dec_kv=int(b) * int(c))) for b, c in zip(fb, fc)])
    X = np.column_stack([np.ones(len(fb)), fb, fb * fc.astype(float)])
    w = 1.0 / fy
    coef, *_ = np.linalg.lstsq(X * w[:, None], fy * w, rcond=None)
    a, b, c = (float(v) for v in coef)
    lin = a + b * bb + c * kv
    resid = y / lin
    return {"a": _sig(a, 8), "b": _sig(b, 8), "c": _sig(c, 8),
            "batch_size": B, "context_per_seq": C,
            "residual": [[_sig(v, 6) for v in row] for row in resid],
            "formula": "(a + b*B + c*KV) * residual(B, KV/B); residual clamped at the grid edges"}


def accuracy(est, table: dict, n_points: int = 3000, seed: int = 7) -> dict:
    """Relative error of the shipped tables (via the reader) against live AIC."""
    from sim.gpu_timing import GpuTableTiming

    tm = GpuTableTiming(table)
    rng = np.random.default_rng(seed)
    out = {}
    for name, sampler in (("prefill_n1", _sample_prefill(rng, n_points, single=True)),
                          ("prefill", _sample_prefill(rng, n_points, single=False))):
        ref = np.array([est(_fpm(n, t, p)) for n, t, p in sampler])
        got = np.array([tm.raw_prefill_ms(t, p, n) for n, t, p in sampler])
        out[name] = _stats(got, ref)
    pts = _sample_decode(rng, n_points)
    ref = np.array([est(_fpm(n_dec=b, dec_kv=kv)) for b, kv in pts])
    got = np.array([tm.raw_decode_ms(b, kv) for b, kv in pts])
    out["decode"] = _stats(got, ref)
    return out


def _sample_prefill(rng, n, single):
    t = np.exp(rng.uniform(0, math.log(32768), n)).round().astype(int)
    p = np.where(rng.random(n) < 0.3, 0, rng.integers(0, 32769, n))
    if single:
        k = np.ones(n, dtype=int)
    else:
        k = np.exp(rng.uniform(0, math.log(256), n)).round().astype(int)
        k = np.minimum(k, t)
        t = -(-t // k) * k          # the engine charges n x (mean length): T is a multiple of n
    return [(int(a), int(b), int(c)) for a, b, c in zip(k, t, p)]


def _sample_decode(rng, n):
    b = np.exp(rng.uniform(0, math.log(512), n)).round().astype(int)
    c = np.exp(rng.uniform(math.log(128), math.log(32768), n))
    return [(int(x), int(round(x * y))) for x, y in zip(b, c)]


def _stats(got, ref) -> dict:
    e = np.abs(got / ref - 1.0)
    return {"n": int(len(e)), "median": round(float(np.median(e)), 5),
            "p90": round(float(np.quantile(e, 0.9)), 5), "max": round(float(e.max()), 5)}


def generate(model: str, gpu: str, backend: str, tp: int) -> dict:
    est, version = build_estimator(model, gpu, backend, tp)
    table = {
        "format": FORMAT, "model": model, "gpu": gpu, "backend": backend,
        "backend_version": version, "tp": tp, "pp": 1,
        "aiconfigurator_core_version": md.version("aiconfigurator-core"),
        "attribution": ATTRIBUTION,
        "source_api": "aiconfigurator_core.sdk.RustForwardPassPerfModel (from_native, "
                      "estimate_forward_pass_time_ms); memory.estimate_kv_cache",
        "units": "ms per engine pass of one replica (tp GPUs)",
        "kv": kv_info(model, gpu, backend, version, tp),
        "prefill": prefill_grid(est),
        "decode": decode_fit(est),
    }
    table["accuracy_vs_aic"] = accuracy(est, table)
    return table


def check(out_dir: Path, seed: int, n_points: int, only: str | None) -> dict:
    """Compare every shipped table with live AIC on fresh random points (tests call this)."""
    from dynosim.options import read_json
    # every table read first: a corrupt one is a one-line error before AIC loads
    tables = {path: read_json(path, dict) for path in sorted(out_dir.glob("*.json"))
              if not only or only in path.name}
    from aiconfigurator_core.sdk import perf_database

    report = {}
    for path, t in tables.items():
        est, version = build_estimator(t["model"], t["gpu"], t["backend"], int(t["tp"]))
        entry = accuracy(est, t, n_points=n_points, seed=seed)
        entry["backend_version_matches"] = version == t["backend_version"] == \
            perf_database.resolve_query_version(t["gpu"], t["backend"], "current")
        kv = kv_info(t["model"], t["gpu"], t["backend"], version, int(t["tp"]))
        entry["kv_matches"] = all(kv[k] == t["kv"][k] for k in
                                  ("kv_bytes_per_token", "kv_capacity_tokens", "num_gpu_blocks"))
        report[path.name] = entry
    return report


def main(argv=None) -> int:
    from dynosim.options import Parser, ScriptHelpFormatter
    ap = Parser(prog="gen_gpu_tables.py", description=__doc__, formatter_class=ScriptHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT_DIR,
                    help="table directory (default: sim/data/gpu_tables, the tracked tables the "
                         "simulator reads, which this script exists to regenerate and --check "
                         "reads)")
    ap.add_argument("--only", default=None,
                    help="substring filter on the output file name (default: none, all)")
    ap.add_argument("--list", action="store_true", help="list AIC's systems/backends/versions")
    ap.add_argument("--verbose", action="store_true", help="keep aiconfigurator-core logs")
    ap.add_argument("--check", action="store_true",
                    help="compare the tables in --out with live AIC; print JSON, write nothing")
    ap.add_argument("--seed", type=int, default=12345, help="--check: sample seed")
    ap.add_argument("--points", type=int, default=1000, help="--check: points per kind")
    args = ap.parse_args(argv)
    if not args.verbose:  # AIC prints data-provenance notes while loading parquet files
        logging.disable(logging.WARNING)
        saved = os.dup(2)          # keep Python tracebacks visible on the real stderr
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        sys.stderr = os.fdopen(saved, "w")
    if args.list:
        from aiconfigurator_core.sdk import perf_database
        print(json.dumps(perf_database.get_supported_databases(), indent=1, default=list))
        return 0
    if args.check:
        from dynosim.cli import guarded
        return guarded(lambda: print(json.dumps(check(args.out, args.seed, args.points,
                                                      args.only), indent=1)) or 0)
    args.out.mkdir(parents=True, exist_ok=True)
    for model, tps in MODELS:
        for tp in tps:
            for gpu in GPUS:
                for backend in BACKENDS:
                    name = f"{slug(model)}__{gpu}__{backend}__tp{tp}.json"
                    if args.only and args.only not in name:
                        continue
                    t0 = time.perf_counter()
                    table = generate(model, gpu, backend, tp)
                    text = json.dumps(table, separators=(",", ":"), sort_keys=True)
                    (args.out / name).write_text(text + "\n")
                    acc = table["accuracy_vs_aic"]
                    stats = ", ".join(f"{k} med {v['median']:.2%} p90 {v['p90']:.2%} "
                                      f"max {v['max']:.2%}" for k, v in acc.items())
                    print(f"{name}: {len(text) / 1024:.1f} KiB, "
                          f"{time.perf_counter() - t0:.1f} s, {stats}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
